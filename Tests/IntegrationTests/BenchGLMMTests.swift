import XCTest

extension ExecutableTests {
    /// `fedmix bench --models ohio --lme4`: the ohio fit (537 one-child
    /// sites, nAGQ = 12) runs once whatever --rows says, and lme4's time is
    /// printed beside it when Rscript with lme4 is installed (else a line
    /// saying it is not available). Its β agrees with lme4's to 1e-3 (lme4 at its default tolerances).
    func benchOhioBesideLme4() throws {
        let r = try fedmix(["bench", "--models", "ohio", "--modes", "in-process", "--rows", "1000,2000", "--sites", "4",
                            "--no-isolate", "--json", "--lme4"])
        XCTAssertTrue(r.out.contains("[1/1] resp ~ age + smoke + (1 | site)"), r.out)
        XCTAssertTrue(r.out.contains("sites 537"), r.out)
        XCTAssertTrue(r.out.contains("AGQ objective (−2 log L)"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "ohio")
        XCTAssertEqual(m["converged"] as? Bool, true)
        XCTAssertTrue(r.out.contains("      lme4     glmer ") || r.out.contains("      lme4     not available"), r.out)
        if r.out.contains("      lme4     glmer ") {
            // lme4 fitted the same rows: β agrees to lme4's default tolerances
            let line = r.out.split(separator: "\n").first { $0.contains("β lme4 [") }.map(String.init) ?? ""
            if let open = line.range(of: "β lme4 ["), let close = line[open.upperBound...].firstIndex(of: "]") {
                let lme4 = line[open.upperBound..<close].split(separator: ",").compactMap { Double($0) }
                let ours = try XCTUnwrap(m["beta"] as? [Double])
                XCTAssertEqual(lme4.count, ours.count, line)
                for (a, b) in zip(ours, lme4) { XCTAssertEqual(a, b, accuracy: 1e-3 * max(1, abs(b)), line) }
            }
        }
    }
}

extension ExecutableTests {
    /// `fedmix bench --models surgeons`: 2,000 surgeons crossed with 20
    /// hospitals, eliminated level by level at the coordinator. The fit takes
    /// the sites' θ-free sums (2 rounds) and matches lme4 (`assertNotAboveLme4`) when R is present.
    func benchSurgeonsCrossedBesideLme4() throws {
        let r = try fedmix(["bench", "--models", "surgeons", "--modes", "in-process", "--no-isolate", "--json", "--lme4"])
        XCTAssertTrue(r.out.contains("[1/1] y ~ x + (1 | site) + (1 | surgeon)"), r.out)
        XCTAssertTrue(r.out.contains("sites 20"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "surgeons")
        XCTAssertEqual(m["converged"] as? Bool, true)
        XCTAssertEqual(m["rounds"] as? Int, 2, "prepare and finalize: the coordinator iterates on the sites' sums")
        let line = r.out.split(separator: "\n").first { $0.contains("REML criterion lme4 ") }.map(String.init)
        guard let line else {
            XCTAssertTrue(r.out.contains("      lme4     not available"), r.out)
            return
        }
        try assertNotAboveLme4(line, m)
    }

    /// `fedmix bench --models surgeons-glmm --surgeons 200 --lme4`: the crossed
    /// GLMM `died ~ age + (1 | site) + (1 | surgeon)` (binomial, Laplace) with
    /// 200 surgeons at 2-4 of 20 hospitals (2,000 by default, which a debug
    /// build takes minutes for), in the level form; beside glmer (nAGQ = 1)
    /// on the same rows when R is present: −2 log L never above glmer's by
    /// more than 1e-8 relative, β within 1e-4.
    func benchSurgeonsGLMMBesideGlmer() throws {
        let r = try fedmix(["bench", "--models", "surgeons-glmm", "--surgeons", "200", "--modes", "in-process", "--no-isolate", "--json", "--lme4"], timeout: 300)
        XCTAssertTrue(r.out.contains("[1/1] died ~ age + (1 | site) + (1 | surgeon)"), r.out)
        XCTAssertTrue(r.out.contains("sites 20"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "surgeons-glmm")
        XCTAssertEqual(m["surgeons"] as? Int, 200)
        XCTAssertEqual(m["converged"] as? Bool, true)
        XCTAssertTrue((m["messages"] as? [String] ?? []).contains { $0.contains("level form") }, "\(m["messages"] ?? "")")
        let line = r.out.split(separator: "\n").first { $0.contains("−2 log L lme4 ") }.map(String.init)
        guard let line else {
            XCTAssertTrue(r.out.contains("      lme4     not available"), r.out)
            return
        }
        try assertNotAboveLme4(line, m)
    }

    /// A bench line "REML criterion lme4 C, fedmix …; β lme4 [b, …]" against
    /// the measurement: the criterion never above lme4's by more than 1e-8
    /// relative (lme4 stops short of the optimum, fedmix must not), β within 1e-4.
    func assertNotAboveLme4(_ line: String, _ m: [String: Any]) throws {
        try assertCriterionNotAboveLme4(line, m)
        let open = try XCTUnwrap(line.range(of: "β lme4 ["))
        let beta = line[open.upperBound...].prefix { $0 != "]" }.split(separator: ",").compactMap { Double($0) }
        let ourBeta = try XCTUnwrap(m["beta"] as? [Double])
        XCTAssertEqual(beta.count, ourBeta.count, line)
        for (a, b) in zip(ourBeta, beta) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(b)), line) }
    }

    /// The criterion alone: never above lme4's by more than 1e-8 relative
    /// (for fits where glmer at its defaults stops far enough short that β
    /// differs by more than 1e-4).
    func assertCriterionNotAboveLme4(_ line: String, _ m: [String: Any]) throws {
        let words = line.split(separator: " ").map(String.init)
        let theirs = try XCTUnwrap(words.firstIndex(of: "lme4").flatMap { Double(words[$0 + 1].trimmingCharacters(in: CharacterSet(charactersIn: ","))) })
        let ours = try XCTUnwrap(m["objective"] as? Double)
        XCTAssertLessThanOrEqual(ours, theirs + 1e-8 * abs(theirs), line)
    }

    /// `fedmix bench --models egsingle,slope --modes federated --lme4`: the
    /// egsingle growth model (60 school sites, children nested) runs once
    /// whatever --rows says; the federated run splits its start-up into
    /// certificates, agents and handshakes; lme4's lmer is timed beside both
    /// models with the ratio. The REML criterion is never above lme4's by
    /// more than 1e-8 relative (lme4 stops short of the optimum, fedmix must
    /// not), and β agrees with lme4's to 1e-4 relative.
    func benchEgsingleAndSlopeFederatedBesideLme4() throws {
        let r = try fedmix(["bench", "--models", "egsingle,slope", "--modes", "federated", "--rows", "400", "--sites", "4",
                            "--no-isolate", "--json", "--lme4"])
        XCTAssertTrue(r.out.contains("[1/2] math ~ year + (1 + year | site) + (1 + year | site:child)"), r.out)
        XCTAssertTrue(r.out.contains("rows 7,230, sites 60"), r.out)
        XCTAssertTrue(r.out.contains("start-up certificates "), r.out)
        XCTAssertTrue(r.out.contains("(CA and 61 certificates), agents "), r.out)
        XCTAssertTrue(r.out.contains("(60 mutual-TLS handshakes)"), r.out)
        let ms = benchLines(r.out)
        XCTAssertEqual(ms.map { $0["model"] as? String }, ["egsingle", "slope"])
        for m in ms {
            XCTAssertEqual(m["converged"] as? Bool, true)
            let parts = try XCTUnwrap(m["setupParts"] as? [Double])
            XCTAssertEqual(parts.count, 3)
            XCTAssertLessThanOrEqual(parts.reduce(0, +), try XCTUnwrap(m["setupSeconds"] as? Double) + 1e-9, "the parts are within the set-up")
        }
        let lines = r.out.split(separator: "\n").map(String.init)
        let lme4 = lines.filter { $0.hasPrefix("      lme4     ") }
        XCTAssertEqual(lme4.count, 2, r.out)
        guard lme4.allSatisfy({ $0.hasPrefix("      lme4     lmer ") }) else {
            XCTAssertTrue(lme4.allSatisfy { $0.contains("not available") }, r.out)
            return
        }
        XCTAssertTrue(lme4.allSatisfy { $0.contains("× faster") || $0.contains("× slower") }, r.out)
        let criteria = lines.filter { $0.contains("REML criterion lme4 ") }
        XCTAssertEqual(criteria.count, 2, r.out)
        for (line, m) in zip(criteria, ms) { try assertNotAboveLme4(line, m) }
    }

    /// In process, bench reads the sites' rows back through the agents' CSV reader and prints the rate.
    func benchCSVIngest() throws {
        let r = try fedmix(["bench", "--models", "slope", "--modes", "in-process", "--rows", "2000", "--sites", "4", "--no-isolate", "--json"])
        XCTAssertTrue(r.out.contains("      CSV      "), r.out)
        XCTAssertTrue(r.out.contains(" in 4 files (2,000 rows) read by the agents' reader in "), r.out)
        XCTAssertTrue(r.out.contains(" MB/s, "), r.out)
        let ingest = try XCTUnwrap(benchLines(r.out).first?["csvIngest"] as? [String: Any])
        XCTAssertEqual(ingest["rows"] as? Int, 2000)
        XCTAssertEqual(ingest["files"] as? Int, 4)
        XCTAssertGreaterThan(try XCTUnwrap(ingest["bytes"] as? Int), 2000 * 20)
    }
}

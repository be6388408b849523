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

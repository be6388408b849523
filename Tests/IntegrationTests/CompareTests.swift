import Foundation
import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// `fedmix compare` against lme4's anova() (Tests/Fixtures/inference,
/// section `anova`): Chisq, Df and p to 1e-6 against the tight table, in
/// process and through agents over TLS; the same rows for every model; the
/// refusals; the design effect against the `icc` section.
final class CompareTests: XCTestCase {
    static var inference: [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("inference/references.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    static func anova(_ key: String) -> [String: Any] { (inference["anova"] as! [String: Any])[key] as! [String: Any] }
    static func icc(_ key: String) -> [String: Any] { (inference["icc"] as! [String: Any])[key] as! [String: Any] }

    /// Compares the table with lme4's tight table: Chisq, p and the mixture to
    /// `rel` relative, Df and npar exactly, logLik to 1e-6 absolute. Returns the worst relative error.
    @discardableResult
    func assertTable(_ c: Comparison, _ key: String, rel: Double = 1e-6, file: StaticString = #filePath, line: UInt = #line) -> Double {
        let ref = Self.anova(key)
        let tight = (ref["tight"] as! [String: Any])["table"] as! [[String: Any]]
        XCTAssertEqual(c.anova.count, tight.count, file: file, line: line)
        XCTAssertEqual(c.anova.map(\.formula), tight.map { $0["formula"] as! String }, "rows ordered by npar", file: file, line: line)
        var worst = 0.0
        func check(_ a: Double?, _ b: Any?, _ what: String) {
            guard let b = b as? Double else { XCTAssertNil(a, "\(what): R has null", file: file, line: line); return }
            guard let a else { XCTFail("\(what): fedmix has none, R \(b)", file: file, line: line); return }
            let e = abs(a - b) / abs(b)
            worst = max(worst, e)
            XCTAssertLessThanOrEqual(e, rel, "\(what): fedmix \(a), lme4 (tight) \(b)", file: file, line: line)
        }
        for (mine, theirs) in zip(c.anova, tight) {
            XCTAssertEqual(mine.npar, theirs["npar"] as? Int, file: file, line: line)
            XCTAssertEqual(mine.df, theirs["df"] as? Int, file: file, line: line)
            XCTAssertEqual(mine.loglik, theirs["loglik"] as! Double, accuracy: 1e-6, file: file, line: line)
            XCTAssertEqual(mine.aic, theirs["aic"] as! Double, accuracy: 2e-6, file: file, line: line)
            XCTAssertEqual(mine.bic, theirs["bic"] as! Double, accuracy: 2e-6, file: file, line: line)
            check(mine.chisq, theirs["chisq"], "\(key) Chisq")
            check(mine.pValue, theirs["p_value"], "\(key) p")
            check(mine.pValueMixture, theirs["p_value_mixture"], "\(key) mixture p")
        }
        return worst
    }

    static let exam = ["normexam ~ standLRT + sex + (1 | site)", "normexam ~ standLRT + sex + (standLRT | site)"]
    static let contraception = ["use01 ~ age + I(age^2) + urban + livch + (1 | site)",
                                "use01 ~ age + I(age^2) + urban + livch + (urban | site)"]

    /// scale() in compared models takes its pooled moments over the rows all
    /// models use: the compared fit equals the ML fit of the same formula on
    /// those rows, and its coefficient is the raw one times the pooled SD
    /// (before, compare fitted raw standLRT under the scale() name).
    func testScaleInComparedModelsUsesPooledMoments() throws {
        let fed = inProcessFederation(files: try Fixtures.siteFiles("exam"))
        defer { fed.close() }
        let scaled = "normexam ~ scale(standLRT) + sex + (1 | site)"
        let c = try ModelComparison.compare(fed, dataset: "data", formulas: ["normexam ~ sex + (1 | site)", scaled], options: FitOptions())
        let alone = try Analysis.fit(fed, dataset: "data", formula: scaled, options: FitOptions(method: .ml))
        let raw = try Analysis.fit(fed, dataset: "data", formula: "normexam ~ standLRT + sex + (1 | site)", options: FitOptions(method: .ml))
        let compared = c.models[1].fixedEffects
        XCTAssertEqual(compared.map(\.name), ["(Intercept)", "scale(standLRT)", "sexM"])
        for (a, b) in zip(compared, alone.fixedEffects) {
            XCTAssertEqual(a.estimate, b.estimate, accuracy: 1e-9 * max(1, abs(b.estimate)), a.name)
            XCTAssertEqual(a.stdError, b.stdError, accuracy: 1e-9 * b.stdError, a.name)
        }
        // The scaled slope is the raw slope times the pooled SD of standLRT (not the raw slope).
        let table = try CSVReader.read(path: Fixtures.pooledFile("exam").path)
        guard case .numeric(let values)? = table.column(named: "standLRT")?.data else { return XCTFail("standLRT") }
        let x = values.compactMap { $0 }
        let mean = x.reduce(0, +) / Double(x.count)
        let sd = (x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(x.count - 1)).squareRoot()
        XCTAssertNotEqual(sd, 1, accuracy: 1e-4)
        XCTAssertEqual(compared[1].estimate / raw.fixedEffects[1].estimate, sd, accuracy: 1e-7 * sd,
                       "compare must not fit raw standLRT under the scale() name")
        XCTAssertEqual(c.models[0].nObs, c.models[1].nObs)
    }

    func testExamInProcessMatchesLme4() throws {
        let fed = inProcessFederation(files: try Fixtures.siteFiles("exam"))
        defer { fed.close() }
        // Given largest first: the table still orders by npar.
        let c = try ModelComparison.compare(fed, dataset: "data", formulas: Self.exam.reversed(), options: FitOptions())
        let worst = assertTable(c, "exam_intercept_vs_slope")
        XCTAssertTrue(c.refittedML)
        XCTAssertEqual(c.notes.first, "refitting model(s) with ML (instead of REML)")
        XCTAssertEqual(c.models.map(\.model.method), ["ML", "ML"])
        XCTAssertEqual(c.anova.map(\.model), ["m1", "m0"])
        XCTAssertEqual(c.anova[1].mixture, "chi2_1:chi2_2")
        XCTAssertTrue(c.notes.contains { $0.contains("boundary") }, "\(c.notes)")
        XCTAssertTrue(c.flatVsMixed.isEmpty)
        XCTAssertNil(c.designEffect)
        print("compare exam in process: worst relative error \(worst), Chisq \(c.anova[1].chisq!), p \(c.anova[1].pValue!), rounds \(c.rounds), bytes \(c.bytesSent) sent \(c.bytesReceived) received")
        // --ml given: no refit message.
        let ml = try ModelComparison.compare(fed, dataset: "data", formulas: Self.exam, options: FitOptions(method: .ml))
        XCTAssertFalse(ml.refittedML)
        XCTAssertFalse(ml.notes.contains { $0.hasPrefix("refitting") })
        assertTable(ml, "exam_intercept_vs_slope")
        // The JSON form scripts read.
        let json = try JSONSerialization.jsonObject(with: Data(try c.json().utf8)) as! [String: Any]
        XCTAssertEqual((json["models"] as! [Any]).count, 2)
        XCTAssertEqual(json["flat_vs_mixed"] as? [Any] as? [Int], [])
        XCTAssertTrue(json["design_effect"] is NSNull)
        let rows = json["anova"] as! [[String: Any]]
        XCTAssertEqual(Set(rows[0].keys).isSuperset(of: ["model", "npar", "aic", "bic", "loglik", "deviance", "chisq", "df", "p_value", "p_value_mixture"]), true)
        XCTAssertTrue(rows[0]["chisq"] is NSNull)
        // The text: lme4's layout.
        let text = ComparisonReport.text(c)
        XCTAssertTrue(text.hasPrefix("refitting model(s) with ML (instead of REML)\nData: data"), text)
        XCTAssertTrue(text.contains("Models:\nm1: normexam ~ standLRT + sex + (1 | site)\nm0: normexam ~ standLRT + sex + (standLRT | site)\n"), text)
        XCTAssertTrue(text.contains("   npar    AIC    BIC  logLik deviance Chisq Df Pr(>Chisq)\n"), text)
        XCTAssertTrue(text.contains("m1    5 9340.0 9371.6 -4665.0   9330.0\n"), text)
        XCTAssertTrue(text.contains("m0    7 9301.4 9345.5 -4643.7   9287.4 42.62  2  5.563e-10 ***\n"), text)
    }

    func testContraceptionInProcessAndOverTLSMatchLme4() throws {
        let files = try Fixtures.siteFiles("contraception")
        let options = FitOptions(family: .binomial)
        let local = inProcessFederation(files: files)
        defer { local.close() }
        let a = try ModelComparison.compare(local, dataset: "data", formulas: Self.contraception, options: options)
        let worstLocal = assertTable(a, "contraception_intercept_vs_urban_slope")
        XCTAssertFalse(a.refittedML, "GLMMs are ML fits: nothing refitted")
        XCTAssertEqual(a.anova[1].mixture, "chi2_1:chi2_2")

        let pki = try TestPKI("compare")
        defer { pki.remove() }
        let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let remote = try tlsFederation(agents, pki: pki)
        defer { remote.close() }
        let b = try ModelComparison.compare(remote, dataset: "data", formulas: Self.contraception, options: options)
        let worstTLS = assertTable(b, "contraception_intercept_vs_urban_slope")
        for (x, y) in zip(a.anova, b.anova) {
            XCTAssertEqual(x.chisq ?? 0, y.chisq ?? 0, accuracy: 1e-9)
            XCTAssertEqual(x.loglik, y.loglik, accuracy: 1e-9)
        }
        print("compare contraception: worst relative error in process \(worstLocal), over TLS \(worstTLS); Chisq \(b.anova[1].chisq!), p \(b.anova[1].pValue!); rounds \(b.rounds), bytes \(b.bytesSent) sent \(b.bytesReceived) received")
    }

    func testExamOverTLSMatchesLme4() throws {
        let files = try Fixtures.siteFiles("exam")
        let pki = try TestPKI("compare-exam")
        defer { pki.remove() }
        let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let remote = try tlsFederation(agents, pki: pki)
        defer { remote.close() }
        let c = try ModelComparison.compare(remote, dataset: "data", formulas: Self.exam, options: FitOptions())
        let worst = assertTable(c, "exam_intercept_vs_slope")
        print("compare exam over TLS: worst relative error \(worst); rounds \(c.rounds), bytes \(c.bytesSent) sent \(c.bytesReceived) received")
    }

    /// Sites whose variable `lab` is missing in some rows.
    func sitesWithMissing() throws -> [URL] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-compare-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var rng = SeededRandom(seed: 5)
        return try (0..<6).map { s in
            let effect = rng.normal()
            var text = "y,x,lab,ward\n"
            for i in 0..<40 {
                let x = rng.normal(), lab = rng.normal()
                let y = 1 + 0.5 * x + 0.3 * lab + effect + rng.normal()
                text += "\(y),\(x),\(i % 7 == 3 ? "" : String(lab)),w\(i % 4)\n"
            }
            let url = dir.appendingPathComponent("s\(s).csv")
            try text.write(to: url, atomically: true, encoding: .utf8)
            return url
        }
    }

    /// A flat model against the mixed one: lme4's anova(lmer, lm) table, the
    /// flat model's vcovCL SEs by site beside the mixed SEs, and the design effect.
    func testFlatVersusMixedMatchesLme4AndSandwich() throws {
        let fed = inProcessFederation(files: try Fixtures.siteFiles("exam"))
        defer { fed.close() }
        let c = try ModelComparison.compare(fed, dataset: "data",
                                            formulas: ["normexam ~ standLRT + sex", "normexam ~ standLRT + sex + (1 | site)"],
                                            options: FitOptions())
        assertTable(c, "exam_flat_vs_intercept")
        XCTAssertEqual(c.anova[1].mixture, "chi2_0:chi2_1")
        let flat = (Self.inference["flat"] as! [String: Any])["exam"] as! [String: Any]
        let bySite = (flat["robust"] as! [[String: Any]]).first { ($0["cluster"] as? String) == "site" && ($0["type"] as? String) == "HC1" }!
        let robust = bySite["std_error"] as! [Double]
        XCTAssertEqual(c.flatVsMixed.map(\.term), ["(Intercept)", "standLRT", "sexM"])
        for (row, se) in zip(c.flatVsMixed, robust) {
            let mine = try XCTUnwrap(row.robustStdError, "\(row.term): no robust SE")
            XCTAssertEqual(mine, se, accuracy: 1e-8 * se, "\(row.term): vcovCL SE by site")
            XCTAssertEqual(row.seRatio, row.mixedStdError / row.flatStdError)
        }
        let d = try XCTUnwrap(c.designEffect)
        XCTAssertEqual(d.equal, 1 + (d.meanClusterSize - 1) * d.icc, accuracy: 1e-12)
        XCTAssertTrue(d.clusteringMatters)
        XCTAssertTrue(ComparisonReport.text(c).contains("robust SE"), ComparisonReport.text(c))
    }

    func testEveryModelUsesTheRowsOfTheLargest() throws {
        let fed = inProcessFederation(files: try sitesWithMissing())
        defer { fed.close() }
        let c = try ModelComparison.compare(fed, dataset: "data", formulas: ["y ~ x + (1 | site)", "y ~ x + lab + (1 | site)"],
                                            options: FitOptions())
        XCTAssertEqual(c.models.map(\.nObs), [6 * 34, 6 * 34], "lab is missing in 6 of 40 rows per site")
        XCTAssertTrue(c.models[0].messages.contains { $0.contains("lab is also present") }, "\(c.models[0].messages)")
        XCTAssertNil(c.anova[1].pValueMixture, "a fixed effect added: no boundary")
        XCTAssertEqual(c.anova[1].df, 1)
        XCTAssertFalse(c.notes.contains { $0.contains("boundary") })
        // The same as fitting the smaller model on the complete rows by hand.
        let byHand = try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | site)", options: {
            var o = FitOptions(method: .ml); o.filter = "lab > -1e300"; return o }())
        XCTAssertEqual(byHand.nObs, c.models[0].nObs)
        XCTAssertEqual(byHand.loglik, c.models[0].loglik, accuracy: 1e-8)

        // A new scalar term: the mixture of chi2_0 and chi2_1.
        let scalar = try ModelComparison.compare(fed, dataset: "data", formulas: ["y ~ x + (1 | site)", "y ~ x + (1 | site) + (1 | site:ward)"],
                                                 options: FitOptions())
        XCTAssertEqual(scalar.anova[1].mixture, "chi2_0:chi2_1")
        XCTAssertEqual(scalar.anova[1].pValueMixture!, 0.5 * scalar.anova[1].pValue!, accuracy: 1e-15)
    }

    func testRefusesModelsThatAreNotNested() throws {
        let fed = inProcessFederation(files: try sitesWithMissing())
        defer { fed.close() }
        func refused(_ formulas: [String], _ message: String, options: FitOptions = FitOptions(), line: UInt = #line) {
            XCTAssertThrowsError(try ModelComparison.compare(fed, dataset: "data", formulas: formulas, options: options), line: line) { e in
                XCTAssertTrue("\(e)".contains(message), "\(e)", line: line)
            }
        }
        refused(["y ~ x + (1 | site)"], "at least two models")
        refused(["y ~ x + (1 | site)", "lab ~ x + (1 | site)"], "different response")
        refused(["y ~ x + (1 | site)", "y ~ lab + (1 | site)"], "both have 4 parameters")
        refused(["y ~ x + (1 | site)", "y ~ lab + ward + (1 | site)"], "its fixed effect x is not in m1")
        refused(["y ~ x + (1 | site:ward)", "y ~ x + (x | site)"], "its random term ((Intercept) | site:ward) has no counterpart in m1")
    }

    func testNestingAndMixtureRules() throws {
        func spec(_ fixed: [String], _ terms: [(String, Grouping, [String])], family: Family = .gaussian) -> ModelSpec {
            ModelSpec(formula: "", family: family, response: .value(.variable("y")),
                      fixed: fixed.map { DesignColumn(name: $0, expr: .variable($0)) },
                      terms: terms.map { RandomTerm(name: $0.0, grouping: $0.1, columns: $0.2.map { DesignColumn(name: $0, expr: .variable($0)) }) })
        }
        let flat = spec(["(Intercept)", "x"], [])
        let int = spec(["(Intercept)", "x"], [("site", .site, ["(Intercept)"])])
        let slope = spec(["(Intercept)", "x"], [("site", .site, ["(Intercept)", "x"])])
        let two = spec(["(Intercept)", "x"], [("site", .site, ["(Intercept)", "x", "z"])])
        XCTAssertEqual(ModelComparison.addedRandomEffect(small: flat, large: int), 0)
        XCTAssertEqual(ModelComparison.addedRandomEffect(small: int, large: slope), 1)
        XCTAssertEqual(ModelComparison.addedRandomEffect(small: slope, large: two), 2)
        XCTAssertNil(ModelComparison.addedRandomEffect(small: flat, large: slope), "two random effects added")
        XCTAssertNil(ModelComparison.addedRandomEffect(small: int, large: two))
        XCTAssertNil(ModelComparison.addedRandomEffect(small: spec(["(Intercept)"], [("site", .site, ["(Intercept)"])]), large: slope))
        XCTAssertEqual(ModelComparison.npar(flat), 3)
        XCTAssertEqual(ModelComparison.npar(slope), 6)
        XCTAssertEqual(ModelComparison.npar(spec(["(Intercept)", "x"], [], family: .binomial)), 2)
        XCTAssertNoThrow(try ModelComparison.checkNested([slope, flat, int], names: ["a", "b", "c"]))
        XCTAssertEqual(ModelComparison.order([slope, flat, int]), [1, 2, 0])
        // Same rows: each model also requires what the others read.
        let z = spec(["(Intercept)", "z"], [("site", .site, ["(Intercept)"])])
        let same = ModelComparison.sameRows([int, z])
        XCTAssertEqual(same[0].alsoRequired, ["z"])
        XCTAssertEqual(same[1].alsoRequired, ["x"])
        XCTAssertEqual(Set(same[0].requiredVariables), Set(same[1].requiredVariables))
        // The field travels on the wire only when set.
        let wire = String(decoding: try JSONEncoder().encode(same[0]), as: UTF8.self)
        XCTAssertTrue(wire.contains("\"also_required\":[\"z\"]"), wire)
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(int), as: UTF8.self).contains("also_required"))
        XCTAssertEqual(try JSONDecoder().decode(ModelSpec.self, from: Data(wire.utf8)), same[0])
    }

    /// The design effect on its own, against the `icc` section's values.
    func testDesignEffectMatchesReference() throws {
        for key in ["exam_site", "sleepstudy_site", "sleepstudy_subject"] {
            let ref = Self.icc(key)
            let sizes = (ref["cluster_sizes"] as! [String: Int]).values.map { $0 }
            let icc = (ref["reml"] as! [String: Any])["icc"] as! Double
            let d = DesignEffect(icc: icc, clusterSizes: sizes, group: ref["grouping"] as! String)
            let de = ref["design_effect_reml"] as! [String: Double]
            let stats = ref["cluster_size_stats"] as! [String: Any]
            XCTAssertEqual(d.nClusters, stats["n_clusters"] as! Int)
            XCTAssertEqual(d.meanClusterSize, stats["mean_size"] as! Double, accuracy: 1e-12)
            XCTAssertEqual(d.cvClusterSize!, stats["cv_population"] as! Double, accuracy: 1e-12)
            XCTAssertEqual(d.cvClusterSizeSample!, stats["cv_sample"] as! Double, accuracy: 1e-12)
            XCTAssertEqual(d.equal, de["equal"]!, accuracy: 1e-12 * de["equal"]!, key)
            XCTAssertEqual(d.unequal!, de["unequal_cv_population"]!, accuracy: 1e-12 * de["equal"]!, key)
            XCTAssertEqual(d.unequalSampleCV!, de["unequal_cv_sample"]!, accuracy: 1e-12 * de["equal"]!, key)
            XCTAssertTrue(d.clusteringMatters)
            XCTAssertTrue(d.summary.hasPrefix("ICC above 0.05: clustering matters for the standard errors"), d.summary)
            // Mean size only (clusters within sites): the equal-size design effect.
            let m = DesignEffect(icc: icc, nObs: stats["n_obs"] as! Int, nClusters: stats["n_clusters"] as! Int, group: "g")
            XCTAssertEqual(m.equal, de["equal"]!, accuracy: 1e-12 * de["equal"]!)
            XCTAssertNil(m.unequal)
        }
        for key in ["contraception_site", "cbpp_site"] {
            let ref = Self.icc(key)
            let sizes = (ref["cluster_sizes"] as! [String: Int]).values.map { $0 }
            // The latent-scale ICC: σ²/(σ² + π²/3).
            let v = ref["var_group"] as! Double
            let icc = v / (v + Double.pi * Double.pi / 3)
            XCTAssertEqual(icc, ref["icc_latent"] as! Double, accuracy: 1e-14)
            let d = DesignEffect(icc: icc, clusterSizes: sizes, group: "site", iccScale: "latent")
            let de = ref["design_effect"] as! [String: Double]
            XCTAssertEqual(d.equal, de["equal"]!, accuracy: 1e-12 * de["equal"]!, key)
            XCTAssertEqual(d.unequal!, de["unequal_cv_population"]!, accuracy: 1e-12 * de["equal"]!, key)
            XCTAssertEqual(d.unequalSampleCV!, de["unequal_cv_sample"]!, accuracy: 1e-12 * de["equal"]!, key)
        }
        let small = DesignEffect(icc: 0.01, clusterSizes: [10, 20, 30], group: "site")
        XCTAssertFalse(small.clusteringMatters)
        XCTAssertTrue(small.summary.hasPrefix("ICC at most 0.05"), small.summary)
    }

    func testRFormatting() {
        XCTAssertEqual(RFormat.column([9340.007676929254, 9301.38809395427], digits: 5), ["9340.0", "9301.4"])
        XCTAssertEqual(RFormat.column([nil, 42.6196], digits: 5), ["", "42.62"])
        XCTAssertEqual(RFormat.column([nil, 12.118], digits: 5), ["", "12.118"])
        XCTAssertEqual(RFormat.pValue(5.562565609832643e-10), "5.563e-10")
        XCTAssertEqual(RFormat.pValue(0.002337), "0.002337")
        XCTAssertEqual(RFormat.pValue(3.7e-86), "< 2.2e-16")
        XCTAssertEqual(RFormat.stars(0.002), "**")
    }
}

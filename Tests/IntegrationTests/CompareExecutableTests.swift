import Foundation
import XCTest
import ExecutableSupport

/// `fedmix compare` through the built executable: each option reaches its effect.
extension ExecutableTests {
    static let examModels = ["--formula", "normexam ~ standLRT + sex + (1 | site)", "--formula", "normexam ~ standLRT + sex + (standLRT | site)"]
    static let labModels = ["--formula", "Reaction ~ Days + (1 | Subject)", "--formula", ExecutableTests.withLab]

    func anovaRows(_ o: [String: Any]) -> [[String: Any]] { o["anova"] as? [[String: Any]] ?? [] }

    /// exam: Chisq, Df and p equal lme4's (tight) anova to 1e-6; the text is lme4's layout.
    func compareExamEqualsLme4() throws {
        let sites = Fixtures.caseDirectory("exam").appendingPathComponent("sites").path
        let o = try json(try fedmix(["compare", sites, "--in-process", "--format", "json"] + Self.examModels))
        let rows = anovaRows(o)
        let tight = (((CompareTests.anova("exam_intercept_vs_slope")["tight"] as! [String: Any])["table"]) as! [[String: Any]])[1]
        XCTAssertEqual(rows.map { $0["npar"] as? Int }, [5, 7])
        XCTAssertEqual(rows[1]["df"] as? Int, 2)
        for k in ["chisq", "p_value", "p_value_mixture"] {
            let mine = rows[1][k] as! Double, theirs = tight[k] as! Double
            XCTAssertLessThanOrEqual(abs(mine - theirs) / theirs, 1e-6, "\(k): fedmix \(mine), lme4 \(theirs)")
        }
        XCTAssertEqual(o["refitted_ml"] as? Bool, true)
        XCTAssertEqual((o["models"] as? [Any])?.count, 2)
        XCTAssertEqual(o["flat_vs_mixed"] as? [Any] as? [Int], [])
        XCTAssertTrue(o["design_effect"] is NSNull)
        let text = try fedmix(["compare", sites, "--in-process"] + Self.examModels).out
        XCTAssertTrue(text.hasPrefix("refitting model(s) with ML (instead of REML)\nData: data (4059 rows at 65 sites"), text)
        XCTAssertTrue(text.contains("Models:\nm0: normexam ~ standLRT + sex + (1 | site)\nm1: normexam ~ standLRT + sex + (standLRT | site)\n"), text)
        XCTAssertTrue(text.contains("   npar    AIC    BIC  logLik deviance Chisq Df Pr(>Chisq)\n"
                                    + "m0    5 9340.0 9371.6 -4665.0   9330.0\n"
                                    + "m1    7 9301.4 9345.5 -4643.7   9287.4 42.62  2  5.563e-10 ***\n---\n"), text)
        XCTAssertTrue(text.contains("50:50 mixture of chi-squares with 1 and 2 df"), text)
    }

    /// Over agent processes with disclosure rules: the model without `lab`
    /// is fitted on the rows where lab is present (the rows of the larger
    /// model), so the sites' differencing rule has nothing to refuse; --ml
    /// means nothing is refitted.
    func compareOverAgentsOnTheSameRows() throws {
        let dir = try scratch("compare")
        let r = try fedmix(["compare"] + (try remote) + Self.labModels + ["--ml", "--format", "json", "--output", dir + "/c.json"])
        XCTAssertEqual(r.out, "")
        let o = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/c.json"))) as! [String: Any]
        let models = o["models"] as! [[String: Any]]
        XCTAssertEqual(models.map { $0["n_obs"] as? Int }, [120, 120])
        XCTAssertEqual(models.map { Self.model($0)["method"] }, ["ML", "ML"])
        XCTAssertEqual(o["refitted_ml"] as? Bool, false)
        XCTAssertEqual(anovaRows(o)[1]["df"] as? Int, 1)
        XCTAssertTrue(anovaRows(o)[1]["p_value_mixture"] is NSNull, "a fixed effect added: no boundary mixture")
        let text = try fedmix(["compare"] + (try remote) + Self.labModels).out
        XCTAssertTrue(text.hasPrefix("refitting model(s) with ML (instead of REML)\n"), text)
        try fedmixUsageError(["compare", "--sites", try agents().sitesFile] + Self.labModels, "missing required option --dataset NAME")
    }

    func compareGLMM() throws {
        let o = try json(try fedmix(["compare"] + (try data().files) + ["--in-process", "--formula", "slow ~ Days + (1 | Subject)",
                                    "--formula", "slow ~ Days + lab + (1 | Subject)", "--family", "binomial", "--link", "probit",
                                    "--nagq", "3", "--format", "json"]))
        for m in o["models"] as! [[String: Any]] {
            XCTAssertEqual(Self.model(m)["family"], "binomial")
            XCTAssertEqual(Self.model(m)["link"], "probit")
            XCTAssertEqual(Self.model(m)["method"], "AGQ nAGQ=3")
        }
        XCTAssertEqual(o["refitted_ml"] as? Bool, false)
        XCTAssertEqual(anovaRows(o).map { $0["npar"] as? Int }, [3, 4], "no σ in a GLMM's npar")
    }

    func compareModelOptions() throws {
        let base = ["compare"] + (try data().files) + ["--in-process", "--format", "json"] + Self.labModels
        let plain = try json(try fedmix(base))
        let filtered = try json(try fedmix(base + ["--filter", "Days >= 2"]))
        let weighted = try json(try fedmix(base + ["--filter", "Days >= 2", "--weights", "w"]))
        XCTAssertEqual(plain["n_obs"] as? Int, 120)
        XCTAssertEqual(filtered["n_obs"] as? Int, 36 + 30 + 18, "--filter Days >= 2 on the rows with lab")
        XCTAssertNotEqual(anovaRows(weighted)[0]["loglik"] as? Double, anovaRows(filtered)[0]["loglik"] as? Double, "--weights changes the fits")
    }

    func compareRefusals() throws {
        let files = try data().files
        try fedmixUsageError(["compare"] + files + ["--formula", Self.withLab], "give at least two models to compare")
        try fedmixUsageError(["compare"] + files + ["--in-process", "--formula", "Reaction ~ Days + (1 | Subject)", "--formula", "Reaction ~ lab + (1 | Subject)"],
                             "m0 and m1 both have 4 parameters: neither is nested in the other")
        try fedmixUsageError(["compare"] + files + ["--in-process", "--formula", "Reaction ~ Days + (1 | Subject)", "--formula", "Days ~ lab + (1 | Subject)"],
                             "m1 has a different response from m0")
        try fedmixUsageError(["compare"] + files + ["--formula", "Reaction ~ Days + (1 | Subject", "--formula", Self.withLab], "--formula")
        try fedmixUsageError(["compare"] + (try remote) + Self.labModels + ["--in-process"],
                             "--in-process cannot be used with --sites (it runs local agents for CSV paths)")
        try fedmixUsageError(["compare"] + files + Self.labModels + ["--dataset", "data"], "--dataset cannot be used with CSV paths")
        try fedmixUsageError(["compare"] + Self.labModels, "give --sites FILE --dataset NAME, or CSV files/folders")
    }

    func compareExcludeSites() throws {
        let o = try json(try fedmix(["compare"] + (try data().files) + Self.labModels + ["--in-process", "--format", "json", "--exclude-sites", "central"]))
        for m in o["models"] as! [[String: Any]] { XCTAssertEqual(m["excluded_sites"] as? [String], ["central"]) }
        XCTAssertEqual(o["n_sites"] as? Int, 2)
    }

    func compareNetworkOptions() throws {
        try networkOptions("compare", Self.labModels)
        try fedmixUsageError(["compare"] + (try data().files) + Self.labModels + ["--round-timeout", "5"], "--round-timeout cannot be used with CSV paths")
    }
}

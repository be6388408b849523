import Foundation
import XCTest
import Coordinator
import Math

/// The multiple-imputation options of the built `fedmix` (entries of
/// ExecutableTests.table): each reaches its effect.
extension ExecutableTests {
    static let imputationModel = "lab ~ Days + Reaction + (1 | site)"

    func simulateImputation() throws {
        let dir = try scratch("simulate-imputation")
        XCTAssertEqual(try fedmix(["simulate", "imputation", "--out", dir + "/a"]).out, "wrote 8 site files to \(dir)/a\n")
        try fedmix(["simulate", "imputation", "--out", dir + "/b", "--seed", "3"])
        XCTAssertEqual(try rows(dir + "/a/st-olaf.csv").count, 150)
        XCTAssertEqual(try String(contentsOfFile: dir + "/a/st-olaf.csv", encoding: .utf8),
                       ImputationSimulator.siteCSV(ImputationSimulator.sites[0], index: 0, seed: 16), "seed 16 by default")
        XCTAssertNotEqual(try rows(dir + "/a/st-olaf.csv"), try rows(dir + "/b/st-olaf.csv"), "--seed changes the rows")
        try fedmixUsageError(["simulate", "imputation", "--out", dir, "--scale", "2"], "--scale cannot be used with imputation")
    }

    func localImputation() throws {
        let files = try data().files
        let base = ["local"] + files + ["--formula", Self.withLab, "--impute", Self.imputationModel]
        let a = try jsonFit(base + ["--m", "4", "--seed", "7"])
        let b = try jsonFit(base + ["--m", "4", "--seed", "7"])
        let c = try jsonFit(base + ["--m", "4", "--seed", "8"])
        let shifted = try jsonFit(base + ["--m", "4", "--seed", "7", "--delta", "lab=1"])
        XCTAssertEqual(a["n_obs"] as? Int, 180, "lab completed in every row")
        let imputation = try XCTUnwrap(a["imputation"] as? [String: Any])
        XCTAssertEqual(imputation["m"] as? Int, 4)
        XCTAssertEqual(imputation["seed"] as? Int, 7)
        XCTAssertEqual(imputation["batched"] as? Bool, true, "the 4 analyses share rounds")
        let perAnalysis = try XCTUnwrap(imputation["rounds_per_analysis"] as? Int)
        XCTAssertLessThanOrEqual(try XCTUnwrap(imputation["analysis_rounds"] as? Int), perAnalysis + 2, "about one analysis's rounds on the wire, not 4 times them")
        let perSite = try XCTUnwrap(imputation["per_site"] as? [[String: Any]])
        let counts = Dictionary(uniqueKeysWithValues: perSite.map { ($0["site"] as! String, ($0["imputed"] as! [String: Any])["lab"] as? Int) })
        XCTAssertEqual(counts, ["central": 12, "north": 18, "south": 30], "lab is missing from Days 8, 7 and 5 on")
        let fe = try XCTUnwrap(a["fixed_effects"] as? [[String: Any]])
        XCTAssertEqual(fe.map { $0.keys.contains("riv") && $0.keys.contains("fmi") && $0.keys.contains("df") }, [true, true, true])
        XCTAssertEqual(Self.estimates(a), Self.estimates(b), "--seed: the same seed, the same pooled result")
        XCTAssertNotEqual(Self.estimates(a), Self.estimates(c), "another --seed")
        XCTAssertNotEqual(Self.estimates(a)[2], Self.estimates(shifted)[2], "--delta shifts lab's imputed values")
        // Chained equations: a second model (slow is complete, so it imputes nothing) makes the sweeps run.
        let fcs = try jsonFit(["local"] + files + ["--formula", Self.withLab, "--impute", Self.imputationModel,
                                                   "--impute", "slow ~ Days + lab + (1 | site)", "--iterations", "2", "--m", "2"])
        XCTAssertEqual((fcs["imputation"] as? [String: Any])?["iterations"] as? Int, 2)
        try fedmixUsageError(["local"] + files + ["--formula", Self.withLab, "--m", "5"], "--m cannot be used without --impute")
        try fedmixUsageError(base + ["--m", "1"], "--m must be")
        try fedmixUsageError(base + ["--delta", "Days=1"], "--delta Days: no --impute model completes Days")
        try fedmixUsageError(["local"] + files + ["--formula", Self.withLab, "--impute", "lab + Days ~ Reaction"],
                             "the left side must be the variable to impute, or log(variable)")
    }

    func fitImputationOverAgents() throws {
        let args = ["fit"] + (try remote) + ["--formula", Self.withLab, "--impute", Self.imputationModel, "--m", "3", "--seed", "11"]
        let remoteFit = try jsonFit(args)
        let again = try jsonFit(args)
        XCTAssertEqual(Self.estimates(remoteFit), Self.estimates(again))
        XCTAssertEqual(remoteFit["n_obs"] as? Int, 180)
        // Over agents as over local agents: the same seed, bit for bit.
        let local = try jsonFit(["local"] + (try data().files) + ["--formula", Self.withLab, "--impute", Self.imputationModel, "--m", "3", "--seed", "11"])
        XCTAssertEqual(Self.estimates(remoteFit), Self.estimates(local))
        let shifted = try jsonFit(args + ["--delta", "lab=-1"])
        XCTAssertNotEqual(Self.estimates(remoteFit)[2], Self.estimates(shifted)[2])
        try fedmixUsageError(["fit"] + (try remote) + ["--formula", Self.withLab, "--iterations", "3"], "--iterations cannot be used without --impute")
    }

    func sensitivityImputation() throws {
        let r = try fedmix(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--format", "json", "--impute", Self.imputationModel,
                                                                   "--m", "3", "--seed", "2", "--iterations", "1", "--delta", "lab=-2,2", "--tipping-point", "lab"])
        let analyses = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        XCTAssertEqual(analyses.map { $0["analysis"] as? String },
                       ["complete case", "multiple imputation (M = 3)", "MI, lab shifted by -2", "MI, lab shifted by 2", "tipping point"])
        let tipping = try XCTUnwrap(analyses.last?["tipping_point"] as? [String: Any])
        XCTAssertEqual(tipping["term"] as? String, "lab")
        XCTAssertEqual((tipping["points"] as? [[String: Any]])?.map { $0["delta"] as? Double }, [-2, 0, 2])
        let text = try fedmix(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--impute", Self.imputationModel,
                                                                      "--m", "3", "--delta", "lab=1"]).out
        XCTAssertTrue(text.contains("MNAR sensitivity: lab when the imputed values of lab are shifted by delta"), text)
        try fedmixUsageError(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--impute", Self.imputationModel, "--tipping-point", "lab"],
                             "--tipping-point cannot be used without --delta")
        try fedmixUsageError(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--impute", Self.imputationModel, "--m", "3",
                                                                     "--delta", "lab=1", "--tipping-point", "Dayz"],
                             "--tipping-point Dayz: the model has no fixed effect Dayz")
    }

    func compareImputation() throws {
        let base = ["compare"] + (try data().files) + ["--formula", "Reaction ~ Days + (1 | Subject)", "--formula", Self.withLab,
                                                       "--impute", Self.imputationModel, "--m", "4", "--seed", "3", "--format", "json"]
        let r = try json(try fedmix(base))
        let again = try json(try fedmix(base))
        XCTAssertEqual(r["n_obs"] as? Int, 180, "both models on every row, lab completed")
        let anova = try XCTUnwrap(r["anova"] as? [[String: Any]])
        let test = anova[1]
        let f = try XCTUnwrap(test["pooled_f"] as? Double), df2 = try XCTUnwrap(test["pooled_df2"] as? Double)
        // (JSONSerialization may read the last bit of a number differently: compare to 1e-12.)
        XCTAssertEqual(try XCTUnwrap(test["chisq"] as? Double), f * Double(test["df"] as! Int), accuracy: 1e-12 * f)
        XCTAssertEqual(try XCTUnwrap(test["p_value"] as? Double), FDistribution.upperTail(f, numdf: 1, dendf: df2), accuracy: 1e-12)
        XCTAssertEqual((again["anova"] as? [[String: Any]])?[1]["pooled_f"] as? Double, f, "--seed reproduces the pooled test")
        XCTAssertEqual((r["imputation"] as? [String: Any])?["analysis_fits"] as? Int, 8)
        let models = try XCTUnwrap(r["models"] as? [[String: Any]])
        XCTAssertNotNil((models[1]["fixed_effects"] as? [[String: Any]])?.last?["fmi"], "each model pooled by Rubin's rules")
        let shifted = try json(try fedmix(base + ["--delta", "lab=2", "--iterations", "1"]))
        XCTAssertNotEqual((shifted["anova"] as? [[String: Any]])?[1]["pooled_f"] as? Double, f, "--delta shifts lab")
        try fedmixUsageError(["compare"] + (try data().files) + ["--formula", "Reaction ~ Days + (1 | Subject)", "--formula", Self.withLab, "--seed", "3"],
                             "--seed cannot be used without --impute")
    }

    func benchImputationSmall() throws {
        let r = try fedmix(["bench-imputation", "--replications", "1", "--m", "2", "--seed", "5"])
        XCTAssertTrue(r.out.hasPrefix("fedmix bench-imputation: 1 replications (0 failed), M = 2, seeds 5…5"), r.out)
        for method in ["complete case", "missing indicator", "multiple imputation"] { XCTAssertTrue(r.out.contains(method), r.out) }
    }
}

extension ExecutableTests {
    /// `fedmix gee --impute`: the GEE on each completed dataset, pooled by
    /// Rubin's rules (df, riv, fmi per coefficient; the imputation block);
    /// --seed reproduces, --delta shifts, --iterations runs the sweeps.
    func geeImputed() throws {
        let base = ["gee"] + (try data().files) + ["--in-process", "--formula", "Reaction ~ Days + lab", "--cluster", "Subject",
                                                   "--corstr", "exchangeable", "--impute", Self.imputationModel]
        let a = try jsonFit(base + ["--m", "3", "--seed", "7"])
        let b = try jsonFit(base + ["--m", "3", "--seed", "7"])
        let c = try jsonFit(base + ["--m", "3", "--seed", "8"])
        let shifted = try jsonFit(base + ["--m", "3", "--seed", "7", "--delta", "lab=1"])
        XCTAssertEqual(a["n_obs"] as? Int, 180, "lab completed in every row")
        let imputation = try XCTUnwrap(a["imputation"] as? [String: Any])
        XCTAssertEqual(imputation["m"] as? Int, 3)
        XCTAssertEqual(imputation["seed"] as? Int, 7)
        let fe = try XCTUnwrap(a["fixed_effects"] as? [[String: Any]])
        XCTAssertTrue(fe.allSatisfy { ($0["df"] as? Double ?? 0) > 0 && $0["riv"] is Double && $0["fmi"] is Double && $0["naive_std_error"] is Double })
        XCTAssertEqual(Self.estimates(a), Self.estimates(b), "--seed: the same pooled result")
        XCTAssertNotEqual(Self.estimates(a), Self.estimates(c), "another --seed")
        XCTAssertNotEqual(Self.estimates(a)[2], Self.estimates(shifted)[2], "--delta shifts lab's imputed values")
        let fcs = try jsonFit(base + ["--impute", "slow ~ Days + lab + (1 | site)", "--iterations", "2", "--m", "2"])
        XCTAssertEqual((fcs["imputation"] as? [String: Any])?["iterations"] as? Int, 2)
        let text = try fedmix(base + ["--m", "2"]).out
        XCTAssertTrue(text.contains("Multiple imputation: M = 2"), text)
        XCTAssertTrue(text.contains("Barnard-Rubin"), text)
    }
}

import Foundation
import XCTest
import ExecutableSupport

/// `fedmix gee` through the built executable: every option reaches its
/// effect (entries in ExecutableTests.table).
extension ExecutableTests {
    static let respiratory = GEETests.root.appendingPathComponent("respiratory").path
    static let respiratoryFormula = "outcome ~ treat + sex + age + baseline"

    /// geeglm's ar1 fit by visit, with both corrected SEs and t on 106 df
    /// (Kauermann-Carroll's SE), through local agents over loopback TLS.
    func geeLocalEqualsGeepack() throws {
        let ref = GEETests.references["respiratory-ar1"]!
        let fit = try jsonFit(["gee", Self.respiratory, "--formula", Self.respiratoryFormula, "--family", "binomial", "--link", "logit",
                               "--cluster", "id", "--corstr", "ar1", "--order", "visit", "--small-sample", "kc"])
        let rows = fit["fixed_effects"] as! [[String: Any]]
        XCTAssertEqual(rows.map { $0["name"] as! String }, ref["names"] as! [String])
        for (k, row) in rows.enumerated() {
            for (field, key) in [("estimate", "estimate"), ("std_error", "std_error"), ("naive_std_error", "naive_std_error"),
                                 ("std_error_md", "std_error_md"), ("std_error_kc", "std_error_kc")] {
                XCTAssertLessThan(relativeError(row[field] as! Double, (ref[key] as! [Double])[k]), 1e-6, "\(field) \(k)")
            }
            let se = row["std_error_kc"] as! Double, t = row["statistic"] as! Double
            XCTAssertEqual(t, (row["estimate"] as! Double) / se, accuracy: 1e-12, "t uses the KC SE")
        }
        XCTAssertEqual(fit["statistic"] as? String, "t")
        XCTAssertEqual((fit["small_sample"] as? [String: Any])?["df"] as? Int, 111 - 5)
        let correlation = fit["correlation"] as! [String: Any]
        XCTAssertEqual(correlation["structure"] as? String, "ar1")
        XCTAssertEqual(correlation["order"] as? String, "visit")
        XCTAssertLessThan(relativeError(correlation["alpha"] as! Double, ref["alpha"] as! Double), 1e-6)
        XCTAssertLessThan(relativeError(fit["scale"] as! Double, ref["scale"] as! Double), 1e-6)
        XCTAssertEqual(fit["n_clusters"] as? Int, 111)
        XCTAssertGreaterThan(fit["rounds"] as! Int, 3)
        // The default correlation is independence: a different fit, with no α.
        let independent = try jsonFit(["gee", Self.respiratory, "--formula", Self.respiratoryFormula, "--family", "binomial", "--cluster", "id"])
        XCTAssertTrue((independent["correlation"] as! [String: Any])["alpha"] is NSNull)
        XCTAssertEqual(independent["statistic"] as? String, "z")
        XCTAssertNil((independent["fixed_effects"] as! [[String: Any]])[0]["std_error_md"])
    }

    /// --in-process gives the same numbers as the agents over TLS; the text is geepack's layout.
    func geeInProcessAndText() throws {
        let args = ["gee", Self.respiratory, "--formula", Self.respiratoryFormula, "--family", "binomial", "--cluster", "id",
                    "--corstr", "exchangeable"]
        let tls = try jsonFit(args), local = try jsonFit(args + ["--in-process"])
        XCTAssertEqual(Self.estimates(tls), Self.estimates(local))
        XCTAssertEqual(Self.stdErrors(tls), Self.stdErrors(local))
        let text = try fedmix(args + ["--in-process"]).out
        for s in ["Correlation structure = exchangeable", "Estimated Correlation Parameters:", "Number of clusters:   111", "Wald", "Naive SE"] {
            XCTAssertTrue(text.contains(s), "\(s) in \(text)")
        }
    }

    /// Against agent processes through a sites file, with --output: the same fit as on the local files.
    func geeOverAgents() throws {
        let out = try scratch("gee") + "/gee.json"
        let base = ["--formula", "Reaction ~ Days", "--cluster", "Subject", "--corstr", "exchangeable"]
        try fedmix(["gee"] + (try remote) + base + ["--format", "json", "--output", out])
        let remoteFit = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as! [String: Any]
        let localFit = try jsonFit(["gee"] + (try data().files) + base + ["--in-process"])
        XCTAssertEqual(Self.estimates(remoteFit), Self.estimates(localFit))
        XCTAssertEqual(Self.stdErrors(remoteFit), Self.stdErrors(localFit))
        XCTAssertEqual(remoteFit["n_clusters"] as? Int, 18)
    }

    /// --filter, --missing-indicator, --exclude-sites-missing-above and --exclude-sites change the rows as in a fit.
    func geeRowOptions() throws {
        let base = ["gee"] + (try data().files) + ["--in-process", "--cluster", "Subject", "--corstr", "exchangeable"]
        let all = try jsonFit(base + ["--formula", "Reaction ~ Days"])
        XCTAssertEqual(all["n_obs"] as? Int, 180)
        let filtered = try jsonFit(base + ["--formula", "Reaction ~ Days", "--filter", "Days >= 2"])
        XCTAssertEqual(filtered["n_obs"] as? Int, 144)
        let indicator = try jsonFit(base + ["--formula", "Reaction ~ Days + lab", "--missing-indicator", "lab=0"])
        XCTAssertEqual(indicator["n_obs"] as? Int, 180)
        XCTAssertEqual(Self.names(indicator), ["(Intercept)", "Days", "lab", "missing(lab)"])
        let excluded = try jsonFit(base + ["--formula", "Reaction ~ Days + lab", "--exclude-sites-missing-above", "lab=0.4"])
        XCTAssertEqual(excluded["excluded_sites"] as? [String], ["south"])
        let named = try jsonFit(base + ["--formula", "Reaction ~ Days", "--exclude-sites", "central"])
        XCTAssertEqual(named["excluded_sites"] as? [String], ["central"])
        XCTAssertEqual(named["n_sites"] as? Int, 2)
    }

    /// --glmm: the matching GLMM (1 | site:id) beside the GEE, with the plain-language line.
    func geeBesideGLMM() throws {
        let fit = try jsonFit(["gee", Self.respiratory, "--in-process", "--formula", Self.respiratoryFormula, "--family", "binomial",
                               "--cluster", "id", "--corstr", "exchangeable", "--glmm"])
        let side = try XCTUnwrap(fit["side_by_side"] as? [String: Any])
        XCTAssertEqual(side["glmm_formula"] as? String, Self.respiratoryFormula + " + (1 | site:id)")
        let rows = side["rows"] as! [[String: Any]]
        XCTAssertEqual(rows.map { $0["name"] as! String }, ["treatP", "sexM", "age", "baseline"])
        let gee = Dictionary(uniqueKeysWithValues: (fit["fixed_effects"] as! [[String: Any]]).map { ($0["name"] as! String, $0["estimate"] as! Double) })
        for r in rows {
            XCTAssertEqual(r["gee_ratio"] as! Double, exp(gee[r["name"] as! String]!), accuracy: 1e-12)
            // Attenuation: the conditional log-odds ratio is the farthest from 0.
            XCTAssertGreaterThan(abs(log(r["conditional_ratio"] as! Double)), abs(log(r["implied_marginal_ratio"] as! Double)))
        }
        XCTAssertTrue((side["explanation"] as! String).contains("closer to 1"))
        try fedmixUsageError(["gee", Self.respiratory, "--formula", "outcome ~ age", "--cluster", "id", "--glmm"], "--glmm compares odds or rate ratios")
    }

    func geeUsageErrors() throws {
        let base = ["gee", Self.respiratory]
        try fedmixUsageError(base + ["--formula", "outcome ~ treat + (1 | id)", "--cluster", "id"],
                             "--formula: GEE models the population-averaged mean with fixed effects only; remove the random-effects term (grouped by id)")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat"], "missing required option --cluster")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat", "--cluster", "id", "--corstr", "ar1"], "--corstr ar1 needs --order VAR")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat", "--cluster", "id", "--order", "visit"], "--order orders rows for --corstr ar1 only")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat", "--cluster", "id", "--corstr", "ar2"], "--corstr must be independence, exchangeable or ar1")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat", "--cluster", "id", "--small-sample", "hc3"], "--small-sample must be md or kc")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat", "--cluster", "id", "--corstr", "ar1", "--order", "treat"],
                             "--order treat: the order of rows within a cluster must be a numeric variable")
        try fedmixUsageError(base + ["--formula", "outcome ~ treat", "--cluster", "id", "--dataset", "data"], "--dataset cannot be used with CSV paths")
    }

    func geeNetworkOptions() throws {
        try networkOptions("gee", ["--formula", "Reaction ~ Days", "--cluster", "site"])
        try fedmixUsageError(["gee"] + (try data().files) + ["--formula", "Reaction ~ Days", "--cluster", "site", "--round-timeout", "5"],
                             "--round-timeout cannot be used with CSV paths")
    }
}

/// --marginal through the built executable (entries in ExecutableTests.table).
extension ExecutableTests {
    static let slowGLMM = ["--family", "binomial", "--formula", "slow ~ Days + (1 | Subject)"]

    /// contraception: the marginal section equals R's brute force (at
    /// fedmix's optimum, within the GLMM tolerance of lme4's); without the
    /// flag there is none.
    func localMarginalEffects() throws {
        let sites = Fixtures.caseDirectory("contraception").appendingPathComponent("sites").path
        let base = ["local", sites, "--in-process", "--family", "binomial", "--formula", MarginalEffectsTests.formula]
        let fit = try jsonFit(base + ["--marginal"])
        let m = try XCTUnwrap(fit["marginal"] as? [String: Any])
        let predicted = (m["predicted"] as! [String: Any])["estimate"] as! Double
        XCTAssertLessThan(relativeError(predicted, MarginalEffectsTests.reference["predicted"] as! Double), 1e-3)
        XCTAssertEqual((m["effects"] as! [[String: Any]]).map { $0["kind"] as! String },
                       ["derivative", "derivative", "discrete change", "discrete change", "discrete change", "discrete change"])
        XCTAssertNil(try jsonFit(base)["marginal"])
        try fedmixUsageError(["local", sites, "--formula", "use01 ~ age + (1 | site)", "--marginal"],
                             "--marginal applies to GLMMs (--family binomial or poisson)")
    }

    /// Over agent processes: the same marginal section as on the local files.
    func fitMarginalOverAgents() throws {
        let remoteFit = try jsonFit(["fit"] + (try remote) + Self.slowGLMM + ["--marginal"])
        let localFit = try jsonFit(["local"] + (try data().files) + ["--in-process"] + Self.slowGLMM + ["--marginal"])
        let a = remoteFit["marginal"] as! [String: Any], b = localFit["marginal"] as! [String: Any]
        XCTAssertEqual((a["predicted"] as! [String: Any])["estimate"] as? Double, (b["predicted"] as! [String: Any])["estimate"] as? Double)
        XCTAssertEqual((a["effects"] as! [[String: Any]]).map { $0["estimate"] as! Double },
                       (b["effects"] as! [[String: Any]]).map { $0["estimate"] as! Double })
    }
}

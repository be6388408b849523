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

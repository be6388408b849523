import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// Flat models (no random-effects term) against R's lm / glm and
/// sandwich::vcovCL on the pooled rows (Tests/Fixtures/inference/references.json,
/// section flat), in-process and through agents over loopback mutual TLS.
final class FlatModelTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("flat-models")
    override class func tearDown() { pki.remove() }

    static var references: [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("inference/references.json")
        let all = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return all["flat"] as! [String: Any]
    }

    /// (case, cluster the fit asks for, the reference's cluster label).
    static let cases: [(name: String, cluster: String, refCluster: String)] = [
        ("sleepstudy", "site", "site"), ("sleepstudy", "Subject", "Subject"),
        ("exam", "site", "site"), ("contraception", "site", "site"), ("cbpp", "site", "site"),
    ]

    func options(_ ref: [String: Any], cluster: String) -> FitOptions {
        var o = FitOptions(family: ref["family"] as! String == "binomial" ? .binomial : .gaussian)
        o.cluster = cluster
        return o
    }

    /// Coefficients, SEs, vcovCL SEs (sandwich's default type for the
    /// model), σ or dispersion, deviance, logLik, AIC, BIC against R; returns
    /// the worst relative errors (coefficients, SEs, robust SEs).
    @discardableResult
    func check(_ r: FitResult, _ ref: [String: Any], refCluster: String, _ label: String) -> (Double, Double, Double) {
        let coefs = ref["coefficients"] as! [[String: Any]]
        XCTAssertEqual(r.fixedEffects.map(\.name), coefs.map { $0["name"] as! String }, label)
        var worst = (0.0, 0.0, 0.0)
        for (f, c) in zip(r.fixedEffects, coefs) {
            let b = relativeError(f.estimate, c["estimate"] as! Double), se = relativeError(f.stdError, c["std_error"] as! Double)
            worst.0 = max(worst.0, b); worst.1 = max(worst.1, se)
            XCTAssertLessThan(b, 1e-8, "\(label) \(f.name) estimate")
            XCTAssertLessThan(se, 1e-8, "\(label) \(f.name) SE")
            XCTAssertLessThan(relativeError(f.statistic, c["statistic"] as! Double), 1e-8, "\(label) \(f.name) statistic")
            let p = c["p_value"] as! Double
            if p > 0 { XCTAssertLessThan(abs(f.pValue - p) / p, 1e-8, "\(label) \(f.name) p-value") }
        }
        XCTAssertEqual(r.model.kind, ref["statistic"] as! String == "t" ? "lm" : "glm", label)
        XCTAssertEqual(r.nObs, ref["nobs"] as! Int, label)
        XCTAssertEqual(r.dfResid, ref["df_residual"] as! Int, label)
        XCTAssertEqual(r.flat?.statistic, ref["statistic"] as? String, label)
        XCTAssertEqual(r.flat?.logLikDF, ref["loglik_df"] as? Int, label)
        for (got, key) in [(r.loglik, "loglik"), (r.aic, "aic"), (r.bic, "bic"), (r.flat?.deviance ?? .nan, "deviance")] {
            XCTAssertLessThan(relativeError(got, ref[key] as! Double), 1e-10, "\(label) \(key)")
        }
        if let sigma = ref["sigma"] as? Double {
            XCTAssertLessThan(relativeError(r.sigma, sigma), 1e-10, "\(label) sigma")
            XCTAssertLessThan(relativeError(r.flat?.rSquared ?? .nan, ref["r_squared"] as! Double), 1e-10, "\(label) R²")
            XCTAssertLessThan(relativeError(r.flat?.adjRSquared ?? .nan, ref["adj_r_squared"] as! Double), 1e-10, "\(label) adj R²")
            let f = ref["fstatistic"] as! [String: Any]
            XCTAssertLessThan(relativeError(r.flat?.fStatistic?.value ?? .nan, f["value"] as! Double), 1e-10, "\(label) F")
        } else {
            XCTAssertEqual(r.flat?.dispersion, 1, label)
            XCTAssertLessThan(relativeError(r.flat?.nullDeviance ?? .nan, ref["null_deviance"] as! Double), 1e-10, "\(label) null deviance")
            XCTAssertEqual(r.flat?.dfNull, ref["df_null"] as? Int, label)
            XCTAssertEqual(r.flat?.iterations, ref["iterations"] as? Int, "\(label) IRLS iterations")
        }
        XCTAssertTrue(r.varianceComponents.isEmpty && r.theta.isEmpty, label)
        // vcovCL with sandwich's default type (HC1 for lm, HC0 for glm).
        let robusts = ref["robust"] as! [[String: Any]]
        let expected = robusts.first { $0["cluster"] as! String == refCluster && $0["type_is_default"] as! Bool }!
        guard let robust = r.robust else { XCTFail("\(label): no robust covariance"); return worst }
        XCTAssertEqual(robust.type, expected["type"] as! String, label)
        XCTAssertEqual(robust.clusters, expected["n_clusters"] as! Int, label)
        for (got, want) in zip(robust.stdErrors, expected["std_error"] as! [Double]) {
            worst.2 = max(worst.2, relativeError(got, want))
            XCTAssertLessThan(relativeError(got, want), 1e-8, "\(label) robust SE")
        }
        let vcov = (expected["vcov"] as! [String: Any])["row_major"] as! [[Double]]
        for i in vcov.indices { for j in vcov.indices {
            XCTAssertLessThan(abs(robust.vcov[i][j] - vcov[i][j]), 1e-8 * (vcov[i][i] * vcov[j][j]).squareRoot(), "\(label) robust vcov[\(i),\(j)]")
        } }
        return worst
    }

    func testFlatReferenceCasesInProcessAndOverTLSEqualR() throws {
        var figures: [String] = []
        for c in Self.cases {
            let ref = Self.references[c.name] as! [String: Any]
            let formula = ref["formula"] as! String
            let files = try Fixtures.siteFiles(c.name)
            let label = "\(c.name) --cluster \(c.cluster)"
            let inProcess = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula,
                                             options: options(ref, cluster: c.cluster))
            check(inProcess, ref, refCluster: c.refCluster, "\(label) in-process")
            let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close(); agents.forEach { $0.stop() } }
            let overTLS = try Analysis.fit(federation, dataset: "data", formula: formula, options: options(ref, cluster: c.cluster))
            let worst = check(overTLS, ref, refCluster: c.refCluster, "\(label) over TLS")
            XCTAssertEqual(overTLS.rounds, inProcess.rounds, label)
            if ref["statistic"] as! String == "t" { XCTAssertEqual(overTLS.rounds, 2, "\(label): lm is prepare + finalize") }
            figures.append(String(format: "%@: %d sites, %d rounds, %d bytes (incl. describe); worst rel. error coef %.1e, SE %.1e, robust SE %.1e",
                                  label, files.count, overTLS.rounds, federation.bytesSent.reduce(0, +) + federation.bytesReceived.reduce(0, +),
                                  worst.0, worst.1, worst.2))
        }
        print("Flat reference cases over loopback mutual TLS:\n" + figures.joined(separator: "\n"))
    }

    /// The robust cluster is a variable the site's rules govern, and a
    /// cluster of fewer than min_cell rows is refused.
    func testClusterVariableFollowsTheSiteRules() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        var policy = DisclosurePolicy.off
        policy.minCell = 11   // each Subject has 10 rows
        var o = FitOptions(); o.cluster = "Subject"
        XCTAssertThrowsError(try Analysis.fit(inProcessFederation(files: files, policy: policy), dataset: "data",
                                              formula: "Reaction ~ Days", options: o)) { e in
            XCTAssertTrue("\(e)".contains("fewer than 11 rows"), "\(e)")
        }
        policy.minCell = 10
        XCTAssertNoThrow(try Analysis.fit(inProcessFederation(files: files, policy: policy), dataset: "data",
                                          formula: "Reaction ~ Days", options: o))
        // A mixed model takes no cluster.
        XCTAssertThrowsError(try Analysis.validate(formula: "Reaction ~ Days + (1 | site)", options: o)) { e in
            XCTAssertEqual((e as? SettingError)?.settings, [.cluster])
        }
    }

    /// Without --cluster a flat fit has no robust section, and the text is R's summary.lm layout.
    func testFlatTextSummary() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        var o = FitOptions(); o.cluster = "site"
        let r = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "Reaction ~ Days", options: o)
        let text = Report.text(r)
        for s in ["Std. Error", "t value", "Pr(>|t|)", "Residual standard error: 47.71 on 178 degrees of freedom",
                  "Multiple R-squared:  0.2865", "F-statistic: 71.46 on 1 and 178 DF", "Cluster-robust standard errors (sandwich::vcovCL, type HC1, cluster site: 3 clusters)"] {
            XCTAssertTrue(text.contains(s), "missing \(s) in\n\(text)")
        }
        let plain = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "Reaction ~ Days")
        XCTAssertNil(plain.robust)
        XCTAssertFalse(try plain.json().contains("\"robust\""))
    }
}

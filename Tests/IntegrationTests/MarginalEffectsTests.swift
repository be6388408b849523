import Foundation
import XCTest
@testable import Coordinator
import Protocol
import SiteAgent
import Math

/// A GLMM's population-averaged effects (--marginal) on contraception against
/// the brute-force computation on the pooled rows in R
/// (Tests/Fixtures/tools/marginal-references.R: adaptive quadrature per row
/// for a random intercept; a 64 × 64 product rule over the two-dimensional
/// random effect of a random slope).
final class MarginalEffectsTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("marginal")
    override class func tearDown() { pki.remove() }

    static func reference(_ file: String) -> [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("marginal/\(file).json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }
    static var reference: [String: Any] { reference("contraception") }
    static let formula = "use01 ~ age + I(age^2) + urban + livch + (1 | site)"

    /// The sites' sums at R's (β, θ), with R's Cov(β): the same quantities as
    /// R's adaptive quadrature, to 1e-6 relative (the worst is returned).
    func marginal(at federation: Federation, _ file: String = "contraception") throws -> (MarginalResult, Double) {
        let ref = Self.reference(file)
        var options = FitOptions(family: .binomial)
        options.marginal = true
        let descriptions = try Analysis.describe(federation, dataset: "data")
        let spec = try Analysis.model(federation, dataset: "data", formula: ref["formula"] as! String, descriptions: descriptions, options: options)
        let session = try FitSession.prepare(federation, dataset: "data", spec: spec)
        let beta = ref["beta"] as! [Double], theta = ref["theta"] as! [Double]
        let rows = ref["vcov"] as! [[Double]], p = beta.count
        var vcov = Matrix(rows: p, cols: p)
        for i in 0..<p { for j in 0..<p { vcov[i, j] = rows[i][j] } }
        let finals = try session.finalize(theta: theta, beta: beta, sigma: 1, marginal: MarginalEffects.request(spec))
        let m = try MarginalEffects.build(finals, sites: federation.sites, spec: spec, beta: beta, theta: theta, vcov: vcov)
        var worst = 0.0
        func close(_ a: Double, _ b: Double, _ what: String) {
            worst = max(worst, relativeError(a, b))
            XCTAssertLessThan(relativeError(a, b), 1e-6, "\(what): \(a) vs R \(b)")
        }
        XCTAssertEqual(m.rows, ref["n"] as! Int)
        close(m.predicted.estimate, ref["predicted"] as! Double, "predicted probability")
        close(m.predicted.stdError, ref["predicted_se"] as! Double, "its SE")
        let effects = ref["effects"] as! [Double], ses = ref["effects_se"] as! [Double], names = ref["names"] as! [String]
        XCTAssertEqual(m.effects.map { $0.name }, Array(names.dropFirst()))
        for (k, e) in m.effects.enumerated() {
            close(e.estimate, effects[k + 1], "\(e.name) AME")
            close(e.stdError, ses[k + 1], "\(e.name) AME SE")
            XCTAssertEqual(e.kind, (ref["discrete"] as! [Bool])[k + 1] ? "discrete change" : "derivative", e.name)
        }
        if let attenuated = ref["attenuated"] as? [Double] {
            XCTAssertEqual(m.attenuation.count, attenuated.count)
            for (a, b) in zip(m.attenuation.map { $0.marginal }, attenuated) { close(a, b, "attenuated coefficient") }
        } else {
            XCTAssertTrue(m.attenuation.isEmpty, "no attenuation formula with random slopes")
            XCTAssertNil(m.sigma)
        }
        return (m, worst)
    }

    func testMarginalEffectsEqualBruteForceInProcessAndOverTLS() throws {
        let files = try Fixtures.siteFiles("contraception")
        let (_, inProcess) = try marginal(at: inProcessFederation(files: files))
        let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
        let federation = try tlsFederation(agents, pki: Self.pki)
        defer { federation.close(); agents.forEach { $0.stop() } }
        let (_, overTLS) = try marginal(at: federation)
        let (_, slope) = try marginal(at: federation, "contraception-slope")
        print(String(format: "contraception marginal effects: worst relative error in-process %.1e, over TLS %.1e (60 sites); random slope (1 + urban | site) over TLS %.1e",
                     inProcess, overTLS, slope))
    }

    /// --marginal in a fit: no extra round (the sums ride on finalize), and at
    /// fedmix's own optimum (within DESIGN.md's GLMM tolerance of lme4's) the
    /// figures are those of R's within the same tolerance.
    func testMarginalInAFitAddsNoRound() throws {
        let files = try Fixtures.siteFiles("contraception")
        var options = FitOptions(family: .binomial)
        let plain = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: Self.formula, options: options)
        options.marginal = true
        let r = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: Self.formula, options: options)
        XCTAssertEqual(r.rounds, plain.rounds)
        XCTAssertNil(plain.marginal)
        let m = try XCTUnwrap(r.marginal)
        XCTAssertLessThan(relativeError(m.predicted.estimate, Self.reference["predicted"] as! Double), 1e-3)
        for (k, e) in m.effects.enumerated() {
            XCTAssertLessThan(relativeError(e.estimate, (Self.reference["effects"] as! [Double])[k + 1]), 1e-3, e.name)
        }
        XCTAssertTrue(Report.text(r).contains("Population-averaged effects"))
        XCTAssertTrue(Report.text(r).contains("GLMM-implied marginal coefficients (approximation"))
    }

    func testMarginalRefusals() throws {
        var options = FitOptions(family: .gaussian)
        options.marginal = true
        XCTAssertThrowsError(try Analysis.validate(formula: "Reaction ~ Days + (1 | site)", options: options)) { e in
            XCTAssertEqual((e as? SettingError)?.settings.first, .marginal)
        }
        options.family = .binomial
        XCTAssertNoThrow(try Analysis.validate(formula: "y ~ x + (x | site)", options: options), "random slopes are integrated too")
        XCTAssertThrowsError(try Analysis.validate(formula: "y ~ x", options: options)) { e in
            XCTAssertTrue("\(e)".contains("no random-effects term"), "\(e)")
        }
    }
}

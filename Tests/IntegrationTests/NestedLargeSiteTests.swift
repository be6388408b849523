import Foundation
import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// `y ~ x + (1 | site/patient/episode)` with 2,100 patients (4,202 episodes)
/// at site "a" (Tests/Fixtures/reference/nested-large, written by
/// Tests/Fixtures/tools/nested-large.R): beyond the dense tail's 2,000
/// random effects, so site "a" holds its nested factors level by level
/// (NestedChain) while "b" and "c" keep the dense layout. Against lme4 on
/// the pooled rows at HardCaseReferenceTests' tolerances (criterion within
/// 1e-8 relative of the optimum, estimates, SEs and variance components
/// within 1e-5), in process and through agents over loopback mutual TLS.
final class NestedLargeSiteTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("nested-large")
    override class func tearDown() { pki.remove() }

    static let formula = "y ~ x + (1 | site/patient/episode)"

    /// The blocks site "a" and site "b" prepare for the model.
    func design(_ site: String) throws -> SiteDesign {
        let file = try Fixtures.siteFiles("nested-large").first { $0.deletingPathExtension().lastPathComponent == site }!
        func col(_ n: String) -> DesignColumn { DesignColumn(name: n, expr: n == "(Intercept)" ? .number(1) : .variable(n)) }
        let spec = ModelSpec(formula: Self.formula, family: .gaussian, response: .value(.variable("y")),
                             fixed: [col("(Intercept)"), col("x")],
                             terms: [RandomTerm(name: "episode:(patient:site)", grouping: .withinSite(["patient", "episode"]), columns: [col("(Intercept)")]),
                                     RandomTerm(name: "patient:site", grouping: .withinSite(["patient"]), columns: [col("(Intercept)")]),
                                     RandomTerm(name: "site", grouping: .site, columns: [col("(Intercept)")])])
        return try SiteDesign(table: CSVReader.read(path: file.path), spec: spec, dataset: "data")
    }

    func testLargeSiteUsesTheNestedChainAndSmallSitesTheDenseLayout() throws {
        let a = try XCTUnwrap(try design("a").blocks)
        let chain = try XCTUnwrap(a.nested, "2,100 patients: beyond the dense tail's cap, held level by level")
        XCTAssertEqual(chain.factors.map(\.levels), [4202, 2100])
        XCTAssertNil(a.first)
        XCTAssertEqual(a.tailDimension, 1, "only the site's own effect is dense")
        let b = try XCTUnwrap(try design("b").blocks)
        XCTAssertNil(b.nested, "250 patients fit the dense tail: that layout (and its fits) are unchanged")
        XCTAssertNotNil(b.first)
    }

    func testInProcessFitMatchesLme4() throws {
        let hard = HardCaseReferenceTests(name: "nested-large", testClosure: { _ in })
        for key in ["reml", "ml"] {
            let r = try hard.check("nested-large", key, kind: "ri")
            XCTAssertEqual(r.nObs, 8917)
        }
    }

    /// Through agents over TLS: the same fit as in process (1e-10 relative),
    /// lme4's optimum, each evaluation one round.
    func testOverTLSEqualsInProcessAndLme4() throws {
        let files = try Fixtures.siteFiles("nested-large")
        let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
        let federation = try tlsFederation(agents, pki: Self.pki)
        defer { federation.close(); agents.forEach { $0.stop() } }
        for key in ["reml", "ml"] {
            let ref = try Fixtures.fit("nested-large", key)
            let options = FitOptions(method: key == "ml" ? .ml : .reml)
            let sent0 = federation.bytesSent.reduce(0, +), received0 = federation.bytesReceived.reduce(0, +)
            let overTLS = try Analysis.fit(federation, dataset: "data", formula: Self.formula, options: options)
            let sent = federation.bytesSent.reduce(0, +) - sent0, received = federation.bytesReceived.reduce(0, +) - received0
            let inProcess = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: Self.formula, options: options)
            let worst = assertSameFit(overTLS, inProcess, tol: 1e-10, "nested-large/\(key)")
            XCTAssertEqual(overTLS.rounds, inProcess.rounds)
            XCTAssertTrue(overTLS.converged)
            XCTAssertLessThanOrEqual(overTLS.rounds, 15)
            let objective = ref["objective"] as! Double
            XCTAssertLessThanOrEqual(overTLS.objective - objective, 1e-8 * abs(objective), "nested-large/\(key) criterion vs lme4's optimum")
            print(String(format: "nested-large/%@ over TLS: rounds %d, evaluations %d, sent %d B, received %d B, objective − lme4 %.2e, max rel diff vs in-process %.1e",
                         key, overTLS.rounds, overTLS.evaluations, sent, received,
                         overTLS.objective - objective, worst))
        }
    }
}

import Foundation
import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// A binomial GLMM with three nested levels, `died ~ age + (1 | site/patient/episode)`
/// (Tests/Fixtures/nested-glmm, written by Tests/Fixtures/tools/nested-glmm-references.R:
/// 3 sites, 750 patients, 1,877 episodes, 6,535 visits), with every site
/// holding its patients and episodes level by level (NestedChain: a GLMM
/// site takes the chain whenever its within-site factors nest, at any
/// size). Against the tight
/// reference at DESIGN.md's GLMM tolerances (assertCrossedGLMMMatchesR:
/// deviance never worse by 1e-6; estimates, SEs, variance components, the
/// sites' modes and conditional SDs within 1e-4), through agents over
/// loopback mutual TLS and in process. The reference is glmmTMB's: glmer's
/// deviance stays 2.2e-5 above it and its finite-difference SEs 1e-4 off
/// (the fixture's script says so and keeps glmer's figures beside it).
/// The chain against the first-factor layout is NestedGLMMChainTests (the
/// site's objective, gradient, Hessian and modes); a whole fit in the dense
/// layout takes about a minute in a debug build here, too long for CI.
final class NestedGLMMFitTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("nested-glmm")
    override class func tearDown() { pki.remove() }

    static let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("nested-glmm")
    static var files: [URL] { try! Fixtures.csvFiles(in: directory.appendingPathComponent("sites")) }
    static var reference: [String: Any] { Fixtures.references("nested-glmm")["died"]! }
    static let formula = "died ~ age + (1 | site/patient/episode)"

    func design(_ file: URL) throws -> SiteDesign {
        func col(_ n: String) -> DesignColumn { DesignColumn(name: n, expr: n == "(Intercept)" ? .number(1) : .variable(n)) }
        let spec = ModelSpec(formula: Self.formula, family: .binomial, link: .logit, response: .value(.variable("died")),
                             fixed: [col("(Intercept)"), col("age")],
                             terms: [RandomTerm(name: "episode:(patient:site)", grouping: .withinSite(["patient", "episode"]), columns: [col("(Intercept)")]),
                                     RandomTerm(name: "patient:site", grouping: .withinSite(["patient"]), columns: [col("(Intercept)")]),
                                     RandomTerm(name: "site", grouping: .site, columns: [col("(Intercept)")])])
        return try SiteDesign(table: CSVReader.read(path: file.path), spec: spec, dataset: "data")
    }

    /// 300 patients would fit the dense tail; a GLMM site holds them as the chain anyway.
    func testNestedGLMMSitesHoldTheChainAtAnySize() throws {
        let a = try XCTUnwrap(Self.files.first)
        let chained = try XCTUnwrap(try design(a).glmm)
        let chain = try XCTUnwrap(chained.chainLayout)
        XCTAssertEqual(chain.factors.count, 2)
        XCTAssertEqual(chain.factors[1].levels, 300)
        XCTAssertEqual(chained.dimension, chain.factors.reduce(0) { $0 + $1.levels * $1.dimension } + 1, "episodes, patients and the site effect")
    }

    func testOverTLSMatchesTheTightReference() throws {
        let references = Fixtures.references("nested-glmm")
        let options = FitOptions(family: .binomial)
        let (overTLS, sent, received, seconds) = try { () throws -> (FitResult, [Int], [Int], Double) in
            let agents = try Self.files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close(); agents.forEach { $0.stop() } }
            let started = Date()
            let r = try Analysis.fit(federation, dataset: "data", formula: Self.formula, options: options)
            return (r, federation.bytesSent, federation.bytesReceived, Date().timeIntervalSince(started))
        }()
        XCTAssertTrue(overTLS.converged)
        let worst = assertCrossedGLMMMatchesR(overTLS, "died", references: references)
        let inProcess = try Analysis.fit(inProcessFederation(files: Self.files), dataset: "data", formula: Self.formula, options: options)
        assertSameFit(overTLS, inProcess, tol: 1e-10, "nested-glmm chain, TLS vs in process")
        XCTAssertEqual(overTLS.rounds, inProcess.rounds)
        print("nested GLMM over TLS (chain): worst relative error vs the reference \(worst), deviance − reference \(overTLS.objective - (Self.reference["objective"] as! Double)), − glmer's \(overTLS.objective - (Self.reference["glmer_objective"] as! Double)), \(overTLS.rounds) rounds, \(overTLS.evaluations) evaluations, \(String(format: "%.1f", seconds)) s; per site sent \(sent.min()!)-\(sent.max()!) B, received \(received.min()!)-\(received.max()!) B")
    }
}

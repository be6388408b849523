import Foundation
import XCTest
@testable import Coordinator
import Protocol
import SiteAgent
import Math

/// Crossed factors beside within-site terms (`(1 | site/ward) + (1 | surgeon)`),
/// level by level: the sites send A_k = [Z_G X y]ᵀ[Z_G X y] once and V_kᵀ
/// per θ (Math/CrossedLowRank.swift), and the coordinator eliminates the
/// crossed levels one by one with each site's own effects as columns. The
/// same fits as the dense path (each site's Schur complement, one dense
/// factorization), in-process and through agents over TLS, on the crossed
/// fixtures with wards (Tests/Fixtures/tools/crossed-references.R).
final class CrossedWithinSiteTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("crossed-within-site")
    override class func tearDown() { pki.remove() }

    static let keys = ["nested_and_year", "surgeons_wards"]

    static func options(_ key: String, byLevel: Bool?) -> FitOptions {
        var o = CrossedFactorTests.options(CrossedFactorTests.references[key]!)
        o.crossedByLevel = byLevel
        return o
    }

    /// The crossed levels' modes and conditional SDs of two fits, relative
    /// (modes to their conditional SD).
    func assertSameCrossedEffects(_ a: FitResult, _ b: FitResult, tol: Double, _ label: String) {
        let x = a.crossedEffects ?? [], y = b.crossedEffects ?? []
        XCTAssertEqual(x.count, y.count, label)
        XCTAssertFalse(x.isEmpty, label)
        for (e, f) in zip(x, y) {
            XCTAssertEqual([e.group, e.level], [f.group, f.level], label)
            for (c, v) in f.effects {
                let sd = f.condSD[c] ?? 1
                XCTAssertLessThanOrEqual(abs((e.effects[c] ?? .nan) - v) / sd, tol, "\(label) mode \(e.group) \(e.level) \(c)")
                XCTAssertLessThanOrEqual(abs((e.condSD[c] ?? .nan) - sd) / sd, tol, "\(label) cond SD \(e.group) \(e.level) \(c)")
            }
        }
    }

    /// In-process: the level path (forced) and the dense path (forced) give
    /// the same fit to 1e-10 — criterion, θ, β, SEs, variance components, σ,
    /// the sites' effects, every crossed level's mode and conditional SD,
    /// and (REML with inference) Satterthwaite's and Kenward-Roger's df and
    /// SEs, which read the criterion's gradient and Hessian.
    func testLevelPathEqualsDensePathInProcess() throws {
        for key in Self.keys {
            let ref = CrossedFactorTests.references[key]!
            let files = try CrossedFactorTests.files(ref["case"] as! String)
            let formula = ref["formula"] as! String
            let level = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: Self.options(key, byLevel: true))
            let dense = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: Self.options(key, byLevel: false))
            let worst = assertSameFit(level, dense, tol: 1e-10, key)
            assertSameCrossedEffects(level, dense, tol: 1e-10, key)
            for (a, b) in zip(level.fixedEffects, dense.fixedEffects) {
                if let x = a.df, let y = b.df { XCTAssertLessThanOrEqual(relativeError(x, y), 1e-10, "\(key) \(a.name) Satterthwaite df") }
                if let x = a.kenwardRoger, let y = b.kenwardRoger {
                    XCTAssertLessThanOrEqual(relativeError(x.stdError, y.stdError), 1e-10, "\(key) \(a.name) Kenward-Roger SE")
                    XCTAssertLessThanOrEqual(relativeError(x.df, y.df), 1e-10, "\(key) \(a.name) Kenward-Roger df")
                }
            }
            print("crossed within-site \(key): level vs dense worst relative difference \(worst); rounds \(level.rounds) vs \(dense.rounds)")
        }
    }

    /// Over TLS: surgeons with wards take the level path by the cost rule
    /// (every agent answers `low_rank_contribution`, never a dense
    /// `contribution`); the registry's wards and years, forced onto it,
    /// equal the dense path in-process. Bytes per site are printed.
    func testOverTLSTheLevelPathRuns() throws {
        for (key, byLevel) in [("surgeons_wards", nil), ("nested_and_year", true)] as [(String, Bool?)] {
            let ref = CrossedFactorTests.references[key]!
            let files = try CrossedFactorTests.files(ref["case"] as! String)
            let formula = ref["formula"] as! String
            let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close(); agents.forEach { $0.stop() } }
            let overTLS = try Analysis.fit(federation, dataset: "data", formula: formula, options: Self.options(key, byLevel: byLevel))
            let dense = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: Self.options(key, byLevel: false))
            assertSameFit(overTLS, dense, tol: 1e-10, key)
            assertSameCrossedEffects(overTLS, dense, tol: 1e-10, key)
            for agent in agents {
                let answers = agent.audit.types(.sent)
                XCTAssertGreaterThan(answers["low_rank_contribution"] ?? 0, 0, "\(key) \(agent.site): no low-rank answer")
                XCTAssertNil(answers["contribution"], "\(key) \(agent.site): a dense Schur complement was asked")
            }
            print("crossed within-site over TLS \(key): \(overTLS.rounds) rounds; per site sent \(federation.bytesSent.min()!)-\(federation.bytesSent.max()!) B, received \(federation.bytesReceived.min()!)-\(federation.bytesReceived.max()!) B")
        }
    }
}

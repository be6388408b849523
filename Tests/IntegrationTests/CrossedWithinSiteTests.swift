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

extension CrossedWithinSiteTests {
    /// A site with a ward below min_cell rows does not offer the low-rank
    /// form (its V_k rows would be that ward's sums): it sends no
    /// `crossed_sums`, so the coordinator keeps the dense path even when
    /// asked for the level path, and the fit is the dense one; a `low_rank`
    /// request to that site is refused naming the rule.
    func testSiteWithASmallWardKeepsTheDensePath() throws {
        let key = "nested_and_year"
        let ref = CrossedFactorTests.references[key]!
        let files = try CrossedFactorTests.files(ref["case"] as! String)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("crossed-small-ward-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var edited: [URL] = []
        for f in files {
            var lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
            if f.lastPathComponent == "H01.csv" {
                // Three rows of H01 in a ward of their own (W9): below min_cell = 5.
                let header = lines[0].split(separator: ",").map(String.init), w = header.firstIndex(of: "ward")!
                for i in 1...3 { var c = lines[i].split(separator: ",", omittingEmptySubsequences: false).map(String.init); c[w] = "W9"; lines[i] = c.joined(separator: ",") }
            }
            let url = dir.appendingPathComponent(f.lastPathComponent)
            try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
            edited.append(url)
        }
        var policy = DisclosurePolicy.off
        policy.minCell = 5
        let agents = try edited.map { try LoopbackAgent(file: $0, pki: Self.pki, policy: policy) }
        let federation = try tlsFederation(agents, pki: Self.pki)
        defer { federation.close(); agents.forEach { $0.stop() } }
        let forced = try Analysis.fit(federation, dataset: "data", formula: ref["formula"] as! String, options: Self.options(key, byLevel: true))
        let dense = try Analysis.fit(inProcessFederation(files: edited, policy: policy), dataset: "data", formula: ref["formula"] as! String,
                                     options: Self.options(key, byLevel: false))
        assertSameFit(forced, dense, tol: 1e-10, key)
        for agent in agents {
            XCTAssertNil(agent.audit.types(.sent)["low_rank_contribution"], agent.site)
            XCTAssertGreaterThan(agent.audit.types(.sent)["contribution"] ?? 0, 0, agent.site)
        }
        // The site itself refuses a low_rank evaluation of that session.
        let h01 = agents.first { $0.site == "H01" }!
        let prepared = try XCTUnwrap(h01.audit.all.last { $0.direction == .sent && $0.type == "prepared" })
        XCTAssertFalse(prepared.line.contains("crossed_sums"), "H01 offered the low-rank form")
        let other = try XCTUnwrap(agents.first { $0.site == "H02" }?.audit.all.last { $0.direction == .sent && $0.type == "prepared" })
        XCTAssertTrue(other.line.contains("crossed_sums"), "H02's wards all have min_cell rows")
        let service = SiteService(site: "H01", datasets: ["data": .csv(path: edited.first { $0.lastPathComponent == "H01.csv" }!.path, types: [:])], policy: policy)
        let session = "small-ward"
        let spec = try XCTUnwrap(h01.audit.all.first { $0.direction == .received && $0.type == "prepare" })
        let prepareLine = spec.line.replacingOccurrences(of: #""session":"[^"]*""#, with: "\"session\":\"\(session)\"", options: .regularExpression)
        XCTAssertTrue(service.handle(line: prepareLine).contains("\"prepared\""))
        let theta = forced.theta.map { String($0) }.joined(separator: ",")
        let answer = service.handle(line: "{\"id\":9,\"type\":\"evaluate\",\"session\":\"\(session)\",\"theta\":[\(theta)],\"order\":0,\"low_rank\":true}")
        XCTAssertTrue(answer.contains("\"error\"") && answer.contains("min_cell"), answer)
    }
}

extension CrossedWithinSiteTests {
    /// On the fixtures' rows, at θ inside and on a bound: the level path's
    /// pooled totals (Schur complement onto [X y] and log-determinant, with
    /// gradient and Hessian in θ) equal the dense path's entry by entry to
    /// 1e-10 of their scale, and the level path ran (`eliminatesByLevel`).
    func testTotalsEqualTheDensePathEntryByEntry() throws {
        for key in Self.keys {
            let ref = CrossedFactorTests.references[key]!
            let formula = ref["formula"] as! String
            let federation = inProcessFederation(files: try CrossedFactorTests.files(ref["case"] as! String))
            let descriptions = try Analysis.describe(federation, dataset: "data", hashingLevelsOf: Analysis.groupingVariables(formula))
            let spec = try Analysis.model(federation, dataset: "data", formula: formula, descriptions: descriptions,
                                          options: Self.options(key, byLevel: nil), missingData: MissingDataStrategy())
            let session = try FitSession.prepare(federation, dataset: "data", spec: spec)
            let level = try LMMObjective(session, options: Self.options(key, byLevel: true))
            let dense = try LMMObjective(session, options: Self.options(key, byLevel: false))
            XCTAssertTrue(level.eliminatesByLevel, key)
            XCTAssertFalse(dense.eliminatesByLevel, key)
            let initial = session.structure.initialTheta
            for theta in [initial.map { 0.8 * $0 + 0.1 }, [0] + initial.dropFirst().map { 1.2 * $0 }] {
                let a = try level.totals(theta, order: 2), b = try dense.totals(theta, order: 2)
                XCTAssertEqual(a.rows, b.rows)
                let scale = b.schur.storage.map(abs).max()!
                for (x, y) in zip(a.schur.storage, b.schur.storage) { XCTAssertEqual(x, y, accuracy: 1e-10 * scale, "\(key) θ \(theta): Schur complement") }
                for (x, y) in zip(a.logDet.storage, b.logDet.storage) {
                    XCTAssertEqual(x, y, accuracy: 1e-10 * max(1, abs(b.logDet.value)), "\(key) θ \(theta): log-determinant")
                }
            }
        }
    }
}

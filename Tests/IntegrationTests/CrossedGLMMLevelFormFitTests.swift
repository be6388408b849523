import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// Crossed GLMMs in the level form (GLMMCrossedLevelForm, CrossedGLMMLevelSystem;
/// issue 17 at thousands of crossed levels): the same fits as the dense form
/// on the crossed-glmm fixtures, in process; and 300 surgeons at 2-4 of 20
/// hospitals against glmer refitted tightly on the pooled rows
/// (Tests/Fixtures/tools/crossed-glmm-references.R), through agents over TLS.
final class CrossedGLMMLevelFormFitTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("crossed-glmm-level")
    override class func tearDown() { pki.remove() }

    static let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("crossed-glmm")

    func options(_ ref: [String: Any], form: CrossedGLMMForm?) -> FitOptions {
        var o = FitOptions(family: ref["family"] as! String == "binomial" ? .binomial : .poisson)
        o.crossedGLMMForm = form
        return o
    }

    /// Both forms on the same rows: the deviance within 1e-10 relative and
    /// every crossed level's mode and conditional SD within 1e-9 (relative
    /// to the SD); β, SEs, variance components and the sites' effects within
    /// 1e-6 relative. The two forms round differently (~1e-15 of F ≈ 3,000),
    /// and the SEs are second differences of F with step 2e-4, which turn
    /// that rounding into ~1e-7 of an SE (measured: 3.7e-7 at worst, for the
    /// Poisson intercept; 7e-9 for binomial). Each result's message names its form.
    func testLevelFormEqualsDenseFormOnTheFixtures() throws {
        let files = try Fixtures.csvFiles(in: Self.directory.appendingPathComponent("surgeons"))
        let references = Fixtures.references("crossed-glmm")
        for key in references.keys.sorted() where key != CrossedGLMMTests.severalCrossed {
            let ref = references[key]!
            let formula = ref["formula"] as! String
            let dense = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options(ref, form: .dense))
            let level = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options(ref, form: .level))
            XCTAssertTrue(dense.messages.contains { $0.contains("dense form") }, key)
            XCTAssertTrue(level.messages.contains { $0.contains("level form") }, key)
            XCTAssertLessThanOrEqual(abs(level.objective - dense.objective) / abs(dense.objective), 1e-10, "\(key) deviance")
            let worst = assertSameFit(level, dense, tol: 1e-6, key)
            var worstCrossed = 0.0
            for (a, b) in zip(level.crossedEffects ?? [], dense.crossedEffects ?? []) {
                XCTAssertEqual([a.group, a.level], [b.group, b.level])
                for (k, v) in b.condSD {
                    let e = abs(a.condSD[k]! - v) / v
                    let m = abs(a.effects[k]! - b.effects[k]!) / v
                    worstCrossed = max(worstCrossed, e, m)
                }
            }
            XCTAssertEqual(level.crossedEffects?.count, dense.crossedEffects?.count)
            XCTAssertLessThanOrEqual(worstCrossed, 1e-9, "\(key) crossed modes and conditional SDs")
            print("crossed GLMM level vs dense form \(key): deviance \(level.objective - dense.objective), worst relative \(worst), crossed \(worstCrossed); rounds \(level.rounds) vs \(dense.rounds)")
        }
    }

    /// 300 surgeons at 2-4 of 20 hospitals (Tests/Fixtures/crossed-glmm-levels),
    /// `died ~ age + (1 | site) + (1 | surgeon)`, through agents over loopback
    /// TLS at their default disclosure rules (listing up to 300 levels): the level form is chosen (the
    /// result says so), glmer's fit is matched at DESIGN.md's GLMM
    /// tolerances (assertCrossedGLMMMatchesR: deviance never worse by
    /// 1e-6, estimates, SEs, variance components, every surgeon's and
    /// site's mode and conditional SD within 1e-4), and in process gives
    /// the same fit to 1e-10. Rounds and bytes per site are printed.
    func testThreeHundredSurgeonsOverTLSInTheLevelForm() throws {
        let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("crossed-glmm-levels")
        let files = try Fixtures.csvFiles(in: directory.appendingPathComponent("surgeons"))
        let references = Fixtures.references("crossed-glmm-levels")
        let ref = try XCTUnwrap(references["died"])
        // The default rules, with up to 300 levels listed (a hospital has 30-60 of the surgeons).
        var policy = DisclosurePolicy()
        policy.maxListedLevels = 300
        let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki, policy: policy) }
        let federation = try tlsFederation(agents, pki: Self.pki)
        defer { federation.close(); agents.forEach { $0.stop() } }
        let formula = ref["formula"] as! String
        let started = Date()
        let overTLS = try Analysis.fit(federation, dataset: "data", formula: formula, options: options(ref, form: nil))
        let seconds = Date().timeIntervalSince(started)
        XCTAssertTrue(overTLS.converged)
        XCTAssertTrue(overTLS.messages.contains { $0.contains("level form") && $0.contains("surgeon level by level") }, "\(overTLS.messages)")
        XCTAssertEqual(overTLS.crossedEffects?.count, 300)
        let worst = assertCrossedGLMMMatchesR(overTLS, "died", references: references)
        let inProcess = try Analysis.fit(inProcessFederation(files: files, policy: policy), dataset: "data", formula: formula, options: options(ref, form: nil))
        assertSameFit(overTLS, inProcess, tol: 1e-10, "300 surgeons")
        let sent = federation.bytesSent, received = federation.bytesReceived
        print("crossed GLMM level form over TLS, 300 surgeons: worst relative error \(worst), deviance − glmer's \(overTLS.objective - (ref["objective"] as! Double)), \(overTLS.rounds) rounds, \(overTLS.evaluations) evaluations, \(String(format: "%.1f", seconds)) s; per site sent \(sent.min()!)-\(sent.max()!) B, received \(received.min()!)-\(received.max()!) B")
    }

    /// What a site answers to `crossed_form` at the default rules: an
    /// unknown form refused by name; the level form offered at prepare and
    /// answered for a model with a within-site term (`(1 | site:year)`, every
    /// year with min_cell rows here: its own effects are its years';
    /// CrossedGLMMWardsFitTests has the refusal for a small level); for
    /// `(1 | site) + (1 | surgeon)` the level form, whose 2(A − V'V'ᵀ) is the
    /// dense form's Hessian at the same point (1e-12), round-tripping exactly.
    func testSiteAnswersTheFormAskedFor() throws {
        let services = try Fixtures.csvFiles(in: Self.directory.appendingPathComponent("surgeons")).map { f in
            SiteService(site: f.deletingPathExtension().lastPathComponent, datasets: ["data": .csv(path: f.path, types: [:])],
                        siteColumn: "site", policy: DisclosurePolicy())
        }
        // Every site's description: the formula's surgeon is crossed because its codes recur across sites.
        let descriptions = try services.map { s -> SiteDescription in
            guard case .described(let d) = try CrossedGLMMTests.ask(s, .describe(DescribeRequest(dataset: "data"))) else { throw FitFailure("describe") }
            return d
        }
        let service = services[0]
        func message(_ r: Reply) -> String { if case .error(let e) = r { return e.message }; return "answered" }
        let theta = [0.5, 0.5], beta = [-1.5, 0.5]
        func request(_ session: String, _ q: Int, form: String?) -> Request {
            var r = EvaluateRequest(session: session, theta: theta, order: 0)
            r.crossed = [CrossedGLMMPoint(theta: theta, beta: beta, effects: (0..<q).map { 0.1 * Double($0 % 5) - 0.2 })]
            r.crossedForm = form
            return .evaluate(r)
        }
        // A within-site term whose every level has min_cell rows here: the level form, one own effect per year.
        let nested = try Analysis.resolve(formula: "died ~ age + (1 | site:year) + (1 | surgeon)", descriptions: descriptions, family: .binomial)
        let preparedNested = try CrossedGLMMTests.ask(service, .prepare(PrepareRequest(session: "w", dataset: "data", model: nested)))
        guard case .prepared(let pn) = preparedNested, let ln = pn.summary.crossedLevels?.first else { return XCTFail("prepare (1 | site:year): \(message(preparedNested))") }
        let years = try XCTUnwrap(pn.crossedLevelForm, "the site offers the level form")
        XCTAssertGreaterThan(years, 1)
        guard case .glmmCrossed(let byYear) = try CrossedGLMMTests.ask(service, request("w", ln.count, form: "level")) else { return XCTFail("level form with years") }
        XCTAssertEqual(byYear.pieces[0].ownEffects, years)

        let spec = try Analysis.resolve(formula: "died ~ age + (1 | site) + (1 | surgeon)", descriptions: descriptions, family: .binomial)
        guard case .prepared(let p) = try CrossedGLMMTests.ask(service, .prepare(PrepareRequest(session: "c", dataset: "data", model: spec))),
              let levels = p.summary.crossedLevels?.first else { return XCTFail("prepare") }
        let q = levels.count
        let unknown = message(try CrossedGLMMTests.ask(service, request("c", q, form: "sparse")))
        XCTAssertTrue(unknown.contains("crossed_form \"sparse\" is not a form this site answers"), unknown)
        guard case .glmmCrossed(let dense) = try CrossedGLMMTests.ask(service, request("c", q, form: nil)),
              case .glmmCrossed(let level) = try CrossedGLMMTests.ask(service, request("c", q, form: "level")) else { return XCTFail("an honest point was refused") }
        let a = dense.pieces[0], b = level.pieces[0]
        XCTAssertTrue(b.hessian.isEmpty)
        XCTAssertEqual(b.ownEffects, 1)
        XCTAssertEqual(b.value, a.value, accuracy: 1e-12 * abs(a.value))
        XCTAssertEqual(b.logDet, a.logDet, accuracy: 1e-12 * abs(a.logDet))
        let start = try XCTUnwrap(b.aStart), values = try XCTUnwrap(b.a), v = try XCTUnwrap(b.coupling)
        var t = 0, upper = 0, worst = 0.0
        let scale = a.hessian.map(abs).max()!
        for j in 0..<q {
            var column = [Double](repeating: 0, count: j + 1)
            for i in start[j]...j { column[i] = 2 * values[t]; t += 1 }
            for i in 0...j {
                let h = column[i] - 2 * v[i] * v[j]
                worst = max(worst, abs(h - a.hessian[upper]) / scale)
                upper += 1
            }
        }
        XCTAssertLessThanOrEqual(worst, 1e-12, "2(A − V'V'ᵀ) is the dense Hessian")
        let line = try LineCodec.encode(Reply.glmmCrossed(level), id: 7)
        XCTAssertEqual(try LineCodec.decodeReply(line).reply, .glmmCrossed(level), "round-trips exactly")
        XCTAssertFalse(line.contains("\"hessian\""), "the level form sends no upper triangle")
    }
}

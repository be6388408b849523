import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math
import Synchronization

/// A fit's first evaluation rides with its prepare (PrepareRequest.firstEvaluate,
/// PrepareReply.firstAnswer): the site answers it exactly as if it came
/// alone, the fit takes those answers instead of a round, and the result is
/// the same to the bit as with agents that do not know the field (one round
/// more). Over TLS the audit log holds the request and its answer in full.
final class FirstEvaluationTests: XCTestCase {
    /// Three sites of 40 patients with 3 rows each: y = 1 + 0.5x + b_site + b_patient + e, and a binary yb.
    private func siteFiles() throws -> [URL] {
        var rng = SeededRandom(seed: 2611)
        return try writeSiteCSVs("fedmix-first", header: "y,yb,x,patient", sites: 3) { _ in
            let siteEffect = 0.6 * rng.normal()
            var rows: [String] = []
            for p in 0..<40 {
                let patientEffect = 0.8 * rng.normal()
                for _ in 0..<3 {
                    let x = (rng.normal() * 1000).rounded() / 1000
                    let eta = -0.3 + 0.7 * x + siteEffect
                    let y = ((1 + 0.5 * x + siteEffect + patientEffect + 0.5 * rng.normal()) * 1000).rounded() / 1000
                    rows.append("\(y),\(rng.uniform() < 1 / (1 + exp(-eta)) ? 1 : 0),\(x),p\(p)")
                }
            }
            return rows
        }
    }

    /// In-process agents that drop `first_evaluate` from prepare requests, as
    /// agents that predate it ignore it; counts the prepares that carried one.
    private final class Counter: Sendable {
        let count = Mutex(0)
    }

    private func olderAgents(_ files: [URL], carried: Counter) -> Federation {
        Federation(channels: files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], siteColumn: "site", policy: .off)
            return InProcessChannel(site: site) { line in
                guard let (id, request) = try? LineCodec.decodeRequest(line), case .prepare(var p) = request, p.firstEvaluate != nil else {
                    return service.handle(line: line)
                }
                carried.count.withLock { $0 += 1 }
                p.firstEvaluate = nil
                return service.handle(line: try! LineCodec.encode(.prepare(p), id: id))
            }
        })
    }

    func testTheFitIsTheSameToTheBitWithOneRoundLess() throws {
        let files = try siteFiles()
        let models: [(formula: String, options: FitOptions)] = [
            ("yb ~ x + (1 | site)", FitOptions(family: .binomial)),
            ("yb ~ x + (1 | site)", { var o = FitOptions(family: .binomial); o.nAGQ = 7; return o }()),
            ("y ~ x + (1 | site) + (1 | site:patient)", FitOptions()),
        ]
        for (formula, options) in models {
            let carried = Counter()
            let old = try Analysis.fit(olderAgents(files, carried: carried), dataset: "data", formula: formula, options: options)
            let new = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options)
            XCTAssertEqual(carried.count.withLock { $0 }, files.count, "\(formula): every prepare carried the first evaluation")
            XCTAssertTrue(new.converged, formula)
            XCTAssertEqual(new.objective.bitPattern, old.objective.bitPattern, formula)
            XCTAssertEqual(new.theta.map(\.bitPattern), old.theta.map(\.bitPattern), formula)
            XCTAssertEqual(new.fixedEffects.map { $0.estimate.bitPattern }, old.fixedEffects.map { $0.estimate.bitPattern }, formula)
            XCTAssertEqual(new.fixedEffects.map { $0.stdError.bitPattern }, old.fixedEffects.map { $0.stdError.bitPattern }, formula)
            XCTAssertEqual(new.evaluations, old.evaluations, formula)
            XCTAssertEqual(new.rounds, old.rounds - 1, "\(formula): the first evaluation needs no round of its own")
        }
    }

    func testTheFirstAnswerIsWhatTheRequestGetsAlone() throws {
        let files = try siteFiles()
        func service() -> SiteService {
            SiteService(site: "s0", datasets: ["data": .csv(path: files[0].path, types: [:])], siteColumn: "site", policy: DisclosurePolicy())
        }
        // The model as the coordinator resolves it from two sites' descriptions.
        let descriptions = try files.prefix(2).enumerated().map { k, f -> SiteDescription in
            let s = SiteService(site: "s\(k)", datasets: ["data": .csv(path: f.path, types: [:])], siteColumn: "site", policy: DisclosurePolicy())
            guard case .described(let d) = try CrossedGLMMTests.ask(s, .describe(DescribeRequest(dataset: "data"))) else { throw FitFailure("describe") }
            return d
        }
        for (formula, family, first) in [
            ("yb ~ x + (1 | site)", Family.binomial, { () -> EvaluateRequest in
                var r = EvaluateRequest(session: "f", theta: [0], order: 2, beta: [0, 0], nAGQ: 1); r.derivatives = "beta"; return r }()),
            ("y ~ x + (1 | site) + (1 | site:patient)", Family.gaussian, EvaluateRequest(session: "f", theta: [1, 1], order: 2)),
        ] {
            let spec = try Analysis.resolve(formula: formula, descriptions: descriptions, family: family)
            var prepare = PrepareRequest(session: "f", dataset: "data", model: spec)
            let alone = service()
            guard case .prepared(let plain) = try CrossedGLMMTests.ask(alone, .prepare(prepare)) else { return XCTFail("prepare") }
            XCTAssertNil(plain.firstAnswer, "no first_evaluate, no first_answer")
            let answerAlone = alone.handle(line: try LineCodec.encode(.evaluate(first), id: 0))
            prepare.firstEvaluate = first
            guard case .prepared(let riding) = try CrossedGLMMTests.ask(service(), .prepare(prepare)) else { return XCTFail("prepare") }
            XCTAssertEqual(riding.firstAnswer, answerAlone, "\(formula): the same line as the request alone gets")
            XCTAssertEqual(riding.summary, plain.summary)
            // The answer is an evaluation's, and a refusal would be the one the request gets alone.
            XCTAssertTrue(answerAlone.contains(family == .gaussian ? "\"type\":\"contribution\"" : "\"type\":\"glmm_contribution\""), answerAlone)
            // Another session's evaluation is not answered with this prepare.
            var foreign = first
            foreign.session = "other"
            prepare.firstEvaluate = foreign
            guard case .prepared(let refused) = try CrossedGLMMTests.ask(service(), .prepare(prepare)),
                  case .error(let e)? = try refused.firstAnswer.map({ try LineCodec.decodeReply($0).reply }) else {
                return XCTFail("\(formula): a foreign session's first evaluation was answered")
            }
            XCTAssertTrue(e.message.contains("first_evaluate must name the session"), e.message)
        }
        // A site that sends its θ-free sums (site-grouped model) answers no first evaluation: the fit needs none.
        let spec = try Analysis.resolve(formula: "y ~ x + (1 | site)", descriptions: descriptions, family: .gaussian)
        var prepare = PrepareRequest(session: "g", dataset: "data", model: spec)
        prepare.firstEvaluate = EvaluateRequest(session: "g", theta: [1], order: 2)
        guard case .prepared(let grouped) = try CrossedGLMMTests.ask(service(), .prepare(prepare)) else { return XCTFail("prepare") }
        XCTAssertNotNil(grouped.blocks)
        XCTAssertNil(grouped.firstAnswer)
    }

    /// An LMM's Schur complements travel as their lower triangle (the prepare's
    /// `schur_form`): the same fit to the bit as agents that send them in full.
    func testLowerTriangleSchurComplementsGiveTheSameFitInFewerBytes() throws {
        let files = try siteFiles()
        let full = Federation(channels: files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], siteColumn: "site", policy: .off)
            return InProcessChannel(site: site) { line in
                guard let (id, request) = try? LineCodec.decodeRequest(line), case .prepare(var p) = request else { return service.handle(line: line) }
                XCTAssertEqual(p.schurForm, "lower")
                p.schurForm = nil
                return service.handle(line: try! LineCodec.encode(.prepare(p), id: id))
            }
        })
        let formula = "y ~ x + (1 | site) + (1 | site:patient)"
        let old = try Analysis.fit(full, dataset: "data", formula: formula, options: FitOptions())
        let new = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: FitOptions())
        XCTAssertEqual(new.objective.bitPattern, old.objective.bitPattern)
        XCTAssertEqual(new.theta.map(\.bitPattern), old.theta.map(\.bitPattern))
        XCTAssertEqual(new.fixedEffects.map { $0.stdError.bitPattern }, old.fixedEffects.map { $0.stdError.bitPattern })
        XCTAssertEqual(new.rounds, old.rounds)
        XCTAssertLessThan(new.bytesReceived, old.bytesReceived, "the lower triangles are shorter")
    }

    func testOverTLSTheAuditLogHoldsTheFirstEvaluationAndItsAnswer() throws {
        let files = try siteFiles()
        try withLoopbackAgents(files, pki: "first") { agents, federation in
            let options = FitOptions(family: .binomial)
            let remote = try Analysis.fit(federation, dataset: "data", formula: "yb ~ x + (1 | site)", options: options)
            let local = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "yb ~ x + (1 | site)", options: options)
            XCTAssertEqual(remote.objective.bitPattern, local.objective.bitPattern)
            XCTAssertEqual(remote.rounds, local.rounds)
            for agent in agents {
                let entries = agent.audit.all
                let prepares = entries.filter { $0.direction == .received && $0.type == "prepare" }
                XCTAssertEqual(prepares.count, 1, agent.site)
                XCTAssertTrue(prepares[0].line.contains("\"first_evaluate\":{"), "\(agent.site): the embedded request is logged in full")
                let prepared = entries.filter { $0.direction == .sent && $0.type == "prepared" }
                XCTAssertTrue(prepared.first?.line.contains("\"first_answer\":\"{") == true, "\(agent.site): and its answer")
                let evaluations = entries.filter { $0.direction == .received && $0.type == "evaluate" }
                XCTAssertEqual(evaluations.count + 1, remote.evaluations, "\(agent.site): every evaluation but the first came in its own round")
            }
        }
    }
}

import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math
import Synchronization

/// The GLM start's rounds (`evaluate` with `derivatives: "beta"`): a site
/// answers D_k(0, β) in β alone, the β block of the full answer at θ = 0 to
/// the bit, under the same checks (max_row_share at the β sent); an unknown
/// choice, θ ≠ 0 and models other than a GLMM are refused by name. Over TLS
/// a fit's start goes through these rounds and equals the in-process fit.
final class GLMStartRoundTests: XCTestCase {
    /// Three sites of 80 rows (y, x): y ~ Bernoulli(logit⁻¹(−0.4 + 0.8x + b_site)).
    private func siteFiles() throws -> [URL] {
        var rng = SeededRandom(seed: 1919)
        return try writeSiteCSVs("fedmix-glmstart", header: "y,x", sites: 3) { _ in
            let effect = 0.7 * rng.normal()
            return (0..<80).map { _ -> String in
                let x = (rng.normal() * 1000).rounded() / 1000
                return "\(rng.uniform() < 1 / (1 + exp(-(-0.4 + 0.8 * x + effect))) ? 1 : 0),\(x)"
            }
        }
    }

    func testSiteAnswersTheBetaBlockAndRefusesWhatDoesNotApply() throws {
        let files = try siteFiles()
        let services = files.map { f in
            SiteService(site: f.deletingPathExtension().lastPathComponent, datasets: ["data": .csv(path: f.path, types: [:])],
                        siteColumn: "site", policy: DisclosurePolicy())
        }
        let descriptions = try services.map { s -> SiteDescription in
            guard case .described(let d) = try CrossedGLMMTests.ask(s, .describe(DescribeRequest(dataset: "data"))) else { throw FitFailure("describe") }
            return d
        }
        let service = services[0]
        func message(_ r: Reply) -> String { if case .error(let e) = r { return e.message }; return "answered" }
        func evaluate(_ session: String, theta: [Double], beta: [Double], derivatives: String?) throws -> Reply {
            var r = EvaluateRequest(session: session, theta: theta, order: 2, beta: beta, nAGQ: 1)
            r.derivatives = derivatives
            return try CrossedGLMMTests.ask(service, .evaluate(r))
        }
        let spec = try Analysis.resolve(formula: "y ~ x + (1 | site)", descriptions: descriptions, family: .binomial)
        guard case .prepared = try CrossedGLMMTests.ask(service, .prepare(PrepareRequest(session: "g", dataset: "data", model: spec))) else {
            return XCTFail("prepare")
        }
        let beta = [-0.4, 0.8]
        guard case .glmmContribution(let cheap) = try evaluate("g", theta: [0], beta: beta, derivatives: "beta"),
              case .glmmContribution(let full) = try evaluate("g", theta: [0], beta: beta, derivatives: nil) else {
            return XCTFail("an honest GLM start was refused")
        }
        XCTAssertEqual(cheap.parameters, 2)
        XCTAssertEqual(full.parameters, 3)
        let c = try cheap.jet(), f = try full.jet()
        XCTAssertEqual(c.value.bitPattern, f.value.bitPattern)
        XCTAssertEqual(c.gradient.map(\.bitPattern), f.gradient[1...].map(\.bitPattern))
        XCTAssertEqual(c.hessian.map(\.bitPattern), [4, 5, 7, 8].map { f.hessian[$0].bitPattern })

        let unknown = message(try evaluate("g", theta: [0], beta: beta, derivatives: "hessian"))
        XCTAssertTrue(unknown.contains("derivatives \"hessian\" is not a choice this site answers; it answers all or beta"), unknown)
        let inside = message(try evaluate("g", theta: [0.5], beta: beta, derivatives: "beta"))
        XCTAssertTrue(inside.contains("derivatives beta is answered at θ = 0 only"), inside)
        // The same dominance rule as a full evaluation: a β this steep puts the weights on one row.
        let steep = message(try evaluate("g", theta: [0], beta: [0, 400], derivatives: "beta"))
        XCTAssertTrue(steep.contains("max_row_share"), steep)

        let lmm = try Analysis.resolve(formula: "x ~ 1 + (1 | site)", descriptions: descriptions)
        guard case .prepared = try CrossedGLMMTests.ask(service, .prepare(PrepareRequest(session: "l", dataset: "data", model: lmm))) else {
            return XCTFail("prepare the LMM")
        }
        var r = EvaluateRequest(session: "l", theta: [0], order: 2)
        r.derivatives = "beta"
        let linear = message(try CrossedGLMMTests.ask(service, .evaluate(r)))
        XCTAssertTrue(linear.contains("derivatives applies to the evaluations of a GLMM without crossed factors"), linear)
    }

    func testFitStartsWithBetaRoundsOverTLS() throws {
        let files = try siteFiles()
        try withLoopbackAgents(files, pki: "glmstart") { agents, federation in
            let options = FitOptions(family: .binomial)
            let remote = try Analysis.fit(federation, dataset: "data", formula: "y ~ x + (1 | site)", options: options)
            let local = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | site)", options: options)
            XCTAssertTrue(remote.converged)
            XCTAssertEqual(remote.objective.bitPattern, local.objective.bitPattern)
            XCTAssertEqual(remote.fixedEffects.map(\.estimate), local.fixedEffects.map(\.estimate))
            for agent in agents {
                let evaluations = agent.audit.all.filter { $0.direction == .received && $0.type == "evaluate" }
                let start = evaluations.filter { $0.line.contains("\"derivatives\":\"beta\"") }
                XCTAssertGreaterThan(start.count, 0, "\(agent.site): the GLM start's rounds ask for β alone")
                XCTAssertLessThan(start.count, evaluations.count, agent.site)
                // The first of them (the start's, at β = 0) rides with the prepare (FirstEvaluationTests).
                XCTAssertEqual(evaluations.count + 1, remote.evaluations, agent.site)
            }
            print("GLM start over TLS: \(remote.evaluations) evaluations, \(remote.rounds) rounds")
        }
    }

    /// An agent that predates `derivatives` ignores it and answers in (θ, β):
    /// the coordinator takes the β block, and the fit is the same to the bit.
    func testAnAgentThatIgnoresDerivativesGivesTheSameFit() throws {
        let files = try siteFiles()
        let seen = Mutex(0)
        let older = Federation(channels: files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], siteColumn: "site", policy: .off)
            return InProcessChannel(site: site) { line in
                let stripped = line.replacingOccurrences(of: "\"derivatives\":\"beta\",", with: "")
                if stripped != line { seen.withLock { $0 += 1 } }
                return service.handle(line: stripped)
            }
        })
        let options = FitOptions(family: .binomial)
        let old = try Analysis.fit(older, dataset: "data", formula: "y ~ x + (1 | site)", options: options)
        let new = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | site)", options: options)
        XCTAssertGreaterThan(seen.withLock { $0 }, 0, "the start's requests carried derivatives")
        XCTAssertEqual(old.objective.bitPattern, new.objective.bitPattern)
        XCTAssertEqual(old.fixedEffects.map(\.estimate), new.fixedEffects.map(\.estimate))
        XCTAssertEqual(old.fixedEffects.map(\.stdError), new.fixedEffects.map(\.stdError))
        XCTAssertEqual(old.evaluations, new.evaluations)
    }
}

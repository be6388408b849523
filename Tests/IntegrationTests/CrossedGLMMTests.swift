import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// GLMMs with grouping factors crossed with the sites (issue 17; README
/// "Crossed factors in GLMMs"): a simulated registry of 20 hospitals whose
/// 40 surgeons operate at 2-4 of them, `(1 | site) + (1 | surgeon)`, binomial
/// and Poisson, `(1 | surgeon)` alone (no effect of a site's own), and year
/// crossed too with a surgeon slope in age
/// (Tests/Fixtures/tools/crossed-glmm-references.R), against
/// glmer (Laplace) refitted tightly on the pooled rows, in-process and
/// through agents over TLS; and the refusals.
final class CrossedGLMMTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("crossed-glmm")
    override class func tearDown() { pki.remove() }

    static let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("crossed-glmm")
    nonisolated(unsafe) static let references = Fixtures.references("crossed-glmm")

    static func files() throws -> [URL] { try Fixtures.csvFiles(in: directory.appendingPathComponent("surgeons")) }

    static func options(_ ref: [String: Any]) -> FitOptions {
        FitOptions(family: ref["family"] as! String == "binomial" ? .binomial : .poisson)
    }

    @discardableResult
    func assertMatchesR(_ r: FitResult, _ key: String, file: StaticString = #filePath, line: UInt = #line) -> Double {
        assertCrossedGLMMMatchesR(r, key, references: Self.references, file: file, line: line)
    }

    /// Every reference fit through agents over loopback TLS, under the
    /// agents' default disclosure rules (min_cell 5, 200 rounds per
    /// session): glmer's answer, and the same fit as in-process (1e-10)
    /// including the crossed levels' modes. Rounds and bytes per site are printed.
    func testReferencesOverTLSAndInProcess() throws {
        let files = try Self.files()
        let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki, policy: DisclosurePolicy()) }
        let federation = try tlsFederation(agents, pki: Self.pki)
        defer { federation.close(); agents.forEach { $0.stop() } }
        for key in Self.references.keys.sorted() where key != Self.severalCrossed {
            let ref = Self.references[key]!
            let formula = ref["formula"] as! String
            let sentBefore = federation.bytesSent, receivedBefore = federation.bytesReceived
            let overTLS = try Analysis.fit(federation, dataset: "data", formula: formula, options: Self.options(ref))
            let inProcess = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: Self.options(ref))
            XCTAssertTrue(overTLS.converged, key)
            assertSameFit(overTLS, inProcess, tol: 1e-10, key)
            XCTAssertEqual(overTLS.crossedEffects, inProcess.crossedEffects, key)
            XCTAssertTrue(overTLS.messages.contains { $0.contains("finite differences") }, "\(key): says how the derivatives were obtained")
            let worst = assertMatchesR(overTLS, key)
            XCTAssertLessThanOrEqual(overTLS.rounds, 100, "\(key) rounds")
            let sent = zip(federation.bytesSent, sentBefore).map { $0 - $1 }
            let received = zip(federation.bytesReceived, receivedBefore).map { $0 - $1 }
            print("crossed GLMM over TLS \(key): worst relative error \(worst), deviance − glmer's \(overTLS.objective - (ref["objective"] as! Double)), \(overTLS.rounds) rounds, \(overTLS.evaluations) evaluations; per site sent \(sent.min()!)-\(sent.max()!) B, received \(received.min()!)-\(received.max()!) B")
        }
    }

    /// Two factors crossed with the sites, one with a vector term:
    /// `readmitted ~ age + (1 | site) + (1 | year) + (1 + age | surgeon)`
    /// (7 parameters, so 58 points a stencil) against glmer, in process only
    /// (the TLS path is the one above; this fit alone takes minutes in a debug build over agents).
    static let severalCrossed = "readmitted"
    func testSeveralCrossedFactorsAndAVectorTermInProcess() throws {
        let ref = Self.references[Self.severalCrossed]!
        let r = try Analysis.fit(inProcessFederation(files: try Self.files(), policy: DisclosurePolicy()), dataset: "data",
                                 formula: ref["formula"] as! String, options: Self.options(ref))
        XCTAssertTrue(r.converged)
        XCTAssertEqual(Set(r.crossedEffects?.map(\.group) ?? []), ["year", "surgeon"])
        XCTAssertEqual(r.varianceComponents.filter { $0.group == "surgeon" }.count, 3, "variances of (Intercept) and age, and their covariance")
        let worst = assertMatchesR(r, Self.severalCrossed)
        print("crossed GLMM in process \(Self.severalCrossed): worst relative error \(worst), deviance − glmer's \(r.objective - (ref["objective"] as! Double)), \(r.rounds) rounds, \(r.evaluations) evaluations")
    }

    /// The crossed fit with the rows at 20 hospitals equals the fit with all
    /// rows at one site, where hospital and surgeon are both local factors
    /// and the GLMM path takes exact derivatives: deviance to 1e-10
    /// relative, estimates to 1e-6 and SEs to 1e-5 relative (the crossed
    /// fit's derivatives are differences with step 2e-4).
    func testSplitOverSitesEqualsOneSite() throws {
        let files = try Self.files()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("crossed-glmm-one-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var lines: [String] = []
        for (k, f) in files.enumerated() {
            let rows = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
            lines += k == 0 ? rows : Array(rows.dropFirst())
        }
        let header = lines[0].replacingOccurrences(of: "site,", with: "hospital,")
        let pooled = dir.appendingPathComponent("all.csv")
        try ([header] + lines.dropFirst()).joined(separator: "\n").write(to: pooled, atomically: true, encoding: .utf8)
        let split = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "died ~ age + (1 | site) + (1 | surgeon)",
                                     options: FitOptions(family: .binomial))
        let one = try Analysis.fit(inProcessFederation(files: [pooled]), dataset: "data", formula: "died ~ age + (1 | hospital) + (1 | surgeon)",
                                   options: FitOptions(family: .binomial))
        XCTAssertNotNil(split.crossedEffects)
        XCTAssertNil(one.crossedEffects, "one site: the factor is local there")
        XCTAssertLessThanOrEqual(relativeError(split.objective, one.objective), 1e-10)
        var worst = (estimate: 0.0, se: 0.0)
        for (a, b) in zip(split.fixedEffects, one.fixedEffects) {
            worst.estimate = max(worst.estimate, relativeError(a.estimate, b.estimate))
            worst.se = max(worst.se, relativeError(a.stdError, b.stdError))
        }
        XCTAssertLessThanOrEqual(worst.estimate, 1e-6)
        XCTAssertLessThanOrEqual(worst.se, 1e-5)
        let vc = { (r: FitResult, g: String) in r.varianceComponents.first { $0.group == g }!.vcov }
        XCTAssertLessThanOrEqual(relativeError(vc(split, "site"), vc(one, "hospital")), 1e-6)
        XCTAssertLessThanOrEqual(relativeError(vc(split, "surgeon"), vc(one, "surgeon")), 1e-6)
        print("crossed GLMM split vs one site: deviance \(relativeError(split.objective, one.objective)), estimates \(worst.estimate), SEs \(worst.se)")
    }

    static func ask(_ service: SiteService, _ r: Request) throws -> Reply {
        try LineCodec.decodeReply(service.handle(line: try LineCodec.encode(r, id: 1))).reply
    }

    /// What a site answers to crafted crossed rounds, at the default
    /// disclosure rules: a plain GLMM evaluation of a crossed session, a
    /// point whose crossed effects are not its levels', more points than
    /// one stencil and the extra-point allowance, and a β so steep that one
    /// row dominates the information are refused, each saying
    /// why; an honest point is answered, and its answer round-trips exactly.
    func testCraftedCrossedRoundsAreRefused() throws {
        let files = try Self.files()
        let services = files.map { f in
            SiteService(site: f.deletingPathExtension().lastPathComponent, datasets: ["data": .csv(path: f.path, types: [:])],
                        siteColumn: "site", policy: DisclosurePolicy())
        }
        let descriptions = try services.map { s -> SiteDescription in
            guard case .described(let d) = try Self.ask(s, .describe(DescribeRequest(dataset: "data"))) else { throw FitFailure("describe") }
            return d
        }
        let spec = try Analysis.resolve(formula: "died ~ age + (1 | site) + (1 | surgeon)", descriptions: descriptions, family: .binomial)
        XCTAssertTrue(spec.hasCrossedTerms)
        let service = services[0]
        guard case .prepared(let p) = try Self.ask(service, .prepare(PrepareRequest(session: "c", dataset: "data", model: spec))),
              let levels = p.summary.crossedLevels?.first else { return XCTFail("prepare") }
        let q = levels.count, theta = [0.5, 0.5], beta = [-1.5, 0.5]
        func message(_ r: Reply) -> String { if case .error(let e) = r { return e.message }; return "answered" }
        let plain = try Self.ask(service, .evaluate(EvaluateRequest(session: "c", theta: theta, order: 2, beta: beta)))
        XCTAssertTrue(message(plain).contains("glmm_crossed"), message(plain))
        var wrong = EvaluateRequest(session: "c", theta: theta, order: 0)
        wrong.crossed = [CrossedGLMMPoint(theta: theta, beta: beta, effects: [Double](repeating: 0, count: q + 1))]
        let m = message(try Self.ask(service, .evaluate(wrong)))
        XCTAssertTrue(m.contains("one value per crossed effect at this site's levels (\(q))"), m)
        var many = wrong
        many.crossed = [CrossedGLMMPoint](repeating: CrossedGLMMPoint(theta: theta, beta: beta, effects: [Double](repeating: 0, count: q)), count: 200)
        let tooMany = message(try Self.ask(service, .evaluate(many)))
        XCTAssertTrue(tooMany.contains("a crossed GLMM round holds between 1 and"), tooMany)
        // A β steep in age turns the fitted probabilities into a step at age 0.3, whose
        // gradient per level would count the rows above it: refused, whatever the crossed effects.
        var steep = wrong
        steep.crossed = [CrossedGLMMPoint(theta: theta, beta: [-150, 500], effects: [Double](repeating: 0, count: q)),
                         CrossedGLMMPoint(theta: theta, beta: [-1.5, 0.5], effects: [Double](repeating: 0, count: q))]
        let dominated = message(try Self.ask(service, .evaluate(steep)))
        XCTAssertTrue(dominated.contains("rule max_row_share, dominance"), dominated)
        var honest = wrong
        honest.crossed = [CrossedGLMMPoint(theta: theta, beta: beta, effects: (0..<q).map { 0.1 * Double($0) })]
        guard case .glmmCrossed(let answer) = try Self.ask(service, .evaluate(honest)) else { return XCTFail("the honest point was refused") }
        XCTAssertEqual(answer.pieces.count, 1)
        XCTAssertEqual(answer.pieces[0].gradient.count, q)
        XCTAssertEqual(answer.pieces[0].hessian.count, q * (q + 1) / 2, "the upper triangle")
        let line = try LineCodec.encode(Reply.glmmCrossed(answer), id: 7)
        XCTAssertEqual(try LineCodec.decodeReply(line).reply, .glmmCrossed(answer), "round-trips exactly")
    }
}

extension ExecutableTests {
    /// `fedmix local --family binomial` on the surgeons registry (agents on
    /// loopback TLS): `(1 | site) + (1 | surgeon)` equals glmer on the pooled
    /// rows, the JSON carries every surgeon's effect, and says how the
    /// derivatives were obtained.
    func localCrossedGLMMEqualsGlmer() throws {
        let ref = CrossedGLMMTests.references["died"]!
        let dir = CrossedGLMMTests.directory.appendingPathComponent("surgeons").path
        let fit = try jsonFit(["local", dir, "--formula", ref["formula"] as! String, "--family", "binomial"])
        XCTAssertLessThanOrEqual(fit["objective"] as! Double - (ref["objective"] as! Double), 1e-6)
        for (mine, theirs) in zip(Self.estimates(fit), (ref["fixed"] as! [String: Any])["estimates"] as! [Double]) {
            XCTAssertEqual(mine, theirs, accuracy: 1e-4 * max(abs(theirs), 1))
        }
        let crossed = fit["crossed_effects"] as! [[String: Any]]
        XCTAssertEqual(crossed.count, 40)
        XCTAssertEqual(Set(crossed.map { $0["group"] as! String }), ["surgeon"])
        XCTAssertTrue((fit["messages"] as? [String] ?? []).contains { $0.contains("finite differences") })
    }
}

/// DESIGN.md's GLMM tolerances against glmer refitted tightly: the
/// deviance never worse than glmer's by more than 1e-6; estimates, SEs,
/// θ and variance components within 1e-4 relative; the conditional modes
/// of the surgeons and sites within 1e-4 of their conditional SD and the
/// conditional SDs within 1e-4 relative. Returns the worst relative error.
@discardableResult
func assertCrossedGLMMMatchesR(_ r: FitResult, _ key: String, references: [String: [String: Any]],
                               file: StaticString = #filePath, line: UInt = #line) -> Double {
    let ref = references[key]!
    let objective = ref["objective"] as! Double
    XCTAssertLessThanOrEqual(r.objective - objective, 1e-6, "\(key): deviance worse than glmer's", file: file, line: line)
    XCTAssertEqual(r.nObs, ref["n_obs"] as! Int, file: file, line: line)
    var worst = 0.0
    func check(_ a: Double, _ b: Double, _ what: String, floor: Double = 1e-8) {
        let e = abs(a - b) / max(abs(b), floor)
        worst = max(worst, e)
        XCTAssertLessThanOrEqual(e, 1e-4, "\(key) \(what): \(a) vs glmer \(b)", file: file, line: line)
    }
    let fixed = ref["fixed"] as! [String: Any]
    XCTAssertEqual(r.fixedEffects.map(\.name), fixed["names"] as! [String], file: file, line: line)
    for (k, f) in r.fixedEffects.enumerated() {
        check(f.estimate, (fixed["estimates"] as! [Double])[k], "\(f.name) estimate", floor: f.stdError)
        check(f.stdError, (fixed["std_errors"] as! [Double])[k], "\(f.name) SE")
    }
    let components = ref["variance_components"] as! [[String: Any]]
    XCTAssertEqual(r.varianceComponents.count, components.count, file: file, line: line)
    for c in components {
        // Scalar terms' references name the group only; vector terms' name var1 and var2 too.
        let mine = r.varianceComponents.first {
            $0.group == c["group"] as! String && $0.var2 == c["var2"] as? String && (c["var1"] == nil || $0.var1 == c["var1"] as? String)
        }
        check(mine?.vcov ?? .nan, c["vcov"] as! Double, "vcov \(c["group"]!) \(c["var1"] ?? "") \(c["var2"] ?? "")")
    }
    var compared = 0
    for g in ref["ranef"] as! [[String: Any]] {
        let group = g["group"] as! String, columns = g["columns"] as! [String]
        for (i, level) in (g["levels"] as! [String]).enumerated() {
            let modes = (g["modes"] as! [[Double]])[i], sds = (g["cond_sd"] as! [[Double]])[i]
            let mine: (effects: [String: Double], sd: [String: Double])?
            if let e = r.crossedEffects?.first(where: { $0.group == group && $0.level == level }) { mine = (e.effects, e.condSD) }
            else if group == "site", let s = r.sites.first(where: { $0.site == level }) { mine = (s.effects, s.condSD) }
            else { mine = nil }
            XCTAssertNotNil(mine, "\(key): \(group) \(level) missing", file: file, line: line)
            guard let mine else { continue }
            for (a, column) in columns.enumerated() {
                check(mine.effects[column] ?? .nan, modes[a], "mode \(group) \(level) \(column)", floor: sds[a])
                check(mine.sd[column] ?? .nan, sds[a], "cond SD \(group) \(level) \(column)")
                compared += 1
            }
        }
    }
    XCTAssertEqual(compared, (ref["ranef"] as! [[String: Any]]).reduce(0) { $0 + ($1["levels"] as! [String]).count * ($1["columns"] as! [String]).count },
                   file: file, line: line)
    return worst
}

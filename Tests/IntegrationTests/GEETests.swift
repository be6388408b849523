import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// fedmix gee against geepack::geeglm on the pooled rows
/// (Tests/Fixtures/gee/references.json, written by
/// Tests/Fixtures/tools/gee-references.R), in-process and through agents over
/// loopback mutual TLS; the bias-corrected SEs against the Mancl-DeRouen and
/// Kauermann-Carroll formulas evaluated in R.
final class GEETests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("gee")
    override class func tearDown() { pki.remove() }

    static let root = Fixtures.root.deletingLastPathComponent().appendingPathComponent("gee")
    static var references: [String: [String: Any]] {
        let all = try! JSONSerialization.jsonObject(with: Data(contentsOf: root.appendingPathComponent("references.json")))
        return all as! [String: [String: Any]]
    }
    static func siteFiles(_ dir: String) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: root.appendingPathComponent(dir), includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "csv" }
            .sorted { $0.lastPathComponent.utf8.lexicographicallyPrecedes($1.lastPathComponent.utf8) }
    }

    /// R's formula as fedmix reads it (deparse writes `age:smoke` the same way).
    static func options(_ ref: [String: Any], smallSample: SmallSampleCorrection? = nil) -> FitOptions {
        let family: Family = ["binomial": .binomial, "poisson": .poisson, "gaussian": .gaussian][ref["family"] as! String]!
        var o = FitOptions(family: family)
        o.cluster = ref["cluster"] as? String
        o.gee = GEESettings(correlation: WorkingCorrelation(rawValue: ref["corstr"] as! String)!, order: ref["order"] as? String,
                            smallSample: smallSample)
        return o
    }

    /// Estimates, robust and naive SEs, α, φ (and the corrected SEs when
    /// present) within 1e-6 relative; returns the worst relative error.
    @discardableResult
    static func check(_ r: FitResult, _ ref: [String: Any], _ label: String, corrected: Bool = false) -> Double {
        var worst = 0.0
        func close(_ a: Double, _ b: Double, _ what: String) {
            let e = relativeError(a, b)
            worst = max(worst, e)
            XCTAssertLessThan(e, 1e-6, "\(label) \(what): \(a) vs geepack \(b)")
        }
        XCTAssertEqual(r.fixedEffects.map(\.name), ref["names"] as! [String], label)
        guard let g = r.gee else { XCTFail("\(label): no GEE section"); return .infinity }
        for (k, f) in r.fixedEffects.enumerated() {
            close(f.estimate, (ref["estimate"] as! [Double])[k], "\(f.name) estimate")
            close(f.stdError, (ref["std_error"] as! [Double])[k], "\(f.name) robust SE")
            close(g.naiveStdErrors[k], (ref["naive_std_error"] as! [Double])[k], "\(f.name) naive SE")
            if corrected {
                close(g.stdErrorsMD![k], (ref["std_error_md"] as! [Double])[k], "\(f.name) Mancl-DeRouen SE")
                close(g.stdErrorsKC![k], (ref["std_error_kc"] as! [Double])[k], "\(f.name) Kauermann-Carroll SE")
            }
        }
        let vcov = ref["vcov"] as! [[Double]]
        for i in vcov.indices { for j in vcov.indices {
            // Relative to the diagonal's scale: off-diagonal entries may be near 0.
            let e = abs(r.vcov[i][j] - vcov[i][j]) / (vcov[i][i] * vcov[j][j]).squareRoot()
            worst = max(worst, e)
            XCTAssertLessThan(e, 1e-6, "\(label) robust vcov[\(i)][\(j)]")
        } }
        close(g.scale, ref["scale"] as! Double, "scale")
        if let alpha = ref["alpha"] as? Double { close(g.alpha ?? .nan, alpha, "alpha") } else { XCTAssertNil(g.alpha, label) }
        XCTAssertEqual(g.nClusters, ref["n_clusters"] as! Int, label)
        // Fewer than 40 clusters: the warning about the sandwich's downward bias.
        XCTAssertEqual(r.messages.contains { $0.hasPrefix("only \(g.nClusters) clusters: the sandwich standard errors are biased downward") },
                       g.nClusters < 40, label)
        XCTAssertEqual(r.nObs, ref["n_obs"] as! Int, label)
        XCTAssertTrue(r.converged, label)
        return worst
    }

    func testGEEEqualsGeepackInProcess() throws {
        for (name, ref) in Self.references.sorted(by: { $0.key < $1.key }) {
            let files = try Self.siteFiles(ref["dir"] as! String)
            let r = try Analysis.fit(inProcessFederation(files: files, siteColumn: nil), dataset: "data",
                                     formula: ref["formula"] as! String, options: Self.options(ref, smallSample: .md))
            let worst = Self.check(r, ref, "\(name) in-process", corrected: true)
            print(String(format: "%@: %d sites, %d rounds, %d GEE iterations; worst relative error %.1e", name, files.count, r.rounds,
                         r.gee?.iterations ?? -1, worst))
        }
    }

    /// The acceptance cases through agents over loopback mutual TLS: the
    /// same numbers and rounds as in-process; the rounds and bytes are printed.
    func testGEEOverTLSEqualsGeepack() throws {
        var figures: [String] = []
        for name in ["respiratory-exchangeable", "respiratory-ar1", "ohio-exchangeable", "trauma-exchangeable"] {
            let ref = Self.references[name]!
            let files = try Self.siteFiles(ref["dir"] as! String)
            let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close(); agents.forEach { $0.stop() } }
            let r = try Analysis.fit(federation, dataset: "data", formula: ref["formula"] as! String, options: Self.options(ref, smallSample: .kc))
            let worst = Self.check(r, ref, "\(name) over TLS", corrected: true)
            let inProcess = try Analysis.fit(inProcessFederation(files: files, siteColumn: nil), dataset: "data",
                                             formula: ref["formula"] as! String, options: Self.options(ref, smallSample: .kc))
            XCTAssertEqual(r.rounds, inProcess.rounds, name)
            XCTAssertEqual(r.fixedEffects.map(\.estimate), inProcess.fixedEffects.map(\.estimate), "\(name): TLS and in-process agree exactly")
            figures.append(String(format: "%@: %d sites, %d clusters, %d rounds (%d GEE iterations, incl. the corrections' round), %d bytes; worst rel. error %.1e",
                                  name, files.count, r.gee!.nClusters, r.rounds, r.gee!.iterations, r.bytesSent + r.bytesReceived, worst))
        }
        print("GEE over loopback mutual TLS:\n" + figures.joined(separator: "\n"))
    }

    /// A site answers GEE only when the model's rows form at least min_cell
    /// clusters there; the refusal names the rule.
    func testGEESiteNeedsMinCellClusters() throws {
        let ref = Self.references["respiratory-exchangeable"]!
        let files = try Self.siteFiles("respiratory")   // 56 and 55 patients of 4 visits
        var policy = DisclosurePolicy.off
        policy.minCell = 56
        func fit(_ policy: DisclosurePolicy) throws -> FitResult {
            try Analysis.fit(inProcessFederation(files: files, siteColumn: nil, policy: policy), dataset: "data",
                             formula: "outcome ~ age", options: Self.options(ref))
        }
        XCTAssertThrowsError(try fit(policy)) { e in
            XCTAssertTrue("\(e)".contains("form 55 clusters at this site; GEE answers are sums over at least 56 clusters (rule min_cell)"), "\(e)")
        }
        policy.minCell = 55
        XCTAssertEqual(try fit(policy).fixedEffects.map(\.estimate), try fit(.off).fixedEffects.map(\.estimate),
                       "clusters of 4 rows are allowed: nothing per cluster leaves the site")
    }

    /// A GEE round on a session not prepared for GEE is refused; a GEE
    /// answer that is not p×p is refused at decode, naming the field.
    func testGEEProtocolRefusals() throws {
        let file = try Self.siteFiles("respiratory")[0]
        let service = SiteService(site: "c1", datasets: ["data": .csv(path: file.path, types: [:])], policy: .off)
        var spec = ModelSpec(formula: "outcome ~ age", family: .binomial, link: .logit, response: .value(.variable("outcome")),
                             fixed: [DesignColumn(name: "(Intercept)", expr: .number(1)), DesignColumn(name: "age", expr: .variable("age"))], terms: [])
        spec.cluster = .withinSite(["id"])
        func ask(_ r: Request) throws -> Reply { try LineCodec.decodeReply(service.handle(line: try LineCodec.encode(r, id: 1))).reply }
        _ = try ask(.prepare(PrepareRequest(session: "s", dataset: "data", model: spec)))
        guard case .error(let refused) = try ask(.evaluate(EvaluateRequest(session: "s", theta: [], order: 0, beta: [0, 0], gee: GEEPoint(alpha: 0, scale: 1)))) else {
            return XCTFail("a GEE round on a glm session was answered")
        }
        XCTAssertTrue(refused.message.contains("needs a session prepared for GEE"), refused.message)
        spec.gee = GEESpec(correlation: .exchangeable)
        _ = try ask(.prepare(PrepareRequest(session: "g", dataset: "data", model: spec)))
        guard case .geeStep(let s) = try ask(.evaluate(EvaluateRequest(session: "g", theta: [], order: 0, beta: [0, 0],
                                                                       gee: GEEPoint(alpha: 0.2, scale: 1)))) else { return XCTFail() }
        XCTAssertEqual(s.clusters, 56)
        XCTAssertEqual(s.score.count, 2)
        var line = try LineCodec.encode(Reply.geeStep(s), id: 1)
        XCTAssertEqual(try LineCodec.decodeReply(line).reply, .geeStep(s), "round-trips exactly")
        line = line.replacingOccurrences(of: "\"meat\":[", with: "\"meat\":[1,")
        XCTAssertThrowsError(try LineCodec.decodeReply(line)) { e in XCTAssertTrue("\(e)".contains("meat"), "\(e)") }
        XCTAssertThrowsError(try LineCodec.decodeRequest(#"{"id":1,"type":"evaluate","session":"g","theta":[],"order":0,"beta":[0,0],"gee":{"alpha":1.5,"scale":1}}"#)) { e in
            XCTAssertTrue("\(e)".contains("alpha"), "\(e)")
        }
    }
}

import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// GLMMs with grouping factors crossed with the sites (issue 17; DESIGN.md
/// "Crossed factors in GLMMs"): a simulated registry of 20 hospitals whose
/// 40 surgeons operate at 2-4 of them, `(1 | site) + (1 | surgeon)`, binomial
/// and Poisson (Tests/Fixtures/tools/crossed-glmm-references.R), against
/// glmer (Laplace) refitted tightly on the pooled rows, in-process and
/// through agents over TLS; and the refusals.
final class CrossedGLMMTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("crossed-glmm")
    override class func tearDown() { pki.remove() }

    static let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("crossed-glmm")
    nonisolated(unsafe) static let references: [String: [String: Any]] = {
        let url = directory.appendingPathComponent("references.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: [String: Any]]
    }()

    static func files() throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: directory.appendingPathComponent("surgeons"), includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "csv" }
            .sorted { $0.lastPathComponent.utf8.lexicographicallyPrecedes($1.lastPathComponent.utf8) }
    }

    static func options(_ ref: [String: Any]) -> FitOptions {
        FitOptions(family: ref["family"] as! String == "binomial" ? .binomial : .poisson)
    }

    /// DESIGN.md's GLMM tolerances against glmer refitted tightly: the
    /// deviance never worse than glmer's by more than 1e-6; estimates, SEs,
    /// θ and variance components within 1e-4 relative; the conditional modes
    /// of the surgeons and sites within 1e-4 of their conditional SD and the
    /// conditional SDs within 1e-4 relative. Returns the worst relative error.
    @discardableResult
    func assertMatchesR(_ r: FitResult, _ key: String, file: StaticString = #filePath, line: UInt = #line) -> Double {
        let ref = Self.references[key]!
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
            let mine = r.varianceComponents.first { $0.group == c["group"] as! String }
            check(mine?.vcov ?? .nan, c["vcov"] as! Double, "vcov \(c["group"]!)")
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
        XCTAssertEqual(compared, 60, file: file, line: line)
        return worst
    }

    /// Both reference fits in-process: glmer's answer on the pooled rows.
    func testReferencesInProcess() throws {
        for key in Self.references.keys.sorted() {
            let ref = Self.references[key]!
            let r = try Analysis.fit(inProcessFederation(files: try Self.files()), dataset: "data", formula: ref["formula"] as! String,
                                     options: Self.options(ref))
            XCTAssertTrue(r.converged, key)
            let worst = assertMatchesR(r, key)
            print("crossed GLMM \(key): worst relative error \(worst), deviance − glmer's \(r.objective - (ref["objective"] as! Double)), rounds \(r.rounds), evaluations \(r.evaluations)")
        }
    }
}

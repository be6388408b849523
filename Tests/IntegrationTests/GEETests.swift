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
        close(g.scale, ref["scale"] as! Double, "scale")
        if let alpha = ref["alpha"] as? Double { close(g.alpha ?? .nan, alpha, "alpha") } else { XCTAssertNil(g.alpha, label) }
        XCTAssertEqual(g.nClusters, ref["n_clusters"] as! Int, label)
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
}

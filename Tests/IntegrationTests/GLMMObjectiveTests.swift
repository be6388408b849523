import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// The summed site contributions at lme4's optimum reproduce lme4's objective.
final class GLMMObjectiveTests: XCTestCase {
    func frames(_ name: String, formula: String) throws -> [GLMMFrame] {
        let files = try Fixtures.siteFiles(name)
        let fed = inProcessFederation(files: files)
        let spec = try Analysis.resolve(formula: formula, descriptions: try Analysis.describe(fed, dataset: "data"), family: .binomial)
        return try files.map { try GLMMFrame(table: try CSVReader.read(path: $0.path), spec: spec, dataset: "data") }
    }

    func testObjectiveAtLme4OptimumMatches() throws {
        for (name, key) in [("cbpp", "laplace"), ("contraception", "laplace"), ("cbpp", "agq9"), ("contraception", "agq7")] {
            let ref = try Fixtures.fit(name, key)
            let theta = (ref["theta"] as? [Double]) ?? [ref["theta"] as! Double]
            let beta = (ref["fixed_effects"] as! [[String: Any]]).map { $0["estimate"] as! Double }
            let nAGQ = key == "laplace" ? 1 : Int(key.dropFirst(3))!
            let sites = try frames(name, formula: ref["formula"] as! String).map { GLMMSite($0.data) }
            var total = 0.0, saturated = 0.0
            for s in sites { total += try s.objective(theta: theta, beta: beta, nAGQ: nAGQ).value; saturated += s.saturatedConstant }
            let lme4 = nAGQ == 1 ? total : total - saturated
            print(name, key, total, lme4, ref["objective"] as! Double)
            XCTAssertEqual(lme4, ref["objective"] as! Double, accuracy: 1e-6)
        }
    }
}

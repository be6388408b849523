import Foundation
import XCTest
import Coordinator
import SiteAgent
import Protocol

/// The project's copy of the lme4 reference cases (Tests/Fixtures/reference).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/reference")

    static func caseDirectory(_ name: String) -> URL { root.appendingPathComponent(name) }

    /// Site CSV files of a case, sorted by name.
    static func siteFiles(_ name: String) throws -> [URL] {
        try csvFiles(in: caseDirectory(name).appendingPathComponent("sites"))
    }

    /// The CSV files in a folder (one site each), sorted by name.
    static func csvFiles(in dir: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "csv" }
            .sorted { $0.lastPathComponent.utf8.lexicographicallyPrecedes($1.lastPathComponent.utf8) }
    }

    /// A fixture folder beside `reference` (crossed, crossed-glmm, …) and its references.json, by key.
    static func references(_ folder: String) -> [String: [String: Any]] {
        let url = root.deletingLastPathComponent().appendingPathComponent(folder).appendingPathComponent("references.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: [String: Any]]
    }

    static func pooledFile(_ name: String) -> URL { caseDirectory(name).appendingPathComponent("pooled.csv") }

    static func reference(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: caseDirectory(name).appendingPathComponent("reference.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func fit(_ name: String, _ key: String) throws -> [String: Any] {
        (try reference(name)["fits"] as! [String: Any])[key] as! [String: Any]
    }

    /// lme4 refitted at tight optimizer tolerances (Tests/Fixtures/tools/lme4-tight.R).
    static func tight(_ name: String, _ key: String) throws -> [String: Any] {
        let url = root.deletingLastPathComponent().appendingPathComponent("reference-tight.json")
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return all["\(name)/\(key)"] as! [String: Any]
    }
}

/// In-process federation of SiteServices over protocol lines, one per file.
func inProcessFederation(files: [URL], siteColumn: String? = "site", policy: DisclosurePolicy = .off) -> Federation {
    let channels: [SiteChannel] = files.map { url in
        let site = url.deletingPathExtension().lastPathComponent
        let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])],
                                  siteColumn: siteColumn, policy: policy)
        return InProcessChannel(site: site) { service.handle(line: $0) }
    }
    return Federation(channels: channels)
}

/// Relative difference, guarded near zero.
func relativeError(_ a: Double, _ b: Double) -> Double {
    abs(a - b) / max(abs(b), 1e-8)
}

/// Asserts a fit agrees with lme4's reference at DESIGN.md's LMM tolerances:
/// criterion within 1e-6 absolute (and never worse by more), estimates, SEs,
/// variance components and θ within `rel` relative. Returns the worst relative error.
@discardableResult
func assertMatchesReference(_ r: FitResult, _ ref: [String: Any], rel: Double = 1e-4,
                            file: StaticString = #filePath, line: UInt = #line) -> Double {
    var worst = 0.0
    func check(_ a: Double, _ b: Double, _ what: String, tol: Double) {
        let e = relativeError(a, b)
        worst = max(worst, e)
        XCTAssertLessThanOrEqual(e, tol, "\(what): fedmix \(a), lme4 \(b)", file: file, line: line)
    }
    let objective = ref["objective"] as! Double
    XCTAssertLessThanOrEqual(r.objective - objective, 1e-6, "criterion worse than lme4's", file: file, line: line)
    XCTAssertGreaterThanOrEqual(r.objective - objective, -1e-5, "criterion far below lme4's: check the reference", file: file, line: line)
    XCTAssertEqual(r.nObs, ref["n_obs"] as! Int, file: file, line: line)
    let fe = ref["fixed_effects"] as! [[String: Any]]
    XCTAssertEqual(r.fixedEffects.map(\.name), fe.map { $0["name"] as! String }, file: file, line: line)
    for (mine, theirs) in zip(r.fixedEffects, fe) {
        check(mine.estimate, theirs["estimate"] as! Double, "\(mine.name) estimate", tol: rel)
        check(mine.stdError, theirs["std_error"] as! Double, "\(mine.name) SE", tol: rel)
    }
    let vc = ref["variance_components"] as! [[String: Any]]
    XCTAssertEqual(r.varianceComponents.count, vc.count, file: file, line: line)
    for (mine, theirs) in zip(r.varianceComponents, vc) {
        XCTAssertEqual(mine.group, theirs["grp"] as? String, file: file, line: line)
        XCTAssertEqual(mine.var1, theirs["var1"] as? String, file: file, line: line)
        XCTAssertEqual(mine.var2, theirs["var2"] as? String, file: file, line: line)
        check(mine.vcov, theirs["vcov"] as! Double, "vcov \(mine.group) \(mine.var1 ?? "") \(mine.var2 ?? "")", tol: rel)
        check(mine.sdcor, theirs["sdcor"] as! Double, "sdcor \(mine.group)", tol: rel)
    }
    check(r.sigma, ref["sigma"] as! Double, "sigma", tol: rel)
    XCTAssertEqual(r.loglik, ref["loglik"] as! Double, accuracy: 1e-5, file: file, line: line)
    XCTAssertEqual(r.aic, ref["aic"] as! Double, accuracy: 1e-5, file: file, line: line)
    XCTAssertEqual(r.bic, ref["bic"] as! Double, accuracy: 1e-5, file: file, line: line)
    let theta = ref["theta"] as? [Double] ?? [ref["theta"] as! Double]
    XCTAssertEqual(r.theta.count, theta.count, file: file, line: line)
    for (k, (mine, theirs)) in zip(r.theta, theta).enumerated() { check(mine, theirs, "theta[\(k)]", tol: rel) }
    XCTAssertEqual(r.singular, ref["singular"] as! Bool, file: file, line: line)
    if let groups = ref["n_groups"] as? [String: Int] { XCTAssertEqual(r.nGroups, groups, file: file, line: line) }
    return worst
}

/// Asserts a fit agrees with lme4 refitted at tight tolerances: criterion to
/// 1e-7 absolute, everything else (θ included) to `rel` relative. Returns the worst error.
@discardableResult
func assertMatchesTightReference(_ r: FitResult, _ t: [String: Any], rel: Double = 1e-6,
                                 file: StaticString = #filePath, line: UInt = #line) -> Double {
    var worst = 0.0
    func check(_ a: Double, _ b: Double, _ what: String, floor: Double = 1e-8) {
        let e = abs(a - b) / max(abs(b), floor)
        worst = max(worst, e)
        XCTAssertLessThanOrEqual(e, rel, "\(what): fedmix \(a), lme4 (tight) \(b)", file: file, line: line)
    }
    XCTAssertEqual(r.objective, t["objective"] as! Double, accuracy: 1e-7, "criterion vs tight lme4", file: file, line: line)
    for (k, f) in r.fixedEffects.enumerated() {
        check(f.estimate, (t["estimates"] as! [Double])[k], "\(f.name) estimate", floor: f.stdError)
        check(f.stdError, (t["std_errors"] as! [Double])[k], "\(f.name) SE")
    }
    for (k, v) in r.varianceComponents.enumerated() {
        check(v.vcov, (t["vcov"] as! [Double])[k], "vcov \(v.group) \(v.var1 ?? "") \(v.var2 ?? "")")
        check(v.sdcor, (t["sdcor"] as! [Double])[k], "sdcor \(v.group)")
    }
    check(r.sigma, t["sigma"] as! Double, "sigma")
    if let theta = t["theta"] as? [Double] {
        XCTAssertEqual(r.theta.count, theta.count, "θ length", file: file, line: line)
        for (k, (mine, theirs)) in zip(r.theta, theta).enumerated() { check(mine, theirs, "theta[\(k)]") }
    }
    if let effects = t["site_effects"] as? [[String: Any]] {
        let names = r.varianceComponents.filter { $0.group == "site" && $0.var2 == nil }
        for e in effects {
            let site = e["site"] as! String
            guard let mine = r.sites.first(where: { $0.site == site }) else { XCTFail("no site \(site)", file: file, line: line); continue }
            for (k, vcomp) in names.enumerated() {
                let n = vcomp.var1!
                // near-zero modes: relative to the effect's standard deviation
                check(mine.effects[n] ?? .nan, (e["effects"] as! [Double])[k], "site \(site) effect \(n)", floor: vcomp.sdcor)
                check(mine.condSD[n] ?? .nan, (e["cond_sd"] as! [Double])[k], "site \(site) cond sd \(n)")
            }
        }
    }
    return worst
}

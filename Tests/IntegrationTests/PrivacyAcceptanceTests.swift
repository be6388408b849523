import Foundation
import XCTest
import Coordinator
import Math
import Protocol
import SiteAgent

/// The privacy rules, through real agents over TLS with the default
/// disclosure rules: differencing attempts and a tiny dataset are refused with
/// specific errors while the agents keep serving, and the legitimate fits
/// still succeed and still equal lme4.
final class PrivacyAcceptanceTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("privacy-acceptance")
    override class func tearDown() { pki.remove() }

    private func agents(_ files: [URL]) throws -> [LoopbackAgent] {
        let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki, policy: DisclosurePolicy()) }
        addTeardownBlock { agents.forEach { $0.stop() } }
        return agents
    }

    /// Reference cases whose every site holds at least min_rows (10) rows fit
    /// under the default rules and equal lme4 (the others are refused by
    /// min_rows at their small sites, as they must be).
    func testReferenceCasesWithEnoughRowsFitUnderTheDefaultRules() throws {
        for (name, key) in [("sleepstudy", "reml"), ("sleepstudy", "ml"), ("scotssec-primary", "nested")] {
            let ref = try Fixtures.fit(name, key)
            let fed = try tlsFederation(try agents(try Fixtures.siteFiles(name)), pki: Self.pki)
            defer { fed.close() }
            let r = try Analysis.fit(fed, dataset: "data", formula: ref["formula"] as! String,
                                     options: FitOptions(method: key == "ml" ? .ml : .reml))
            XCTAssertTrue(r.converged, "\(name)/\(key): \(r.convergence)")
            assertMatchesReference(r, ref, rel: 1e-4)
        }
        // A small site is refused by min_rows, naming the rule and not the count.
        let fed = try tlsFederation(try agents(try Fixtures.siteFiles("dyestuff")), pki: Self.pki)
        defer { fed.close() }
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "Yield ~ 1 + (1 | site)")) { e in
            XCTAssertTrue("\(e)".contains("rule min_rows"), "\(e)")
        }
    }

    /// The simulated trauma registry's analyses, each on fresh agents.
    func testTraumaRegistryAnalysesFitUnderTheDefaultRules() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-privacy-\(UUID().uuidString)")
        let files = try TraumaRegistrySimulator.write(to: dir.path)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for (formula, family) in [("iss ~ age + sex + (1 | site)", Family.gaussian),
                                  ("iss ~ age + sex + I((age - 50)^2) + (1 | site)", .poisson)] {
            let fed = try tlsFederation(try agents(files), pki: Self.pki)
            defer { fed.close() }
            let r = try Analysis.fit(fed, dataset: "data", formula: formula, options: FitOptions(family: family))
            XCTAssertTrue(r.converged, "\(formula): \(r.convergence)")
            XCTAssertEqual(r.nSites, files.count)
        }
        // Mortality: the smallest hospital (30 patients) has fewer than 5 deaths, so min_cell refuses it there.
        let fed = try tlsFederation(try agents(files), pki: Self.pki)
        defer { fed.close() }
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "died ~ age + iss + (1 | site)", options: FitOptions(family: .binomial))) { e in
            XCTAssertTrue("\(e)".contains("greystone") && "\(e)".contains("rule min_cell"), "\(e)")
        }
    }

    /// Two dataset names over one file, a second model that adds a variable
    /// missing for two patients, and a dataset below min_rows: each refused
    /// over TLS with its rule, and the agent keeps serving.
    func testDifferencingAndTinyDatasetsAreRefusedOverTLS() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-diff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        var text = "ward,y,x,w\n"
        for i in 0..<60 { text += "w\(i % 4),\(Double((i * 37) % 11) + 0.25 * Double(i)),\(Double(i % 13)),\(i == 7 || i == 41 ? "NA" : String(Double(i % 9) + 0.5))\n" }
        let file = dir.appendingPathComponent("a.csv")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let tiny = dir.appendingPathComponent("tiny.csv")
        try "ward,y,x,w\nw1,1,2,3\n".write(to: tiny, atomically: true, encoding: .utf8)
        let service = SiteService(site: "a", datasets: ["main": .csv(path: file.path, types: [:]), "copy": .csv(path: file.path, types: [:]),
                                                        "tiny": .csv(path: tiny.path, types: [:])],
                                  siteColumn: nil, policy: DisclosurePolicy())
        let agent = try LoopbackAgent(service: service, pki: Self.pki)
        defer { agent.stop() }
        let fed = try tlsFederation([agent], pki: Self.pki)
        defer { fed.close() }
        let first = try Analysis.fit(fed, dataset: "main", formula: "y ~ x + (1 | ward)")
        XCTAssertEqual(first.nObs, 60)
        for dataset in ["main", "copy"] {
            XCTAssertThrowsError(try Analysis.fit(fed, dataset: dataset, formula: "y ~ x + w + (1 | ward)"), dataset) { e in
                XCTAssertTrue("\(e)".contains("rule min_rows, differencing"), "\(e)")
            }
        }
        XCTAssertThrowsError(try Analysis.describe(fed, dataset: "tiny")) { e in
            XCTAssertTrue("\(e)".contains("rule min_rows"), "\(e)")
            XCTAssertFalse("\(e)".contains("w1"), "no value: \(e)")
        }
        // Still serving: the first model again (the same rows) is answered.
        XCTAssertEqual(try Analysis.fit(fed, dataset: "copy", formula: "y ~ x + (1 | ward)").nObs, 60)
    }
}

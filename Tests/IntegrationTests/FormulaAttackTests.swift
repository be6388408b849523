import Foundation
import XCTest
import Coordinator
import Math
import Protocol
import SiteAgent

/// A curious analyst with a valid certificate writes formulas that would
/// single out a patient. Each is refused by the agent, under its default
/// disclosure rules, through a real agent over TLS, with a specific error that
/// names the rule, no data value, and the agent keeps serving. Legitimate
/// models of the same data still fit.
final class FormulaAttackTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("formula-attacks")
    override class func tearDown() { pki.remove() }

    /// The simulated trauma registry (8 hospitals), one agent per hospital
    /// with the default rules.
    private func agents() throws -> [LoopbackAgent] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-attack-\(UUID().uuidString)")
        let files = try TraumaRegistrySimulator.write(to: dir.path)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki, policy: DisclosurePolicy()) }
        addTeardownBlock { agents.forEach { $0.stop() } }
        return agents
    }

    private func refusal(_ fed: Federation, _ formula: String, family: Family = .gaussian,
                         file: StaticString = #filePath, line: UInt = #line) -> String {
        let options = FitOptions(family: family)
        do {
            let r = try Analysis.fit(fed, dataset: "data", formula: formula, options: options)
            XCTFail("\(formula) was fitted (n_obs \(r.nObs)); it must be refused", file: file, line: line)
            return ""
        } catch {
            return "\(error)"
        }
    }

    func testFormulasThatSingleOutAPatientAreRefused() throws {
        let agents = try agents()
        let fed = try tlsFederation(agents, pki: Self.pki)
        defer { fed.close() }
        // Each: a formula, and the words the refusal must contain.
        let attacks: [(String, String)] = [
            // The response is checked like any column (the reported critical case).
            ("I(iss * 0^((age-87)^2) + 0.5) ~ 1 + (1 | site)", "exponent may not depend on a variable"),
            ("I(died * 0^((age-87)^2)) ~ 1 + (1 | site)", "exponent may not depend on a variable"),
            // Disguised spikes in a design column.
            ("iss ~ I(age + 1000*0^((age-61)^2)) + (1 | site)", "exponent may not depend on a variable"),
            ("iss ~ I(1/(age-87)) + (1 | site)", "denominator"),
            ("iss ~ log(age - 86.99) + (1 | site)", "shifted argument"),
            ("iss ~ exp(-1000*(age-87)^2) + (1 | site)", "exp()"),
            ("iss ~ I(age^40) + (1 | site)", "powers may only be"),
            ("iss ~ I(2^age) + (1 | site)", "exponent may not depend on a variable"),
            ("iss ~ I((age - 87)^2 * (age - 87)^2) + (1 | site)", "degree"),
            // Offsets are columns too.
            ("iss ~ age + offset(1000*0^((age-87)^2)) + (1 | site)", "exponent may not depend on a variable"),
        ]
        for (formula, words) in attacks {
            let m = refusal(fed, formula)
            XCTAssertTrue(m.contains("rule expressions"), "\(formula): \(m)")
            XCTAssertTrue(m.contains(words), "\(formula): \(m)")
            XCTAssertFalse(m.contains("26"), "no data value in \(m)")
        }
        // The agents keep serving, and legitimate models of the same data fit.
        for formula in ["iss ~ age + I((age - 50)^2) + log(iss + 1) + sex + (1 | site)",
                        "I(iss^2) ~ age + sqrt(age) + age:sex + (1 | site)"] {
            XCTAssertNoThrow(try Analysis.fit(fed, dataset: "data", formula: formula), formula)
        }
        let r = try Analysis.fit(fed, dataset: "data", formula: "iss ~ age + sex + (1 | site)", options: FitOptions(family: .poisson))
        XCTAssertTrue(r.converged, r.convergence)
    }

    /// A spike the grammar allows cannot be built, but one row that
    /// dominates a column's spread is refused at evaluation all the same
    /// (the dominance rule), and so is a response that differs from its most
    /// common value in fewer than min_cell rows.
    func testDominantRowAndRareResponseValuesAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-dominance-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        var csv = "site,g,x,y,rare\n"
        for i in 0..<40 { csv += "a,\(i % 4),\(i == 7 ? 5000 : i % 10),\(Double(i % 7) + 0.5),\(i == 3 ? 9 : 1)\n" }
        let file = dir.appendingPathComponent("a.csv")
        try csv.write(to: file, atomically: true, encoding: .utf8)
        let agent = try LoopbackAgent(file: file, pki: Self.pki, policy: DisclosurePolicy())
        defer { agent.stop() }
        let fed = try tlsFederation([agent], pki: Self.pki)
        defer { fed.close() }
        let dominant = refusal(fed, "y ~ x + (1 | g)")
        XCTAssertTrue(dominant.contains("max_row_share"), dominant)
        XCTAssertFalse(dominant.contains("5000"), dominant)
        let rare = refusal(fed, "rare ~ 1 + (1 | g)")
        XCTAssertTrue(rare.contains("min_cell"), rare)
    }
}

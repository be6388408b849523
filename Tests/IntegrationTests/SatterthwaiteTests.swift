import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// lmerTest's Satterthwaite df and p-values for LMM fixed effects
/// (Tests/Fixtures/inference/references.json, section `satterthwaite`),
/// computed from the exact θ-derivatives the last evaluation already carried:
/// in-process, over loopback mutual TLS, and on the pooled rows.
final class SatterthwaiteTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("satterthwaite")
    override class func tearDown() { pki.remove() }

    static let cases = ["sleepstudy", "exam"]

    static func reference(_ name: String) throws -> [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("inference/references.json")
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (all["satterthwaite"] as! [String: Any])[name] as! [String: Any]
    }

    /// df and p against lmerTest's tight fit (the default fit's θ is only
    /// near the optimum, which moves df by up to 3e-5); returns the worst
    /// relative errors (df, p) and a line per coefficient.
    func check(_ r: FitResult, _ ref: [String: Any], label: String, tol: Double = 1e-4,
               file: StaticString = #filePath, line: UInt = #line) -> (df: Double, p: Double, lines: [String]) {
        let rows = ref["satterthwaite_tight_fit"] as! [[String: Any]]
        let defaults = ref["satterthwaite"] as! [[String: Any]]
        XCTAssertEqual(r.fixedEffects.map(\.name), rows.map { $0["name"] as! String }, file: file, line: line)
        var worstDf = 0.0, worstP = 0.0, lines: [String] = []
        for (k, (mine, theirs)) in zip(r.fixedEffects, rows).enumerated() {
            guard let df = mine.df else { XCTFail("\(label) \(mine.name): no df", file: file, line: line); continue }
            let refDf = theirs["df"] as! Double, refP = theirs["p_value"] as! Double
            let eDf = relativeError(df, refDf), eP = abs(mine.pValue - refP) / refP
            worstDf = max(worstDf, eDf); worstP = max(worstP, eP)
            XCTAssertLessThanOrEqual(eDf, tol, "\(label) \(mine.name) df: fedmix \(df), lmerTest \(refDf)", file: file, line: line)
            XCTAssertLessThanOrEqual(eP, tol, "\(label) \(mine.name) p: fedmix \(mine.pValue), lmerTest \(refP)", file: file, line: line)
            // t and p are lmerTest's: p = 2·P(T_df > |t|)
            XCTAssertEqual(mine.pValue, StudentT.twoSidedPValue(mine.statistic, degreesOfFreedom: df), file: file, line: line)
            let defaultDf = defaults[k]["df"] as! Double
            lines.append(String(format: "%@ %@: df %.10g (lmerTest tight %.10g, rel %.1e; default fit %.10g, rel %.1e)  p %.6e (tight %.6e, rel %.1e)",
                                label, mine.name, df, refDf, eDf, defaultDf, relativeError(df, defaultDf), mine.pValue, refP, eP))
        }
        return (worstDf, worstP, lines)
    }

    /// Acceptance: split over the sites' files, in-process and through
    /// agents over TLS, Satterthwaite df to 1e-4 relative of lmerTest's
    /// (in fact ~1e-6), the same over TLS as in-process, with no more rounds
    /// than the fit itself.
    func testSatterthwaiteMatchesLmerTestInProcessAndOverTLS() throws {
        var report: [String] = []
        for name in Self.cases {
            let ref = try Self.reference(name)
            let formula = ref["formula"] as! String
            let files = try Fixtures.siteFiles(name)
            let inProcess = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula,
                                             options: FitOptions(method: .reml))
            let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close(); agents.forEach { $0.stop() } }
            let overTLS = try Analysis.fit(federation, dataset: "data", formula: formula, options: FitOptions(method: .reml))

            let a = check(inProcess, ref, label: "\(name) in-process")
            let b = check(overTLS, ref, label: "\(name) over TLS")
            for (x, y) in zip(overTLS.fixedEffects, inProcess.fixedEffects) {
                XCTAssertLessThanOrEqual(relativeError(x.df ?? .nan, y.df ?? .nan), 1e-10, "\(name) \(x.name) df over TLS vs in-process")
                XCTAssertLessThanOrEqual(relativeError(x.pValue, y.pValue), 1e-10, "\(name) \(x.name) p over TLS vs in-process")
            }
            XCTAssertEqual(overTLS.rounds, inProcess.rounds)
            // Kenward-Roger (pbkrtest via lmerTest): adjusted SE and df
            for (mine, theirs) in zip(overTLS.fixedEffects, ref["kenward_roger_tight_fit"] as! [[String: Any]]) {
                guard let kr = mine.kenwardRoger else { XCTFail("\(name) \(mine.name): no Kenward-Roger"); continue }
                let eDf = relativeError(kr.df, theirs["df"] as! Double), eSE = relativeError(kr.stdError, theirs["std_error"] as! Double)
                let eP = abs(kr.pValue - (theirs["p_value"] as! Double)) / (theirs["p_value"] as! Double)
                XCTAssertLessThanOrEqual(eDf, 1e-4, "\(name) \(mine.name) KR df \(kr.df)")
                XCTAssertLessThanOrEqual(eSE, 1e-5, "\(name) \(mine.name) KR SE \(kr.stdError)")
                XCTAssertLessThanOrEqual(eP, 1e-4, "\(name) \(mine.name) KR p \(kr.pValue)")
                report.append(String(format: "%@ %@ Kenward-Roger: df %.10g (pbkrtest tight %.10g, rel %.1e), SE rel %.1e, p rel %.1e",
                                     name, mine.name, kr.df, theirs["df"] as! Double, eDf, eSE, eP))
            }
            report += a.lines + b.lines
            report.append("\(name): worst rel df \(max(a.df, b.df)), p \(max(a.p, b.p)); rounds \(overTLS.rounds), evaluations \(overTLS.evaluations)")

            // lmerTest's layout in the text summary
            let text = Report.text(overTLS)
            XCTAssertTrue(text.contains("Estimate Std. Error") && text.contains(" df ") && text.contains("t value Pr(>|t|)"), text)
        }
        print(report.joined(separator: "\n"))
    }

    /// The pooled rows at one site give the same df as the split fit.
    func testPooledEqualsSplit() throws {
        for name in Self.cases {
            let formula = try Self.reference(name)["formula"] as! String
            let split = inProcessFederation(files: try Fixtures.siteFiles(name))
            let spec = try Analysis.resolve(formula: formula, descriptions: try Analysis.describe(split, dataset: "data"))
            let splitFit = try FitDriver.fit(split, dataset: "data", spec: spec)
            let pooled = inProcessFederation(files: [Fixtures.pooledFile(name)], siteColumn: nil)
            let pooledFit = try FitDriver.fit(pooled, dataset: "data", spec: spec.groupingSiteByColumn("site"))
            for (a, b) in zip(pooledFit.fixedEffects, splitFit.fixedEffects) {
                XCTAssertLessThanOrEqual(relativeError(a.df ?? .nan, b.df ?? .nan), 1e-7, "\(name) \(a.name) df pooled vs split")
            }
        }
    }
}

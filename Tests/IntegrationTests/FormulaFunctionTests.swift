import Foundation
import XCTest
import Coordinator
@testable import SiteAgent
import Protocol

/// scale, poly, log1p, abs, pmin, pmax, I(comparison), cut, relevel and
/// as.factor against R on the pooled rows (Tests/Fixtures/tools/formula-functions.R):
/// the design columns to 1e-12, the REML fit at tight tolerances.
final class FormulaFunctionTests: XCTestCase {
    nonisolated(unsafe) static let references: [String: Any] = {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("formula-functions.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }()

    /// The formula as fedmix writes it (R needs factor() inside relevel for a text column; fedmix accepts both).
    func check(_ key: String, formula: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = Self.references[key] as! [String: Any]
        let text = formula ?? (ref["formula"] as! String)
        let federation = inProcessFederation(files: try Fixtures.siteFiles("exam"))
        let descriptions = try Analysis.describe(federation, dataset: "data")
        let spec = try Analysis.model(federation, dataset: "data", formula: text, descriptions: descriptions, options: FitOptions())
        XCTAssertEqual(spec.fixed.map(\.name), ref["names"] as! [String], file: file, line: line)
        // Columns on the pooled rows, as each site evaluates them.
        let table = try CSVReader.read(path: Fixtures.pooledFile("exam").path)
        var columns: [String: DataTable.Column] = [:]
        for c in table.columns { columns[c.name] = c }
        let rows = (Self.references["rows"] as! [Int]).map { $0 - 1 }
        let evaluator = ExpressionEvaluator(columns: columns, rows: rows)
        var worst = 0.0
        for (j, (column, expected)) in zip(spec.fixed, ref["columns"] as! [[Double]]).enumerated() {
            let mine = try evaluator.evaluate(column.expr, name: column.name)
            for (a, b) in zip(mine, expected) { worst = max(worst, abs(a - b)) }
            XCTAssertEqual(mine.count, expected.count, "column \(j)", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(worst, 1e-12, "\(key): largest column difference from R's model.matrix", file: file, line: line)
        // The fit through the agents.
        let r = try Analysis.fit(federation, dataset: "data", formula: text)
        XCTAssertEqual(r.nObs, ref["n_obs"] as! Int, file: file, line: line)
        XCTAssertEqual(r.objective, ref["objective"] as! Double, accuracy: 1e-6, "\(key): REML criterion", file: file, line: line)
        var fitWorst = 0.0
        func rel(_ a: Double, _ b: Double, floor: Double = 1e-8) -> Double { abs(a - b) / max(abs(b), floor) }
        for (k, f) in r.fixedEffects.enumerated() {
            fitWorst = max(fitWorst, rel(f.estimate, (ref["estimates"] as! [Double])[k], floor: f.stdError),
                           rel(f.stdError, (ref["std_errors"] as! [Double])[k]))
        }
        for (a, b) in zip(r.theta, ref["theta"] as! [Double]) { fitWorst = max(fitWorst, rel(a, b)) }
        fitWorst = max(fitWorst, rel(r.sigma, ref["sigma"] as! Double))
        XCTAssertLessThanOrEqual(fitWorst, 1e-6, "\(key): largest relative difference from lmer", file: file, line: line)
        print("formula functions \(key): columns \(worst), fit \(fitWorst), criterion \(abs(r.objective - (ref["objective"] as! Double)))")
    }

    func testScale() throws { try check("scale") }
    func testPoly() throws { try check("poly") }
    func testSmoothFunctions() throws { try check("smooth") }
    func testComparison() throws { try check("comparison") }
    func testComparisonInteraction() throws { try check("comparison_and") }
    func testCut() throws { try check("cut") }
    /// ns() with its knots written out: R's basis (B-splines projected by
    /// LINPACK's QR) rewritten in truncated-power form; rows beyond the
    /// boundary knots exercise the linear tails.
    func testNaturalSpline() throws { try check("spline") }
    /// ns() without written-out knots is refused with the reason and an example.
    func testNaturalSplineNeedsKnots() throws {
        for (formula, words) in [("y ~ ns(x, df = 3) + (1 | site)", "Boundary.knots"),
                                 ("y ~ ns(x, df = 3, Boundary.knots = c(0, 10)) + (1 | site)", "quantiles"),
                                 ("y ~ ns(x, knots = c(5, 20), Boundary.knots = c(0, 10)) + (1 | site)", "strictly between"),
                                 ("y ~ ns(x, df = 4, knots = 5, Boundary.knots = c(0, 10)) + (1 | site)", "does not match"),
                                 ("y ~ log(ns(x, knots = 5, Boundary.knots = c(0, 10))) + (1 | site)", "term of its own")] {
            let variables = ["y": VariableInfo(name: "y", kind: .numeric), "x": VariableInfo(name: "x", kind: .numeric)]
            XCTAssertThrowsError(try Formula.parse(formula).resolve(variables: variables, family: .gaussian, link: .identity), formula) {
                XCTAssertTrue("\($0)".contains(words), "\(formula): \($0)")
            }
        }
    }
    func testRelevelAndAsFactor() throws {
        try check("relevel")
        // relevel of a text variable directly (R needs factor() around it).
        XCTAssertNoThrow(try Formula.parse("normexam ~ relevel(schgend, ref = \"girls\") + (1 | site)"))
    }
}

extension ExecutableTests {
    /// `fedmix local FILE.csv --split-by COLUMN`: the pooled exam rows split
    /// into its 65 schools on the fly, over agents on loopback TLS; the fit
    /// with scale() equals R's on the pooled rows, and the sites are named by
    /// the values.
    func localSplitBy() throws {
        let pooled = Fixtures.pooledFile("exam").path
        let ref = FormulaFunctionTests.references["scale"] as! [String: Any]
        let fit = try jsonFit(["local", pooled, "--split-by", "site", "--formula", ref["formula"] as! String])
        XCTAssertEqual(fit["n_sites"] as? Int, 65)
        XCTAssertEqual(fit["objective"] as! Double, ref["objective"] as! Double, accuracy: 1e-6)
        for (mine, theirs) in zip(Self.estimates(fit), ref["estimates"] as! [Double]) { XCTAssertEqual(mine, theirs, accuracy: 1e-6) }
        // Split by another column: two sites, "F" and "M", in-process.
        let bySex = try jsonFit(["local", pooled, "--split-by", "sex", "--in-process", "--formula", "normexam ~ standLRT + (1 | site)"])
        XCTAssertEqual(bySex["n_sites"] as? Int, 2)
        XCTAssertEqual(bySex["n_obs"] as? Int, 4059)
        try fedmixUsageError(["local", pooled, "--split-by", "school", "--formula", "normexam ~ 1 + (1 | site)"], "--split-by school: the file has no column school")
        try fedmixUsageError(["local", pooled, pooled, "--split-by", "site", "--formula", "normexam ~ 1 + (1 | site)"], "give one file")
    }
}

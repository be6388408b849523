import XCTest
import Coordinator
import Protocol

/// Every fit records the optimizer's path; the report draws it.
final class ConvergenceTraceTests: XCTestCase {
    func testTraceEndsAtTheOptimumAndTheReportDrawsIt() throws {
        let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("sleepstudy")), dataset: "data",
                                 formula: "Reaction ~ Days + (Days | Subject)")
        let trace = try XCTUnwrap(r.trace)
        XCTAssertGreaterThan(trace.count, 2)
        XCTAssertEqual(trace.map(\.iteration), Array(1...trace.count), "one start: iterations 1, 2, …")
        // Newton steps never go uphill, and the last point is the optimum reported.
        for (a, b) in zip(trace, trace.dropFirst()) { XCTAssertLessThanOrEqual(b.objective, a.objective) }
        XCTAssertEqual(trace.last!.objective, r.objective, accuracy: 1e-9 * abs(r.objective))
        // In the JSON, with snake_case keys.
        let json = try JSONSerialization.jsonObject(with: Data(try r.json().utf8)) as! [String: Any]
        let points = try XCTUnwrap(json["trace"] as? [[String: Any]])
        XCTAssertEqual(points.count, trace.count)
        XCTAssertNotNil(points.last?["newton_decrement"])
        let html = HTMLReport.html(r)
        XCTAssertTrue(html.contains("<h2>Convergence</h2>"))
        XCTAssertTrue(html.contains("aria-label=\"objective by iteration\""))
        XCTAssertEqual(html.components(separatedBy: "<title>iteration ").count - 1, trace.count)
    }
}

/// The row filter a fit used is a structured field of the result.
final class FilterFieldTests: XCTestCase {
    func testFilterIsTextAndExpressionInTheJSON() throws {
        var options = FitOptions()
        options.filter = "Days >= 2"
        let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("sleepstudy")), dataset: "data",
                                 formula: "Reaction ~ Days + (1 | Subject)", options: options)
        XCTAssertEqual(r.nObs, 144)
        let f = try XCTUnwrap(r.filter)
        XCTAssertEqual(f.text, "Days >= 2")
        XCTAssertEqual(f.variables, ["Days"])
        let json = try JSONSerialization.jsonObject(with: Data(try r.json().utf8)) as! [String: Any]
        let field = try XCTUnwrap(json["filter"] as? [String: Any])
        XCTAssertEqual(field["text"] as? String, "Days >= 2")
        XCTAssertNotNil(field["expression"] as? [String: Any])
        // Without a filter the field is absent.
        let all = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("sleepstudy")), dataset: "data",
                                   formula: "Reaction ~ Days + (1 | Subject)")
        XCTAssertNil(all.filter)
        XCTAssertFalse(try all.json().contains("\"filter\""))
    }
}

import XCTest
import Foundation
import Protocol
@testable import SiteAgent

/// A numeric column with a few unparsable cells is read as text; `check`
/// warns, naming the column and the line but never the value, and
/// `describe` lists none of its values (its rare values are exactly the
/// extremes and typos that identify a patient).
extension AgentCheckTests {
    func testMostlyNumericColumnWithUnparsableCellsIsAWarningWithoutValues() throws {
        var csv = "patient,site,age,sbp,ward\n"
        for i in 1...12 { csv += "p\(i),hospital-a,\(i == 9 ? "1e400" : String(40 + i)),\(i == 11 ? "3,5" : String(120 + i)),w\(i % 3)\n" }
        csv = csv.replacingOccurrences(of: "3,5", with: "\"3,5\"")
        try csv.write(toFile: dir + "/registry.csv", atomically: true, encoding: .utf8)
        let report = try check(goodConfig())
        let warnings = report.warnings.filter { $0.check.hasPrefix("dataset registry column") }
        XCTAssertEqual(warnings.map(\.check).sorted(), ["dataset registry column age", "dataset registry column sbp"], report.results.map(\.line).joined(separator: "\n"))
        let age = try XCTUnwrap(warnings.first { $0.check.hasSuffix("age") })
        XCTAssertTrue(age.detail.contains("data row 9, line 10"), age.detail)
        XCTAssertFalse(age.detail.contains("1e400"), "never the value: \(age.detail)")
        XCTAssertTrue(age.fix?.contains("types") ?? false)
        for w in warnings { XCTAssertFalse(w.detail.contains("3,5") || w.detail.contains("1e400"), w.detail) }
        XCTAssertTrue(report.passed, "a warning, not a failure")

        // describe lists no value of such a column.
        let service = SiteService(site: "hospital-a", datasets: ["r": .csv(path: dir + "/registry.csv", types: [:])])
        guard case .described(let d) = service.handle(.describe(DescribeRequest(dataset: "r"))) else { return XCTFail("no description") }
        let described = try XCTUnwrap(d.variables.first { $0.name == "age" })
        XCTAssertEqual(described.type, .text)
        XCTAssertNil(described.levels)
    }
}

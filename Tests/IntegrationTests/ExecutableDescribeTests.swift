import Foundation
import XCTest
import Coordinator
import Protocol

/// `fedmix describe` through the built executable on local agents
/// (min_rows 10, min_cell 5): numeric summaries in the JSON, a labelled
/// table with pooled moments in the text.
extension ExecutableTests {
    func describeNumericSummaries() throws {
        let json = try fedmix(["describe"] + (try remote) + ["--format", "json"])
        XCTAssertEqual(json.status, 0, json.err)
        let sites = try JSONDecoder().decode([SiteDescription].self, from: Data(json.out.utf8))
        XCTAssertEqual(sites.map(\.site), ["central", "north", "south"])
        for key in ["\"min\"", "\"max\"", "minimum", "maximum"] { XCTAssertFalse(json.out.contains(key), key) }
        // lab is missing from day 8, 7 and 5 on: 48, 42 and 30 values, each ≥ min_rows.
        XCTAssertEqual(sites.map { s in s.variables.first { $0.name == "lab" }?.nonMissing }, [.exact(48), .exact(42), .exact(30)])
        for s in sites {
            for v in s.variables where v.type == .numeric { XCTAssertNotNil(v.mean, "\(s.site) \(v.name)"); XCTAssertNotNil(v.sd) }
            for v in s.variables where v.type == .text { XCTAssertNil(v.mean); XCTAssertNil(v.nonMissing) }
        }
        // Pooled moments from the sites' n, mean, SD equal the pooled rows' (from the CSV files).
        let columns = try DescribeSummaryTests.numericColumns(try data().files.map { URL(fileURLWithPath: $0) })
        for variable in ["Reaction", "Days", "lab", "w"] {
            let values = try XCTUnwrap(columns[variable], variable)
            let p = try XCTUnwrap(DescribeReport.pooledMoments(variable, sites), variable)
            let n = Double(values.count), mean = values.reduce(0, +) / n
            var ss = 0.0
            for x in values { ss += (x - mean) * (x - mean) }
            XCTAssertEqual(p.n, values.count, variable)
            XCTAssertEqual(p.mean, mean, accuracy: 1e-12 * max(1, abs(mean)), variable)
            XCTAssertEqual(p.sd, (ss / (n - 1)).squareRoot(), accuracy: 1e-12 * max(1, abs(mean)), variable)
        }

        let text = try fedmix(["describe"] + (try remote))
        XCTAssertEqual(text.status, 0, text.err)
        let lines = text.out.split(separator: "\n").map(String.init)
        let header = try XCTUnwrap(lines.first { $0.hasPrefix("site ") }, text.out)
        XCTAssertEqual(header.split(separator: " ").map(String.init), ["site", "variable", "type", "n", "missing", "mean", "sd", "levels"])
        let lab = try XCTUnwrap(DescribeReport.pooledMoments("lab", sites))
        let pooled = try XCTUnwrap(lines.first { $0.hasPrefix("pooled") && $0.contains(" lab ") }, text.out)
        XCTAssertEqual(pooled.split(separator: " ").map(String.init),
                       ["pooled", "lab", "numeric", "120", "60", DescribeReport.number(lab.mean), DescribeReport.number(lab.sd)])
        XCTAssertTrue(lines.contains { $0.hasPrefix("south") && $0.contains(" lab ") && $0.contains("30 (50%)") }, text.out)
        XCTAssertTrue(text.out.contains("no site sends a minimum or maximum"), text.out)
        // Asked again: the same answer (the moments add nothing the second time).
        XCTAssertEqual(try fedmix(["describe"] + (try remote)).out, text.out)
    }
}

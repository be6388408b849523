import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent

/// A row filter (`--filter`) gives the fit of the rows it selects: the
/// same as the fit of CSV files holding only those rows.
final class FilterTests: XCTestCase {
    func testFilteredFitEqualsTheFitOfTheFilteredRows() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-filter-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        // The same rows written out: Days >= 2 and Subject not 308.
        var filtered: [URL] = []
        for f in files {
            let lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
            let header = lines[0].split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            let days = header.firstIndex(of: "Days")!, subject = header.firstIndex(of: "Subject")!
            let kept = lines.dropFirst().filter { l in
                let c = l.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
                return Double(c[days])! >= 2 && c[subject] != "308"
            }
            let url = directory.appendingPathComponent(f.lastPathComponent)
            try ([lines[0]] + kept).joined(separator: "\n").appending("\n").write(to: url, atomically: true, encoding: .utf8)
            filtered.append(url)
        }
        let formula = "Reaction ~ Days + (Days | Subject)"
        var options = FitOptions()
        options.filter = "Days >= 2 & Subject != 308"
        let withFilter = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options)
        let onFilteredRows = try Analysis.fit(inProcessFederation(files: filtered), dataset: "data", formula: formula)
        assertSameFit(withFilter, onFilteredRows, tol: 1e-10, "sleepstudy, Days >= 2 & Subject != 308")
        XCTAssertEqual(withFilter.nObs, 180 - 18 * 2 - 8)
        XCTAssertTrue(withFilter.messages.contains("rows at each site filtered by: Days >= 2 & Subject != 308"), "\(withFilter.messages)")
    }
}

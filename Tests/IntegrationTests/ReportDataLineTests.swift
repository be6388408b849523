import XCTest
import Coordinator
import Protocol

/// The text summary's "Data:" line, where lme4 names the data frame: the
/// sites the fit used, after the formula (long lists are shortened).
final class ReportDataLineTests: XCTestCase {
    func testDataLineNamesTheSites() throws {
        var r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("sleepstudy")), dataset: "data",
                                 formula: "Reaction ~ Days + (Days | Subject)")
        let lines = Report.text(r).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines[1], "Formula: Reaction ~ Days + (Days | Subject)")
        let names = r.sites.map(\.site)
        XCTAssertEqual(names.count, 3)
        XCTAssertEqual(lines[2], "   Data: 3 sites (\(names.joined(separator: ", ")))")
        XCTAssertEqual(lines[3], "")

        // Twelve sites: the first eight and how many more.
        let template = r.sites[0]
        r.sites = (1...12).map { i in var s = template; s.site = "h\(i)"; return s }
        let long = Report.text(r).split(separator: "\n")[2]
        XCTAssertEqual(long, "   Data: 12 sites (h1, h2, h3, h4, h5, h6, h7, h8, … (4 more))")
    }
}

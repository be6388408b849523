import Foundation
import XCTest
import Coordinator
#if canImport(FoundationXML)
import FoundationXML
#endif

/// `--report FILE.html` through the built executable: the page is
/// well-formed, self-contained, escapes what sites name, and prints the
/// numbers of the same result the JSON is written from.
extension ExecutableTests {
    static let siteFormula = "Reaction ~ Days + lab + (1 | site)"

    /// The test data's sites, with north's name (file and `site` column) replaced by one HTML would misread.
    func oddlyNamedSites(_ dir: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return try data().files.map { path in
            let site = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            guard site == "north" else { return path }
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let renamed = text.replacingOccurrences(of: ",\"north\",", with: ",\"<b>&\"\"\",")
            XCTAssertNotEqual(renamed, text, "the site column was renamed")
            let out = dir + "/<b>&\".csv"
            try renamed.write(toFile: out, atomically: true, encoding: .utf8)
            return out
        }
    }

    func localReportWritesTheHTMLPage() throws {
        let dir = try scratch("report")
        let files = try oddlyNamedSites(dir + "/sites")
        let r = try fedmix(["local"] + files + ["--formula", Self.siteFormula, "--in-process", "--format", "json",
                                               "--output", dir + "/fit.json", "--report", dir + "/fit.html"])
        XCTAssertEqual(r.out, "")
        let result = try JSONDecoder().decode(FitResult.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/fit.json")))
        let html = try String(contentsOfFile: dir + "/fit.html", encoding: .utf8)
        try checkReport(html, result)
        XCTAssertEqual(result.sites.map(\.site).filter { $0 == "<b>&\"" }.count, 1)
        XCTAssertTrue(html.contains("&lt;b&gt;&amp;&quot;"), "the site name escaped")
        XCTAssertFalse(html.contains("<b>"), "no site name unescaped")
        // Missing values of lab (exact counts here) and the site effects of the same fit.
        for s in result.sites {
            for v in result.variables { XCTAssertTrue(html.contains(HTMLReport.escape(s.site) + ", " + v + ": " + s.missing[v]!.text + " missing"), "\(s.site) \(v)") }
            let b = try XCTUnwrap(s.effects["(Intercept)"]), own = try XCTUnwrap(s.ownEffects["(Intercept)"])
            XCTAssertTrue(html.contains(HTMLReport.number(b)), "site effect \(b)")
            XCTAssertTrue(html.contains("\(HTMLReport.number(own)) → \(HTMLReport.number(b)) (n = \(s.nUsed))"), "shrinkage of \(s.site)")
            XCTAssertTrue(html.contains("\(HTMLReport.escape(s.site)): \(s.bytesSent) bytes sent, \(s.bytesReceived) bytes received"))
        }
        XCTAssertTrue(html.contains("Caterpillar plot of (Intercept) by site"))
        // Text output and the page together; the text is the same as without --report (but for the elapsed time).
        func timeless(_ s: String) -> [Substring] { s.split(separator: "\n").filter { !$0.contains(" received, ") } }
        let text = try fedmix(["local"] + files + ["--formula", Self.siteFormula, "--in-process", "--report", dir + "/again.html"])
        XCTAssertEqual(timeless(text.out), timeless(try fedmix(["local"] + files + ["--formula", Self.siteFormula, "--in-process"]).out))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/again.html"))
    }

    /// A factor crossed with the sites (Penicillin's sample, plate as the
    /// site) gets its own caterpillar plot with every level's mode and
    /// interval; beyond `crossedLevelsDrawn` levels only the extremes are drawn, and the page says so.
    func localReportDrawsCrossedEffects() throws {
        let dir = try scratch("crossed-report")
        let files = try CrossedFactorTests.files("penicillin").map(\.path)
        try fedmix(["local"] + files + ["--formula", "diameter ~ 1 + (1 | site) + (1 | sample)", "--in-process", "--format", "json",
                                        "--output", dir + "/fit.json", "--report", dir + "/fit.html"])
        let result = try JSONDecoder().decode(FitResult.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/fit.json")))
        let html = try String(contentsOfFile: dir + "/fit.html", encoding: .utf8)
        try checkReport(html, result)
        let crossed = try XCTUnwrap(result.crossedEffects)
        XCTAssertEqual(crossed.count, 6, "Penicillin's six samples")
        XCTAssertTrue(html.contains("Caterpillar plot of (Intercept) by sample, a factor crossed with the sites"))
        for c in crossed {
            let b = try XCTUnwrap(c.effects["(Intercept)"]), sd = try XCTUnwrap(c.condSD["(Intercept)"])
            XCTAssertTrue(html.contains("<title>\(c.level): \(HTMLReport.number(b)) [\(HTMLReport.number(b - 1.96 * sd)), \(HTMLReport.number(b + 1.96 * sd))]</title>"), "level \(c.level)")
        }
        XCTAssertFalse(html.contains("levels: the 30 lowest"), "six levels are all drawn")
        // 200 levels: the 30 lowest and 30 highest, in order.
        var many = result
        many.crossedEffects = (0..<200).map { k in
            FitResult.CrossedEffect(group: "surgeon", level: "s\(k)", effects: ["(Intercept)": Double(k) - 99.5], condSD: ["(Intercept)": 0.5])
        }
        let page = HTMLReport.html(many)
        try checkWellFormed(page)
        XCTAssertTrue(page.contains("surgeon has 200 levels: the 30 lowest and 30 highest are drawn"))
        let drawn = (0..<200).filter { page.contains("<title>s\($0): ") }
        XCTAssertEqual(drawn, Array(0..<30) + Array(170..<200))
    }

    /// Over agents with disclosure rules: suppressed counts are marked; --dry-run refuses --report.
    func fitReportOverAgents() throws {
        let dir = try scratch("fit-report")
        try fedmix(["fit"] + (try remote) + ["--formula", Self.siteFormula, "--format", "json", "--output", dir + "/fit.json",
                                             "--report", dir + "/fit.html"])
        var result = try JSONDecoder().decode(FitResult.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/fit.json")))
        try checkReport(try String(contentsOfFile: dir + "/fit.html", encoding: .utf8), result)
        try fedmixUsageError(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--dry-run", "--report", dir + "/x.html"],
                             "--dry-run fits nothing; --report writes a fit's page")
        // A suppressed count (as a site with min_cell sends it) is drawn hatched with its text.
        result.sites[0].missing["lab"] = .suppressed("<5")
        let page = HTMLReport.html(result)
        try checkWellFormed(page)
        XCTAssertTrue(page.contains("fill=\"url(#hatch)\"/><text class=\"cell supp\" x="), "a hatched cell")
        XCTAssertTrue(page.contains(">&lt;5</text>"), "the suppressed count's text, escaped")
    }

    func compareReportShowsEveryModel() throws {
        let dir = try scratch("compare-report")
        try fedmix(["compare"] + (try data().files) + ["--formula", "Reaction ~ Days + (1 | Subject)", "--formula", Self.sleepstudy,
                                                       "--in-process", "--format", "json", "--output", dir + "/c.json", "--report", dir + "/c.html"])
        let c = try JSONDecoder().decode(Comparison.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/c.json")))
        let html = try String(contentsOfFile: dir + "/c.html", encoding: .utf8)
        XCTAssertEqual(c.models.count, 2)
        for (name, model) in zip(c.names, c.models) {
            try checkReport(html, model)
            XCTAssertTrue(html.contains("<h2 class=\"fit\">\(name)</h2>"), name)
            XCTAssertTrue(html.contains("Days — \(name)"), "the overview's forest plot row of \(name)")
        }
        XCTAssertTrue(html.contains(HTMLReport.escape(ComparisonReport.text(c)).split(separator: "\n")[3]), "the anova text")
    }

    func sensitivityReportShowsEveryAnalysis() throws {
        let dir = try scratch("sensitivity-report")
        try fedmix(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--in-process",
                                                           "--format", "json", "--output", dir + "/s.json", "--report", dir + "/s.html"])
        struct Entry: Decodable { var analysis: String; var result: FitResult }
        let entries = try JSONDecoder().decode([Entry].self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/s.json")))
        let html = try String(contentsOfFile: dir + "/s.html", encoding: .utf8)
        XCTAssertEqual(entries.count, 2)
        for e in entries {
            try checkReport(html, e.result)
            XCTAssertTrue(html.contains("<h2 class=\"fit\">\(HTMLReport.escape(e.analysis))</h2>"), e.analysis)
        }
        XCTAssertTrue(html.contains("missing(lab) — "), "the indicator's row in the overview")
    }

    /// Well-formed, self-contained, with the fixed effects and summary figures of `result`.
    func checkReport(_ html: String, _ r: FitResult, file: StaticString = #filePath, line: UInt = #line) throws {
        try checkWellFormed(html, file: file, line: line)
        XCTAssertTrue(html.contains(HTMLReport.escape(r.model.formula)), file: file, line: line)
        for f in r.fixedEffects {
            XCTAssertTrue(html.contains("<td class=\"l\">\(HTMLReport.escape(f.name))</td><td>\(HTMLReport.number(f.estimate))</td><td>\(HTMLReport.number(f.stdError))</td><td>[\(HTMLReport.number(f.ciLower)), \(HTMLReport.number(f.ciUpper))]</td>"),
                          "fixed effect \(f.name)", file: file, line: line)
        }
        for (g, icc) in r.icc { XCTAssertTrue(html.contains("<td>\(HTMLReport.number(icc))</td>"), "ICC of \(g)", file: file, line: line) }
        XCTAssertTrue(html.contains("\(r.nObs) rows used at \(r.nSites) sites"), file: file, line: line)
        XCTAssertTrue(html.contains(HTMLReport.number(r.loglik)), file: file, line: line)
    }

    func checkWellFormed(_ html: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>\n<html"), file: file, line: line)
        XCTAssertFalse(html.lowercased().contains("http"), "no external reference", file: file, line: line)
        XCTAssertFalse(html.lowercased().contains("<script"), "no script", file: file, line: line)
        XCTAssertFalse(html.contains("url(") && html.replacingOccurrences(of: "url(#hatch)", with: "").contains("url("), "only in-page url()", file: file, line: line)
        XCTAssertFalse(html.contains("<img") || html.contains("<link") || html.contains("@import"), file: file, line: line)
        XCTAssertEqual(html.components(separatedBy: "<svg ").count, html.components(separatedBy: "</svg>").count, "every <svg> closed", file: file, line: line)
        XCTAssertGreaterThanOrEqual(html.components(separatedBy: "<svg ").count - 1, 4, "forest, caterpillar, shrinkage, heat map, traffic", file: file, line: line)
        #if canImport(FoundationXML)
        let doc = try XMLDocument(xmlString: html, options: [])
        XCTAssertEqual(doc.rootElement()?.name, "html", file: file, line: line)
        XCTAssertEqual(try doc.nodes(forXPath: "//svg").count, html.components(separatedBy: "<svg ").count - 1, file: file, line: line)
        #endif
    }
}

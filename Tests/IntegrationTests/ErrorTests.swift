import XCTest
import Foundation
import Coordinator
import SiteAgent
import Protocol

/// What the analyst sees when a fit cannot be made: through an in-process
/// federation of site agents reading CSV files, each mistake surfaces as a
/// specific error (formula, catalog or site failure) that names the formula
/// position, variable, site, file or rule, and says what to do.
final class ErrorTests: XCTestCase {

    // MARK: Sites written to a temporary folder

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-errors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    typealias Column = (name: String, value: (Int) -> String)

    /// The usual columns of one site: site, y, x, sex, ward (15 rows).
    static func standardColumns(_ site: String, index: Int) -> [Column] {
        [("site", { _ in site }),
         ("y", { r in String(10 + 0.5 * Double(r) + Double(index) + sin(Double(r * 7 + index * 3))) }),
         ("x", { r in String(r + 1) }),
         ("sex", { r in r % 2 == 0 ? "F" : "M" }),
         ("ward", { r in "w\(r % 3 + 1)" })]
    }

    /// Writes `site.csv` with `rows` rows of `columns`.
    @discardableResult
    func writeSite(_ dir: URL, _ site: String, _ columns: [Column], rows: Int = 15) throws -> URL {
        var lines = [columns.map(\.name).joined(separator: ",")]
        for r in 0..<rows { lines.append(columns.map { $0.value(r) }.joined(separator: ",")) }
        let url = dir.appendingPathComponent("\(site).csv")
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// Sites A, B, C with the standard columns, each changed by `change`.
    func standardSites(_ dir: URL, _ change: (String, inout [Column]) -> Void = { _, _ in }) throws -> [URL] {
        try ["A", "B", "C"].enumerated().map { i, site in
            var cols = Self.standardColumns(site, index: i)
            change(site, &cols)
            return try writeSite(dir, site, cols)
        }
    }

    /// A federation whose agents declare column types, as a configuration's "types" does.
    func federation(_ files: [URL], types: [String: ColumnType]) -> Federation {
        Federation(channels: files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: types)], policy: .off)
            return InProcessChannel(site: site) { service.handle(line: $0) }
        })
    }

    /// Fits `formula`, expecting an error of type `E`.
    func fitError<E: Error>(_ fed: Federation, _ formula: String, _ type: E.Type,
                            file: StaticString = #filePath, line: UInt = #line) -> E? {
        do {
            let r = try Analysis.fit(fed, dataset: "data", formula: formula)
            XCTFail("\(formula) was fitted (objective \(r.objective)) where \(E.self) was expected", file: file, line: line)
        } catch let e as E {
            return e
        } catch {
            XCTFail("\(formula): expected \(E.self), got \(Swift.type(of: error)): \(error)", file: file, line: line)
        }
        return nil
    }

    func offset(of needle: String, in text: String, occurrence: Int = 1) -> Int {
        var from = text.startIndex
        var found = text.startIndex
        for _ in 0..<occurrence {
            let r = text.range(of: needle, range: from..<text.endIndex)!
            found = r.lowerBound
            from = r.upperBound
        }
        return text.distance(from: text.startIndex, to: found)
    }

    // MARK: Malformed formulas

    /// Fits a malformed formula and checks the error's position, the
    /// offending text, the message and the caret line under the formula.
    func assertFormulaError(_ formula: String, position: Int, term: String, message: String,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let fed = inProcessFederation(files: try standardSites(try temporaryDirectory()))
        guard let e = fitError(fed, formula, FormulaError.self, file: file, line: line) else { return }
        XCTAssertEqual(e.position, position, "position in \(formula)", file: file, line: line)
        XCTAssertEqual(e.term, term, file: file, line: line)
        XCTAssertEqual(e.message, message, file: file, line: line)
        XCTAssertEqual(e.formula, formula, file: file, line: line)
        let lines = e.description.components(separatedBy: "\n")
        XCTAssertEqual(lines.first, "formula error at position \(position): \(message)", file: file, line: line)
        XCTAssertEqual(lines.count, 3, e.description, file: file, line: line)
        if lines.count == 3 {
            XCTAssertEqual(lines[1], "  " + formula, file: file, line: line)
            let caret = lines[2].dropFirst(2)
            XCTAssertEqual(caret.prefix { $0 == " " }.count, position, "the caret points at the problem", file: file, line: line)
            XCTAssertTrue(caret.hasSuffix("^"), e.description, file: file, line: line)
        }
    }

    func testFormulaWithoutTildeIsRefusedAtItsStart() throws {
        try assertFormulaError("y x + (1 | site)", position: 0, term: "y x + (1 | site)",
                               message: "the formula has no '~'; write response ~ terms, e.g. y ~ x + (1 | site)")
    }

    func testUnclosedParenthesisIsPointedAt() throws {
        let f = "y ~ x + (1 | site"
        try assertFormulaError(f, position: offset(of: "(", in: f), term: "(",
                               message: "unbalanced parentheses: the '(' here is never closed; add the matching ')'")
    }

    func testUnopenedParenthesisIsPointedAt() throws {
        let f = "y ~ x + (1 | site))"
        try assertFormulaError(f, position: offset(of: ")", in: f, occurrence: 2), term: ")",
                               message: "unbalanced parentheses: this ')' has no matching '('; remove it or add the '(' it closes")
    }

    func testUnknownFunctionIsNamedWithTheSupportedOnes() throws {
        let f = "y ~ x + mean(x) + (1 | site)"
        try assertFormulaError(f, position: offset(of: "mean", in: f), term: "mean",
                               message: "function mean is not supported; supported: factor, as.factor, relevel, I, log, log1p, exp, sqrt, abs, pmin, pmax, scale, poly, ns, cut, offset, cbind, missing")
    }

    func testBarOutsideParenthesesSaysToAddThem() throws {
        let f = "y ~ x + 1 | site"
        try assertFormulaError(f, position: offset(of: "|", in: f), term: "x + 1 | site",
                               message: "a random-effects term must be in parentheses: write (x + 1 | site); '|' cannot be used in the fixed part")
    }

    func testTrailingOperatorIsPointedAt() throws {
        let f = "y ~ x + (1 | site) +"
        try assertFormulaError(f, position: offset(of: "+", in: f, occurrence: 2), term: "+",
                               message: "the formula ends with the operator '+'; add a term after it or remove it")
        let g = "y ~ x + (1 | site) *"
        try assertFormulaError(g, position: offset(of: "*", in: g), term: "*",
                               message: "the formula ends with the operator '*'; add a term after it or remove it")
        let h = "y ~ x + : + (1 | site)"
        try assertFormulaError(h, position: offset(of: ":", in: h), term: ":",
                               message: "two operators in a row: ':' follows '+'; put a term between them or remove one")
    }

    func testTextVariableInArithmeticIsAFormulaError() throws {
        let f = "y ~ log(sex) + (1 | site)"
        try assertFormulaError(f, position: offset(of: "sex", in: f), term: "sex",
                               message: "sex is a text variable and cannot be used in arithmetic (in log(sex)); use it as a factor term (sex or factor(sex)), or recode it as a number at the sites")
    }

    // MARK: Variables

    func testUnknownVariableIsNamedWithTheKnownOnes() throws {
        let fed = inProcessFederation(files: try standardSites(try temporaryDirectory()))
        guard let e = fitError(fed, "y ~ weight + (1 | site)", CatalogError.self) else { return }
        XCTAssertEqual(e.message, "unknown variable \"weight\": no site has it (variables: sex, site, ward, x, y)")
    }

    func testVariablePresentAtSomeSitesOnlyNamesTheSitesWithoutIt() throws {
        let dir = try temporaryDirectory()
        var files = try standardSites(dir) { site, cols in
            if site != "B" { cols.append(("bmi", { r in String(22 + r % 5) })) }
        }
        files.append(try writeSite(dir, "D", Self.standardColumns("D", index: 3)))
        let fed = inProcessFederation(files: files)
        guard let e = fitError(fed, "y ~ x + bmi + (1 | site)", CatalogError.self) else { return }
        XCTAssertEqual(e.message, "variable \"bmi\" is missing at B, D; every site must provide the model's variables (or be left out of the fit)")
    }

    func testVariableNumericAtOneSiteAndTextAtAnotherNamesBoth() throws {
        let dir = try temporaryDirectory()
        let files = try standardSites(dir) { site, cols in
            if site == "B" { cols[2] = ("x", { r in r % 2 == 0 ? "high" : "low" }) }
        }
        let fed = inProcessFederation(files: files)
        guard let e = fitError(fed, "y ~ x + (1 | site)", CatalogError.self) else { return }
        XCTAssertEqual(e.message, "variable \"x\" is numeric at A, C but text at B; declare its type in the agents' configuration (\"types\") so that all sites agree")
        XCTAssertFalse(e.message.contains("high") || e.message.contains("low"), "no data values: \(e.message)")
    }

    // MARK: Grouping factors that cross sites

    /// `(1 | cask)` with casks a, b, c at every batch (site) is crossed with
    /// the sites: 3 shared groups, the fit of the pooled rows (here: all rows
    /// at one site, where the factor is local) to 1e-8.
    func testRecurringCodesWrittenPlainlyAreFittedCrossed() throws {
        let crossed = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("pastes")), dataset: "data",
                                       formula: "strength ~ 1 + (1 | cask)")
        XCTAssertEqual(crossed.nGroups, ["cask": 3])
        XCTAssertEqual(crossed.crossedEffects?.map(\.level), ["a", "b", "c"])
        let pooled = try Analysis.fit(inProcessFederation(files: [Fixtures.pooledFile("pastes")], siteColumn: nil), dataset: "data",
                                      formula: "strength ~ 1 + (1 | cask)")
        XCTAssertLessThanOrEqual(relativeError(crossed.objective, pooled.objective), 1e-8)
        XCTAssertLessThanOrEqual(relativeError(crossed.fixedEffects[0].stdError, pooled.fixedEffects[0].stdError), 1e-8)
    }

    func testNestedSpellingOfTheSameFactorFits() throws {
        let fed = inProcessFederation(files: try Fixtures.siteFiles("pastes"))
        let r = try Analysis.fit(fed, dataset: "data", formula: "strength ~ 1 + (1 | site:cask)")
        XCTAssertTrue(r.converged, r.messages.joined(separator: "; "))
        XCTAssertEqual(r.nObs, 60)
        XCTAssertEqual(r.nSites, 10)
        XCTAssertEqual(r.nGroups, ["site:cask": 30])
        XCTAssertEqual(r.fixedEffects.map(\.name), ["(Intercept)"])
        XCTAssertEqual(r.varianceComponents.map(\.group), ["site:cask", "Residual"])
        XCTAssertGreaterThan(r.varianceComponents[0].vcov, 0)
        // And the site-unique sample codes are site-local without saying so.
        let r2 = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("pastes")), dataset: "data",
                                  formula: "strength ~ 1 + (1 | sample)")
        XCTAssertEqual(r2.nGroups, ["sample": 30])
        XCTAssertEqual(r2.objective, r.objective, accuracy: 1e-8, "the same grouping under two spellings")
    }

    // MARK: Data problems at a site

    func testNonNumericValueInANumericColumnNamesFileLineAndColumnNotTheValue() throws {
        let dir = try temporaryDirectory()
        let files = try standardSites(dir) { site, cols in
            if site == "B" { cols[2] = ("x", { r in r == 2 ? "twelve-ish" : String(r + 1) }) }
        }
        let fed = federation(files, types: ["x": .numeric])
        guard let e = fitError(fed, "y ~ x + (1 | site)", SiteFailure.self) else { return }
        XCTAssertEqual(e.site, "B")
        XCTAssertEqual(e.code, "dataset_error")
        // The path, line and column stay in the agent's log (`fedmix-agent check` shows them).
        XCTAssertEqual(e.message, "the site's dataset \"data\" could not be read; the site's administrator can see why in the agent's log")
        XCTAssertFalse(e.message.contains(files[1].path), "no server paths: \(e.message)")
        XCTAssertFalse(e.message.contains("twelve"), "no data values: \(e.message)")
        XCTAssertTrue(e.description.contains("site \"B\""), e.description)
    }

    func testEmptySiteIsNamed() throws {
        let dir = try temporaryDirectory()
        var files = try standardSites(dir)
        let empty = dir.appendingPathComponent("E.csv")
        try "site,y,x,sex,ward\n".write(to: empty, atomically: true, encoding: .utf8)
        files.append(empty)
        let fed = inProcessFederation(files: files)
        guard let e = fitError(fed, "y ~ x + (1 | site)", SiteFailure.self) else { return }
        XCTAssertEqual(e.site, "E")
        XCTAssertEqual(e.code, "no_complete_rows")
        XCTAssertTrue(e.message.contains("site \"E\""), e.message)
        XCTAssertTrue(e.message.contains("none of its 0 rows"), e.message)
        XCTAssertTrue(e.message.contains("remove the site from the fit or fix its data"), e.message)
    }

    func testSiteFileHoldingAnotherSitesRowsIsRefused() throws {
        let dir = try temporaryDirectory()
        let files = try standardSites(dir) { site, cols in
            if site == "C" { cols[0] = ("site", { r in r < 4 ? "A" : "C" }) }
        }
        let fed = inProcessFederation(files: files)
        guard let e = fitError(fed, "y ~ x + (1 | site)", SiteFailure.self) else { return }
        XCTAssertEqual(e.site, "C")
        XCTAssertEqual(e.code, "site_column_mismatch")
        XCTAssertTrue(e.message.contains("4 row(s) have a value in column \"site\" other than this site's name \"C\""), e.message)
        XCTAssertTrue(e.message.contains("each site's data must hold only its own rows"), e.message)
    }

    func testSiteTooSmallForItsDisclosureRulesIsNamed() throws {
        let dir = try temporaryDirectory()
        let files = try standardSites(dir)
        let small = try writeSite(dir, "S", Self.standardColumns("S", index: 4), rows: 3)
        let fed = Federation(channels: (files + [small]).map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])],
                                      policy: site == "S" ? DisclosurePolicy() : .off)
            return InProcessChannel(site: site) { service.handle(line: $0) }
        })
        guard let e = fitError(fed, "y ~ x + (1 | site)", SiteFailure.self) else { return }
        XCTAssertEqual(e.site, "S")
        XCTAssertEqual(e.code, "disclosure_refused")
        XCTAssertTrue(e.message.contains("fewer rows than this site's minimum of 10"), e.message)
        XCTAssertTrue(e.message.contains("(rule min_rows)"), e.message)
        XCTAssertFalse(e.message.contains("3"), "a small count is not disclosed: \(e.message)")
    }

    /// Sanity: the sites the error tests start from do fit.
    func testTheStandardSitesFit() throws {
        let fed = inProcessFederation(files: try standardSites(try temporaryDirectory()))
        let r = try Analysis.fit(fed, dataset: "data", formula: "y ~ x + sex + (1 | site) + (1 | site:ward)")
        XCTAssertEqual(r.nObs, 45)
        XCTAssertEqual(r.fixedEffects.map(\.name), ["(Intercept)", "x", "sexM"])
        XCTAssertEqual(r.nGroups, ["site": 3, "site:ward": 9])
    }
}

// MARK: - Known bugs (these tests fail until the production code is fixed)

extension ErrorTests {
    /// The refusal of an interaction of recurring codes suggests the term
    /// the analyst can paste: `(1 | site:cask:sample)`, not a placeholder.
    func testCrossedGroupingSuggestsTheTermAsWritten() throws {
        let fed = inProcessFederation(files: try Fixtures.siteFiles("pastes"))
        guard let e = fitError(fed, "strength ~ 1 + (1 | cask:strength)", CatalogError.self) else { return }
        XCTAssertTrue(e.message.contains("(1 | site:cask:strength)"), e.message)
    }

    /// A column the model does not use cannot block the fit, whatever its
    /// type at each site (a free-text note that happens to be numeric at one site).
    func testUnusedVariableWithMixedTypesDoesNotBlockAFit() throws {
        let dir = try temporaryDirectory()
        let files = try standardSites(dir) { site, cols in
            cols.append(("note", { r in site == "B" ? "see chart \(r)" : String(r) }))
        }
        let fed = inProcessFederation(files: files)
        do {
            let r = try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | site)")
            XCTAssertEqual(r.nObs, 45)
        } catch {
            XCTFail("a fit not using \"note\" was refused: \(error)")
        }
    }

    /// What the analyst reads (`fedmix: error: \(error)`) names the failing site once.
    func testSiteFailureNamesTheSiteOnce() throws {
        let dir = try temporaryDirectory()
        var files = try standardSites(dir)
        let empty = dir.appendingPathComponent("E.csv")
        try "site,y,x,sex,ward\n".write(to: empty, atomically: true, encoding: .utf8)
        files.append(empty)
        guard let e = fitError(inProcessFederation(files: files), "y ~ x + (1 | site)", SiteFailure.self) else { return }
        let shown = String(describing: e)
        XCTAssertEqual(shown.components(separatedBy: "site \"E\"").count - 1, 1, shown)
    }
}

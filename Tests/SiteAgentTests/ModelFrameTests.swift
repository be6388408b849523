import XCTest
import Foundation
import Protocol
@testable import SiteAgent

/// A model evaluated on a site's rows, and the site service's answers: every
/// refusal names the variable, column or rule at fault and says what to do,
/// and no refusal or description discloses a data value or a small count.
final class ModelFrameTests: XCTestCase {

    // MARK: Helpers

    static let intercept = DesignColumn(name: "(Intercept)", expr: .number(1))
    static let siteIntercept = RandomTerm(name: "site", grouping: .site, columns: [intercept])

    static func num(_ name: String, _ values: [Double?]) -> DataTable.Column {
        DataTable.Column(name: name, data: .numeric(values))
    }
    static func text(_ name: String, _ values: [String?]) -> DataTable.Column {
        DataTable.Column(name: name, data: .text(values))
    }
    static func table(_ columns: DataTable.Column...) -> DataTable {
        DataTable(columns: columns, rowCount: columns.first?.count ?? 0)
    }

    /// `response ~ 1 + fixed + (1 | site)` unless other terms are given.
    static func spec(_ fixed: [DesignColumn] = [], response: Expr = .variable("y"),
                     terms: [RandomTerm] = [siteIntercept]) -> ModelSpec {
        ModelSpec(formula: "test model", response: .value(response), fixed: [intercept] + fixed, terms: terms)
    }

    /// Twelve rows of site "A": y, x, a text sex, a ward code, a site column.
    static func siteA() -> DataTable {
        table(num("y", [5.1, 4.8, 6.0, 5.5, 4.9, 6.2, 5.0, 5.8, 6.1, 4.7, 5.3, 5.6]),
              num("x", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
              text("sex", ["F", "M", "F", "F", "M", "F", "F", "M", "F", "F", "F", "F"]),
              text("ward", ["w1", "w1", "w2", "w2", "w3", "w3", "w1", "w2", "w3", "w1", "w2", "w3"]),
              num("income", [30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140]),
              text("site", Array(repeating: "A", count: 12)))
    }

    static func service(_ table: DataTable, site: String = "A", policy: DisclosurePolicy = .off,
                        allowed: [String]? = nil, denied: [String] = [], siteColumn: String? = "site") -> SiteService {
        SiteService(site: site, datasets: ["main": .table(table)], siteColumn: siteColumn, policy: policy,
                    allowedVariables: allowed, deniedVariables: denied)
    }

    func frameError(_ table: DataTable, _ spec: ModelSpec, file: StaticString = #filePath, line: UInt = #line) -> ModelFrameError? {
        do {
            let f = try SiteDesign(table: table, spec: spec, dataset: "main")
            XCTFail("built a frame (\(f.used) rows used) where an error was expected", file: file, line: line)
        } catch let e as ModelFrameError {
            return e
        } catch {
            XCTFail("expected a ModelFrameError, got \(type(of: error)): \(error)", file: file, line: line)
        }
        return nil
    }

    func prepare(_ service: SiteService, _ spec: ModelSpec, session: String = "s1") -> Reply {
        service.handle(.prepare(PrepareRequest(session: session, dataset: "main", model: spec)))
    }

    /// The error answer in `reply`, after checking its code.
    @discardableResult
    func errorReply(_ reply: Reply, code: ErrorCode, file: StaticString = #filePath, line: UInt = #line) -> String {
        guard case .error(let e) = reply else {
            XCTFail("expected an error answer \(code), got \(reply.typeName)", file: file, line: line)
            return ""
        }
        XCTAssertEqual(e.code, code, e.message, file: file, line: line)
        XCTAssertFalse(e.fatal, file: file, line: line)
        return e.message
    }

    func describe(_ service: SiteService, file: StaticString = #filePath, line: UInt = #line) -> SiteDescription? {
        let r = service.handle(.describe(DescribeRequest(dataset: "main")))
        guard case .described(let d) = r else {
            XCTFail("describe answered \(r)", file: file, line: line)
            return nil
        }
        return d
    }

    // MARK: Unknown variable

    func testUnknownVariableIsNamedWithTheDataset() {
        let e = frameError(Self.siteA(), Self.spec([DesignColumn(name: "age", expr: .variable("age"))]))
        XCTAssertEqual(e, .unknownVariable("age", dataset: "main"))
        XCTAssertEqual(e?.code, "unknown_variable")
        XCTAssertEqual(e?.description, "variable \"age\" is not in dataset \"main\" at this site; check the spelling or the site's allowed variables")

        let m = errorReply(prepare(Self.service(Self.siteA()), Self.spec([DesignColumn(name: "age", expr: .variable("age"))])),
                           code: "unknown_variable")
        XCTAssertEqual(m, "site \"A\": variable \"age\" is not in dataset \"main\" at this site; check the spelling or the site's allowed variables")
    }

    func testUnknownGroupingOrMissingIndicatorVariableIsNamed() {
        let grouped = Self.spec(terms: [RandomTerm(name: "site:bed", grouping: .withinSite(["ward", "bed"]), columns: [Self.intercept])])
        XCTAssertEqual(frameError(Self.siteA(), grouped), .unknownVariable("bed", dataset: "main"))
        let indicator = Self.spec([DesignColumn(name: "missing(bmi)", expr: .isMissing("bmi"))])
        XCTAssertEqual(frameError(Self.siteA(), indicator), .unknownVariable("bmi", dataset: "main"))
        let response = Self.spec(response: .unary(.log, .variable("sbp")))
        XCTAssertEqual(frameError(Self.siteA(), response), .unknownVariable("sbp", dataset: "main"))
    }

    // MARK: Text used as a number

    func testTextVariableUsedAsANumberIsRefusedWithAdvice() {
        let e = frameError(Self.siteA(), Self.spec([DesignColumn(name: "sex", expr: .variable("sex"))]))
        XCTAssertEqual(e, .notNumeric("sex"))
        XCTAssertEqual(e?.code, "wrong_variable_type")
        let d = e?.description ?? ""
        XCTAssertTrue(d.hasPrefix("variable \"sex\" is text here but the model uses it as a number"), d)
        XCTAssertTrue(d.contains("use it as a factor, or declare its type as numeric"), d)

        // Inside arithmetic, in the response and in a random-effects column too.
        XCTAssertEqual(frameError(Self.siteA(), Self.spec([DesignColumn(name: "log(sex)", expr: .unary(.log, .variable("sex")))])),
                       .notNumeric("sex"))
        XCTAssertEqual(frameError(Self.siteA(), Self.spec(response: .variable("ward"))), .notNumeric("ward"))
        let slope = RandomTerm(name: "site", grouping: .site, columns: [Self.intercept, DesignColumn(name: "ward", expr: .variable("ward"))])
        XCTAssertEqual(frameError(Self.siteA(), Self.spec(terms: [slope])), .notNumeric("ward"))

        let m = errorReply(prepare(Self.service(Self.siteA()), Self.spec([DesignColumn(name: "sex", expr: .variable("sex"))])),
                           code: "wrong_variable_type")
        XCTAssertTrue(m.hasPrefix("site \"A\": variable \"sex\" is text here"), m)
        XCTAssertFalse(m.contains("\"F\"") || m.contains("\"M\""), "no data values: \(m)")
    }

    func testATextVariableAsAnIndicatorIsFine() throws {
        let f = try SiteDesign(table: Self.siteA(), spec: Self.spec([DesignColumn(name: "sexM", expr: .indicator("sex", level: "M"))]),
                               dataset: "main")
        XCTAssertEqual(f.used, 12)
    }

    // MARK: Non-finite values

    func testNonFiniteValuesNameTheColumnButNotTheRows() {
        var t = Self.siteA()
        // Three rows cannot take a log (−2, −4, 0); a fourth negative row is
        // missing its response, so it is not used and not counted.
        t.columns[1] = Self.num("x", [1, -2, 3, -4, 5, 0, 7, 8, 9, 10, 11, -12])
        t.columns[0] = Self.num("y", [5.1, 4.8, 6.0, 5.5, 4.9, 6.2, 5.0, 5.8, 6.1, 4.7, 5.3, nil])
        let logX = DesignColumn(name: "log(x)", expr: .unary(.log, .variable("x")))
        let e = frameError(t, Self.spec([logX]))
        XCTAssertEqual(e, .nonFinite(column: "log(x)", rows: 3))
        XCTAssertEqual(e?.code, "non_finite_value")
        // The count stays at the site (two such errors could be subtracted to isolate rows).
        XCTAssertEqual(e?.description, "column \"log(x)\" is not finite in some rows (log or sqrt of a negative number, or a division by zero); transform the variable differently")

        let m = errorReply(prepare(Self.service(t), Self.spec([logX])), code: "non_finite_value")
        XCTAssertTrue(m.hasPrefix("site \"A\": column \"log(x)\" is not finite in some rows"), m)
        XCTAssertFalse(m.contains("-2") || m.contains("-4"), "no data values: \(m)")
    }

    func testOtherNonFiniteTransformsAreCaught() {
        var t = Self.siteA()
        t.columns[1] = Self.num("x", [1, -2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        XCTAssertEqual(frameError(t, Self.spec([DesignColumn(name: "sqrt(x)", expr: .unary(.sqrt, .variable("x")))])),
                       .nonFinite(column: "sqrt(x)", rows: 1))
        let ratio = DesignColumn(name: "I(y/(x - 3))", expr: .binary(.divide, .variable("y"), .binary(.subtract, .variable("x"), .number(3))))
        XCTAssertEqual(frameError(t, Self.spec([ratio])), .nonFinite(column: "I(y/(x - 3))", rows: 1))
        // exp overflows for x ≥ 8 (five rows).
        let big = DesignColumn(name: "exp(x * 100)", expr: .unary(.exp, .binary(.multiply, .variable("x"), .number(100))))
        XCTAssertEqual(frameError(t, Self.spec([big])), .nonFinite(column: "exp(x * 100)", rows: 5))
        // In a random-effects column, and in the response.
        let slope = RandomTerm(name: "site", grouping: .site, columns: [Self.intercept, DesignColumn(name: "log(x)", expr: .unary(.log, .variable("x")))])
        XCTAssertEqual(frameError(t, Self.spec(terms: [slope])), .nonFinite(column: "log(x)", rows: 1))
        XCTAssertEqual(frameError(t, Self.spec(response: .unary(.log, .binary(.subtract, .variable("y"), .number(5))))),
                       .nonFinite(column: "response", rows: 4))
    }

    // MARK: Site column

    func testSiteColumnThatDisagreesWithTheSiteIsRefusedWithoutTheValue() {
        var t = Self.siteA()
        t.columns[5] = Self.text("site", ["A", "A", "Zeta-Hospital", "A", nil, "A", "A", "Zeta-Hospital", "A", "A", "A", "Zeta-Hospital"])
        let s = Self.service(t)
        let expected = "site \"A\": 3 row(s) have a value in column \"site\" other than this site's name \"A\"; each site's data must hold only its own rows"
        let d = errorReply(s.handle(.describe(DescribeRequest(dataset: "main"))), code: "site_column_mismatch")
        XCTAssertEqual(d, expected)
        let p = errorReply(prepare(s, Self.spec()), code: "site_column_mismatch")
        XCTAssertEqual(p, expected)
        XCTAssertFalse(p.contains("Zeta"), "the other site's name is a data value: \(p)")
        XCTAssertEqual(ModelFrameError.siteColumnMismatch(column: "site", site: "A", rows: 3).code, "site_column_mismatch")
    }

    func testSiteColumnCheckFollowsTheConfiguredColumn() {
        var t = Self.siteA()
        t.columns[5] = Self.text("site", Array(repeating: "elsewhere", count: 12))
        t.columns.append(Self.num("hospital", Array(repeating: 7, count: 12)))
        // The configured column is "hospital" (numeric 7 reads as "7"), so "site" is just data.
        XCTAssertNotNil(describe(Self.service(t, site: "7", siteColumn: "hospital")))
        // No site column: nothing to check.
        XCTAssertNotNil(describe(Self.service(t, site: "A", siteColumn: nil)))
        // A numeric column that disagrees is refused the same way.
        let m = errorReply(Self.service(t, site: "8", siteColumn: "hospital").handle(.describe(DescribeRequest(dataset: "main"))),
                           code: "site_column_mismatch")
        XCTAssertEqual(m, "site \"8\": 12 row(s) have a value in column \"hospital\" other than this site's name \"8\"; each site's data must hold only its own rows")
    }

    // MARK: No complete rows

    func testNoCompleteRowsNamesTheSiteAndSaysWhatToDo() {
        var t = Self.siteA()
        t.columns[1] = Self.num("x", [nil, nil, nil, nil, nil, nil, 1, 2, 3, 4, 5, 6])
        t.columns[0] = Self.num("y", [1, 2, 3, 4, 5, 6, nil, nil, nil, nil, nil, nil])
        let spec = Self.spec([DesignColumn(name: "x", expr: .variable("x"))])
        XCTAssertEqual(frameError(t, spec), .noCompleteRows(site: "", rows: 12))

        let m = errorReply(prepare(Self.service(t, site: "A"), spec), code: "no_complete_rows")
        XCTAssertTrue(m.contains("site \"A\""), m)
        XCTAssertTrue(m.contains("none of its 12 rows has every variable the model needs"), m)
        XCTAssertTrue(m.contains("remove the site from the fit or fix its data"), m)
    }

    // MARK: min_rows

    /// A table where only the first `complete` of 40 rows have a response.
    static func rows(complete: Int) -> DataTable {
        table(num("y", (0..<40).map { $0 < complete ? Double($0 % 7) + 0.5 : nil }),
              num("x", (0..<40).map { Double($0) }))
    }

    func testMinRowsRefusalNamesTheRuleAndHidesASmallCount() {
        let s = Self.service(Self.rows(complete: 3), policy: DisclosurePolicy(), siteColumn: nil)
        let m = errorReply(prepare(s, Self.spec([DesignColumn(name: "x", expr: .variable("x"))])), code: "disclosure_refused")
        XCTAssertEqual(m, "refused by the site's disclosure rules: the model would use fewer than 5 rows at this site; the site's minimum is 10 (rule min_rows)")
        XCTAssertFalse(m.contains("3"), "a count below min_cell must not be disclosed: \(m)")
        for n in 1...4 {
            let mn = errorReply(prepare(Self.service(Self.rows(complete: n), policy: DisclosurePolicy(), siteColumn: nil), Self.spec()),
                                code: "disclosure_refused")
            let numbers = mn.split { !$0.isNumber }.map(String.init)
            XCTAssertEqual(numbers, ["5", "10"], "only min_cell and min_rows may appear (\(n) rows): \(mn)")
            XCTAssertTrue(mn.contains("rule min_rows"), mn)
        }
    }

    func testMinRowsRefusalStatesACountAtOrAboveMinCell() {
        let s = Self.service(Self.rows(complete: 7), policy: DisclosurePolicy(), siteColumn: nil)
        let m = errorReply(prepare(s, Self.spec()), code: "disclosure_refused")
        XCTAssertEqual(m, "refused by the site's disclosure rules: the model would use 7 rows at this site; the site's minimum is 10 (rule min_rows)")
        // At the minimum the model is prepared.
        let ok = prepare(Self.service(Self.rows(complete: 10), policy: DisclosurePolicy(), siteColumn: nil), Self.spec())
        guard case .prepared(let p) = ok else { return XCTFail("\(ok)") }
        XCTAssertEqual(p.summary.used, 10)
        XCTAssertEqual(p.summary.missing["y"], .exact(30))
    }

    func testMinRowsFollowsTheSitesPolicy() {
        var policy = DisclosurePolicy()
        policy.minRows = 25; policy.minCell = 8
        let m = errorReply(prepare(Self.service(Self.rows(complete: 7), policy: policy, siteColumn: nil), Self.spec()),
                           code: "disclosure_refused")
        XCTAssertEqual(m, "refused by the site's disclosure rules: the model would use fewer than 8 rows at this site; the site's minimum is 25 (rule min_rows)")
    }

    // MARK: Allowed and denied variables

    func testVariableOutsideTheAllowlistIsRefusedInPrepareAndHiddenFromDescribe() throws {
        let s = Self.service(Self.siteA(), allowed: ["y", "x", "sex", "ward", "site"])
        let d = try XCTUnwrap(describe(s))
        XCTAssertEqual(d.variables.map(\.name), ["y", "x", "sex", "ward", "site"])
        XCTAssertFalse(d.variables.contains { $0.name == "income" })

        let m = errorReply(prepare(s, Self.spec([DesignColumn(name: "income", expr: .variable("income"))])), code: "disclosure_refused")
        XCTAssertEqual(m, "refused by the site's disclosure rules: variable \"income\" may not be used at this site (rules allowed_variables / denied_variables)")
        // Read only through missing(): still a use.
        errorReply(prepare(s, Self.spec([DesignColumn(name: "missing(income)", expr: .isMissing("income"))]), session: "s2"),
                   code: "disclosure_refused")
        // As the response.
        let r = errorReply(prepare(s, Self.spec(response: .variable("income")), session: "s3"), code: "disclosure_refused")
        XCTAssertTrue(r.contains("\"income\""), r)
        // Allowed variables are fine.
        guard case .prepared = prepare(s, Self.spec([DesignColumn(name: "x", expr: .variable("x"))]), session: "s4") else {
            return XCTFail("an allowed model was refused")
        }
    }

    func testDeniedVariableIsRefusedEvenAsAGroupingFactor() throws {
        let s = Self.service(Self.siteA(), denied: ["ward", "income"])
        let d = try XCTUnwrap(describe(s))
        XCTAssertEqual(d.variables.map(\.name), ["y", "x", "sex", "site"])
        let grouped = Self.spec(terms: [RandomTerm(name: "site:ward", grouping: .withinSite(["ward"]), columns: [Self.intercept])])
        let m = errorReply(prepare(s, grouped), code: "disclosure_refused")
        XCTAssertTrue(m.contains("variable \"ward\" may not be used at this site"), m)
        XCTAssertTrue(m.contains("denied_variables"), m)
    }

    // MARK: describe

    func testDescribeSuppressesSmallCounts() throws {
        let t = Self.table(
            Self.text("sex", ["F", "F", "F", "F", "F", "F", "F", "F", "M", "M", "M", nil, nil]),
            Self.num("x", [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3]),
            Self.num("age", [31, 42, 53, 64, 25, 36, 47, 58, 69, 70, 81, 92, nil]))
        let s = Self.service(t, policy: DisclosurePolicy(), siteColumn: nil)
        let d = try XCTUnwrap(describe(s))
        XCTAssertEqual(d.rows, 13)
        let sex = try XCTUnwrap(d.variables.first { $0.name == "sex" })
        XCTAssertEqual(sex.type, .text)
        XCTAssertEqual(sex.missing, .below(5), "2 missing values are fewer than min_cell")
        // A level held by fewer than min_cell rows is not named at all (its
        // name alone would say that such a patient exists); it is counted.
        XCTAssertEqual(sex.levels, [.init(level: "F", count: .exact(8))])
        XCTAssertEqual(sex.suppressedLevels, 1)
        let x = try XCTUnwrap(d.variables.first { $0.name == "x" })
        XCTAssertEqual(x.missing, .exact(0), "zero is disclosed")
        XCTAssertEqual(x.levels, [.init(level: "2", count: .exact(5)), .init(level: "3", count: .exact(7))])
        XCTAssertEqual(x.suppressedLevels, 1)
        let age = try XCTUnwrap(d.variables.first { $0.name == "age" })
        XCTAssertEqual(age.missing, .below(5))
        XCTAssertEqual(age.levels, [], "no single age is named")
        XCTAssertEqual(age.suppressedLevels, 12)

        // On the wire: "<5", never the exact small count, and no rare level's name.
        let line = s.handle(line: try LineCodec.encode(.describe(DescribeRequest(dataset: "main")), id: 8))
        XCTAssertFalse(line.contains("\"M\""), line)
        XCTAssertFalse(line.contains("\"92\""), line)
        XCTAssertTrue(line.contains("\"missing\":\"<5\""), line)
        XCTAssertFalse(line.contains("\"count\":3"), line)
        XCTAssertFalse(line.contains("\"count\":1,"), line)
        XCTAssertFalse(line.contains("\"missing\":2"), line)
        XCTAssertFalse(line.contains("\"missing\":1"), line)
    }

    func testDescribeDoesNotListTheValuesOfAnIdentifier() throws {
        let ids = (0..<30).map { Double(1000 + $0) }
        let t = Self.table(Self.num("patient_id", ids), Self.text("mrn", ids.map { "MRN\(Int($0))" }))
        var policy = DisclosurePolicy()
        policy.maxListedLevels = 25
        let d = try XCTUnwrap(describe(Self.service(t, policy: policy, siteColumn: nil)))
        XCTAssertNil(d.variables[0].levels, "more than 20 numeric values are not listed")
        XCTAssertNil(d.variables[1].levels, "more than max_listed_levels text values are not listed")
        XCTAssertEqual(d.variables.map(\.distinct), [30, 30])
    }

    // MARK: Requests the service cannot answer

    func testUnknownDatasetListsTheKnownOnes() {
        let s = Self.service(Self.siteA())
        let m = errorReply(s.handle(.describe(DescribeRequest(dataset: "mian"))), code: "unknown_dataset")
        XCTAssertEqual(m, "unknown dataset (a name of 4 bytes, SHA-256 135e43893b55); this site has: main",
                       "the name asked for is not echoed (a peer could make it megabytes long)")
    }

    func testUnreadableDataSourceIsReportedWithoutItsPath() {
        let path = "/nonexistent-\(UUID().uuidString)/a.csv"
        let s = SiteService(site: "A", datasets: ["main": .csv(path: path, types: [:])], policy: .off, log: AgentLog(enabled: false))
        let m = errorReply(s.handle(.describe(DescribeRequest(dataset: "main"))), code: "dataset_error")
        XCTAssertEqual(m, "the site's dataset \"main\" could not be read; the site's administrator can see why in the agent's log")
    }

    func testMalformedLinesGetAnErrorAnswerNotACrash() throws {
        let s = Self.service(Self.siteA())
        func answer(_ line: String) throws -> (Int, ErrorReply) {
            let (id, reply) = try LineCodec.decodeReply(s.handle(line: line))
            guard case .error(let e) = reply else { XCTFail("answered \(reply.typeName) to \(line)"); return (id, ErrorReply(code: "", fatal: false, message: "")) }
            return (id, e)
        }
        let (id1, e1) = try answer("{\"id\": 3, \"type\": ")
        XCTAssertEqual(id1, 0, "no id could be read")
        XCTAssertEqual(e1.code, "invalid_json")
        let (id2, e2) = try answer("{\"id\":4,\"type\":\"fit\"}")
        XCTAssertEqual(id2, 4)
        XCTAssertEqual(e2.code, "unknown_type")
        XCTAssertFalse(e2.message.contains("\"fit\""), "the type is not echoed: \(e2.message)")
        let (id3, e3) = try answer("{\"id\":5,\"type\":\"evaluate\",\"session\":\"s\",\"theta\":[\"one\"],\"order\":2}")
        XCTAssertEqual(id3, 5)
        XCTAssertEqual(e3.code, "wrong_field_type")
        XCTAssertEqual(e3.message, "field \"theta[0]\" has the wrong type: expected a number")
        let (id4, e4) = try answer("{\"id\":6,\"type\":\"evaluate\",\"session\":\"s\",\"theta\":[1]}")
        XCTAssertEqual(id4, 6)
        XCTAssertEqual(e4.code, "missing_field")
        XCTAssertEqual(e4.message, "field \"order\" is missing")
        let (id5, e5) = try answer("{\"id\":7,\"type\":\"evaluate\",\"session\":\"never-prepared\",\"theta\":[1],\"order\":2}")
        XCTAssertEqual(id5, 7)
        XCTAssertEqual(e5.code, "unknown_session")
        XCTAssertEqual(e5.message, "session (id of 14 characters, SHA-256 ec4459e96fed) is unknown or expired; prepare it again")
    }

    func testThetaOfTheWrongLengthOrOutOfBoundsIsRefused() {
        let s = Self.service(Self.siteA())
        let spec = Self.spec(terms: [RandomTerm(name: "site:ward", grouping: .withinSite(["ward"]), columns: [Self.intercept])])
        guard case .prepared = prepare(s, spec) else { return XCTFail() }
        let m = errorReply(s.handle(.evaluate(EvaluateRequest(session: "s1", theta: [1, 0], order: 2))), code: "invalid_request")
        XCTAssertEqual(m, "invalid request: theta has 2 values; the model has 1")
        let m2 = errorReply(s.handle(.evaluate(EvaluateRequest(session: "s1", theta: [-0.5], order: 2))), code: "invalid_request")
        XCTAssertEqual(m2, "invalid request: theta[0] is outside its bounds (a diagonal entry must be finite and at least 0)")
        let m3 = errorReply(s.handle(.evaluate(EvaluateRequest(session: "s1", theta: [1], order: 3))), code: "invalid_request")
        XCTAssertEqual(m3, "invalid request: order must be 0, 1 or 2")
        // The same session with another model is a conflict.
        let other = Self.spec([DesignColumn(name: "x", expr: .variable("x"))])
        let m4 = errorReply(prepare(s, other), code: "session_conflict")
        XCTAssertEqual(m4, "session (id of 2 characters, SHA-256 e8bc163c82ee) was prepared with a different model; use a new session id")
    }
}

// MARK: - Known bugs (these tests fail until the production code is fixed)

extension ModelFrameTests {
    /// The site is named once, not once by the service and again by the error.
    func testNoCompleteRowsMessageNamesTheSiteOnce() {
        var t = Self.siteA()
        t.columns[0] = Self.num("y", Array(repeating: nil, count: 12))
        let m = errorReply(prepare(Self.service(t, site: "A"), Self.spec()), code: "no_complete_rows")
        XCTAssertEqual(m, "site \"A\": none of its 12 rows has every variable the model needs; remove the site from the fit or fix its data")
    }

    /// DisclosurePolicy.minCell: "Least count reported exactly; smaller
    /// counts are shown as <min_cell". Refusals count rows too, and a count
    /// of 1 to 4 rows must not leave the site exactly under the default policy.
    func testCountsInRefusalsBelowMinCellAreSuppressed() {
        // 40 complete rows, two of which cannot take a log.
        let t = Self.table(Self.num("y", (0..<40).map { Double($0 % 7) }),
                           Self.num("x", (0..<40).map { $0 < 2 ? -1 : Double($0) }))
        let s = Self.service(t, policy: DisclosurePolicy(), siteColumn: nil)
        let m = errorReply(prepare(s, Self.spec([DesignColumn(name: "log(x)", expr: .unary(.log, .variable("x")))])),
                           code: "non_finite_value")
        XCTAssertTrue(m.contains("column \"log(x)\""), m)
        XCTAssertFalse(m.contains(" 2 row"), "2 rows (below min_cell 5) disclosed exactly: \(m)")

        // One foreign row in the site column.
        var u = Self.siteA()
        u.columns[5] = Self.text("site", ["A", "A", "B", "A", "A", "A", "A", "A", "A", "A", "A", "A"])
        let m2 = errorReply(Self.service(u, policy: DisclosurePolicy()).handle(.describe(DescribeRequest(dataset: "main"))),
                            code: "site_column_mismatch")
        XCTAssertFalse(m2.contains(" 1 row"), "1 row (below min_cell 5) disclosed exactly: \(m2)")
    }
}

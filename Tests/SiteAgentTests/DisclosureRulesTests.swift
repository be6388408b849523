import XCTest
import Foundation
import Math
import Protocol
@testable import SiteAgent

/// Every disclosure rule of the agent, on the allowed side and on the
/// refused side: the refusal names the rule and its threshold and carries no
/// data value. Also: a differencing attempt with two filters that differ by
/// one row, and finalize sending only site-level effects.
final class DisclosureRulesTests: XCTestCase {

    // MARK: Data and helpers

    static let intercept = DesignColumn(name: "(Intercept)", expr: .number(1))
    static let siteIntercept = RandomTerm(name: "site", grouping: .site, columns: [intercept])

    /// 40 rows with values chosen so that each rule sits just on either side of its threshold.
    static func table() -> DataTable {
        let n = 40
        func num(_ name: String, _ f: (Int) -> Double?) -> DataTable.Column { .init(name: name, data: .numeric((0..<n).map(f))) }
        func text(_ name: String, _ f: (Int) -> String?) -> DataTable.Column { .init(name: name, data: .text((0..<n).map(f))) }
        return DataTable(columns: [
            num("y") { Double(($0 * 37) % 11) + 0.25 * Double($0) },
            num("x") { Double($0) },
            num("x2") { Double(($0 * 7) % 13) },
            // a 20, b 15, c 5 (c exactly at min_cell)
            text("grp") { $0 < 20 ? "a" : $0 < 35 ? "b" : "c" },
            // a 20, b 16, c 4 (c below min_cell)
            text("grp2") { $0 < 20 ? "a" : $0 < 36 ? "b" : "c" },
            // the reference level a has 4 rows; b and c 18 each
            text("grp3") { $0 < 4 ? "a" : $0 < 22 ? "b" : "c" },
            num("flag4") { $0 < 4 ? 1 : 0 },
            num("flag5") { $0 < 5 ? 1 : 0 },
            num("flag36") { $0 < 36 ? 1 : 0 },
            num("event4") { $0 % 10 == 3 ? 1 : 0 },       // 4 events
            num("event5") { $0 % 8 == 3 ? 1 : 0 },        // 5 events
            num("event0") { _ in 0 },                      // no event
            num("succ") { $0 < 4 ? 1 : 0 }, num("fail") { _ in 2 },
            num("succ5") { $0 < 5 ? 1 : 0 },
            text("ward") { "w\($0 % 4)" },
            text("secret") { "MRN-\(90_000 + $0)" },
        ], rowCount: n)
    }

    static func service(_ policy: DisclosurePolicy = DisclosurePolicy(), allowed: [String]? = nil, denied: [String] = []) -> SiteService {
        SiteService(site: "A", datasets: ["main": .table(table())], siteColumn: nil, policy: policy,
                    allowedVariables: allowed, deniedVariables: denied)
    }

    static func column(_ name: String, _ e: Expr? = nil) -> DesignColumn { DesignColumn(name: name, expr: e ?? .variable(name)) }

    static func spec(_ fixed: [DesignColumn] = [], response: Expr = .variable("y"), terms: [RandomTerm] = [siteIntercept],
                     family: Family = .gaussian, filter: Expr? = nil) -> ModelSpec {
        ModelSpec(formula: "test", family: family, link: family == .gaussian ? .identity : .logit, response: .value(response),
                  fixed: [intercept] + fixed, terms: terms, filter: filter)
    }

    static let alice = PeerIdentity(subject: "CN=coordinator", fingerprint: String(repeating: "a", count: 64))
    static let bob = PeerIdentity(subject: "CN=coordinator-2", fingerprint: String(repeating: "b", count: 64))

    func prepare(_ s: SiteService, _ spec: ModelSpec, session: String = UUID().uuidString, peer: PeerIdentity = alice) -> Reply {
        s.handle(.prepare(PrepareRequest(session: session, dataset: "main", model: spec)), peer: peer)
    }

    @discardableResult
    func assertPrepared(_ r: Reply, _ label: String = "", file: StaticString = #filePath, line: UInt = #line) -> PrepareReply? {
        guard case .prepared(let p) = r else {
            XCTFail("\(label): expected prepared, got \(r)", file: file, line: line)
            return nil
        }
        return p
    }

    /// The refusal's message, after checking it is a disclosure refusal
    /// naming `rule`, and that its only numbers are `thresholds`.
    @discardableResult
    func assertRefused(_ r: Reply, rule: String, thresholds: [String], _ label: String = "",
                       file: StaticString = #filePath, line: UInt = #line) -> String {
        guard case .error(let e) = r else {
            XCTFail("\(label): expected a refusal by \(rule), got \(r.typeName)", file: file, line: line)
            return ""
        }
        XCTAssertEqual(e.code, "disclosure_refused", "\(label): \(e.message)", file: file, line: line)
        XCTAssertTrue(e.message.contains("(rule \(rule)") || e.message.contains("(rules \(rule)"), "\(label): names the rule: \(e.message)",
                      file: file, line: line)
        // Numbers outside quoted names ("flag4" is a column the coordinator named).
        let unquoted = e.message.split(separator: "\"", omittingEmptySubsequences: false).enumerated()
            .filter { $0.offset % 2 == 0 }.map(\.element).joined(separator: " ")
        let numbers = unquoted.split { !$0.isNumber && $0 != "." }.map(String.init).filter { $0.contains { $0.isNumber } }
        XCTAssertEqual(Set(numbers), Set(thresholds), "\(label): only the threshold may appear: \(e.message)", file: file, line: line)
        XCTAssertFalse(e.message.contains("MRN"), file: file, line: line)
        return e.message
    }

    // MARK: min_rows

    func testMinRows() {
        var policy = DisclosurePolicy()
        policy.minRows = 40
        assertPrepared(prepare(Self.service(policy), Self.spec([Self.column("x")])), "40 rows, minimum 40")
        policy.minRows = 41
        let m = assertRefused(prepare(Self.service(policy), Self.spec([Self.column("x")])), rule: "min_rows", thresholds: ["40", "41"])
        XCTAssertEqual(m, "refused by the site's disclosure rules: the model would use 40 rows at this site; the site's minimum is 41 (rule min_rows)")
    }

    // MARK: min_cell in describe

    func testMinCellInDescribe() throws {
        guard case .described(let d) = Self.service().handle(.describe(DescribeRequest(dataset: "main"))) else { return XCTFail() }
        let grp2 = try XCTUnwrap(d.variables.first { $0.name == "grp2" })
        XCTAssertEqual(grp2.levels, [.init(level: "a", count: .exact(20)), .init(level: "b", count: .exact(16))],
                       "a level of 4 rows is not named")
        XCTAssertEqual(grp2.suppressedLevels, 1, "but counted")
        let grp = try XCTUnwrap(d.variables.first { $0.name == "grp" })
        XCTAssertEqual(grp.levels?.last, .init(level: "c", count: .exact(5)), "5 rows are shown exactly")
        // Identifier-like text is listed (up to max_listed_levels) but never with a count below min_cell.
        let secret = try XCTUnwrap(d.variables.first { $0.name == "secret" })
        XCTAssertTrue(secret.levels?.allSatisfy { $0.count == .below(5) } ?? true)
        var few = DisclosurePolicy()
        few.maxListedLevels = 30
        guard case .described(let d2) = Self.service(few).handle(.describe(DescribeRequest(dataset: "main"))) else { return XCTFail() }
        XCTAssertNil(d2.variables.first { $0.name == "secret" }?.levels, "more than max_listed_levels values are not listed")
    }

    // MARK: min_cell for the levels of a categorical variable

    func testMinCellForEachLevelOfAFactor() {
        let s = Self.service()
        // grp: levels a (reference), b 15, c 5: allowed.
        let ok = Self.spec([Self.column("grpb", .indicator("grp", level: "b")), Self.column("grpc", .indicator("grp", level: "c"))])
        assertPrepared(prepare(s, ok), "every level at least 5 rows")
        // grp2: level c has 4 rows: its column is refused.
        let small = Self.spec([Self.column("grp2b", .indicator("grp2", level: "b")), Self.column("grp2c", .indicator("grp2", level: "c"))])
        let m = assertRefused(prepare(s, small), rule: "min_cell", thresholds: ["5"])
        XCTAssertTrue(m.contains("\"grp2c\""), m)
        // grp3: the reference level (no column of its own) has 4 rows; b and c have 18 each.
        let reference = Self.spec([Self.column("grp3b", .indicator("grp3", level: "b")), Self.column("grp3c", .indicator("grp3", level: "c"))])
        let r = assertRefused(prepare(s, reference), rule: "min_cell", thresholds: ["5"])
        XCTAssertTrue(r.contains("a level of the categorical variable \"grp3\""), r)
        XCTAssertFalse(r.contains("\"a\""), "the level is not named (it is a data value): \(r)")
        // As a random-effects column too.
        let slope = RandomTerm(name: "site", grouping: .site, columns: [Self.intercept, Self.column("grp2c", .indicator("grp2", level: "c"))])
        assertRefused(prepare(s, Self.spec(terms: [slope])), rule: "min_cell", thresholds: ["5"])
    }

    // MARK: min_cell for 0/1 columns (indicator-like variables, interactions)

    func testMinCellForZeroOneColumns() {
        let s = Self.service()
        assertPrepared(prepare(s, Self.spec([Self.column("flag5")])), "5 ones")
        assertRefused(prepare(s, Self.spec([Self.column("flag4")])), rule: "min_cell", thresholds: ["5"], "4 ones")
        assertRefused(prepare(s, Self.spec([Self.column("flag36")])), rule: "min_cell", thresholds: ["5"], "4 zeros")
        // An interaction cell: grp == "b" and flag5 == 1 is empty (allowed); grp == "a" and flag5: 5 rows (allowed);
        // grp2 == "b" and x < 20 ... is built from indicators only: a tiny cell is refused.
        let cell = Expr.binary(.multiply, .indicator("grp", level: "c"), .indicator("grp2", level: "b"))   // rows 35 only: 1 row
        assertRefused(prepare(s, Self.spec([Self.column("grpc:grp2b", cell)])), rule: "min_cell", thresholds: ["5"], "1-row interaction cell")
        let empty = Expr.binary(.multiply, .indicator("grp", level: "b"), .variable("flag5"))
        assertPrepared(prepare(s, Self.spec([Self.column("grpb:flag5", empty)])), "an empty cell")
    }

    // MARK: min_cell for each class of a binary outcome

    func testMinCellForEachClassOfABinaryOutcome() {
        let s = Self.service()
        assertPrepared(prepare(s, Self.spec(response: .variable("event5"), family: .binomial)), "5 events")
        assertRefused(prepare(s, Self.spec(response: .variable("event4"), family: .binomial)), rule: "min_cell", thresholds: ["5"], "4 events")
        assertRefused(prepare(s, Self.spec(response: .variable("event0"), family: .binomial)), rule: "min_cell", thresholds: ["5"], "no event")
        // cbind(successes, failures): 4 successes in total are too few; 5 are enough.
        func cbind(_ successes: String) -> ModelSpec {
            ModelSpec(formula: "cbind", family: .binomial, link: .logit,
                      response: .binomial(successes: .variable(successes), failures: .variable("fail")),
                      fixed: [Self.intercept], terms: [Self.siteIntercept])
        }
        assertRefused(prepare(s, cbind("succ")), rule: "min_cell", thresholds: ["5"], "4 successes")
        // (A fresh site: its events would otherwise differ by a few rows from the 0/1 response above, rule min_rows.)
        assertPrepared(prepare(Self.service(), cbind("succ5")), "5 successes")
        // A linear model of a 0/1 outcome is held to the same rule.
        assertRefused(prepare(s, Self.spec(response: .variable("event4"))), rule: "min_cell", thresholds: ["5"], "LMM of a 0/1 outcome")
    }

    // MARK: max_params_per_row

    func testMaxParamsPerRow() {
        var policy = DisclosurePolicy()
        policy.maxParametersPerRow = 0.1          // 40 rows: at most 4 parameters
        let s = Self.service(policy)
        // (Intercept), x, θ, σ: 4 parameters.
        assertPrepared(prepare(s, Self.spec([Self.column("x")])), "4 parameters")
        let m = assertRefused(prepare(s, Self.spec([Self.column("x"), Self.column("x2")])), rule: "max_params_per_row", thresholds: ["5", "0.1"])
        XCTAssertTrue(m.contains("the model has 5 parameters"), m)
    }

    // MARK: allowed_variables / denied_variables

    func testAllowedAndDeniedVariables() {
        let allowed = Self.service(allowed: ["y", "x", "ward"])
        assertPrepared(prepare(allowed, Self.spec([Self.column("x")])), "allowed")
        assertRefused(prepare(allowed, Self.spec([Self.column("x2")])), rule: "allowed_variables / denied_variables", thresholds: [])
        assertRefused(prepare(allowed, Self.spec([Self.column("x")], filter: .binary(.greater, .variable("grp2"), .number(3)))), rule: "allowed_variables / denied_variables",
                      thresholds: [], "the allowed list applies to filters") 
        let denied = Self.service(denied: ["x2"])
        assertPrepared(prepare(denied, Self.spec([Self.column("x")])), "not denied")
        assertRefused(prepare(denied, Self.spec([Self.column("x")], filter: .binary(.greater, .variable("x2"), .number(3)))),
                      rule: "allowed_variables / denied_variables", thresholds: [], "a denied variable in a filter")
    }

    // MARK: max_rounds_per_session

    func testMaxRoundsPerSession() {
        var policy = DisclosurePolicy()
        policy.maxRoundsPerSession = 3
        let s = Self.service(policy)
        let ward = RandomTerm(name: "site:ward", grouping: .withinSite(["ward"]), columns: [Self.intercept])
        assertPrepared(prepare(s, Self.spec([Self.column("x")], terms: [ward]), session: "s1"))    // round 1
        for round in 2...3 {
            guard case .contribution = s.handle(.evaluate(EvaluateRequest(session: "s1", theta: [1], order: 2)), peer: Self.alice) else {
                return XCTFail("round \(round) must be answered")
            }
        }
        let m = assertRefused(s.handle(.evaluate(EvaluateRequest(session: "s1", theta: [1], order: 2)), peer: Self.alice),
                              rule: "max_rounds_per_session", thresholds: ["3"])
        XCTAssertEqual(m, "refused by the site's disclosure rules: session has used its 3 rounds (rule max_rounds_per_session)")
        assertRefused(s.handle(.finalize(FinalizeRequest(session: "s1", theta: [1], beta: [0, 0], sigma: 1)), peer: Self.alice),
                      rule: "max_rounds_per_session", thresholds: ["3"], "finalize counts too")
    }

    // MARK: max_sessions_per_day

    func testMaxSessionsPerDayPerCoordinatorIdentity() {
        var policy = DisclosurePolicy()
        policy.maxSessionsPerDay = 2
        let s = Self.service(policy)
        let spec = Self.spec([Self.column("x")])
        assertPrepared(prepare(s, spec, session: "a1", peer: Self.alice))
        assertPrepared(prepare(s, spec, session: "a2", peer: Self.alice))
        assertPrepared(prepare(s, spec, session: "a1", peer: Self.alice), "preparing the same session again is not a new session")
        let m = assertRefused(prepare(s, spec, session: "a3", peer: Self.alice), rule: "max_sessions_per_day", thresholds: ["2", "24"])
        XCTAssertEqual(m, "refused by the site's disclosure rules: this coordinator's certificate has opened the 2 sessions it may open in 24 hours (rule max_sessions_per_day)")
        assertPrepared(prepare(s, spec, session: "b1", peer: Self.bob), "another certificate has its own budget")
        // A refused prepare still uses a session: refusals are answers too.
        assertRefused(prepare(s, Self.spec([Self.column("flag4")]), session: "b2", peer: Self.bob), rule: "min_cell", thresholds: ["5"])
        assertRefused(prepare(s, spec, session: "b3", peer: Self.bob), rule: "max_sessions_per_day", thresholds: ["2", "24"])

        // Sessions read back from the audit log at start-up count; those older than 24 hours do not.
        let restarted = Self.service(policy)
        restarted.seedSessionStarts([(Self.alice.fingerprint, Date().addingTimeInterval(-3600)),
                                     (Self.alice.fingerprint, Date().addingTimeInterval(-25 * 3600))])
        assertPrepared(prepare(restarted, spec, session: "a4", peer: Self.alice))
        assertRefused(prepare(restarted, spec, session: "a5", peer: Self.alice), rule: "max_sessions_per_day", thresholds: ["2", "24"])
    }

    // MARK: Row filters

    static func xBelow(_ v: Double) -> Expr { .binary(.less, .variable("x"), .number(v)) }

    func testFilterAndItsComplementMustEachSelectMinRows() throws {
        let s = Self.service()
        let p = try XCTUnwrap(assertPrepared(prepare(s, Self.spec(filter: Self.xBelow(10))), "10 rows in, 30 out"))
        XCTAssertEqual(p.summary.rows, 10, "rows counts the filtered rows")
        XCTAssertEqual(p.summary.used, 10)
        let small = assertRefused(prepare(s, Self.spec(filter: Self.xBelow(9))), rule: "min_rows", thresholds: ["10"])
        XCTAssertTrue(small.contains("the row filter selects fewer than 10 rows"), small)
        let complement = assertRefused(prepare(s, Self.spec(filter: Self.xBelow(31))), rule: "min_rows", thresholds: ["10"])
        XCTAssertTrue(complement.contains("the row filter leaves out fewer than 10 rows"), complement)
        // The filter's own variables may be missing: those rows are left out, not used.
        assertPrepared(prepare(s, Self.spec(filter: .binary(.and, .binary(.greaterOrEqual, .variable("x"), .number(0)),
                                                                                  .indicator("ward", level: "w1")))),
                       "a combination with a text level")
    }

    /// The differencing attack: two filters whose rows differ by one row.
    /// Fitting both and subtracting the answers would describe that row.
    func testTwoFiltersDifferingByOneRowAreRefused() {
        let s = Self.service()
        let spec = { (f: Expr?) in Self.spec([Self.column("x")], filter: f) }
        // No filter against "every row but one": the complement is one row.
        assertPrepared(prepare(s, spec(nil)), "no filter")
        let allButOne = Expr.binary(.notEqual, .variable("x"), .number(17))
        assertRefused(prepare(s, spec(allButOne)), rule: "min_rows", thresholds: ["10"], "every row but one")
        // Two overlapping filters, each large with a large complement, differing by one row.
        let first = Expr.binary(.greaterOrEqual, .variable("x"), .number(10))                        // 30 rows
        let second = Expr.binary(.and, first, .binary(.notEqual, .variable("x"), .number(17)))       // 29 rows
        assertPrepared(prepare(s, spec(first)), "the first filter")
        let m = assertRefused(prepare(s, spec(second)), rule: "min_rows, differencing", thresholds: ["10"], "one row apart")
        XCTAssertTrue(m.contains("differ from those of an earlier filter on this dataset by fewer than 10 rows"), m)
        // In the other order (the smaller set first) on a fresh agent, the same.
        let other = Self.service()
        assertPrepared(prepare(other, spec(second)))
        assertRefused(prepare(other, spec(first)), rule: "min_rows, differencing", thresholds: ["10"])
        // The same rows again, or rows at least min_rows apart, are fine.
        assertPrepared(prepare(s, spec(.binary(.greater, .variable("x"), .number(9.5)))), "the same 30 rows written differently")
        assertPrepared(prepare(s, spec(.binary(.greaterOrEqual, .variable("x"), .number(20)))), "10 rows apart")
        // A second coordinator cannot use the first one's filter either.
        assertRefused(prepare(s, spec(second), peer: Self.bob), rule: "min_rows, differencing", thresholds: ["10"])
    }

    func testComparisonsAreAllowedOnlyInFilters() {
        let s = Self.service()
        assertRefused(prepare(s, Self.spec(response: .binary(.greater, .variable("y"), .number(3)))), rule: "min_cell", thresholds: [], "in the response")
        assertRefused(prepare(s, Self.spec([Self.column("x")], response: .binary(.add, .variable("y"), .binary(.greater, .variable("x"), .number(3))))),
                      rule: "min_cell", thresholds: [], "inside the response's arithmetic")
        assertPrepared(prepare(s, Self.spec([Self.column("x")], filter: .binary(.greater, .variable("x"), .number(19)))), "in a filter")
    }

    /// x is 0 … 39: a threshold needs min_cell (5) rows on each side, and the
    /// design's thresholds together leave none or at least 5 rows between them.
    func testThresholdsInDesignColumns() {
        func above(_ c: Double) -> Expr { .binary(.greater, .variable("x"), .number(c)) }
        // 5 rows above 34.5: allowed; 4 above 35.5, or none above 39.5: refused.
        assertPrepared(prepare(Self.service(), Self.spec([Self.column("I(x > 34.5)", above(34.5))])), "5 rows above the threshold")
        let m = assertRefused(prepare(Self.service(), Self.spec([Self.column("I(x > 35.5)", above(35.5))])), rule: "min_cell, thresholds", thresholds: ["5", "35.5"])
        XCTAssertTrue(m.contains("needs at least 5 rows on each side"), m)
        assertRefused(prepare(Self.service(), Self.spec([Self.column("I(x > 39.5)", above(39.5))])), rule: "min_cell, thresholds", thresholds: ["5", "39.5"],
                      "no row above: the site's largest value would be learnt")
        assertRefused(prepare(Self.service(), Self.spec([Self.column("I(x < 3.5)", .binary(.less, .variable("x"), .number(3.5)))])),
                      rule: "min_cell, thresholds", thresholds: ["5", "3.5"], "4 rows below")
        // The differencing attack: I(x > 19.5) and I(x > 20.5) are each fine, but 1 row lies between them.
        let attack = Self.spec([Self.column("I(x > 19.5)", above(19.5)), Self.column("I(x > 20.5)", above(20.5))])
        let d = assertRefused(prepare(Self.service(), attack), rule: "min_cell, thresholds", thresholds: ["5"])
        XCTAssertTrue(d.contains("together leave fewer than 5"), d)
        // 5 rows between them: allowed.
        assertPrepared(prepare(Self.service(), Self.spec([Self.column("I(x > 19.5)", above(19.5)), Self.column("I(x > 24.5)", above(24.5))])))
        // A single column that differences two comparisons is refused before any row is read.
        let difference = Expr.binary(.subtract, above(19.5), above(20.5))
        let e = assertRefused(prepare(Self.service(), Self.spec([Self.column("d", difference)])), rule: "expressions", thresholds: [])
        XCTAssertTrue(e.contains("never enter other arithmetic"), e)
        // pmin's kink against a comparison 1 row away: the same partition rule.
        let kink = Self.spec([Self.column("pmin(x, 20)", .binary(.pmin, .variable("x"), .number(20))), Self.column("I(x > 21.5)", above(21.5))])
        assertRefused(prepare(Self.service(), kink), rule: "min_cell, thresholds", thresholds: ["5"])
        // abs with its kink 2 rows from the end; pmax clamping 3 rows.
        assertRefused(prepare(Self.service(), Self.spec([Self.column("abs(x - 1.5)", .unary(.abs, .binary(.subtract, .variable("x"), .number(1.5))))])),
                      rule: "min_cell, thresholds", thresholds: ["5", "0"])
        assertRefused(prepare(Self.service(), Self.spec([Self.column("pmax(x, 2.5)", .binary(.pmax, .variable("x"), .number(2.5)))])),
                      rule: "min_cell, thresholds", thresholds: ["5", "2.5"])
        // Across models: the second threshold 1 row from the first is refused by the differencing history.
        let s = Self.service()
        assertPrepared(prepare(s, Self.spec([Self.column("I(x > 19.5)", above(19.5))])))
        assertRefused(prepare(s, Self.spec([Self.column("I(x > 20.5)", above(20.5))])), rule: "min_rows, differencing", thresholds: ["10", "1"])
        // Comparisons in weights or the offset stay refused.
        var weighted = Self.spec([Self.column("x")])
        weighted.offset = above(19.5)
        assertRefused(prepare(Self.service(), weighted), rule: "min_cell", thresholds: [], "a comparison in the offset")
    }

    func testFilteredFrameEqualsTheFrameOfTheSelectedRows() throws {
        let table = Self.table()
        let filter = Expr.binary(.or, Self.xBelow(12), .indicator("ward", level: "w3"))
        let spec = Self.spec([Self.column("x")], filter: filter)
        let filtered = try SiteDesign(table: table, spec: spec, dataset: "main")
        let keep = (0..<40).filter { $0 < 12 || $0 % 4 == 3 }
        let sub = DataTable(columns: table.columns.map { c in
            switch c.data {
            case .numeric(let v): return .init(name: c.name, data: .numeric(keep.map { v[$0] }))
            case .text(let v): return .init(name: c.name, data: .text(keep.map { v[$0] }))
            }
        }, rowCount: keep.count)
        var unfiltered = spec
        unfiltered.filter = nil
        let direct = try SiteDesign(table: sub, spec: unfiltered, dataset: "main")
        XCTAssertEqual(filtered.rows, keep.count)
        XCTAssertEqual(filtered.used, keep.count)
        XCTAssertEqual(filtered.blocks!, direct.blocks!, "the same sums, bit for bit")
    }

    // MARK: Only site-level effects leave the site

    func testFinalizeSendsOnlySiteLevelEffects() throws {
        let s = Self.service()
        let ward = RandomTerm(name: "site:ward", grouping: .withinSite(["ward"]), columns: [Self.intercept])
        let spec = Self.spec([Self.column("x")], terms: [Self.siteIntercept, ward])
        assertPrepared(prepare(s, spec, session: "f1"))
        let reply = s.handle(.finalize(FinalizeRequest(session: "f1", theta: [0.5, 0.7], beta: [1, 0.2], sigma: 1)), peer: Self.alice)
        guard case .finalized(let f) = reply else { return XCTFail("\(reply)") }
        XCTAssertEqual(f.effects?.count, 1, "one site-level effect, not one per ward")
        XCTAssertEqual(f.conditionalCovariance?.count, 1)
        XCTAssertNil(f.ownEffects, "no own estimate with within-site terms")
        // Within-site terms only: nothing but the session.
        assertPrepared(prepare(s, Self.spec([Self.column("x")], terms: [ward]), session: "f2"))
        guard case .finalized(let g) = s.handle(.finalize(FinalizeRequest(session: "f2", theta: [0.5], beta: [1, 0.2], sigma: 1)),
                                                peer: Self.alice) else { return XCTFail() }
        XCTAssertNil(g.effects)
        XCTAssertNil(g.conditionalCovariance)
        // The guard itself: an answer with per-ward values would be refused.
        let perWard = FinalizeReply(session: "f1", effects: [0.1, 0.2, 0.3, 0.4, 0.5], conditionalCovariance: [1])
        XCTAssertThrowsError(try SiteService.checkSiteLevelOnly(perWard, model: spec))
        XCTAssertNoThrow(try SiteService.checkSiteLevelOnly(f, model: spec))
    }
}

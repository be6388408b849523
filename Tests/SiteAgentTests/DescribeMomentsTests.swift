import XCTest
import Foundation
import Protocol
@testable import SiteAgent

/// `describe` with numeric summaries: n (a disclosed count), mean and SD
/// only when at least min_rows values are present, never a minimum, maximum
/// or single value; nothing for a variable the site may not use; the rows
/// behind the moments join the differencing history.
final class DescribeMomentsTests: XCTestCase {
    typealias T = ModelFrameTests

    /// 30 rows: `y` complete, `few` present in 8 rows, `rare` in 3, `z` missing in 2, a text `ward`.
    static func yValues() -> [Double] {
        (0..<30).map { (i: Int) -> Double in
            let a = Double(i * i % 17)
            return 100 + a + 0.25 * Double(i)
        }
    }
    static func data() -> DataTable {
        T.table(T.num("y", yValues()),
                T.num("few", (0..<30).map { $0 < 8 ? Double($0) * 1.5 : nil }),
                T.num("rare", (0..<30).map { $0 < 3 ? 7 + Double($0) : nil }),
                T.num("z", (0..<30).map { (i: Int) -> Double? in i < 2 ? nil : Double(i % 5) + 0.5 * Double(i) }),
                T.text("ward", (0..<30).map { "w\($0 % 3)" }))
    }

    func describe(_ s: SiteService, summaries: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws -> SiteDescription {
        guard case .described(let d) = s.handle(.describe(DescribeRequest(dataset: "main", numericSummaries: summaries))) else {
            XCTFail("no description", file: file, line: line); throw CancellationError()
        }
        return d
    }

    func testMomentsWhenAtLeastMinRowsValuesAndNeverExtremes() throws {
        var policy = DisclosurePolicy(); policy.minRows = 10; policy.minCell = 5
        let table = Self.data()
        let d = try describe(T.service(table, policy: policy, siteColumn: nil))
        let y = try XCTUnwrap(d.variables.first { $0.name == "y" })
        let values = Self.yValues()
        let mean: Double = values.reduce(0, +) / 30
        var ss = 0.0
        for v in values { ss += (v - mean) * (v - mean) }
        let sd: Double = (ss / 29).squareRoot()
        XCTAssertEqual(y.nonMissing, .exact(30))
        XCTAssertEqual(try XCTUnwrap(y.mean), mean, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(y.sd), sd, accuracy: 1e-12)
        XCTAssertNil(y.momentsWithheld)

        // 8 values (≥ min_cell, < min_rows): n exact, no moments, and why.
        let few = try XCTUnwrap(d.variables.first { $0.name == "few" })
        XCTAssertEqual(few.nonMissing, .exact(8))
        XCTAssertNil(few.mean); XCTAssertNil(few.sd)
        XCTAssertEqual(few.momentsWithheld, "min_rows")
        // 3 values: n suppressed as counts are.
        let rare = try XCTUnwrap(d.variables.first { $0.name == "rare" })
        XCTAssertEqual(rare.nonMissing, .below(5))
        XCTAssertNil(rare.mean)
        // Text variables get none of it.
        let ward = try XCTUnwrap(d.variables.first { $0.name == "ward" })
        XCTAssertNil(ward.nonMissing); XCTAssertNil(ward.mean)

        // Never a minimum, maximum or any single value: no such key on the
        // wire, and no value of y, few or rare appears in the answer's text.
        let line = String(decoding: try JSONEncoder().encode(d), as: UTF8.self)
        for key in ["\"min\"", "\"max\"", "minimum", "maximum", "range", "quantile", "median"] { XCTAssertFalse(line.contains(key), key) }
        let others: [Double] = [1.5, 3, 7, 8, 9]
        for v in values + others {
            XCTAssertFalse(line.contains(":\(v),") || line.contains(":\(v)}"), "value \(v) in \(line)")
        }

        // Two describes: the same moments (no new information).
        let again = try describe(T.service(table, policy: policy, siteColumn: nil))
        XCTAssertEqual(again, d)
        let s = T.service(table, policy: policy, siteColumn: nil)
        XCTAssertEqual(try describe(s), try describe(s))

        // Not asked for (the describe before a fit): none sent.
        XCTAssertTrue(try describe(s, summaries: false).variables.allSatisfy { $0.nonMissing == nil && $0.mean == nil && $0.sd == nil })
    }

    func testDeniedVariablesAreNotSummarised() throws {
        var policy = DisclosurePolicy(); policy.minRows = 10
        let d = try describe(T.service(Self.data(), policy: policy, denied: ["y"], siteColumn: nil))
        XCTAssertNil(d.variables.first { $0.name == "y" })
        let only = try describe(T.service(Self.data(), policy: policy, allowed: ["z"], siteColumn: nil))
        XCTAssertEqual(only.variables.map(\.name), ["z"])
        XCTAssertNotNil(only.variables[0].mean)
    }

    /// The moments of z are over its 28 present rows. A model reading z on
    /// 26 of them (y ~ z with a filter leaving out 2 more... here: a model
    /// on rows where another variable is missing) would give, by difference,
    /// the sum of a few rows: refused. And a describe after a model whose
    /// rows are a few short of a variable's rows withholds its moments.
    func testMomentRowsJoinTheDifferencingHistory() throws {
        var policy = DisclosurePolicy(); policy.minRows = 10; policy.minCell = 5; policy.maxRowShare = 1
        // w is missing in 3 rows where z is present.
        var cols = Self.data().columns
        cols.append(T.num("w", (0..<30).map { (i: Int) -> Double? in (2..<5).contains(i) ? nil : Double(i % 4) }))
        let table = DataTable(columns: cols, rowCount: 30)

        let s = T.service(table, policy: policy, siteColumn: nil)
        let d = try describe(s)
        XCTAssertNotNil(d.variables.first { $0.name == "z" }?.mean)
        let noSite = [RandomTerm]()
        let model = T.spec([DesignColumn(name: "z", expr: .variable("z")), DesignColumn(name: "w", expr: .variable("w"))], terms: noSite)
        guard case .error(let e) = s.handle(.prepare(PrepareRequest(session: "s1", dataset: "main", model: model))) else {
            return XCTFail("a model on z's rows less three is refused after describe sent z's moments")
        }
        XCTAssertTrue(e.message.contains("mean and SD that describe sent for \"w\""), e.message)
        // y ~ z reads y on 28 of its 30 rows: the sum of y over two rows by difference.
        let yz = T.spec([DesignColumn(name: "z", expr: .variable("z"))], terms: noSite)
        guard case .error(let e2) = s.handle(.prepare(PrepareRequest(session: "s3", dataset: "main", model: yz))) else {
            return XCTFail("y ~ z on 28 of y's 30 rows is refused")
        }
        XCTAssertTrue(e2.message.contains("describe sent for \"y\""), e2.message)
        // A model reading z on all of z's rows is answered.
        let onZ = T.spec([], response: .variable("z"), terms: noSite)
        guard case .prepared = s.handle(.prepare(PrepareRequest(session: "s2", dataset: "main", model: onZ))) else {
            return XCTFail("a model on z's rows is answered")
        }
        // The same describe again: the same moments.
        XCTAssertEqual(try describe(s), d)

        // The other order: a model first, on rows three short of w's... of z's rows; then describe withholds z's moments.
        let t = T.service(table, policy: policy, siteColumn: nil)
        let yw = T.spec([DesignColumn(name: "w", expr: .variable("w"))], terms: noSite)
        guard case .prepared = t.handle(.prepare(PrepareRequest(session: "s1", dataset: "main", model: yw))) else {
            return XCTFail("y ~ w is answered")
        }
        let after = try describe(t)
        let y = try XCTUnwrap(after.variables.first { $0.name == "y" })
        XCTAssertNil(y.mean, "y's 30 rows differ from the model's 27 by 3")
        XCTAssertEqual(y.momentsWithheld, "differencing")
        XCTAssertNotNil(after.variables.first { $0.name == "w" }?.mean, "w's rows are the model's rows")
    }

    func testDecodingValidatesTheMoments() throws {
        func decode(_ json: String) throws -> VariableDescription {
            try JSONDecoder().decode(VariableDescription.self, from: Data(json.utf8))
        }
        let base = #"{"name":"x","type":"numeric","missing":0,"distinct":40"#
        XCTAssertNil(try decode(base + "}").mean, "an older agent")
        let ok = try decode(base + #","n":40,"mean":2.5,"sd":1.25}"#)
        XCTAssertEqual(ok.mean, 2.5); XCTAssertEqual(ok.sd, 1.25); XCTAssertEqual(ok.nonMissing, .exact(40))
        XCTAssertEqual(try decode(base + #","n":"<5","moments_withheld":"min_rows"}"#).nonMissing, .below(5))
        for bad in [#","n":40,"mean":2.5,"sd":-1}"#, #","n":40,"mean":2.5}"#, #","n":40,"sd":1}"#,
                    #","n":"<5","mean":2.5,"sd":1}"#, #","mean":2.5,"sd":1}"#, #","n":40,"mean":"nan","sd":1}"#,
                    #","n":1,"mean":2.5,"sd":0}"#, #","n":-3}"#] {
            XCTAssertThrowsError(try decode(base + bad), bad)
        }
        XCTAssertThrowsError(try decode(#"{"name":"x","type":"text","missing":0,"distinct":4,"n":40,"mean":2.5,"sd":1}"#))
        // Keys on the wire are snake_case and explicit.
        let v = VariableDescription(name: "x", type: .numeric, missing: .exact(0), distinct: 3, levels: nil,
                                    nonMissing: .below(5), momentsWithheld: "min_rows")
        let line = String(decoding: try JSONEncoder().encode(v), as: UTF8.self)
        XCTAssertTrue(line.contains(#""n":"<5""#) && line.contains(#""moments_withheld":"min_rows""#), line)
        XCTAssertFalse(line.contains("mean"), line)
    }
}

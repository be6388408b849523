import XCTest
import Foundation
import Protocol
import Math
@testable import SiteAgent

/// An LMM's sums streamed in chunks of rows (StreamedLinearDesign), per site
/// or per level within it, are bit-identical to those built from full-length columns, and so are the
/// disclosure counts and the errors; the sorted-value counts that replaced
/// dictionaries (minority rows, describe's distinct values) count exactly as
/// the dictionaries did.
final class StreamedLinearDesignTests: XCTestCase {
    static let intercept = DesignColumn(name: "(Intercept)", expr: .number(1))

    /// 200,000 rows (about 148,000 used), so three chunks of the blocks' pass (65,536 rows each, the
    /// last one partial): x continuous with missing values, g a text factor,
    /// h numeric with missing values, positive weights w, an offset o.
    static func table(rows n: Int = 200_000, weight: (Int) -> Double = { 0.5 + Double($0 % 7) / 4 }) -> DataTable {
        var rng = StreamTestRandom(seed: 19)
        let x: [Double?] = (0..<n).map { $0 % 97 == 5 ? nil : rng.normal() }
        let h: [Double?] = (0..<n).map { $0 % 11 == 3 ? nil : (rng.normal() * 2).rounded() }
        let g: [String?] = (0..<n).map { ["a", "b", "c"][($0 * 7 + $0 / 5) % 3] }
        let y: [Double?] = (0..<n).map { i in 3 + 0.5 * (x[i] ?? 0) + rng.normal() }
        let o: [Double?] = (0..<n).map { Double($0 % 5) / 10 }
        let w: [Double?] = (0..<n).map { weight($0) }
        return DataTable(columns: [.init(name: "x", data: .numeric(x)), .init(name: "h", data: .numeric(h)),
                                   .init(name: "g", data: .text(g)), .init(name: "y", data: .numeric(y)),
                                   .init(name: "o", data: .numeric(o)), .init(name: "w", data: .numeric(w)),
                                   .init(name: "k", data: .numeric((0..<n).map { Double($0 % 4) }))], rowCount: n)
    }

    /// `y ~ x + g + missing(h) + fill(h) + I(x > 0.25) + log(w) + (1 + x | site) + (0 + fill(h) | site)`,
    /// weights w, offset o, rows where k != 3.
    static func spec(response: Expr = .variable("y"), weights: Expr? = .variable("w")) -> ModelSpec {
        let x = DesignColumn(name: "x", expr: .variable("x"))
        let fill = DesignColumn(name: "h_filled", expr: .filled("h", with: 0))
        let fixed = [intercept, x, DesignColumn(name: "gb", expr: .indicator("g", level: "b")),
                     DesignColumn(name: "gc", expr: .indicator("g", level: "c")),
                     DesignColumn(name: "missing(h)", expr: .isMissing("h")), fill,
                     DesignColumn(name: "I(x > 0.25)", expr: .binary(.greater, .variable("x"), .number(0.25))),
                     DesignColumn(name: "log(w)", expr: .unary(.log, .variable("w")))]
        return ModelSpec(formula: "test", response: .value(response), fixed: fixed,
                         terms: [RandomTerm(name: "site", grouping: .site, columns: [intercept, x]),
                                 RandomTerm(name: "site", grouping: .site, columns: [fill])],
                         weights: weights, offset: .variable("o"), filter: .binary(.notEqual, .variable("k"), .number(3)))
    }

    func testStreamedSumsAndCountsAreThoseOfFullColumns() throws {
        let table = Self.table(), spec = Self.spec()
        let streamed = try SiteDesign(table: table, spec: spec, dataset: "d")
        let full = try SiteDesign(table: table, spec: spec, dataset: "d", streamSiteSums: false)
        XCTAssertGreaterThan(streamed.used, 2 * StreamedLinearDesign.chunkRows)
        XCTAssertEqual(streamed.rows, full.rows)
        XCTAssertEqual(streamed.used, full.used)
        XCTAssertEqual(streamed.missing, full.missing)
        XCTAssertEqual(streamed.groupCounts, full.groupCounts)
        // Bit-identical sums (SiteBlocks compares every Double with ==).
        XCTAssertEqual(try XCTUnwrap(streamed.blocks), try XCTUnwrap(full.blocks))
        guard case .linear(_, let a) = streamed.model, case .linear(_, let b) = full.model else { return XCTFail("linear models") }
        XCTAssertEqual(a.bitPattern, b.bitPattern)
        let s = streamed.cells, f = full.cells
        XCTAssertEqual(s, f)
        XCTAssertEqual(s.usedRows, f.usedRows)
        XCTAssertEqual(s.binarySubsets.map(\.name), f.binarySubsets.map(\.name))
        XCTAssertEqual(s.binarySubsets.map(\.rows), f.binarySubsets.map(\.rows))
        XCTAssertEqual(s.dominance.map(\.name), f.dominance.map(\.name))
        XCTAssertEqual(s.dominance.map(\.share.bitPattern), f.dominance.map(\.share.bitPattern))
        // The checks saw what they must: g's levels, the threshold, the indicator columns.
        XCTAssertEqual(s.levelCounts["g"]?.count, 3)
        XCTAssertEqual(s.thresholds.map(\.name).count, 1)
        XCTAssertTrue(s.binarySubsets.contains { $0.name == "missing(h)" })
    }

    func testWithoutWeightsTheSumsAreThoseOfFullColumns() throws {
        let table = Self.table(rows: 70_000), spec = Self.spec(weights: nil)
        let streamed = try SiteDesign(table: table, spec: spec, dataset: "d")
        let full = try SiteDesign(table: table, spec: spec, dataset: "d", streamSiteSums: false)
        XCTAssertEqual(try XCTUnwrap(streamed.blocks), try XCTUnwrap(full.blocks))
        XCTAssertEqual(streamed.cells, full.cells)
    }

    /// The error a design throws, nil if it builds.
    static func error(_ table: DataTable, _ spec: ModelSpec, streamed: Bool) -> ModelFrameError? {
        do { _ = try SiteDesign(table: table, spec: spec, dataset: "d", streamSiteSums: streamed); return nil }
        catch { return error as? ModelFrameError }
    }

    func testErrorsAreThoseOfFullColumns() throws {
        let table = Self.table(rows: 70_000)
        // A response that is not finite in some rows (log of a negative number).
        let logY = Self.spec(response: .unary(.log, .binary(.subtract, .variable("y"), .number(3))))
        let e = Self.error(table, logY, streamed: true)
        XCTAssertEqual(e, Self.error(table, logY, streamed: false))
        if case .nonFinite(let column, _)? = e { XCTAssertEqual(column, "response") } else { XCTFail("\(String(describing: e))") }
        // Weights of 0 in some rows.
        let zeros = Self.table(rows: 70_000, weight: { $0 % 1000 == 0 ? 0 : 1 })
        var spec = Self.spec()
        spec.fixed.removeLast()   // log(w) would be non-finite first
        let w = Self.error(zeros, spec, streamed: true)
        XCTAssertEqual(w, Self.error(zeros, spec, streamed: false))
        XCTAssertTrue("\(String(describing: w))".contains("must be positive"), "\(String(describing: w))")
    }

    /// Patients (p) within the site with a random intercept and x slope, and
    /// wards (g) within the site in the dense tail: per-level blocks, streamed.
    func testWithinSiteFactorsStreamTheSameSums() throws {
        var table = Self.table(rows: 140_000)
        table.columns.append(.init(name: "p", data: .numeric((0..<140_000).map { Double($0 / 4) })))
        var spec = Self.spec()
        spec.terms = [RandomTerm(name: "site:p", grouping: .withinSite(["p"]), columns: [Self.intercept, DesignColumn(name: "x", expr: .variable("x"))]),
                      RandomTerm(name: "site:g", grouping: .withinSite(["g"]), columns: [Self.intercept]),
                      RandomTerm(name: "site", grouping: .site, columns: [Self.intercept])]
        let streamed = try SiteDesign(table: table, spec: spec, dataset: "d")
        let full = try SiteDesign(table: table, spec: spec, dataset: "d", streamSiteSums: false)
        XCTAssertGreaterThan(streamed.used, StreamedLinearDesign.chunkRows)
        XCTAssertEqual(streamed.groupCounts, full.groupCounts)
        XCTAssertEqual(streamed.groupCounts[1], 3)
        let blocks = try XCTUnwrap(streamed.blocks)
        XCTAssertEqual(blocks, try XCTUnwrap(full.blocks))
        XCTAssertEqual(blocks.tailDimension, 4)   // g's 3 levels and the site
        XCTAssertEqual(streamed.cells, full.cells)
        XCTAssertEqual(streamed.cells.binarySubsets.map(\.rows), full.cells.binarySubsets.map(\.rows))
    }

    /// Nested factors beyond the dense tail's cap keep the nested layout,
    /// built from full columns, and a crossed tail beyond it is refused alike.
    func testNestedLayoutAndTailRefusalAreThoseOfFullColumns() throws {
        let a = (0..<4400).map(Double.init), b = a.map { Double(Int($0) / 2) }
        func design(_ a: [Double], _ b: [Double], streamed: Bool) throws -> SiteDesign {
            let table = DataTable(columns: [.init(name: "a", data: .numeric(a.map { $0 })), .init(name: "b", data: .numeric(b.map { $0 })),
                                            .init(name: "y", data: .numeric((0..<4400).map { Double(($0 * 37) % 11) / 3 }))], rowCount: 4400)
            let spec = ModelSpec(formula: "test", response: .value(.variable("y")), fixed: [Self.intercept],
                                 terms: [RandomTerm(name: "a:site", grouping: .withinSite(["a"]), columns: [Self.intercept]),
                                         RandomTerm(name: "b:site", grouping: .withinSite(["b"]), columns: [Self.intercept]),
                                         RandomTerm(name: "site", grouping: .site, columns: [Self.intercept])])
            return try SiteDesign(table: table, spec: spec, dataset: "d", streamSiteSums: streamed)
        }
        let nested = try XCTUnwrap(try design(a, b, streamed: true).blocks)
        XCTAssertEqual(nested.nested?.factors.map(\.levels), [4400, 2200])
        XCTAssertEqual(nested, try XCTUnwrap(try design(a, b, streamed: false).blocks))
        // a (2,200 levels) and b (2,199) cross: a tail of 2,200 effects, refused.
        let crossedA = (0..<4400).map { Double($0 % 2200) }, crossedB = (0..<4400).map { Double(($0 * 7) % 2199) }
        let refusal = { (streamed: Bool) -> String? in
            do { _ = try design(crossedA, crossedB, streamed: streamed); return nil } catch { return "\(error)" }
        }
        XCTAssertNotNil(refusal(true))
        XCTAssertEqual(refusal(true), refusal(false))
    }

    func testGeneralizedFlatAndCrossedModelsAreNotStreamed() {
        var s = Self.spec()
        XCTAssertTrue(StreamedLinearDesign.applies(s, family: nil))
        XCTAssertFalse(StreamedLinearDesign.applies(s, family: GLMFamily(.binomial, .logit)))
        s.terms.append(RandomTerm(name: "g", grouping: .crossed("g", levels: ["a", "b", "c"]), columns: [Self.intercept]))
        XCTAssertFalse(StreamedLinearDesign.applies(s, family: nil))
        s.terms = []
        XCTAssertFalse(StreamedLinearDesign.applies(s, family: nil))
    }

    func testNumericValuesHoldMissingValuesAsOptionalDoublesDid() {
        var v: NumericValues = [1, nil, -0.0, 2.5]
        XCTAssertEqual(Array(v), [1, nil, 0, 2.5])
        XCTAssertEqual(v.count, 4)
        XCTAssertNil(v[1])
        v[1] = 7; v[0] = nil
        XCTAssertEqual(Array(v), [nil, 7, 0, 2.5])
        XCTAssertEqual(v.compactMap { $0 }, [7, 0, 2.5])
        XCTAssertEqual(v, NumericValues([nil, 7, 0, 2.5]))
        XCTAssertNotEqual(v, NumericValues([0, 7, 0, 2.5]))
        XCTAssertEqual(v.storage.count, 4)   // 8 bytes a row: one Double each, NaN where missing
        let column: [Double?] = [3, nil]
        XCTAssertEqual(DataTable.ColumnData.numeric(column), .numeric(NumericValues([3, nil])))
    }

    /// The dictionary counts the sorted counts replaced.
    static func minorityByDictionary(_ values: [Double]) -> Int {
        var counts: [UInt64: Int] = [:]
        var top = 0
        for x in values {
            let k = (x == 0 ? 0.0 : x).bitPattern
            let n = (counts[k] ?? 0) + 1
            counts[k] = n
            top = max(top, n)
        }
        return values.count - top
    }

    func testSortedCountsEqualDictionaryCounts() {
        var rng = StreamTestRandom(seed: 7)
        for trial in 0..<200 {
            let n = trial % 50
            let spread = [1, 2, 3, 10, 1000][trial % 5]
            let values: [Double?] = (0..<n).map { _ in
                let u = rng.next() % UInt64(spread + 1)
                return u == 0 ? nil : (u == 1 ? -0.0 : (u == 2 ? 0.0 : Double(u) / 4))
            }
            let present = values.compactMap { $0 }
            XCTAssertEqual(CellCounts.minority(present), Self.minorityByDictionary(present), "\(present)")
            var dict: [Double: Int] = [:]
            for x in present { dict[x == 0 ? 0 : x, default: 0] += 1 }
            for limit in [0, 3, 20] {
                let c = SiteService.numericCounts(NumericValues(values), listLimit: limit)
                XCTAssertEqual(c.missing, n - present.count)
                XCTAssertEqual(c.distinct, dict.count)
                let expected = dict.count <= limit ? dict.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" } : nil
                XCTAssertEqual(c.listed.map { $0.map { "\($0.value):\($0.count)" } }, expected)
            }
        }
    }
}

extension StreamedLinearDesignTests {
    /// The radix sort the counts use, against Swift's sort, beyond its
    /// small-array cut-over: random bits, doubles of both signs with ±0,
    /// infinities and heavy ties, keys sharing most bytes.
    func testRadixSortOrdersAsSwiftSortDoes() {
        var rng = StreamTestRandom(seed: 11)
        for (trial, n) in [257, 1_000, 4_096, 50_000].enumerated() {
            var bits = (0..<n).map { _ in rng.next() }
            var expected = bits.sorted()
            RadixSort.sort(&bits)
            XCTAssertEqual(bits, expected, "random bits, n = \(n)")
            let doubles: [Double] = (0..<n).map { i in
                switch (i + trial) % 7 {
                case 0: return -0.0
                case 1: return 0.0
                case 2: return Double(rng.next() % 5) - 2
                case 3: return i % 2 == 0 ? .infinity : -.infinity
                default: return rng.normal() * pow(10, Double(Int(rng.next() % 40)) - 20)
                }
            }
            var keys = doubles.map(RadixSort.orderedKey)
            RadixSort.sort(&keys)
            let back = keys.map(RadixSort.double(orderedKey:))
            expected = doubles.sorted { $0 < $1 || ($0 == $1 && $0.sign == .minus && $1.sign == .plus) }.map(\.bitPattern)
            XCTAssertEqual(back.map(\.bitPattern), expected, "doubles, n = \(n)")
            var shared = (0..<n).map { _ in 0xABCD_EF00_0000_0000 | (rng.next() % 300) }
            let sharedExpected = shared.sorted()
            RadixSort.sort(&shared)
            XCTAssertEqual(shared, sharedExpected, "keys sharing their top bytes, n = \(n)")
            // And the counts built on it, beyond the cut-over.
            let present = doubles.filter { $0.isFinite }
            XCTAssertEqual(CellCounts.minority(present), Self.minorityByDictionary(present))
            var dict: [Double: Int] = [:]
            for x in present { dict[x == 0 ? 0 : x, default: 0] += 1 }
            let c = SiteService.numericCounts(NumericValues(present.map { Optional($0) }), listLimit: 1_000_000)
            XCTAssertEqual(c.distinct, dict.count)
            XCTAssertEqual(c.listed?.map { "\($0.value):\($0.count)" }, dict.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" })
        }
    }
}

/// A small seeded generator (SplitMix64) for the site tests' random columns.
struct StreamTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double {
        (-2 * Foundation.log(max(uniform(), 1e-300))).squareRoot() * Foundation.cos(2 * Double.pi * uniform())
    }
}

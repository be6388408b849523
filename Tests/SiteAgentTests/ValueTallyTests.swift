import XCTest
@testable import SiteAgent

/// The two ways ValueTally counts equal keys (a hash table for site-sized
/// columns, a radix sort for large ones) against a dictionary, where they
/// break: empty and one-key columns, a few values held by most rows, every
/// key distinct, small integers as doubles, and keys colliding in one slot.
final class ValueTallyTests: XCTestCase {
    private func dictionaryTally(_ keys: [UInt64], listLimit: Int) -> ValueTally.Tally {
        var counts: [UInt64: Int] = [:]
        for k in keys { counts[k, default: 0] += 1 }
        let listed = counts.count <= listLimit
            ? counts.sorted { $0.key < $1.key }.map { ValueTally.Listed(key: $0.key, count: $0.value) } : nil
        return ValueTally.Tally(distinct: counts.count, largest: counts.values.max() ?? 0, listed: listed)
    }

    private func bothWays(_ keys: [UInt64], listLimit: Int) -> (hashed: ValueTally.Tally, sorted: ValueTally.Tally, chosen: ValueTally.Tally) {
        let hashed = keys.withUnsafeBufferPointer { ValueTally.hashed($0, listLimit: listLimit) }
        var copy = keys
        let sorted = copy.withUnsafeMutableBufferPointer { ValueTally.sorted($0, listLimit: listLimit) }
        copy = keys
        let chosen = copy.withUnsafeMutableBufferPointer { ValueTally.tally($0, listLimit: listLimit) }
        return (hashed, sorted, chosen)
    }

    func testBothWaysEqualDictionaryCounts() {
        var rng = StreamTestRandom(seed: 3)
        for trial in 0..<400 {
            let n = [0, 1, 2, 5, 31, 33, 100, 257, 1_000, 4_000][trial % 10] + Int(rng.next() % 3)
            let spread: UInt64 = [1, 2, 3, 20, 1_000, .max][trial % 6]
            let keys: [UInt64] = (0..<n).map { _ in
                let u = spread == .max ? rng.next() : rng.next() % spread
                // Small integers as ordered double keys (low bits all zero), or raw bits.
                return trial % 4 == 0 ? RadixSort.orderedKey(Double(u)) : u
            }
            for limit in [0, 1, 3, 20, 1_000_000] {
                let expected = dictionaryTally(keys, listLimit: limit)
                let got = bothWays(keys, listLimit: limit)
                XCTAssertEqual(got.hashed, expected, "hashed, n \(n), spread \(spread), limit \(limit)")
                XCTAssertEqual(got.sorted, expected, "sorted, n \(n), spread \(spread), limit \(limit)")
                XCTAssertEqual(got.chosen, expected)
            }
        }
    }

    /// Keys chosen to share one slot of the table: long probe chains that
    /// wrap around its end, among copies of a few keys and distinct ones.
    func testCollidingKeysCountExactly() {
        var rng = StreamTestRandom(seed: 5)
        let n = 2_000
        var bits = 4
        while (1 << bits) < 2 * n { bits += 1 }
        let last = (1 << bits) - 1
        var colliding: [UInt64] = []
        while colliding.count < 60 {
            let k = rng.next()
            if ValueTally.slot(of: k, bits: bits) == last { colliding.append(k) }
        }
        for distinctColliding in [1, 2, 9, 60] {
            var keys = (0..<(n - 600)).map { _ in rng.next() }
            for i in 0..<600 { keys.append(colliding[i % distinctColliding]) }
            for i in stride(from: keys.count - 1, to: 0, by: -1) { keys.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            for limit in [0, 20, 1_000_000] {
                let expected = dictionaryTally(keys, listLimit: limit)
                let got = bothWays(keys, listLimit: limit)
                XCTAssertEqual(got.hashed, expected, "\(distinctColliding) keys in one slot, limit \(limit)")
                XCTAssertEqual(got.sorted, expected)
            }
        }
    }

    /// Above the hashing limit the radix sort answers, with the same counts.
    func testLargeColumnsTakeTheSortAndAgree() {
        var rng = StreamTestRandom(seed: 9)
        let n = ValueTally.hashedLimit + 1_000
        let keys = (0..<n).map { i in i % 3 == 0 ? 42 : rng.next() % 50_000 }
        let expected = dictionaryTally(keys, listLimit: 20)
        let got = bothWays(keys, listLimit: 20)
        XCTAssertEqual(got.chosen, expected)
        XCTAssertEqual(got.hashed, expected)
        XCTAssertNil(got.chosen.listed)
        XCTAssertGreaterThan(got.chosen.largest, n / 3)
    }

    /// The minority rule and describe's counts read the tally; −0 is 0.
    func testMinorityAndNumericCountsReadTheTally() {
        XCTAssertEqual(CellCounts.minority([]), 0)
        XCTAssertEqual(CellCounts.minority([-0.0, 0.0, 1, 2]), 2)
        XCTAssertEqual(CellCounts.minority([1, 2, 3, 3, 4]), 3)
        XCTAssertEqual(CellCounts.minority([5, 5, 5, 1, 2]), 2)
        let c = SiteService.numericCounts(NumericValues([0.0, -0.0, nil, 2.5, 2.5, 2.5]), listLimit: 5)
        XCTAssertEqual(c.missing, 1)
        XCTAssertEqual(c.distinct, 2)
        XCTAssertEqual(c.listed?.map { "\($0.value):\($0.count)" }, ["0.0:2", "2.5:3"])
        XCTAssertNil(SiteService.numericCounts(NumericValues([1, 2, 3]), listLimit: 2).listed)
    }
}

// Counting equal values in a column of millions of rows (disclosure's
// minority rule, describe's distinct values) sorts the column. Why radix:
// Swift's sort is a stable merge sort, and on the 300,000-row benchmark it
// was 17% of describe and prepare; a least-significant-byte radix sort over
// the 64-bit keys takes a few passes over the rows (bytes that every key
// shares are skipped) and gives the same order.

enum RadixSort {
    /// Sorts `keys` ascending.
    static func sort(_ keys: inout [UInt64]) {
        keys.withUnsafeMutableBufferPointer { sort($0) }
    }

    /// Sorts the buffer ascending, in place (with one scratch buffer of its size).
    static func sort(_ keys: UnsafeMutableBufferPointer<UInt64>) {
        let n = keys.count
        guard n > 256 else { var k = keys; k.sort(); return }
        // All eight byte histograms in one pass.
        var counts = [Int](repeating: 0, count: 8 * 256)
        counts.withUnsafeMutableBufferPointer { c in
            for x in keys {
                for b in 0..<8 { c[b &* 256 &+ Int(truncatingIfNeeded: (x >> UInt64(8 &* b)) & 0xFF)] &+= 1 }
            }
        }
        let scratch = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: n)
        defer { scratch.deallocate() }
        var from = keys, to = scratch
        var offsets = [Int](repeating: 0, count: 256)
        for b in 0..<8 {
            let base = b * 256, shift = UInt64(8 * b)
            // A byte every key shares leaves the order as it is.
            if counts[base + Int(truncatingIfNeeded: (keys[0] >> shift) & 0xFF)] == n { continue }
            var total = 0
            for v in 0..<256 { offsets[v] = total; total += counts[base + v] }
            offsets.withUnsafeMutableBufferPointer { o in
                for x in from {
                    let v = Int(truncatingIfNeeded: (x >> shift) & 0xFF)
                    to[o[v]] = x
                    o[v] &+= 1
                }
            }
            swap(&from, &to)
        }
        if from.baseAddress != keys.baseAddress {
            _ = keys.update(fromContentsOf: from)
        }
    }

    /// A key whose unsigned order is the order of the doubles (−0 before +0;
    /// callers map −0 to 0 first when they count them as one value).
    static func orderedKey(_ d: Double) -> UInt64 {
        let b = d.bitPattern
        return b & (1 << 63) != 0 ? ~b : b | (1 << 63)
    }

    static func double(orderedKey k: UInt64) -> Double {
        Double(bitPattern: k & (1 << 63) != 0 ? k & ~(1 << 63) : ~k)
    }
}

// Counting equal values of a column: how many distinct values it holds
// (describe), how many rows hold its most common one (the minority rule),
// and, when there are few, each value with its count. Why two ways: a
// site's column of a few thousand rows is tallied fastest in a hash table
// that fits the cache (one pass, where a radix sort of 64-bit keys takes up
// to nine; 35–55% less time on 7,500 rows), but for 10 million rows the
// table's probes miss the cache at every key and it needs hundreds of MB;
// there the radix sort's sequential passes win with one scratch copy.

enum ValueTally {
    /// Columns of at most this many values are tallied by hashing.
    static let hashedLimit = 1 << 16

    struct Tally: Equatable {
        /// Distinct keys.
        var distinct: Int
        /// Rows holding the most common key (0 for no keys).
        var largest: Int
        /// Each key with its count, in increasing key order, when there are
        /// at most the `listLimit` asked for; nil otherwise.
        var listed: [Listed]?
    }

    struct Listed: Equatable { var key: UInt64; var count: Int }

    /// Tallies `keys`; may permute them.
    static func tally(_ keys: UnsafeMutableBufferPointer<UInt64>, listLimit: Int) -> Tally {
        keys.count <= hashedLimit ? hashed(UnsafeBufferPointer(keys), listLimit: listLimit)
                                  : sorted(keys, listLimit: listLimit)
    }

    /// One pass through an open-addressing table of twice the keys' count
    /// (a power of two) holding indices into the distinct keys met so far:
    /// 4 bytes a slot rather than a key and a count, so the table of a site's
    /// column fits the cache. Probed linearly from a mixed hash of the key.
    static func hashed(_ keys: UnsafeBufferPointer<UInt64>, listLimit: Int) -> Tally {
        let n = keys.count
        var bits = 4
        while (1 << bits) < 2 * n { bits += 1 }
        let mask = (1 << bits) - 1
        let slots = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 1 << bits)
        let distinctKeys = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: max(n, 1))
        let counts = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(n, 1))
        defer { slots.deallocate(); distinctKeys.deallocate(); counts.deallocate() }
        slots.initialize(repeating: -1)
        var distinct = 0
        for key in keys {
            var slot = Self.slot(of: key, bits: bits)
            while true {
                let index = Int(slots[slot])
                if index < 0 {
                    slots[slot] = Int32(truncatingIfNeeded: distinct)
                    distinctKeys[distinct] = key
                    counts[distinct] = 1
                    distinct &+= 1
                    break
                }
                if distinctKeys[index] == key { counts[index] &+= 1; break }
                slot = (slot &+ 1) & mask
            }
        }
        var largest: Int32 = 0
        for i in 0..<distinct { largest = max(largest, counts[i]) }
        guard distinct <= listLimit else { return Tally(distinct: distinct, largest: Int(largest), listed: nil) }
        let listed = (0..<distinct).map { Listed(key: distinctKeys[$0], count: Int(counts[$0])) }.sorted { $0.key < $1.key }
        return Tally(distinct: distinct, largest: Int(largest), listed: listed)
    }

    /// The slot of `key` among 2^bits: the top bits of a mixed hash, so
    /// that keys differing only in a few bits (small integers as doubles)
    /// spread as evenly as random ones.
    @inline(__always) static func slot(of key: UInt64, bits: Int) -> Int {
        var h = key
        h = (h ^ (h >> 32)) &* 0xD6E8_FEB8_6659_FD93
        h = (h ^ (h >> 32)) &* 0xD6E8_FEB8_6659_FD93
        return Int(truncatingIfNeeded: h >> UInt64(64 - bits))
    }

    /// Sorts the keys in place (RadixSort) and counts their runs.
    static func sorted(_ keys: UnsafeMutableBufferPointer<UInt64>, listLimit: Int) -> Tally {
        guard !keys.isEmpty else { return Tally(distinct: 0, largest: 0, listed: listLimit >= 0 ? [] : nil) }
        RadixSort.sort(keys)
        var distinct = 0, largest = 0
        var listed: [Listed] = []
        var start = 0, previous = keys[0]
        for k in 1...keys.count {
            if k < keys.count && keys[k] == previous { continue }
            distinct += 1
            largest = max(largest, k - start)
            if distinct <= listLimit { listed.append(Listed(key: previous, count: k - start)) }
            if k < keys.count { start = k; previous = keys[k] }
        }
        return Tally(distinct: distinct, largest: largest, listed: distinct <= listLimit ? listed : nil)
    }
}

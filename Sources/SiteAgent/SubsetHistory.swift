// Row subsets are the unit of protection (DESIGN.md, Disclosure controls).
// Every answer a site gives is a sum over a set of its rows: the rows a
// filter selects, the complete cases a model uses, the rows where a 0/1
// column (a factor level, an interaction cell, missing(x)) is 1. Two answers
// over sets that differ by a few rows describe those rows by subtraction.
// So the site remembers every subset it has answered, keyed by the data
// source the rows come from (not by dataset name: two names over one file
// share a history), and refuses a subset whose symmetric difference with
// one answered before is non-zero but below min_rows. The history lives in
// a SQLite file beside the audit log (`<audit_log>.subsets`) when the agent
// has one, so a restart forgets nothing.

import Foundation
import Synchronization

/// The row sets a site has answered, per data source.
final class SubsetHistory: Sendable {
    private let sets = Mutex<[String: [RowSet]]>([:])
    private let store = Mutex<SubsetStore?>(nil)

    /// Keeps the history in the SQLite database at `path` (beside the audit log),
    /// reading back what earlier runs answered.
    func persist(at path: String) throws {
        let earlier = try store.withLock { held in
            let s = try SubsetStore(path: path)
            let earlier = try s.all()
            held = s
            return earlier
        }
        sets.withLock { all in
            for (source, rows) in earlier where !all[source, default: []].contains(rows) { all[source, default: []].append(rows) }
        }
    }

    /// The smallest non-zero symmetric difference between `rows` and a set
    /// answered before from the same source.
    func closestDifference(_ rows: RowSet, source: String) -> Int? {
        sets.withLock { all in
            all[source, default: []].map { $0.symmetricDifference(rows) }.filter { $0 > 0 }.min()
        }
    }

    /// Whether exactly this set was answered before from `source`.
    func contains(_ rows: RowSet, source: String) -> Bool {
        sets.withLock { $0[source, default: []].contains(rows) }
    }

    /// Records answered sets (after the answer is decided, before it is sent).
    func remember(_ answered: [RowSet], source: String) throws {
        let new: [RowSet] = sets.withLock { all in
            var added: [RowSet] = []
            for r in answered where !all[source, default: []].contains(r) && !added.contains(r) {
                all[source, default: []].append(r); added.append(r)
            }
            return added
        }
        guard !new.isEmpty else { return }
        try store.withLock { s in for r in new { try s?.insert(r, source: source) } }
    }
}

/// The `answered_subsets` table, in a file beside the audit log (which
/// keeps a file of its own). Not Sendable: SubsetHistory keeps it under a Mutex.
final class SubsetStore {
    private let db: SQLiteDatabase

    init(path: String) throws {
        db = try SQLiteDatabase(path: path, mode: .readWriteCreate)
        try db.execute("""
            CREATE TABLE IF NOT EXISTS answered_subsets (
              source TEXT NOT NULL, row_count INTEGER NOT NULL, size INTEGER NOT NULL, rows TEXT NOT NULL,
              UNIQUE (source, rows));
            """)
    }

    func all() throws -> [(String, RowSet)] {
        let s = try SQLiteDatabase.Statement(db, "SELECT source, row_count, rows FROM answered_subsets")
        var out: [(String, RowSet)] = []
        while try s.step() {
            guard let source = s.text(0), let hex = s.text(2), let r = RowSet(hex: hex, rowCount: s.int(1)) else { continue }
            out.append((source, r))
        }
        return out
    }

    func insert(_ r: RowSet, source: String) throws {
        let s = try SQLiteDatabase.Statement(db, "INSERT OR IGNORE INTO answered_subsets (source, row_count, size, rows) VALUES (?, ?, ?, ?)")
        try s.bind(1, source); try s.bind(2, r.rowCount); try s.bind(3, r.count); try s.bind(4, r.hex)
        _ = try s.step()
    }
}

extension RowSet {
    /// The set of `indices` among `rowCount` rows.
    init(indices: [Int], rowCount: Int) {
        var selected = [Bool](repeating: false, count: rowCount)
        for i in indices { selected[i] = true }
        self.init(selected)
    }

    var rowCount: Int { words.count * 64 }

    /// The bits as hexadecimal, for storage.
    var hex: String {
        var out = ""
        out.reserveCapacity(words.count * 16)
        for w in words { out += String(format: "%016llx", w) }
        return out
    }

    init?(hex: String, rowCount: Int) {
        let chars = Array(hex.utf8)
        guard chars.count % 16 == 0, chars.count / 16 * 64 == rowCount else { return nil }
        var words: [UInt64] = []
        var n = 0
        for k in stride(from: 0, to: chars.count, by: 16) {
            guard let w = UInt64(String(decoding: chars[k..<k + 16], as: UTF8.self), radix: 16) else { return nil }
            words.append(w); n += w.nonzeroBitCount
        }
        self.words = words; self.count = n
    }
}

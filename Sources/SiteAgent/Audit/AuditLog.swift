// The agent's audit log: every line it receives and sends, in full, in an
// SQLite database in WAL mode. An answer's entry is committed with
// synchronous = FULL, so that it and every entry before it (the request it
// answers included) are on disk (the WAL fsynced) before `record` returns,
// and the agent writes its answer only after that. Entries are append-only (triggers refuse
// UPDATE and DELETE) and hash-chained (AuditEntry: each entry's SHA-256
// covers the previous entry's hash and its own content), so that an edit, a
// deletion or a reordering is found by `verify`.
//
// Retention (`audit_retention_days`): entries older than the retention are
// removed only as a prefix of the log, and only after a "note" entry
// recording what was removed (first and last sequence numbers, count, time
// range) and the hash of the last removed entry, from which the first kept
// entry's chain continues; `verify` checks the kept entries against it.

import Foundation
import Protocol
import Synchronization

public final class AuditLog: AuditSink, Sendable {
    public let path: String
    /// Entries older than this many days are pruned (nil: kept for ever).
    public let retentionDays: Int?
    /// The database and its statements, used by one thread at a time: SQLite
    /// is opened without its own mutex (SQLITE_OPEN_NOMUTEX).
    private let store: Mutex<Store>
    private struct Store {
        let db: SQLiteDatabase
        var lastPrune: Date?
        var insert: SQLiteDatabase.Statement?
        var head: SQLiteDatabase.Statement?
        /// Whether commits currently fsync the WAL (synchronous = FULL) or only write it (NORMAL).
        var syncing = true
    }
    private let now: @Sendable () -> Date
    /// Longest line stored in full (bytes); `record` refuses a longer one,
    /// and the agent logs its length and digest instead (`recordNote`).
    public let maxEntryBytes: Int

    /// How often a running agent applies its retention (seconds).
    public static let pruneInterval: TimeInterval = 3600

    private static let schema = """
        CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS audit_entries (
            seq INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            direction TEXT NOT NULL,
            peer_subject TEXT NOT NULL,
            peer_fingerprint TEXT NOT NULL,
            session TEXT,
            bytes INTEGER NOT NULL,
            line TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL);
        """
    private static let triggers = """
        CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries
            BEGIN SELECT RAISE(ABORT, 'the fedmix audit log is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries
            BEGIN SELECT RAISE(ABORT, 'the fedmix audit log is append-only; retention prunes it'); END;
        """

    private init(path: String, db: sending SQLiteDatabase, retentionDays: Int?, now: @escaping @Sendable () -> Date,
                 maxEntryBytes: Int = AgentLimits().maxAuditEntryBytes) {
        self.path = path; self.store = Mutex(Store(db: db)); self.retentionDays = retentionDays; self.now = now
        self.maxEntryBytes = min(maxEntryBytes, AgentLimits.auditEntryHardLimit)
    }

    deinit { close() }

    /// Opens (or creates) the log for an agent: WAL mode and synchronous =
    /// FULL (both checked), the chain verified (a log that does not verify
    /// is refused with what to do), then retention applied.
    public static func open(path: String, retentionDays: Int? = nil,
                            now: @escaping @Sendable () -> Date = { Date() },
                            maxEntryBytes: Int = AgentLimits().maxAuditEntryBytes) throws -> AuditLog {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw AuditStoreError(path: path, message: "its folder \(dir) does not exist; create it (writable only by the agent's user)")
        }
        let db = try SQLiteDatabase(path: path, mode: .readWriteCreate)
        _ = try refuseOtherTables(db, path: path)
        let mode = try db.scalarText("PRAGMA journal_mode = WAL")
        guard mode?.lowercased() == "wal" else {
            throw AuditStoreError(path: path, message: "SQLite did not switch to WAL mode (it answered \(mode ?? "nothing")); the log needs a local file system")
        }
        try db.execute("PRAGMA synchronous = FULL")
        let sync = try db.scalarText("PRAGMA synchronous")
        guard sync == "2" else {
            throw AuditStoreError(path: path, message: "SQLite did not accept synchronous = FULL (it answered \(sync ?? "nothing"))")
        }
        try db.execute("PRAGMA secure_delete = ON")
        let log = AuditLog(path: path, db: db, retentionDays: retentionDays, now: now, maxEntryBytes: maxEntryBytes)
        try log.createSchema()
        _ = try log.store.withLock { s in try Self.requireAppendable(s.db, path: path) }
        if retentionDays != nil { _ = try log.applyRetention() }
        return log
    }

    /// What `open` requires of an existing log before the agent adds to it,
    /// checked without writing (`fedmix-agent check` runs it, so that a
    /// check passes exactly when `serve` will accept the log). Returns nil
    /// for a path the agent would create a new log at (no file, or an empty
    /// database), else the verification; throws the same `AuditStoreError`
    /// `open` throws (a database holding other tables, another format, a
    /// chain that does not verify).
    public static func checkBeforeServing(path: String) throws -> AuditVerification? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let db = try SQLiteDatabase(path: path, mode: .readWrite)
        defer { db.close() }
        try db.execute("PRAGMA query_only = 1")
        return try requireAppendable(db, path: path)
    }

    /// The one start-up check of an existing log (`open` and
    /// `checkBeforeServing`): nil when the database holds no log yet.
    private static func requireAppendable(_ db: SQLiteDatabase, path: String) throws -> AuditVerification? {
        let tables = try refuseOtherTables(db, path: path)
        guard tables.contains("audit_entries") else { return nil }
        if tables.contains("audit_meta") {
            let format = try db.scalarText("SELECT value FROM audit_meta WHERE key = 'format'")
            guard format == AuditEntry.format else {
                throw AuditStoreError(path: path, message: "the log is in format \(format ?? "?"); this agent writes \(AuditEntry.format)",
                    fix: "keep this file (and its -wal file, if any) as it is and set \"audit_log\" to a new file; read the old one with the fedmix-agent version that wrote it")
            }
        }
        let check = try verify(db)
        if let problem = check.problem { throw brokenChain(path: path, problem) }
        return check
    }

    /// Why the agent refuses a log whose chain does not verify, and what to do.
    static func brokenChain(path: String, _ problem: AuditProblem) -> AuditStoreError {
        AuditStoreError(path: path, message: """
            the audit log does not verify: \(problem.description) (first bad entry \(problem.seq), \(problem.kind.rawValue)). \
            The agent will not add to a broken audit trail
            """, fix: """
            inspect it with `fedmix-agent audit verify --log \(path)` and `fedmix-agent audit show \(problem.seq) --log \(path)`; \
            keep it as evidence: archive a copy with `sqlite3 \(path) ".backup '\(path).broken'"` (never cp: that loses the -wal file), \
            leave the file and its -wal untouched, report it to the data protection officer, and start a new trail by setting \
            "audit_log" to a new file (e.g. \(newName(path)))
            """)
    }

    /// A suggested name for a new log beside `path`.
    static func newName(_ path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let ext = url.pathExtension, stem = url.deletingPathExtension().lastPathComponent
        let name = stem + "-2" + (ext.isEmpty ? "" : "." + ext)
        return url.deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// The database's own tables; throws when it holds any other (e.g. the site's data).
    private static func refuseOtherTables(_ db: SQLiteDatabase, path: String) throws -> [String] {
        let tables: [String]
        do { tables = try names(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'") } catch {
            throw AuditStoreError(path: path, message: "it cannot be read as an audit log (SQLite: \(db.lastErrorMessage))",
                                  fix: "point \"audit_log\" at the agent's own audit database (a new path starts a new log)")
        }
        if let other = tables.first(where: { $0 != "audit_meta" && $0 != "audit_entries" }) {
            throw AuditStoreError(path: path, message: "this database has other tables (\"\(other)\"); the audit log needs a file of its own",
                                  fix: "set \"audit_log\" to a new file in a folder of its own (e.g. /var/lib/fedmix/audit.db)")
        }
        return tables
    }

    /// Opens an existing log to read it (audit list, show, verify, export):
    /// never creates it, never writes.
    public static func openForReading(path: String) throws -> AuditLog {
        guard FileManager.default.fileExists(atPath: path) else {
            throw AuditStoreError(path: path, message: "no such file (is \"audit_log\" in the configuration the agent's?)")
        }
        let db = try SQLiteDatabase(path: path, mode: .readWrite)
        try db.execute("PRAGMA query_only = 1")
        guard try db.scalarText("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'audit_entries'") != nil else {
            throw AuditStoreError(path: path, message: "not a fedmix audit log (it has no audit_entries table)")
        }
        return AuditLog(path: path, db: db, retentionDays: nil, now: { Date() })
    }

    public func close() {
        store.withLock { s in
            s.insert = nil; s.head = nil
            s.db.close()
        }
    }

    private func createSchema() throws {
        try store.withLock { s in try createSchema(s.db) }
    }

    private func createSchema(_ db: SQLiteDatabase) throws {
        // Refuse a database that holds anything else (e.g. the site's data) before writing to it.
        _ = try Self.refuseOtherTables(db, path: path)
        try db.execute("BEGIN IMMEDIATE")
        do {
            try db.execute(Self.schema + Self.triggers)
            try db.execute("INSERT OR IGNORE INTO audit_meta(key, value) VALUES ('format', '\(AuditEntry.format)')")
            try db.execute("INSERT OR IGNORE INTO audit_meta(key, value) VALUES ('created', '\(AuditEntry.timestamp(now()))')")
            try db.execute("COMMIT")
        } catch { try? db.execute("ROLLBACK"); throw error }
    }

    static func names(_ db: SQLiteDatabase, _ sql: String) throws -> [String] {
        let s = try SQLiteDatabase.Statement(db, sql)
        var out: [String] = []
        while try s.step() { out.append(s.text(0) ?? "") }
        return out
    }

    // MARK: Writing

    /// Writes one line the agent read or is about to send. A line to be
    /// sent is on disk when this returns: its commit fsyncs the WAL, and
    /// with it every entry written before (synchronous = FULL). A line
    /// received is written to the WAL without an fsync of its own (it is
    /// safe from a crash of the agent at once, and from a crash of the
    /// machine with the next answer's fsync, before any answer leaves):
    /// one fsync per request and answer instead of two. A failure throws:
    /// the agent then sends nothing.
    public func record(direction: AuditDirection, peer: PeerIdentity, line: String) throws {
        _ = try append(direction: direction, peer: peer, line: line)
    }

    /// Records a line the agent is about to send and returns the chain head
    /// after it: the entry's sequence number and hash, for the answer's receipt.
    public func recordSent(peer: PeerIdentity, line: String) throws -> AuditHead? {
        let e = try append(direction: .sent, peer: peer, line: line)
        return AuditHead(seq: e.seq, hash: e.hash)
    }

    /// Records a note about a peer's line that is not stored in full (too
    /// long, or not UTF-8): `text` is a small JSON object with its length
    /// and digest. Fsynced like an answer.
    public func recordNote(peer: PeerIdentity, text: String) throws {
        guard text.utf8.count <= 4096 else { throw AuditStoreError(path: path, message: "a note must be short") }
        try store.withLock { s in
            try setSyncing(true, &s)
            try s.db.execute("BEGIN IMMEDIATE")
            do {
                _ = try appendLocked(direction: "note", subject: peer.subject, fingerprint: peer.fingerprint, line: text, bytes: 0, &s)
                try s.db.execute("COMMIT")
            } catch {
                try? s.db.execute("ROLLBACK")
                throw error
            }
        }
    }

    private func append(direction: AuditDirection, peer: PeerIdentity, line: String) throws -> AuditEntry {
        // Never more than the configured maximum per entry (and never near
        // SQLite's 1e9-byte limit or the 2 GiB of a 32-bit length).
        let size = line.utf8.count
        guard size <= maxEntryBytes else {
            throw AuditStoreError(path: path, message: "a line of \(size) bytes exceeds the longest entry stored in full (\(maxEntryBytes) bytes, limits.max_audit_entry_bytes); it was not recorded")
        }
        return try store.withLock { s in
            if let days = retentionDays, s.lastPrune.map({ now().timeIntervalSince($0) >= Self.pruneInterval }) ?? true {
                _ = try pruneLocked(before: now().addingTimeInterval(-Double(days) * 86400), retentionDays: days, &s)
            }
            try setSyncing(direction == .sent, &s)
            try s.db.execute("BEGIN IMMEDIATE")
            do {
                let entry = try appendLocked(direction: direction.rawValue, subject: peer.subject, fingerprint: peer.fingerprint,
                                             line: line, bytes: AuditEntry.wireBytes(line), &s)
                try s.db.execute("COMMIT")
                return entry
            } catch {
                try? s.db.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Commits fsync the WAL (FULL) or not (NORMAL); the caller holds the lock.
    private func setSyncing(_ on: Bool, _ s: inout Store) throws {
        guard on != s.syncing else { return }
        try s.db.execute(on ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
        s.syncing = on
    }

    /// Appends inside an open transaction; the caller holds the lock.
    private func appendLocked(direction: String, subject: String, fingerprint: String, line: String, bytes: Int,
                              _ store: inout Store) throws -> AuditEntry {
        if store.head == nil { store.head = try SQLiteDatabase.Statement(store.db, "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1") }
        let h = store.head!
        h.reset()
        var seq = 1, previous = AuditEntry.genesisHash
        if try h.step() { seq = h.int(0) + 1; previous = h.text(1) ?? "" }
        h.reset()
        let time = AuditEntry.timestamp(now())
        let session = AuditEntry.sessionID(direction: direction, line: line)
        let hash = AuditEntry.computeHash(previousHash: previous, time: time, direction: direction, peerSubject: subject,
                                          peerFingerprint: fingerprint, session: session, bytes: bytes, line: line)
        if store.insert == nil {
            store.insert = try SQLiteDatabase.Statement(store.db, """
                INSERT INTO audit_entries (seq, time, direction, peer_subject, peer_fingerprint, session, bytes, line, prev_hash, hash)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                """)
        }
        let s = store.insert!
        s.reset()
        try s.bind(1, seq); try s.bind(2, time); try s.bind(3, direction); try s.bind(4, subject); try s.bind(5, fingerprint)
        try s.bind(6, session); try s.bind(7, bytes); try s.bind(8, line); try s.bind(9, previous); try s.bind(10, hash)
        _ = try s.step()
        s.reset()
        return AuditEntry(seq: seq, time: time, direction: direction, peerSubject: subject, peerFingerprint: fingerprint,
                          session: session, bytes: bytes, line: line, previousHash: previous, hash: hash)
    }

    // MARK: Retention

    /// What a pruning removed, as its note entry records it.
    public struct Pruned: Codable, Sendable, Equatable {
        public var type = "audit_pruned"
        public var firstSeq: Int
        public var lastSeq: Int
        public var entries: Int
        public var oldestTime: String
        public var newestTime: String
        /// Hash of entry `lastSeq`: entry `keptFrom`'s prev_hash.
        public var anchorHash: String
        public var keptFrom: Int
        public var before: String
        public var retentionDays: Int?
        enum CodingKeys: String, CodingKey {
            case type, entries, before
            case firstSeq = "first_seq", lastSeq = "last_seq", oldestTime = "oldest_time", newestTime = "newest_time"
            case anchorHash = "anchor_hash", keptFrom = "kept_from", retentionDays = "retention_days"
        }
    }

    /// Applies `retentionDays` now; returns the note entry, or nil if nothing was old enough.
    public func applyRetention() throws -> AuditEntry? {
        guard let days = retentionDays else { return nil }
        return try store.withLock { s in try pruneLocked(before: now().addingTimeInterval(-Double(days) * 86400), retentionDays: days, &s) }
    }

    /// Removes the entries older than `cutoff` from the start of the log,
    /// after appending a note entry that records them (never silently).
    public func prune(before cutoff: Date, retentionDays days: Int? = nil) throws -> AuditEntry? {
        try store.withLock { s in try pruneLocked(before: cutoff, retentionDays: days ?? retentionDays, &s) }
    }

    private func pruneLocked(before cutoff: Date, retentionDays: Int?, _ store: inout Store) throws -> AuditEntry? {
        store.lastPrune = now()
        try setSyncing(true, &store)
        let db = store.db
        let limit = AuditEntry.timestamp(cutoff)
        try db.execute("BEGIN IMMEDIATE")
        do {
            let first = try SQLiteDatabase.Statement(db, "SELECT MIN(seq), MAX(seq) FROM audit_entries")
            guard try first.step(), !first.isNull(0) else { try db.execute("COMMIT"); return nil }
            let (lo, hi) = (first.int(0), first.int(1))
            // The prefix older than the cutoff: up to the first entry that is not.
            let keep = try SQLiteDatabase.Statement(db, "SELECT MIN(seq) FROM audit_entries WHERE time >= ?1")
            try keep.bind(1, limit)
            _ = try keep.step()
            let last = keep.isNull(0) ? hi : keep.int(0) - 1
            guard last >= lo else { try db.execute("COMMIT"); return nil }
            let ends = try SQLiteDatabase.Statement(db, "SELECT seq, time, hash FROM audit_entries WHERE seq IN (?1, ?2) ORDER BY seq")
            try ends.bind(1, lo); try ends.bind(2, last)
            var times: [String] = [], anchor = ""
            while try ends.step() { times.append(ends.text(1) ?? ""); anchor = ends.text(2) ?? "" }
            let record = Pruned(firstSeq: lo, lastSeq: last, entries: last - lo + 1, oldestTime: times.first ?? "",
                                newestTime: times.last ?? "", anchorHash: anchor, keptFrom: last + 1, before: limit,
                                retentionDays: retentionDays)
            let e = JSONEncoder(); e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let line = String(decoding: try e.encode(record), as: UTF8.self)
            let note = try appendLocked(direction: "note", subject: "", fingerprint: "", line: line, bytes: 0, &store)
            try db.execute("DROP TRIGGER IF EXISTS audit_entries_no_delete")
            try db.execute("DELETE FROM audit_entries WHERE seq <= \(last)")
            try db.execute(Self.triggers)
            try db.execute("COMMIT")
            return note
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    // MARK: Reading

    private static let columns = "seq, time, direction, peer_subject, peer_fingerprint, session, bytes, line, prev_hash, hash"

    private static func entry(_ s: SQLiteDatabase.Statement) -> AuditEntry {
        AuditEntry(seq: s.int(0), time: s.text(1) ?? "", direction: s.text(2) ?? "", peerSubject: s.text(3) ?? "",
                   peerFingerprint: s.text(4) ?? "", session: s.text(5), bytes: s.int(6), line: s.text(7) ?? "",
                   previousHash: s.text(8) ?? "", hash: s.text(9) ?? "")
    }

    /// Calls `body` with every entry in sequence order (from `since`, if given).
    public func forEach(since: Date? = nil, _ body: (AuditEntry) throws -> Void) throws {
        try store.withLock { store in
            let s: SQLiteDatabase.Statement
            if let since {
                s = try SQLiteDatabase.Statement(store.db, "SELECT \(Self.columns) FROM audit_entries WHERE time >= ?1 ORDER BY seq")
                try s.bind(1, AuditEntry.timestamp(since))
            } else {
                s = try SQLiteDatabase.Statement(store.db, "SELECT \(Self.columns) FROM audit_entries ORDER BY seq")
            }
            while try s.step() { try body(Self.entry(s)) }
        }
    }

    public func entries(since: Date? = nil) throws -> [AuditEntry] {
        var out: [AuditEntry] = []
        try forEach(since: since) { out.append($0) }
        return out
    }

    public func entry(_ seq: Int) throws -> AuditEntry? {
        try store.withLock { store in
            let s = try SQLiteDatabase.Statement(store.db, "SELECT \(Self.columns) FROM audit_entries WHERE seq = ?1")
            try s.bind(1, seq)
            return try s.step() ? Self.entry(s) : nil
        }
    }

    /// The hash of each entry among `seqs` that the log has.
    func entryHashes(_ seqs: [Int]) throws -> [Int: String] {
        try store.withLock { store in
            let lookup = try SQLiteDatabase.Statement(store.db, "SELECT hash FROM audit_entries WHERE seq = ?1")
            var out: [Int: String] = [:]
            for seq in seqs where out[seq] == nil {
                lookup.reset()
                try lookup.bind(1, seq)
                if try lookup.step() { out[seq] = lookup.text(0) ?? "" }
            }
            lookup.reset()
            return out
        }
    }

    public var count: Int {
        store.withLock { store in
            (try? SQLiteDatabase.Statement(store.db, "SELECT COUNT(*) FROM audit_entries")).map { s in
                (try? s.step()) == true ? s.int(0) : 0
            } ?? 0
        }
    }

    /// Sessions each coordinator identity opened (received prepare lines) since `since`:
    /// the first time each (fingerprint, session) appears.
    public func sessionStarts(since: Date) throws -> [(identity: String, time: Date)] {
        var first: [String: (String, String)] = [:]
        try forEach(since: since) { e in
            guard e.direction == "received", e.messageType == "prepare", let session = e.session else { return }
            let key = e.peerFingerprint + "\u{1F}" + session
            if first[key] == nil { first[key] = (e.peerFingerprint, e.time) }
        }
        return first.values.compactMap { id, t in AuditEntry.parseTime(t).map { (id, $0) } }
    }

    // MARK: Verifying

    /// Walks the chain from the first entry to the last and reports the first
    /// entry that was edited, deleted or reordered, if any.
    public func verify() throws -> AuditVerification {
        try store.withLock { store in try Self.verify(store.db) }
    }

    private static func verify(_ db: SQLiteDatabase) throws -> AuditVerification {
        var result = AuditVerification()
        // Where the kept entries start: 1, or where the latest pruning says.
        var startSeq = 1, startHash = AuditEntry.genesisHash
        let notes = try SQLiteDatabase.Statement(db, "SELECT line FROM audit_entries WHERE direction = 'note' ORDER BY seq")
        while try notes.step() {
            if let data = notes.text(0)?.data(using: .utf8), let p = try? JSONDecoder().decode(Pruned.self, from: data),
               p.type == "audit_pruned", p.keptFrom >= startSeq {
                startSeq = p.keptFrom; startHash = p.anchorHash
                result.prunedThrough = p.lastSeq
            }
        }
        let triggers = try Self.names(db, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for t in ["audit_entries_no_update", "audit_entries_no_delete"] where !triggers.contains(t) {
            result.warnings.append("the append-only trigger \(t) is missing: someone removed it")
        }
        let s = try SQLiteDatabase.Statement(db, "SELECT \(Self.columns) FROM audit_entries ORDER BY seq")
        var expectedSeq = startSeq, expectedPrevious = startHash
        var first = true
        while try s.step() {
            let e = Self.entry(s)
            result.entries += 1
            if first { result.firstSeq = e.seq }
            if e.seq != expectedSeq {
                let range = e.seq - expectedSeq == 1 ? "entry \(expectedSeq) was" : "entries \(expectedSeq)…\(e.seq - 1) were"
                let detail = e.seq < expectedSeq ? "entry \(e.seq) appears out of sequence (before \(expectedSeq))"
                    : first ? "the log starts at entry \(e.seq): \(range) deleted, and no recorded pruning removed \(e.seq - expectedSeq == 1 ? "it" : "them")"
                    : "\(range) deleted (the entries jump from \(expectedSeq - 1) to \(e.seq))"
                result.problem = AuditProblem(seq: expectedSeq, kind: .deleted, detail: detail)
                break
            }
            first = false
            if e.computedHash != e.hash {
                result.problem = AuditProblem(seq: e.seq, kind: .edited, detail: "entry \(e.seq) was edited: its content no longer matches its hash")
                break
            }
            if AuditEntry.sessionID(direction: e.direction, line: e.line) != e.session
                || (e.direction != "note" && e.bytes != AuditEntry.wireBytes(e.line)) || !["received", "sent", "note"].contains(e.direction) {
                result.problem = AuditProblem(seq: e.seq, kind: .edited,
                    detail: "entry \(e.seq) was edited: its session, byte count or direction does not match its line (and its hash was recomputed)")
                break
            }
            if e.previousHash != expectedPrevious {
                let other = try SQLiteDatabase.Statement(db, "SELECT seq FROM audit_entries WHERE hash = ?1 AND seq != ?2")
                try other.bind(1, e.previousHash); try other.bind(2, e.seq)
                if try other.step() {
                    let follows = other.int(0)
                    result.problem = AuditProblem(seq: e.seq, kind: .reordered,
                        detail: "entry \(e.seq) is out of order: in the hash chain it follows entry \(follows), not entry \(e.seq - 1)")
                } else if e.seq == startSeq {
                    result.problem = AuditProblem(seq: e.seq, kind: .deleted,
                        detail: "entry \(e.seq) does not continue from \(startSeq == 1 ? "the start of the log" : "the last pruned entry"): entries before it were deleted and the rest renumbered, or it was replaced")
                } else {
                    result.problem = AuditProblem(seq: e.seq, kind: .deleted,
                        detail: "an entry was deleted just before entry \(e.seq) and the later entries renumbered (entry \(e.seq)'s previous hash matches no entry in the log)")
                }
                break
            }
            expectedPrevious = e.hash
            expectedSeq += 1
            result.lastSeq = e.seq
            result.headHash = e.hash
        }
        if result.problem == nil, result.entries == 0, startSeq != 1 {
            result.problem = AuditProblem(seq: startSeq, kind: .deleted, detail: "every entry, including the pruning record, was deleted")
        }
        return result
    }
}

/// What `verify` found.
public struct AuditVerification: Sendable, Equatable {
    public var entries = 0
    public var firstSeq: Int?
    public var lastSeq: Int?
    /// The last entry's hash (record it elsewhere: a log rewritten from the
    /// start with recomputed hashes would end in a different one).
    public var headHash = AuditEntry.genesisHash
    /// Entries up to this one were removed by a recorded pruning.
    public var prunedThrough: Int?
    public var problem: AuditProblem?
    public var warnings: [String] = []
    public var ok: Bool { problem == nil }

    public var summary: String {
        if let problem { return "FAILED: \(problem.description)" }
        var s = entries == 0 ? "verified: the log is empty" : "verified: \(entries) entries, \(firstSeq!)…\(lastSeq!), hash chain intact; head \(headHash)"
        if let p = prunedThrough { s += "; entries 1…\(p) were pruned by retention (recorded in the log)" }
        return s
    }
}

/// The first thing wrong with a log.
public struct AuditProblem: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case edited, deleted, reordered }
    public var seq: Int
    public var kind: Kind
    public var detail: String
    public var description: String { detail }
}

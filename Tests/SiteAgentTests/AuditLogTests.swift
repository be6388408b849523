import XCTest
import Foundation
import CSQLite
import Synchronization
import Protocol
@testable import SiteAgent

/// The audit log: WAL with synchronous FULL, every field of an entry, the
/// documented hash serialization, and `verify` naming the first entry that
/// was edited, deleted or reordered with SQLite directly; retention that
/// records what it removes; many threads writing at once.
final class AuditLogTests: XCTestCase {
    var directory: String!
    var path: String { directory + "/audit.db" }

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-audit-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    static let peer = PeerIdentity(subject: "CN=coordinator", fingerprint: String(repeating: "ab", count: 32))

    /// A log with `n` entries: hello, then describe/prepare/evaluate requests and answers.
    @discardableResult
    func makeLog(_ n: Int, now: @escaping @Sendable () -> Date = { Date() }) throws -> AuditLog {
        let log = try AuditLog.open(path: path, now: now)
        for i in 0..<n {
            let line = i % 2 == 0
                ? "{\"id\":\(i),\"order\":2,\"session\":\"s-\(i / 10)\",\"theta\":[\(0.5 + Double(i))],\"type\":\"evaluate\"}"
                : "{\"id\":\(i - 1),\"log_det\":[1.25],\"rows\":60,\"schur\":{\"cols\":1,\"order\":0,\"parameters\":1,\"rows\":1,\"values\":[3.5]},\"session\":\"s-\(i / 10)\",\"type\":\"contribution\"}"
            try log.record(direction: i % 2 == 0 ? .received : .sent, peer: Self.peer, line: line)
        }
        return log
    }

    /// Runs SQL on the log file directly, as someone with write access to it could.
    func sql(_ statements: String) throws {
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK else { sqlite3_close(db); throw AuditStoreError(path: path, message: "open") }
        defer { sqlite3_close(db) }
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, statements, nil, nil, &message) != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "?"
            sqlite3_free(message)
            throw AuditStoreError(path: path, message: text)
        }
    }

    func verify() throws -> AuditVerification {
        let log = try AuditLog.openForReading(path: path)
        defer { log.close() }
        return try log.verify()
    }

    // MARK: Writing

    func testEveryEntryHoldsItsFieldsAndTheChainVerifies() throws {
        let log = try AuditLog.open(path: path)
        let hello = "{\"max_line_bytes\":16777216,\"protocol\":1,\"role\":\"agent\",\"site\":\"A\",\"software\":\"0.1.0\",\"type\":\"hello\"}"
        let prepare = "{\"dataset\":\"d\",\"id\":1,\"model\":{\"formula\":\"y ~ 1\"},\"session\":\"9f1c\",\"type\":\"prepare\"}"
        let prepared = "{\"id\":1,\"session\":\"9f1c\",\"summary\":{\"groups\":[1],\"missing\":{},\"rows\":60,\"used\":60},\"type\":\"prepared\"}"
        try log.record(direction: .sent, peer: Self.peer, line: hello)
        try log.record(direction: .received, peer: Self.peer, line: prepare)
        try log.record(direction: .sent, peer: Self.peer, line: prepared)
        // WAL, while the agent has the log open.
        XCTAssertTrue(FileManager.default.fileExists(atPath: path + "-wal"), "WAL mode keeps a -wal file")
        let entries = try log.entries()
        XCTAssertEqual(entries.map(\.seq), [1, 2, 3])
        XCTAssertEqual(entries.map(\.direction), ["sent", "received", "sent"])
        XCTAssertEqual(entries.map(\.line), [hello, prepare, prepared], "lines are kept in full, exactly")
        XCTAssertEqual(entries.map(\.session), [nil, "9f1c", "9f1c"])
        XCTAssertEqual(entries.map(\.bytes), [hello, prepare, prepared].map { $0.utf8.count + 1 }, "bytes on the wire, newline included")
        XCTAssertTrue(entries.allSatisfy { $0.peerSubject == "CN=coordinator" && $0.peerFingerprint == Self.peer.fingerprint })
        XCTAssertEqual(entries[0].previousHash, AuditEntry.genesisHash)
        XCTAssertEqual(entries[1].previousHash, entries[0].hash)
        XCTAssertEqual(entries[2].previousHash, entries[1].hash)
        XCTAssertEqual(entries.map(\.messageType), ["hello", "prepare", "prepared"])
        XCTAssertNotNil(AuditEntry.parseTime(entries[0].time))
        XCTAssertEqual(entries[0].time.count, "2026-03-01T09:30:00.125Z".count)
        let v = try log.verify()
        XCTAssertTrue(v.ok, v.summary)
        XCTAssertEqual(v.entries, 3)
        XCTAssertEqual(v.headHash, entries[2].hash)
        XCTAssertEqual(v.summary, "verified: 3 entries, 1…3, hash chain intact; head \(entries[2].hash)")
        log.close()
        // The file says WAL, and a new connection sees synchronous = FULL when the agent sets it.
        var db: OpaquePointer?
        XCTAssertEqual(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil), SQLITE_OK)
        defer { sqlite3_close(db) }
        var s: OpaquePointer?
        XCTAssertEqual(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nil), SQLITE_OK)
        XCTAssertEqual(sqlite3_step(s), SQLITE_ROW)
        XCTAssertEqual(String(cString: sqlite3_column_text(s, 0)), "wal")
        sqlite3_finalize(s)
    }

    /// The hash is SHA-256 over the netstrings documented in AuditEntry.swift
    /// and docs/PRIVACY.md: recomputed here by hand.
    func testHashIsTheDocumentedSerialization() throws {
        let log = try makeLog(2)
        let e = try XCTUnwrap(try log.entry(2))
        func ns(_ s: String) -> String { "\(s.utf8.count):\(s)," }
        let text = [AuditEntry.format, e.previousHash, e.time, e.direction, e.peerSubject, e.peerFingerprint,
                    e.session ?? "", String(e.bytes), e.line].map(ns).joined()
        XCTAssertEqual(SHA256Digest.hex(text), e.hash)
        XCTAssertEqual(e.computedHash, e.hash)
    }

    func testUpdateAndDeleteAreRefusedByTheLogItself() throws {
        try makeLog(4).close()
        XCTAssertThrowsError(try sql("UPDATE audit_entries SET line = '{}' WHERE seq = 2")) {
            XCTAssertTrue("\($0)".contains("append-only"), "\($0)")
        }
        XCTAssertThrowsError(try sql("DELETE FROM audit_entries WHERE seq = 2"))
        XCTAssertTrue(try verify().ok)
    }

    // MARK: Tampering with SQLite directly

    func testEditedEntryIsNamedByVerifyAndStopsTheAgent() throws {
        try makeLog(10).close()
        // Change one number of entry 6's answer, as someone hiding what was sent would.
        try sql("""
            DROP TRIGGER audit_entries_no_update;
            UPDATE audit_entries SET line = replace(line, '"rows":60', '"rows":61') WHERE seq = 6;
            """)
        let v = try verify()
        XCTAssertEqual(v.problem?.seq, 6)
        XCTAssertEqual(v.problem?.kind, .edited)
        XCTAssertEqual(v.summary, "FAILED: entry 6 was edited: its content no longer matches its hash")
        XCTAssertTrue(v.warnings.contains { $0.contains("audit_entries_no_update is missing") }, "\(v.warnings)")
        // The agent refuses to start on it, and says how to look.
        XCTAssertThrowsError(try AuditLog.open(path: path)) { error in
            let m = "\(error)"
            XCTAssertTrue(m.contains("does not verify: entry 6 was edited"), m)
            XCTAssertTrue(m.contains("fedmix-agent audit verify --log \(path)"), m)
            XCTAssertTrue(m.contains("fedmix-agent audit show 6 --log \(path)"), m)
            XCTAssertTrue(m.contains("sqlite3 \(path) \".backup"), m)
        }
        // `fedmix-agent check` runs the same check without writing, and gets the same error.
        var served: AuditStoreError?, checked: AuditStoreError?
        do { _ = try AuditLog.open(path: path) } catch { served = error as? AuditStoreError }
        do { _ = try AuditLog.checkBeforeServing(path: path) } catch { checked = error as? AuditStoreError }
        XCTAssertNotNil(served)
        XCTAssertEqual(checked, served)
    }

    func testEditWithARecomputedHashBreaksTheNextLink() throws {
        try makeLog(10).close()
        // A careful forger recomputes entry 4's hash; entry 5 still points at the old one.
        let log = try AuditLog.openForReading(path: path)
        var e = try XCTUnwrap(try log.entry(4))
        log.close()
        e.line = e.line.replacingOccurrences(of: "3.5", with: "9.5")
        let forged = e.computedHash
        try sql("""
            DROP TRIGGER audit_entries_no_update;
            UPDATE audit_entries SET line = '\(e.line)', hash = '\(forged)' WHERE seq = 4;
            """)
        let v = try verify()
        XCTAssertEqual(v.problem?.seq, 5)
        XCTAssertEqual(v.problem?.kind, .deleted, "entry 5 no longer follows any entry of the log: \(v.summary)")
    }

    func testDeletedEntryIsNamed() throws {
        try makeLog(10).close()
        try sql("DROP TRIGGER audit_entries_no_delete; DELETE FROM audit_entries WHERE seq = 4;")
        let v = try verify()
        XCTAssertEqual(v.problem?.seq, 4)
        XCTAssertEqual(v.problem?.kind, .deleted)
        XCTAssertEqual(v.summary, "FAILED: entry 4 was deleted (the entries jump from 3 to 5)")
        XCTAssertThrowsError(try AuditLog.open(path: path))
    }

    func testDeletedEntryWithTheRestRenumberedIsNamed() throws {
        try makeLog(10).close()
        try sql("""
            DROP TRIGGER audit_entries_no_delete; DROP TRIGGER audit_entries_no_update;
            DELETE FROM audit_entries WHERE seq = 4;
            UPDATE audit_entries SET seq = seq - 1 WHERE seq > 4;
            """)
        let v = try verify()
        XCTAssertEqual(v.problem?.seq, 4)
        XCTAssertEqual(v.problem?.kind, .deleted)
        XCTAssertTrue(v.summary.contains("an entry was deleted just before entry 4"), v.summary)
    }

    func testDeletedFirstEntriesAreNamed() throws {
        try makeLog(10).close()
        try sql("DROP TRIGGER audit_entries_no_delete; DELETE FROM audit_entries WHERE seq <= 2;")
        let v = try verify()
        XCTAssertEqual(v.problem?.seq, 1)
        XCTAssertEqual(v.summary, "FAILED: the log starts at entry 3: entries 1…2 were deleted, and no recorded pruning removed them")
    }

    /// Cutting the last entries leaves a chain that verifies: only the head
    /// hash, recorded elsewhere, shows it (docs/PRIVACY.md says so).
    func testTruncationShowsInTheHeadHash() throws {
        try makeLog(10).close()
        let before = try verify()
        try sql("DROP TRIGGER audit_entries_no_delete; DELETE FROM audit_entries WHERE seq = 10;")
        let after = try verify()
        XCTAssertTrue(after.ok)
        XCTAssertEqual(after.lastSeq, 9)
        XCTAssertNotEqual(after.headHash, before.headHash)
    }

    func testReorderedEntriesAreNamed() throws {
        try makeLog(10).close()
        // Swap entries 5 and 6 (everything but their sequence numbers).
        let cols = "time, direction, peer_subject, peer_fingerprint, session, bytes, line, prev_hash, hash"
        try sql("""
            DROP TRIGGER audit_entries_no_update;
            CREATE TEMP TABLE swap AS SELECT seq, \(cols) FROM audit_entries WHERE seq IN (5, 6);
            UPDATE audit_entries SET (\(cols)) = (SELECT \(cols) FROM swap WHERE swap.seq = 11 - audit_entries.seq) WHERE seq IN (5, 6);
            """)
        let v = try verify()
        XCTAssertEqual(v.problem?.seq, 5)
        XCTAssertEqual(v.problem?.kind, .reordered)
        XCTAssertEqual(v.summary, "FAILED: entry 5 is out of order: in the hash chain it follows entry 6, not entry 4")
    }

    // MARK: Retention

    final class Clock: Sendable {
        let now = Mutex(Date(timeIntervalSince1970: 1_780_000_000))
        func advance(days: Double) { now.withLock { $0 = $0.addingTimeInterval(days * 86400) } }
        var date: Date { now.withLock { $0 } }
    }

    func testRetentionRemovesOldEntriesOnlyWithARecordedNote() throws {
        let clock = Clock()
        try makeLog(6, now: { clock.date }).close()
        clock.advance(days: 20)
        try makeLog(4, now: { clock.date }).close()     // entries 7…10, 20 days later
        clock.advance(days: 15)                           // entries 1…6 are 35 days old, 7…10 15 days
        let log = try AuditLog.open(path: path, retentionDays: 30, now: { clock.date })
        let entries = try log.entries()
        XCTAssertEqual(entries.map(\.seq), [7, 8, 9, 10, 11], "1…6 removed, the note appended")
        let note = try XCTUnwrap(entries.last)
        XCTAssertEqual(note.direction, "note")
        XCTAssertEqual(note.bytes, 0)
        let record = try JSONDecoder().decode(AuditLog.Pruned.self, from: Data(note.line.utf8))
        XCTAssertEqual(record.type, "audit_pruned")
        XCTAssertEqual([record.firstSeq, record.lastSeq, record.entries, record.keptFrom], [1, 6, 6, 7])
        XCTAssertEqual(record.retentionDays, 30)
        XCTAssertEqual(record.anchorHash, entries[0].previousHash, "the kept chain continues from the last removed entry")
        let v = try log.verify()
        XCTAssertTrue(v.ok, v.summary)
        XCTAssertEqual(v.prunedThrough, 6)
        XCTAssertTrue(v.summary.contains("entries 1…6 were pruned by retention (recorded in the log)"), v.summary)
        // More entries, and a second pruning later on: still verifies.
        try log.record(direction: .received, peer: Self.peer, line: "{\"id\":1,\"type\":\"ping\"}")
        clock.advance(days: 20)
        XCTAssertNotNil(try log.applyRetention())
        XCTAssertTrue(try log.verify().ok)
        XCTAssertEqual(try log.entries().first?.seq, 11, "the first note is now old too; entries 7…10 were removed after it")
        log.close()
        // Deleting the pruning record leaves the gap unexplained.
        try sql("DROP TRIGGER audit_entries_no_delete; DELETE FROM audit_entries WHERE direction = 'note' AND line LIKE '%\"kept_from\":11%';")
        let broken = try verify()
        XCTAssertFalse(broken.ok, broken.summary)
    }

    func testNothingIsPrunedWithoutRetention() throws {
        let clock = Clock()
        try makeLog(3, now: { clock.date }).close()
        clock.advance(days: 4000)
        let log = try AuditLog.open(path: path, now: { clock.date })
        XCTAssertEqual(log.count, 3)
        XCTAssertNil(try log.applyRetention())
    }

    // MARK: Threads, sessions, other files

    func testConcurrentRecordsKeepOneChain() throws {
        let log = try AuditLog.open(path: path)
        let threads = 8, each = 40
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for i in 0..<each {
                try! log.record(direction: i % 2 == 0 ? .received : .sent, peer: Self.peer,
                                line: "{\"id\":\(i),\"session\":\"thread-\(t)\",\"type\":\"ping\"}")
            }
        }
        let entries = try log.entries()
        XCTAssertEqual(entries.map(\.seq), Array(1...(threads * each)))
        for t in 0..<threads { XCTAssertEqual(entries.filter { $0.session == "thread-\(t)" }.count, each) }
        XCTAssertTrue(try log.verify().ok)
    }

    func testSessionStartsAreReadBackPerCertificate() throws {
        let log = try AuditLog.open(path: path)
        let other = PeerIdentity(subject: "CN=other", fingerprint: String(repeating: "cd", count: 32))
        for (peer, session) in [(Self.peer, "s1"), (Self.peer, "s1"), (Self.peer, "s2"), (other, "s3")] {
            try log.record(direction: .received, peer: peer,
                           line: "{\"dataset\":\"d\",\"id\":1,\"model\":{},\"session\":\"\(session)\",\"type\":\"prepare\"}")
        }
        try log.record(direction: .received, peer: Self.peer, line: "{\"id\":2,\"order\":0,\"session\":\"s9\",\"theta\":[1],\"type\":\"evaluate\"}")
        let starts = try log.sessionStarts(since: Date().addingTimeInterval(-3600))
        XCTAssertEqual(starts.filter { $0.identity == Self.peer.fingerprint }.count, 2)
        XCTAssertEqual(starts.filter { $0.identity == other.fingerprint }.count, 1)
    }

    func testADatabaseWithOtherTablesIsNotUsed() throws {
        try sql("CREATE TABLE patients (id INTEGER, name TEXT)")
        XCTAssertThrowsError(try AuditLog.open(path: path)) {
            XCTAssertTrue("\($0)".contains("other tables (\"patients\")"), "\($0)")
        }
        XCTAssertThrowsError(try AuditLog.open(path: directory + "/no-such-folder/audit.db")) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
    }

    func testSessionOfASentLineIsItsTopLevelKey() {
        XCTAssertEqual(AuditEntry.sessionID(direction: "sent", line: "{\"blocks\":{\"x\":1},\"id\":3,\"session\":\"a\\\"b\",\"type\":\"prepared\"}"), "a\"b")
        XCTAssertNil(AuditEntry.sessionID(direction: "sent", line: "{\"id\":3,\"message\":\"the \\\"session\\\":\\\"x\\\" key\",\"type\":\"error\"}"))
        XCTAssertEqual(AuditEntry.sessionID(direction: "received", line: "{\"id\":3,\"session\" : \"s\",\"type\":\"evaluate\"}"), "s")
        XCTAssertNil(AuditEntry.sessionID(direction: "received", line: "not json"))
    }

    func testPrettyJSONKeepsEveryTokenAsWritten() {
        let line = "{\"a\":[1e-300,0.1,-2.5e+10],\"b\":{\"c\":\"x, [y]: {z}\",\"d\":[]},\"e\":{}}"
        let pretty = prettyJSON(line)
        XCTAssertEqual(pretty, """
            {
              "a": [1e-300, 0.1, -2.5e+10],
              "b": {
                "c": "x, [y]: {z}",
                "d": []
              },
              "e": {}
            }
            """)
        XCTAssertEqual(pretty.filter { !$0.isWhitespace }, line.filter { !$0.isWhitespace }.replacingOccurrences(of: "", with: ""))
    }
}

// A small read-write SQLite connection for the audit log: open (creating
// the file or not), run statements, bind text and integers, step rows. Not
// thread-safe by itself (opened with SQLITE_OPEN_NOMUTEX), hence not Sendable:
// AuditLog and SubsetHistory keep theirs under a Mutex.

import CSQLite
import Foundation

/// An SQLite failure in the audit log, with the file and SQLite's message.
public struct AuditStoreError: Error, CustomStringConvertible, Equatable {
    public var path: String
    /// What is wrong.
    public var message: String
    /// What to do about it, when there is something particular to do.
    public var fix: String?
    public init(path: String, message: String, fix: String? = nil) { self.path = path; self.message = message; self.fix = fix }
    public var description: String { "audit log \(path): \(message)" + (fix.map { ".\nWhat to do: \($0)" } ?? "") }
}

final class SQLiteDatabase {
    let path: String
    private(set) var handle: OpaquePointer?

    enum Mode { case readWriteCreate, readWrite, readOnly }

    init(path: String, mode: Mode) throws {
        self.path = path
        var flags: Int32 = SQLITE_OPEN_NOMUTEX
        switch mode {
        case .readWriteCreate: flags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
        case .readWrite: flags |= SQLITE_OPEN_READWRITE
        case .readOnly: flags |= SQLITE_OPEN_READONLY
        }
        var h: OpaquePointer?
        let rc = sqlite3_open_v2(path, &h, flags, nil)
        guard rc == SQLITE_OK, let db = h else {
            let message = h.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(h)
            throw AuditStoreError(path: path, message: "cannot open (\(message))")
        }
        handle = db
        sqlite3_busy_timeout(db, 10_000)
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { close() }

    func close() {
        if let h = handle { sqlite3_close_v2(h) }
        handle = nil
    }

    /// SQLite's message for the last call that failed.
    var lastErrorMessage: String { handle.map { String(cString: sqlite3_errmsg($0)) } ?? "closed" }

    func error(_ what: String) -> AuditStoreError {
        AuditStoreError(path: path, message: "\(what): \(handle.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")")
    }

    /// Runs one or more statements that return no rows.
    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(handle, sql, nil, nil, &message) != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw AuditStoreError(path: path, message: text)
        }
    }

    /// The first column of the first row of a statement, as text.
    func scalarText(_ sql: String) throws -> String? {
        let s = try Statement(self, sql)
        return try s.step() ? s.text(0) : nil
    }

    /// A prepared statement; finalized when released.
    final class Statement {
        let db: SQLiteDatabase
        let handle: OpaquePointer

        init(_ db: SQLiteDatabase, _ sql: String) throws {
            self.db = db
            var h: OpaquePointer?
            guard sqlite3_prepare_v2(db.handle, sql, -1, &h, nil) == SQLITE_OK, let s = h else {
                sqlite3_finalize(h)
                throw db.error("cannot prepare \"\(sql.prefix(60))\"")
            }
            handle = s
        }
        deinit { sqlite3_finalize(handle) }

        func bind(_ index: Int32, _ value: String?) throws {
            let rc: Int32
            if let value {
                guard value.utf8.count < Int(Int32.max) else { throw db.error("a value of \(value.utf8.count) bytes is too long to store") }
                rc = value.withCString { sqlite3_bind_text(handle, index, $0, Int32(value.utf8.count), fedmix_sqlite3_transient()) }
            } else {
                rc = sqlite3_bind_null(handle, index)
            }
            guard rc == SQLITE_OK else { throw db.error("cannot bind a value") }
        }
        func bind(_ index: Int32, _ value: Int) throws {
            guard sqlite3_bind_int64(handle, index, Int64(value)) == SQLITE_OK else { throw db.error("cannot bind a value") }
        }

        /// True when a row is ready; false when the statement is done.
        func step() throws -> Bool {
            switch sqlite3_step(handle) {
            case SQLITE_ROW: return true
            case SQLITE_DONE: return false
            default: throw db.error("statement failed")
            }
        }
        func reset() { sqlite3_reset(handle); sqlite3_clear_bindings(handle) }

        func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(handle, column)) }
        func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
        func text(_ column: Int32) -> String? {
            guard sqlite3_column_type(handle, column) != SQLITE_NULL else { return nil }
            guard let p = sqlite3_column_text(handle, column) else { return "" }
            let n = Int(sqlite3_column_bytes(handle, column))
            return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
        }
        /// The column's bytes as SQLite stores them (text, or a blob a tamperer wrote).
        func bytes(_ column: Int32) -> [UInt8] {
            guard let p = sqlite3_column_blob(handle, column) else { return [] }
            let n = Int(sqlite3_column_bytes(handle, column))
            return Array(UnsafeRawBufferPointer(start: p, count: n))
        }
    }
}

import CSQLite
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a table, view or query result from a hospital's SQLite database into
/// a `DataTable`.
///
/// The agent must never change the hospital's data, so the database is opened
/// read-only (`SQLITE_OPEN_READONLY`), the connection is set to
/// `PRAGMA query_only`, ATTACH is disabled, and a query must be a single
/// statement that SQLite itself reports as read-only and that returns columns.
/// A busy timeout lets the read wait for a writer instead of failing at once.
///
/// Column types follow the CSV rules as far as SQLite allows: a column is
/// numeric when every non-NULL value is an INTEGER, a finite REAL, or TEXT
/// that reads as a number under the CSV rule; otherwise it is text, with
/// INTEGERs written as integers ("12", not "12.0"), integral REALs likewise
/// and other REALs in their shortest exact form. Only NULL is missing (an
/// empty string or the text "NA" is a value here, as SQL means it). BLOB values
/// are an error. `types` forces a column's type as for CSV.
///
/// Errors name the file, the table or query, and SQLite's message, but no
/// data value.
public struct SQLiteSource {
    /// How long a read waits for a writer's lock before giving up.
    static let busyTimeoutMilliseconds: Int32 = 5_000

    /// Reads every row of `table` (a table or view; SQLite matches the name
    /// without regard to ASCII case).
    public static func read(path: String, table: String, types: [String: ColumnType] = [:]) throws -> DataTable {
        let target = SQLiteTarget.table(table)
        return try withConnection(path: path, target: target) { db in
            guard try tableExists(db, table, path: path, target: target) else {
                throw DataSourceError.noSuchTable(path: path, table: table)
            }
            let sql = "SELECT * FROM " + quotedIdentifier(table)
            return try withStatement(db, sql: sql, path: path, target: target) { statement in
                try readRows(statement, types: types, path: path, target: target)
            }
        }
    }

    /// Reads the result of `query`, which must be exactly one read-only SQL
    /// statement (a trailing `;`, blanks and comments are fine).
    public static func read(path: String, query: String, types: [String: ColumnType] = [:]) throws -> DataTable {
        let target = SQLiteTarget.query(query)
        return try withConnection(path: path, target: target) { db in
            try withStatement(db, sql: query, path: path, target: target) { statement in
                try readRows(statement, types: types, path: path, target: target)
            }
        }
    }

    /// `name` as an SQL identifier: in double quotes, inner quotes doubled, so
    /// that any table name (spaces, keywords, quotes) reads as a name, never as SQL.
    static func quotedIdentifier(_ name: String) -> String {
        var quoted = "\""
        for scalar in name.unicodeScalars {
            if scalar == "\"" { quoted += "\"\"" } else { quoted.unicodeScalars.append(scalar) }
        }
        return quoted + "\""
    }

    // MARK: Connection

    /// Opens the database read-only, configures it, runs `body`, and closes
    /// the handle on every path, including a failed open.
    static func withConnection<T>(path: String, target: SQLiteTarget,
                                  _ body: (OpaquePointer) throws -> T) throws -> T {
        // SQLite's own message for a missing file ("unable to open database
        // file") does not say which of several reasons it is.
        var info = stat()
        if stat(path, &info) != 0 {
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw DataSourceError.fileNotFound(path: path) }
            throw DataSourceError.unreadable(path: path, reason: CSVReader.systemMessage(code))
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            throw DataSourceError.unreadable(path: path, reason: CSVReader.systemMessage(EISDIR))
        }

        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil)
        defer { sqlite3_close_v2(handle) }
        guard rc == SQLITE_OK, let db = handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            throw DataSourceError.sqliteOpenFailed(path: path, message: message)
        }
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0)
        var errorText: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, "PRAGMA query_only = 1", nil, nil, &errorText) != SQLITE_OK {
            let message = errorText.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(errorText)
            throw DataSourceError.sqlite(path: path, target: target, message: message)
        }
        return try body(db)
    }

    /// Whether a table or view of that name exists (in the main database).
    static func tableExists(_ db: OpaquePointer, _ table: String, path: String, target: SQLiteTarget) throws -> Bool {
        let sql = "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE LIMIT 1"
        return try withStatement(db, sql: sql, path: path, target: target) { statement in
            let bound = table.withCString { name in
                sqlite3_bind_text(statement, 1, name, Int32(table.utf8.count), fedmix_sqlite3_transient())
            }
            guard bound == SQLITE_OK else { throw sqliteError(db, path: path, target: target) }
            switch sqlite3_step(statement) {
            case SQLITE_ROW: return true
            case SQLITE_DONE: return false
            default: throw sqliteError(db, path: path, target: target)
            }
        }
    }

    /// Prepares `sql` as exactly one read-only statement returning columns,
    /// runs `body`, and finalizes the statement on every path.
    static func withStatement<T>(_ db: OpaquePointer, sql: String, path: String, target: SQLiteTarget,
                                 _ body: (OpaquePointer) throws -> T) throws -> T {
        let text = Array(sql.utf8CString)
        var handle: OpaquePointer?
        defer { sqlite3_finalize(handle) }
        try text.withUnsafeBufferPointer { chars in
            var tail: UnsafePointer<CChar>?
            let rc = sqlite3_prepare_v2(db, chars.baseAddress, Int32(chars.count), &handle, &tail)
            guard rc == SQLITE_OK else { throw sqliteError(db, path: path, target: target) }
            // Anything after the first statement other than blanks and
            // comments is a second statement: refuse it, even if it would fail.
            // Empty statements (";;") prepare to nothing, so keep going to the end.
            var rest = tail
            while let current = rest, current.pointee != 0 {
                var extra: OpaquePointer?
                var next: UnsafePointer<CChar>?
                let extraRC = sqlite3_prepare_v2(db, current, -1, &extra, &next)
                let isStatement = extraRC != SQLITE_OK || extra != nil
                sqlite3_finalize(extra)
                if isStatement { throw DataSourceError.notSingleStatement(path: path, target: target) }
                if next == nil || next == current { break }
                rest = next
            }
        }
        guard let statement = handle else {
            throw DataSourceError.notSingleStatement(path: path, target: target)
        }
        guard sqlite3_stmt_readonly(statement) != 0 else {
            throw DataSourceError.notReadOnly(path: path, target: target)
        }
        guard sqlite3_column_count(statement) > 0 else {
            throw DataSourceError.noResultColumns(path: path, target: target)
        }
        return try body(statement)
    }

    static func sqliteError(_ db: OpaquePointer, path: String, target: SQLiteTarget) -> DataSourceError {
        .sqlite(path: path, target: target, message: String(cString: sqlite3_errmsg(db)))
    }

    // MARK: Rows

    /// One column's values while the rows are read, before its type is
    /// known: every value as a number (nil for NULL and for values that are
    /// not numbers), which is the column itself when it turns out numeric,
    /// and, only once a value needs it, each row's text where it cannot be
    /// rendered back from the number (TEXT values, non-finite REALs,
    /// INTEGERs beyond 2⁵³). A numeric column costs 8 bytes per row
    /// (NumericValues) instead of a tagged cell with room for a String (32):
    /// 10 million rows of six columns read in 0.48 GB, not 1.9 GB.
    struct ColumnBuilder {
        var numbers = NumericValues()
        /// Nil until a row needs its own text; then nil entries mean "render the number".
        var texts: [String?]? = nil
        /// The first row (0-based) whose value is not a number, NULL aside.
        var firstNonNumber: Int? = nil

        mutating func keepText(_ text: String) {
            if texts == nil { texts = [String?](repeating: nil, count: numbers.count - 1) }
            texts!.append(text)
        }

        mutating func appendNull() { numbers.append(nil); texts?.append(nil) }

        mutating func appendInteger(_ v: Int64) {
            numbers.append(Double(v))
            // ValueRules.render writes integral doubles below 2⁵³ as the integer they are.
            if v.magnitude < 9_007_199_254_740_992 { texts?.append(nil) } else { keepText(String(v)) }
        }

        mutating func appendReal(_ v: Double) {
            if v.isFinite { numbers.append(v); texts?.append(nil); return }
            if firstNonNumber == nil { firstNonNumber = numbers.count }
            numbers.append(nil)
            keepText(ValueRules.render(v))
        }

        mutating func appendText(_ text: String, number: Double?) {
            if number == nil && firstNonNumber == nil { firstNonNumber = numbers.count }
            numbers.append(number)
            keepText(text)
        }
    }

    static func readRows(_ statement: OpaquePointer, types: [String: ColumnType],
                         path: String, target: SQLiteTarget) throws -> DataTable {
        let db = sqlite3_db_handle(statement)!
        let columnCount = Int(sqlite3_column_count(statement))
        var names: [String] = []
        var seen = Set<String>()
        for c in 0..<columnCount {
            guard let raw = sqlite3_column_name(statement, Int32(c)) else {
                throw DataSourceError.sqlite(path: path, target: target, message: "out of memory reading column names")
            }
            let name = String(cString: raw)
            if name.isEmpty || !seen.insert(name).inserted {
                throw DataSourceError.badResultColumnName(path: path, target: target, name: name)
            }
            names.append(name)
        }
        for name in types.keys.sorted() where !seen.contains(name) {
            throw DataSourceError.sqliteUnknownColumn(path: path, target: target, column: name)
        }

        var builders = [ColumnBuilder](repeating: ColumnBuilder(), count: columnCount)
        var rowCount = 0
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw sqliteError(db, path: path, target: target) }
            rowCount += 1
            for c in 0..<columnCount {
                let index = Int32(c)
                switch sqlite3_column_type(statement, index) {
                case SQLITE_NULL:
                    builders[c].appendNull()
                case SQLITE_INTEGER:
                    builders[c].appendInteger(sqlite3_column_int64(statement, index))
                case SQLITE_FLOAT:
                    builders[c].appendReal(sqlite3_column_double(statement, index))
                case SQLITE_TEXT:
                    let count = Int(sqlite3_column_bytes(statement, index))
                    guard count > 0, let bytes = sqlite3_column_text(statement, index) else {
                        builders[c].appendText("", number: nil)
                        continue
                    }
                    if ValueRules.firstInvalidUTF8(bytes, 0, count) != nil {
                        throw DataSourceError.sqliteInvalidUTF8(path: path, target: target, row: rowCount, column: names[c])
                    }
                    let string = String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
                    builders[c].appendText(string, number: ValueRules.parseNumber(bytes, 0, count))
                default:
                    throw DataSourceError.blobColumn(path: path, target: target, column: names[c])
                }
            }
        }

        var columns: [DataTable.Column] = []
        columns.reserveCapacity(columnCount)
        for c in 0..<columnCount {
            let data = try buildColumn(builders[c], name: names[c], forced: types[names[c]], path: path, target: target)
            builders[c] = ColumnBuilder()
            columns.append(DataTable.Column(name: names[c], data: data))
        }
        return DataTable(columns: columns, rowCount: rowCount)
    }

    /// Numeric if every value is a number (or the column is forced numeric), else text.
    static func buildColumn(_ b: ColumnBuilder, name: String, forced: ColumnType?,
                            path: String, target: SQLiteTarget) throws -> DataTable.ColumnData {
        if forced != .text {
            guard let row = b.firstNonNumber else { return .numeric(b.numbers) }
            if forced == .numeric { throw DataSourceError.sqliteNotNumeric(path: path, target: target, row: row + 1, column: name) }
        }
        return .text(b.numbers.indices.map { i in b.texts?[i] ?? b.numbers[i].map(ValueRules.render) })
    }
}

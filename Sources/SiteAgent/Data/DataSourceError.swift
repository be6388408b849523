/// Which part of a SQLite database a read was about, so that an error can say
/// where to look without the hospital having to guess.
public enum SQLiteTarget: Sendable, Equatable, CustomStringConvertible {
    case table(String)
    case query(String)

    public var description: String {
        switch self {
        case .table(let name): return "table \"\(name)\""
        case .query(let sql):
            // One line, and short: the query is configuration, but a long one
            // would drown the message.
            let oneLine = sql.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
            let shown = oneLine.count > 200 ? String(oneLine.prefix(200)) + "…" : oneLine
            return "query \"\(shown)\""
        }
    }
}

/// Why a site's data could not be read.
///
/// These messages are for the site's own operators (`fedmix-agent check`, the
/// agent's standard-error log): they name files, line or row numbers, columns,
/// tables and queries, but never a data value from the file or database. A
/// peer is told only that the dataset could not be read (SiteError.datasetUnreadable).
public enum DataSourceError: Error, CustomStringConvertible, Equatable, Sendable {
    // Files (CSV and SQLite).
    /// The path does not exist.
    case fileNotFound(path: String)
    /// The path exists but could not be read (permissions, a directory, I/O).
    case unreadable(path: String, reason: String)

    // CSV structure. `source` is the path, or the name given to `parse`.
    /// Nothing but blank lines (or a byte-order mark): there is no header row.
    case emptyFile(source: String)
    /// A header field is empty; `position` is 1-based.
    case emptyColumnName(source: String, line: Int, position: Int)
    /// Two header fields have the same name.
    case duplicateColumnName(source: String, line: Int, name: String)
    /// A record has a different number of fields from the header.
    case wrongFieldCount(source: String, line: Int, found: Int, expected: Int)
    /// A quoted field opened on `line` never closes.
    case unterminatedQuote(source: String, line: Int)
    /// A double quote inside a field that does not start with one.
    case quoteInUnquotedField(source: String, line: Int)
    /// Characters between a closing quote and the next comma or line end.
    case textAfterClosingQuote(source: String, line: Int)
    /// Bytes that are not UTF-8.
    case invalidUTF8(source: String, line: Int)
    /// A column declared numeric holds something that is not a number.
    case notNumeric(source: String, line: Int, column: String)
    /// A type override names a column the data does not have.
    case unknownColumn(source: String, column: String)

    // SQLite.
    /// SQLite could not open the file as a database.
    case sqliteOpenFailed(path: String, message: String)
    /// SQLite reported an error while preparing or running the read.
    case sqlite(path: String, target: SQLiteTarget, message: String)
    /// The configured table (or view) is not in the database.
    case noSuchTable(path: String, table: String)
    /// The query text holds no statement, or more than one.
    case notSingleStatement(path: String, target: SQLiteTarget)
    /// The query could change the database; only reads are allowed.
    case notReadOnly(path: String, target: SQLiteTarget)
    /// The statement returns no columns (it is not a query).
    case noResultColumns(path: String, target: SQLiteTarget)
    /// The result has two columns with the same name, or an unnamed one.
    case badResultColumnName(path: String, target: SQLiteTarget, name: String)
    /// A result column holds BLOB values, which have no place in a model.
    case blobColumn(path: String, target: SQLiteTarget, column: String)
    /// A column declared numeric holds a value that is not a number; `row` is 1-based.
    case sqliteNotNumeric(path: String, target: SQLiteTarget, row: Int, column: String)
    /// A TEXT value is not valid UTF-8; `row` is 1-based.
    case sqliteInvalidUTF8(path: String, target: SQLiteTarget, row: Int, column: String)
    /// A type override names a column the result does not have.
    case sqliteUnknownColumn(path: String, target: SQLiteTarget, column: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "\(path): file not found"
        case .unreadable(let path, let reason):
            return "\(path): cannot read the file (\(reason))"
        case .emptyFile(let source):
            return "\(source): the file is empty (a header row is required)"
        case .emptyColumnName(let source, let line, let position):
            return "\(source), line \(line): column \(position) of the header has no name"
        case .duplicateColumnName(let source, let line, let name):
            return "\(source), line \(line): the header names column \"\(name)\" more than once"
        case .wrongFieldCount(let source, let line, let found, let expected):
            return "\(source), line \(line): \(found) field\(found == 1 ? "" : "s"), the header has \(expected)"
        case .unterminatedQuote(let source, let line):
            return "\(source), line \(line): a quoted field opened on this line is never closed"
        case .quoteInUnquotedField(let source, let line):
            return "\(source), line \(line): a double quote inside a field that is not quoted"
        case .textAfterClosingQuote(let source, let line):
            return "\(source), line \(line): characters after the closing quote of a field"
        case .invalidUTF8(let source, let line):
            return "\(source), line \(line): the text is not valid UTF-8"
        case .notNumeric(let source, let line, let column):
            return "\(source), line \(line): column \"\(column)\" is declared numeric but holds a value that is not a number"
        case .unknownColumn(let source, let column):
            return "\(source): a column type is given for \"\(column)\", which is not a column of the file"
        case .sqliteOpenFailed(let path, let message):
            return "\(path): cannot open the SQLite database: \(message)"
        case .sqlite(let path, let target, let message):
            return "\(path), \(target): SQLite error: \(message)"
        case .noSuchTable(let path, let table):
            return "\(path): no table or view named \"\(table)\""
        case .notSingleStatement(let path, let target):
            return "\(path), \(target): the query must be exactly one SQL statement"
        case .notReadOnly(let path, let target):
            return "\(path), \(target): the query would change the database; only read-only queries are allowed"
        case .noResultColumns(let path, let target):
            return "\(path), \(target): the statement returns no columns"
        case .badResultColumnName(let path, let target, let name):
            return name.isEmpty
                ? "\(path), \(target): a result column has no name"
                : "\(path), \(target): more than one result column is named \"\(name)\""
        case .blobColumn(let path, let target, let column):
            return "\(path), \(target): column \"\(column)\" holds BLOB values, which cannot be used"
        case .sqliteNotNumeric(let path, let target, let row, let column):
            return "\(path), \(target), row \(row): column \"\(column)\" is declared numeric but holds a value that is not a number"
        case .sqliteInvalidUTF8(let path, let target, let row, let column):
            return "\(path), \(target), row \(row): column \"\(column)\" holds text that is not valid UTF-8"
        case .sqliteUnknownColumn(let path, let target, let column):
            return "\(path), \(target): a column type is given for \"\(column)\", which is not a column of the result"
        }
    }
}

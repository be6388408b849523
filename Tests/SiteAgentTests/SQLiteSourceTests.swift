import XCTest
import Foundation
import CSQLite
@testable import SiteAgent

final class SQLiteSourceTests: XCTestCase {

    // MARK: Helpers

    private var directory: URL!
    private var path: String!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("site.db").path
        try execute("""
            CREATE TABLE visits (id INTEGER, age REAL, sex TEXT, dose, ward TEXT, note TEXT);
            INSERT INTO visits VALUES (1, 34.5, 'F', 10,   '007', 'first');
            INSERT INTO visits VALUES (2, NULL, 'M', 2.5,  '12',  NULL);
            INSERT INTO visits VALUES (3, 61,   NULL, ' 4 ', '3.5', 'third, with comma');
            INSERT INTO visits VALUES (4, 40.25, 'F', NULL, NULL, '');
            """)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs SQL through a separate read-write connection, as the hospital would.
    private func execute(_ sql: String, at file: String? = nil) throws {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(file ?? path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil)
        defer { sqlite3_close_v2(db) }
        guard rc == SQLITE_OK, let db else { throw TestError("open failed: \(rc)") }
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &message) != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "?"
            sqlite3_free(message)
            throw TestError(text)
        }
    }

    /// A single integer from a read-write connection (for checking that nothing changed).
    private func count(_ sql: String) throws -> Int64 {
        var db: OpaquePointer?
        defer { sqlite3_close_v2(db) }
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK, let db else { throw TestError("open") }
        var statement: OpaquePointer?
        defer { sqlite3_finalize(statement) }
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK,
              sqlite3_step(statement) == SQLITE_ROW else { throw TestError(String(cString: sqlite3_errmsg(db))) }
        return sqlite3_column_int64(statement, 0)
    }

    struct TestError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private func numbers(_ table: DataTable, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> [Double?] {
        guard case .numeric(let values)? = table.column(named: name)?.data else {
            XCTFail("column \(name) is missing or not numeric", file: file, line: line); return []
        }
        return Array(values)
    }

    private func strings(_ table: DataTable, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> [String?] {
        guard case .text(let values)? = table.column(named: name)?.data else {
            XCTFail("column \(name) is missing or not text", file: file, line: line); return []
        }
        return values
    }

    private func assertError(_ expected: DataSourceError, file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> Any) {
        do {
            _ = try body()
            XCTFail("expected \(expected)", file: file, line: line)
        } catch let error as DataSourceError {
            XCTAssertEqual(error, expected, file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    // MARK: Tables

    func testReadsATableWithInferredTypesAndNulls() throws {
        let table = try SQLiteSource.read(path: path, table: "visits")
        XCTAssertEqual(table.rowCount, 4)
        XCTAssertEqual(table.columnNames, ["id", "age", "sex", "dose", "ward", "note"])
        XCTAssertEqual(numbers(table, "id"), [1, 2, 3, 4])
        XCTAssertEqual(numbers(table, "age"), [34.5, nil, 61, 40.25])
        XCTAssertEqual(strings(table, "sex"), ["F", "M", nil, "F"])
        // INTEGER, REAL and number-like TEXT make a numeric column.
        XCTAssertEqual(numbers(table, "dose"), [10, 2.5, 4, nil])
        XCTAssertEqual(numbers(table, "ward"), [7, 12, 3.5, nil])
        // Only NULL is missing; the empty string is a value.
        XCTAssertEqual(strings(table, "note"), ["first", nil, "third, with comma", ""])
    }

    func testNumbersInATextColumnAreRenderedAsText() throws {
        try execute("""
            CREATE TABLE mixed (v);
            INSERT INTO mixed VALUES (3), (2.5), (4.0), ('x'), (9007199254740993), (-12), (1e-7), (NULL);
            """)
        let table = try SQLiteSource.read(path: path, table: "mixed")
        XCTAssertEqual(strings(table, "v"), ["3", "2.5", "4", "x", "9007199254740993", "-12", "1e-07", nil])
    }

    func testTableNamesAreQuotedAndMatchedWithoutCase() throws {
        try execute("""
            CREATE TABLE "odd ""name"", select" (x INTEGER);
            INSERT INTO "odd ""name"", select" VALUES (5);
            CREATE VIEW adults AS SELECT id, age FROM visits WHERE age >= 40;
            """)
        XCTAssertEqual(numbers(try SQLiteSource.read(path: path, table: "odd \"name\", select"), "x"), [5])
        XCTAssertEqual(numbers(try SQLiteSource.read(path: path, table: "VISITS"), "id"), [1, 2, 3, 4])
        XCTAssertEqual(numbers(try SQLiteSource.read(path: path, table: "adults"), "id"), [3, 4])
    }

    func testEmptyTableGivesColumnsWithoutRows() throws {
        try execute("CREATE TABLE empty (a INTEGER, b TEXT);")
        let table = try SQLiteSource.read(path: path, table: "empty")
        XCTAssertEqual(table.rowCount, 0)
        XCTAssertEqual(table.columnNames, ["a", "b"])
        XCTAssertEqual(numbers(table, "b"), [])
    }

    func testMissingTableIsAnError() {
        assertError(.noSuchTable(path: path, table: "visit")) { try SQLiteSource.read(path: path, table: "visit") }
        // A name that looks like SQL is only ever a name.
        assertError(.noSuchTable(path: path, table: "visits; DROP TABLE visits")) {
            try SQLiteSource.read(path: path, table: "visits; DROP TABLE visits")
        }
        XCTAssertEqual(try count("SELECT count(*) FROM visits"), 4)
    }

    // MARK: Queries

    func testReadsAQuery() throws {
        let table = try SQLiteSource.read(path: path, query: """
            -- adults only
            SELECT id, age * 2 AS twice, upper(sex) AS s
            FROM visits WHERE id > 1 ORDER BY id;
            """)
        XCTAssertEqual(table.rowCount, 3)
        XCTAssertEqual(numbers(table, "id"), [2, 3, 4])
        XCTAssertEqual(numbers(table, "twice"), [nil, 122, 80.5])
        XCTAssertEqual(strings(table, "s"), ["M", nil, "F"])
        // A trailing semicolon, blanks and comments are not a second statement.
        XCTAssertEqual(try SQLiteSource.read(path: path, query: "SELECT 1 AS one; ; -- done\n /* end */ ").rowCount, 1)
    }

    func testTrailingStatementsAreRefused() throws {
        for sql in ["SELECT 1; SELECT 2", "SELECT id FROM visits; DROP TABLE visits", "SELECT 1;; DELETE FROM visits",
                    "SELECT 1; garbage"] {
            assertError(.notSingleStatement(path: path, target: .query(sql))) {
                try SQLiteSource.read(path: path, query: sql)
            }
        }
        for sql in ["", "  -- nothing\n", ";"] {
            assertError(.notSingleStatement(path: path, target: .query(sql))) {
                try SQLiteSource.read(path: path, query: sql)
            }
        }
        XCTAssertEqual(try count("SELECT count(*) FROM visits"), 4)
    }

    func testWriteStatementsAreRefusedAndChangeNothing() throws {
        for sql in ["DELETE FROM visits", "INSERT INTO visits (id) VALUES (99)", "UPDATE visits SET age = 0 RETURNING id",
                    "DROP TABLE visits", "CREATE TABLE x (a)",
                    "WITH d AS (SELECT 1) INSERT INTO visits (id) SELECT * FROM d RETURNING id"] {
            assertError(.notReadOnly(path: path, target: .query(sql))) {
                try SQLiteSource.read(path: path, query: sql)
            }
        }
        XCTAssertEqual(try count("SELECT count(*) FROM visits"), 4)
        XCTAssertEqual(try count("SELECT count(*) FROM visits WHERE age = 0"), 0)
        XCTAssertEqual(try count("SELECT count(*) FROM sqlite_master WHERE name = 'x'"), 0)
    }

    func testStatementsWithoutResultsAndAttachAreRefused() throws {
        for sql in ["PRAGMA query_only = 0", "BEGIN", "ANALYZE"] {
            do {
                _ = try SQLiteSource.read(path: path, query: sql)
                XCTFail("\(sql) should be refused")
            } catch let error as DataSourceError {
                switch error {
                case .noResultColumns, .notReadOnly: break
                default: XCTFail("\(sql): \(error)")
                }
            }
        }
        let other = directory.appendingPathComponent("other.db").path
        let attach = "ATTACH DATABASE '\(other)' AS other"
        XCTAssertThrowsError(try SQLiteSource.read(path: path, query: attach))
        XCTAssertFalse(FileManager.default.fileExists(atPath: other))
    }

    func testConnectionIsReadOnlyEvenForReadOnlyLookingStatements() throws {
        // A read-only statement that writes through a side door still cannot:
        // the connection itself refuses writes.
        try execute("CREATE TABLE log (n INTEGER); CREATE VIEW v AS SELECT n FROM log;")
        XCTAssertThrowsError(try SQLiteSource.read(path: path, query: "PRAGMA user_version = 7"))
        XCTAssertEqual(try count("PRAGMA user_version"), 0)
        XCTAssertThrowsError(try SQLiteSource.read(path: path, query: "VACUUM"))
        XCTAssertEqual(numbers(try SQLiteSource.read(path: path, query: "PRAGMA query_only"), "query_only"), [1])
    }

    func testTheSourcesConnectionRefusesWritesItself() throws {
        // Beneath the statement checks, the handle the source reads through is
        // read-only: a write sent straight to it fails and changes nothing.
        let rc = try SQLiteSource.withConnection(path: path, target: .table("visits")) { db -> Int32 in
            XCTAssertEqual(sqlite3_db_readonly(db, "main"), 1)
            return sqlite3_exec(db, "DELETE FROM visits", nil, nil, nil)
        }
        XCTAssertNotEqual(rc, SQLITE_OK)
        XCTAssertEqual(try count("SELECT count(*) FROM visits"), 4)
    }

    func testSyntaxErrorsCarrySQLitesMessage() {
        let sql = "SELEC id FROM visits"
        do {
            _ = try SQLiteSource.read(path: path, query: sql)
            XCTFail("expected an error")
        } catch let error as DataSourceError {
            guard case .sqlite(let file, let target, let message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(file, path)
            XCTAssertEqual(target, .query(sql))
            XCTAssertTrue(message.contains("syntax error"), message)
            XCTAssertTrue("\(error)".contains("query \"SELEC id FROM visits\""), "\(error)")
            XCTAssertTrue("\(error)".hasPrefix(path), "\(error)")
        } catch {
            XCTFail("\(error)")
        }
        assertError(.sqlite(path: path, target: .query("SELECT nope FROM visits"), message: "no such column: nope")) {
            try SQLiteSource.read(path: path, query: "SELECT nope FROM visits")
        }
    }

    func testDuplicateResultColumnNamesAreRefused() {
        let sql = "SELECT id, age AS id FROM visits"
        assertError(.badResultColumnName(path: path, target: .query(sql), name: "id")) {
            try SQLiteSource.read(path: path, query: sql)
        }
    }

    // MARK: Values

    func testBlobColumnIsAnErrorNamingTheColumn() throws {
        try execute("CREATE TABLE images (id INTEGER, scan BLOB); INSERT INTO images VALUES (1, NULL), (2, x'00ff');")
        assertError(.blobColumn(path: path, target: .table("images"), column: "scan")) {
            try SQLiteSource.read(path: path, table: "images")
        }
        // NULLs in a BLOB-declared column are fine: only values count.
        XCTAssertEqual(numbers(try SQLiteSource.read(path: path, query: "SELECT scan FROM images WHERE id = 1"), "scan"), [nil])
    }

    func testTypeOverrides() throws {
        let table = try SQLiteSource.read(path: path, table: "visits", types: ["id": .text, "ward": .text, "age": .numeric])
        XCTAssertEqual(strings(table, "id"), ["1", "2", "3", "4"])
        XCTAssertEqual(strings(table, "ward"), ["007", "12", "3.5", nil])
        XCTAssertEqual(numbers(table, "age"), [34.5, nil, 61, 40.25])

        try execute("INSERT INTO visits VALUES (5, 'secret-age', 'F', 1, '1', 'x');")
        assertError(.sqliteNotNumeric(path: path, target: .table("visits"), row: 5, column: "age")) {
            try SQLiteSource.read(path: path, table: "visits", types: ["age": .numeric])
        }
        do {
            _ = try SQLiteSource.read(path: path, table: "visits", types: ["age": .numeric])
        } catch {
            XCTAssertFalse("\(error)".contains("secret"), "\(error)")
        }
        // Without the override the column becomes text.
        XCTAssertEqual(strings(try SQLiteSource.read(path: path, table: "visits"), "age"),
                       ["34.5", nil, "61", "40.25", "secret-age"])

        assertError(.sqliteUnknownColumn(path: path, target: .table("visits"), column: "weight")) {
            try SQLiteSource.read(path: path, table: "visits", types: ["weight": .numeric])
        }
    }

    func testNonFiniteRealsAreNotNumbers() throws {
        try execute("CREATE TABLE r (v REAL); INSERT INTO r VALUES (1.5), (9e999);")
        XCTAssertEqual(strings(try SQLiteSource.read(path: path, table: "r"), "v"), ["1.5", "inf"])
        assertError(.sqliteNotNumeric(path: path, target: .table("r"), row: 2, column: "v")) {
            try SQLiteSource.read(path: path, table: "r", types: ["v": .numeric])
        }
    }

    func testInvalidUTF8TextIsAnError() throws {
        try execute("CREATE TABLE t (name TEXT); INSERT INTO t VALUES ('ok'), (CAST(x'c328' AS TEXT));")
        assertError(.sqliteInvalidUTF8(path: path, target: .table("t"), row: 2, column: "name")) {
            try SQLiteSource.read(path: path, table: "t")
        }
    }

    func testReadsAWALDatabase() throws {
        let wal = directory.appendingPathComponent("wal.db").path
        try execute("PRAGMA journal_mode = WAL; CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2);", at: wal)
        XCTAssertEqual(numbers(try SQLiteSource.read(path: wal, table: "t"), "a"), [1, 2])
    }

    // MARK: Files

    func testMissingFileAndNonDatabaseFile() throws {
        let missing = directory.appendingPathComponent("nope.db").path
        assertError(.fileNotFound(path: missing)) { try SQLiteSource.read(path: missing, table: "visits") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: missing), "a read must not create the file")

        let text = directory.appendingPathComponent("notes.db").path
        try Data(String(repeating: "not a database at all\n", count: 100).utf8).write(to: URL(fileURLWithPath: text))
        assertError(.sqlite(path: text, target: .table("visits"), message: "file is not a database")) {
            try SQLiteSource.read(path: text, table: "visits")
        }
        do {
            _ = try SQLiteSource.read(path: directory.path, table: "visits")
            XCTFail("a directory is not a database")
        } catch let error as DataSourceError {
            guard case .unreadable = error else { return XCTFail("\(error)") }
        }
    }

    func testErrorDescriptions() {
        XCTAssertEqual("\(DataSourceError.noSuchTable(path: "site.db", table: "visit"))",
                       "site.db: no table or view named \"visit\"")
        XCTAssertEqual("\(DataSourceError.blobColumn(path: "site.db", target: .table("t"), column: "scan"))",
                       "site.db, table \"t\": column \"scan\" holds BLOB values, which cannot be used")
        XCTAssertEqual("\(DataSourceError.notReadOnly(path: "site.db", target: .query("DELETE\n  FROM t")))",
                       "site.db, query \"DELETE FROM t\": the query would change the database; only read-only queries are allowed")
    }
}

import XCTest
import Foundation
@testable import SiteAgent

final class CSVReaderTests: XCTestCase {

    // MARK: Helpers

    private func parse(_ text: String, types: [String: ColumnType] = [:]) throws -> DataTable {
        try CSVReader.parse(bytes: Array(text.utf8), source: "data.csv", types: types)
    }

    private func numbers(_ table: DataTable, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> [Double?] {
        guard let column = table.column(named: name) else {
            XCTFail("no column \(name)", file: file, line: line); return []
        }
        guard case .numeric(let values) = column.data else {
            XCTFail("column \(name) is not numeric", file: file, line: line); return []
        }
        return Array(values)
    }

    private func strings(_ table: DataTable, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> [String?] {
        guard let column = table.column(named: name) else {
            XCTFail("no column \(name)", file: file, line: line); return []
        }
        guard case .text(let values) = column.data else {
            XCTFail("column \(name) is not text", file: file, line: line); return []
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

    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-csv-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    // MARK: Reading

    func testInfersNumericAndTextColumns() throws {
        let table = try parse("id,age,sex\n1,34.5,F\n2,,M\n3,NA,\n")
        XCTAssertEqual(table.rowCount, 3)
        XCTAssertEqual(table.columnNames, ["id", "age", "sex"])
        XCTAssertEqual(numbers(table, "id"), [1, 2, 3])
        XCTAssertEqual(numbers(table, "age"), [34.5, nil, nil])
        XCTAssertEqual(strings(table, "sex"), ["F", "M", nil])
    }

    func testQuotedFieldsWithCommasNewlinesAndQuotes() throws {
        let csv = "name,note,n\n"
            + "\"Smith, J\",\"said \"\"hi\"\"\nand left\",1\n"
            + "\"a\r\nb\",plain,\"2\"\n"
            + "\"\",\"\"\"\"\"\",3\n"
        let table = try parse(csv)
        XCTAssertEqual(table.rowCount, 3)
        XCTAssertEqual(strings(table, "name"), ["Smith, J", "a\r\nb", nil])
        XCTAssertEqual(strings(table, "note"), ["said \"hi\"\nand left", "plain", "\"\""])
        XCTAssertEqual(numbers(table, "n"), [1, 2, 3])
    }

    func testCRLFAndLoneCRLineEndings() throws {
        let crlf = try parse("a,b\r\n1,x\r\n2,y\r\n")
        XCTAssertEqual(numbers(crlf, "a"), [1, 2])
        XCTAssertEqual(strings(crlf, "b"), ["x", "y"])
        let cr = try parse("a,b\r1,x\r2,y")
        XCTAssertEqual(numbers(cr, "a"), [1, 2])
        XCTAssertEqual(strings(cr, "b"), ["x", "y"])
        assertError(.wrongFieldCount(source: "data.csv", line: 3, found: 1, expected: 2)) { try parse("a,b\r1,x\r2\r") }
    }

    func testByteOrderMarkIsSkipped() throws {
        let table = try CSVReader.parse(bytes: [0xEF, 0xBB, 0xBF] + Array("a,b\n1,2".utf8), source: "bom.csv")
        XCTAssertEqual(table.columnNames, ["a", "b"])
        XCTAssertEqual(numbers(table, "a"), [1])
        XCTAssertEqual(numbers(table, "b"), [2])
    }

    func testFinalNewlineOptionalAndTrailingEmptyLinesIgnored() throws {
        XCTAssertEqual(numbers(try parse("a\n1\n2"), "a"), [1, 2])
        XCTAssertEqual(numbers(try parse("a\n1\n2\n"), "a"), [1, 2])
        let table = try parse("a,b\n1,2\n3,4\n\n\r\n\n")
        XCTAssertEqual(table.rowCount, 2)
        XCTAssertEqual(numbers(table, "b"), [2, 4])
        // A trailing comma is an empty last field, not the end of the record.
        XCTAssertEqual(numbers(try parse("a,b\n1,"), "b"), [nil])
    }

    func testEmptyAndNAAreMissingQuotedOrNot() throws {
        let table = try parse("x,y,z\n\"NA\",\"\",a\nNA,,\"NA\"\n  , NA ,\"\"\n5,b,c\n")
        XCTAssertEqual(numbers(table, "x"), [nil, nil, nil, 5])
        XCTAssertEqual(strings(table, "y"), [nil, nil, nil, "b"])
        XCTAssertEqual(strings(table, "z"), ["a", nil, nil, "c"])
    }

    func testColumnWithOnlyMissingValuesIsNumeric() throws {
        let table = try parse("a,b\n1,\n2,NA\n")
        XCTAssertEqual(numbers(table, "b"), [nil, nil])
    }

    func testHeaderOnlyGivesEmptyNumericColumns() throws {
        let table = try parse("a,b\n")
        XCTAssertEqual(table.rowCount, 0)
        XCTAssertEqual(numbers(table, "a"), [])
        XCTAssertEqual(numbers(table, "b"), [])
    }

    func testHeaderNamesAreTrimmedAndUnescaped() throws {
        let table = try parse(" age ,\"the \"\"id\"\"\"\n1,2\n")
        XCTAssertEqual(table.columnNames, ["age", "the \"id\""])
    }

    func testUTF8TextIsKept() throws {
        let table = try parse("ward,n\nKöln Süd,1\n病棟,2\n")
        XCTAssertEqual(strings(table, "ward"), ["Köln Süd", "病棟"])
    }

    // MARK: Numbers

    func testAcceptedNumberForms() throws {
        let cases: [(String, Double)] = [
            ("12", 12), ("-3.5", -3.5), ("1e-3", 0.001), (".5", 0.5), ("+2", 2), (" 7 ", 7), ("\t8", 8),
            ("1.", 1), ("1E+2", 100), ("0.1", 0.1), ("007", 7), ("-0", 0), ("\" 4.25 \"", 4.25),
            ("0.30000000000000004", 0.30000000000000004),
            ("123456789012345678901234567890", 123456789012345678901234567890.0),
            ("2.2250738585072014e-308", 2.2250738585072014e-308),
            ("1.7976931348623157e308", 1.7976931348623157e308),
            ("9007199254740993", 9007199254740993.0),
            ("0.000000000000000000000000000001", 1e-30),
        ]
        for (text, expected) in cases {
            let table = try parse("x\n\(text)\n")
            XCTAssertEqual(numbers(table, "x"), [expected], "parsing \(text)")
        }
        let negativeZero = numbers(try parse("x\n-0.0\n"), "x")
        XCTAssertEqual(negativeZero.first??.sign, .minus)
    }

    func testRejectedNumberFormsMakeTheColumnText() throws {
        for text in ["\"1,5\"", "0x10", "inf", "nan", "Infinity", "1e400", "-1e400", "1e", ".", "-", "+",
                     "1.2.3", "1 2", "e5", "1e5.0", "--1", "1d", "٣"] {
            let table = try parse("x\n1\n\(text)\n")
            let expected = text == "\"1,5\"" ? "1,5" : text
            XCTAssertEqual(strings(table, "x"), ["1", expected], "parsing \(text)")
        }
    }

    func testNumberParsingMatchesStandardLibrary() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 11
        }
        var texts: [String] = []
        for _ in 0..<20_000 {
            let digits = Int(next() % 22) + 1
            var mantissa = ""
            for _ in 0..<digits { mantissa.append(Character(String(next() % 10))) }
            let point = Int(next() % UInt64(digits + 1))
            var text = String(mantissa.prefix(point)) + "." + String(mantissa.dropFirst(point))
            if next() % 3 == 0 { text += "e\(Int(next() % 80) - 40)" }
            if next() % 2 == 0 { text = "-" + text }
            texts.append(text)
        }
        let table = try parse("x\n" + texts.joined(separator: "\n"))
        let parsed = numbers(table, "x")
        XCTAssertEqual(parsed.count, texts.count)
        for (text, value) in zip(texts, parsed) {
            XCTAssertEqual(value, Double(text), "parsing \(text)")
        }
    }

    // MARK: Overrides

    func testTextOverrideKeepsOriginalText() throws {
        let table = try parse("code,v,n\n007,1e-3,1\n10, 5 ,2\nNA,,3\n", types: ["code": .text, "v": .text])
        XCTAssertEqual(strings(table, "code"), ["007", "10", nil])
        XCTAssertEqual(strings(table, "v"), ["1e-3", " 5 ", nil])
        XCTAssertEqual(numbers(table, "n"), [1, 2, 3])
    }

    func testNumericOverrideOnNumbersAndMissingValues() throws {
        let table = try parse("a\n1\nNA\n\"\"\n2", types: ["a": .numeric])
        XCTAssertEqual(numbers(table, "a"), [1, nil, nil, 2])
    }

    func testNumericOverrideWithNonNumberNamesLineAndColumnButNotTheValue() throws {
        let csv = "a,b\n\"multi\nline\",1\n2,secret-value\n"
        assertError(.notNumeric(source: "data.csv", line: 4, column: "b")) {
            try parse(csv, types: ["b": .numeric])
        }
        do {
            _ = try parse(csv, types: ["b": .numeric])
        } catch {
            XCTAssertFalse("\(error)".contains("secret"), "\(error)")
            XCTAssertEqual("\(error)", "data.csv, line 4: column \"b\" is declared numeric but holds a value that is not a number")
        }
    }

    func testOverrideNamingUnknownColumnIsAnError() {
        assertError(.unknownColumn(source: "data.csv", column: "agee")) {
            try parse("age\n1\n", types: ["agee": .numeric])
        }
    }

    // MARK: Errors

    func testEmptyFileIsAnError() {
        assertError(.emptyFile(source: "data.csv")) { try parse("") }
        assertError(.emptyFile(source: "data.csv")) { try parse("\n\r\n\n") }
        assertError(.emptyFile(source: "bom.csv")) {
            try CSVReader.parse(bytes: [0xEF, 0xBB, 0xBF], source: "bom.csv")
        }
    }

    func testEmptyColumnNameIsAnError() {
        assertError(.emptyColumnName(source: "data.csv", line: 1, position: 2)) { try parse("a,,c\n1,2,3\n") }
        assertError(.emptyColumnName(source: "data.csv", line: 1, position: 3)) { try parse("a,b,\" \"\n1,2,3\n") }
    }

    func testDuplicateColumnNameIsAnError() {
        assertError(.duplicateColumnName(source: "data.csv", line: 1, name: "a")) { try parse("a,b,a\n1,2,3\n") }
        assertError(.duplicateColumnName(source: "data.csv", line: 1, name: "a")) { try parse("a, a\n1,2\n") }
    }

    func testWrongFieldCountNamesThePhysicalLine() {
        // Record 1 spans lines 2-3, so the short record is on line 5.
        let csv = "a,b,c,d,e,f\n\"x\ny\",1,2,3,4,5\n1,2,3,4,5,6\n1,2,3,4,5\n"
        assertError(.wrongFieldCount(source: "data.csv", line: 5, found: 5, expected: 6)) { try parse(csv) }
        XCTAssertEqual("\(DataSourceError.wrongFieldCount(source: "data.csv", line: 17, found: 5, expected: 6))",
                       "data.csv, line 17: 5 fields, the header has 6")
        assertError(.wrongFieldCount(source: "data.csv", line: 3, found: 3, expected: 2)) {
            try parse("a,b\r\n1,2\r\n1,2,3\r\n")
        }
        assertError(.wrongFieldCount(source: "data.csv", line: 3, found: 1, expected: 2)) {
            try parse("a,b\n1,2\n\n3,4\n")
        }
    }

    func testUnterminatedQuoteNamesTheLineWhereItOpened() {
        assertError(.unterminatedQuote(source: "data.csv", line: 3)) { try parse("a,b\n1,2\n3,\"abc\n4,5\n6,7\n") }
        assertError(.unterminatedQuote(source: "data.csv", line: 1)) { try parse("\"a,b\n1,2\n") }
    }

    func testQuoteInsideUnquotedFieldIsAnError() {
        assertError(.quoteInUnquotedField(source: "data.csv", line: 2)) { try parse("a,b\n1,ab\"c\n") }
    }

    func testTextAfterClosingQuoteIsAnError() {
        assertError(.textAfterClosingQuote(source: "data.csv", line: 4)) {
            try parse("a,b\n\"1\n\",x\n2,\"ab\"c\n")
        }
    }

    func testInvalidUTF8NamesTheLine() {
        let bytes = Array("a,b\n1,x\n\"2\n\",".utf8) + [0xC3, 0x28] + Array("\n".utf8)
        assertError(.invalidUTF8(source: "data.csv", line: 4)) {
            try CSVReader.parse(bytes: bytes, source: "data.csv")
        }
        assertError(.invalidUTF8(source: "data.csv", line: 1)) {
            try CSVReader.parse(bytes: Array("a,".utf8) + [0xFF] + Array("\n1,2\n".utf8), source: "data.csv")
        }
        // Surrogates, overlong forms, code points past U+10FFFF and cut sequences are not UTF-8 either.
        for bad: [UInt8] in [[0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]] {
            assertError(.invalidUTF8(source: "data.csv", line: 2)) {
                try CSVReader.parse(bytes: Array("a\n".utf8) + bad + Array("\n".utf8), source: "data.csv")
            }
        }
    }

    func testNotNumericLineIsCorrectAfterEmbeddedCRLF() {
        let csv = "a,b\r\n\"p\r\nq\",1\r\n\"r\",z\r\n"
        assertError(.notNumeric(source: "data.csv", line: 4, column: "b")) { try parse(csv, types: ["b": .numeric]) }
    }

    func testErrorMessagesCarryNoDataValues() {
        let cases: [(String, [String: ColumnType])] = [
            ("a,b\nsecret,1,2\n", [:]),
            ("a,b\n\"secret\n", [:]),
            ("a,b\nsec\"ret,1\n", [:]),
            ("a,b\n\"secret\"x,1\n", [:]),
            ("a,b\n1,secret\n", ["b": .numeric]),
        ]
        for (csv, types) in cases {
            do {
                _ = try parse(csv, types: types)
                XCTFail("expected an error for \(csv)")
            } catch {
                XCTAssertFalse("\(error)".contains("secret"), "\(error)")
                XCTAssertTrue("\(error)".hasPrefix("data.csv, line 2"), "\(error)")
            }
        }
    }

    // MARK: Files

    func testReadsAFile() throws {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("site.csv").path
        try Data("\"y\",\"g\"\r\n1.5,\"A\"\r\n2.5,\"B\"\r\n".utf8).write(to: URL(fileURLWithPath: path))
        let table = try CSVReader.read(path: path, types: ["g": .text])
        XCTAssertEqual(numbers(table, "y"), [1.5, 2.5])
        XCTAssertEqual(strings(table, "g"), ["A", "B"])
        assertError(.wrongFieldCount(source: path, line: 2, found: 1, expected: 2)) {
            try Data("a,b\n1\n".utf8).write(to: URL(fileURLWithPath: path))
            return try CSVReader.read(path: path)
        }
    }

    func testMissingAndUnreadableFiles() throws {
        let dir = try temporaryDirectory()
        let missing = dir.appendingPathComponent("nope.csv").path
        assertError(.fileNotFound(path: missing)) { try CSVReader.read(path: missing) }
        do {
            _ = try CSVReader.read(path: dir.path)
            XCTFail("reading a directory should fail")
        } catch let error as DataSourceError {
            guard case .unreadable(let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, dir.path)
        }
        let empty = dir.appendingPathComponent("empty.csv").path
        XCTAssertTrue(FileManager.default.createFile(atPath: empty, contents: Data()))
        assertError(.emptyFile(source: empty)) { try CSVReader.read(path: empty) }
    }

    // MARK: Round trip

    func testRandomTablesRoundTrip() throws {
        var state: UInt64 = 42
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        let alphabet: [String] = ["a", "b", "Z", " ", ",", "\"", "\n", "\r\n", "é", "1", ".", "-", "😀"]
        for _ in 0..<50 {
            let columns = next(5) + 1, rows = next(40)
            var expected: [[String?]] = Array(repeating: [], count: columns)
            var lines = [(0..<columns).map { "c\($0)" }.joined(separator: ",")]
            for _ in 0..<rows {
                var fields: [String] = []
                for c in 0..<columns {
                    var value = ""
                    for _ in 0..<next(6) { value += alphabet[next(alphabet.count)] }
                    expected[c].append(value.allSatisfy({ $0 == " " }) ? nil : value)
                    fields.append("\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\"")
                }
                lines.append(fields.joined(separator: ","))
            }
            let csv = lines.joined(separator: next(2) == 0 ? "\n" : "\r\n")
            let types = Dictionary(uniqueKeysWithValues: (0..<columns).map { ("c\($0)", ColumnType.text) })
            let table = try parse(csv, types: types)
            XCTAssertEqual(table.rowCount, rows)
            for c in 0..<columns {
                XCTAssertEqual(strings(table, "c\(c)"), expected[c])
            }
        }
    }

    // MARK: Speed (skipped unless FEDMIX_PERF=1; no timing assertions)

    func testParseSpeedOneMillionRows() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["FEDMIX_PERF"] == "1",
                          "set FEDMIX_PERF=1 (and build with -c release) to measure parse speed")
        var text = "id,age,weight,sex,ward,y\n"
        text.reserveCapacity(48_000_000)
        let wards = ["A", "B", "\"C, east\"", "D"]
        for i in 0..<1_000_000 {
            text += "\(i),\(20 + i % 60),\(Double(50 + i % 50) + 0.25),\(i % 2 == 0 ? "F" : "M"),"
            text += "\(wards[i % 4]),\(Double(i % 1000) / 8)\n"
        }
        let bytes = Array(text.utf8)
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            let table = try CSVReader.parse(bytes: bytes, source: "perf.csv")
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            XCTAssertEqual(table.rowCount, 1_000_000)
            best = min(best, seconds)
        }
        print("CSV parse: 1,000,000 rows x 6 columns, \(bytes.count) bytes, best of 3: \(best) s")

        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("perf.csv").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let start = DispatchTime.now().uptimeNanoseconds
        let table = try CSVReader.read(path: path)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        XCTAssertEqual(table.columnNames, ["id", "age", "weight", "sex", "ward", "y"])
        XCTAssertEqual(table.columns.map(\.isNumeric), [true, true, true, false, false, true])
        print("CSV read from file (same data): \(seconds) s")
    }
}

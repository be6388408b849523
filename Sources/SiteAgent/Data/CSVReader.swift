#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a hospital's CSV export (RFC 4180) into a `DataTable`.
///
/// Rules, chosen so that what R's `write.csv` and spreadsheet exports produce
/// reads back as the analyst expects:
/// - The first record is the header. Column names are trimmed of surrounding
///   blanks and must be non-empty and distinct.
/// - Fields are separated by commas; a field in double quotes may hold commas,
///   line breaks and doubled quotes (`""`). Lines end in LF, CRLF or CR; the
///   last line needs no line break; blank lines at the end of the file are
///   ignored; a UTF-8 byte-order mark at the start is skipped.
/// - A field that is empty, only blanks, or `NA` (quoted or not) is missing.
/// - A column is numeric when every non-missing value is a finite decimal
///   number (see `ValueRules.parseNumber`), otherwise text. A column with only
///   missing values is numeric. `types` forces a column's type.
/// - Errors name the source and the physical line (1-based, header = line 1)
///   but never a value from the file.
///
/// The parser is a byte-level state machine over the whole buffer: it records
/// where each field lies, then builds each column in one pass, making Strings
/// only for text columns.
public struct CSVReader {
    /// Reads and parses the CSV file at `path`. Errors name `path` as the source.
    ///
    /// - Parameter types: forced column types by column name; every name must be
    ///   a column of the file.
    public static func read(path: String, types: [String: ColumnType] = [:]) throws -> DataTable {
        let bytes = try readFile(path: path)
        return try parse(bytes: bytes, source: path, types: types)
    }

    /// Parses CSV bytes already in memory (for tests, or data that arrived by
    /// another route). `source` is only used to name the data in errors.
    public static func parse(bytes: [UInt8], source: String, types: [String: ColumnType] = [:]) throws -> DataTable {
        try bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, buffer.count > 0 else {
                throw DataSourceError.emptyFile(source: source)
            }
            var parser = CSVParser(base: base, count: buffer.count, source: source)
            return try parser.run(types: types)
        }
    }

    /// Reads a whole file into memory with POSIX calls, telling "not there"
    /// apart from "not readable" so that the hospital knows what to fix.
    static func readFile(path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw DataSourceError.fileNotFound(path: path) }
            throw DataSourceError.unreadable(path: path, reason: systemMessage(code))
        }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 {
            throw DataSourceError.unreadable(path: path, reason: systemMessage(errno))
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            throw DataSourceError.unreadable(path: path, reason: systemMessage(EISDIR))
        }
        let size = Int(info.st_size)
        return try [UInt8](unsafeUninitializedCapacity: max(size, 1)) { buffer, initialized in
            initialized = 0
            while initialized < size {
                let got = posixRead(fd, buffer.baseAddress! + initialized, size - initialized)
                if got < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    throw DataSourceError.unreadable(path: path, reason: systemMessage(code))
                }
                if got == 0 { break }
                initialized += got
            }
        }
    }

    static func systemMessage(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }
}

#if canImport(Glibc)
private let posixRead = Glibc.read
#elseif canImport(Darwin)
private let posixRead = Darwin.read
#endif

/// The state machine and column builder behind `CSVReader`.
struct CSVParser {
    static let quote: UInt8 = 0x22, comma: UInt8 = 0x2C, lf: UInt8 = 0x0A, cr: UInt8 = 0x0D

    let base: UnsafePointer<UInt8>
    /// Bytes to parse: the buffer without trailing line breaks.
    let end: Int
    /// First byte after a byte-order mark, if any.
    let begin: Int
    let source: String

    init(base: UnsafePointer<UInt8>, count: Int, source: String) {
        self.base = base
        self.source = source
        var begin = 0
        if count >= 3 && base[0] == 0xEF && base[1] == 0xBB && base[2] == 0xBF { begin = 3 }
        var end = count
        while end > begin && (base[end - 1] == Self.lf || base[end - 1] == Self.cr) { end -= 1 }
        self.begin = begin
        self.end = end
    }

    /// The physical line (1-based) holding byte `offset`: one plus the line
    /// breaks before it, counting CRLF once. Only called on the error path.
    func line(at offset: Int) -> Int {
        var line = 1
        var i = 0
        while i < offset {
            let c = base[i]
            if c == Self.lf { line += 1 }
            else if c == Self.cr && !(i + 1 < end && base[i + 1] == Self.lf) { line += 1 }
            i += 1
        }
        return line
    }

    /// Field positions, in record order. `ends` is stored complemented (negative)
    /// for quoted fields that contain doubled quotes and so need unescaping.
    struct Fields {
        var starts: [Int] = []
        var ends: [Int] = []
        var columnCount = 0
        var rowCount = 0
    }

    mutating func run(types: [String: ColumnType]) throws -> DataTable {
        if end == begin { throw DataSourceError.emptyFile(source: source) }
        let fields = try scan()
        let names = try headerNames(fields)
        for name in types.keys.sorted() where !names.contains(name) {
            throw DataSourceError.unknownColumn(source: source, column: name)
        }
        var columns: [DataTable.Column] = []
        columns.reserveCapacity(names.count)
        try fields.starts.withUnsafeBufferPointer { starts in
            try fields.ends.withUnsafeBufferPointer { ends in
                for (index, name) in names.enumerated() {
                    let data = try buildColumn(index: index, name: name, forced: types[name],
                                               starts: starts, ends: ends,
                                               columnCount: fields.columnCount, rowCount: fields.rowCount)
                    columns.append(DataTable.Column(name: name, data: data))
                }
            }
        }
        return DataTable(columns: columns, rowCount: fields.rowCount)
    }

    /// One pass over the bytes: finds every field, checks quoting and the
    /// number of fields per record.
    func scan() throws -> Fields {
        let quote = Self.quote, comma = Self.comma, lf = Self.lf, cr = Self.cr
        let base = self.base, n = self.end
        var out = Fields()
        out.starts.reserveCapacity(min(n / 4 + 16, 1 << 24))
        out.ends.reserveCapacity(min(n / 4 + 16, 1 << 24))
        var columnCount = -1
        var rowCount = 0
        var i = begin
        var atEnd = false
        while !atEnd {
            let recordStart = i
            var fieldCount = 0
            while true {
                var start: Int, stop: Int
                var escaped = false
                if i < n && base[i] == quote {
                    let opening = i
                    i += 1
                    start = i
                    while true {
                        while i < n && base[i] != quote { i += 1 }
                        if i >= n {
                            throw DataSourceError.unterminatedQuote(source: source, line: line(at: opening))
                        }
                        if i + 1 < n && base[i + 1] == quote { escaped = true; i += 2; continue }
                        break
                    }
                    stop = i
                    i += 1
                    if i < n {
                        let c = base[i]
                        if c != comma && c != lf && c != cr {
                            throw DataSourceError.textAfterClosingQuote(source: source, line: line(at: i))
                        }
                    }
                } else {
                    start = i
                    while i < n {
                        let c = base[i]
                        if c == comma || c == lf || c == cr { break }
                        if c == quote {
                            throw DataSourceError.quoteInUnquotedField(source: source, line: line(at: i))
                        }
                        i += 1
                    }
                    stop = i
                }
                out.starts.append(start)
                out.ends.append(escaped ? ~stop : stop)
                fieldCount += 1
                if i >= n { atEnd = true; break }
                let c = base[i]
                i += 1
                if c == comma { continue }
                if c == cr && i < n && base[i] == lf { i += 1 }
                break
            }
            if columnCount < 0 {
                columnCount = fieldCount
            } else if fieldCount != columnCount {
                throw DataSourceError.wrongFieldCount(source: source, line: line(at: recordStart),
                                                      found: fieldCount, expected: columnCount)
            } else {
                rowCount += 1
            }
        }
        out.columnCount = columnCount
        out.rowCount = rowCount
        return out
    }

    /// The header's names: unescaped, valid UTF-8, trimmed, non-empty, distinct.
    func headerNames(_ fields: Fields) throws -> [String] {
        var names: [String] = []
        var seen = Set<String>()
        for k in 0..<fields.columnCount {
            let start = fields.starts[k], rawEnd = fields.ends[k]
            let stop = rawEnd < 0 ? ~rawEnd : rawEnd
            let name = try text(start, stop, escaped: rawEnd < 0).trimmingBlanks()
            if name.isEmpty {
                throw DataSourceError.emptyColumnName(source: source, line: line(at: start), position: k + 1)
            }
            if !seen.insert(name).inserted {
                throw DataSourceError.duplicateColumnName(source: source, line: line(at: start), name: name)
            }
            names.append(name)
        }
        return names
    }

    /// A field's text: checked as UTF-8, with doubled quotes made single.
    func text(_ start: Int, _ stop: Int, escaped: Bool) throws -> String {
        if let bad = ValueRules.firstInvalidUTF8(base, start, stop) {
            throw DataSourceError.invalidUTF8(source: source, line: line(at: bad))
        }
        if !escaped {
            return String(decoding: UnsafeBufferPointer(start: base + start, count: stop - start), as: UTF8.self)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(stop - start)
        var i = start
        while i < stop {
            let c = base[i]
            bytes.append(c)
            i += (c == Self.quote) ? 2 : 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Builds one column: numeric if every value is a number (or the column is
    /// forced numeric), else text.
    func buildColumn(index: Int, name: String, forced: ColumnType?,
                     starts: UnsafeBufferPointer<Int>, ends: UnsafeBufferPointer<Int>,
                     columnCount: Int, rowCount: Int) throws -> DataTable.ColumnData {
        let base = self.base
        if forced != .text {
            var values = NumericValues()
            values.reserveCapacity(rowCount)
            var allNumbers = true
            var k = columnCount + index
            for _ in 0..<rowCount {
                let start = starts[k], rawEnd = ends[k]
                k += columnCount
                let stop = rawEnd < 0 ? ~rawEnd : rawEnd
                if ValueRules.isMissing(base, start, stop) {
                    values.append(nil)
                } else if let value = ValueRules.parseNumber(base, start, stop) {
                    values.append(value)
                } else {
                    if forced == .numeric {
                        throw DataSourceError.notNumeric(source: source, line: line(at: start), column: name)
                    }
                    allNumbers = false
                    break
                }
            }
            if allNumbers { return .numeric(values) }
        }
        var values = [String?]()
        values.reserveCapacity(rowCount)
        var k = columnCount + index
        for _ in 0..<rowCount {
            let start = starts[k], rawEnd = ends[k]
            k += columnCount
            let stop = rawEnd < 0 ? ~rawEnd : rawEnd
            if ValueRules.isMissing(base, start, stop) {
                values.append(nil)
            } else {
                values.append(try text(start, stop, escaped: rawEnd < 0))
            }
        }
        return .text(values)
    }
}

fileprivate extension String {
    /// The string without leading and trailing spaces and tabs.
    func trimmingBlanks() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}

// Protocol lines read without Foundation's JSONDecoder. Why: a coordinator
// reads thousands of answers per fit, mostly arrays of doubles, and
// Foundation's decoder spent 15–20% of all fitting CPU on them (ohio,
// egsingle profiles); a line was also parsed twice (its header, then its
// body). Here a line is parsed once into a small tree, and numbers are
// converted only when a field asks for them, with strtod as Foundation does
// (or, where that is exact, Clinger's fast path: exactDouble), so every
// double reads back bit for bit. The JSON grammar is RFC 8259's;
// the decoding errors are the ones Foundation throws (same kinds, same
// coding paths), which LineCodec turns into protocol errors.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One parsed line.
final class JSONLineDocument {
    enum Node {
        case object([(key: String, node: Node)])
        case array([Node])
        /// A number's bytes in `bytes` (validated against JSON's grammar).
        case number(start: Int, end: Int)
        case string(String)
        case bool(Bool)
        case null
    }

    /// The line's bytes followed by a NUL (strtod reads up to it at most).
    let bytes: [UInt8]
    private(set) var root: Node = .null

    /// Nesting deeper than this is refused (a peer's line must not exhaust the stack).
    static let maxDepth = 128

    /// Parses `line`; throws `DecodingError.dataCorrupted` (empty coding
    /// path) when it is not one JSON value with nothing after it.
    init(_ line: String) throws {
        var b = Array(line.utf8)
        b.append(0)
        bytes = b
        // The parser reads through a pointer (no bounds check or retain per
        // byte); the NUL at the end stops every scan inside the buffer.
        root = try bytes.withUnsafeBufferPointer { p in
            var parser = Parser(bytes: p)
            return try parser.document()
        }
    }

    static func corrupted(_ why: String = "The given data was not valid JSON.") -> DecodingError {
        .dataCorrupted(.init(codingPath: [], debugDescription: why))
    }

    /// The number at a node's bytes as a Double (nil when out of range).
    func double(_ start: Int, _ end: Int) -> Double? {
        bytes.withUnsafeBufferPointer { p -> Double? in
            if let v = JSONLineDocument.exactDouble(p, start, end) { return v }
            let base = UnsafeRawPointer(p.baseAddress! + start).assumingMemoryBound(to: CChar.self)
            var stop: UnsafeMutablePointer<CChar>? = nil
            var v = strtod(base, &stop)
            if !JSONLineDocument.pointIsDot {
                // A locale with another decimal separator: Swift's own parser.
                v = Double(String(decoding: p[start..<end], as: UTF8.self)) ?? .infinity
                stop = UnsafeMutablePointer(mutating: base + (end - start))
            }
            guard let stop, UnsafeRawPointer(stop) == UnsafeRawPointer(p.baseAddress! + end), v.isFinite else { return nil }
            // A nonzero number too small for a Double (1e-400) is refused, as
            // Foundation refuses it; denormals read as themselves.
            if v == 0 {
                for k in start..<end {
                    let c = p[k]
                    if c == UInt8(ascii: "e") || c == UInt8(ascii: "E") { break }
                    if c >= 0x31 && c <= 0x39 { return nil }
                }
            }
            return v
        }
    }

    /// Powers of ten a Double holds exactly (10^22 is the largest).
    private static let exactPowersOfTen: [Double] = (0...22).map { e in (0..<e).reduce(1.0) { a, _ in a * 10 } }

    /// The number at `start..<end` (grammar-checked) without strtod, when
    /// that is exact. Its significand's digits make an integer m and its
    /// decimal exponent e:
    /// - m ≤ 2^53 and |e| ≤ 22: m and 10^|e| are exact Doubles, and one IEEE
    ///   multiply or divide rounds m·10^e correctly (Clinger's fast path);
    /// - else, on x86-64, m < 1.8·10^19 (< 2^64) and |e| ≤ 27: see `extendedDouble`
    ///   (the 17 digits of a Double's shortest form, as written here, land here).
    /// Zero, with its sign, is exact too. nil otherwise: strtod decides, and
    /// gives the same Double. Why: strtod was the largest single cost of
    /// reading an answer.
    static func exactDouble(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Double? {
        var i = start
        let negative = p[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        var m: UInt64 = 0, e = 0
        // A digit that could overflow m (past about 1.8·10^19): strtod decides.
        let limit = (UInt64.max - 9) / 10
        while i < end, p[i] &- 0x30 < 10 {
            guard m <= limit else { return nil }
            m = m &* 10 &+ UInt64(p[i] &- 0x30)
            i += 1
        }
        if i < end, p[i] == UInt8(ascii: ".") {
            i += 1
            while i < end, p[i] &- 0x30 < 10 {
                guard m <= limit else { return nil }
                m = m &* 10 &+ UInt64(p[i] &- 0x30)
                e -= 1
                i += 1
            }
        }
        if i < end {
            // An exponent: [eE][+-]?digits (more than 4 digits: strtod decides).
            i += 1
            var sign = 1
            if p[i] == UInt8(ascii: "-") { sign = -1; i += 1 } else if p[i] == UInt8(ascii: "+") { i += 1 }
            guard end - i <= 4 else { return nil }
            var x = 0
            while i < end { x = x * 10 + Int(p[i] &- 0x30); i += 1 }
            e += sign * x
        }
        let v: Double
        if m == 0 { v = 0 }
        else if m <= 1 << 53 && e == 0 { v = Double(m) }
        else if m <= 1 << 53 && e > 0 && e <= 22 { v = Double(m) * exactPowersOfTen[e] }
        else if m <= 1 << 53 && e < 0 && e >= -22 { v = Double(m) / exactPowersOfTen[-e] }
        else if let x = extendedDouble(m, e) { v = x }
        else { return nil }
        return negative ? -v : v
    }

    #if arch(x86_64) && !os(Windows)
    /// Powers of ten Float80 holds exactly (5^27 < 2^64).
    private static let exactPowersOfTen80: [Float80] = (0...27).map { e in (0..<e).reduce(Float80(1)) { a, _ in a * 10 } }

    /// Whether Float80 arithmetic rounds to nearest with a 64-bit
    /// significand here (x87's default precision control and rounding mode;
    /// a library that changed either would make `extendedDouble` wrong, so
    /// it is checked once, on a value the compiler cannot fold).
    static let float80RoundsToNearest64: Bool = {
        let one = Float80(ProcessInfo.processInfo.processorCount > 0 ? 1 : 2)
        let unit = Float80(sign: .plus, exponent: -63, significand: 1)      // one unit in the last place of 1
        let quarter = Float80(sign: .plus, exponent: -65, significand: 1)
        return one + unit != one && one + 3 * quarter == one + unit && one + quarter == one
    }()
    #endif

    /// m·10^e for m < 2^64 and |e| ≤ 27 through x86's 64-bit-significand
    /// Float80, where m and 10^|e| are exact, so one multiply or divide rounds
    /// m·10^e correctly to 64 bits. Rounding that to a Double's 53 bits gives
    /// the correctly rounded Double, except when the 64-bit result lies within
    /// one of its units of a midpoint between two Doubles (its 11 extra bits
    /// 0x3FF–0x401): the exact value may be on the midpoint's other side, and
    /// nil lets strtod decide. nil also where there is no Float80 (arm64).
    static func extendedDouble(_ m: UInt64, _ e: Int) -> Double? {
        #if arch(x86_64) && !os(Windows)
        guard e >= -27 && e <= 27, float80RoundsToNearest64 else { return nil }
        let x = Float80(m)
        let q = e >= 0 ? x * exactPowersOfTen80[e] : x / exactPowersOfTen80[-e]
        let extra = q.significandBitPattern & 0x7FF
        guard extra < 0x3FF || extra > 0x401 else { return nil }
        return Double(q)
        #else
        return nil
        #endif
    }

    /// The number at a node's bytes as an Int64 when it is an integer (an
    /// integral value written with a fraction or exponent included, as
    /// Foundation reads it); nil otherwise.
    func integer(_ start: Int, _ end: Int) -> Int64? {
        var i = start, negative = false
        if bytes[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        var v: Int64 = 0, plain = true
        while i < end {
            let c = bytes[i]
            guard c >= 0x30 && c <= 0x39 else { plain = false; break }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(Int64(c - 0x30)) : m.addingReportingOverflow(Int64(c - 0x30))
            if o1 || o2 { return nil }
            v = s
            i += 1
        }
        if plain { return v }
        guard let d = double(start, end), d.rounded() == d, let exact = Int64(exactly: d) else { return nil }
        return exact
    }

    /// Whether strtod reads "0.5" as 0.5 (the C locale's decimal point,
    /// which a process has unless something calls setlocale).
    static let pointIsDot: Bool = "0.5".withCString { strtod($0, nil) } == 0.5

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0
        var depth = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func document() throws -> Node {
            skipSpace()
            let v = try value()
            skipSpace()
            guard bytes[i] == 0, i == bytes.count - 1 else { throw JSONLineDocument.corrupted() }
            return v
        }

        mutating func skipSpace() {
            while true {
                switch bytes[i] {
                case 0x20, 0x09, 0x0A, 0x0D: i += 1
                default: return
                }
            }
        }

        mutating func value() throws -> Node {
            switch bytes[i] {
            case UInt8(ascii: "{"): return try object()
            case UInt8(ascii: "["): return try array()
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal(Array("true".utf8)); return .bool(true)
            case UInt8(ascii: "f"): try literal(Array("false".utf8)); return .bool(false)
            case UInt8(ascii: "n"): try literal(Array("null".utf8)); return .null
            default: return try number()
            }
        }

        mutating func literal(_ w: [UInt8]) throws {
            let n = w.count
            guard i + n < bytes.count else { throw JSONLineDocument.corrupted() }
            for k in 0..<n where bytes[i + k] != w[k] { throw JSONLineDocument.corrupted() }
            i += n
        }

        mutating func enter() throws {
            depth += 1
            guard depth <= JSONLineDocument.maxDepth else {
                throw JSONLineDocument.corrupted("The JSON is nested more than \(JSONLineDocument.maxDepth) levels deep.")
            }
        }

        mutating func object() throws -> Node {
            try enter()
            defer { depth -= 1 }
            i += 1
            var entries: [(key: String, node: Node)] = []
            skipSpace()
            if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(entries) }
            while true {
                skipSpace()
                guard bytes[i] == UInt8(ascii: "\"") else { throw JSONLineDocument.corrupted() }
                let key = try string()
                skipSpace()
                guard bytes[i] == UInt8(ascii: ":") else { throw JSONLineDocument.corrupted() }
                i += 1
                skipSpace()
                entries.append((key, try value()))
                skipSpace()
                switch bytes[i] {
                case UInt8(ascii: ","): i += 1
                case UInt8(ascii: "}"): i += 1; return .object(entries)
                default: throw JSONLineDocument.corrupted()
                }
            }
        }

        mutating func array() throws -> Node {
            try enter()
            defer { depth -= 1 }
            i += 1
            var items: [Node] = []
            skipSpace()
            if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value())
                skipSpace()
                switch bytes[i] {
                case UInt8(ascii: ","): i += 1
                case UInt8(ascii: "]"): i += 1; return .array(items)
                default: throw JSONLineDocument.corrupted()
                }
            }
        }

        /// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        mutating func number() throws -> Node {
            let start = i
            func digit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            if bytes[i] == UInt8(ascii: "0") { i += 1 }
            else if digit(bytes[i]) { while digit(bytes[i]) { i += 1 } }
            else { throw JSONLineDocument.corrupted() }
            if bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard digit(bytes[i]) else { throw JSONLineDocument.corrupted() }
                while digit(bytes[i]) { i += 1 }
            }
            if bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digit(bytes[i]) else { throw JSONLineDocument.corrupted() }
                while digit(bytes[i]) { i += 1 }
            }
            return .number(start: start, end: i)
        }

        mutating func string() throws -> String {
            i += 1
            let start = i
            var plain = true
            while true {
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { break }
                if c == UInt8(ascii: "\\") {
                    guard bytes[i + 1] != 0 else { throw JSONLineDocument.corrupted() }
                    plain = false; i += 2; continue
                }
                guard c >= 0x20 else { throw JSONLineDocument.corrupted() }
                i += 1
            }
            guard i < bytes.count - 1 else { throw JSONLineDocument.corrupted() }
            let end = i
            i += 1
            if plain { return String(decoding: bytes[start..<end], as: UTF8.self) }
            return try unescape(start, end)
        }

        func unescape(_ start: Int, _ end: Int) throws -> String {
            var out: [UInt8] = []
            out.reserveCapacity(end - start)
            var k = start
            func hex4(_ at: Int) throws -> UInt32 {
                guard at + 4 <= end else { throw JSONLineDocument.corrupted() }
                var v: UInt32 = 0
                for c in bytes[at..<(at + 4)] {
                    let d: UInt32
                    switch c {
                    case 0x30...0x39: d = UInt32(c - 0x30)
                    case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                    case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                    default: throw JSONLineDocument.corrupted()
                    }
                    v = v * 16 + d
                }
                return v
            }
            while k < end {
                let c = bytes[k]
                guard c == UInt8(ascii: "\\") else { out.append(c); k += 1; continue }
                guard k + 1 < end else { throw JSONLineDocument.corrupted() }
                switch bytes[k + 1] {
                case UInt8(ascii: "\""): out.append(0x22); k += 2
                case UInt8(ascii: "\\"): out.append(0x5C); k += 2
                case UInt8(ascii: "/"): out.append(0x2F); k += 2
                case UInt8(ascii: "b"): out.append(0x08); k += 2
                case UInt8(ascii: "f"): out.append(0x0C); k += 2
                case UInt8(ascii: "n"): out.append(0x0A); k += 2
                case UInt8(ascii: "r"): out.append(0x0D); k += 2
                case UInt8(ascii: "t"): out.append(0x09); k += 2
                case UInt8(ascii: "u"):
                    var scalar = try hex4(k + 2)
                    k += 6
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard k + 1 < end, bytes[k] == UInt8(ascii: "\\"), bytes[k + 1] == UInt8(ascii: "u") else { throw JSONLineDocument.corrupted() }
                        let low = try hex4(k + 2)
                        guard (0xDC00...0xDFFF).contains(low) else { throw JSONLineDocument.corrupted() }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        k += 6
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw JSONLineDocument.corrupted()
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw JSONLineDocument.corrupted() }
                    out.append(contentsOf: String(Character(u)).utf8)
                default: throw JSONLineDocument.corrupted()
                }
            }
            return String(decoding: out, as: UTF8.self)
        }
    }
}

/// Decodes a value from a parsed line (or from one of its nodes).
struct JSONLineReader {
    static func decode<T: Decodable>(_ type: T.Type, from document: JSONLineDocument) throws -> T {
        try T(from: LineDecoder(document: document, node: document.root, codingPath: []))
    }
}

private struct ReaderIndexKey: CodingKey {
    var intValue: Int?
    var stringValue: String { "Index \(intValue ?? 0)" }
    init(_ i: Int) { intValue = i }
    init?(intValue: Int) { self.intValue = intValue }
    init?(stringValue: String) { nil }
}

private typealias Node = JSONLineDocument.Node

private func kindName(_ node: Node) -> String {
    switch node {
    case .object: return "a dictionary"
    case .array: return "an array"
    case .number: return "number"
    case .string: return "a string"
    case .bool: return "bool"
    case .null: return "null"
    }
}

/// Scalars out of a node, with Foundation's errors.
private struct Scalars {
    let document: JSONLineDocument

    func mismatch<T>(_ t: T.Type, _ node: Node, _ path: [CodingKey]) -> DecodingError {
        if case .null = node {
            return .valueNotFound(t, .init(codingPath: path, debugDescription: "Cannot get value of type \(t) -- found null value instead"))
        }
        return .typeMismatch(t, .init(codingPath: path, debugDescription: "Expected to decode \(t) but found \(kindName(node)) instead."))
    }

    func bool(_ node: Node, _ path: @autoclosure () -> [CodingKey]) throws -> Bool {
        guard case .bool(let b) = node else { throw mismatch(Bool.self, node, path()) }
        return b
    }
    func string(_ node: Node, _ path: @autoclosure () -> [CodingKey]) throws -> String {
        guard case .string(let s) = node else { throw mismatch(String.self, node, path()) }
        return s
    }
    func double(_ node: Node, _ path: @autoclosure () -> [CodingKey]) throws -> Double {
        guard case .number(let s, let e) = node else { throw mismatch(Double.self, node, path()) }
        guard let d = document.double(s, e) else { throw JSONLineDocument.corrupted() }
        return d
    }
    func integer<I: FixedWidthInteger>(_ t: I.Type, _ node: Node, _ path: @autoclosure () -> [CodingKey]) throws -> I {
        guard case .number(let s, let e) = node else { throw mismatch(t, node, path()) }
        if let v = document.integer(s, e), let exact = I(exactly: v) { return exact }
        // Beyond Int64 (UInt64's upper half) or not an integer.
        if I.self == UInt64.self || I.self == UInt.self,
           let u = UInt64(String(decoding: document.bytes[s..<e], as: UTF8.self)), let exact = I(exactly: u) { return exact }
        throw JSONLineDocument.corrupted()
    }
}

private struct LineDecoder: Decoder {
    let document: JSONLineDocument
    let node: Node
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let entries) = node else {
            throw Scalars(document: document).mismatch([String: Any].self, node, codingPath)
        }
        return KeyedDecodingContainer(KeyedLineReader<Key>(document: document, entries: entries, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard case .array(let items) = node else {
            throw Scalars(document: document).mismatch([Any].self, node, codingPath)
        }
        return UnkeyedLineReader(document: document, items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> SingleValueDecodingContainer {
        SingleLineReader(document: document, node: node, codingPath: codingPath)
    }
}

/// The value of a node as T (fast for the scalar types).
/// The coding path is built only when needed (an error, a nested
/// decoder): most fields are scalars, and an array per field was a large
/// part of reading a message.
private func decodeNode<T: Decodable>(_ type: T.Type, _ node: Node, _ document: JSONLineDocument, _ path: @autoclosure () -> [CodingKey]) throws -> T {
    let s = Scalars(document: document)
    if T.self == Double.self {
        if case .number(let start, let end) = node, let d = document.double(start, end) { return unsafeBitCast(d, to: T.self) }
        return try unsafeBitCast(s.double(node, path()), to: T.self)
    }
    if T.self == [Double].self, case .array(let items) = node {
        // Most of a round's numbers: read in one pass, no decoder per number.
        var values: [Double] = []
        values.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            // The element's coding path is built only for an error.
            if case .number(let start, let end) = item, let d = document.double(start, end) { values.append(d); continue }
            values.append(try s.double(item, path() + [ReaderIndexKey(i)]))
        }
        return withUnsafePointer(to: values) { UnsafeRawPointer($0).load(as: T.self) }
    }
    if T.self == Int.self {
        if case .number(let start, let end) = node, let v = document.integer(start, end), let i = Int(exactly: v) { return unsafeBitCast(i, to: T.self) }
        return try unsafeBitCast(s.integer(Int.self, node, path()), to: T.self)
    }
    if T.self == String.self {
        if case .string(let v) = node { return withUnsafePointer(to: v) { UnsafeRawPointer($0).load(as: T.self) } }
        let v = try s.string(node, path()); return withUnsafePointer(to: v) { UnsafeRawPointer($0).load(as: T.self) }
    }
    if T.self == Bool.self {
        if case .bool(let b) = node { return unsafeBitCast(b, to: T.self) }
        return try unsafeBitCast(s.bool(node, path()), to: T.self)
    }
    return try T(from: LineDecoder(document: document, node: node, codingPath: path()))
}

private struct KeyedLineReader<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let document: JSONLineDocument
    let entries: [(key: String, node: Node)]
    let codingPath: [CodingKey]
    /// For large objects (dictionaries over data), the first index of each key.
    let index: [String: Int]?

    init(document: JSONLineDocument, entries: [(key: String, node: Node)], codingPath: [CodingKey]) {
        self.document = document; self.entries = entries; self.codingPath = codingPath
        if entries.count > 16 {
            var d: [String: Int] = [:]
            d.reserveCapacity(entries.count)
            for (i, e) in entries.enumerated() where d[e.key] == nil { d[e.key] = i }
            index = d
        } else { index = nil }
    }

    var allKeys: [Key] {
        var seen = Set<String>(), out: [Key] = []
        for e in entries where seen.insert(e.key).inserted { if let k = Key(stringValue: e.key) { out.append(k) } }
        return out
    }

    /// The first entry with this key (Foundation keeps the first of duplicates).
    private func find(_ key: Key) -> Node? {
        let name = key.stringValue
        if let index { return index[name].map { entries[$0].node } }
        for e in entries where e.key == name { return e.node }
        return nil
    }

    private func node(_ key: Key) throws -> Node {
        guard let n = find(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "No value associated with key \(key.stringValue)."))
        }
        return n
    }

    func contains(_ key: Key) -> Bool { find(key) != nil }

    func decodeNil(forKey key: Key) throws -> Bool {
        if case .null = try node(key) { return true }
        return false
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try decodeNode(type, try node(key), document, codingPath + [key])
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let n = find(key) else { return nil }
        if case .null = n { return nil }
        return try decodeNode(type, n, document, codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try LineDecoder(document: document, node: try node(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
        try LineDecoder(document: document, node: try node(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    func superDecoder() throws -> Decoder {
        LineDecoder(document: document, node: find(Key(stringValue: "super")!) ?? .null, codingPath: codingPath)
    }

    func superDecoder(forKey key: Key) throws -> Decoder {
        LineDecoder(document: document, node: find(key) ?? .null, codingPath: codingPath + [key])
    }
}

private struct UnkeyedLineReader: UnkeyedDecodingContainer {
    let document: JSONLineDocument
    let items: [Node]
    let codingPath: [CodingKey]
    var currentIndex = 0
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    init(document: JSONLineDocument, items: [Node], codingPath: [CodingKey]) {
        self.document = document; self.items = items; self.codingPath = codingPath
    }

    private func path() -> [CodingKey] { codingPath + [ReaderIndexKey(currentIndex)] }

    private func next<T>(_ t: T.Type) throws -> Node {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(t, .init(codingPath: path(), debugDescription: "Unkeyed container is at end."))
        }
        return items[currentIndex]
    }

    mutating func decodeNil() throws -> Bool {
        if case .null = try next(Never.self) { currentIndex += 1; return true }
        return false
    }

    mutating func decode(_ type: Double.Type) throws -> Double {
        let v = try Scalars(document: document).double(try next(type), path())
        currentIndex += 1
        return v
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let v = try decodeNode(type, try next(type), document, path())
        currentIndex += 1
        return v
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let c = try LineDecoder(document: document, node: try next(type), codingPath: path()).container(keyedBy: type)
        currentIndex += 1
        return c
    }

    mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
        let c = try LineDecoder(document: document, node: try next([Any].self), codingPath: path()).unkeyedContainer()
        currentIndex += 1
        return c
    }

    mutating func superDecoder() throws -> Decoder {
        let d = LineDecoder(document: document, node: try next(Never.self), codingPath: path())
        currentIndex += 1
        return d
    }
}

private struct SingleLineReader: SingleValueDecodingContainer {
    let document: JSONLineDocument
    let node: Node
    let codingPath: [CodingKey]

    func decodeNil() -> Bool { if case .null = node { return true }; return false }
    func decode(_ type: Bool.Type) throws -> Bool { try Scalars(document: document).bool(node, codingPath) }
    func decode(_ type: String.Type) throws -> String { try Scalars(document: document).string(node, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try Scalars(document: document).double(node, codingPath) }
    func decode(_ type: Float.Type) throws -> Float {
        let d = try Scalars(document: document).double(node, codingPath)
        let f = Float(d)
        guard f.isFinite else { throw JSONLineDocument.corrupted() }
        return f
    }
    func decode(_ type: Int.Type) throws -> Int { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try Scalars(document: document).integer(type, node, codingPath) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeNode(type, node, document, codingPath) }
}

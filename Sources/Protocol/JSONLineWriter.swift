// Protocol lines written without Foundation's JSONEncoder. Why: a fit's
// rounds are mostly arrays of doubles, and Foundation's encoder boxes and
// type-checks every element; profiles of the ohio and egsingle benchmarks
// put 15–20% of all fitting CPU there. This writer produces the same bytes as
// JSONEncoder with [.sortedKeys, .withoutEscapingSlashes] (keys in String
// order, doubles in their shortest round-trip form without a trailing ".0",
// the same string escapes), which JSONLineCodecTests checks on every message
// kind, so audit logs and receipts read exactly as before.

/// Encodes a value as one JSON object line.
enum JSONLineWriter {
    static func encode<T: Encodable>(_ value: T) throws -> String {
        let root = Slot()
        try value.encode(to: LineEncoder(slot: root, codingPath: []))
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(root.node ?? .object(ObjectBox()), into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: the tree, filled by the encoder and written once at the end

    enum Node {
        case double(Double), float(Float), int(Int64), doubles([Double]), uint(UInt64), string(String), bool(Bool), null
        case object(ObjectBox), array(ArrayBox)
    }
    final class ObjectBox { var entries: [(key: String, node: Node)] = [] }
    final class ArrayBox { var items: [Node] = [] }
    final class Slot { var node: Node? }

    static func write(_ node: Node, into out: inout [UInt8]) {
        switch node {
        case .double(let d): writeDouble(d, into: &out)
        case .doubles(let values):
            out.reserveCapacity(out.count + 2 + 25 * values.count)
            out.append(UInt8(ascii: "["))
            for (i, d) in values.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeDouble(d, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .float(let f): writeNumber(f.description, into: &out)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .uint(let u): out.append(contentsOf: String(u).utf8)
        case .string(let s): writeString(s, into: &out)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .null: out.append(contentsOf: "null".utf8)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, item) in a.items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            // Sorted by key; of equal keys the last one encoded is kept.
            let order = o.entries.indices.sorted { a, b in
                o.entries[a].key != o.entries[b].key ? o.entries[a].key < o.entries[b].key : a < b
            }
            var first = true
            for (n, i) in order.enumerated() {
                if n + 1 < order.count, o.entries[order[n + 1]].key == o.entries[i].key { continue }
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                writeString(o.entries[i].key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(o.entries[i].node, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// A floating-point number's shortest round-trip form, without the
    /// ".0" of an integral value (as JSONEncoder writes it).
    static func writeNumber(_ description: String, into out: inout [UInt8]) {
        var s = description
        if s.hasSuffix(".0") { s.removeLast(2) }
        out.append(contentsOf: s.utf8)
    }

    /// A finite double as `description` spells it (without the ".0" of an
    /// integral value), written straight into `out`. Why not `description`:
    /// a 17-digit form is longer than a small string, so every number cost a
    /// String on the heap; most of a round's bytes are such numbers. The
    /// digits come from the function `description` itself calls
    /// (`swift_float64ToString`, a stable entry point of the Swift runtime);
    /// JSONLineCodecTests checks the two agree on 200,000 random bit patterns.
    @inline(__always) static func writeDouble(_ d: Double, into out: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { buffer in
            // Swift 6.2's formatter expects its buffer filled with "0"s (it
            // leaves some in place, e.g. the 0 of "0.5").
            buffer.initialize(repeating: UInt8(ascii: "0"))
            var n = Int(truncatingIfNeeded: swiftFloat64ToString(buffer.baseAddress!, 32, d, false))
            if n >= 2, buffer[n - 2] == UInt8(ascii: "."), buffer[n - 1] == UInt8(ascii: "0") { n -= 2 }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The node of a value encoded on its own (fast for the scalar types).
    /// The coding path is built only when needed (an error, a nested
    /// encoder): most fields are scalars, and an array per field was a
    /// large part of encoding a message.
    static func node<T: Encodable>(_ value: T, codingPath: @autoclosure () -> [CodingKey]) throws -> Node {
        if let d = exactly(value, Double.self) { return try finite(d, codingPath()) }
        if let values = exactly(value, [Double].self) {
            // Most of a round's bytes: written in one pass, no node per number.
            if let bad = values.firstIndex(where: { !$0.isFinite }) { _ = try finite(values[bad], codingPath() + [IndexKey(bad)]) }
            return .doubles(values)
        }
        if let i = exactly(value, Int.self) { return .int(Int64(i)) }
        if let s = exactly(value, String.self) { return .string(s) }
        if let b = exactly(value, Bool.self) { return .bool(b) }
        let slot = Slot()
        try value.encode(to: LineEncoder(slot: slot, codingPath: codingPath()))
        return slot.node ?? .object(ObjectBox())
    }

    /// `value` as a U when T is U (a metatype comparison, not a dynamic cast:
    /// arrays of doubles pass every element through here).
    @inline(__always) static func exactly<T, U>(_ value: T, _ type: U.Type) -> U? {
        T.self == U.self ? withUnsafePointer(to: value) { UnsafeRawPointer($0).load(as: U.self) } : nil
    }

    static func finite(_ f: Float, _ codingPath: @autoclosure () -> [CodingKey]) throws -> Node {
        guard f.isFinite else {
            throw EncodingError.invalidValue(f, .init(codingPath: codingPath(), debugDescription: "Unable to encode \(f) directly in JSON."))
        }
        return .float(f)
    }

    static func finite(_ d: Double, _ codingPath: @autoclosure () -> [CodingKey]) throws -> Node {
        guard d.isFinite else {
            throw EncodingError.invalidValue(d, .init(codingPath: codingPath(), debugDescription: "Unable to encode \(d) directly in JSON."))
        }
        return .double(d)
    }
}

/// The Swift runtime's shortest round-trip formatting of a Double, the one
/// `Double.description` uses (debug: false): writes at most `length` bytes
/// and returns how many it wrote.
@_silgen_name("swift_float64ToString")
private func swiftFloat64ToString(_ buffer: UnsafeMutablePointer<UInt8>, _ length: UInt, _ value: Double, _ debug: Bool) -> UInt64

private struct IndexKey: CodingKey {
    var intValue: Int?
    var stringValue: String { "Index \(intValue ?? 0)" }
    init(_ i: Int) { intValue = i }
    init?(intValue: Int) { self.intValue = intValue }
    init?(stringValue: String) { nil }
}

private struct LineEncoder: Encoder {
    let slot: JSONLineWriter.Slot
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let box: JSONLineWriter.ObjectBox
        if case .object(let existing)? = slot.node { box = existing } else {
            box = JSONLineWriter.ObjectBox()
            slot.node = .object(box)
        }
        return KeyedEncodingContainer(KeyedLineContainer<Key>(box: box, codingPath: codingPath))
    }

    func unkeyedContainer() -> UnkeyedEncodingContainer {
        let box: JSONLineWriter.ArrayBox
        if case .array(let existing)? = slot.node { box = existing } else {
            box = JSONLineWriter.ArrayBox()
            slot.node = .array(box)
        }
        return UnkeyedLineContainer(box: box, codingPath: codingPath)
    }

    func singleValueContainer() -> SingleValueEncodingContainer { SingleLineContainer(slot: slot, codingPath: codingPath) }
}

private struct KeyedLineContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let box: JSONLineWriter.ObjectBox
    let codingPath: [CodingKey]

    private func put(_ node: JSONLineWriter.Node, _ key: Key) { box.entries.append((key.stringValue, node)) }

    mutating func encodeNil(forKey key: Key) throws { put(.null, key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { put(.bool(value), key) }
    mutating func encode(_ value: String, forKey key: Key) throws { put(.string(value), key) }
    mutating func encode(_ value: Double, forKey key: Key) throws { put(try JSONLineWriter.finite(value, codingPath + [key]), key) }
    mutating func encode(_ value: Float, forKey key: Key) throws { put(try JSONLineWriter.finite(value, codingPath + [key]), key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { put(.int(Int64(value)), key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { put(.int(Int64(value)), key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { put(.int(Int64(value)), key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { put(.int(Int64(value)), key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { put(.int(value), key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { put(.uint(UInt64(value)), key) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { put(.uint(UInt64(value)), key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { put(.uint(UInt64(value)), key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { put(.uint(UInt64(value)), key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { put(.uint(value), key) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        put(try JSONLineWriter.node(value, codingPath: codingPath + [key]), key)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = JSONLineWriter.ObjectBox()
        put(.object(child), key)
        return KeyedEncodingContainer(KeyedLineContainer<NestedKey>(box: child, codingPath: codingPath + [key]))
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
        let child = JSONLineWriter.ArrayBox()
        put(.array(child), key)
        return UnkeyedLineContainer(box: child, codingPath: codingPath + [key])
    }
    mutating func superEncoder() -> Encoder { superEncoder(named: "super") }
    mutating func superEncoder(forKey key: Key) -> Encoder { superEncoder(named: key.stringValue) }
    private func superEncoder(named name: String) -> Encoder {
        let slot = JSONLineWriter.Slot()
        let child = JSONLineWriter.ObjectBox()
        slot.node = .object(child)
        box.entries.append((name, .object(child)))
        return LineEncoder(slot: slot, codingPath: codingPath)
    }
}

private struct UnkeyedLineContainer: UnkeyedEncodingContainer {
    let box: JSONLineWriter.ArrayBox
    let codingPath: [CodingKey]
    var count: Int { box.items.count }

    private func path() -> [CodingKey] { codingPath + [IndexKey(box.items.count)] }

    mutating func encodeNil() throws { box.items.append(.null) }
    mutating func encode(_ value: Bool) throws { box.items.append(.bool(value)) }
    mutating func encode(_ value: String) throws { box.items.append(.string(value)) }
    mutating func encode(_ value: Double) throws { box.items.append(try JSONLineWriter.finite(value, path())) }
    mutating func encode(_ value: Float) throws { box.items.append(try JSONLineWriter.finite(value, path())) }
    mutating func encode(_ value: Int) throws { box.items.append(.int(Int64(value))) }
    mutating func encode(_ value: Int8) throws { box.items.append(.int(Int64(value))) }
    mutating func encode(_ value: Int16) throws { box.items.append(.int(Int64(value))) }
    mutating func encode(_ value: Int32) throws { box.items.append(.int(Int64(value))) }
    mutating func encode(_ value: Int64) throws { box.items.append(.int(value)) }
    mutating func encode(_ value: UInt) throws { box.items.append(.uint(UInt64(value))) }
    mutating func encode(_ value: UInt8) throws { box.items.append(.uint(UInt64(value))) }
    mutating func encode(_ value: UInt16) throws { box.items.append(.uint(UInt64(value))) }
    mutating func encode(_ value: UInt32) throws { box.items.append(.uint(UInt64(value))) }
    mutating func encode(_ value: UInt64) throws { box.items.append(.uint(value)) }
    mutating func encode<T: Encodable>(_ value: T) throws { box.items.append(try JSONLineWriter.node(value, codingPath: path())) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let child = JSONLineWriter.ObjectBox()
        let p = path()
        box.items.append(.object(child))
        return KeyedEncodingContainer(KeyedLineContainer<NestedKey>(box: child, codingPath: p))
    }
    mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
        let child = JSONLineWriter.ArrayBox()
        let p = path()
        box.items.append(.array(child))
        return UnkeyedLineContainer(box: child, codingPath: p)
    }
    mutating func superEncoder() -> Encoder {
        let slot = JSONLineWriter.Slot()
        let child = JSONLineWriter.ObjectBox()
        slot.node = .object(child)
        let p = path()
        box.items.append(.object(child))
        return LineEncoder(slot: slot, codingPath: p)
    }
}

private struct SingleLineContainer: SingleValueEncodingContainer {
    let slot: JSONLineWriter.Slot
    let codingPath: [CodingKey]
    mutating func encodeNil() throws { slot.node = .null }
    mutating func encode(_ value: Bool) throws { slot.node = .bool(value) }
    mutating func encode(_ value: String) throws { slot.node = .string(value) }
    mutating func encode(_ value: Double) throws { slot.node = try JSONLineWriter.finite(value, codingPath) }
    mutating func encode(_ value: Float) throws { slot.node = try JSONLineWriter.finite(value, codingPath) }
    mutating func encode(_ value: Int) throws { slot.node = .int(Int64(value)) }
    mutating func encode(_ value: Int8) throws { slot.node = .int(Int64(value)) }
    mutating func encode(_ value: Int16) throws { slot.node = .int(Int64(value)) }
    mutating func encode(_ value: Int32) throws { slot.node = .int(Int64(value)) }
    mutating func encode(_ value: Int64) throws { slot.node = .int(value) }
    mutating func encode(_ value: UInt) throws { slot.node = .uint(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { slot.node = .uint(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { slot.node = .uint(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { slot.node = .uint(UInt64(value)) }
    mutating func encode(_ value: UInt64) throws { slot.node = .uint(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { slot.node = try JSONLineWriter.node(value, codingPath: codingPath) }
}

/// A numeric column's values, nil where missing, at 8 bytes a row: each value
/// is a Double, and a missing one is stored as NaN. An array of optional
/// Doubles takes 16 (the flag pads to the Double's alignment), which made a
/// table of 10 million rows and six columns 0.96 GB instead of 0.48 GB
/// (BENCHMARKS.md). A table never holds NaN as a value: the readers take
/// non-finite numbers as text (CSVReader, SQLiteSource) and SQLite stores
/// NaN as NULL, so NaN is free to mean "missing".
public struct NumericValues: RandomAccessCollection, MutableCollection, Equatable, Sendable, ExpressibleByArrayLiteral {
    /// The values, NaN where missing.
    public private(set) var storage: [Double]

    public init() { storage = [] }
    public init<S: Sequence>(_ values: S) where S.Element == Double? { storage = values.map { $0 ?? .nan } }
    public init(arrayLiteral elements: Double?...) { self.init(elements) }

    public var startIndex: Int { 0 }
    public var endIndex: Int { storage.count }
    @inline(__always) public func index(after i: Int) -> Int { i + 1 }
    @inline(__always) public func index(before i: Int) -> Int { i - 1 }

    @inline(__always) public subscript(i: Int) -> Double? {
        get { let x = storage[i]; return x.isNaN ? nil : x }
        set { storage[i] = newValue ?? .nan }
    }

    public mutating func append(_ x: Double?) { storage.append(x ?? .nan) }
    public mutating func reserveCapacity(_ n: Int) { storage.reserveCapacity(n) }

    /// Equal when the same rows are missing and the others are equal (0 == −0, as for optional Doubles).
    public static func == (a: NumericValues, b: NumericValues) -> Bool {
        a.storage.count == b.storage.count && a.storage.elementsEqual(b.storage) { $0 == $1 || ($0.isNaN && $1.isNaN) }
    }
}

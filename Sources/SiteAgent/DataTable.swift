/// A site's rows as typed columns, read from a CSV file or a SQLite query.
/// Missing values are nil. Nothing here ever leaves the site.
public struct DataTable: Sendable {
    public enum ColumnData: Sendable, Equatable {
        case numeric(NumericValues)
        case text([String?])
        /// A numeric column from optional Doubles (nil where missing).
        public static func numeric(_ values: [Double?]) -> ColumnData { .numeric(NumericValues(values)) }
    }
    public struct Column: Sendable, Equatable {
        public var name: String
        public var data: ColumnData
        public init(name: String, data: ColumnData) { self.name = name; self.data = data }
        public var count: Int {
            switch data { case .numeric(let v): return v.count; case .text(let v): return v.count }
        }
        public var isNumeric: Bool { if case .numeric = data { return true }; return false }
        public func isMissing(_ row: Int) -> Bool {
            switch data { case .numeric(let v): return v[row] == nil; case .text(let v): return v[row] == nil }
        }
    }

    public var columns: [Column]
    public var rowCount: Int

    public init(columns: [Column], rowCount: Int) { self.columns = columns; self.rowCount = rowCount }

    public var columnNames: [String] { columns.map(\.name) }
    public func column(named name: String) -> Column? { columns.first { $0.name == name } }
}

extension DataTable {
    /// Text columns whose non-missing values are mostly numbers: numeric
    /// columns with a few unparsable cells (`1e400`, `NaN`, `3,5`), which
    /// the reader had to read as text. For each, the first such row (0-based)
    /// and how many there are; never the values.
    public var mostlyNumericTextColumns: [(name: String, firstRow: Int, count: Int)] {
        columns.compactMap { c in
            guard case .text(let v) = c.data else { return nil }
            var numbers = 0, others = 0, first = -1
            for (i, x) in v.enumerated() {
                guard let x else { continue }
                if let d = Double(x.trimmingCharacters(in: .whitespaces)), d.isFinite { numbers += 1 } else { others += 1; if first < 0 { first = i } }
            }
            return numbers > others && others > 0 ? (c.name, first, others) : nil
        }
    }
}

import Foundation

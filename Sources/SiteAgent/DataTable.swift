/// A site's rows as typed columns, read from a CSV file or a SQLite query.
/// Missing values are nil. Nothing here ever leaves the site.
public struct DataTable: Sendable {
    public enum ColumnData: Sendable, Equatable {
        case numeric([Double?])
        case text([String?])
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

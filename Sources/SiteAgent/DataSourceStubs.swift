// Temporary stand-in until the SQLite reader lands.
public enum SQLiteSource {
    public static func read(path: String, table: String, types: [String: ColumnType] = [:]) throws -> DataTable { fatalError("not merged") }
    public static func read(path: String, query: String, types: [String: ColumnType] = [:]) throws -> DataTable { fatalError("not merged") }
}

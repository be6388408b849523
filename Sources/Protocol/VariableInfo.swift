/// What the coordinator knows about one variable across sites after
/// `describe`: its type and, for text variables (and numeric variables with
/// few distinct values), the sorted union of levels.
public struct VariableInfo: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable { case numeric, text }
    public var name: String
    public var kind: Kind
    /// Levels in R's order (C-locale sort for text; numeric order, R-formatted,
    /// for numeric variables). Nil when the sites did not list them (too many
    /// distinct values, e.g. an identifier).
    public var levels: [String]?
    public init(name: String, kind: Kind, levels: [String]? = nil) {
        self.name = name; self.kind = kind; self.levels = levels
    }
}

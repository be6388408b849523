/// A problem with a model formula: what is wrong, where it is, and what to do.
///
/// `position` is a 0-based offset, in characters, into the formula text;
/// `term` is the offending text (a variable name, an operator, a call).
/// `description` repeats the formula with a caret line under the problem.
public struct FormulaError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    public var position: Int
    public var term: String
    /// The formula the error refers to (for the caret line).
    public var formula: String

    public init(message: String, position: Int, term: String, formula: String = "") {
        self.message = message
        self.position = position
        self.term = term
        self.formula = formula
    }

    public var description: String {
        var out = "formula error at position \(position): \(message)"
        guard !formula.isEmpty else { return out }
        // Keep the caret aligned: show tabs and newlines as single spaces.
        let shown = String(formula.map { $0 == "\t" || $0 == "\n" || $0 == "\r" ? " " : $0 })
        let width = max(1, min(term.count, max(1, shown.count - position)))
        out += "\n  " + shown
        out += "\n  " + String(repeating: " ", count: max(0, position)) + String(repeating: "^", count: width)
        return out
    }
}

import Protocol
import Foundation

/// The operators of R's formula and arithmetic syntax that fedmix parses.
public enum FormulaOperator: String, Sendable, Hashable, CaseIterable {
    case tilde = "~"
    case plus = "+"
    case minus = "-"
    case times = "*"
    case divide = "/"
    case power = "^"
    case colon = ":"
    case bar = "|"
    case doubleBar = "||"
    /// Comparisons and `&`: only inside I() (a logical column) and in cut()'s breaks.
    case less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">=", equal = "==", notEqual = "!="
    case and = "&"

    var isComparison: Bool {
        switch self {
        case .less, .lessOrEqual, .greater, .greaterOrEqual, .equal, .notEqual: return true
        default: return false
        }
    }
}

/// One node of a parsed formula, with where it starts in the text.
///
/// The tree keeps parentheses (R's parser does too), so that `deparsed`
/// reproduces R's `deparse` of the expression: this text names variables,
/// terms and design columns (`I(age^2)`, `log(x + 1)`, `factor(period)`).
public struct FormulaNode: Sendable, Hashable, CustomStringConvertible {
    public indirect enum Kind: Sendable, Hashable {
        /// A variable name (backquotes removed).
        case name(String)
        case number(Double)
        /// A quoted string (a level in relevel(f, ref = "B")).
        case string(String)
        /// A named argument of a call (`ref = "B"`).
        case named(String, FormulaNode)
        /// A function call `f(arg, ...)`.
        case call(String, [FormulaNode])
        /// Unary `-x` or `+x`.
        case unary(FormulaOperator, FormulaNode)
        case binary(FormulaOperator, FormulaNode, FormulaNode)
        /// `( ... )`, kept as R keeps it.
        case paren(FormulaNode)
    }

    public var kind: Kind
    /// 0-based character offset of the node's first character.
    public var position: Int
    /// Number of characters the node spans in the formula text.
    public var length: Int
    /// For binary and unary operators, the position of the operator itself.
    public var operatorPosition: Int

    public init(kind: Kind, position: Int, length: Int, operatorPosition: Int? = nil) {
        self.kind = kind
        self.position = position
        self.length = length
        self.operatorPosition = operatorPosition ?? position
    }

    /// R's `deparse` of the node (one line).
    public var deparsed: String { RDeparse.deparse(self) }
    public var description: String { deparsed }

    /// The node with any enclosing parentheses removed.
    public var unparenthesized: FormulaNode {
        if case .paren(let inner) = kind { return inner.unparenthesized }
        return self
    }

    /// Names of variables in source order (function names excluded).
    func names(into out: inout [(String, Int)]) {
        switch kind {
        case .name(let n): out.append((n, position))
        case .number, .string: break
        case .call(_, let args): for a in args { a.names(into: &out) }
        case .unary(_, let a), .paren(let a), .named(_, let a): a.names(into: &out)
        case .binary(_, let a, let b): a.names(into: &out); b.names(into: &out)
        }
    }

    /// The first `|` or `||` node inside this node, if any.
    var firstBar: FormulaNode? {
        switch kind {
        case .name, .number, .string: return nil
        case .call(_, let args): return args.lazy.compactMap(\.firstBar).first
        case .unary(_, let a), .paren(let a), .named(_, let a): return a.firstBar
        case .binary(let op, let a, let b):
            if op == .bar || op == .doubleBar { return self }
            return a.firstBar ?? b.firstBar
        }
    }
}

/// R's rendering of expressions, numbers and names.
enum RDeparse {
    static let reservedWords: Set<String> = [
        "if", "else", "repeat", "while", "function", "for", "next", "break", "in",
        "TRUE", "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_",
        "NA_character_", "NA_complex_",
    ]

    /// Whether R would print the name without backquotes.
    static func isSyntacticName(_ s: String) -> Bool {
        guard let first = s.first, !reservedWords.contains(s) else { return false }
        if first == "." {
            if let second = s.dropFirst().first, second.isNumber { return false }
        } else if !first.isLetter {
            return false
        }
        return s.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" }
    }

    static func name(_ s: String) -> String {
        isSyntacticName(s) ? s : "`" + s.replacingOccurrences(of: "`", with: "\\`") + "`"
    }

    static func deparse(_ n: FormulaNode) -> String {
        switch n.kind {
        case .name(let s): return name(s)
        case .number(let x): return number(x)
        case .string(let t):
            return "\"" + t.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case .named(let k, let a): return name(k) + " = " + deparse(a)
        case .call(let f, let args): return name(f) + "(" + args.map(deparse).joined(separator: ", ") + ")"
        case .paren(let a): return "(" + deparse(a) + ")"
        case .unary(let op, let a): return op.rawValue + deparse(a)
        case .binary(let op, let a, let b):
            switch op {
            case .divide, .power, .colon: return deparse(a) + op.rawValue + deparse(b)
            default: return deparse(a) + " " + op.rawValue + " " + deparse(b)
            }
        }
    }

    /// A double as R's `deparse` prints it: up to 15 significant digits,
    /// fixed notation unless scientific is narrower (`1e+05`, `1e-04`,
    /// `0.001`, `2.5`).
    static func number(_ x: Double) -> String { RNumberFormat.format(x) }
}

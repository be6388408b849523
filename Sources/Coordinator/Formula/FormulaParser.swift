import Foundation

// Lexer and precedence-climbing parser for R's formula syntax. The grammar
// is R's own (operator precedence as in ?Syntax: `^` > unary minus > `:` >
// `%any%` > `* /` > `+ -` > `|` `||` > `~`); what the operators mean is
// decided later, in FormulaTerms and FormulaResolver.

struct FormulaToken: Sendable {
    enum Kind: Equatable, Sendable {
        case name(String)
        case number(Double)
        case op(FormulaOperator)
        /// `%in%`, `%%` and the like: lexed so the error can name them.
        case special(String)
        case string(String)
        /// `=` of a named argument.
        case equals
        case lparen, rparen, comma
        case end
    }
    var kind: Kind
    var position: Int
    var text: String

    var isBinaryOperator: Bool {
        switch kind {
        case .op, .special: return true
        default: return false
        }
    }
}

/// Builds errors that carry the formula text for the caret line.
struct FormulaErrors: Sendable {
    let formula: String
    func error(_ message: String, at position: Int, _ term: String) -> FormulaError {
        FormulaError(message: message, position: position, term: term, formula: formula)
    }
    func error(_ message: String, _ node: FormulaNode) -> FormulaError {
        let chars = Array(formula)
        let lo = max(0, min(node.position, chars.count))
        let hi = max(lo, min(node.position + node.length, chars.count))
        return error(message, at: node.position, String(chars[lo..<hi]))
    }
}

struct FormulaLexer {
    let chars: [Character]
    let errors: FormulaErrors

    init(_ text: String) {
        chars = Array(text)
        errors = FormulaErrors(formula: text)
    }

    static let operatorHelp = "a formula contains variable names, numbers, parentheses and the operators ~ + - * / ^ : |"

    func tokens() throws -> [FormulaToken] {
        var out: [FormulaToken] = []
        var i = 0
        func text(_ a: Int, _ b: Int) -> String { String(chars[a..<b]) }
        while i < chars.count {
            let c = chars[i]
            if c == " " || c == "\t" || c == "\n" || c == "\r" { i += 1; continue }
            let start = i
            if c.isNumber && c.isASCII || (c == "." && i + 1 < chars.count && chars[i + 1].isNumber && chars[i + 1].isASCII) {
                while i < chars.count, chars[i].isASCII, chars[i].isNumber { i += 1 }
                if i < chars.count, chars[i] == "." {
                    i += 1
                    while i < chars.count, chars[i].isASCII, chars[i].isNumber { i += 1 }
                }
                var malformed = false
                if i < chars.count, chars[i] == "e" || chars[i] == "E" {
                    i += 1
                    if i < chars.count, chars[i] == "+" || chars[i] == "-" { i += 1 }
                    let digitsStart = i
                    while i < chars.count, chars[i].isASCII, chars[i].isNumber { i += 1 }
                    if i == digitsStart { malformed = true }
                }
                while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == "." {
                    malformed = true; i += 1
                }
                let t = text(start, i)
                guard !malformed, let value = Double(t) else {
                    throw errors.error("malformed number \(t); write numbers like 2, 0.5 or 1e-3", at: start, t)
                }
                out.append(FormulaToken(kind: .number(value), position: start, text: t))
                continue
            }
            if c.isLetter || c == "." {
                while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "." || chars[i] == "_" { i += 1 }
                let t = text(start, i)
                if t == "." {
                    throw errors.error("'.' (all other variables) is not supported; list the variables by name, e.g. y ~ age + sex + (1 | site)", at: start, t)
                }
                out.append(FormulaToken(kind: .name(t), position: start, text: t))
                continue
            }
            switch c {
            case "`":
                i += 1
                while i < chars.count, chars[i] != "`" { i += 1 }
                guard i < chars.count else {
                    throw errors.error("the backquoted name starting here is not closed; add a closing `", at: start, "`")
                }
                let name = text(start + 1, i)
                i += 1
                guard !name.isEmpty else {
                    throw errors.error("empty backquoted name ``; put the variable name between the backquotes", at: start, "``")
                }
                out.append(FormulaToken(kind: .name(name), position: start, text: text(start, i)))
            case "~", "+", "-", "*", "/", "^", ":":
                out.append(FormulaToken(kind: .op(FormulaOperator(rawValue: String(c))!), position: start, text: String(c)))
                i += 1
            case "|":
                if i + 1 < chars.count, chars[i + 1] == "|" {
                    out.append(FormulaToken(kind: .op(.doubleBar), position: start, text: "||"))
                    i += 2
                } else {
                    out.append(FormulaToken(kind: .op(.bar), position: start, text: "|"))
                    i += 1
                }
            case "(":
                out.append(FormulaToken(kind: .lparen, position: start, text: "(")); i += 1
            case ")":
                out.append(FormulaToken(kind: .rparen, position: start, text: ")")); i += 1
            case ",":
                out.append(FormulaToken(kind: .comma, position: start, text: ",")); i += 1
            case "%":
                i += 1
                while i < chars.count, chars[i] != "%", chars[i] != " " { i += 1 }
                guard i < chars.count, chars[i] == "%" else {
                    throw errors.error("unexpected character '%'; \(Self.operatorHelp)", at: start, "%")
                }
                i += 1
                out.append(FormulaToken(kind: .special(text(start, i)), position: start, text: text(start, i)))
            case "\"", "'":
                i += 1
                var value = ""
                while i < chars.count, chars[i] != c {
                    if chars[i] == "\\", i + 1 < chars.count { i += 1 }
                    value.append(chars[i]); i += 1
                }
                guard i < chars.count else {
                    throw errors.error("the quoted text starting here is not closed; add the closing \(c)", at: start, String(c))
                }
                i += 1
                out.append(FormulaToken(kind: .string(value), position: start, text: text(start, i)))
            case "=", "<", ">", "!", "&":
                let next: Character? = i + 1 < chars.count ? chars[i + 1] : nil
                var t = String(c)
                if next == "=" { t.append("=") }
                if c == "<" && next == "-" {
                    throw errors.error("'<-' is not supported in a formula; write response ~ terms", at: start, "<-")
                }
                if c == "&" && next == "&" {
                    throw errors.error("'&&' is not supported; use & inside I(), e.g. I(age > 40 & age <= 65)", at: start, "&&")
                }
                if t == "=" {
                    out.append(FormulaToken(kind: .equals, position: start, text: t)); i += 1; continue
                }
                guard let op = FormulaOperator(rawValue: t) else {
                    throw errors.error("the operator '\(t)' is not supported; comparisons (< <= > >= == !=) and & may be used inside I(), e.g. I(age > 65)", at: start, t)
                }
                out.append(FormulaToken(kind: .op(op), position: start, text: t))
                i += t.count
            default:
                throw errors.error("unexpected character '\(c)'; \(Self.operatorHelp)", at: start, String(c))
            }
        }
        out.append(FormulaToken(kind: .end, position: chars.count, text: ""))
        return out
    }
}

struct FormulaParser {
    private var tokens: [FormulaToken]
    private var index = 0
    private let errors: FormulaErrors
    private let textLength: Int

    init(tokens: [FormulaToken], errors: FormulaErrors) {
        self.tokens = tokens
        self.errors = errors
        self.textLength = errors.formula.count
    }

    private var current: FormulaToken { tokens[index] }
    private var previous: FormulaToken? { index > 0 ? tokens[index - 1] : nil }
    private mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    /// Binding powers (left, right) of the binary operators.
    private static func bindingPower(_ kind: FormulaToken.Kind) -> (Int, Int)? {
        switch kind {
        case .op(let op):
            switch op {
            case .tilde: return (1, 2)
            case .bar, .doubleBar: return (3, 4)
            case .and: return (5, 6)
            case .less, .lessOrEqual, .greater, .greaterOrEqual, .equal, .notEqual: return (7, 8)
            case .plus, .minus: return (9, 10)
            case .times, .divide: return (11, 12)
            case .colon: return (15, 16)
            case .power: return (19, 19)   // right-associative
            }
        case .special: return (13, 14)
        default: return nil
        }
    }
    /// Operand binding power of unary minus and plus: tighter than `:`,
    /// looser than `^` (so `-a:b` is `(-a):b` and `-x^2` is `-(x^2)`).
    private static let unaryPower = 17

    /// Checks parentheses balance before parsing, so that the error points
    /// at the parenthesis that has no partner.
    static func checkParentheses(_ tokens: [FormulaToken], _ errors: FormulaErrors) throws {
        var open: [FormulaToken] = []
        for t in tokens {
            switch t.kind {
            case .lparen: open.append(t)
            case .rparen:
                guard open.popLast() != nil else {
                    throw errors.error("unbalanced parentheses: this ')' has no matching '('; remove it or add the '(' it closes", at: t.position, ")")
                }
            default: break
            }
        }
        if let t = open.last {
            throw errors.error("unbalanced parentheses: the '(' here is never closed; add the matching ')'", at: t.position, "(")
        }
    }

    /// Parses a whole formula `response ~ rhs`; returns (response, rhs).
    mutating func parseFormula() throws -> (FormulaNode, FormulaNode) {
        try Self.checkParentheses(tokens, errors)
        let tildes = tokens.filter { $0.kind == .op(.tilde) }
        guard let tilde = tildes.first else {
            let shown = errors.formula.trimmingCharacters(in: .whitespaces)
            throw errors.error("the formula has no '~'; write response ~ terms, e.g. y ~ x + (1 | site)", at: 0, shown)
        }
        if tildes.count > 1 {
            throw errors.error("the formula has more than one '~'; write a single response ~ terms", at: tildes[1].position, "~")
        }
        if tokens.first?.kind == .op(.tilde) {
            throw errors.error("the left side of '~' is empty; name the response, e.g. y ~ x + (1 | site)", at: tilde.position, "~")
        }
        if let i = tokens.firstIndex(where: { $0.kind == .op(.tilde) }), tokens[i + 1].kind == .end {
            throw errors.error("the right side of '~' is empty; add the terms, e.g. y ~ x + (1 | site)", at: tilde.position, "~")
        }
        let root = try parseExpression(0)
        try expectEnd()
        guard case .binary(.tilde, let lhs, let rhs) = root.kind else {
            throw errors.error("'~' must separate the response from the terms at the top level, not inside parentheses or a function call", at: tilde.position, "~")
        }
        return (lhs, rhs)
    }

    private mutating func expectEnd() throws {
        switch current.kind {
        case .end: return
        case .rparen:
            throw errors.error("unbalanced parentheses: this ')' has no matching '('; remove it or add the '(' it closes", at: current.position, ")")
        case .comma:
            throw errors.error("unexpected ',' outside a function call; separate terms with +", at: current.position, ",")
        default:
            throw missingOperator()
        }
    }

    private func missingOperator() -> FormulaError {
        let t = current
        let before = previous.map { " between \($0.text) and \(t.text)" } ?? " before \(t.text)"
        return errors.error("missing operator\(before); join terms with + (or : and * for interactions)", at: t.position, t.text)
    }

    private func node(_ kind: FormulaNode.Kind, from start: Int, operatorAt: Int? = nil) -> FormulaNode {
        let end = previous.map { $0.position + $0.text.count } ?? start
        return FormulaNode(kind: kind, position: start, length: max(0, end - start), operatorPosition: operatorAt)
    }

    mutating func parseExpression(_ minPower: Int) throws -> FormulaNode {
        var lhs = try parsePrefix()
        while true {
            let t = current
            switch t.kind {
            case .end, .rparen, .comma:
                return lhs
            case .name, .number, .lparen, .string:
                throw missingOperator()
            case .equals:
                throw errors.error("'=' is only used for a named argument of a function, e.g. relevel(f, ref = \"B\"); compare with ==", at: t.position, "=")
            default:
                break
            }
            guard let (lbp, rbp) = Self.bindingPower(t.kind), lbp >= minPower else { return lhs }
            if case .special(let s) = t.kind {
                throw errors.error("the operator \(s) is not supported; supported operators are + - * : and ^ inside I(); nesting is written a + a:b", at: t.position, s)
            }
            guard case .op(let op) = t.kind else { return lhs }
            advance()
            let rhs = try parseExpression(rbp)
            lhs = FormulaNode(kind: .binary(op, lhs, rhs), position: lhs.position,
                              length: rhs.position + rhs.length - lhs.position, operatorPosition: t.position)
        }
    }

    private mutating func parsePrefix() throws -> FormulaNode {
        let t = current
        switch t.kind {
        case .number(let v):
            advance()
            return node(.number(v), from: t.position)
        case .string(let v):
            advance()
            return node(.string(v), from: t.position)
        case .name(let n):
            advance()
            if current.kind == .lparen { return try parseCall(n, at: t.position) }
            if n == "Inf" { return node(.number(.infinity), from: t.position) }
            return node(.name(n), from: t.position)
        case .lparen:
            advance()
            if current.kind == .rparen {
                throw errors.error("empty parentheses '()'; put a term inside or remove them", at: t.position, "()")
            }
            let inner = try parseExpression(0)
            guard current.kind == .rparen else { throw missingOperator() }
            advance()
            return node(.paren(inner), from: t.position)
        case .op(let op) where op == .minus || op == .plus:
            advance()
            let operand = try parseExpression(Self.unaryPower)
            return node(.unary(op, operand), from: t.position, operatorAt: t.position)
        case .op(let op) where op == .bar || op == .doubleBar:
            throw errors.error("the left side of '\(op.rawValue)' is empty; write (1 \(op.rawValue) g) for a random intercept or (x \(op.rawValue) g) for intercept and slope", at: t.position, op.rawValue)
        default:
            throw missingOperand()
        }
    }

    private mutating func parseCall(_ name: String, at start: Int) throws -> FormulaNode {
        advance() // (
        var args: [FormulaNode] = []
        if current.kind == .rparen {
            advance()
            return node(.call(name, []), from: start)
        }
        while true {
            if current.kind == .comma || current.kind == .rparen {
                throw errors.error("missing argument in \(name)(...); remove the extra ','", at: current.position, current.text)
            }
            if case .name(let key) = current.kind, index + 1 < tokens.count, tokens[index + 1].kind == .equals {
                let at = current.position
                advance(); advance()
                let value = try parseExpression(0)
                args.append(FormulaNode(kind: .named(key, value), position: at, length: value.position + value.length - at))
            } else {
                args.append(try parseExpression(0))
            }
            switch current.kind {
            case .comma: advance()
            case .rparen:
                advance()
                return node(.call(name, args), from: start)
            default: throw missingOperator()
            }
        }
    }

    /// An operand was expected but `current` cannot start one.
    private func missingOperand() -> FormulaError {
        let t = current
        let prev = previous
        if let p = prev, case .op(let op) = p.kind, t.kind == .end || t.kind == .rparen || t.kind == .comma {
            switch op {
            case .bar, .doubleBar:
                return errors.error("the right side of '\(op.rawValue)' is empty; name the grouping factor, e.g. (1 \(op.rawValue) site)", at: p.position, p.text)
            case .tilde:
                return errors.error("the right side of '~' is empty; add the terms, e.g. y ~ x + (1 | site)", at: p.position, p.text)
            default:
                let where_ = t.kind == .end ? "the formula ends with" : "nothing follows"
                return errors.error("\(where_) the operator '\(op.rawValue)'; add a term after it or remove it", at: p.position, p.text)
            }
        }
        if case .op(let op) = t.kind {
            if let p = prev, p.isBinaryOperator || p.kind == .op(.minus) || p.kind == .op(.plus) {
                return errors.error("two operators in a row: '\(op.rawValue)' follows '\(p.text)'; put a term between them or remove one", at: t.position, op.rawValue)
            }
            return errors.error("the operator '\(op.rawValue)' has nothing on its left; put a term before it", at: t.position, op.rawValue)
        }
        if case .special(let s) = t.kind {
            return errors.error("the operator \(s) is not supported", at: t.position, s)
        }
        if t.kind == .comma {
            return errors.error("unexpected ','; separate terms with +", at: t.position, ",")
        }
        if t.kind == .rparen {
            return errors.error("unexpected ')'", at: t.position, ")")
        }
        return errors.error("the formula ends too early", at: textLength, "")
    }
}

// `--filter`: a row filter in R's comparison syntax, resolved against the
// variables the sites describe into the expression every site evaluates
// (ModelSpec.filter). Comparisons of a numeric variable with a number
// (< <= > >= == !=), of a text variable with one of its levels (== !=),
// is.na(x), !, & and |, and parentheses:
//
//   age >= 50 & sex == "F"
//   !(ward == "ICU") | is.na(discharge)
//
// Each site refuses a filter that selects, or leaves out, fewer than its
// min_rows rows, or that differs from an earlier filter by a few rows.

import Protocol

public struct RowFilterError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct RowFilterParser {
    enum Token: Equatable {
        case name(String), number(Double), string(String), op(String), lparen, rparen, end
    }

    let text: String
    let variables: [String: VariableInfo]
    private var tokens: [Token] = []
    private var index = 0

    /// Parses `text` against the variables' types and levels (from describe).
    public static func parse(_ text: String, variables: [String: VariableInfo]) throws -> Expr {
        var p = RowFilterParser(text: text, variables: variables)
        p.tokens = try tokenize(text)
        let e = try p.parseOr()
        guard p.peek == .end else { throw p.error("unexpected \(p.describe(p.peek)) after a complete filter") }
        return e
    }

    /// The variable names a filter mentions (before they are resolved).
    public static func variableNames(_ text: String) throws -> [String] {
        try tokenize(text).compactMap { if case .name(let n) = $0, n != "is.na" { return n }; return nil }
    }

    private init(text: String, variables: [String: VariableInfo]) { self.text = text; self.variables = variables }

    static func tokenize(_ text: String) throws -> [Token] {
        var out: [Token] = []
        let c = Array(text)
        var i = 0
        while i < c.count {
            let ch = c[i]
            if ch == " " || ch == "\t" { i += 1; continue }
            if ch == "(" { out.append(.lparen); i += 1; continue }
            if ch == ")" { out.append(.rparen); i += 1; continue }
            if "<>=!".contains(ch) {
                if i + 1 < c.count, c[i + 1] == "=" { out.append(.op(String([ch, "="]))); i += 2; continue }
                guard ch != "=" else { throw RowFilterError("filter \"\(text)\": use == to compare, not =") }
                out.append(.op(String(ch))); i += 1; continue
            }
            if ch == "&" || ch == "|" {
                out.append(.op(String(ch)))
                i += (i + 1 < c.count && c[i + 1] == ch) ? 2 : 1   // && and || read as & and |
                continue
            }
            if ch == "\"" || ch == "'" {
                var j = i + 1, s = ""
                while j < c.count, c[j] != ch {
                    if c[j] == "\\", j + 1 < c.count { j += 1 }
                    s.append(c[j]); j += 1
                }
                guard j < c.count else { throw RowFilterError("filter \"\(text)\": a quoted level is not closed") }
                out.append(.string(s)); i = j + 1; continue
            }
            if ch == "`" {
                var j = i + 1, s = ""
                while j < c.count, c[j] != "`" { s.append(c[j]); j += 1 }
                guard j < c.count else { throw RowFilterError("filter \"\(text)\": a `name` is not closed") }
                out.append(.name(s)); i = j + 1; continue
            }
            if ch.isNumber || ch == "-" || (ch == "." && i + 1 < c.count && c[i + 1].isNumber) {
                var j = i + 1
                while j < c.count, c[j].isNumber || c[j] == "." || c[j] == "e" || c[j] == "E"
                        || ((c[j] == "-" || c[j] == "+") && (c[j - 1] == "e" || c[j - 1] == "E")) { j += 1 }
                guard let x = Double(String(c[i..<j])) else { throw RowFilterError("filter \"\(text)\": \(String(c[i..<j])) is not a number") }
                out.append(.number(x)); i = j; continue
            }
            if ch.isLetter || ch == "." || ch == "_" {
                var j = i + 1
                while j < c.count, c[j].isLetter || c[j].isNumber || c[j] == "." || c[j] == "_" { j += 1 }
                out.append(.name(String(c[i..<j]))); i = j; continue
            }
            throw RowFilterError("filter \"\(text)\": unexpected character '\(ch)'")
        }
        out.append(.end)
        return out
    }

    private var peek: Token { tokens[index] }
    private mutating func next() -> Token { let t = tokens[index]; if index < tokens.count - 1 { index += 1 }; return t }

    func error(_ m: String) -> RowFilterError { RowFilterError("filter \"\(text)\": \(m)") }

    func describe(_ t: Token) -> String {
        switch t {
        case .name(let n): return "name \(n)"
        case .number(let x): return "number \(RNumberFormat.format(x))"
        case .string(let s): return "\"\(s)\""
        case .op(let o): return "'\(o)'"
        case .lparen: return "'('"
        case .rparen: return "')'"
        case .end: return "end of the filter"
        }
    }

    mutating func parseOr() throws -> Expr {
        var e = try parseAnd()
        while peek == .op("|") { _ = next(); e = .binary(.or, e, try parseAnd()) }
        return e
    }

    mutating func parseAnd() throws -> Expr {
        var e = try parseNot()
        while peek == .op("&") { _ = next(); e = .binary(.and, e, try parseNot()) }
        return e
    }

    mutating func parseNot() throws -> Expr {
        if peek == .op("!") { _ = next(); return .binary(.equal, try parseNot(), .number(0)) }
        if peek == .lparen {
            _ = next()
            let e = try parseOr()
            guard next() == .rparen else { throw error("a '(' is not closed") }
            return e
        }
        return try parseComparison()
    }

    mutating func parseComparison() throws -> Expr {
        guard case .name(let name) = next() else { throw error("expected a variable name, is.na(name), ! or (") }
        if name == "is.na" {
            guard next() == .lparen, case .name(let v) = next(), next() == .rparen else { throw error("write is.na(variable)") }
            _ = try info(v)
            return .isMissing(v)
        }
        let v = try info(name)
        guard case .op(let o) = next(), let op = BinaryOperator(rawValue: o), op.isLogical, op != .and, op != .or else {
            throw error("expected a comparison (<, <=, >, >=, == or !=) after \(name)")
        }
        let value = next()
        switch (v.kind, value) {
        case (.numeric, .number(let x)):
            return .binary(op, .variable(name), .number(x))
        case (.numeric, .string(let s)), (.numeric, .name(let s)):
            throw error("\(name) is numeric: compare it with a number, not \"\(s)\"")
        case (.text, .string(let level)), (.text, .name(let level)):
            guard op == .equal || op == .notEqual else { throw error("\(name) is text: compare it with == or != and one of its levels") }
            if let levels = v.levels, !levels.contains(level) {
                throw error("\"\(level)\" is not a level of \(name) at the sites (levels: \(levels.joined(separator: ", ")))")
            }
            let indicator = Expr.indicator(name, level: level)
            return op == .equal ? indicator : .binary(.equal, indicator, .number(0))
        case (.text, .number(let x)):
            let level = RNumberFormat.format(x)
            guard op == .equal || op == .notEqual else { throw error("\(name) is text: compare it with == or != and one of its levels") }
            let indicator = Expr.indicator(name, level: level)
            return op == .equal ? indicator : .binary(.equal, indicator, .number(0))
        default:
            throw error("expected a number or a quoted level after \(name) \(o)")
        }
    }

    func info(_ name: String) throws -> VariableInfo {
        guard let v = variables[name] else {
            throw error("unknown variable \(name): no site describes it (or a site's rules do not allow it)")
        }
        return v
    }
}

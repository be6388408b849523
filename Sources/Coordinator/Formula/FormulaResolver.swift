import Math
import Protocol

// Resolves a parsed Formula against the variables' metadata into the
// ModelSpec the sites evaluate: the response, R's model.matrix columns for
// the fixed part and for each random-effects term, groupings and offsets.

extension Formula {
    /// Resolves `f` into a `ModelSpec`, given every variable's type and
    /// levels (from `describe`). Family and link are stored as given.
    public static func resolve(_ f: Formula, variables: [String: VariableInfo],
                               family: Family, link: Link, moments: [String: PooledMoments] = [:]) throws -> ModelSpec {
        var r = FormulaResolver(formula: f, variables: variables, family: family)
        r.moments = moments
        return try r.resolve(link: link)
    }

    /// The arguments of scale() and poly() in the formula, as expressions,
    /// with the largest degree each needs (1 for scale), keyed by R's deparse
    /// of the argument; empty when the formula has neither.
    public static func momentArguments(_ f: Formula, variables: [String: VariableInfo]) throws -> [(key: String, expr: Expr, degree: Int)] {
        let r = FormulaResolver(formula: f, variables: variables, family: .gaussian)
        var out: [(key: String, expr: Expr, degree: Int)] = []
        func visit(_ n: FormulaNode) throws {
            switch n.kind {
            case .call(let g, let args) where g == "scale" || g == "poly":
                let d = g == "scale" ? 1 : try r.checker.polyDegree(n, args)
                let arg = FormulaChecker.argument(args, "x", at: 0)!
                let key = arg.deparsed
                if let i = out.firstIndex(where: { $0.key == key }) { out[i].degree = max(out[i].degree, d) }
                else { out.append((key, try r.arithmetic(arg.unparenthesized, context: "\(g)()"), d)) }
            case .call(_, let args): for a in args { try visit(a) }
            case .paren(let a), .unary(_, let a), .named(_, let a): try visit(a)
            case .binary(_, let a, let b): try visit(a); try visit(b)
            default: break
            }
        }
        try visit(f.rhs)
        return out
    }

    /// Same as `Formula.resolve(self, variables:family:link:)`.
    public func resolve(variables: [String: VariableInfo], family: Family, link: Link) throws -> ModelSpec {
        try Formula.resolve(self, variables: variables, family: family, link: link)
    }
}

/// Resolves formulas; an alternative spelling of `Formula.resolve`.
public struct ModelResolver: Sendable {
    public var variables: [String: VariableInfo]
    public init(variables: [String: VariableInfo]) { self.variables = variables }
    public func resolve(_ f: Formula, family: Family, link: Link) throws -> ModelSpec {
        try Formula.resolve(f, variables: variables, family: family, link: link)
    }
    public func resolve(_ text: String, family: Family, link: Link) throws -> ModelSpec {
        try resolve(Formula.parse(text), family: family, link: link)
    }
}

struct FormulaResolver {
    let formula: Formula
    let variables: [String: VariableInfo]
    let family: Family
    let errors: FormulaErrors
    /// Pooled moments of scale() and poly() arguments (by R's deparse); an
    /// argument without them resolves to its raw powers (placeholders for
    /// `explain` and for the moments round itself).
    var moments: [String: PooledMoments] = [:]
    var checker: FormulaChecker { FormulaChecker(errors: errors) }

    init(formula: Formula, variables: [String: VariableInfo], family: Family) {
        self.formula = formula
        self.variables = variables
        self.family = family
        self.errors = FormulaErrors(formula: formula.text)
    }

    /// A formula variable once its type is known.
    enum Resolved {
        /// Numeric columns (`x`, `I(age^2)`, `log(dose)`, `missing(x)`; poly's several).
        case numeric([DesignColumn])
        /// A factor: the name prefixing its columns (`sex`, `factor(period)`,
        /// `I(age > 65)`), its levels in R's order and each level's 0/1 expression.
        case factor(name: String, levels: [String], exprs: [Expr])

        static func numeric(name: String, expr: Expr) -> Resolved { .numeric([DesignColumn(name: name, expr: expr)]) }
        static func factor(name: String, variable: String, levels: [String]) -> Resolved {
            .factor(name: name, levels: levels, exprs: levels.map { .indicator(variable, level: $0) })
        }

        var isFactor: Bool { if case .factor = self { return true }; return false }
    }

    func resolve(link: Link) throws -> ModelSpec {
        // Unknown variables first, in the order they appear.
        for (name, pos) in formula.variableOccurrences where variables[name] == nil {
            throw unknownVariable(name, at: pos)
        }
        let response = try resolveResponse(formula.response)
        let fixed = try columns(formula.fixed)
        var offset: Expr?
        for o in formula.fixed.offsets {
            let e = try arithmetic(o, context: "offset()")
            offset = offset.map { .binary(.add, $0, e) } ?? e
        }
        var terms: [RandomTerm] = []
        for r in formula.random {
            let cols = try columns(r.lhs)
            let grouping: Grouping
            if r.grouping.contains(FormulaChecker.site) {
                let rest = r.grouping.filter { $0 != FormulaChecker.site }
                grouping = rest.isEmpty ? .site : .withinSite(rest)
            } else {
                grouping = .withinSite(r.grouping)
            }
            terms.append(RandomTerm(name: r.name, grouping: grouping, columns: cols))
        }
        return ModelSpec(formula: formula.text, family: family, link: link, response: response,
                         fixed: fixed, terms: terms, weights: nil, offset: offset)
    }

    // MARK: Variables

    private func unknownVariable(_ name: String, at pos: Int) -> FormulaError {
        var msg = "unknown variable \(name): no site reported a variable of that name"
        let close = variables.keys.filter { Self.editDistance($0.lowercased(), name.lowercased()) <= 2 }.sorted()
        if let best = close.min(by: { Self.editDistance($0, name) < Self.editDistance($1, name) }) {
            msg += "; did you mean \(best)?"
        } else {
            msg += "; check the spelling against the variables the sites describe"
        }
        return errors.error(msg, at: pos, name)
    }

    private func info(_ name: String, _ node: FormulaNode) throws -> VariableInfo {
        guard let v = variables[name] else { throw unknownVariable(name, at: node.position) }
        return v
    }

    private func levels(of name: String, _ info: VariableInfo, _ node: FormulaNode) throws -> [String] {
        guard let levels = info.levels else {
            throw errors.error("levels of \(name) are not known (too many distinct values); a factor needs its list of levels: use \(name) as a grouping factor, e.g. (1 | \(name)), or recode it at the sites", node)
        }
        guard levels.count >= 2 else {
            let shown = levels.first.map { " (\"\($0)\")" } ?? ""
            throw errors.error("\(name) has \(levels.count) level\(levels.count == 1 ? "" : "s")\(shown) at the sites; a factor needs at least two levels: remove the term", node)
        }
        return levels
    }

    /// Types one formula variable of a term.
    private func resolveVariable(_ node: FormulaNode) throws -> Resolved {
        let n = node.unparenthesized
        switch n.kind {
        case .name(let name):
            let v = try info(name, n)
            switch v.kind {
            case .numeric: return .numeric(name: name, expr: .variable(name))
            case .text: return .factor(name: name, variable: name, levels: try levels(of: name, v, n))
            }
        case .call(let g, let args) where g == "factor" || g == "as.factor":
            guard case .name(let name) = args[0].unparenthesized.kind else { break }
            let v = try info(name, args[0])
            return .factor(name: n.deparsed, variable: name, levels: try levels(of: name, v, n))
        case .call("relevel", let args):
            let f = FormulaChecker.argument(args, "x", at: 0)!
            let refNode = args.count == 2 ? (FormulaChecker.argument(args, "ref", at: { if case .named("x", _) = args[0].kind { return 0 }; return 1 }()) ?? args[1]) : args[1]
            var name = ""
            switch f.unparenthesized.kind {
            case .name(let v): name = v
            case .call(_, let inner): if case .name(let v) = inner[0].unparenthesized.kind { name = v }
            default: break
            }
            let v = try info(name, f)
            var lv = try levels(of: name, v, f)
            let ref: String
            switch refNode.unparenthesized.kind {
            case .string(let t): ref = t
            case .number(let x): ref = RNumberFormat.format(x)
            default: ref = ""
            }
            guard let i = lv.firstIndex(of: ref) else {
                throw errors.error("\(ref) is not a level of \(name) at the sites (levels: \(lv.prefix(10).joined(separator: ", "))\(lv.count > 10 ? ", …" : "")); relevel() needs an existing level", refNode)
            }
            lv.insert(lv.remove(at: i), at: 0)
            return .factor(name: n.deparsed, variable: name, levels: lv)
        case .call("I", let args) where FormulaChecker.isLogical(args[0]):
            let l = try logical(args[0])
            return .factor(name: n.deparsed, levels: ["FALSE", "TRUE"], exprs: [Self.negated(l), l])
        case .call("cut", let args):
            let breaks = try checker.cutBreaks(n, args)
            let x = try arithmetic(FormulaChecker.argument(args, "x", at: 0)!.unparenthesized, context: "cut()")
            var exprs: [Expr] = []
            for k in 0..<(breaks.count - 1) {
                let upper = Expr.binary(.lessOrEqual, x, .number(breaks[k + 1]))
                let lower = Expr.binary(.greater, x, .number(breaks[k]))
                if k == 0 { exprs.append(upper) } else if k == breaks.count - 2 { exprs.append(lower) } else { exprs.append(.binary(.and, lower, upper)) }
            }
            return .factor(name: n.deparsed, levels: Self.cutLabels(breaks), exprs: exprs)
        case .call("scale", let args):
            let x = try arithmetic(args[0].unparenthesized, context: "scale()")
            return .numeric(name: n.deparsed, expr: moments[args[0].deparsed].map { $0.scaled(x) } ?? x)
        case .call("poly", let args):
            let d = try checker.polyDegree(n, args)
            let arg = FormulaChecker.argument(args, "x", at: 0)!
            let x = try arithmetic(arg.unparenthesized, context: "poly()")
            let exprs = moments[arg.deparsed].map { $0.poly(x, degree: d) }
                ?? (1...d).map { k in k == 1 ? x : .binary(.power, x, .number(Double(k))) }
            return .numeric(exprs.enumerated().map { DesignColumn(name: n.deparsed + String($0.offset + 1), expr: $0.element) })
        case .call("ns", let args):
            let (interior, boundary, intercept) = try checker.naturalSplineKnots(n, args)
            let x = try arithmetic(FormulaChecker.argument(args, "x", at: 0)!.unparenthesized, context: "ns()")
            let spline: NaturalSpline
            do { spline = try NaturalSpline(interior: interior, boundary: boundary, intercept: intercept) } catch {
                throw errors.error("ns(): \(error)", n)
            }
            return .numeric(Self.naturalSplineColumns(spline, x).enumerated().map {
                DesignColumn(name: n.deparsed + String($0.offset + 1), expr: $0.element)
            })
        case .call("missing", let args):
            guard case .name(let name) = args[0].unparenthesized.kind else { break }
            _ = try info(name, args[0])
            return .numeric(name: n.deparsed, expr: .isMissing(name))
        default:
            break
        }
        return .numeric(name: n.deparsed, expr: try arithmetic(n, context: n.deparsed))
    }

    /// ns()'s columns as expressions the sites evaluate (NaturalSpline's
    /// truncated-power form): with u = pmin(x, ξ_K),
    /// f(ξ₁) + f′(ξ₁)(u − ξ₁) + Σ c_k pmax(u − ξ_k, 0)³ + f′(ξ_K)(x − u).
    /// Each knot is a kink, so a threshold at the sites (ThresholdRules).
    static func naturalSplineColumns(_ spline: NaturalSpline, _ x: Expr) -> [Expr] {
        let knots = spline.knots, last = knots[knots.count - 1]
        let u = Expr.binary(.pmin, x, .number(last))
        return spline.columns.map { c in
            var f = Expr.binary(.add, .number(c.valueAtFirst),
                                .binary(.multiply, .number(c.slopeAtFirst), .binary(.subtract, u, .number(knots[0]))))
            for (k, a) in c.cubic.enumerated() where a != 0 {
                let t = Expr.binary(.pmax, .binary(.subtract, u, .number(knots[k])), .number(0))
                f = .binary(.add, f, .binary(.multiply, .number(a), .binary(.power, t, .number(3))))
            }
            return .binary(.add, f, .binary(.multiply, .number(c.slopeAtLast), .binary(.subtract, x, u)))
        }
    }

    /// A comparison of arithmetic, or & of comparisons, as a 0/1 expression.
    func logical(_ node: FormulaNode) throws -> Expr {
        let n = node.unparenthesized
        guard case .binary(let op, let a, let b) = n.kind else { throw errors.error("expected a comparison", n) }
        let bop: BinaryOperator
        switch op {
        case .and: return .binary(.and, try logical(a), try logical(b))
        case .less: bop = .less
        case .lessOrEqual: bop = .lessOrEqual
        case .greater: bop = .greater
        case .greaterOrEqual: bop = .greaterOrEqual
        case .equal: bop = .equal
        case .notEqual: bop = .notEqual
        default: throw errors.error("expected a comparison", n)
        }
        return .binary(bop, try arithmetic(a, context: "a comparison"), try arithmetic(b, context: "a comparison"))
    }

    /// The complement of a 0/1 comparison expression (R's FALSE level).
    static func negated(_ e: Expr) -> Expr {
        guard case .binary(let op, let a, let b) = e else { return e }
        switch op {
        case .less: return .binary(.greaterOrEqual, a, b)
        case .lessOrEqual: return .binary(.greater, a, b)
        case .greater: return .binary(.lessOrEqual, a, b)
        case .greaterOrEqual: return .binary(.less, a, b)
        case .equal: return .binary(.notEqual, a, b)
        case .notEqual: return .binary(.equal, a, b)
        case .and: return .binary(.or, negated(a), negated(b))
        case .or: return .binary(.and, negated(a), negated(b))
        default: return e
        }
    }

    /// R's cut() labels: "(a,b]" with the breaks as formatC(digits = 3) prints
    /// them, more digits until adjacent breaks differ.
    static func cutLabels(_ breaks: [Double]) -> [String] {
        func format(_ x: Double, _ digits: Int) -> String {
            // formatC pads the non-finite values to a common width: " Inf" next to "-Inf".
            if x.isInfinite { return x > 0 ? (breaks.contains(-.infinity) ? " Inf" : "Inf") : "-Inf" }
            return String(format: "%.\(digits)g", x)
        }
        var shown: [String] = []
        for digits in 3...12 {
            shown = breaks.map { format($0, digits) }
            if zip(shown.dropLast(), shown.dropFirst()).allSatisfy({ $0 != $1 }) { break }
        }
        return (0..<(breaks.count - 1)).map { "(\(shown[$0]),\(shown[$0 + 1])]" }
    }

    /// An arithmetic expression over numeric variables.
    func arithmetic(_ n: FormulaNode, context: String) throws -> Expr {
        switch n.kind {
        case .name(let name):
            let v = try info(name, n)
            if v.kind == .text {
                throw errors.error("\(name) is a text variable and cannot be used in arithmetic (in \(context)); use it as a factor term (\(name) or factor(\(name))), or recode it as a number at the sites", n)
            }
            return .variable(name)
        case .number(let x):
            return .number(x)
        case .string, .named:
            throw errors.error("\(n.deparsed) cannot be used in arithmetic (in \(context))", n)
        case .paren(let a):
            return try arithmetic(a, context: context)
        case .unary(let op, let a):
            let e = try arithmetic(a, context: context)
            if op == .plus { return e }
            if case .number(let x) = e { return .number(-x) }
            return .unary(.negate, e)
        case .binary(let op, let a, let b):
            let bop: BinaryOperator
            switch op {
            case .plus: bop = .add
            case .minus: bop = .subtract
            case .times: bop = .multiply
            case .divide: bop = .divide
            case .power: bop = .power
            default:
                throw errors.error("'\(op.rawValue)' is not arithmetic; use + - * / ^ inside \(context)", at: n.operatorPosition, op.rawValue)
            }
            return .binary(bop, try arithmetic(a, context: context), try arithmetic(b, context: context))
        case .call(let f, let args):
            switch f {
            case "I": return try arithmetic(args[0], context: context)
            case "log": return .unary(.log, try arithmetic(args[0], context: context))
            case "exp": return .unary(.exp, try arithmetic(args[0], context: context))
            case "sqrt": return .unary(.sqrt, try arithmetic(args[0], context: context))
            case "log1p": return .unary(.log1p, try arithmetic(args[0], context: context))
            case "abs": return .unary(.abs, try arithmetic(args[0], context: context))
            case "pmin", "pmax":
                return .binary(f == "pmin" ? .pmin : .pmax, try arithmetic(args[0], context: context), try arithmetic(args[1], context: context))
            case "missing":
                guard case .name(let name) = args[0].unparenthesized.kind else { break }
                _ = try info(name, args[0])
                return .isMissing(name)
            default: break
            }
            throw errors.error("function \(f) is not supported; supported: \(FormulaChecker.supportedFunctions)", at: n.position, f)
        }
    }

    // MARK: Response

    private func resolveResponse(_ node: FormulaNode) throws -> Response {
        let n = node.unparenthesized
        switch n.kind {
        case .call("cbind", let args):
            guard family == .binomial else {
                throw errors.error("cbind(successes, failures) is a binomial response, but the family is \(family.rawValue); fit it with family binomial", n)
            }
            return .binomial(successes: try arithmetic(args[0], context: "cbind()"),
                             failures: try arithmetic(args[1], context: "cbind()"))
        case .call("missing", let args):
            guard case .name(let name) = args[0].unparenthesized.kind else { break }
            _ = try info(name, args[0])
            return .value(.isMissing(name))
        case .name(let name):
            let v = try info(name, n)
            guard v.kind == .text else { return .value(.variable(name)) }
            guard family == .binomial else {
                throw errors.error("the response \(name) is a text variable; a \(family.rawValue) response must be numeric (a text response with two levels needs family binomial)", n)
            }
            guard let levels = v.levels, levels.count == 2 else {
                let count = v.levels.map { "\($0.count) levels" } ?? "unknown levels"
                throw errors.error("the response \(name) is a text variable with \(count); a binomial response needs exactly two levels (the second counts as success), a 0/1 variable or cbind(successes, failures)", n)
            }
            return .value(.indicator(name, level: levels[1]))
        default:
            break
        }
        return .value(try arithmetic(n, context: "the response"))
    }

    // MARK: model.matrix

    /// R's model.matrix columns for a set of terms: intercept first, then
    /// each term's columns, the first variable of an interaction varying
    /// fastest.
    func columns(_ t: ModelTerms) throws -> [DesignColumn] {
        var resolved: [Int: Resolved] = [:]
        for term in t.terms {
            for v in term.variables where resolved[v] == nil {
                resolved[v] = try resolveVariable(t.variables[v])
            }
        }
        var codes = t.terms.map(\.codes)
        if !t.intercept {
            // model.matrix: without an intercept, the first factor of the
            // first term that has one is coded by indicators of all levels.
            search: for (j, term) in t.terms.enumerated() {
                for (k, v) in term.variables.enumerated() where resolved[v]!.isFactor {
                    codes[j][k] = 2
                    break search
                }
            }
        }
        var out: [DesignColumn] = []
        if t.intercept { out.append(DesignColumn(name: "(Intercept)", expr: .number(1))) }
        for (j, term) in t.terms.enumerated() {
            var cols: [DesignColumn] = []
            for (k, v) in term.variables.enumerated() {
                let own: [DesignColumn]
                switch resolved[v]! {
                case .numeric(let columns):
                    own = columns
                case .factor(let name, let levels, let exprs):
                    let used = codes[j][k] == 1 ? Array(zip(levels, exprs).dropFirst()) : Array(zip(levels, exprs))
                    own = used.map { DesignColumn(name: name + $0.0, expr: $0.1) }
                }
                if k == 0 {
                    cols = own
                } else {
                    var next: [DesignColumn] = []
                    for c in own {
                        for p in cols {
                            next.append(DesignColumn(name: p.name + ":" + c.name, expr: .binary(.multiply, p.expr, c.expr)))
                        }
                    }
                    cols = next
                }
            }
            out += cols
        }
        return out
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        for i in 1...a.count {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
}

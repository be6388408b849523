// A parsed lme4 formula: the response, the fixed-effects terms (R's
// terms.formula of the formula without its bars) and the random-effects
// terms (each bar, with `||` and `/` expanded). Parsing needs no data;
// `resolve` (FormulaResolver.swift) turns it into a ModelSpec once the
// variables' types and levels are known.

import Protocol

/// One random-effects term `(lhs | grouping)` after `||` and `/` expansion.
public struct RandomEffectsTerm: Sendable, Hashable {
    /// The terms of the left side (`1 + x` → intercept and x).
    public var lhs: ModelTerms
    /// The grouping factor's components as written after expansion:
    /// `["site"]`, `["site", "cask"]`, `["Subject"]`, `["g1", "g2"]`.
    public var grouping: [String]
    /// Where each grouping component appears in the formula.
    public var groupingPositions: [Int]
    /// The bar as written (before expansion).
    public var source: FormulaNode
    /// The group's name as lme4 writes it after expanding `/`
    /// (`(1 | a/b)` → `b:a` and `a`; `a/b/c` → `c:(b:a)`, `b:a`, `a`).
    public var name: String
    /// Position of the bar in the formula.
    public var position: Int { source.operatorPosition }
}

/// An lme4 model formula, parsed and expanded.
public struct Formula: Sendable, Hashable, CustomStringConvertible {
    /// The formula as written.
    public let text: String
    /// The left side of `~`.
    public let response: FormulaNode
    /// The right side of `~`, as written.
    public let rhs: FormulaNode
    /// The right side without its random-effects terms (lme4's `nobars`);
    /// nil when nothing but bars is left (an implicit intercept).
    public let fixedPart: FormulaNode?
    /// Fixed-effects terms, intercept and offsets, as R's `terms()` gives them.
    public let fixed: ModelTerms
    /// The bars (`|` and `||` nodes) as written, in formula order.
    public let bars: [FormulaNode]
    /// Random-effects terms after expanding `||` and `/`, in formula order.
    public let random: [RandomEffectsTerm]

    public var description: String { text }

    /// Every variable the formula reads, in order of first appearance
    /// (`site`, which denotes the site itself, is not a variable).
    public var variablesUsed: [String] {
        var found: [(String, Int)] = []
        response.names(into: &found)
        rhs.names(into: &found)
        var out: [String] = []
        for (n, _) in found where n != FormulaChecker.site && !out.contains(n) { out.append(n) }
        return out
    }

    /// Variable names with the position of their first appearance.
    var variableOccurrences: [(String, Int)] {
        var found: [(String, Int)] = []
        response.names(into: &found)
        rhs.names(into: &found)
        var seen: Set<String> = []
        return found.filter { $0.0 != FormulaChecker.site && seen.insert($0.0).inserted }
    }

    /// Parses and checks a formula such as
    /// `use01 ~ age + I(age^2) + urban + livch + (1 | site)`.
    public static func parse(_ text: String) throws -> Formula {
        let lexer = FormulaLexer(text)
        let errors = lexer.errors
        var parser = FormulaParser(tokens: try lexer.tokens(), errors: errors)
        let (response, rhs) = try parser.parseFormula()
        let checker = FormulaChecker(errors: errors)

        try checker.checkResponse(response)
        let (fixedPart, bars) = try checker.splitBars(rhs)
        if let fixedPart { try checker.checkTerms(fixedPart, random: false, interaction: false) }
        let fixed = ModelTerms.build(fixedPart)
        if let clash = fixed.variables.first(where: { $0.deparsed == response.unparenthesized.deparsed }) {
            throw errors.error("the response \(clash.deparsed) also appears on the right side of ~; remove it from the terms", clash)
        }
        var random: [RandomEffectsTerm] = []
        for bar in bars { random += try checker.expandBar(bar) }
        // No random-effects term: a flat model (R's lm or glm).
        return Formula(text: text, response: response, rhs: rhs, fixedPart: fixedPart, fixed: fixed,
                       bars: bars, random: random)
    }
}

/// Structural checks that need no data: which functions and operators may
/// appear where, the reserved word `site`, bars, grouping factors.
struct FormulaChecker {
    static let site = "site"
    static let supportedFunctions = "factor, as.factor, relevel, I, log, log1p, exp, sqrt, abs, pmin, pmax, scale, poly, ns, cut, offset, cbind, missing"
    /// Functions whose argument is arithmetic and whose value is one column.
    static let unaryArithmetic: Set<String> = ["I", "log", "exp", "sqrt", "log1p", "abs"]
    /// Largest degree of poly(x, d): its columns are polynomials of degree d,
    /// and a site accepts a variable up to degree 3.
    static let maxPolyDegree = 3
    let errors: FormulaErrors

    private func reserved(_ n: FormulaNode) -> FormulaError {
        errors.error("'site' is reserved: it stands for the site itself and can only be a grouping factor, e.g. (1 | site) or (1 | site:ward)", n)
    }

    private func unknownFunction(_ f: String, _ n: FormulaNode) -> FormulaError {
        errors.error("function \(f) is not supported; supported: \(Self.supportedFunctions)", at: n.position, f)
    }

    private func arity(_ f: String, _ n: FormulaNode, _ example: String) -> FormulaError {
        errors.error("\(f)() takes exactly one argument, e.g. \(example)", n)
    }

    private func requireVariable(_ f: String, _ call: FormulaNode, _ args: [FormulaNode], example: String) throws {
        guard args.count == 1, case .name(let v) = args[0].unparenthesized.kind else {
            throw errors.error("\(f)() takes a single variable name, e.g. \(example)", call)
        }
        if v == Self.site { throw reserved(args[0]) }
    }

    // MARK: Response

    func checkResponse(_ node: FormulaNode) throws {
        let n = node.unparenthesized
        if case .call(let f, let args) = n.kind {
            switch f {
            case "cbind":
                guard args.count == 2 else {
                    throw errors.error("cbind() takes two arguments: cbind(successes, failures)", n)
                }
                for a in args { try checkArithmetic(a, context: "cbind()") }
                return
            case "missing":
                try requireVariable("missing", n, args, example: "missing(x)")
                return
            case "factor":
                throw errors.error("factor() cannot be the response; a binomial response is a 0/1 variable, a two-level text variable or cbind(successes, failures)", n)
            case "offset":
                throw errors.error("offset() cannot be the response; add it to the right side: y ~ x + offset(log(exposure)) + (1 | site)", n)
            default: break
            }
        }
        if let bar = n.firstBar {
            throw errors.error("'|' cannot be used in the response; random-effects terms go on the right side of ~, e.g. y ~ x + (1 | site)", at: bar.operatorPosition, bar.deparsed)
        }
        try checkArithmetic(n, context: "the response")
        var names: [(String, Int)] = []
        n.names(into: &names)
        if names.isEmpty {
            throw errors.error("the response must be a variable (or an expression of variables), e.g. y ~ x + (1 | site)", n)
        }
    }

    // MARK: Arithmetic (inside I(), log(), offset(), the response)

    func checkArithmetic(_ n: FormulaNode, context: String) throws {
        switch n.kind {
        case .name(let s):
            if s == Self.site { throw reserved(n) }
        case .number: break
        case .string, .named:
            throw errors.error("\(n.deparsed) cannot be used inside \(context)", n)
        case .paren(let a), .unary(_, let a):
            try checkArithmetic(a, context: context)
        case .binary(let op, let a, let b):
            switch op {
            case .plus, .minus, .times, .divide, .power:
                try checkArithmetic(a, context: context)
                try checkArithmetic(b, context: context)
            case .less, .lessOrEqual, .greater, .greaterOrEqual, .equal, .notEqual, .and:
                throw errors.error("a comparison can only be a whole I() term of the right side, e.g. I(age > 65) or I(age > 40 & age <= 65); it cannot be used inside \(context)", at: n.operatorPosition, op.rawValue)
            case .colon:
                throw errors.error("':' is not arithmetic; inside \(context) use * to multiply", at: n.operatorPosition, ":")
            case .bar, .doubleBar:
                throw errors.error("'\(op.rawValue)' cannot be used inside \(context); random-effects terms are added to the right side, e.g. + (1 | site)", at: n.operatorPosition, op.rawValue)
            case .tilde:
                throw errors.error("'~' cannot be used inside \(context)", at: n.operatorPosition, "~")
            }
        case .call(let f, let args):
            switch f {
            case _ where Self.unaryArithmetic.contains(f):
                guard args.count == 1 else { throw arity(f, n, "\(f)(x)") }
                try checkArithmetic(args[0], context: context)
            case "pmin", "pmax":
                try checkClamp(f, n, args, context: context)
            case "missing":
                try requireVariable("missing", n, args, example: "missing(x)")
            case "factor", "as.factor", "relevel", "scale", "poly", "cut", "ns":
                throw errors.error("\(f)() cannot be used inside \(context); use it as a term of its own, e.g. + \(f == "poly" ? "poly(x, 2)" : f == "cut" ? "cut(x, c(-Inf, 40, 65, Inf))" : f == "relevel" ? "relevel(f, ref = \"B\")" : f == "ns" ? Self.nsExample : "\(f)(x)")", n)
            case "offset":
                throw errors.error("offset() cannot be used inside \(context); add it as a term: + offset(...)", n)
            case "cbind":
                throw errors.error("cbind(successes, failures) is only allowed as the response, on the left of ~", n)
            default:
                throw unknownFunction(f, n)
            }
        }
    }

    // MARK: Terms (fixed part and left sides of bars)

    func checkTerms(_ n: FormulaNode, random: Bool, interaction: Bool) throws {
        switch n.kind {
        case .name(let s):
            if s == Self.site { throw reserved(n) }
        case .number(let v):
            if v != 0 && v != 1 {
                throw errors.error("the number \(n.deparsed) cannot be a term; only 0 and 1 (drop or keep the intercept) may appear outside I(); for arithmetic use I(), e.g. I(2 * x)", n)
            }
            if interaction {
                throw errors.error("the intercept (\(n.deparsed)) cannot be part of an interaction; add or remove it with + 1 or - 1", n)
            }
        case .paren(let a):
            try checkTerms(a, random: random, interaction: interaction)
        case .unary(let op, let a):
            if op == .plus { try checkTerms(a, random: random, interaction: interaction); return }
            guard case .number(let v) = a.unparenthesized.kind, v == 0 || v == 1 else {
                throw errors.error("a minus sign before a term is not supported: -1 removes the intercept, a - b removes term b, and a negated covariate is written I(-x)", at: n.operatorPosition, "-")
            }
            if interaction {
                throw errors.error("the intercept (-\(a.deparsed)) cannot be part of an interaction; add or remove it with + 1 or - 1", n)
            }
        case .binary(let op, let a, let b):
            switch op {
            case .plus, .minus:
                try checkTerms(a, random: random, interaction: interaction)
                try checkTerms(b, random: random, interaction: interaction)
            case .colon, .times:
                try checkTerms(a, random: random, interaction: true)
                try checkTerms(b, random: random, interaction: true)
            case .power:
                throw errors.error("the power operator ^ in \(n.deparsed) is not supported outside I(): write I(x^2) for a squared covariate, and write interactions out with * or : instead of (a + b)^2", at: n.operatorPosition, "^")
            case .divide:
                throw errors.error("the nesting operator / in \(n.deparsed) is only supported in grouping factors, e.g. (1 | site/ward); in the fixed part write a + a:b, or I(a/b) for a ratio", at: n.operatorPosition, "/")
            case .bar, .doubleBar:
                throw errors.error("'\(op.rawValue)' cannot be used in the fixed part: random-effects terms are added on their own with +, e.g. y ~ x + (1 | site)", at: n.operatorPosition, op.rawValue)
            case .tilde:
                throw errors.error("'~' can appear only once, between the response and the terms", at: n.operatorPosition, "~")
            case .less, .lessOrEqual, .greater, .greaterOrEqual, .equal, .notEqual, .and:
                throw errors.error("a comparison must be written inside I() to be a term, e.g. I(age > 65)", at: n.operatorPosition, op.rawValue)
            }
        case .string, .named:
            throw errors.error("\(n.deparsed) cannot be a term", n)
        case .call(let f, let args):
            switch f {
            case "factor", "as.factor":
                try requireVariable(f, n, args, example: "\(f)(period)")
            case "relevel":
                try checkRelevel(n, args)
            case "I" where args.count == 1 && Self.isLogical(args[0]):
                try checkLogical(args[0])
            case _ where Self.unaryArithmetic.contains(f):
                guard args.count == 1 else { throw arity(f, n, f == "I" ? "I(x^2)" : "\(f)(x)") }
                try checkArithmetic(args[0], context: "\(f)()")
            case "pmin", "pmax":
                try checkClamp(f, n, args, context: "\(f)()")
            case "scale":
                guard args.count == 1 else {
                    throw errors.error("scale() takes one argument here (centred and scaled by the pooled mean and SD), e.g. scale(age)", n)
                }
                try checkArithmetic(args[0], context: "scale()")
            case "poly":
                _ = try polyDegree(n, args)
                try checkArithmetic(args[0], context: "poly()")
            case "cut":
                _ = try cutBreaks(n, args)
                try checkArithmetic(args[0], context: "cut()")
            case "ns":
                _ = try naturalSplineKnots(n, args)
                try checkArithmetic(Self.argument(args, "x", at: 0)!, context: "ns()")
            case "missing":
                try requireVariable("missing", n, args, example: "missing(x)")
            case "offset":
                if random {
                    throw errors.error("offset() cannot be used inside a random-effects term; add it to the fixed part: + offset(...)", n)
                }
                if interaction {
                    throw errors.error("offset() cannot be part of an interaction; add it on its own: + offset(...)", n)
                }
                guard args.count == 1 else { throw arity(f, n, "offset(log(exposure))") }
                try checkArithmetic(args[0], context: "offset()")
            case "cbind":
                throw errors.error("cbind(successes, failures) is only allowed as the response, on the left of ~", n)
            default:
                throw unknownFunction(f, n)
            }
        }
    }

    // MARK: Functions with several arguments

    /// A comparison, or & of comparisons (possibly in parentheses).
    static func isLogical(_ n: FormulaNode) -> Bool {
        if case .binary(let op, _, _) = n.unparenthesized.kind { return op.isComparison || op == .and }
        return false
    }

    /// I(age > 65), I(age > 40 & age <= 65): comparisons of arithmetic, joined by &.
    func checkLogical(_ n: FormulaNode) throws {
        guard case .binary(let op, let a, let b) = n.unparenthesized.kind else {
            throw errors.error("& joins comparisons, e.g. I(age > 40 & age <= 65)", n)
        }
        if op == .and {
            for side in [a, b] {
                guard Self.isLogical(side) else { throw errors.error("& joins comparisons, e.g. I(age > 40 & age <= 65); \(side.deparsed) is not one", side) }
                try checkLogical(side)
            }
            return
        }
        try checkArithmetic(a, context: "a comparison")
        try checkArithmetic(b, context: "a comparison")
    }

    func checkClamp(_ f: String, _ n: FormulaNode, _ args: [FormulaNode], context: String) throws {
        guard args.count == 2, args.allSatisfy({ if case .named = $0.kind { return false }; return true }) else {
            throw errors.error("\(f)() takes an expression and a constant, e.g. \(f)(age, 80)", n)
        }
        for a in args { try checkArithmetic(a, context: context) }
        var names: [(String, Int)] = []
        args[0].names(into: &names)
        var constant: [(String, Int)] = []
        args[1].names(into: &constant)
        guard !names.isEmpty, constant.isEmpty else {
            throw errors.error("\(f)() takes an expression of variables first and a constant second, e.g. \(f)(age, 80)", n)
        }
    }

    /// The argument named `key`, or else the positional argument at `index`.
    static func argument(_ args: [FormulaNode], _ key: String, at index: Int) -> FormulaNode? {
        for a in args { if case .named(key, let v) = a.kind { return v } }
        let positional = args.filter { if case .named = $0.kind { return false }; return true }
        return index < positional.count ? positional[index] : nil
    }

    /// relevel(f, ref = "B"): f a variable, factor(v) or as.factor(v); the reference a level.
    func checkRelevel(_ n: FormulaNode, _ args: [FormulaNode]) throws {
        let example = "relevel(ward, ref = \"B\")"
        guard args.count == 2, let f = Self.argument(args, "x", at: 0), let ref = Self.argument(args, "ref", at: args.first.map { if case .named("x", _) = $0.kind { return 0 }; return 1 } ?? 1) else {
            throw errors.error("relevel() takes a factor and its reference level, e.g. \(example)", n)
        }
        switch f.unparenthesized.kind {
        case .name(let v): if v == Self.site { throw reserved(f) }
        case .call(let g, let inner) where g == "factor" || g == "as.factor": try requireVariable(g, f, inner, example: example)
        default: throw errors.error("relevel() applies to a variable, factor(x) or as.factor(x), e.g. \(example)", f)
        }
        switch ref.unparenthesized.kind {
        case .string, .number: break
        default: throw errors.error("the reference level of relevel() is a level in quotes, e.g. \(example)", ref)
        }
    }

    /// poly(x, d): the degree, a whole number from 1 to 3.
    func polyDegree(_ n: FormulaNode, _ args: [FormulaNode]) throws -> Int {
        guard args.count == 2, let x = Self.argument(args, "x", at: 0), case .number(let d)? = Self.argument(args, "degree", at: 1)?.unparenthesized.kind else {
            throw errors.error("poly() takes a variable and a degree, e.g. poly(age, 2) (orthogonal polynomials from the pooled rows; raw = TRUE is written I(age^2))", n)
        }
        _ = x
        guard d == d.rounded(), d >= 1, d <= Double(Self.maxPolyDegree) else {
            throw errors.error("the degree of poly() must be 1, 2 or 3: sites accept a variable up to degree \(Self.maxPolyDegree)", n)
        }
        return Int(d)
    }

    /// cut(x, breaks): the breaks, from -Inf to Inf, sorted and distinct.
    func cutBreaks(_ n: FormulaNode, _ args: [FormulaNode]) throws -> [Double] {
        let example = "cut(age, c(-Inf, 40, 65, Inf))"
        guard args.count == 2, Self.argument(args, "x", at: 0) != nil, let b = Self.argument(args, "breaks", at: 1),
              case .call("c", let items) = b.unparenthesized.kind, items.count >= 3 else {
            throw errors.error("cut() takes a variable and a vector of breaks, e.g. \(example) (a number of intervals is not supported: its breaks would depend on the range of the data)", n)
        }
        var breaks: [Double] = []
        for item in items {
            switch item.unparenthesized.kind {
            case .number(let v): breaks.append(v)
            case .unary(.minus, let a): if case .number(let v) = a.unparenthesized.kind { breaks.append(-v) } else { fallthrough }
            default: throw errors.error("the breaks of cut() must be numbers, e.g. \(example)", item)
            }
        }
        breaks.sort()
        guard breaks.first == -.infinity, breaks.last == .infinity else {
            throw errors.error("the breaks of cut() must start at -Inf and end at Inf, so that no row falls outside the intervals (R would drop such rows), e.g. \(example)", b)
        }
        guard Set(breaks).count == breaks.count else { throw errors.error("the breaks of cut() must be distinct", b) }
        return breaks
    }

    static let nsExample = "ns(age, knots = c(40, 60), Boundary.knots = c(25, 80))"

    /// ns(x, knots = c(…), Boundary.knots = c(a, b)): the interior and
    /// boundary knots, given as numbers. R's defaults (knots at quantiles of
    /// x for a df, boundary knots at its range) are single rows' values,
    /// which no site reveals, so both are written out; `df`, when also
    /// given, must agree with the knots.
    func naturalSplineKnots(_ n: FormulaNode, _ args: [FormulaNode]) throws -> (interior: [Double], boundary: (Double, Double), intercept: Bool) {
        let example = Self.nsExample
        guard Self.argument(args, "x", at: 0) != nil else {
            throw errors.error("ns() takes a variable and its knots, e.g. \(example)", n)
        }
        func numbers(_ node: FormulaNode, _ what: String) throws -> [Double] {
            let items: [FormulaNode]
            if case .name("NULL") = node.unparenthesized.kind { return [] }
            if case .call("c", let list) = node.unparenthesized.kind { items = list } else { items = [node] }
            return try items.map { item in
                switch item.unparenthesized.kind {
                case .number(let v): return v
                case .unary(.minus, let a): if case .number(let v) = a.unparenthesized.kind { return -v }
                default: break
                }
                throw errors.error("the \(what) of ns() must be numbers, e.g. \(example)", item)
            }
        }
        var interior: [Double]?, boundary: [Double]?, df: Double?, intercept = false
        for (i, a) in args.enumerated() {
            switch a.kind {
            case .named("x", _): continue
            case .named("knots", let v): interior = try numbers(v, "knots")
            case .named("Boundary.knots", let v): boundary = try numbers(v, "Boundary.knots")
            case .named("df", let v):
                guard case .number(let d) = v.unparenthesized.kind else { throw errors.error("df of ns() must be a number", v) }
                df = d
            case .named("intercept", let v):
                guard case .name(let t) = v.unparenthesized.kind, t == "TRUE" || t == "FALSE" else {
                    throw errors.error("intercept of ns() is TRUE or FALSE", v)
                }
                intercept = t == "TRUE"
            case .named(let name, _):
                throw errors.error("ns() takes x, knots, Boundary.knots, df and intercept; not \(name)", a)
            default:
                if i == 0 { continue }
                throw errors.error("name the knots of ns(), e.g. \(example)", a)
            }
        }
        guard let b = boundary else {
            throw errors.error("ns() needs Boundary.knots: R's default, the range of x, is two patients' values, which the sites do not reveal; e.g. \(example)", n)
        }
        guard b.count == 2, b[0] != b[1], b.allSatisfy(\.isFinite) else {
            throw errors.error("Boundary.knots of ns() are two different numbers, e.g. c(25, 80)", n)
        }
        guard let knots = interior else {
            throw errors.error("ns() needs its interior knots written out (knots = c(…)): knots at the pooled quantiles of x would be patients' values, which the sites do not reveal; e.g. \(example) (knots = NULL for none)", n)
        }
        let (lo, hi) = (b.min()!, b.max()!)
        guard knots.allSatisfy({ $0 > lo && $0 < hi }), Set(knots).count == knots.count else {
            throw errors.error("the knots of ns() must be distinct and lie strictly between the Boundary.knots (\(RNumberFormat.format(lo)), \(RNumberFormat.format(hi)))", n)
        }
        if let d = df, d != Double(knots.count + (intercept ? 2 : 1)) {
            throw errors.error("df = \(RNumberFormat.format(d)) does not match the \(knots.count) interior knots of ns(): it has \(knots.count + (intercept ? 2 : 1)) columns; leave df out when giving knots", n)
        }
        return (knots, (lo, hi), intercept)
    }

    // MARK: Bars

    /// lme4's findbars/nobars: bars added with + (possibly in parentheses)
    /// are random-effects terms; what remains is the fixed part.
    func splitBars(_ rhs: FormulaNode) throws -> (FormulaNode?, [FormulaNode]) {
        switch rhs.kind {
        case .binary(.bar, _, _), .binary(.doubleBar, _, _):
            throw errors.error("a random-effects term must be in parentheses: write (\(rhs.deparsed)); '|' cannot be used in the fixed part", at: rhs.operatorPosition, rhs.deparsed)
        default:
            return try split(rhs)
        }
    }

    private func split(_ n: FormulaNode) throws -> (FormulaNode?, [FormulaNode]) {
        switch n.kind {
        case .binary(.plus, let a, let b):
            let (fa, ba) = try split(a)
            let (fb, bb) = try split(b)
            let fixed: FormulaNode?
            switch (fa, fb) {
            case (nil, nil): fixed = nil
            case (let x?, nil): fixed = x
            case (nil, let y?): fixed = y
            case (let x?, let y?):
                fixed = FormulaNode(kind: .binary(.plus, x, y), position: n.position, length: n.length,
                                    operatorPosition: n.operatorPosition)
            }
            return (fixed, ba + bb)
        case .binary(.minus, let a, let b):
            // y ~ x + (1 | g) - 1. Like lme4's nobars, when nothing but bars
            // is left of the minus, the right side stands alone: lme4 turns
            // y ~ (1 | g) - 1 into y ~ 1 (the intercept stays).
            if let bar = b.firstBar {
                throw errors.error("a random-effects term cannot be subtracted; remove '- (\(bar.deparsed))'", at: bar.operatorPosition, bar.deparsed)
            }
            let (fa, ba) = try split(a)
            guard !ba.isEmpty else { return (n, []) }
            guard let fa else { return (b, ba) }
            return (FormulaNode(kind: .binary(.minus, fa, b), position: n.position, length: n.length,
                                operatorPosition: n.operatorPosition), ba)
        case .paren(let inner):
            let u = inner.unparenthesized
            if case .binary(let op, _, _) = u.kind, op == .bar || op == .doubleBar { return (nil, [u]) }
            let (f, b) = try split(inner)
            if b.isEmpty { return (n, []) }
            return (f.map { FormulaNode(kind: .paren($0), position: n.position, length: n.length) }, b)
        case .binary(let op, _, _) where op == .bar || op == .doubleBar:
            throw errors.error("a random-effects term must be in parentheses: write (\(n.deparsed))", at: n.operatorPosition, op.rawValue)
        default:
            return (n, [])
        }
    }

    /// Checks one bar and expands `||` (lme4's expandDoubleVerts) and `/`
    /// in the grouping factor (lme4's expandSlash).
    func expandBar(_ bar: FormulaNode) throws -> [RandomEffectsTerm] {
        guard case .binary(let op, let lhs, let rhs) = bar.kind else { return [] }
        for side in [lhs, rhs] {
            if let inner = side.firstBar {
                throw errors.error("random-effects terms cannot be nested: '\(inner.deparsed)' is inside '\(bar.deparsed)'; write each term in its own parentheses, e.g. (1 | a) + (1 | b)", at: inner.operatorPosition, inner.deparsed)
            }
        }
        try checkTerms(lhs, random: true, interaction: false)
        let lhsTerms = ModelTerms.build(lhs)
        if lhsTerms.terms.isEmpty && !lhsTerms.intercept {
            throw errors.error("the random-effects term (\(bar.deparsed)) has no columns; write (1 \(op.rawValue) g) for a random intercept", bar)
        }
        let groupings = try expandGrouping(rhs)
        for (g, _) in groupings {
            var seen: Set<String> = []
            for (name, pos) in g {
                if !seen.insert(name).inserted {
                    throw errors.error("\(name) appears twice in the grouping factor \(rhs.deparsed)", at: pos, name)
                }
            }
        }
        var parts: [ModelTerms] = []
        if op == .doubleBar {
            if lhsTerms.intercept {
                parts.append(ModelTerms(variables: [], terms: [], intercept: true, offsets: []))
            }
            for t in lhsTerms.terms {
                // Each term on its own without intercept, as lme4 rewrites
                // (a + b || g) into (1 | g) + (0 + a | g) + (0 + b | g).
                let vars = t.variables.map { lhsTerms.variables[$0] }
                let single = ModelTerm(label: t.label, variables: Array(0..<vars.count),
                                       codes: vars.count == 1 ? [1] : Array(repeating: 2, count: vars.count))
                parts.append(ModelTerms(variables: vars, terms: [single], intercept: false, offsets: []))
            }
        } else {
            parts = [lhsTerms]
        }
        var out: [RandomEffectsTerm] = []
        for p in parts {
            for (g, name) in groupings {
                out.append(RandomEffectsTerm(lhs: p, grouping: g.map(\.0), groupingPositions: g.map(\.1), source: bar, name: name))
            }
        }
        return out
    }

    private func badGrouping(_ n: FormulaNode) -> FormulaError {
        errors.error("the grouping factor \(n.deparsed) must be a variable or variables joined by : or / (e.g. site, site:ward, site/ward); to group by an expression, create that variable at the sites", n)
    }

    /// Expands `/` as lme4's expandSlash does, most nested first:
    /// `a/b` → [b:a, a]; `a/b/c` → [c:(b:a), b:a, a]; `a:b` → [a:b].
    /// Each grouping comes with its components and its lme4 name.
    private func expandGrouping(_ n: FormulaNode) throws -> [([(String, Int)], String)] {
        switch n.kind {
        case .name(let s): return [([(s, n.position)], s)]
        case .paren(let a): return try expandGrouping(a)
        case .binary(.colon, _, _):
            let c = try components(n)
            return [(c, c.map(\.0).joined(separator: ":"))]
        case .binary(.divide, let a, let b):
            let outer = try expandGrouping(a)
            let inner = try components(b)
            let (nested, nestedName) = outer[0]
            let right = nested.count > 1 ? "(\(nestedName))" : nestedName
            return [(inner + nested, inner.map(\.0).joined(separator: ":") + ":" + right)] + outer
        default: throw badGrouping(n)
        }
    }

    private func components(_ n: FormulaNode) throws -> [(String, Int)] {
        switch n.kind {
        case .name(let s): return [(s, n.position)]
        case .paren(let a): return try components(a)
        case .binary(.colon, let a, let b), .binary(.divide, let a, let b):
            return try components(a) + components(b)
        default: throw badGrouping(n)
        }
    }
}

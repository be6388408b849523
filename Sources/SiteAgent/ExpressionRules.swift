// The formula language this agent vouches for. The coordinator resolves a
// formula into expressions over a row's variables; the agent, not the
// coordinator, decides which of them may be evaluated over its rows. The
// response, the prior weights, the offset and every design column obey the
// same rules, checked on the expression alone, before any row is read (so a
// refusal says nothing about the data).
//
// The principle: a column may only be a smooth function of its variables
// whose shape the analyst cannot tune to one row's value. A sum over rows of
// such a column mixes every row; what singles a row out is a function that is
// far from its other values at one value of a variable: an indicator of an
// exact value (0^((age-87)^2), which is 1 at age 87 only), a pole placed at a
// value (1/(age-87), log(age-86.99)), a steep bump (exp(-1000*(age-87)^2)),
// or a high power that lets the largest row dominate a sum (age^40, exp(100*age)).
// So the allowed forms are:
//
//   - a numeric variable; a factor level's 0/1 indicator; missing(x) and the
//     missing-indicator method's filled x (0/1 columns and factor levels are
//     row subsets, counted against min_cell at evaluation);
//   - constants, and affine maps of an allowed expression (e + c, c·e, e / c);
//   - sums and products of allowed expressions (interactions), with each
//     variable's polynomial degree at most 3: (x − c)², centred cubics — a
//     polynomial of degree 3 cannot isolate one of the many values a variable
//     takes, and keeps the largest row from dominating a sum;
//   - log and sqrt of a variable, of a positive multiple of it, or of the
//     variable plus a whole number ≥ 1 (log(x + 1)): the shift cannot be tuned
//     to put a pole next to one row's value;
//   - exp of a variable or a multiple of it with |multiplier| ≤ 1, and, at
//     evaluation, the dominance rule below;
//   - a ratio of two variables (incidence/size), whose denominator is a
//     variable as recorded, not shifted;
//   - log1p of a variable (or of the variable plus a whole number ≥ 0), abs
//     and pmin/pmax with a constant of an allowed expression: the kink they
//     put at a value is a threshold, which the threshold rule below checks;
//   - a comparison of an allowed expression with a constant (I(age > 65)),
//     and & / | of comparisons (cut()'s intervals), as a column of its own or
//     a factor of a product (an interaction), never inside other arithmetic
//     (I((age > 64.5) - (age > 65)) would be an indicator of age 65);
//   - nothing else: no comparison or logical operator in the response,
//     weights or offset,
//     no power whose exponent depends on a variable or is negative or not one
//     of 1/2, 1, 2, 3, no function of a shifted variable in a denominator.
//
// At evaluation (CellCounts, ThresholdRules), the threshold rule: every
// threshold of the design (a comparison, pmin/pmax's constant, abs's zero)
// has at least min_cell used rows on each side, and the thresholds together
// cut the used rows into cells of none or at least min_cell rows.
// Two numeric rules back these up for every
// column, response, weights and offset: a column must not differ from its most
// common value in fewer than min_cell rows (an indicator in disguise), and no
// single row may carry more than max_row_share of the column's sum of squared
// deviations (the dominance rule of statistical disclosure control).

import Protocol

enum ExpressionRules {
    /// Largest power a variable may carry in one column.
    static let maxDegree = 3

    /// Checks every expression a model would evaluate over rows; throws a
    /// refusal naming the column and the rule.
    static func check(_ model: ModelSpec) throws {
        var named: [(String, Expr)] = model.fixed.map { ($0.name, $0.expr) }
        for t in model.terms { named += t.columns.map { ("\($0.name) | \(t.name)", $0.expr) } }
        switch model.response {
        case .value(let e): named.append(("the response", e))
        case .binomial(let s, let f): named += [("the response's successes", s), ("the response's failures", f)]
        }
        if let w = model.weights { named.append(("the weights", w)) }
        if let o = model.offset { named.append(("the offset", o)) }
        for (name, e) in named {
            do { _ = try shape(e) } catch let why as Refusal {
                throw SiteError.disclosure("\(name == "the response" || name.hasPrefix("the ") ? name : "column \"\(name)\"") cannot be evaluated at this site: \(why.reason). This site evaluates only smooth functions of its variables that cannot single out a row (see The formula language in PRIVACY.md) (rule expressions)")
            }
        }
    }

    /// The columns that compare, checked as `check` would (for policies that
    /// do not check expressions otherwise).
    static func checkComparisons(_ model: ModelSpec) throws {
        var spec = model
        spec.fixed = model.fixed.filter(\.expr.usesLogicalOperators)
        spec.terms = model.terms.map { t in var t = t; t.columns = t.columns.filter(\.expr.usesLogicalOperators); return t }
        spec.response = .value(.number(0)); spec.weights = nil; spec.offset = nil
        try check(spec)
    }

    struct Refusal: Error { var reason: String }

    /// What an allowed expression is.
    struct Shape {
        /// Its value when it depends on no variable.
        var constant: Double?
        /// Polynomial degree per variable; nil for a variable entering
        /// through log, sqrt, exp or a ratio (not a polynomial in it).
        var degrees: [String: Int?] = [:]
        /// A variable as recorded (or filled), possibly times a constant:
        /// (variable, multiplier).
        var scaledVariable: (name: String, multiplier: Double)?
        /// A variable plus a constant (for log(x + 1)).
        var shiftedVariable: (name: String, shift: Double)?
        /// 0/1 from a comparison or & / | of comparisons.
        var logical = false

        static func constant(_ c: Double) -> Shape { Shape(constant: c) }
        static func variable(_ v: String) -> Shape { Shape(degrees: [v: 1], scaledVariable: (v, 1)) }
        /// Takes only the values 0 and 1: its powers are itself.
        static func binary(_ v: String) -> Shape { Shape(degrees: [v: 0]) }
    }

    static func shape(_ e: Expr) throws -> Shape {
        switch e {
        case .number(let c): return .constant(c)
        case .variable(let v), .filled(let v, _): return .variable(v)
        case .indicator(let v, _), .isMissing(let v): return .binary(v)
        case .unary(let f, let a):
            let s = try shape(a)
            if s.logical { throw comparisonInArithmetic }
            if let c = s.constant { return .constant(apply(f, c)) }
            switch f {
            case .abs:
                var out = s
                out.scaledVariable = nil; out.shiftedVariable = nil
                return out
            case .log1p:
                if let (v, m) = s.scaledVariable, m == 1 { return nonPolynomial(v) }
                if let (v, k) = s.shiftedVariable, k >= 0, k == k.rounded() { return nonPolynomial(v) }
                throw Refusal(reason: "log1p() applies only to a variable, or the variable plus a whole number; a scaled or shifted argument can put a pole next to one row's value")
            case .negate: return scaled(s, by: -1)
            case .log, .sqrt:
                if let (v, m) = s.scaledVariable, m > 0 { return nonPolynomial(v) }
                if let (v, k) = s.shiftedVariable, k >= 1, k == k.rounded() { return nonPolynomial(v) }
                throw Refusal(reason: "\(f.rawValue)() applies only to a variable, a positive multiple of it, or the variable plus a whole number (log(x + 1)); a shifted argument can put a pole next to one row's value")
            case .exp:
                if let (v, m) = s.scaledVariable, abs(m) <= 1 { return nonPolynomial(v) }
                throw Refusal(reason: "exp() applies only to a variable or a multiple of it by at most 1 in size; a scaled or shaped argument lets one row dominate, or builds a bump at one value")
            }
        case .binary(let op, let a, let b):
            let sa = try shape(a), sb = try shape(b)
            if op.isComparison {
                guard !sa.logical, !sb.logical, (sa.constant == nil) != (sb.constant == nil) else {
                    throw Refusal(reason: "a comparison may only compare an expression of variables with a constant (I(age > 65))")
                }
                var out = Shape(degrees: (sa.constant == nil ? sa : sb).degrees.mapValues { _ in 0 })
                out.logical = true
                return out
            }
            if op == .and || op == .or {
                guard sa.logical, sb.logical else {
                    throw Refusal(reason: "& and | may only join comparisons")
                }
                var out = try combined(sa, sb, multiply: true)
                out.logical = true
                return out
            }
            if op == .pmin || op == .pmax {
                guard !sa.logical, !sb.logical, (sa.constant == nil) != (sb.constant == nil) else {
                    throw Refusal(reason: "\(op.rawValue)() may only take an expression of variables and a constant (pmin(age, 80))")
                }
                var out = sa.constant == nil ? sa : sb
                out.scaledVariable = nil; out.shiftedVariable = nil
                return out
            }
            if let x = sa.constant, let y = sb.constant { return .constant(apply(op, x, y)) }
            if sa.logical || sb.logical {
                // Only a product of two non-constant factors: an interaction.
                guard op == .multiply, sa.constant == nil, sb.constant == nil else { throw comparisonInArithmetic }
                var out = try combined(sa, sb, multiply: true)
                out.logical = sa.logical && sb.logical
                return out
            }
            switch op {
            case .add, .subtract:
                if let c = sb.constant { return shifted(sa, by: op == .add ? c : -c) }
                if let c = sa.constant { return shifted(op == .subtract ? scaled(sb, by: -1) : sb, by: c) }
                return try combined(sa, sb, multiply: false)
            case .multiply:
                if let c = sb.constant { return scaled(sa, by: c) }
                if let c = sa.constant { return scaled(sb, by: c) }
                return try combined(sa, sb, multiply: true)
            case .divide:
                if let c = sb.constant {
                    guard c != 0 else { throw Refusal(reason: "division by zero") }
                    return scaled(sa, by: 1 / c)
                }
                guard let (w, m) = sb.scaledVariable, m != 0 else {
                    throw Refusal(reason: "a denominator may only be a variable as recorded (a ratio such as incidence/size); a shifted or computed denominator can put a pole next to one row's value")
                }
                guard sa.constant != nil || sa.scaledVariable != nil else {
                    throw Refusal(reason: "a ratio may only divide a variable or a constant by a variable")
                }
                var out = Shape(degrees: sa.degrees)
                out.degrees[w] = .some(nil)
                return out
            case .power:
                guard let k = sb.constant else {
                    throw Refusal(reason: "an exponent may not depend on a variable (0^((x - a)^2) is 1 at x = a and 0 elsewhere: it singles out rows)")
                }
                if k == 0.5 { return try shape(.unary(.sqrt, a)) }
                guard k == 1 || k == 2 || k == 3 else {
                    throw Refusal(reason: "powers may only be 1/2, 1, 2 or 3; a negative power has a pole and a high power lets the largest row dominate a sum")
                }
                var out = sa
                out.scaledVariable = nil; out.shiftedVariable = nil
                if k == 1 { return sa }
                for (v, d) in sa.degrees {
                    guard let d else { throw Refusal(reason: "a power may only apply to a polynomial in the variables (e.g. (x - c)^2), not to log, sqrt, exp or a ratio") }
                    let nd = d * Int(k)
                    guard nd <= maxDegree else { throw Refusal(reason: "\(v) would enter with degree \(nd); at most \(maxDegree) is allowed") }
                    out.degrees[v] = .some(d == 0 ? 0 : nd)
                }
                return out
            default:
                throw Refusal(reason: "operator \(op.rawValue) is not allowed in a model column")
            }
        }
    }

    private static func nonPolynomial(_ v: String) -> Shape { Shape(degrees: [v: nil]) }

    static let comparisonInArithmetic = Refusal(reason: "a comparison may only be a column of its own (I(x > c)) or multiply other columns (an interaction), never enter other arithmetic: the difference of two comparisons with close constants would single out the rows between them")

    private static func scaled(_ s: Shape, by c: Double) -> Shape {
        var out = s
        if c == 0 { return .constant(0) }
        if let (v, m) = s.scaledVariable { out.scaledVariable = (v, m * c) }
        out.shiftedVariable = nil
        return out
    }

    private static func shifted(_ s: Shape, by c: Double) -> Shape {
        var out = s
        out.scaledVariable = nil
        if let (v, m) = s.scaledVariable, m == 1 { out.shiftedVariable = (v, c) } else { out.shiftedVariable = nil }
        return out
    }

    /// A sum or product of two non-constant expressions.
    private static func combined(_ a: Shape, _ b: Shape, multiply: Bool) throws -> Shape {
        var out = Shape()
        for (v, d) in a.degrees { out.degrees[v] = d }
        for (v, d) in b.degrees {
            guard let existing = out.degrees[v] else { out.degrees[v] = d; continue }
            guard multiply else {
                let merged: Int? = (existing == nil || d == nil) ? nil : max(existing!, d!)
                out.degrees[v] = .some(merged)
                continue
            }
            guard let x = existing, let y = d else {
                throw Refusal(reason: "\(v) enters a product twice through log, sqrt, exp or a ratio; only polynomials of a variable may multiply it")
            }
            let nd = x + y
            guard nd <= maxDegree || x == 0 || y == 0 else { throw Refusal(reason: "\(v) would enter with degree \(nd); at most \(maxDegree) is allowed") }
            out.degrees[v] = .some(x == 0 && y == 0 ? 0 : (x == 0 ? y : (y == 0 ? x : nd)))
        }
        return out
    }

    private static func apply(_ f: UnaryFunction, _ x: Double) -> Double {
        switch f {
        case .log: return Foundation.log(x); case .exp: return Foundation.exp(x); case .sqrt: return x.squareRoot(); case .negate: return -x
        case .log1p: return Foundation.log1p(x); case .abs: return Swift.abs(x)
        }
    }

    private static func apply(_ op: BinaryOperator, _ x: Double, _ y: Double) -> Double {
        switch op {
        case .add: return x + y
        case .subtract: return x - y
        case .multiply: return x * y
        case .divide: return x / y
        case .power: return Foundation.pow(x, y)
        case .pmin: return Swift.min(x, y)
        case .pmax: return Swift.max(x, y)
        default: return .nan
        }
    }
}

import Foundation

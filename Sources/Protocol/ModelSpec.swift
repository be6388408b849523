// The resolved model that travels from the coordinator to every site: each
// design column as an expression over the site's variables, the coding of
// categorical levels already decided (from all sites' levels), the grouping
// terms and the response. Sites evaluate it on their own rows and never see
// anything but this specification.

import Math

/// A design-matrix column as an expression over one row's variables.
///
/// Expressions are data, not code: a site evaluates them with a small
/// interpreter, so a coordinator cannot make a site run anything else.
public indirect enum Expr: Sendable, Hashable {
    /// A constant.
    case number(Double)
    /// The value of a numeric variable.
    case variable(String)
    /// 1 when the variable's value equals `level`, else 0 (treatment-contrast
    /// dummy). Text variables compare as text; numeric variables compare
    /// their R-formatted value (`RNumberFormat.format`), as `factor(x)` does.
    case indicator(String, level: String)
    /// 1 when the variable is missing, else 0 (the missing-indicator column).
    case isMissing(String)
    /// The variable's value, or `with` where it is missing (the
    /// missing-indicator method's filled covariate).
    case filled(String, with: Double)
    case unary(UnaryFunction, Expr)
    case binary(BinaryOperator, Expr, Expr)

    /// Every variable the expression reads.
    public var variables: [String] {
        switch self {
        case .number: return []
        case .variable(let v), .indicator(let v, _), .isMissing(let v), .filled(let v, _): return [v]
        case .unary(_, let e): return e.variables
        case .binary(_, let a, let b):
            var out = a.variables
            for v in b.variables where !out.contains(v) { out.append(v) }
            return out
        }
    }

    /// Variables whose missingness makes the expression missing (all but
    /// those read only through `isMissing`).
    public var requiredVariables: [String] {
        switch self {
        case .number, .isMissing, .filled: return []
        case .variable(let v), .indicator(let v, _): return [v]
        case .unary(_, let e): return e.requiredVariables
        case .binary(_, let a, let b):
            var out = a.requiredVariables
            for v in b.requiredVariables where !out.contains(v) { out.append(v) }
            return out
        }
    }
}

public enum UnaryFunction: String, Sendable, Hashable, Codable, CaseIterable {
    case log, exp, sqrt, negate
    /// log(1 + x) and |x| (R's log1p and abs).
    case log1p, abs
}

public enum BinaryOperator: String, Sendable, Hashable, Codable, CaseIterable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", power = "^"
    /// Comparisons and logical and/or: 1 when true, else 0. A site accepts
    /// them only in a row filter (`ModelSpec.filter`), never in a design
    /// column, so that a column can never single out a subgroup by a threshold.
    case less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">=", equal = "==", notEqual = "!="
    case and = "&", or = "|"
    /// The smaller or larger of the two values, row by row (R's pmin and
    /// pmax with a constant): a kink at the constant, which a site treats as a
    /// threshold (docs/PRIVACY.md).
    case pmin, pmax

    /// Whether the operator is a comparison or a logical connective.
    public var isComparison: Bool {
        switch self {
        case .less, .lessOrEqual, .greater, .greaterOrEqual, .equal, .notEqual: return true
        default: return false
        }
    }

    public var isLogical: Bool {
        switch self {
        case .add, .subtract, .multiply, .divide, .power, .pmin, .pmax: return false
        default: return true
        }
    }
}

extension Expr {
    /// Whether the expression uses a comparison or logical operator anywhere.
    public var usesLogicalOperators: Bool {
        switch self {
        case .number, .variable, .indicator, .isMissing, .filled: return false
        case .unary(_, let e): return e.usesLogicalOperators
        case .binary(let op, let a, let b): return op.isLogical || a.usesLogicalOperators || b.usesLogicalOperators
        }
    }

    /// Every (variable, level) pair the expression compares through `indicator`.
    public var indicators: [(variable: String, level: String)] {
        switch self {
        case .number, .variable, .isMissing, .filled: return []
        case .indicator(let v, let l): return [(v, l)]
        case .unary(_, let e): return e.indicators
        case .binary(_, let a, let b): return a.indicators + b.indicators
        }
    }
}

/// A named column of a design matrix (`(Intercept)`, `sexM`, `I(age^2)`).
public struct DesignColumn: Sendable, Hashable, Codable {
    public var name: String
    public var expr: Expr
    enum CodingKeys: String, CodingKey { case name, expr }
    public init(name: String, expr: Expr) { self.name = name; self.expr = expr }
}

/// What identifies a random-effects group.
public enum Grouping: Sendable, Hashable {
    /// One group per site: `(1 | site)`.
    case site
    /// Groups nested within a site, identified by the combination of these
    /// variables' values at that site (`site:ward:patient` → ["ward", "patient"]).
    /// Equal codes at two sites are different groups.
    case withinSite([String])
    /// A factor shared by several sites (`(1 | year)`, a surgeon who operates
    /// at several hospitals): global groups, one per level of `levels`, the
    /// coordinator's agreed coding (levels as R prints them; a row's level is
    /// its position in the list). A site eliminates its own random effects
    /// and sends its Schur complement onto these groups' effects (DESIGN.md,
    /// "Crossed factors").
    case crossed(String, levels: [String])

    /// Whether the groups are shared by sites (not nested in one).
    public var isCrossed: Bool { if case .crossed = self { return true } else { return false } }
}

/// One random-effects term `(columns | group)` with an unstructured
/// lower-triangular relative covariance factor.
public struct RandomTerm: Sendable, Hashable, Codable {
    /// The group as lme4's `VarCorr` names it (`site`, `site:cask`, `Subject.1`).
    public var name: String
    public var grouping: Grouping
    public var columns: [DesignColumn]
    enum CodingKeys: String, CodingKey { case name, grouping, columns }
    public init(name: String, grouping: Grouping, columns: [DesignColumn]) {
        self.name = name; self.grouping = grouping; self.columns = columns
    }
    /// Number of covariance parameters θ of this term.
    public var thetaCount: Int { columns.count * (columns.count + 1) / 2 }
}

/// The response: one expression, or binomial successes and failures.
public enum Response: Sendable, Hashable {
    case value(Expr)
    case binomial(successes: Expr, failures: Expr)
}

/// The complete, resolved model a site evaluates on its rows.
public struct ModelSpec: Sendable, Hashable {
    /// The formula as the analyst wrote it (for the audit log and reports).
    public var formula: String
    public var family: Family
    public var link: Link
    public var response: Response
    /// Fixed-effects columns, in R's `model.matrix` order.
    public var fixed: [DesignColumn]
    /// Random-effects terms in lme4's order (θ is laid out in this order).
    public var terms: [RandomTerm]
    public var weights: Expr?
    public var offset: Expr?
    /// Row filter: a site uses only the rows where this is finite and not 0
    /// (rows where one of its variables is missing are left out). Absent from
    /// the wire when nil. A site refuses a filter when it or its complement
    /// selects fewer than its `min_rows` rows (see docs/PRIVACY.md).
    public var filter: Expr?
    /// Variables a row must also have, beyond those the model reads: the
    /// models of one comparison (`fedmix compare`) are fitted on the same
    /// rows, the complete cases of all of them. Not a filter: it selects no
    /// subgroup, only drops incomplete rows as the largest model would.
    /// Absent from the wire when empty.
    public var alsoRequired: [String] = []
    /// Flat models only: the clusters of sandwich::vcovCL's robust
    /// covariance, the site itself or a grouping nested within it (clusters
    /// never span sites). Absent from the wire when nil. A site refuses a
    /// cluster with fewer than its min_cell rows (see docs/PRIVACY.md).
    public var cluster: Grouping? = nil
    /// GEE (fedmix gee): the working correlation and order variable; the
    /// clusters are `cluster`. Absent from the wire when nil.
    public var gee: GEESpec? = nil

    public init(formula: String, family: Family = .gaussian, link: Link = .identity,
                response: Response, fixed: [DesignColumn], terms: [RandomTerm],
                weights: Expr? = nil, offset: Expr? = nil, filter: Expr? = nil) {
        self.formula = formula; self.family = family; self.link = link
        self.response = response; self.fixed = fixed; self.terms = terms
        self.weights = weights; self.offset = offset; self.filter = filter
    }

    /// Every variable a row must have for complete-case analysis, in first-use order.
    public var requiredVariables: [String] {
        var out: [String] = []
        func add(_ vs: [String]) { for v in vs where !out.contains(v) { out.append(v) } }
        switch response {
        case .value(let e): add(e.requiredVariables)
        case .binomial(let s, let f): add(s.requiredVariables); add(f.requiredVariables)
        }
        for c in fixed { add(c.expr.requiredVariables) }
        for t in terms {
            for c in t.columns { add(c.expr.requiredVariables) }
            if case .withinSite(let vs) = t.grouping { add(vs) }
            if case .crossed(let v, _) = t.grouping { add([v]) }
        }
        if let w = weights { add(w.requiredVariables) }
        if let o = offset { add(o.requiredVariables) }
        add(alsoRequired)
        if case .withinSite(let vs)? = cluster { add(vs) }
        if let o = gee?.order { add([o]) }
        return out
    }

    /// A model without random-effects terms: an ordinary regression (lm, glm).
    public var isFlat: Bool { terms.isEmpty }

    /// Number of covariance parameters θ.
    public var thetaCount: Int { terms.reduce(0) { $0 + $1.thetaCount } }
}

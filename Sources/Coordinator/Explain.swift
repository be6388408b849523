// What a fit would ask of each site and what each site would send back,
// before anything is computed: the rounds, the aggregates of every answer
// and their dimensions, the largest number of rounds, and the checks each
// site applies. A pure function of the model specification (as it travels
// to the sites) and the number of sites, so that a privacy reviewer, the
// analyst (`fedmix explain`, `fedmix fit --dry-run`) and a site's operator
// (`fedmix explain --model`, from a prepare line of the agent's audit log)
// read the same text.

import Foundation
import Math
import Protocol

public enum Explain {
    /// The scale() and poly() calls of a formula (R's deparse) with the
    /// degree of each: each makes the fit ask for pooled moments first.
    /// None when the text does not parse (a model read back from an audit log
    /// with a formula fedmix did not write).
    static func momentCalls(_ formula: String) -> [(call: String, degree: Int)] {
        guard let parsed = try? Formula.parse(formula) else { return [] }
        var out: [(call: String, degree: Int)] = []
        func visit(_ n: FormulaNode) {
            switch n.kind {
            case .call(let g, let args) where g == "scale" || g == "poly":
                var degree = 1
                if g == "poly", args.count == 2, case .number(let d) = args[1].unparenthesized.kind { degree = Int(d) }
                if !out.contains(where: { $0.call == n.deparsed }) { out.append((n.deparsed, degree)) }
            case .call(_, let args): args.forEach(visit)
            case .paren(let a), .unary(_, let a), .named(_, let a): visit(a)
            case .binary(_, let a, let b): visit(a); visit(b)
            default: break
            }
        }
        visit(parsed.rhs)
        return out
    }

    /// The explanation of fitting `spec` over `sites` sites.
    public static func text(spec: ModelSpec, sites: Int, options: FitOptions = FitOptions()) -> String {
        let p = spec.fixedCount
        let m = spec.thetaCount
        let siteTerms = spec.terms.filter { $0.grouping == .site }
        let r = siteTerms.reduce(0) { $0 + $1.columns.count }
        let withinSite = spec.terms.filter { $0.grouping != .site }
        let gaussian = spec.family == .gaussian
        let oneRound = gaussian && spec.localModel.allTermsGroupedBySite
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        func jet(_ n: Int, order: Int = 2) -> Int { JetSpace.width(parameters: n, order: order) }
        func names(_ cols: [DesignColumn]) -> String { cols.map(\.name).joined(separator: ", ") }

        line("What each site would send for this model (nothing has been computed yet)")
        line()
        line("Model     \(spec.formula)")
        let method = gaussian ? (options.method == .ml ? "ML" : "REML")
            : (options.nAGQ == 1 ? "Laplace" : "adaptive Gauss-Hermite, nAGQ = \(options.nAGQ)")
        line("          family \(spec.family.rawValue), link \(spec.link.rawValue), \(method)")
        line("Filter    \(spec.filter.map { expression($0) } ?? "none: every row of the dataset")")
        line("Fixed     p = \(p): \(names(spec.fixed))")
        for t in spec.terms {
            let where_ = t.grouping == .site ? "one group per site"
                : t.grouping.isCrossed ? "groups shared by the sites (crossed), with the agreed levels in the model"
                : "groups within each site; their effects never leave the site"
            line("Random    (\(names(t.columns)) | \(t.name)): \(where_)")
        }
        if spec.hasCrossedTerms {
            line("Crossed   each site's [X y] below is led by the z columns of the crossed levels it has (r per level,")
            line("          each level with at least min_cell rows there); the sizes below leave them out. The site also")
            line("          sends which agreed levels it has; finalize sends it the crossed modes at those levels")
        }
        line("          θ has m = \(m) value\(m == 1 ? "" : "s")")
        line("Sites     \(sites); every site receives the same requests and answers with aggregates of the same shape")
        line()
        line("Rounds, per site")
        line("  describe (before the model is resolved; no model yet)")
        line("      sends, per variable it allows: type, number missing, number of distinct values, and for")
        line("      variables with few values their levels with counts; counts below the site's min_cell read \"<min_cell\"")
        let hashed = VariableCatalog.nestingVariables(spec)
        if !hashed.isEmpty {
            line("      and for the grouping variable\(hashed.count == 1 ? "" : "s") \(hashed.joined(separator: ", ")): a 64-bit keyed hash of each distinct")
            line("      code among all its rows (salt drawn for this describe; no counts), so that the coordinator can")
            line("      check that no code recurs at another site (docs/PRIVACY.md, \"Level hashes\")")
        }
        let moments = momentCalls(spec.formula)
        if !moments.isEmpty {
            let degrees = moments.map(\.degree)
            let first = 1 + moments.count, second = 1 + degrees.reduce(0, +)
            line("  moments: 2 prepare rounds before the fit, for \(moments.map(\.call).joined(separator: ", "))")
            line("      receives a model of its own (\"pooled moments for scale() and poly() in: …\"): the arguments as")
            line("               columns, one group per site, a constant response, this model's filter and complete cases")
            line("      sends    θ-free sums over the rows this fit uses, as for a site-grouped model: first 1 and each")
            line("               argument (\((first + 1) * (first + 2) + 1) numbers), then the powers of each argument minus its pooled mean up")
            line("               to \(degrees.count == 1 && degrees[0] == 1 ? "1" : "its degree") (\((second + 1) * (second + 2) + 1) numbers); the coordinator writes scale()'s and poly()'s")
            line("               columns from them as expressions (docs/PRIVACY.md, \"scale() and poly(): pooled moments\")")
        }
        line("  1. prepare")
        line("      receives the model above (columns as expressions, levels, groupings\(spec.filter == nil ? "" : ", the row filter"))")
        line("      sends    rows\(spec.filter == nil ? "" : " the filter selects"), rows used, missing values per model variable and the")
        line("               missing-data patterns (counts below min_cell as \"<min_cell\"), the number of groups of each of")
        line("               the \(spec.terms.count) random-effects term\(spec.terms.count == 1 ? "" : "s")")
        var maxRounds: Int
        if oneRound {
            let w = p + 1
            line("               θ-free sums over its used rows, once: [X y]ᵀ[X y] \(w)×\(w), Zᵀ[X y] \(r)×\(w), ZᵀZ \(r)×\(r)")
            line("               (\(w * w + r * w + r * r) numbers); the coordinator then iterates alone: no evaluate rounds")
            maxRounds = 2
            line("  2. finalize")
        } else if gaussian {
            let w = p + 1, k = jet(m)
            line("  2 … \(options.maxEvaluations + 1). evaluate, at most \(options.maxEvaluations) rounds (one per evaluation of the criterion)")
            line("      receives θ (\(m) number\(m == 1 ? "" : "s"))")
            line("      sends    the Schur complement of its rows' [X y] (\(w)×\(w)) and log|L|², each with its gradient")
            line("               (\(m)) and Hessian (\(m * (m + 1) / 2)) in θ: \(w * w * k + k) numbers, and its number of rows used")
            line("  \(options.maxEvaluations + 2). evaluate at θ̂, value only (\(w * w + 1) numbers), when the last evaluation was elsewhere")
            maxRounds = options.maxEvaluations + 3
            line("  \(maxRounds). finalize")
        } else {
            let n = m + p, k = jet(n)
            line("               sums over its used rows of each fixed-effects column (\(p) numbers)")
            line("  2 … \(options.maxEvaluations + 1). evaluate, at most \(options.maxEvaluations) rounds (one per Newton step)")
            line("      receives θ (\(m)) and β (\(p)); the site finds its own groups' conditional modes and keeps them")
            line("      sends    its \(options.nAGQ == 1 ? "Laplace" : "quadrature") term of −2 log-likelihood with its gradient (\(n)) and Hessian")
            line("               (\(n * (n + 1) / 2)) in (θ, β): \(k) numbers, and its number of rows used")
            maxRounds = options.maxEvaluations + 2
            line("  \(maxRounds). finalize")
        }
        line("      receives θ̂, β̂\(gaussian ? ", σ̂" : "")")
        if r > 0 {
            var parts = ["the conditional modes of its own site-level effects (\(r): \(names(siteTerms.flatMap(\.columns))))",
                         "their conditional covariance (\(r)×\(r))"]
            if oneRound { parts.append("its own no-pooling estimate of the same effects (\(r))") }
            if !gaussian { parts.append("the saturated model's −2 log-likelihood of its rows (1)") }
            line("      sends    " + parts.joined(separator: ", "))
        } else {
            line("      sends    \(gaussian ? "nothing but the session id (no term is grouped by site)" : "the saturated model's −2 log-likelihood of its rows (1)")")
        }
        line()
        if !moments.isEmpty { maxRounds += 2 }
        line("At most \(maxRounds) rounds per site after describe\(oneRound ? "" : " (the optimizer's limit; fewer when it converges, typically 5 to 20)");")
        line("each site also stops a session at its own max_rounds_per_session (default 200).")
        line()
        line("Never sent: a row; anything per patient or per group within a site\(withinSite.isEmpty ? "" : " (here: the conditional modes of \(withinSite.map(\.name).joined(separator: ", ")))");")
        line("a minimum, maximum or quantile; anything computed from fewer rows than the site's min_rows.")
        line()
        line("Each site checks before it answers prepare (its own thresholds, set in its configuration):")
        line("  min_rows             at least min_rows used rows at the site (default 10)")
        let parameters = p + m + (gaussian ? 1 : 0)
        line("  max_params_per_row   \(parameters) parameters: at least \(Int((Double(parameters) / 0.33).rounded(.up))) used rows at the default 0.33 per row")
        let cellColumns = (spec.fixed + spec.terms.flatMap(\.columns)).filter { isIndicatorLike($0.expr) }.map(\.name)
        let factors = Set((spec.fixed + spec.terms.flatMap(\.columns)).flatMap { $0.expr.indicators.map(\.variable) }).sorted()
        if !cellColumns.isEmpty || !factors.isEmpty {
            line("  min_cell             every level of \(factors.isEmpty ? "each factor" : factors.joined(separator: ", ")) and every 0/1 column")
            line("                       (\(cellColumns.joined(separator: ", "))) with none or at least min_cell rows (default 5)")
        } else {
            line("  min_cell             every 0/1 column with none or at least min_cell rows (default 5)")
        }
        if spec.family == .binomial {
            line("  min_cell (outcome)   at least min_cell events and min_cell non-events among the used rows")
        }
        if spec.filter != nil {
            line("  min_rows (filter)    the filter, and the rows it leaves out, each at least min_rows rows; and its rows")
            line("                       equal to, or at least min_rows rows different from, every earlier filter's")
        }
        line("  variables            every variable on the site's allowed list and none on its denied list")
        line("  sessions             at most max_sessions_per_day new sessions per coordinator certificate (default 100)")
        line()
        line("Every request and answer is recorded in full in each site's audit log before the answer is sent.")
        return out
    }

    /// True for a column that is 0/1 by construction (factor levels,
    /// interactions of levels, missingness indicators).
    static func isIndicatorLike(_ e: Expr) -> Bool {
        switch e {
        case .indicator, .isMissing: return true
        case .binary(.multiply, let a, let b): return isIndicatorLike(a) && isIndicatorLike(b)
        default: return false
        }
    }

    /// An expression as R-like text (`age >= 50 & sex == "F"`).
    public static func expression(_ e: Expr) -> String {
        func go(_ e: Expr, _ parent: Int) -> String {
            switch e {
            case .number(let x): return RNumberFormat.format(x)
            case .variable(let v): return v
            case .indicator(let v, let l): return wrap("\(v) == \(quoted(l))", 4, parent)
            case .isMissing(let v): return "is.na(\(v))"
            case .filled(let v, let x): return "ifelse(is.na(\(v)), \(RNumberFormat.format(x)), \(v))"
            case .unary(.negate, let a): return wrap("-" + go(a, 7), 7, parent)
            case .unary(let f, let a): return "\(f.rawValue)(\(go(a, 0)))"
            case .binary(let op, let a, let b) where op == .pmin || op == .pmax:
                return "\(op.rawValue)(\(go(a, 0)), \(go(b, 0)))"
            case .binary(let op, let a, let b):
                if op == .equal, case .number(0) = b, isLogical(a) { return wrap("!" + go(a, 6), 6, parent) }
                let prec = precedence(op)
                return wrap(go(a, prec) + " \(op.rawValue) " + go(b, prec + 1), prec, parent)
            }
        }
        return go(e, 0)
    }

    private static func isLogical(_ e: Expr) -> Bool {
        switch e {
        case .indicator, .isMissing: return true
        case .binary(let op, _, _): return op.isLogical
        default: return false
        }
    }

    private static func precedence(_ op: BinaryOperator) -> Int {
        switch op {
        case .or: return 1
        case .and: return 2
        case .less, .lessOrEqual, .greater, .greaterOrEqual, .equal, .notEqual: return 4
        case .add, .subtract: return 5
        case .multiply, .divide: return 6
        case .power: return 8
        case .pmin, .pmax: return 9
        }
    }

    private static func wrap(_ s: String, _ own: Int, _ parent: Int) -> String { own < parent ? "(\(s))" : s }

    private static func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}

// lme4's rules on the number of levels of grouping factors, applied to the
// pooled rows: a factor with one level, a factor with as many levels as rows
// (LMMs), and a term with at least as many random effects as rows (LMMs).
// Without them such a model "converges" to an answer that means nothing
// (one site fitted with (1 | site) gave an ICC of 0.5).

import Protocol

/// A model whose grouping factors lme4 would refuse for their number of levels.
public struct GroupingLevelsError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}

public enum GroupingChecks {
    /// Before anything is prepared, from what describe told: `(… | site)`
    /// with one site, and a nested factor with at most one distinct code in
    /// all rows of all sites (it cannot have more among the rows a model uses).
    public static func checkDescribed(_ spec: ModelSpec, descriptions: [SiteDescription]) throws {
        for (name, grouping, terms) in factors(spec) {
            switch grouping {
            case .site:
                if descriptions.count == 1 { throw oneLevel(name, spec: spec, terms: terms, site: descriptions[0].site) }
            case .withinSite(let vs):
                // Levels of a nested factor add up over sites; each site has at most the product of its components' codes.
                var total = 0
                for s in descriptions {
                    var here = 1
                    for v in vs {
                        guard let d = s.variables.first(where: { $0.name == v }) else { here = 2; break }   // unknown here: no bound
                        here *= d.distinct
                    }
                    total += here
                }
                if total == 1 { throw oneLevel(name, spec: spec, terms: terms, site: nil) }
            case .crossed(_, let levels):
                if levels.count == 1 { throw oneLevel(name, spec: spec, terms: terms, site: nil) }
            }
        }
    }

    /// After prepare, on the pooled counts: `levels[t]` is the number of
    /// levels of term t's factor in the rows used at all sites together (a
    /// nested factor's levels add up over sites; `site` has one per site),
    /// `nObs` the rows used. lme4's checkNlevels and checkZdims: every
    /// factor needs more than one level (all families); for linear models
    /// fewer levels than rows, and each term fewer random effects than rows.
    public static func check(_ spec: ModelSpec, levels: [Int], nObs: Int) throws {
        for (name, _, terms) in factors(spec) {
            let n = levels[terms[0]]
            if n <= 1 { throw oneLevel(name, spec: spec, terms: terms, site: nil) }
            if spec.family == .gaussian && n >= nObs {
                throw GroupingLevelsError(message: "grouping factor \"\(name)\" has as many levels (\(n)) as the rows the model uses (\(nObs), all sites together): each group has a single row, so its variance cannot be told apart from the residual variance (lme4: number of levels of each grouping factor must be < number of observations). Drop \(written(spec, terms)), or fit a model with several rows per group")
            }
        }
        guard spec.family == .gaussian else { return }
        for (t, term) in spec.terms.enumerated() where levels[t] * term.columns.count >= nObs {
            let q = levels[t] * term.columns.count
            throw GroupingLevelsError(message: "the term \(written(spec, [t])) has \(q) random effects (\(levels[t]) levels × \(term.columns.count) columns), not fewer than the \(nObs) rows the model uses (all sites together): its variances and the residual variance cannot be told apart (lme4: number of observations (=\(nObs)) <= number of random effects (=\(q)) for term \(written(spec, [t])) ...). Simplify the term (e.g. fewer columns), or drop it")
        }
    }

    /// The same check on the prepare answers (FitSession.prepare, before
    /// any optimizer step).
    public static func check(_ spec: ModelSpec, prepared: [PrepareReply]) throws {
        try check(spec, levels: pooledLevels(spec, prepared: prepared), nObs: prepared.reduce(0) { $0 + $1.summary.used })
    }

    /// Levels of each term's factor over all sites' used rows: one per site
    /// for `site`; a nested factor's add up over sites; a crossed factor's
    /// are the agreed levels some site has (the union of the sites' lists).
    static func pooledLevels(_ spec: ModelSpec, prepared: [PrepareReply]) -> [Int] {
        let crossed = spec.crossedFactors, groupings = spec.factorGroupings
        return spec.terms.indices.map { t in
            if spec.terms[t].grouping == .site { return prepared.count }
            if let c = crossed.firstIndex(where: { groupings[$0.factor] == spec.terms[t].grouping }) {
                return Set(prepared.flatMap { $0.summary.crossedLevels.map { $0.indices.contains(c) ? $0[c] : [] } ?? [] }).count
            }
            return prepared.reduce(0) { $0 + $1.summary.groups[t] }
        }
    }

    /// The model's grouping factors: lme4's name (the first term's), the
    /// grouping, and the terms that use it, in term order.
    static func factors(_ spec: ModelSpec) -> [(name: String, grouping: Grouping, terms: [Int])] {
        var out: [(name: String, grouping: Grouping, terms: [Int])] = []
        for (t, term) in spec.terms.enumerated() {
            if let k = out.firstIndex(where: { $0.grouping == term.grouping }) { out[k].terms.append(t) }
            else { out.append((term.name, term.grouping, [t])) }
        }
        return out
    }

    /// The terms as written: `(1 | site)`, `(1 + Days | Subject)`.
    static func written(_ spec: ModelSpec, _ terms: [Int]) -> String {
        terms.map { t in
            let lhs = spec.terms[t].columns.map { $0.name == "(Intercept)" ? "1" : $0.name }
            return "(" + (lhs.first == "1" ? lhs : ["0"] + lhs).joined(separator: " + ") + " | \(spec.terms[t].name))"
        }.joined(separator: " and ")
    }

    static func oneLevel(_ name: String, spec: ModelSpec, terms: [Int], site: String?) -> GroupingLevelsError {
        let text = written(spec, terms)
        let drop = spec.terms.count == terms.count
            ? "drop \(text) (with no random-effects term left the model is an ordinary regression, which fedmix fits as R's lm or glm: drop the term to fit it)"
            : "drop \(text)"
        if let site {
            return GroupingLevelsError(message: "grouping factor \"\(name)\" has 1 level: the fit has a single site (\(site)), and a random effect needs a grouping factor with at least 2 levels (lme4: grouping factors must have > 1 sampled level). Fit two or more sites, or \(drop)")
        }
        return GroupingLevelsError(message: "grouping factor \"\(name)\" has 1 level in the rows the model uses (all sites together), and a random effect needs at least 2 (lme4: grouping factors must have > 1 sampled level). Check the filter and the missing values that leave one level, or \(drop)")
    }
}

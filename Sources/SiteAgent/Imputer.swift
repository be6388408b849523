// Multiple imputation at a site: completes the incomplete variables of one
// imputed dataset before a prepare builds its design. Given the coordinator's
// draw of the imputation model's parameters, the site draws its own random
// effect from its conditional distribution given its observed rows, then
// each missing value from the model, with a stream fixed by (seed, site, m,
// variable). Nothing imputed is sent: the completed column lives only in the
// session's design, and the same request always completes it the same way.

import Foundation
import Math
import Protocol

enum Imputer {
    /// The table with each draw's variable completed, in order (a later
    /// variable's model reads the earlier ones as completed: chained
    /// equations), and the number of values imputed per variable.
    /// A variable may come back (chained equations: the draws of every
    /// sweep, in order): each draw re-imputes the values missing in the
    /// site's data, never an observed one. `observed`: variables restored to
    /// their observed values afterwards (the next fit of their own
    /// imputation model reads only the observed values, the others completed).
    static func complete(_ table: DataTable, draws: [ImputationDraw], observed: [String] = [], site: String,
                         dataset: String) throws -> (table: DataTable, imputed: [String: Int]) {
        let out = try completeWithMeans(table, draws: draws, observed: observed, site: site, dataset: dataset)
        return (out.table, out.imputed.mapValues(\.count))
    }

    /// `complete`, with each variable's imputed count and the means of its
    /// observed and imputed values (for the per-site summary).
    /// `rules`: called with each imputation model's design cells (over the
    /// rows it is evaluated on, observed and imputed) before any value is
    /// drawn; it throws to refuse the model.
    static func completeWithMeans(_ table: DataTable, draws: [ImputationDraw], observed: [String] = [], site: String,
                                  dataset: String, rules: ((ImputationDraw, CellCounts) throws -> Void)? = nil) throws
        -> (table: DataTable, imputed: [String: (count: Int, observedMean: Double, imputedMean: Double)]) {
        var t = table
        var counts: [String: Int] = [:]
        // Chained equations start as mice does: every incomplete variable's
        // missing values filled with random draws of the site's observed
        // values, so that a row missing two variables can be imputed; a
        // starting value no draw replaces is made missing again at the end.
        var variables: [String] = []
        for v in draws.map(\.variable) + observed where !variables.contains(v) { variables.append(v) }
        var started: [String: [Int]] = [:]
        if variables.count > 1, let first = draws.first {
            for v in variables {
                guard let k = t.columns.firstIndex(where: { $0.name == v }), case .numeric(var values) = t.columns[k].data else { continue }
                let seen = values.compactMap { $0 }
                let missing = values.indices.filter { values[$0] == nil }
                guard !seen.isEmpty else { continue }
                var stream = ImputationStream(label: "fedmix-impute-start\u{1f}\(first.seed)\u{1f}\(site)\u{1f}\(first.m)\u{1f}\(v)")
                for i in missing { values[i] = seen[min(seen.count - 1, Int(stream.uniform() * Double(seen.count)))] }
                t.columns[k].data = .numeric(values)
                started[v] = missing
            }
        }
        var replaced: [String: Set<Int>] = [:]
        for d in draws {
            guard let original = table.column(named: d.variable) else { throw ModelFrameError.unknownVariable(d.variable, dataset: dataset) }
            guard case .numeric(let values) = original.data else { throw ModelFrameError.notNumeric(d.variable) }
            let (completedValues, rows) = try completed(t, original: values, draw: d, site: site, dataset: dataset, rules: rules)
            let k = t.columns.firstIndex { $0.name == d.variable }!
            t.columns[k].data = .numeric(completedValues)
            counts[d.variable] = rows.count
            replaced[d.variable, default: []].formUnion(rows)
        }
        for (v, rows) in started {
            guard let k = t.columns.firstIndex(where: { $0.name == v }), case .numeric(var values) = t.columns[k].data else { continue }
            for i in rows where !(replaced[v]?.contains(i) ?? false) { values[i] = nil }
            t.columns[k].data = .numeric(values)
        }
        for v in observed {
            guard let k = t.columns.firstIndex(where: { $0.name == v }), let c = table.column(named: v) else { continue }
            t.columns[k] = c
        }
        var summary: [String: (count: Int, observedMean: Double, imputedMean: Double)] = [:]
        for (v, n) in counts {
            guard case .numeric(let original)? = table.column(named: v)?.data,
                  case .numeric(let completed)? = t.column(named: v)?.data else { continue }
            let seen = original.compactMap { $0 }
            // In row order: a Set's order varies from instance to instance, and the sum's last bits with it.
            let drawn = (replaced[v] ?? []).sorted().compactMap { completed[$0] }
            summary[v] = (n, seen.isEmpty ? .nan : seen.reduce(0, +) / Double(seen.count),
                          drawn.isEmpty ? .nan : drawn.reduce(0, +) / Double(drawn.count))
        }
        return (t, summary)
    }

    /// One variable's column completed, and the rows imputed.
    /// Rows missing a predictor of the imputation model stay missing.
    /// `original`: the variable as observed at the site (its missing rows
    /// are the ones imputed); `table` holds the other variables as completed so far.
    static func completed(_ table: DataTable, original values: NumericValues, draw d: ImputationDraw, site: String,
                          dataset: String, rules: ((ImputationDraw, CellCounts) throws -> Void)? = nil) throws -> (NumericValues, [Int]) {
        let spec = d.model
        guard spec.terms.allSatisfy({ $0.grouping == .site }) else {
            throw ModelFrameError.unsupported("an imputation model's random-effects terms must be grouped by site")
        }
        guard case .value(let responseExpr) = spec.response, responseExpr.variables == [d.variable] else {
            throw ModelFrameError.unsupported("an imputation model's response must be the variable it completes")
        }
        guard spec.family == .gaussian || (spec.family == .binomial && spec.link == .logit) else {
            throw ModelFrameError.unsupported("an imputation model is gaussian, or binomial with the logit link")
        }
        var columns: [String: DataTable.Column] = [d.variable: DataTable.Column(name: d.variable, data: .numeric(values))]
        for v in SiteDesign.allVariables(spec) + spec.requiredVariables where columns[v] == nil {
            guard let c = table.column(named: v) else { throw ModelFrameError.unknownVariable(v, dataset: dataset) }
            columns[v] = c
        }
        let predictors = spec.requiredVariables.filter { $0 != d.variable }
        let complete = (0..<table.rowCount).filter { i in predictors.allSatisfy { !columns[$0]!.isMissing(i) } }
        let observed = complete.filter { values[$0] != nil }
        let missing = complete.filter { values[$0] == nil }
        let current: NumericValues = table.column(named: d.variable).map { c in
            if case .numeric(let v) = c.data { return v } else { return values }
        } ?? values
        guard !missing.isEmpty else { return (current, []) }

        func design(_ rows: [Int]) throws -> (x: [[Double]], z: [[Double]]) {
            let ev = ExpressionEvaluator(columns: columns, rows: rows)
            return (try spec.fixed.map { try ev.evaluate($0.expr, name: $0.name) },
                    try spec.terms.flatMap { t in try t.columns.map { try ev.evaluate($0.expr, name: $0.name) } })
        }
        if let rules {
            // The imputation model's columns are columns like any model's:
            // they must not single out rows among those they are evaluated on.
            let ev = ExpressionEvaluator(columns: columns, rows: complete)
            let all = try design(complete)
            let names = spec.fixed.map(\.name) + spec.terms.flatMap { t in t.columns.map { "\($0.name) | \(t.name)" } }
            let thresholds = try ThresholdRules.atoms(spec).map { (name: ThresholdRules.label($0), values: try ev.evaluate($0, name: "threshold")) }
            try rules(d, CellCounts.measure(columns: Array(zip(names, all.x + all.z)).map { (name: $0.0, values: $0.1) },
                                            indicatorVariables: SiteDesign.indicatorVariables(spec).compactMap { columns[$0] },
                                            usedRows: complete, outcome: nil, thresholds: thresholds))
        }
        let obs = try design(observed), mis = try design(missing)
        let y = try ExpressionEvaluator(columns: columns, rows: observed).evaluate(responseExpr, name: "response")
        var stream = ImputationStream.site(seed: d.seed, site: site, m: d.m, variable: d.variable)
        let lambda = spec.terms.isEmpty ? Matrix(rows: 0, cols: 0)
            : spec.covarianceStructure.factorMatrix(spec.siteFactorIndex!, theta: d.theta)
        let offsets = Self.linear(obs.x, d.beta, rows: observed.count)
        let zl = Self.times(obs.z, lambda, rows: observed.count)
        let u = spec.family == .gaussian
            ? try SiteEffectDraw.gaussian(zLambda: zl, residual: zip(y, offsets).map { $0 - $1 }, sigma: d.sigma, stream: &stream)
            : try SiteEffectDraw.logistic(zLambda: zl, y: y, offset: offsets, stream: &stream)
        let b = (0..<lambda.rows).map { i in (0..<lambda.cols).reduce(0) { $0 + lambda[i, $1] * u[$1] } }
        var out = current
        let eta = Self.linear(mis.x, d.beta, rows: missing.count)
        for (k, row) in missing.enumerated() {
            var e = eta[k] + d.delta
            for j in b.indices { e += mis.z[j][k] * b[j] }
            switch spec.family {
            case .gaussian:
                let t = e + d.sigma * stream.normal()
                out[row] = d.transform == .log ? Foundation.exp(t) : t
            default:
                out[row] = stream.uniform() < 1 / (1 + Foundation.exp(-e)) ? 1 : 0
            }
        }
        return (out, missing)
    }

    /// X β for column-stored X.
    static func linear(_ x: [[Double]], _ beta: [Double], rows: Int) -> [Double] {
        (0..<rows).map { i in zip(x, beta).reduce(0) { $0 + $1.0[i] * $1.1 } }
    }

    /// Z Λ for column-stored Z (rows × q) and q×q Λ, column-stored.
    static func times(_ z: [[Double]], _ lambda: Matrix, rows: Int) -> [[Double]] {
        (0..<lambda.cols).map { j in (0..<rows).map { i in (0..<lambda.rows).reduce(0) { $0 + z[$1][i] * lambda[$1, j] } } }
    }
}

/// A site's spherical random effect u (b = Λu) drawn from its conditional
/// distribution given the site's observed rows and the parameter draw.
enum SiteEffectDraw {
    /// Linear model: u | y ~ N(A⁻¹(ZΛ)ᵀr, σ²A⁻¹), A = (ZΛ)ᵀZΛ + I, r = y − Xβ.
    /// Exact. With no observed rows, u is drawn from its prior N(0, σ²I).
    static func gaussian(zLambda: [[Double]], residual: [Double], sigma: Double,
                         stream: inout ImputationStream) throws -> [Double] {
        let q = zLambda.count
        guard q > 0 else { return [] }
        let (a, rhs) = crossProducts(zLambda, weights: nil, vector: residual)
        let l = try Dense.cholesky(a)
        let mean = Dense.solveLowerTranspose(l, Dense.solveLower(l, rhs))
        let noise = Dense.solveLowerTranspose(l, (0..<q).map { _ in stream.normal() })
        return zip(mean, noise).map { $0 + sigma * $1 }
    }

    /// Logistic model: u | y has no closed form. The draw is an independence
    /// Metropolis–Hastings chain of 50 steps whose proposal is the Laplace
    /// approximation N(û, H⁻¹) at the conditional mode, started at a proposal
    /// draw: exact in the limit, and nearly so after a few steps because the
    /// proposal is close to the target.
    static func logistic(zLambda: [[Double]], y: [Double], offset: [Double],
                         stream: inout ImputationStream) throws -> [Double] {
        let q = zLambda.count, n = y.count
        guard q > 0 else { return [] }
        func eta(_ u: [Double]) -> [Double] { (0..<n).map { i in offset[i] + (0..<q).reduce(0) { $0 + zLambda[$1][i] * u[$1] } } }
        func logTarget(_ u: [Double]) -> Double {
            let e = eta(u)
            var s = -0.5 * u.reduce(0) { $0 + $1 * $1 }
            for i in 0..<n { s += y[i] * e[i] - (e[i] > 0 ? e[i] + Foundation.log1p(Foundation.exp(-e[i])) : Foundation.log1p(Foundation.exp(e[i]))) }
            return s
        }
        var u = [Double](repeating: 0, count: q)
        var h = Matrix.identity(q)
        for _ in 0..<50 {
            let e = eta(u)
            let mu = e.map { 1 / (1 + Foundation.exp(-$0)) }
            var g = u.map { -$0 }
            for j in 0..<q { for i in 0..<n { g[j] += zLambda[j][i] * (y[i] - mu[i]) } }
            (h, _) = crossProducts(zLambda, weights: mu.map { $0 * (1 - $0) }, vector: nil)
            let step = try Dense.solveSPD(h, g)
            u = zip(u, step).map { $0 + $1 }
            if step.reduce(0, { max($0, abs($1)) }) < 1e-10 { break }
        }
        let l = try Dense.cholesky(h)
        func propose() -> (u: [Double], logDensity: Double) {
            let z = (0..<q).map { _ in stream.normal() }
            let d = Dense.solveLowerTranspose(l, z)
            return (zip(u, d).map { $0 + $1 }, -0.5 * z.reduce(0) { $0 + $1 * $1 })
        }
        var current = propose()
        var currentWeight = logTarget(current.u) - current.logDensity
        for _ in 0..<50 {
            let next = propose()
            let w = logTarget(next.u) - next.logDensity
            if Foundation.log(stream.uniform()) < w - currentWeight { current = next; currentWeight = w }
        }
        return current.u
    }

    /// (ZΛ)ᵀW(ZΛ) + I and (ZΛ)ᵀv.
    static func crossProducts(_ zl: [[Double]], weights: [Double]?, vector: [Double]?) -> (Matrix, [Double]) {
        let q = zl.count
        var a = Matrix.identity(q)
        var r = [Double](repeating: 0, count: q)
        for j in 0..<q {
            for k in 0...j {
                var s = 0.0
                for i in zl[j].indices { s += zl[j][i] * zl[k][i] * (weights?[i] ?? 1) }
                a[j, k] += s; if k != j { a[k, j] += s }
            }
            if let v = vector { for i in v.indices { r[j] += zl[j][i] * v[i] } }
        }
        return (a, r)
    }
}

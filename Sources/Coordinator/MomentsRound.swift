// The pooled moments scale() and poly() need (PooledMoments.swift), in two
// prepare rounds of a small linear model the sites already know how to
// answer: every term grouped by site, so each site sends its θ-free sums
// [X y]ᵀ[X y] once. X holds 1 and the arguments (first round: their pooled
// means), then 1 and the powers of each argument minus its pooled mean up to
// its degree (second round: sums of powers up to twice the degree, without
// the digits a raw Σx^k would lose). The rows are the model's: the same row
// filter, and the same complete cases (every variable the model requires is
// read, times 0, in the offset), so each site sums over exactly the rows the
// fit will use, and its differencing rule sees the same subset.

import Foundation
import Math
import Protocol

extension Analysis {
    /// The moments of every scale() and poly() argument over the rows `spec`
    /// uses at the sites, keyed by R's deparse of the argument.
    static func pooledMoments(_ federation: Federation, dataset: String, spec: ModelSpec,
                              arguments: [(key: String, expr: Expr, degree: Int)]) throws -> [String: PooledMoments] {
        guard !arguments.isEmpty else { return [:] }
        let one = DesignColumn(name: "(Intercept)", expr: .number(1))
        let first = try gram(federation, dataset: dataset, spec: momentSpec(spec, columns: [one] + arguments.map {
            DesignColumn(name: $0.key, expr: $0.expr)
        }))
        let n = first[0][0]
        guard n > 0 else { throw SettingError("scale() and poly() need rows: the model uses none at the sites") }
        let means = arguments.indices.map { first[0][$0 + 1] / n }
        var columns = [one]
        var firstColumn: [Int] = []
        for (a, arg) in arguments.enumerated() {
            firstColumn.append(columns.count)
            let t = Expr.binary(.subtract, arg.expr, .number(means[a]))
            for k in 1...arg.degree {
                columns.append(DesignColumn(name: "(\(arg.key) - mean)^\(k)", expr: k == 1 ? t : .binary(.power, t, .number(Double(k)))))
            }
        }
        let g = try gram(federation, dataset: dataset, spec: momentSpec(spec, columns: columns))
        var out: [String: PooledMoments] = [:]
        for (a, arg) in arguments.enumerated() {
            // Column j of this argument is t^j (j = 0 is the intercept): Σ t^(i+j) = g[i][j].
            let index = [0] + (0..<arg.degree).map { firstColumn[a] + $0 }
            var sums: [Double] = []
            for k in 0...(2 * arg.degree) {
                let i = min(k, arg.degree), j = k - i
                sums.append(g[index[i]][index[j]])
            }
            out[arg.key] = PooledMoments(center: means[a], sums: sums)
        }
        return out
    }

    /// The moments model: `columns` as fixed effects, one random intercept
    /// per site, a constant response, `spec`'s filter, and `spec`'s
    /// variables read times 0 so that the complete cases are `spec`'s.
    static func momentSpec(_ spec: ModelSpec, columns: [DesignColumn]) -> ModelSpec {
        let presence = spec.requiredVariables.map { Expr.binary(.multiply, .number(0), .indicator($0, level: "")) }
        let offset = presence.dropFirst().reduce(presence.first) { sum, e in sum.map { .binary(.add, $0, e) } }
        return ModelSpec(formula: "pooled moments for scale() and poly() in: " + spec.formula, family: .gaussian, link: .identity,
                         response: .value(.number(0.5)), fixed: columns,
                         terms: [RandomTerm(name: "site", grouping: .site, columns: [DesignColumn(name: "(Intercept)", expr: .number(1))])],
                         weights: nil, offset: offset, filter: spec.filter)
    }

    /// One prepare round of a site-grouped moments model: the pooled XᵀX.
    static func gram(_ federation: Federation, dataset: String, spec: ModelSpec) throws -> [[Double]] {
        let id = UUID().uuidString.lowercased()
        let p = spec.fixed.count
        let replies = try federation.round({ _ in .prepare(PrepareRequest(session: id, dataset: dataset, model: spec)) }) { reply, site in
            guard case .prepared(let r) = reply else { throw unexpected(reply, site, expected: "prepared") }
            try ReplyChecks.check(r, spec: spec, site: site)
            guard let b = r.blocks, b.width == p + 1 else {
                throw SiteFailure(site: site, message: "did not send the sums of the moments model")
            }
            return b
        }
        var g = [[Double]](repeating: [Double](repeating: 0, count: p), count: p)
        for b in replies { for i in 0..<p { for j in 0..<p { g[i][j] += b.ww[i + j * b.width] } } }
        return g
    }
}

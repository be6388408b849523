// Builds a GLMM's rows at one site: fixed-effects values, response as
// successes and trials, offset, and each factor's site-local levels and
// random-effects values. The rows stay at the site; only D_k and its
// derivatives leave it.

import Math
import Protocol

public struct GLMMFrame: Sendable {
    public let spec: ModelSpec
    public let rows: Int
    public let used: Int
    public let missing: [String: Int]
    public let groupCounts: [Int]
    public let data: GLMMSiteData
    /// Small-cell counts of the design and the outcome's classes (min_cell).
    public let cells: CellCounts

    /// As `ModelFrame`: the rows its filter selects (`selection` if given).
    public init(table: DataTable, spec: ModelSpec, dataset: String, selection: [Bool]? = nil) throws {
        self.spec = spec
        let cases = try CompleteCases(table: table, spec: spec, dataset: dataset, selection: selection)
        rows = cases.rows
        let distribution = spec.family, link = spec.link
        guard GLMFamily(distribution, link).isValid else {
            throw ModelFrameError.unsupported("family \(spec.family.rawValue) with link \(spec.link.rawValue) is not supported; use binomial with logit, probit or cloglog, or poisson with log")
        }
        missing = cases.missing
        let usedRows = cases.usedRows, columns = cases.columns
        used = usedRows.count
        let ev = ExpressionEvaluator(columns: columns, rows: usedRows)
        let p = spec.fixed.count
        var x = [Double](repeating: 0, count: used * p)
        var designColumns: [(name: String, values: [Double])] = []
        for (j, c) in spec.fixed.enumerated() {
            let col = try ev.evaluate(c.expr, name: c.name)
            for i in 0..<used { x[i * p + j] = col[i] }
            designColumns.append((c.name, col))
        }
        var y: [Double], n: [Double]
        switch spec.response {
        case .value(let e):
            y = try ev.evaluate(e, name: "response")
            n = [Double](repeating: 1, count: used)
            if distribution == .binomial, spec.weights == nil, let bad = y.firstIndex(where: { $0 != 0 && $0 != 1 }) {
                _ = bad
                throw ModelFrameError.unsupported("a binomial response must be 0/1, a two-level text variable, or cbind(successes, failures); some rows have other values")
            }
        case .binomial(let s, let f):
            guard distribution == .binomial else { throw ModelFrameError.unsupported("cbind(successes, failures) needs family binomial") }
            y = try ev.evaluate(s, name: "successes")
            let failures = try ev.evaluate(f, name: "failures")
            n = zip(y, failures).map { $0 + $1 }
            if zip(y, failures).contains(where: { $0 < 0 || $1 < 0 || $0 != $0.rounded() || $1 != $1.rounded() }) {
                throw ModelFrameError.unsupported("cbind(successes, failures) needs non-negative whole numbers; some rows have other values")
            }
        }
        if distribution == .poisson, y.contains(where: { $0 < 0 || $0 != $0.rounded() }) {
            throw ModelFrameError.unsupported("a Poisson response must be a non-negative count; some rows have other values")
        }
        // Prior weights, as glm and glmer read them: for a binomial 0/1 (or
        // proportion) response, the number of trials; for Poisson, a
        // multiplier of each row's log-likelihood.
        if let we = spec.weights {
            let w = try ev.evaluate(we, name: "weights")
            guard w.allSatisfy({ $0 >= 0 }) else {
                throw ModelFrameError.unsupported("prior weights must be non-negative; some rows have negative weights")
            }
            switch (distribution, spec.response) {
            case (.binomial, .binomial):
                throw ModelFrameError.unsupported("use either cbind(successes, failures) or weights for binomial trials, not both")
            case (.binomial, _):
                guard y.allSatisfy({ $0 >= 0 && $0 <= 1 }) else {
                    throw ModelFrameError.unsupported("with weights, a binomial response is a proportion between 0 and 1; some rows have other values")
                }
                y = zip(y, w).map { $0 * $1 }
                n = w
            case (.poisson, _), (.gaussian, _):   // gaussian: refused above
                n = w
            }
        }
        let offset = try spec.offset.map { try ev.evaluate($0, name: "offset") } ?? [Double](repeating: 0, count: used)
        let groupings = spec.factorGroupings
        let (levels, counts) = cases.factorLevels(spec)
        groupCounts = spec.terms.map { counts[groupings.firstIndex(of: $0.grouping)!] }
        try ModelFrame.checkTail(spec, levelCounts: counts)
        var z: [[Double]] = []
        for (f, g) in groupings.enumerated() {
            let terms = spec.terms.filter { $0.grouping == g }
            let cols = try terms.flatMap { t in try t.columns.map { try ev.evaluate($0.expr, name: $0.name) } }
            let names = terms.flatMap { t in t.columns.map { "\($0.name) | \(t.name)" } }
            designColumns += zip(names, cols).map { ($0, $1) }
            let r = cols.count
            var zf = [Double](repeating: 0, count: used * r)
            for i in 0..<used { for a in 0..<r { zf[i * r + a] = cols[a][i] } }
            z.append(zf)
            _ = f
        }
        // The outcome's classes: binary rows, or successes and failures in total.
        let outcome: (events: Double, nonEvents: Double)?
        if distribution == .binomial {
            let events = y.reduce(0, +)
            outcome = (events, n.reduce(0, +) - events)
        } else {
            outcome = nil
        }
        // The response obeys the column rules too (min_cell minority, dominance).
        designColumns.append(("response", y))
        if spec.offset != nil { designColumns.append(("offset", offset)) }
        if spec.weights != nil { designColumns.append(("weights", n)) }
        cells = CellCounts.measure(columns: designColumns, indicatorVariables: ModelFrame.indicatorVariables(spec).map { columns[$0]! },
                                   usedRows: usedRows, outcome: outcome)
        data = GLMMSiteData(family: GLMFamily(distribution, link), structure: spec.covarianceStructure,
                            siteFactor: spec.siteFactorIndex, p: p, x: x, y: y, n: n, offset: offset,
                            levels: levels, levelCounts: counts, z: z)
    }
}

// Builds a model's design at one site: evaluates the specification's column
// expressions on the site's rows, keeps complete cases, indexes the groups of
// each random-effects factor (site-local: equal codes at two sites are
// different groups) and accumulates the θ-free sums the fit needs.

import Math
import Protocol

/// Why a model cannot be evaluated on a site's rows. Messages name variables
/// and rules, never data values: they are sent to the coordinator.
public enum ModelFrameError: Error, Equatable, CustomStringConvertible {
    case unknownVariable(String, dataset: String)
    case notNumeric(String)
    case nonFinite(column: String, rows: Int)
    case siteColumnMismatch(column: String, site: String, rows: Int)
    case noCompleteRows(site: String, rows: Int)
    case unsupported(String)

    public var code: ErrorCode {
        switch self {
        case .unknownVariable: return .unknownVariable
        case .notNumeric: return .wrongVariableType
        case .nonFinite: return .nonFiniteValue
        case .siteColumnMismatch: return .siteColumnMismatch
        case .noCompleteRows: return .noCompleteRows
        case .unsupported: return .unsupported
        }
    }

    public var description: String { description(minCell: 1) }

    /// The message with row counts below `minCell` shown as "fewer than minCell".
    public func description(minCell: Int) -> String {
        func rows(_ n: Int) -> String { n < minCell ? "fewer than \(minCell) rows" : "\(n) row(s)" }
        switch self {
        case .unknownVariable(let v, let d):
            return "variable \"\(v)\" is not in dataset \"\(d)\" at this site; check the spelling or the site's allowed variables"
        case .notNumeric(let v):
            return "variable \"\(v)\" is text here but the model uses it as a number; use it as a factor, or declare its type as numeric in the agent's configuration"
        case .nonFinite(let c, let n):
            _ = n   // the count stays at the site: two such errors could be subtracted
            return "column \"\(c)\" is not finite in some rows (log or sqrt of a negative number, or a division by zero); transform the variable differently"
        case .siteColumnMismatch(let c, let s, let n):
            return "\(rows(n)) have a value in column \"\(c)\" other than this site's name \"\(s)\"; each site's data must hold only its own rows"
        case .noCompleteRows(_, let n):
            return "none of its \(n) rows has every variable the model needs; remove the site from the fit or fix its data"
        case .unsupported(let what):
            return what
        }
    }
}

/// A model evaluated on one site's rows.
public struct ModelFrame: Sendable {
    public let spec: ModelSpec
    public let rows: Int
    public let used: Int
    /// Missing values per required variable, over all rows.
    public let missing: [String: Int]
    /// Levels of each term's grouping factor among used rows (model term order).
    public let groupCounts: [Int]
    public let blocks: SiteBlocks
    /// Small-cell counts of the design, for the site's min_cell rule.
    public let cells: CellCounts
    /// Σ log w over used rows (0 without prior weights): lme4 subtracts it from the criterion.
    public let logWeightSum: Double

    /// The model on the rows of `table` that its filter selects (`selection`,
    /// when the caller has already evaluated the filter). `rows` and
    /// `missing` then count the selected rows only.
    public init(table: DataTable, spec: ModelSpec, dataset: String, selection: [Bool]? = nil) throws {
        self.spec = spec
        let cases = try CompleteCases(table: table, spec: spec, dataset: dataset, selection: selection)
        rows = cases.rows
        missing = cases.missing
        let usedRows = cases.usedRows, columns = cases.columns
        used = usedRows.count

        let evaluator = ExpressionEvaluator(columns: columns, rows: usedRows)
        // [X y]
        var wcols: [[Double]] = []
        for c in spec.fixed { wcols.append(try evaluator.evaluate(c.expr, name: c.name)) }
        switch spec.response {
        case .value(let e): wcols.append(try evaluator.evaluate(e, name: "response"))
        case .binomial:
            throw ModelFrameError.unsupported("cbind(successes, failures) is a binomial response: fit it with --family binomial")
        }
        // Factors: level index per used row, and z values (terms of the factor, in term order).
        let groupings = spec.factorGroupings
        let (levelIndex, levelCounts) = cases.factorLevels(spec)
        groupCounts = spec.terms.map { levelCounts[groupings.firstIndex(of: $0.grouping)!] }
        try Self.checkTail(spec, levelCounts: levelCounts)
        var zcols: [[[Double]]] = Array(repeating: [], count: groupings.count)
        for t in spec.terms {
            let f = groupings.firstIndex(of: t.grouping)!
            for c in t.columns { zcols[f].append(try evaluator.evaluate(c.expr, name: c.name)) }
        }
        var designColumns: [(name: String, values: [Double])] = zip(spec.fixed.map(\.name), wcols).map { ($0, $1) }
        for t in spec.terms {
            let f = groupings.firstIndex(of: t.grouping)!
            let k = spec.terms.filter { $0.grouping == t.grouping }.prefix { $0 != t }.reduce(0) { $0 + $1.columns.count }
            for (j, c) in t.columns.enumerated() { designColumns.append(("\(c.name) | \(t.name)", zcols[f][k + j])) }
        }
        let responseClasses = CellCounts.binaryClasses(wcols[wcols.count - 1])
        // The response obeys the column rules too (min_cell minority, dominance).
        designColumns.append(("response", wcols[wcols.count - 1]))
        // Offsets are subtracted from the response; prior weights scale every
        // row of [X y] and Z by √w (DESIGN.md).
        if let o = spec.offset {
            let off = try evaluator.evaluate(o, name: "offset")
            designColumns.append(("offset", off))
            for i in 0..<used { wcols[wcols.count - 1][i] -= off[i] }
        }
        var logWeights = 0.0
        if let we = spec.weights {
            let w = try evaluator.evaluate(we, name: "weights")
            designColumns.append(("weights", w))
            guard w.allSatisfy({ $0 > 0 }) else {
                throw ModelFrameError.unsupported("prior weights of a linear mixed model must be positive; some rows have weights of 0 or less")
            }
            let sw = w.map { $0.squareRoot() }
            for j in wcols.indices { for i in 0..<used { wcols[j][i] *= sw[i] } }
            for f in zcols.indices { for a in zcols[f].indices { for i in 0..<used { zcols[f][a][i] *= sw[i] } } }
            for x in w { logWeights += Foundation.log(x) }
        }
        logWeightSum = logWeights
        cells = CellCounts.measure(columns: designColumns, indicatorVariables: Self.indicatorVariables(spec).map { columns[$0]! },
                                   usedRows: usedRows, outcome: responseClasses)
        var builder = SiteBlocksBuilder(structure: spec.covarianceStructure, width: wcols.count,
                                        levelCounts: levelCounts, siteFactor: spec.siteFactorIndex)
        builder.addColumns(w: wcols, levels: levelIndex, z: zcols)
        blocks = builder.finish()
    }

    /// Refuses layouts whose dense tail (the grouping factors other than the
    /// one with the most levels) would be too large to hold at this site.
    static func checkTail(_ spec: ModelSpec, levelCounts: [Int]) throws {
        let td = SiteBlocksBuilder.tailDimension(structure: spec.covarianceStructure, levelCounts: levelCounts, siteFactor: spec.siteFactorIndex)
        guard td <= ProtocolLimits.maxTailDimension else {
            throw ModelFrameError.unsupported("the model's grouping factors other than the one with the most groups have \(td) random effects together at this site; at most \(ProtocolLimits.maxTailDimension) are supported (they are held densely). Nest at most one large factor (e.g. patients) inside the site, or group the second factor more coarsely")
        }
    }

    /// Variables the design reads through a level indicator (factors), in first-use order.
    static func indicatorVariables(_ spec: ModelSpec) -> [String] {
        var out: [String] = []
        for e in spec.fixed.map(\.expr) + spec.terms.flatMap({ $0.columns.map(\.expr) }) {
            for (v, _) in e.indicators where !out.contains(v) { out.append(v) }
        }
        return out
    }

    /// Counts the missing values of a column among the `selected` rows and
    /// clears their rows in `complete`.
    static func markMissing(_ c: DataTable.Column, _ complete: inout [Bool], among selected: [Bool]) -> Int {
        var m = 0
        switch c.data {
        case .numeric(let v):
            for i in v.indices where v[i] == nil && selected[i] { m += 1; complete[i] = false }
        case .text(let v):
            for i in v.indices where v[i] == nil && selected[i] { m += 1; complete[i] = false }
        }
        return m
    }

    /// The level of every row in `rows` for the combination of `keyColumns`,
    /// numbered by first appearance, and the number of levels. Two rows are in
    /// the same group when every key column has the same text (`key`) for
    /// them: numbers compare as R prints them.
    static func levelIndex(_ keyColumns: [DataTable.Column], rows: [Int]) -> (index: [Int], count: Int) {
        var codes = [Int](repeating: 0, count: rows.count)
        var count = rows.isEmpty ? 0 : 1
        for (n, c) in keyColumns.enumerated() {
            let (cc, nc) = columnCodes(c, rows: rows)
            if n == 0 { codes = cc; count = nc; continue }
            // Combine with the previous columns' groups, again by first appearance.
            var map: [Int: Int] = [:]
            map.reserveCapacity(max(count, nc))
            for k in codes.indices {
                let key = codes[k] * nc + cc[k]
                if let l = map[key] { codes[k] = l } else { let l = map.count; map[key] = l; codes[k] = l }
            }
            count = map.count
        }
        return (codes, count)
    }

    /// Codes of one column's text (`key`) over `rows`, by first appearance.
    static func columnCodes(_ c: DataTable.Column, rows: [Int]) -> (codes: [Int], count: Int) {
        var codes = [Int](repeating: 0, count: rows.count)
        switch c.data {
        case .text(let v):
            var map: [String: Int] = [:]
            for (k, i) in rows.enumerated() {
                let s = v[i]!
                if let l = map[s] { codes[k] = l } else { let l = map.count; map[s] = l; codes[k] = l }
            }
            return (codes, map.count)
        case .numeric(let v):
            // Integers below 1e15 print as themselves: distinct integers are distinct levels.
            var lo = Double.infinity, hi = -Double.infinity, integral = true
            for i in rows {
                let x = v[i]!
                if !(x == x.rounded() && abs(x) < 1e15) { integral = false; break }
                lo = min(lo, x); hi = max(hi, x)
            }
            if integral && !rows.isEmpty && hi - lo < Double(4 * rows.count + 1024) {
                let base = Int(lo)
                var table = [Int](repeating: -1, count: Int(hi) - base + 1)
                var n = 0
                for (k, i) in rows.enumerated() {
                    let t = Int(v[i]!) - base
                    if table[t] < 0 { table[t] = n; n += 1 }
                    codes[k] = table[t]
                }
                return (codes, n)
            }
            // Distinct values first (−0 is 0), then merge values that print alike.
            var map: [UInt64: Int] = [:]
            var values: [Double] = []
            for (k, i) in rows.enumerated() {
                let x = v[i]! == 0 ? 0 : v[i]!
                if let l = map[x.bitPattern] { codes[k] = l } else {
                    let l = values.count; map[x.bitPattern] = l; values.append(x); codes[k] = l
                }
            }
            if integral { return (codes, values.count) }
            var byText: [String: Int] = [:]
            var merged = [Int](repeating: 0, count: values.count)
            for (p, x) in values.enumerated() {
                let s = RNumberFormat.format(x)
                if let l = byText[s] { merged[p] = l } else { let l = byText.count; byText[s] = l; merged[p] = l }
            }
            if byText.count < values.count { for k in codes.indices { codes[k] = merged[codes[k]] } }
            return (codes, byText.count)
        }
    }

    /// The text identifying a row's group: numbers as R would print them.
    static func key(_ c: DataTable.Column, _ i: Int) -> String {
        switch c.data {
        case .numeric(let v): return RNumberFormat.format(v[i]!)
        case .text(let v): return v[i]!
        }
    }

    static func allVariables(_ spec: ModelSpec) -> [String] {
        var out: [String] = []
        func add(_ e: Expr) { for v in e.variables where !out.contains(v) { out.append(v) } }
        switch spec.response { case .value(let e): add(e); case .binomial(let s, let f): add(s); add(f) }
        spec.fixed.forEach { add($0.expr) }
        spec.terms.forEach { $0.columns.forEach { add($0.expr) } }
        if let f = spec.filter { add(f) }
        return out
    }
}

/// Evaluates column expressions over a set of rows, column at a time.
struct ExpressionEvaluator {
    let columns: [String: DataTable.Column]
    let rows: [Int]

    /// The expression's values, non-finite ones included (row filters).
    func evaluateAllowingNonFinite(_ e: Expr) throws -> [Double] { try eval(e) }

    func evaluate(_ e: Expr, name: String) throws -> [Double] {
        let v = try eval(e)
        let bad = v.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        if bad > 0 { throw ModelFrameError.nonFinite(column: name, rows: bad) }
        return v
    }

    private func eval(_ e: Expr) throws -> [Double] {
        switch e {
        case .number(let x):
            return [Double](repeating: x, count: rows.count)
        case .variable(let v):
            guard case .numeric(let data) = columns[v]!.data else { throw ModelFrameError.notNumeric(v) }
            return rows.map { data[$0]! }
        case .indicator(let v, let level):
            switch columns[v]!.data {
            case .text(let data): return rows.map { data[$0]! == level ? 1 : 0 }
            case .numeric(let data):
                // Format each distinct value once.
                var seen: [UInt64: Double] = [:]
                return rows.map { i in
                    let x = data[i]!
                    if let r = seen[x.bitPattern] { return r }
                    let r: Double = RNumberFormat.format(x) == level ? 1 : 0
                    seen[x.bitPattern] = r
                    return r
                }
            }
        case .isMissing(let v):
            let c = columns[v]!
            return rows.map { c.isMissing($0) ? 1 : 0 }
        case .filled(let v, let x):
            guard case .numeric(let data) = columns[v]!.data else { throw ModelFrameError.notNumeric(v) }
            return rows.map { data[$0] ?? x }
        case .unary(let f, let a):
            let x = try eval(a)
            switch f {
            case .log: return x.map { $0 > 0 ? Foundation.log($0) : .nan }
            case .exp: return x.map { Foundation.exp($0) }
            case .sqrt: return x.map { $0 >= 0 ? $0.squareRoot() : .nan }
            case .negate: return x.map { -$0 }
            }
        case .binary(let op, let a, let b):
            let x = try eval(a), y = try eval(b)
            switch op {
            case .add: return zip(x, y).map { $0 + $1 }
            case .subtract: return zip(x, y).map { $0 - $1 }
            case .multiply: return zip(x, y).map { $0 * $1 }
            case .divide: return zip(x, y).map { $0 / $1 }
            case .power: return zip(x, y).map { Foundation.pow($0, $1) }
            case .less: return zip(x, y).map { $0 < $1 ? 1 : 0 }
            case .lessOrEqual: return zip(x, y).map { $0 <= $1 ? 1 : 0 }
            case .greater: return zip(x, y).map { $0 > $1 ? 1 : 0 }
            case .greaterOrEqual: return zip(x, y).map { $0 >= $1 ? 1 : 0 }
            case .equal: return zip(x, y).map { $0 == $1 ? 1 : 0 }
            case .notEqual: return zip(x, y).map { $0 != $1 ? 1 : 0 }
            case .and: return zip(x, y).map { $0 != 0 && $1 != 0 ? 1 : 0 }
            case .or: return zip(x, y).map { $0 != 0 || $1 != 0 ? 1 : 0 }
            }
        }
    }
}

import Foundation

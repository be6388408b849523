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

    public var code: String {
        switch self {
        case .unknownVariable: return "unknown_variable"
        case .notNumeric: return "wrong_variable_type"
        case .nonFinite: return "non_finite_value"
        case .siteColumnMismatch: return "site_column_mismatch"
        case .noCompleteRows: return "no_complete_rows"
        case .unsupported: return "unsupported"
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
            return "column \"\(c)\" is not finite in \(rows(n)) (log or sqrt of a negative number, or a division by zero); transform the variable differently"
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

    public init(table: DataTable, spec: ModelSpec, dataset: String) throws {
        self.spec = spec
        rows = table.rowCount
        if spec.weights != nil {
            throw ModelFrameError.unsupported("prior weights are not supported for linear mixed models yet")
        }
        if spec.offset != nil && spec.family == .gaussian {
            throw ModelFrameError.unsupported("offsets are not supported for linear mixed models yet")
        }
        let required = spec.requiredVariables
        var columns: [String: DataTable.Column] = [:]
        for v in required {
            guard let c = table.column(named: v) else { throw ModelFrameError.unknownVariable(v, dataset: dataset) }
            columns[v] = c
        }
        // Every variable read only through missing(x) must exist too.
        for v in Self.allVariables(spec) where columns[v] == nil {
            guard let c = table.column(named: v) else { throw ModelFrameError.unknownVariable(v, dataset: dataset) }
            columns[v] = c
        }
        var missing: [String: Int] = [:]
        var complete = [Bool](repeating: true, count: rows)
        for v in required {
            let c = columns[v]!
            var m = 0
            for i in 0..<rows where c.isMissing(i) { m += 1; complete[i] = false }
            missing[v] = m
        }
        self.missing = missing
        let usedRows = (0..<rows).filter { complete[$0] }
        used = usedRows.count
        guard used > 0 else { throw ModelFrameError.noCompleteRows(site: "", rows: rows) }

        let evaluator = ExpressionEvaluator(columns: columns, rows: usedRows)
        // [X y]
        var wcols: [[Double]] = []
        for c in spec.fixed { wcols.append(try evaluator.evaluate(c.expr, name: c.name)) }
        switch spec.response {
        case .value(let e): wcols.append(try evaluator.evaluate(e, name: "response"))
        case .binomial:
            throw ModelFrameError.unsupported("binomial responses need the GLMM engine, which is not available yet")
        }
        // Factors: level index per used row, and z values (terms of the factor, in term order).
        let groupings = spec.factorGroupings
        var levelIndex: [[Int]] = []
        var levelCounts: [Int] = []
        for g in groupings {
            switch g {
            case .site:
                levelIndex.append([Int](repeating: 0, count: used)); levelCounts.append(1)
            case .withinSite(let vs):
                var map: [String: Int] = [:]
                var idx = [Int](repeating: 0, count: used)
                let keyColumns = vs.map { columns[$0]! }
                for (k, i) in usedRows.enumerated() {
                    let key = keyColumns.map { Self.key($0, i) }.joined(separator: "\u{1F}")
                    if let l = map[key] { idx[k] = l } else { let l = map.count; map[key] = l; idx[k] = l }
                }
                levelIndex.append(idx); levelCounts.append(map.count)
            }
        }
        groupCounts = spec.terms.map { levelCounts[groupings.firstIndex(of: $0.grouping)!] }
        var zcols: [[[Double]]] = Array(repeating: [], count: groupings.count)
        for t in spec.terms {
            let f = groupings.firstIndex(of: t.grouping)!
            for c in t.columns { zcols[f].append(try evaluator.evaluate(c.expr, name: c.name)) }
        }
        var builder = SiteBlocksBuilder(structure: spec.covarianceStructure, width: wcols.count,
                                        levelCounts: levelCounts, siteFactor: spec.siteFactorIndex)
        var w = [Double](repeating: 0, count: wcols.count)
        var lv = [Int](repeating: 0, count: groupings.count)
        var z: [[Double]] = zcols.map { [Double](repeating: 0, count: $0.count) }
        for k in 0..<used {
            for j in 0..<wcols.count { w[j] = wcols[j][k] }
            for f in 0..<groupings.count {
                lv[f] = levelIndex[f][k]
                for a in 0..<zcols[f].count { z[f][a] = zcols[f][a][k] }
            }
            builder.add(w: w, levels: lv, z: z)
        }
        blocks = builder.finish()
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
        return out
    }
}

/// Evaluates column expressions over a set of rows, column at a time.
struct ExpressionEvaluator {
    let columns: [String: DataTable.Column]
    let rows: [Int]

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
            case .numeric(let data): return rows.map { RNumberFormat.format(data[$0]!) == level ? 1 : 0 }
            }
        case .isMissing(let v):
            let c = columns[v]!
            return rows.map { c.isMissing($0) ? 1 : 0 }
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
            }
        }
    }
}

import Foundation

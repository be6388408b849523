// Thresholds in model columns: comparisons (I(age > 65)), & and | of them
// (cut()'s intervals), and the kinks of pmin/pmax with a constant and of abs.
// Each is a split of the rows at a value of an expression; a column built on
// one changes, across models or within a design, only for the rows on one
// side, so the site checks the splits themselves (docs/PRIVACY.md, "Thresholds"):
//
//   - each threshold has at least min_cell used rows on each side (neither
//     side may be empty: "no row above 95" would tell the largest value);
//   - all the design's thresholds together cut the used rows into cells that
//     hold none or at least min_cell rows, so that no combination of the
//     design's columns (I(age > 64.5) − I(age > 65), pmin(age, 65) against
//     I(age > 65.5)) isolates fewer than min_cell rows;
//   - the rows on the true side of each threshold join the subsets answered
//     (differencing, SubsetHistory), so that two models with thresholds a few
//     rows apart are refused as well.

import Protocol

enum ThresholdRules {
    /// The splits an expression makes, each as a 0/1 expression (deduplicated).
    static func atoms(_ e: Expr) -> [Expr] {
        var out: [Expr] = []
        func add(_ a: Expr) { if !out.contains(a) { out.append(a) } }
        func go(_ e: Expr) {
            switch e {
            case .number, .variable, .indicator, .isMissing, .filled: return
            case .unary(let f, let a):
                if f == .abs { add(.binary(.less, a, .number(0))) }
                go(a)
            case .binary(let op, let a, let b):
                if op.isComparison { add(e) }
                if op == .pmin { add(.binary(.greater, a, b)) }
                if op == .pmax { add(.binary(.less, a, b)) }
                go(a); go(b)
            }
        }
        go(e)
        return out
    }

    /// The splits of every expression a model evaluates over rows.
    static func atoms(_ spec: ModelSpec) -> [Expr] {
        var exprs = spec.fixed.map(\.expr) + spec.terms.flatMap { $0.columns.map(\.expr) }
        switch spec.response { case .value(let e): exprs.append(e); case .binomial(let s, let f): exprs += [s, f] }
        exprs += [spec.weights, spec.offset].compactMap { $0 }
        var out: [Expr] = []
        for e in exprs { for a in atoms(e) where !out.contains(a) { out.append(a) } }
        return out
    }

    /// A short text naming a split for refusals: its variables, operator and
    /// constant (both chosen by the coordinator; never a data value).
    static func label(_ e: Expr) -> String {
        guard case .binary(let op, let a, let b) = e else { return "on " + e.variables.joined(separator: ", ") }
        let (x, c, o) = b.variables.isEmpty ? (a, b, op.rawValue) : (b, a, flipped(op))
        let constant: String
        if case .number(let v) = c { constant = RNumberFormat.format(v) } else { constant = "a constant" }
        let subject = x.variables.count == 1 && x == .variable(x.variables[0]) ? x.variables[0] : "an expression of " + x.variables.joined(separator: ", ")
        return "\(subject) \(o) \(constant)"
    }

    private static func flipped(_ op: BinaryOperator) -> String {
        switch op {
        case .less: return ">"; case .lessOrEqual: return ">="; case .greater: return "<"; case .greaterOrEqual: return "<="
        default: return op.rawValue
        }
    }

    /// Rows per cell of the partition the splits make (only non-empty cells).
    static func cells(_ values: [[Double]], rows: Int) -> [Int] {
        guard !values.isEmpty else { return [] }
        var counts: [[Bool]: Int] = [:]
        var key = [Bool](repeating: false, count: values.count)
        for i in 0..<rows {
            for k in values.indices { key[k] = values[k][i] != 0 }
            counts[key, default: 0] += 1
        }
        return counts.values.sorted()
    }
}

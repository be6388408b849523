// The pieces of the site's disclosure rules that need more than a threshold
// compare: which rows a row filter selects, the small cells a model's design
// would expose (factor levels, 0/1 columns, outcome classes), the rows of
// earlier filters (differencing), and the sessions each coordinator has
// opened today. SiteService applies them in `prepare`; see docs/PRIVACY.md.

import Foundation
import Protocol
import Synchronization

// MARK: - Row filters

/// The rows a model's row filter selects.
enum RowFilter {
    /// `selected[i]` is true when the filter is finite and not 0 on row i.
    /// Rows where a variable the filter needs is missing are not selected.
    /// No filter: every row.
    static func select(_ filter: Expr?, table: DataTable, dataset: String) throws -> [Bool] {
        guard let filter else { return [Bool](repeating: true, count: table.rowCount) }
        var columns: [String: DataTable.Column] = [:]
        for v in filter.variables {
            guard let c = table.column(named: v) else { throw ModelFrameError.unknownVariable(v, dataset: dataset) }
            columns[v] = c
        }
        let needed = filter.requiredVariables.map { columns[$0]! }
        let rows = (0..<table.rowCount).filter { i in !needed.contains { $0.isMissing(i) } }
        let values = try ExpressionEvaluator(columns: columns, rows: rows).evaluateAllowingNonFinite(filter)
        var selected = [Bool](repeating: false, count: table.rowCount)
        for (k, i) in rows.enumerated() where values[k].isFinite && values[k] != 0 { selected[i] = true }
        return selected
    }
}

/// The set of rows a filter selected, as a bit set (for differencing checks).
struct RowSet: Sendable, Equatable {
    var words: [UInt64]
    var count: Int

    init(_ selected: [Bool]) {
        var w = [UInt64](repeating: 0, count: (selected.count + 63) / 64)
        var n = 0
        for (i, s) in selected.enumerated() where s { w[i >> 6] |= 1 << UInt64(i & 63); n += 1 }
        words = w; count = n
    }

    /// Rows in both sets (the sets must come from the same table).
    func intersection(_ other: RowSet) -> RowSet {
        var r = self
        for k in r.words.indices { r.words[k] &= k < other.words.count ? other.words[k] : 0 }
        r.count = r.words.reduce(0) { $0 + $1.nonzeroBitCount }
        return r
    }

    /// Rows in exactly one of the two sets (the sets must come from the same table).
    func symmetricDifference(_ other: RowSet) -> Int {
        guard words.count == other.words.count else { return Int.max }
        var d = 0
        for k in words.indices { d += (words[k] ^ other.words[k]).nonzeroBitCount }
        return d
    }
}

// MARK: - Small cells of a design

/// Counts the site checks against `min_cell` before it answers a prepare.
/// Only counts: no level names and no values are kept.
public struct CellCounts: Sendable, Equatable {
    /// A design column that takes only the values 0 and 1 on the used rows
    /// (a factor level, an interaction of levels, a 0/1 variable, missing(x)).
    public struct BinaryColumn: Sendable, Equatable {
        public var name: String
        public var ones: Int
        public var zeros: Int
    }
    public var binaryColumns: [BinaryColumn] = []
    /// The rows (indices in the source table) the model uses, and for each
    /// 0/1 column the rows where it is 1: the row subsets an answer sums over.
    var usedRows: [Int] = []
    var binarySubsets: [(name: String, rows: [Int])] = []
    /// For every evaluated column (design, weights, offset): how many rows
    /// differ from the column's most common value. A column that singles out
    /// a few rows (an indicator in disguise, e.g. 0/2 values, or 1 + ε·[age > 90])
    /// would let sums over it disclose them.
    public var minorityRows: [(name: String, rows: Int)] = []
    /// For every evaluated column that varies: the largest share of its sum
    /// of squared deviations from its mean that one row carries.
    public var dominance: [(name: String, share: Double)] = []
    /// Rows per level among the used rows, for each variable the model reads
    /// through a level indicator (so the reference level is counted too).
    public var levelCounts: [String: [Int]] = [:]
    /// A binary outcome's classes among the used rows: events and non-events
    /// (for cbind(successes, failures), their totals). Nil if not binary.
    public var outcome: (events: Double, nonEvents: Double)? = nil
    /// Each threshold of the design (ThresholdRules): rows on its true and false side.
    public var thresholds: [BinaryColumn] = []
    /// Rows in each non-empty cell of the partition all thresholds make.
    public var thresholdCells: [Int] = []
    /// Crossed factors: rows per level present among the used rows.
    public var crossedLevelRows: [(factor: String, rows: [Int])] = []

    public static func == (a: CellCounts, b: CellCounts) -> Bool {
        a.binaryColumns == b.binaryColumns && a.levelCounts == b.levelCounts
            && a.minorityRows.map(\.name) == b.minorityRows.map(\.name) && a.minorityRows.map(\.rows) == b.minorityRows.map(\.rows)
            && a.outcome?.events == b.outcome?.events && a.outcome?.nonEvents == b.outcome?.nonEvents
            && a.thresholds == b.thresholds && a.thresholdCells == b.thresholdCells
    }

    /// What the rules read of one evaluated column: whether it is 0/1 (and
    /// then its rows of 1, when it has both values), how many rows differ
    /// from its most common value, and the largest share of its spread one
    /// row carries. Measured column by column, so a site need not hold every
    /// column of a large design at once (StreamedLinearDesign).
    struct ColumnCells {
        var name: String
        var binary: BinaryColumn?
        var onesRows: [Int]?
        var minority: Int
        var dominance: Double?
    }

    /// The cells of one column evaluated on the used rows. The values are
    /// consumed: the minority count may sort them in place.
    static func cells(of name: String, values: consuming [Double], usedRows: [Int]) -> ColumnCells {
        var column = values   // owned here, so sorting it below copies nothing
        var ones = 0, zeros = 0, binary = true
        for x in column {
            if x == 1 { ones += 1 } else if x == 0 { zeros += 1 } else { binary = false; break }
        }
        var c = ColumnCells(name: name, binary: nil, onesRows: nil, minority: 0, dominance: nil)
        if binary {
            c.binary = BinaryColumn(name: name, ones: ones, zeros: zeros)
            if ones > 0 && zeros > 0 { c.onesRows = column.indices.filter { column[$0] == 1 }.map { usedRows[$0] } }
        } else {
            c.dominance = largestRowShare(column)
        }
        // A 0/1 column's minority is its smaller class (−0 counted as 0, as x == 0 does): no tally.
        c.minority = binary ? min(ones, zeros) : minority(inPlace: &column)
        return c
    }

    /// Counts for design columns evaluated on the used rows.
    static func measure(columns: [(name: String, values: [Double])], indicatorVariables: [DataTable.Column],
                        usedRows: [Int], outcome: (events: Double, nonEvents: Double)?,
                        thresholds: [(name: String, values: [Double])] = []) -> CellCounts {
        measure(measured: columns.map { cells(of: $0.name, values: $0.values, usedRows: usedRows) }, indicatorVariables: indicatorVariables,
                usedRows: usedRows, outcome: outcome, thresholds: thresholds)
    }

    /// Counts from columns measured one at a time (`cells(of:values:usedRows:)`), in design order.
    static func measure(measured: [ColumnCells], indicatorVariables: [DataTable.Column],
                        usedRows: [Int], outcome: (events: Double, nonEvents: Double)?,
                        thresholds: [(name: String, values: [Double])] = []) -> CellCounts {
        var c = CellCounts()
        for (name, values) in thresholds {
            let ones = values.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
            c.thresholds.append(BinaryColumn(name: name, ones: ones, zeros: values.count - ones))
            // The rows on its true side are a subset the answer depends on (differencing).
            if ones > 0 && ones < values.count {
                c.binarySubsets.append(("threshold " + name, values.indices.filter { values[$0] != 0 }.map { usedRows[$0] }))
            }
        }
        c.thresholdCells = ThresholdRules.cells(thresholds.map(\.values), rows: usedRows.count)
        for m in measured {
            if let b = m.binary {
                c.binaryColumns.append(b)
                if let rows = m.onesRows { c.binarySubsets.append((m.name, rows)) }
            }
            c.minorityRows.append((m.name, m.minority))
            if let share = m.dominance { c.dominance.append((m.name, share)) }
        }
        for column in indicatorVariables where c.levelCounts[column.name] == nil {
            let (codes, n) = SiteDesign.columnCodes(column, rows: usedRows)
            var counts = [Int](repeating: 0, count: n)
            for k in codes { counts[k] += 1 }
            c.levelCounts[column.name] = counts
        }
        c.outcome = outcome
        c.usedRows = usedRows
        return c
    }

    /// Rows that differ from the most common value of `values` (−0 counted as 0).
    static func minority(_ values: [Double]) -> Int {
        var copy = values
        return minority(inPlace: &copy)
    }

    /// `minority`, tallying the values' bit patterns in place (−0 as 0):
    /// no dictionary of 10 million entries for a continuous column of 10
    /// million rows, and no copy of the column. Leaves `values` permuted.
    static func minority(inPlace values: inout [Double]) -> Int {
        values.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: UInt64.self) { keys -> Int in
                let negativeZero = (-0.0).bitPattern
                for i in keys.indices where keys[i] == negativeZero { keys[i] = 0 }
                return keys.count - ValueTally.tally(keys, listLimit: 0).largest
            }
        }
    }

    /// max_i (x_i − x̄)² / Σ (x_i − x̄)², or nil for a column that does not vary.
    static func largestRowShare(_ values: [Double]) -> Double? {
        guard values.count > 1 else { return nil }
        let mean = values.reduce(0, +) / Double(values.count)
        var total = 0.0, largest = 0.0
        values.withUnsafeBufferPointer { v in
            for x in v {
                let d = (x - mean) * (x - mean)
                total += d
                largest = d > largest ? d : largest   // a NaN leaves total NaN, refused below
            }
        }
        guard total > 1e-300, total.isFinite else { return nil }
        return largest / total
    }

    /// The classes of a response column when it is 0/1 (nil otherwise).
    static func binaryClasses(_ y: [Double]) -> (events: Double, nonEvents: Double)? {
        var ones = 0.0, zeros = 0.0
        for v in y {
            if v == 1 { ones += 1 } else if v == 0 { zeros += 1 } else { return nil }
        }
        return (ones, zeros)
    }

    /// The first rule these counts break under `policy`, as a refusal
    /// naming the rule and its threshold (never a count below min_cell, a
    /// level name or a value).
    func violation(_ policy: DisclosurePolicy) -> String? {
        let m = policy.minCell
        guard m > 0 else { return nil }
        if let o = outcome, o.events < Double(m) || o.nonEvents < Double(m) {
            return "each class of a binary outcome must have at least \(m) rows (or, for cbind(successes, failures), \(m) successes and \(m) failures) among the rows the model uses at this site; one class has fewer (rule min_cell)"
        }
        for t in thresholds where t.ones < m || t.zeros < m {
            return "the threshold \(t.name) puts fewer than \(m) of the rows the model uses at this site on one of its sides; a comparison, a cut() break, or the kink of pmin, pmax or abs needs at least \(m) rows on each side (rule min_cell, thresholds)"
        }
        if thresholdCells.contains(where: { $0 > 0 && $0 < m }) {
            return "the model's thresholds (comparisons, cut() breaks, kinks of pmin, pmax or abs) together leave fewer than \(m) of the rows the model uses at this site between two of them (as I(x > a) and I(x > b) would for close a and b), so a combination of columns would single out those rows; thresholds must leave none or at least \(m) rows between them (rule min_cell, thresholds)"
        }
        for c in crossedLevelRows where c.rows.contains(where: { $0 < m }) {
            return "a level of grouping factor \"\(c.factor)\", which is crossed with the sites, has fewer than \(m) of the rows the model uses at this site, and the site's sums would describe those rows (rule min_cell). Merge rare levels of the factor at the sites, or leave their rows out with a filter"
        }
        for b in binaryColumns where (b.ones > 0 && b.ones < m) || (b.zeros > 0 && b.zeros < m) {
            return "design column \"\(b.name)\" takes one of its two values in fewer than \(m) of the rows the model uses at this site; each level, interaction cell or two-valued variable needs none or at least \(m) rows (rule min_cell)"
        }
        for c in minorityRows where c.rows > 0 && c.rows < m {
            return "column \"\(c.name)\" differs from its most common value in fewer than \(m) of the rows the model uses at this site, so sums over it would single out those rows; each column needs none or at least \(m) such rows (rule min_cell)"
        }
        for d in dominance where d.share > policy.maxRowShare {
            return "one row carries more than \(Int(100 * policy.maxRowShare))% of the spread of \(d.name == "response" || d.name == "offset" || d.name == "weights" ? "the \(d.name)" : "column \"\(d.name)\"") at this site, so sums over it would mostly describe that row (rule max_row_share, dominance)"
        }
        for v in levelCounts.keys.sorted() where levelCounts[v]!.contains(where: { $0 > 0 && $0 < m }) {
            return "a level of the categorical variable \"\(v)\" has fewer than \(m) rows among the rows the model uses at this site (rule min_cell); merge rare levels at the sites or leave the variable out"
        }
        return nil
    }
}

// MARK: - Sessions per coordinator and day

/// When each coordinator identity (certificate fingerprint) opened its
/// sessions, over the last 24 hours.
final class SessionBudget: Sendable {
    private let starts = Mutex<[String: [Date]]>([:])
    static let window: TimeInterval = 24 * 3600

    /// Counts a new session for `identity` unless it has `limit` in the last
    /// 24 hours; returns whether it was counted.
    func open(_ identity: String, limit: Int, now: Date = Date()) -> Bool {
        starts.withLock { all in
            var list = all[identity, default: []].filter { now.timeIntervalSince($0) < Self.window }
            guard list.count < limit else { all[identity] = list; return false }
            list.append(now)
            all[identity] = list
            return true
        }
    }

    /// Adds sessions opened earlier (e.g. read back from the audit log at start-up).
    func seed(_ earlier: [(identity: String, time: Date)]) {
        starts.withLock { all in for e in earlier { all[e.identity, default: []].append(e.time) } }
    }

    func count(_ identity: String, now: Date = Date()) -> Int {
        starts.withLock { $0[identity, default: []].filter { now.timeIntervalSince($0) < Self.window }.count }
    }
}

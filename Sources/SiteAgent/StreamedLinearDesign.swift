// A linear mixed model's design without full-length copies of its columns.
// An LMM site's answer is the θ-free cross-products of [Z X y] (DESIGN.md):
// per site, or per level of the within-site factor with the most levels
// beside a small dense tail. Those sums need the columns only one chunk of
// rows at a time, so the disclosure checks read each column over all used
// rows, one column at a time, and the blocks are summed while the rows
// stream past in chunks. The general path (SiteDesign.init) holds every
// column at once: at 10 million rows that was about 1.1 GB beside the table
// (BENCHMARKS.md). Nested factors beyond the dense tail's cap (NestedChain)
// and factors crossed with the sites still take that path.
//
// The sums are bit-identical to the general path's: each chunk is a whole
// number of SiteBlocksBuilder.addColumns' own 1024-row chunks, so every
// accumulator adds the same rows in the same order, and each value is
// computed by the same element-wise operations.

import Foundation
import Math
import Protocol

struct StreamedLinearDesign {
    /// Rows per chunk of the blocks' pass: a multiple of addColumns' 1024.
    static let chunkRows = 64 * 1024

    let cells: CellCounts
    let blocks: SiteBlocks
    let logWeightSum: Double
    /// Levels of each term's grouping factor among the used rows (term order).
    let groupCounts: [Int]

    /// Whether a model's sums can be streamed: a linear mixed model (not
    /// flat, no GEE) without factors crossed with the sites.
    static func applies(_ spec: ModelSpec, family: GLMFamily?) -> Bool {
        family == nil && !spec.isFlat && spec.gee == nil && spec.crossedFactors.isEmpty && !spec.hasCrossedTerms
    }

    /// The checks' pass, then the blocks' pass, over the complete cases; nil
    /// when the within-site factors need the nested layout (SiteDesign.init
    /// then builds it from full columns). Errors (non-finite or text columns,
    /// a dense tail beyond its cap, non-positive weights) are those of
    /// SiteDesign.init, found in the same order.
    init?(spec: ModelSpec, cases: CompleteCases) throws {
        let used = cases.usedRows
        let all = ExpressionEvaluator(columns: cases.columns, rows: used)
        func measured(_ e: Expr, _ evaluateName: String, cellName: String) throws -> CellCounts.ColumnCells {
            CellCounts.cells(of: cellName, values: try all.evaluate(e, name: evaluateName), usedRows: used)
        }
        // The columns one at a time over all used rows, in SiteDesign's order.
        let fixed = try spec.fixed.map { try measured($0.expr, $0.name, cellName: $0.name) }
        let (response, outcome): (CellCounts.ColumnCells, (events: Double, nonEvents: Double)?) = try {
            let values = try SiteDesign.response(spec, family: nil, evaluator: all).values
            let outcome = CellCounts.binaryClasses(values)
            return (CellCounts.cells(of: "response", values: consume values, usedRows: used), outcome)
        }()
        var weights: CellCounts.ColumnCells? = nil
        var positiveWeights = true, logWeightSum = 0.0
        if let e = spec.weights {
            let w = try all.evaluate(e, name: "weights")
            positiveWeights = w.allSatisfy { $0 > 0 }
            if positiveWeights { for x in w { logWeightSum += Foundation.log(x) } }
            weights = CellCounts.cells(of: "weights", values: consume w, usedRows: used)
        }
        let offset = try spec.offset.map { try measured($0, "offset", cellName: "offset") }
        let groupings = spec.factorGroupings
        // Every row's level of a site-grouped model's one factor is 0: not stored (80 MB at 10 million rows).
        let bySite = groupings == [.site]
        let (levels, levelCounts) = bySite ? ([[]], [1]) : cases.factorLevels(spec)
        if !bySite {
            if SiteDesign.nestedChain(spec, levelCounts: levelCounts, levels: levels) != nil { return nil }
            try SiteDesign.checkTail(spec.localModel, levelCounts: levelCounts)
        }
        groupCounts = spec.terms.map { t in levelCounts[groupings.firstIndex(of: t.grouping)!] }
        var z: [CellCounts.ColumnCells] = []
        for g in groupings {
            for t in spec.terms where t.grouping == g {
                z += try t.columns.map { try measured($0.expr, $0.name, cellName: "\($0.name) | \(t.name)") }
            }
        }
        let indicators = SiteDesign.indicatorVariables(spec).map { cases.columns[$0]! }
        let thresholds = try ThresholdRules.atoms(spec).map { a in
            (name: ThresholdRules.label(a), values: try all.evaluate(a, name: "threshold"))
        }
        guard positiveWeights else {
            throw ModelFrameError.unsupported("prior weights of a linear mixed model must be positive; some rows have weights of 0 or less")
        }
        cells = CellCounts.measure(measured: fixed + z + [response] + (offset.map { [$0] } ?? []) + (weights.map { [$0] } ?? []),
                                   indicatorVariables: indicators, usedRows: used, outcome: outcome, thresholds: thresholds)
        self.logWeightSum = logWeightSum

        // The blocks, chunk by chunk: [X y − offset] and Z, each row scaled by √w, with each row's levels.
        var builder = SiteBlocksBuilder(structure: spec.covarianceStructure, width: spec.fixed.count + 1,
                                        levelCounts: levelCounts, siteFactor: spec.siteFactorIndex)
        var start = 0
        while start < used.count {
            let end = min(start + Self.chunkRows, used.count)
            let part = Array(used[start..<end])
            let ev = ExpressionEvaluator(columns: cases.columns, rows: part)
            var wcols = try spec.fixed.map { try ev.evaluate($0.expr, name: $0.name) }
            wcols.append(try SiteDesign.response(spec, family: nil, evaluator: ev).values)
            if let e = spec.offset {
                let o = try ev.evaluate(e, name: "offset")
                for i in part.indices { wcols[wcols.count - 1][i] -= o[i] }
            }
            var zcols: [[[Double]]] = try groupings.map { g in
                try spec.terms.filter { $0.grouping == g }.flatMap { t in try t.columns.map { try ev.evaluate($0.expr, name: $0.name) } }
            }
            if let e = spec.weights {
                let sw = try ev.evaluate(e, name: "weights").map { $0.squareRoot() }
                for j in wcols.indices { for i in part.indices { wcols[j][i] *= sw[i] } }
                for f in zcols.indices { for a in zcols[f].indices { for i in part.indices { zcols[f][a][i] *= sw[i] } } }
            }
            builder.addColumns(w: wcols, levels: bySite ? [[Int](repeating: 0, count: part.count)] : levels.map { Array($0[start..<end]) },
                               z: zcols)
            start += part.count
        }
        blocks = builder.finish()
    }
}

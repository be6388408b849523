// A crossed factor at one site (DESIGN.md, "Crossed factors"): its levels
// present among the used rows, in the coordinator's agreed coding, become
// leading columns of [X y] (each level's unscaled z columns), so that the
// site's own elimination of its local random effects yields its Schur
// complement onto [u_G, β, y] with the same machinery as any LMM.

import Protocol
import Math

struct CrossedColumns {
    struct Factor {
        /// Index among the model's factor groupings.
        var factor: Int
        var variable: String
        /// Random effects per level (the factor's columns).
        var dimension: Int
        /// Each used row's agreed level index.
        var rowLevel: [Int]
        /// Agreed level indices present here, ascending, and their rows.
        var present: [Int]
        var rowsPerLevel: [Int]
        /// The level's rank among `present`, by agreed index (−1 if absent).
        var rank: [Int]
        /// First leading column of this factor.
        var offset: Int
    }

    let factors: [Factor]
    /// Indices of the model's other (site-local) factors, in order.
    let localFactors: [Int]
    /// Leading columns in all: Σ present levels × r.
    let width: Int

    var isEmpty: Bool { factors.isEmpty }
    var presentLevels: [[Int]] { factors.map(\.present) }
    func present(factor f: Int) -> [Int]? { factors.first { $0.factor == f }?.present }

    /// Refuses rows whose code is not in the agreed coding: describe names
    /// only levels with at least min_cell rows at a site, so such a code is
    /// a rare level (never named in the message).
    init(_ spec: ModelSpec, levels: [[Int]]) throws {
        var out: [Factor] = [], offset = 0
        for cf in spec.crossedFactors {
            let idx = levels[cf.factor]
            guard !idx.contains(-1) else {
                throw ModelFrameError.unsupported("grouping factor \"\(cf.variable)\" is crossed with the sites, and some rows the model uses at this site have a level of it that is not among its agreed levels (sites name only levels with at least min_cell rows, so these are rare levels here). Merge rare levels of the factor at the sites, or leave their rows out with a filter")
            }
            var counts = [Int](repeating: 0, count: cf.levels.count)
            for l in idx { counts[l] += 1 }
            let present = counts.indices.filter { counts[$0] > 0 }
            var rank = [Int](repeating: -1, count: cf.levels.count)
            for (k, l) in present.enumerated() { rank[l] = k }
            out.append(Factor(factor: cf.factor, variable: cf.variable, dimension: cf.columns.count, rowLevel: idx,
                              present: present, rowsPerLevel: present.map { counts[$0] }, rank: rank, offset: offset))
            offset += present.count * cf.columns.count
        }
        factors = out
        width = offset
        let crossedSet = Set(out.map(\.factor))
        localFactors = spec.factorGroupings.indices.filter { !crossedSet.contains($0) }
    }

    /// Each present level is a row subset the answer sums over: its rows
    /// are counted for the min_cell rule and remembered for differencing.
    func measure(into cells: inout CellCounts, usedRows: [Int]) {
        for f in factors {
            cells.crossedLevelRows.append((f.variable, f.rowsPerLevel))
            guard f.present.count > 1 else { continue }
            for l in f.present {
                let rows = f.rowLevel.indices.filter { f.rowLevel[$0] == l }.map { usedRows[$0] }
                cells.binarySubsets.append(("level \(l + 1) of crossed factor \(f.variable)", rows))
            }
        }
    }

    /// Adds the used rows to `builder`, whose [X y] is these leading columns
    /// then `w`; `levels` and `z` are indexed by the model's factors, of
    /// which the builder sees the local ones. Row by row: a row touches r
    /// leading columns per crossed factor, and dense columns would take
    /// levels × rows numbers.
    func add(to builder: inout SiteBlocksBuilder, w: [[Double]], levels: [[Int]], z: [[[Double]]]) {
        let n = w.first?.count ?? 0
        var row = [Double](repeating: 0, count: width + w.count)
        var lv = [Int](repeating: 0, count: localFactors.count)
        var zr = localFactors.map { [Double](repeating: 0, count: z[$0].count) }
        for i in 0..<n {
            for k in 0..<width { row[k] = 0 }
            for f in factors {
                let base = f.offset + f.rank[f.rowLevel[i]] * f.dimension
                for a in 0..<f.dimension { row[base + a] = z[f.factor][a][i] }
            }
            for j in w.indices { row[width + j] = w[j][i] }
            for (k, f) in localFactors.enumerated() {
                lv[k] = levels[f][i]
                for a in z[f].indices { zr[k][a] = z[f][a][i] }
            }
            builder.add(w: row, levels: lv, z: zr)
        }
    }
}

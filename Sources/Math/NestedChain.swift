// A site's θ-free sums when its within-site grouping factors are nested in
// one another (visits in episodes in patients in the site): one small block
// per level of every nested factor, and the level's cross products with the
// coarser random effects it meets — its ancestors' (one level per coarser
// factor, by nesting) and the dense tail's (the site factor). Nothing of
// size (levels)² is ever held, so the number of patients is not capped; the
// elimination is NestedElimination.

/// The nested factors of one site, finest first (in SiteBlocks.nested).
public struct NestedChain: Sendable, Equatable {
    /// One nested factor's per-level sums.
    public struct Factor: Sendable, Equatable {
        public var factor: Int
        public var levels: Int
        public var dimension: Int
        /// Level l's level in the next (coarser) factor of the chain; empty for the last.
        public var parent: [Int]
        /// Coarser random effects each level meets: Σ dimensions of the
        /// coarser chain factors (its ancestors), then the dense tail.
        public var crossWidth: Int
        /// levels × (r×r): Σ z zᵀ per level (column-major, full).
        public var zz: [Double]
        /// levels × (r×width): Σ z [x y]ᵀ per level.
        public var zw: [Double]
        /// levels × (r×crossWidth): Σ z [z_parent, z_grandparent, …, z_tail]ᵀ per level.
        public var cross: [Double]
    }
    public var factors: [Factor]

    /// The nested chain for these factors, or nil when they are not nested.
    /// The within-site factors (all but `siteFactor`) are taken by
    /// decreasing number of levels; every level of each must lie in one level
    /// of the next (checked on the rows' level codes, `levels[f][row]`).
    public static func order(structure: CovarianceStructure, levelCounts: [Int], siteFactor: Int?, levels: [[Int]]) -> [Int]? {
        let chain = (0..<structure.factorCount).filter { $0 != siteFactor }
            .sorted { levelCounts[$0] != levelCounts[$1] ? levelCounts[$0] > levelCounts[$1] : $0 < $1 }
        guard chain.count >= 2 else { return nil }
        for k in 0..<(chain.count - 1) {
            let fine = chain[k], coarse = chain[k + 1]
            var parent = [Int](repeating: -1, count: levelCounts[fine])
            for (l, a) in zip(levels[fine], levels[coarse]) {
                if parent[l] < 0 { parent[l] = a } else if parent[l] != a { return nil }
            }
        }
        return chain
    }
}

extension SiteBlocks {
    /// The blocks of a site whose within-site factors `chain` (finest first,
    /// from NestedChain.order) are nested: per-level blocks for each, and the
    /// other factors (the site factor) as the dense tail. Inputs as in
    /// SiteBlocksBuilder.addColumns: w[j][row], levels[f][row], z[f][a][row].
    public static func nested(structure: CovarianceStructure, width: Int, levelCounts: [Int], siteFactor: Int?,
                              chain: [Int], w: [[Double]], levels: [[Int]], z: [[[Double]]]) -> SiteBlocks {
        let n = w.first?.count ?? 0
        let dims = (0..<structure.factorCount).map { structure.factorDimension($0) }
        // Dense tail: the factors outside the chain, the site factor last.
        var rest = (0..<structure.factorCount).filter { !chain.contains($0) && $0 != siteFactor }
            .sorted { levelCounts[$0] != levelCounts[$1] ? levelCounts[$0] > levelCounts[$1] : $0 < $1 }
        if let s = siteFactor { rest.append(s) }
        var tail: [TailFactor] = [], td = 0
        for f in rest { tail.append(.init(factor: f, levels: levelCounts[f], offset: td)); td += levelCounts[f] * dims[f] }
        let K = chain.count
        // A row's coarser values: the chain factors' z, then its dense tail vector.
        var vOffset = [Int](repeating: 0, count: K + 1)
        for k in 0..<K { vOffset[k + 1] = vOffset[k] + dims[chain[k]] }
        let vWidth = vOffset[K] + td
        var factors: [NestedChain.Factor] = chain.enumerated().map { k, f in
            let r = dims[f], c = vWidth - vOffset[k + 1], nl = levelCounts[f]
            return .init(factor: f, levels: nl, dimension: r, parent: k + 1 < K ? [Int](repeating: 0, count: nl) : [],
                         crossWidth: c, zz: [Double](repeating: 0, count: nl * r * r),
                         zw: [Double](repeating: 0, count: nl * r * width), cross: [Double](repeating: 0, count: nl * r * c))
        }
        var ww = [Double](repeating: 0, count: width * width)
        var tt = [Double](repeating: 0, count: td * td), tw = [Double](repeating: 0, count: td * width)
        var v = [Double](repeating: 0, count: vWidth), wr = [Double](repeating: 0, count: width)
        for row in 0..<n {
            for j in 0..<width { wr[j] = w[j][row] }
            for b in 0..<width { for a in 0..<width { ww[a + b * width] += wr[a] * wr[b] } }
            for k in 0..<K { let f = chain[k]; for a in 0..<dims[f] { v[vOffset[k] + a] = z[f][a][row] } }
            for q in vOffset[K]..<vWidth { v[q] = 0 }
            for tf in tail {
                let r = dims[tf.factor], o = vOffset[K] + tf.offset + levels[tf.factor][row] * r
                for a in 0..<r { v[o + a] = z[tf.factor][a][row] }
            }
            let vt = vOffset[K]
            for b in 0..<td where v[vt + b] != 0 {
                for a in 0..<td { tt[a + b * td] += v[vt + a] * v[vt + b] }
            }
            for j in 0..<width { for a in 0..<td { tw[a + j * td] += v[vt + a] * wr[j] } }
            for k in 0..<K {
                let f = chain[k], r = dims[f], l = levels[f][row], c = factors[k].crossWidth, o = vOffset[k]
                if k + 1 < K { factors[k].parent[l] = levels[chain[k + 1]][row] }
                for b in 0..<r { for a in 0..<r { factors[k].zz[l * r * r + a + b * r] += v[o + a] * v[o + b] } }
                for j in 0..<width { for a in 0..<r { factors[k].zw[l * r * width + a + j * r] += v[o + a] * wr[j] } }
                let oc = vOffset[k + 1]
                for b in 0..<c { for a in 0..<r { factors[k].cross[l * r * c + a + b * r] += v[o + a] * v[oc + b] } }
            }
        }
        return SiteBlocks(width: width, rows: n, first: nil, siteFactor: siteFactor, tail: tail, tailDimension: td,
                          tt: tt, tw: tw, ww: ww, nested: NestedChain(factors: factors))
    }
}

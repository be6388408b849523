// The θ-free sums of one site's rows that an LMM evaluation needs:
// [X y]ᵀ[X y], Zᵀ[X y] and ZᵀZ, stored by grouping factor. The factor with
// the most levels at the site (patients, say) is kept as one small block per
// level, because nested factors keep those blocks block-diagonal; the other
// factors (wards, the site itself) form a small dense "tail".

/// θ-free aggregates of one site's rows for a linear mixed model.
public struct SiteBlocks: Sendable, Codable, Equatable {
    /// A factor block placed in the dense tail.
    public struct TailFactor: Sendable, Codable, Equatable {
        public var factor: Int
        public var levels: Int
        public var offset: Int
        public init(factor: Int, levels: Int, offset: Int) { self.factor = factor; self.levels = levels; self.offset = offset }
    }

    /// Per-level blocks of the factor with the most levels at this site.
    public struct LevelBlocks: Sendable, Codable, Equatable {
        public var factor: Int
        public var levels: Int
        public var dimension: Int
        /// levels × (r×r): Σ z zᵀ per level (column-major blocks).
        public var zz: [Double]
        /// levels × (r×width): Σ z [x y]ᵀ per level.
        public var zw: [Double]
        /// CSR-like cross products with tail columns: for level l, entries
        /// crossStart[l]..<crossStart[l+1]; entry e pairs tail column
        /// crossColumn[e] with the r values crossValues[e*r..<(e+1)*r].
        public var crossStart: [Int]
        public var crossColumn: [Int]
        public var crossValues: [Double]
    }

    /// Columns of [X y]: the fixed effects plus the response.
    public var width: Int
    /// Rows used (complete cases).
    public var rows: Int
    public var first: LevelBlocks?
    /// The factor grouped by the site itself (last in the tail), if any.
    public var siteFactor: Int?
    public var tail: [TailFactor]
    public var tailDimension: Int
    /// tailDimension² Σ z_t z_tᵀ (full, column-major).
    public var tt: [Double]
    /// tailDimension × width Σ z_t [x y]ᵀ.
    public var tw: [Double]
    /// width × width Σ [x y][x y]ᵀ.
    public var ww: [Double]
}

/// Accumulates `SiteBlocks` row by row.
public struct SiteBlocksBuilder {
    public let structure: CovarianceStructure
    public let width: Int
    private var blocks: SiteBlocks
    private let firstFactor: Int?
    private let firstDim: Int
    private let tailIndex: [Int: Int]   // factor → position in blocks.tail
    private let factorDims: [Int]
    // per first-level: tail column → entry position (built while accumulating)
    private var crossMaps: [[Int: Int]]
    private var crossCols: [[Int]]
    private var crossVals: [[Double]]

    /// `levelCounts[f]` is the number of levels factor f has at this site;
    /// `siteFactor` is the factor grouped by the site itself, if any (it has
    /// one level here and is placed last, where its conditional variance is
    /// one diagonal block of the factor).
    public init(structure: CovarianceStructure, width: Int, levelCounts: [Int], siteFactor: Int?) {
        self.structure = structure
        self.width = width
        let dims = (0..<structure.factorCount).map { structure.factorDimension($0) }
        factorDims = dims
        // The within-site factor with the most levels goes first.
        var first: Int? = nil
        for f in 0..<structure.factorCount where f != siteFactor {
            if first == nil || levelCounts[f] > levelCounts[first!] { first = f }
        }
        firstFactor = first
        firstDim = first.map { dims[$0] } ?? 0
        // Tail: other within-site factors by decreasing levels, then the site factor.
        var rest = (0..<structure.factorCount).filter { $0 != first && $0 != siteFactor }
            .sorted { levelCounts[$0] != levelCounts[$1] ? levelCounts[$0] > levelCounts[$1] : $0 < $1 }
        if let s = siteFactor { rest.append(s) }
        var tail: [SiteBlocks.TailFactor] = []
        var off = 0
        var index: [Int: Int] = [:]
        for f in rest {
            index[f] = tail.count
            tail.append(.init(factor: f, levels: levelCounts[f], offset: off))
            off += levelCounts[f] * dims[f]
        }
        tailIndex = index
        var lb: SiteBlocks.LevelBlocks? = nil
        if let f = first {
            let r = dims[f], l = levelCounts[f]
            lb = .init(factor: f, levels: l, dimension: r,
                       zz: Array(repeating: 0, count: l * r * r),
                       zw: Array(repeating: 0, count: l * r * width),
                       crossStart: [], crossColumn: [], crossValues: [])
        }
        let firstLevels = first.map { levelCounts[$0] } ?? 0
        crossMaps = Array(repeating: [:], count: firstLevels)
        crossCols = Array(repeating: [], count: firstLevels)
        crossVals = Array(repeating: [], count: firstLevels)
        blocks = SiteBlocks(width: width, rows: 0, first: lb, siteFactor: siteFactor, tail: tail, tailDimension: off,
                            tt: Array(repeating: 0, count: off * off),
                            tw: Array(repeating: 0, count: off * width),
                            ww: Array(repeating: 0, count: width * width))
    }

    /// Adds one complete row. `w` holds the fixed-effects values then the
    /// response; `levels[f]` is the row's level of factor f at this site;
    /// `z[f]` the row's random-effects values for factor f (r_f numbers).
    public mutating func add(w: [Double], levels: [Int], z: [[Double]]) {
        blocks.rows += 1
        let width = self.width
        blocks.ww.withUnsafeMutableBufferPointer { ww in
            for j in 0..<width { let wj = w[j]; if wj == 0 { continue }
                for i in 0...j { ww[i + j * width] += w[i] * wj } }
        }
        // tail columns of this row
        var tcols: [Int] = []
        var tvals: [Double] = []
        for t in blocks.tail {
            let r = factorDims[t.factor]
            let base = t.offset + levels[t.factor] * r
            for a in 0..<r { tcols.append(base + a); tvals.append(z[t.factor][a]) }
        }
        let td = blocks.tailDimension
        for (b, cb) in tcols.enumerated() {
            let vb = tvals[b]
            if vb == 0 { continue }
            for (a, ca) in tcols.enumerated() where ca <= cb { blocks.tt[ca + cb * td] += tvals[a] * vb }
            for j in 0..<width { blocks.tw[cb + j * td] += vb * w[j] }
        }
        if let f = firstFactor {
            let r = firstDim, l = levels[f], zf = z[f]
            for b in 0..<r { for a in 0...b { blocks.first!.zz[l * r * r + a + b * r] += zf[a] * zf[b] } }
            for j in 0..<width { for a in 0..<r { blocks.first!.zw[l * r * width + a + j * r] += zf[a] * w[j] } }
            for (b, cb) in tcols.enumerated() {
                let vb = tvals[b]
                let e: Int
                if let found = crossMaps[l][cb] { e = found } else {
                    e = crossCols[l].count
                    crossMaps[l][cb] = e
                    crossCols[l].append(cb)
                    crossVals[l].append(contentsOf: repeatElement(0, count: r))
                }
                for a in 0..<r { crossVals[l][e * r + a] += zf[a] * vb }
            }
        }
    }

    /// The accumulated blocks (symmetric parts mirrored, cross entries sorted).
    public func finish() -> SiteBlocks {
        var out = blocks
        let width = self.width
        for j in 0..<width { for i in 0..<j { out.ww[j + i * width] = out.ww[i + j * width] } }
        let td = out.tailDimension
        for j in 0..<td { for i in 0..<j { out.tt[j + i * td] = out.tt[i + j * td] } }
        if var lb = out.first {
            let r = lb.dimension
            for l in 0..<lb.levels {
                for b in 0..<r { for a in 0..<b { lb.zz[l * r * r + b + a * r] = lb.zz[l * r * r + a + b * r] } }
            }
            var start = [0], cols: [Int] = [], vals: [Double] = []
            for l in 0..<lb.levels {
                let order = crossCols[l].indices.sorted { crossCols[l][$0] < crossCols[l][$1] }
                for e in order {
                    cols.append(crossCols[l][e])
                    vals.append(contentsOf: crossVals[l][(e * r)..<((e + 1) * r)])
                }
                start.append(cols.count)
            }
            lb.crossStart = start; lb.crossColumn = cols; lb.crossValues = vals
            out.first = lb
        }
        return out
    }
}

extension SiteBlocks {
    /// Checks that blocks received from a site are consistent with the model
    /// (sizes, indices, finiteness), so a faulty or hostile peer cannot make
    /// the coordinator index out of bounds. Returns a reason, or nil when valid.
    public func inconsistency(structure: CovarianceStructure, width expectedWidth: Int) -> String? {
        guard width == expectedWidth else { return "blocks have \(width) columns; the model has \(expectedWidth)" }
        guard rows >= 0 else { return "negative row count" }
        var td = 0
        for t in tail {
            guard (0..<structure.factorCount).contains(t.factor), t.levels >= 0, t.levels <= 10_000_000, t.offset == td else {
                return "tail layout is inconsistent"
            }
            td += t.levels * structure.factorDimension(t.factor)
        }
        guard td == tailDimension, td <= 100_000 else { return "tail dimension is inconsistent" }
        guard tt.count == td * td, tw.count == td * width, ww.count == width * width else { return "block sizes do not match" }
        if let f = first {
            guard (0..<structure.factorCount).contains(f.factor), f.dimension == structure.factorDimension(f.factor),
                  f.levels >= 0, f.levels <= 100_000_000 else { return "per-level blocks are inconsistent" }
            let r = f.dimension
            guard f.zz.count == f.levels * r * r, f.zw.count == f.levels * r * width, f.crossStart.count == f.levels + 1,
                  f.crossStart.first == 0, f.crossStart.last == f.crossColumn.count,
                  zip(f.crossStart, f.crossStart.dropFirst()).allSatisfy({ $0 <= $1 }),
                  f.crossValues.count == f.crossColumn.count * r,
                  f.crossColumn.allSatisfy({ (0..<td).contains($0) }),
                  (f.zz + f.zw + f.crossValues).allSatisfy(\.isFinite) else { return "per-level blocks are inconsistent" }
        }
        guard (tt + tw + ww).allSatisfy(\.isFinite) else { return "blocks contain non-finite numbers" }
        if let s = siteFactor, !(0..<structure.factorCount).contains(s) { return "site factor out of range" }
        return nil
    }
}

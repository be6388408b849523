// The θ-free sums of one site's rows that an LMM evaluation needs:
// [X y]ᵀ[X y], Zᵀ[X y] and ZᵀZ, stored by grouping factor. The factor with
// the most levels at the site (patients, say) is kept as one small block per
// level, because nested factors keep those blocks block-diagonal; the other
// factors (wards, the site itself) form a small dense "tail".

/// θ-free aggregates of one site's rows for a linear mixed model.
public struct SiteBlocks: Sendable, Equatable {
    /// A factor block placed in the dense tail.
    public struct TailFactor: Sendable, Equatable {
        public var factor: Int
        public var levels: Int
        public var offset: Int
        public init(factor: Int, levels: Int, offset: Int) { self.factor = factor; self.levels = levels; self.offset = offset }
    }

    /// Per-level blocks of the factor with the most levels at this site.
    public struct LevelBlocks: Sendable, Equatable {
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
        public init(factor: Int, levels: Int, dimension: Int, zz: [Double], zw: [Double],
                    crossStart: [Int], crossColumn: [Int], crossValues: [Double]) {
            self.factor = factor; self.levels = levels; self.dimension = dimension; self.zz = zz; self.zw = zw
            self.crossStart = crossStart; self.crossColumn = crossColumn; self.crossValues = crossValues
        }
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
    /// Nested within-site factors held level by level (then `first` is nil
    /// and the tail holds the rest): SiteBlocks.nested. Never on the wire.
    public var nested: NestedChain?

    public init(width: Int, rows: Int, first: LevelBlocks?, siteFactor: Int?, tail: [TailFactor], tailDimension: Int,
                tt: [Double], tw: [Double], ww: [Double], nested: NestedChain? = nil) {
        self.width = width; self.rows = rows; self.first = first; self.siteFactor = siteFactor; self.tail = tail
        self.tailDimension = tailDimension; self.tt = tt; self.tw = tw; self.ww = ww; self.nested = nested
    }
}

/// Accumulates `SiteBlocks` row by row.
///
/// Every accumulator entry receives its rows' terms in row order, whichever
/// of `add(w:levels:z:)` and `addColumns(w:levels:z:)` is used, so the sums
/// are the same bit for bit. Neither allocates per row.
public struct SiteBlocksBuilder {
    public let structure: CovarianceStructure
    public let width: Int
    private let levelCounts: [Int]
    private let siteFactor: Int?
    private let firstFactor: Int?
    private let firstDim: Int
    private let firstLevels: Int
    private let factorDims: [Int]
    /// Offset of factor f's values within a row's concatenated z values.
    private let zOffsets: [Int]
    private let zWidth: Int
    private let tail: [SiteBlocks.TailFactor]
    private let tailDimension: Int
    /// Tail columns every row touches (Σ r over the tail factors).
    private let tailRowWidth: Int
    private var rows = 0
    /// All dense sums in one buffer: ww, tt, tw, zz, zw at the offsets below.
    private var acc: [Double]
    private let oTT: Int, oTW: Int, oZZ: Int, oZW: Int
    /// Per first-factor level: tail columns met so far (in order of first
    /// appearance) and their r sums each; `crossMaps` indexes the columns
    /// of levels that meet many (crossed factors).
    private var crossCols: [[Int]]
    private var crossVals: [[Double]]
    private var crossMaps: [[Int: Int]]
    private static let linearSearchLimit = 16

    /// `levelCounts[f]` is the number of levels factor f has at this site;
    /// `siteFactor` is the factor grouped by the site itself, if any (it has
    /// one level here and is placed last, where its conditional variance is
    /// one diagonal block of the factor).
    /// Size of the dense tail the layout would have: every factor but the
    /// within-site factor with the most levels. Sites refuse models whose
    /// tail is too large before allocating it.
    public static func tailDimension(structure: CovarianceStructure, levelCounts: [Int], siteFactor: Int?) -> Int {
        var first: Int? = nil
        for f in 0..<structure.factorCount where f != siteFactor {
            if first == nil || levelCounts[f] > levelCounts[first!] { first = f }
        }
        return (0..<structure.factorCount).filter { $0 != first }.reduce(0) { $0 + levelCounts[$1] * structure.factorDimension($1) }
    }

    public init(structure: CovarianceStructure, width: Int, levelCounts: [Int], siteFactor: Int?) {
        self.structure = structure
        self.width = width
        self.levelCounts = levelCounts
        self.siteFactor = siteFactor
        let dims = (0..<structure.factorCount).map { structure.factorDimension($0) }
        factorDims = dims
        var zo: [Int] = [], z = 0
        for d in dims { zo.append(z); z += d }
        zOffsets = zo; zWidth = z
        // The within-site factor with the most levels goes first.
        var first: Int? = nil
        for f in 0..<structure.factorCount where f != siteFactor {
            if first == nil || levelCounts[f] > levelCounts[first!] { first = f }
        }
        firstFactor = first
        firstDim = first.map { dims[$0] } ?? 0
        firstLevels = first.map { levelCounts[$0] } ?? 0
        // Tail: other within-site factors by decreasing levels, then the site factor.
        var rest = (0..<structure.factorCount).filter { $0 != first && $0 != siteFactor }
            .sorted { levelCounts[$0] != levelCounts[$1] ? levelCounts[$0] > levelCounts[$1] : $0 < $1 }
        if let s = siteFactor { rest.append(s) }
        var tail: [SiteBlocks.TailFactor] = []
        var off = 0, rowWidth = 0
        for f in rest {
            tail.append(.init(factor: f, levels: levelCounts[f], offset: off))
            off += levelCounts[f] * dims[f]
            rowWidth += dims[f]
        }
        self.tail = tail
        tailDimension = off
        tailRowWidth = rowWidth
        let r = firstDim, l = firstLevels
        oTT = width * width
        oTW = oTT + off * off
        oZZ = oTW + off * width
        oZW = oZZ + l * r * r
        acc = Array(repeating: 0, count: oZW + l * r * width)
        crossCols = Array(repeating: [], count: l)
        crossVals = Array(repeating: [], count: l)
        crossMaps = Array(repeating: [:], count: l)
    }

    /// Adds one complete row. `w` holds the fixed-effects values then the
    /// response; `levels[f]` is the row's level of factor f at this site;
    /// `z[f]` the row's random-effects values for factor f (r_f numbers).
    public mutating func add(w: [Double], levels: [Int], z: [[Double]]) {
        precondition(w.count == width && levels.count == factorDims.count && z.count == factorDims.count,
                     "a row needs width values, one level and one z vector per factor")
        var zRow = [Double](repeating: 0, count: zWidth)
        for f in 0..<factorDims.count { for a in 0..<factorDims[f] { zRow[zOffsets[f] + a] = z[f][a] } }
        w.withUnsafeBufferPointer { wp in
            levels.withUnsafeBufferPointer { lp in
                zRow.withUnsafeBufferPointer { zp in
                    addRows(count: 1, w: wp.baseAddress!, levels: lp.baseAddress!, z: zp.baseAddress!)
                }
            }
        }
    }

    /// Adds complete rows given column by column: `w[j][k]` is value j
    /// (fixed effects, then the response) of row k, `levels[f][k]` the
    /// row's level of factor f, `z[f][a][k]` its a-th random-effects value
    /// for factor f. Same sums as adding the rows one by one, in order.
    public mutating func addColumns(w: [[Double]], levels: [[Int]], z: [[[Double]]]) {
        let nf = factorDims.count
        precondition(w.count == width && levels.count == nf && z.count == nf, "one column per value, level and z")
        let n = w.first?.count ?? 0
        let chunk = 1024
        var wBuf = [Double](repeating: 0, count: chunk * width)
        var lBuf = [Int](repeating: 0, count: chunk * nf)
        var zBuf = [Double](repeating: 0, count: chunk * max(zWidth, 1))
        var start = 0
        while start < n {
            let m = min(chunk, n - start)
            // Row-major copies of this chunk.
            wBuf.withUnsafeMutableBufferPointer { wb in
                for j in 0..<width {
                    w[j].withUnsafeBufferPointer { col in
                        for k in 0..<m { wb[k * width + j] = col[start + k] }
                    }
                }
            }
            lBuf.withUnsafeMutableBufferPointer { lb in
                for f in 0..<nf {
                    levels[f].withUnsafeBufferPointer { col in
                        for k in 0..<m { lb[k * nf + f] = col[start + k] }
                    }
                }
            }
            zBuf.withUnsafeMutableBufferPointer { zb in
                for f in 0..<nf {
                    for a in 0..<factorDims[f] {
                        let o = zOffsets[f] + a, zw = zWidth
                        z[f][a].withUnsafeBufferPointer { col in
                            for k in 0..<m { zb[k * zw + o] = col[start + k] }
                        }
                    }
                }
            }
            wBuf.withUnsafeBufferPointer { wp in
                lBuf.withUnsafeBufferPointer { lp in
                    zBuf.withUnsafeBufferPointer { zp in
                        addRows(count: m, w: wp.baseAddress!, levels: lp.baseAddress!, z: zp.baseAddress!)
                    }
                }
            }
            start += m
        }
    }

    /// Adds `count` rows stored row-major: w[k·width + j], levels[k·F + f],
    /// z[k·zWidth + zOffsets[f] + a].
    private mutating func addRows(count: Int, w wAll: UnsafePointer<Double>, levels lAll: UnsafePointer<Int>,
                                  z zAll: UnsafePointer<Double>) {
        let width = self.width, nf = factorDims.count, zWidth = self.zWidth
        let td = tailDimension, tw = tailRowWidth
        let r = firstDim
        let oTT = self.oTT, oTW = self.oTW, oZZ = self.oZZ, oZW = self.oZW
        let tail = self.tail, factorDims = self.factorDims, zOffsets = self.zOffsets, firstFactor = self.firstFactor
        rows += count
        // Move the accumulators out of self while the loop holds pointers into them.
        var acc = self.acc; self.acc = []
        var crossCols = self.crossCols; self.crossCols = []
        var crossVals = self.crossVals; self.crossVals = []
        var crossMaps = self.crossMaps; self.crossMaps = []
        withUnsafeTemporaryAllocation(of: Int.self, capacity: max(tw, 1)) { tcolsBuf in
        withUnsafeTemporaryAllocation(of: Double.self, capacity: max(tw, 1)) { tvalsBuf in
            let tcols = tcolsBuf.baseAddress!, tvals = tvalsBuf.baseAddress!
            acc.withUnsafeMutableBufferPointer { accBuf in
                let A = accBuf.baseAddress!
                let ww = A, tt = A + oTT, twp = A + oTW, zz = A + oZZ, zw = A + oZW
                for k in 0..<count {
                    let w = wAll + k * width, lv = lAll + k * nf, z = zAll + k * zWidth
                    for j in 0..<width {
                        let wj = w[j]
                        if wj == 0 { continue }
                        let col = ww + j * width
                        for i in 0...j { col[i] += w[i] * wj }
                    }
                    // tail columns of this row
                    var nt = 0
                    for t in tail {
                        let f = t.factor, rf = factorDims[f]
                        let base = t.offset + lv[f] * rf, zf = z + zOffsets[f]
                        for a in 0..<rf { tcols[nt] = base + a; tvals[nt] = zf[a]; nt += 1 }
                    }
                    for b in 0..<nt {
                        let vb = tvals[b], cb = tcols[b]
                        if vb == 0 { continue }
                        for a in 0..<nt where tcols[a] <= cb { tt[tcols[a] + cb * td] += tvals[a] * vb }
                        for j in 0..<width { twp[cb + j * td] += vb * w[j] }
                    }
                    guard let f = firstFactor else { continue }
                    let l = lv[f], zf = z + zOffsets[f]
                    let zzl = zz + l * r * r
                    for b in 0..<r { for a in 0...b { zzl[a + b * r] += zf[a] * zf[b] } }
                    let zwl = zw + l * r * width
                    for j in 0..<width { for a in 0..<r { zwl[a + j * r] += zf[a] * w[j] } }
                    for b in 0..<nt {
                        let vb = tvals[b]
                        let e = Self.crossEntry(level: l, column: tcols[b], r: r, &crossCols, &crossVals, &crossMaps)
                        crossVals[l].withUnsafeMutableBufferPointer { cv in
                            let c = cv.baseAddress! + e * r
                            for a in 0..<r { c[a] += zf[a] * vb }
                        }
                    }
                }
            }
        }
        }
        self.acc = acc
        self.crossCols = crossCols
        self.crossVals = crossVals
        self.crossMaps = crossMaps
    }

    /// The entry of tail column `c` among level `l`'s cross products (created with zeros if new).
    @inline(__always)
    private static func crossEntry(level l: Int, column c: Int, r: Int, _ crossCols: inout [[Int]],
                                   _ crossVals: inout [[Double]], _ crossMaps: inout [[Int: Int]]) -> Int {
        let n = crossCols[l].count
        if n <= linearSearchLimit {
            let found: Int? = crossCols[l].withUnsafeBufferPointer { cp in
                for e in 0..<n where cp[e] == c { return e }
                return nil
            }
            if let found { return found }
        } else if let found = crossMaps[l][c] {
            return found
        }
        crossCols[l].append(c)
        crossVals[l].append(contentsOf: repeatElement(0, count: r))
        if n == linearSearchLimit {
            // This level meets many tail columns (crossed factors): index them.
            var m: [Int: Int] = [:]
            for (i, x) in crossCols[l].enumerated() { m[x] = i }
            crossMaps[l] = m
        } else if n > linearSearchLimit {
            crossMaps[l][c] = n
        }
        return n
    }

    /// The accumulated blocks (symmetric parts mirrored, cross entries sorted).
    public func finish() -> SiteBlocks {
        let width = self.width, td = tailDimension
        var ww = Array(acc[0..<oTT])
        var tt = Array(acc[oTT..<oTW])
        let tw = Array(acc[oTW..<oZZ])
        for j in 0..<width { for i in 0..<j { ww[j + i * width] = ww[i + j * width] } }
        for j in 0..<td { for i in 0..<j { tt[j + i * td] = tt[i + j * td] } }
        var lb: SiteBlocks.LevelBlocks? = nil
        if let f = firstFactor {
            let r = firstDim, levels = firstLevels
            var zz = Array(acc[oZZ..<oZW])
            let zw = Array(acc[oZW...])
            for l in 0..<levels {
                for b in 0..<r { for a in 0..<b { zz[l * r * r + b + a * r] = zz[l * r * r + a + b * r] } }
            }
            var start = [0], cols: [Int] = [], vals: [Double] = []
            start.reserveCapacity(levels + 1)
            for l in 0..<levels {
                let cc = crossCols[l], cv = crossVals[l]
                var sorted = true
                for e in cc.indices.dropFirst() where cc[e - 1] > cc[e] { sorted = false; break }
                if sorted {
                    cols.append(contentsOf: cc); vals.append(contentsOf: cv)
                } else {
                    let order = cc.indices.sorted { cc[$0] < cc[$1] }
                    for e in order {
                        cols.append(cc[e])
                        vals.append(contentsOf: cv[(e * r)..<((e + 1) * r)])
                    }
                }
                start.append(cols.count)
            }
            lb = .init(factor: f, levels: levels, dimension: r, zz: zz, zw: zw,
                       crossStart: start, crossColumn: cols, crossValues: vals)
        }
        return SiteBlocks(width: width, rows: rows, first: lb, siteFactor: siteFactor, tail: tail,
                          tailDimension: td, tt: tt, tw: tw, ww: ww)
    }
}

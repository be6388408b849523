// The Cholesky factor of M = ΛᵀZᵀWZΛ + I over one site's random effects,
// in the layout of SiteBlocks (per-level blocks of the largest within-site
// factor, then a dense tail), values only. GLMM iterations use it to solve
// for conditional modes and to take log|M|.

public struct BlockedFactor {
    public let blocks: SiteBlocks
    let structure: CovarianceStructure
    /// L₁₁: per level the lower r₁×r₁ factor F_l (levels × r₁², column-major).
    var diagonal: [Double] = []
    /// L₂₁ before Λt: per level Y_l = F_l⁻¹T₁ᵀ ZT_l, r₁ values per crossing
    /// entry, laid out like the blocks' crossValues.
    var crossing: [Double] = []
    /// A nested chain's per-level F and Y (NestedBlockedFactor.swift), and its factors' T.
    var chainFactors: [[Double]] = []
    var chainCross: [[Double]] = []
    var chainT: [Matrix] = []
    var lambdaT: Matrix          // tail Λ
    var lt: Matrix               // tail factor
    public private(set) var logDet = 0.0

    /// Number of random effects at the site.
    public var dimension: Int {
        (blocks.first.map { $0.levels * $0.dimension } ?? 0) + (blocks.nested?.factors.reduce(0) { $0 + $1.levels * $1.dimension } ?? 0)
            + blocks.tailDimension
    }

    public init(_ b: SiteBlocks, structure: CovarianceStructure, theta: [Double]) throws {
        blocks = b
        self.structure = structure
        let td = b.tailDimension
        var lam = Matrix(rows: td, cols: td)
        for tf in b.tail {
            let t = structure.factorMatrix(tf.factor, theta: theta)
            let r = t.rows
            for lvl in 0..<tf.levels { for j in 0..<r { for i in 0..<r { lam[tf.offset + lvl * r + i, tf.offset + lvl * r + j] = t[i, j] } } }
        }
        lambdaT = lam
        var mtt = Matrix(rows: td, cols: td)
        var ld = 0.0
        if let lb = b.first {
            // The LMM's per-level steps at order 0 (LevelStep), keeping F_l and Y_l.
            let r = lb.dimension
            let arena = JetArena(width: 1)
            let ops = arena.ops(ValueOnly())
            let T1 = arena.block(r, r), work = arena.block(r, r)
            let t = structure.factorMatrix(lb.factor, theta: theta)
            for k in 0..<(r * r) { T1.base[k] = t.data[k] }
            let MTT = arena.block(td, td)
            var diag = [Double](repeating: 0, count: lb.levels * r * r)
            var cross = [Double](repeating: 0, count: lb.crossValues.count)
            try diag.withUnsafeMutableBufferPointer { dp in
                try cross.withUnsafeMutableBufferPointer { cp in
                    try lb.withView(width: b.width) { v in
                        let YYs = arena.block(v.maxCrossing(levels: lb.levels), v.maxCrossing(levels: lb.levels))
                        for l in 0..<lb.levels {
                            let F = JetBlock(base: dp.baseAddress! + l * r * r, rows: r, cols: r, width: 1)
                            try LevelStep.factorDiagonal(F, zz: v.zz(l), t1: T1, work: work, ops)
                            withUnsafeMutablePointer(to: &ld) { F.addLogDiagonal(into: $0, scale: 2, ops) }
                            let c = v.crossing(l), nc = c.count
                            guard nc > 0 else { continue }
                            let Y = JetBlock(base: cp.baseAddress! + v.crossStart[l] * r, rows: r, cols: nc, width: 1)
                            LevelStep.reduce(Y, c.values, t1: T1, factor: F, ops)
                            let YY = YYs.reshaped(rows: nc, cols: nc)
                            YY.setZero()
                            YY.addProduct(Y, transposed: true, Y, ops)
                            YY.scatterAdd(into: MTT, rows: c.columns, cols: c.columns)
                        }
                    }
                }
            }
            diagonal = diag
            crossing = cross
            for k in 0..<(td * td) { mtt.data[k] = MTT.base[k] }
        } else if let chain = b.nested {
            let c = try Self.chainFactor(chain, structure: structure, theta: theta, tailDimension: td)
            chainFactors = c.factors
            chainCross = c.cross
            chainT = chain.factors.map { structure.factorMatrix($0.factor, theta: theta) }
            mtt.data = c.tailUpdate
            ld += c.logDet
        }
        let gtt = Matrix(rows: td, cols: td, data: b.tt)
        var btt = Dense.multiply(Dense.transpose(lam), Dense.multiply(gtt, lam))
        for i in 0..<td { btt[i, i] += 1 }
        // the first block's crossings enter after Λt: Y = L⁻¹T1ᵀG1t, so subtract Λtᵀ(YᵀY)Λt
        if b.first != nil || b.nested != nil {
            let corr = Dense.multiply(Dense.transpose(lam), Dense.multiply(mtt, lam))
            for k in 0..<btt.data.count { btt.data[k] -= corr.data[k] }
        }
        lt = try Dense.cholesky(btt)
        for i in 0..<td { ld += 2 * _log(lt[i, i]) }
        logDet = ld
    }

    /// F_l⁻¹ x (r₁ values).
    private func levelSolveLower(_ l: Int, _ b: ArraySlice<Double>) -> [Double] {
        let r = blocks.first!.dimension, o = l * r * r
        var x = Array(b)
        for i in 0..<r {
            var v = x[i]
            for k in 0..<i { v -= diagonal[o + i + k * r] * x[k] }
            x[i] = v / diagonal[o + i + i * r]
        }
        return x
    }

    /// F_l⁻ᵀ x (r₁ values).
    private func levelSolveLowerTranspose(_ l: Int, _ b: [Double]) -> [Double] {
        let r = blocks.first!.dimension, o = l * r * r
        var x = b
        for i in stride(from: r - 1, through: 0, by: -1) {
            var v = x[i]
            for k in (i + 1)..<max(r, i + 1) { v -= diagonal[o + k + i * r] * x[k] }
            x[i] = v / diagonal[o + i + i * r]
        }
        return x
    }

    /// Y_l[i, a]
    @inline(__always) private func crossEntry(_ lb: SiteBlocks.LevelBlocks, _ l: Int, _ i: Int, _ a: Int) -> Double {
        crossing[(lb.crossStart[l] + a) * lb.dimension + i]
    }

    /// Solves M x = c (c and x in the blocks' random-effects order).
    public func solve(_ c: [Double]) -> [Double] {
        if blocks.nested != nil { return chainSolve(c) }
        let td = blocks.tailDimension
        let n1 = dimension - td
        var x = c
        var tailRHS = Array(c[n1...])
        if let lb = blocks.first {
            let r = lb.dimension
            var yz = [Double](repeating: 0, count: td)   // Σ_l Y_lᵀ z_l
            for l in 0..<lb.levels {
                let z = levelSolveLower(l, c[(l * r)..<((l + 1) * r)])
                for i in 0..<r { x[l * r + i] = z[i] }
                let cs = lb.crossStart[l]
                for a in 0..<(lb.crossStart[l + 1] - cs) {
                    var v = 0.0
                    for i in 0..<r { v += crossEntry(lb, l, i, a) * z[i] }
                    yz[lb.crossColumn[cs + a]] += v
                }
            }
            let t = Dense.multiply(Dense.transpose(lambdaT), yz)
            for k in 0..<td { tailRHS[k] -= t[k] }
        }
        let xt = Dense.solveLowerTranspose(lt, Dense.solveLower(lt, tailRHS))
        for k in 0..<td { x[n1 + k] = xt[k] }
        if let lb = blocks.first {
            let r = lb.dimension
            let lxt = Dense.multiply(lambdaT, xt)
            for l in 0..<lb.levels {
                let cs = lb.crossStart[l]
                var rhs = Array(x[(l * r)..<((l + 1) * r)])
                for a in 0..<(lb.crossStart[l + 1] - cs) {
                    let v = lxt[lb.crossColumn[cs + a]]
                    for i in 0..<r { rhs[i] -= crossEntry(lb, l, i, a) * v }
                }
                let s = levelSolveLowerTranspose(l, rhs)
                for i in 0..<r { x[l * r + i] = s[i] }
            }
        }
        return x
    }

    /// L⁻¹x for a vector supported on one level's block of the first factor
    /// (`first`, r1 values; nil level when there is no first factor) and the
    /// tail (`tail`, dense). Returns the two parts of L⁻¹x (the other levels'
    /// parts are zero): per-row leverages and traces cost O(r1² + td²).
    public func solveLower(level l: Int?, first v1: [Double], tail vt: [Double]) -> (first: [Double], tail: [Double]) {
        precondition(blocks.nested == nil, "solveLower(level:) is for the first-factor layout; a nested chain solves with solve(_:)")
        var rhs = vt
        var y: [Double] = []
        if let l, let lb = blocks.first {
            y = levelSolveLower(l, v1[...])
            let td = blocks.tailDimension
            let cs = lb.crossStart[l], nc = lb.crossStart[l + 1] - cs
            if td > 0 && nc > 0 {
                var acc = [Double](repeating: 0, count: td)
                let r = lb.dimension
                for a in 0..<nc {
                    var v = 0.0
                    for i in 0..<r { v += crossEntry(lb, l, i, a) * y[i] }
                    acc[lb.crossColumn[cs + a]] += v
                }
                for j in 0..<td {
                    var v = 0.0
                    for i in 0..<td { v += lambdaT[i, j] * acc[i] }
                    rhs[j] -= v
                }
            }
        }
        return (y, blocks.tailDimension > 0 ? Dense.solveLower(lt, rhs) : [])
    }

    /// (LLᵀ)⁻¹ restricted to the trailing tail block of size r (the site factor).
    public func trailingInverse(size r: Int) -> Matrix {
        let td = blocks.tailDimension
        var lss = Matrix(rows: r, cols: r)
        for j in 0..<r { for i in 0..<r { lss[i, j] = lt[td - r + i, td - r + j] } }
        return Dense.inverseFromCholesky(lss)
    }
}

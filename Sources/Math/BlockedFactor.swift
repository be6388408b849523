// The Cholesky factor of M = ΛᵀZᵀWZΛ + I over one site's random effects,
// in the layout of SiteBlocks (per-level blocks of the largest within-site
// factor, then a dense tail), values only. GLMM iterations use it to solve
// for conditional modes and to take log|M|.

public struct BlockedFactor {
    public let blocks: SiteBlocks
    let structure: CovarianceStructure
    let t1: Matrix?
    var l1: [Matrix] = []        // per level: lower factor r1×r1
    var y1: [Matrix] = []        // per level: L⁻¹ T1ᵀ G1t (r1 × crossing tail columns)
    var lambdaT: Matrix          // tail Λ
    var lt: Matrix               // tail factor
    public private(set) var logDet = 0.0

    /// Number of random effects at the site.
    public var dimension: Int { (blocks.first.map { $0.levels * $0.dimension } ?? 0) + blocks.tailDimension }

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
        if let lb = b.first {
            let t = structure.factorMatrix(lb.factor, theta: theta)
            t1 = t
            let r = lb.dimension
            l1.reserveCapacity(lb.levels); y1.reserveCapacity(lb.levels)
            for l in 0..<lb.levels {
                let zz = Matrix(rows: r, cols: r, data: Array(lb.zz[(l * r * r)..<((l + 1) * r * r)]))
                var m = Dense.multiply(Dense.transpose(t), Dense.multiply(zz, t))
                for i in 0..<r { m[i, i] += 1 }
                let l1l = try Dense.cholesky(m)
                for i in 0..<r { logDet += 2 * _log(l1l[i, i]) }
                let cs = lb.crossStart[l], ce = lb.crossStart[l + 1]
                let zt = Matrix(rows: r, cols: ce - cs, data: Array(lb.crossValues[(cs * r)..<(ce * r)]))
                var y = Dense.multiply(Dense.transpose(t), zt)
                for c in 0..<y.cols {
                    let col = Dense.solveLower(l1l, (0..<r).map { y[$0, c] })
                    for i in 0..<r { y[i, c] = col[i] }
                }
                let cols = Array(lb.crossColumn[cs..<ce])
                for (a, ca) in cols.enumerated() { for (bb, cb) in cols.enumerated() {
                    var v = 0.0
                    for i in 0..<r { v += y[i, a] * y[i, bb] }
                    mtt[ca, cb] += v
                } }
                l1.append(l1l); y1.append(y)
            }
        } else { t1 = nil }
        let gtt = Matrix(rows: td, cols: td, data: b.tt)
        var btt = Dense.multiply(Dense.transpose(lam), Dense.multiply(gtt, lam))
        for i in 0..<td { btt[i, i] += 1 }
        // the first block's crossings enter after Λt: Y = L⁻¹T1ᵀG1t, so subtract Λtᵀ(YᵀY)Λt
        if b.first != nil {
            let corr = Dense.multiply(Dense.transpose(lam), Dense.multiply(mtt, lam))
            for k in 0..<btt.data.count { btt.data[k] -= corr.data[k] }
        }
        lt = try Dense.cholesky(btt)
        for i in 0..<td { logDet += 2 * _log(lt[i, i]) }
    }

    /// Solves M x = c (c and x in the blocks' random-effects order).
    public func solve(_ c: [Double]) -> [Double] {
        let td = blocks.tailDimension
        let n1 = dimension - td
        var x = c
        var tailRHS = Array(c[n1...])
        if let lb = blocks.first {
            let r = lb.dimension
            var yz = [Double](repeating: 0, count: td)   // Σ_l Y_lᵀ z_l
            for l in 0..<lb.levels {
                let z = Dense.solveLower(l1[l], Array(c[(l * r)..<((l + 1) * r)]))
                for i in 0..<r { x[l * r + i] = z[i] }
                let cs = lb.crossStart[l]
                for a in 0..<y1[l].cols {
                    var v = 0.0
                    for i in 0..<r { v += y1[l][i, a] * z[i] }
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
                for a in 0..<y1[l].cols {
                    let v = lxt[lb.crossColumn[cs + a]]
                    for i in 0..<r { rhs[i] -= y1[l][i, a] * v }
                }
                let s = Dense.solveLowerTranspose(l1[l], rhs)
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
        var rhs = vt
        var y: [Double] = []
        if let l, let lb = blocks.first {
            y = Dense.solveLower(l1[l], v1)
            let td = blocks.tailDimension
            if td > 0 && y1[l].cols > 0 {
                var acc = [Double](repeating: 0, count: td)
                let cs = lb.crossStart[l], r = lb.dimension
                for a in 0..<y1[l].cols {
                    var v = 0.0
                    for i in 0..<r { v += y1[l][i, a] * y[i] }
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

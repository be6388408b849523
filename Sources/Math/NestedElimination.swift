// Eliminates a site's nested factors level by level (DESIGN.md: "order the
// terms by number of levels and factor L_k blockwise"). With the random
// effects ordered finest factor first, eliminating one level l of factor k
// (F Fᵀ = T_kᵀ K_l T_k + I, Y = F⁻¹T_kᵀ K_l,coarser, XW = F⁻¹T_kᵀ K_l,w)
// changes only the blocks of l's ancestors, one level per coarser factor,
// and the dense tail: K ← K − YᵀY, K_w ← K_w − YᵀXW. So after all of factor
// k's levels, factor k+1's Schur complement is still block diagonal by its
// levels and is eliminated the same way. The cost is O(levels · r²·C) per
// factor (C: the coarser effects a level meets), never O(levels³).
// Every block is a jet in all of θ: the coarser blocks' values depend on the
// finer factors' θ. What is left is the dense tail's update (as the first
// factor's LevelSums in LMMSite.factorize).

enum NestedElimination {
    /// The chain's sums to subtract from the dense tail (tt, tw), from
    /// [X y]ᵀ[X y] (ww) and its log-determinant, jets in `space` (all of θ).
    static func eliminate(_ chain: NestedChain, structure: CovarianceStructure, theta: [Double], width: Int,
                          tailDimension td: Int, space: JetSpace) throws -> LMMSite.LevelSums {
        if space.parameters == 1 && space.order == 2 {
            return try eliminate(chain, structure: structure, theta: theta, width: width, tailDimension: td, space: space,
                                 kernel: OneParameterJet())
        }
        return try eliminate(chain, structure: structure, theta: theta, width: width, tailDimension: td, space: space,
                             kernel: JetKernel(space))
    }

    static func eliminate<Kn: JetArithmetic>(_ chain: NestedChain, structure: CovarianceStructure, theta: [Double], width: Int,
                                             tailDimension td: Int, space: JetSpace, kernel: Kn) throws -> LMMSite.LevelSums {
        let w = space.width, all = Array(0..<space.parameters)
        let arena = JetArena(width: w)
        let ops = arena.ops(kernel)
        let fs = chain.factors
        let T = fs.map { arena.block(copying: structure.factorJet($0.factor, theta: theta, space: space, parameterMap: all)) }
        // K: each factor's sums as jets (values first), updated by the finer factors' eliminations.
        func jets(_ values: [Double]) -> UnsafeMutablePointer<Double> {
            let p = arena.doubles(values.count * w)
            for (i, x) in values.enumerated() { p[i * w] = x }
            return p
        }
        let sums = Sums(zz: fs.map { jets($0.zz) }, zw: fs.map { jets($0.zw) }, cross: fs.map { jets($0.cross) })
        let r = try eliminate(fs, sums: sums, factorJets: T, width: width, tailDimension: td, arena: arena, ops: ops)
        return LMMSite.LevelSums(tt: JetMatrix(r.tt, space: space), tw: JetMatrix(r.tw, space: space),
                                 ww: JetMatrix(r.ww, space: space), logDet: ScalarJet(r.logDet, space: space))
    }

    /// Per chain factor, its levels' sums as jets (K, K_w, K_coarser in
    /// NestedChain.Factor's layouts, `arena.width` numbers an entry); the
    /// elimination overwrites the coarser factors' sums.
    struct Sums {
        var zz: [UnsafeMutablePointer<Double>]
        var zw: [UnsafeMutablePointer<Double>]
        var cross: [UnsafeMutablePointer<Double>]
    }

    /// The elimination on jet-valued sums (the LMM's are θ-free values; a
    /// GLMM's depend on (θ, β) through the weights). `factors` supplies the
    /// chain's shape (levels, dimension, parent, crossWidth) only, and
    /// `factorJets` each chain factor's T as a jet. Returns the sums to
    /// subtract from the tail (tt, tw), those to add to ww, and log|L|².
    /// With `keep` (per factor: levels·r² and levels·r·crossWidth jets), each
    /// level's F and Y are copied there, for solves with the factor.
    static func eliminate<Kn: JetArithmetic>(_ fs: [NestedChain.Factor], sums: Sums, factorJets T: [JetBlock], width: Int,
                                             tailDimension td: Int, arena: JetArena, ops: JetOps<Kn>,
                                             keep: [(factor: UnsafeMutablePointer<Double>, cross: UnsafeMutablePointer<Double>)]? = nil) throws -> (tt: JetBlock, tw: JetBlock, ww: JetBlock, logDet: UnsafeMutablePointer<Double>) {
        let w = arena.width
        let kzz = sums.zz, kzw = sums.zw, kc = sums.cross
        let TT = arena.block(td, td), TW = arena.block(td, width), WW = arena.block(width, width)
        let logDet = arena.scalar()
        for (k, f) in fs.enumerated() {
            let r = f.dimension, c = f.crossWidth
            let work = arena.block(r, r), F = arena.block(r, r), XW = arena.block(r, width), Y = arena.block(r, c)
            let YY = arena.block(c, c), YW = arena.block(c, width)
            for l in 0..<f.levels {
                let K = JetBlock(base: kzz[k] + l * r * r * w, rows: r, cols: r, width: w)
                let Kw = JetBlock(base: kzw[k] + l * r * width * w, rows: r, cols: width, width: w)
                let Kc = JetBlock(base: kc[k] + l * r * c * w, rows: r, cols: c, width: w)
                // F Fᵀ = T_kᵀ K T_k + I;  logDet += log|F|²
                work.setZero()
                work.addProduct(K, T[k], ops)
                F.setZero()
                F.addProduct(T[k], transposed: true, work, ops)
                F.addToDiagonal(1)
                try F.cholesky(ops)
                F.addLogDiagonal(into: logDet, scale: 2, ops)
                if let keep { (keep[k].factor + l * r * r * w).update(from: F.base, count: r * r * w) }
                // XW = F⁻¹ T_kᵀ K_w;  ww += XWᵀXW
                XW.setZero()
                XW.addProduct(T[k], transposed: true, Kw, ops)
                XW.solveLower(F, ops)
                WW.addProduct(XW, transposed: true, XW, ops)
                guard c > 0 else { continue }
                // Y = F⁻¹ T_kᵀ K_coarser;  the coarser blocks lose YᵀY and YᵀXW
                Y.setZero()
                Y.addProduct(T[k], transposed: true, Kc, ops)
                Y.solveLower(F, ops)
                if let keep { (keep[k].cross + l * r * c * w).update(from: Y.base, count: r * c * w) }
                YY.setZero()
                YY.addProduct(Y, transposed: true, Y, ops)
                YW.setZero()
                YW.addProduct(Y, transposed: true, XW, ops)
                var a = l, o = 0
                for s in (k + 1)..<fs.count {
                    a = fs[s - 1].parent[a]
                    let rs = fs[s].dimension, cs = fs[s].crossWidth
                    subtract(YY, rows: o, cols: o, into: kzz[s] + a * rs * rs * w, rs, rs, w)
                    subtract(YY, rows: o, cols: o + rs, into: kc[s] + a * rs * cs * w, rs, cs, w)
                    subtract(YW, rows: o, cols: 0, into: kzw[s] + a * rs * width * w, rs, width, w)
                    o += rs
                }
                // What is left of Y meets the dense tail.
                add(YY, rows: o, cols: o, into: TT.base, td, td, w)
                add(YW, rows: o, cols: 0, into: TW.base, td, width, w)
            }
        }
        return (TT, TW, WW, logDet)
    }

    /// dst (m×n) −= src[i0..<i0+m, j0..<j0+n].
    @inline(__always)
    private static func subtract(_ src: JetBlock, rows i0: Int, cols j0: Int, into dst: UnsafeMutablePointer<Double>,
                                 _ m: Int, _ n: Int, _ w: Int) {
        for j in 0..<n { for i in 0..<m {
            let s = src.entry(i0 + i, j0 + j), d = dst + (i + j * m) * w
            for q in 0..<w { d[q] -= s[q] }
        } }
    }

    /// dst (m×n) += src[i0..<i0+m, j0..<j0+n].
    @inline(__always)
    private static func add(_ src: JetBlock, rows i0: Int, cols j0: Int, into dst: UnsafeMutablePointer<Double>,
                            _ m: Int, _ n: Int, _ w: Int) {
        for j in 0..<n { for i in 0..<m {
            let s = src.entry(i0 + i, j0 + j), d = dst + (i + j * m) * w
            for q in 0..<w { d[q] += s[q] }
        } }
    }
}

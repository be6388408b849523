// One site's contribution to the profiled (RE)ML criterion of a linear mixed
// model, as in DESIGN.md: with L Lᵀ = ΛᵀZᵀZΛ + I over the site's random
// effects, the site returns
//     S = [X y]ᵀ[X y] − Cᵀ(LLᵀ)⁻¹C,  C = ΛᵀZᵀ[X y]   (= [[A, g], [gᵀ, s]])
//     ℓ = log|L|²
// with exact first and second derivatives in θ. Summed over sites they give
// the pooled fit's criterion exactly.

/// A site's (A, g, s, ℓ) at one θ, as jets in θ.
public struct LMMContribution: Sendable, Equatable {
    /// [[A, g], [gᵀ, s]] with derivatives.
    public var schur: JetMatrix
    /// log|L|² with derivatives.
    public var logDet: ScalarJet
    /// Rows used.
    public var rows: Int
    public init(schur: JetMatrix, logDet: ScalarJet, rows: Int) { self.schur = schur; self.logDet = logDet; self.rows = rows }
}

/// The site-level random effects of one site after the fit.
public struct SiteLevelEffects: Sendable, Equatable {
    /// b = Λu for the factor grouped by the site (r values).
    public var effects: [Double]
    /// Conditional covariance σ² Λ (LLᵀ)⁻¹ Λᵀ of those effects (r×r).
    public var conditionalCovariance: Matrix
}

public enum LMMSite {
    /// Evaluates the site's contribution at θ with derivatives up to `order`.
    public static func evaluate(_ b: SiteBlocks, structure: CovarianceStructure,
                                theta: [Double], order: Int) throws -> LMMContribution {
        try factorize(b, structure: structure, theta: theta, order: order).contribution
    }

    /// The conditional modes and conditional covariance of the site-level
    /// effects, given the final θ, β and σ (nil when no term is grouped by site).
    /// With crossed factors, `beta` starts with the crossed effects b_G at
    /// the site's leading columns and `crossedCovariance` is P = σ⁻² Cov(b_G)
    /// there: the site's effects are then its mode given b_G and β, and their
    /// conditional covariance gains L_ss⁻ᵀ X_G P X_Gᵀ L_ss⁻¹ (the block of the
    /// joint inverse, as lme4's condVar takes it over all factors).
    /// `crossedTerm`, when given instead of `crossedCovariance`, is that
    /// L_ss⁻ᵀ X_G P X_Gᵀ L_ss⁻¹ already formed (`crossedCovarianceTerm`), r × r.
    /// `crossedProduct`, instead of either, is X_G P X_Gᵀ (r × r), whose
    /// term the site forms with its own L_ss.
    public static func siteEffects(_ b: SiteBlocks, structure: CovarianceStructure, theta: [Double],
                                   beta: [Double], sigma: Double, crossedCovariance: Matrix? = nil,
                                   crossedTerm: Matrix? = nil, crossedProduct: Matrix? = nil) throws -> SiteLevelEffects? {
        guard let sf = b.siteFactor, let tf = b.tail.last, tf.factor == sf else { return nil }
        let fz = try factorize(b, structure: structure, theta: theta, order: 0)
        let lt = fz.tailFactor.valueMatrix
        let xt = fz.tailCross.valueMatrix
        let td = b.tailDimension, p = b.width - 1
        var rhs = [Double](repeating: 0, count: td)
        for i in 0..<td {
            var v = xt[i, p]
            for j in 0..<p { v -= xt[i, j] * beta[j] }
            rhs[i] = v
        }
        let u = Dense.solveLowerTranspose(lt, rhs)
        let r = structure.factorDimension(sf)
        let t = structure.factorMatrix(sf, theta: theta)
        let o = tf.offset
        var effects = [Double](repeating: 0, count: r)
        for i in 0..<r { for k in 0..<r { effects[i] += t[i, k] * u[o + k] } }
        // (L_ss L_ssᵀ)⁻¹ for the trailing diagonal block of the tail factor.
        var lss = Matrix(rows: r, cols: r)
        for j in 0..<r { for i in 0..<r { lss[i, j] = lt[o + i, o + j] } }
        var inv = Dense.inverseFromCholesky(lss)
        let fromProduct = crossedProduct.map { product -> Matrix in
            // L_ss⁻ᵀ M L_ss⁻¹ for symmetric M: N = L_ss⁻ᵀ M, then (L_ss⁻ᵀ Nᵀ)ᵀ.
            var n = Matrix(rows: r, cols: r), out = Matrix(rows: r, cols: r)
            for j in 0..<r { let c = Dense.solveLowerTranspose(lss, (0..<r).map { product[$0, j] }); for i in 0..<r { n[i, j] = c[i] } }
            for j in 0..<r { let c = Dense.solveLowerTranspose(lss, (0..<r).map { n[j, $0] }); for i in 0..<r { out[j, i] = c[i] } }
            return out
        }
        if let extra = try crossedTerm ?? fromProduct ?? crossedCovariance.map({ try crossedCovarianceTerm(lss: lss, cross: xt, offset: o, crossedCovariance: $0) }) {
            precondition(extra.rows == r && extra.cols == r, "the crossed term is r × r")
            for k in 0..<inv.data.count { inv.data[k] += extra.data[k] }
        }
        var cov = Dense.multiply(Dense.multiply(t, inv), Dense.transpose(t))
        for k in 0..<cov.data.count { cov.data[k] *= sigma * sigma }
        return SiteLevelEffects(effects: effects, conditionalCovariance: cov)
    }

    /// What the crossed effects add to the site effects' conditional
    /// covariance (before T and σ²): L_ss⁻ᵀ X_G P X_Gᵀ L_ss⁻¹, r × r, for
    /// P = σ⁻² Cov(b_G) at the site's leading columns. A coordinator that
    /// holds the site's θ-free sums sends this instead of P (q_k² numbers).
    public static func crossedCovarianceTerm(_ b: SiteBlocks, structure: CovarianceStructure, theta: [Double],
                                             crossedCovariance pg: Matrix) throws -> Matrix? {
        guard let sf = b.siteFactor, let tf = b.tail.last, tf.factor == sf else { return nil }
        let fz = try factorize(b, structure: structure, theta: theta, order: 0)
        let lt = fz.tailFactor.valueMatrix, r = structure.factorDimension(sf), o = tf.offset
        var lss = Matrix(rows: r, cols: r)
        for j in 0..<r { for i in 0..<r { lss[i, j] = lt[o + i, o + j] } }
        return try crossedCovarianceTerm(lss: lss, cross: fz.tailCross.valueMatrix, offset: o, crossedCovariance: pg)
    }

    static func crossedCovarianceTerm(lss: Matrix, cross xt: Matrix, offset o: Int, crossedCovariance pg: Matrix) throws -> Matrix {
        let r = lss.rows, q = pg.rows
        var ms = Matrix(rows: r, cols: q)
        for c in 0..<q {
            let m = Dense.solveLowerTranspose(lss, (0..<r).map { xt[o + $0, c] })
            for i in 0..<r { ms[i, c] = m[i] }
        }
        return Dense.multiply(Dense.multiply(ms, pg), Dense.transpose(ms))
    }

    /// The site's own (no-pooling) estimate of its site-level effects given
    /// β̂, (ZᵀZ)⁻¹Zᵀ(y − Xβ̂): what the site would conclude alone. Available
    /// when every term is grouped by site and ZᵀZ is invertible.
    public static func ownEstimate(_ b: SiteBlocks, beta: [Double]) -> [Double]? {
        guard b.first == nil, b.nested == nil, b.tail.count == 1, b.siteFactor == b.tail[0].factor else { return nil }
        let td = b.tailDimension, p = b.width - 1
        var rhs = [Double](repeating: 0, count: td)
        for i in 0..<td {
            rhs[i] = b.tw[i + p * td]
            for j in 0..<p { rhs[i] -= b.tw[i + j * td] * beta[j] }
        }
        return try? Dense.solveSPD(Matrix(rows: td, cols: td, data: b.tt), rhs)
    }

    struct Factorization {
        var contribution: LMMContribution
        var tailFactor: JetMatrix
        var tailCross: JetMatrix
        /// With `keepLevelRows`: each first-factor level's rows of
        /// L_ss⁻¹ΛᵀZᵀ[X y] (r × width, in that factor's own θ), in level order.
        var levelRows: [JetMatrix] = []
        /// The first factor's θ indices (what `levelRows` are jets in).
        var levelMap: [Int] = []
    }

    static func factorize(_ b: SiteBlocks, structure: CovarianceStructure,
                          theta: [Double], order: Int, keepLevelRows: Bool = false) throws -> Factorization {
        let m = structure.thetaCount
        let global = JetSpace(parameters: m, order: order)
        let width = b.width, td = b.tailDimension
        var logDet = ScalarJet(space: global)

        // 1. The per-level blocks of the first factor, in its own θ only.
        var mtt: JetMatrix? = nil, mtw: JetMatrix? = nil, mww: JetMatrix? = nil
        var localMap: [Int] = []
        var levelRows: [JetMatrix] = []
        if let lb = b.first {
            localMap = structure.factorParameters(lb.factor)
            let local = JetSpace(parameters: localMap.count, order: order)
            let t1 = structure.factorJet(lb.factor, theta: theta, space: local, parameterMap: localMap)
            let sums = try accumulateLevels(lb, t1: t1, width: width, tailDimension: td, keepRows: keepLevelRows)
            mtt = sums.tt; mtw = sums.tw; mww = sums.ww; levelRows = sums.rows
            logDet.addLifted(sums.logDet, map: localMap)
        } else if let chain = b.nested {
            // Nested factors, eliminated level by level in all of θ (NestedElimination).
            localMap = Array(0..<m)
            let sums = try NestedElimination.eliminate(chain, structure: structure, theta: theta, width: width,
                                                       tailDimension: td, space: global)
            mtt = sums.tt; mtw = sums.tw; mww = sums.ww
            logDet.addLifted(sums.logDet, map: localMap)
        }

        // 2. The dense tail, in all of θ.
        let all = Array(0..<m)
        var lambda = JetMatrix(rows: td, cols: td, space: global)
        for tf in b.tail {
            let tj = structure.factorJet(tf.factor, theta: theta, space: global, parameterMap: all)
            let r = structure.factorDimension(tf.factor)
            for lvl in 0..<tf.levels {
                let o = tf.offset + lvl * r
                for j in 0..<r { for i in 0..<r {
                    let src = tj.offset(i, j), dst = lambda.offset(o + i, o + j)
                    for q in 0..<global.width { lambda.storage[dst + q] = tj.storage[src + q] }
                } }
            }
        }
        var ktt = JetMatrix(constant: Matrix(rows: td, cols: td, data: b.tt), space: global)
        var ktw = JetMatrix(constant: Matrix(rows: td, cols: width, data: b.tw), space: global)
        // With kept level rows (LMMSite.lowRank) the Schur complement is not formed.
        var sww = keepLevelRows ? JetMatrix(rows: 0, cols: 0, space: global)
                                : JetMatrix(constant: Matrix(rows: width, cols: width, data: b.ww), space: global)
        if let mtt { ktt.addLifted(mtt, map: localMap, sign: -1) }
        if let mtw { ktw.addLifted(mtw, map: localMap, sign: -1) }
        if let mww, !keepLevelRows { sww.addLifted(mww, map: localMap, sign: -1) }

        var tmp = JetMatrix(rows: td, cols: td, space: global)
        tmp.addProduct(ktt, lambda)
        var btt = JetMatrix(rows: td, cols: td, space: global)
        btt.addProduct(lambda, transposeA: true, tmp)
        btt.addToDiagonal(1)
        var btw = JetMatrix(rows: td, cols: width, space: global)
        btw.addProduct(lambda, transposeA: true, ktw)

        try btt.choleskyInPlace()
        btw.solveLowerInPlace(btt)
        if !keepLevelRows { sww.addProduct(btw, transposeA: true, btw, sign: -1) }
        let tl = btt.sumLogDiagonal(scale: 2)
        for q in 0..<global.width { logDet.storage[q] += tl.storage[q] }
        return Factorization(contribution: LMMContribution(schur: sww, logDet: logDet, rows: b.rows),
                             tailFactor: btt, tailCross: btw, levelRows: levelRows, levelMap: localMap)
    }

    /// The first factor's sums, in its local θ: see `accumulateLevels`.
    struct LevelSums {
        var tt: JetMatrix
        var tw: JetMatrix
        var ww: JetMatrix
        var logDet: ScalarJet
        /// XW per level, when asked for (`keepRows`).
        var rows: [JetMatrix] = []
    }

    /// The first factor's levels, one after another, in its local θ: for each
    /// level l with F Fᵀ = T₁ᵀ ZZ_l T₁ + I (F lower triangular),
    ///     logDet += log|F|²,  ww += XWᵀXW  with XW = F⁻¹ T₁ᵀ ZW_l,
    /// and for the tail columns C_l the level meets, with Y = F⁻¹ T₁ᵀ ZT_l,
    ///     tt[C_l, C_l] += YᵀY,  tw[C_l, :] += YᵀXW.
    /// Every level reuses one workspace.
    static func accumulateLevels(_ lb: SiteBlocks.LevelBlocks, t1: JetMatrix, width: Int, tailDimension td: Int,
                                 keepRows: Bool = false) throws -> LevelSums {
        let local = t1.space
        if local.parameters == 1 && local.order == 2 {
            return try accumulateLevels(lb, t1: t1, width: width, tailDimension: td, kernel: OneParameterJet(), keepRows: keepRows)
        }
        if local.parameters == 3 && local.order == 2 {
            return try accumulateLevels(lb, t1: t1, width: width, tailDimension: td, kernel: ThreeParameterJet(), keepRows: keepRows)
        }
        return try accumulateLevels(lb, t1: t1, width: width, tailDimension: td, kernel: JetKernel(local), keepRows: keepRows)
    }

    @inline(__always)
    static func accumulateLevels<K: JetArithmetic>(_ lb: SiteBlocks.LevelBlocks, t1: JetMatrix, width: Int, tailDimension td: Int,
                                                   kernel: K, keepRows: Bool = false) throws -> LevelSums {
        let space = t1.space, w = space.width, r = lb.dimension
        let arena = JetArena(width: w)
        let ops = arena.ops(kernel)
        let T1 = arena.block(copying: t1)
        let TT = arena.block(td, td), TW = arena.block(td, width), WW = arena.block(width, width)
        let logDet = arena.scalar(), levelLogDet = arena.scalar()
        var kept: [JetMatrix] = []
        try lb.withView(width: width) { v in
            let ncMax = v.maxCrossing(levels: lb.levels)
            let work = arena.block(r, r), F = arena.block(r, r), XW = arena.block(r, width)
            let Ys = arena.block(r, ncMax), YYs = arena.block(ncMax, ncMax), YWs = arena.block(ncMax, width)
            for l in 0..<lb.levels {
                // F = L₁₁'s block: F Fᵀ = T₁ᵀ ZZ T₁ + I;  logDet += log|F|²
                try LevelStep.factorDiagonal(F, zz: v.zz(l), t1: T1, work: work, ops)
                levelLogDet.update(repeating: 0, count: w)
                F.addLogDiagonal(into: levelLogDet, scale: 2, ops)
                for q in 0..<w { logDet[q] += levelLogDet[q] }

                // XW = F⁻¹ T₁ᵀ ZW;  ww += XWᵀ XW
                LevelStep.reduce(XW, v.zw(l), t1: T1, factor: F, ops)
                // Kept rows are V_kᵀ's (LMMSite.lowRank), which needs no ww.
                if keepRows { kept.append(JetMatrix(XW, space: space)) } else { WW.addProduct(XW, transposed: true, XW, ops) }
                let cross = v.crossing(l), nc = cross.count
                guard nc > 0 else { continue }

                // Y = F⁻¹ T₁ᵀ ZT;  tt[C, C] += YᵀY;  tw[C, :] += YᵀXW
                let Y = Ys.reshaped(rows: r, cols: nc)
                let YY = YYs.reshaped(rows: nc, cols: nc), YW = YWs.reshaped(rows: nc, cols: width)
                LevelStep.reduce(Y, cross.values, t1: T1, factor: F, ops)
                YY.setZero()
                YY.addProduct(Y, transposed: true, Y, ops)
                YW.setZero()
                YW.addProduct(Y, transposed: true, XW, ops)
                YY.scatterAdd(into: TT, rows: cross.columns, cols: cross.columns)
                YW.scatterAdd(into: TW, rows: cross.columns, cols: nil)
            }
        }
        return LevelSums(tt: JetMatrix(TT, space: space), tw: JetMatrix(TW, space: space), ww: JetMatrix(WW, space: space),
                         logDet: ScalarJet(logDet, space: space), rows: kept)
    }
}

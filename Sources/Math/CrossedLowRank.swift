// A site's Schur complement onto [Z_G X y] as a θ-free part minus a low-rank
// part (DESIGN.md, "Crossed factors"): with the site's own effects u_L
// (L_ss L_ssᵀ = Λ_LᵀZ_LᵀZ_LΛ_L + I) eliminated,
//     S_k = A_k − V_k V_kᵀ,  A_k = [Z_G X y]ᵀ[Z_G X y]  (θ-free),
//     V_kᵀ = L_ss⁻¹ Λ_Lᵀ Z_Lᵀ [Z_G X y]                (m_k × width),
// where m_k is the number of the site's own effects (a ward intercept per
// ward and the site's own, say). A_k is what the site-grouped path's sums
// already hold (SiteBlocks.ww); V_kᵀ is the site factorization's own cross
// rows (LMMSite.factorize), with jets in the site's θ. When m_k is far
// smaller than the site's crossed levels, V_k is far fewer numbers than S_k,
// and the coordinator can eliminate the crossed levels one by one with the
// site's effects as columns of their own (CrossedLevelElimination, `virtual`).

/// V_kᵀ and log|L_ss|² at one θ, as jets in the site's local θ.
public struct LMMLowRankContribution: Sendable, Equatable {
    /// V_kᵀ: one row per own effect of the site (m_k × width).
    public var factor: JetMatrix
    /// log|L_ss|² with derivatives.
    public var logDet: ScalarJet
    /// Rows used.
    public var rows: Int
    public init(factor: JetMatrix, logDet: ScalarJet, rows: Int) { self.factor = factor; self.logDet = logDet; self.rows = rows }

    /// The same at order 0 (values only): what a check of the product reads.
    public var values: LMMLowRankContribution {
        let space = JetSpace(parameters: factor.space.parameters, order: 0), jw = factor.space.width
        var f = JetMatrix(rows: factor.rows, cols: factor.cols, space: space)
        for k in 0..<(factor.rows * factor.cols) { f.storage[k] = factor.storage[k * jw] }
        return LMMLowRankContribution(factor: f, logDet: ScalarJet(space: space, value: logDet.value), rows: rows)
    }

    /// A_k − V_k V_kᵀ: the dense contribution the same rows give (for checks).
    public func schur(sums ww: [Double]) -> LMMContribution {
        let w = factor.cols
        var s = JetMatrix(constant: Matrix(rows: w, cols: w, data: ww), space: factor.space)
        s.addProduct(factor, transposeA: true, factor, sign: -1)
        return LMMContribution(schur: s, logDet: logDet, rows: rows)
    }
}

extension LMMSite {
    /// The site's V_kᵀ and log|L_ss|² at θ (its local model's), or nil when
    /// its within-site factors are held as a nested chain (NestedElimination
    /// keeps no per-level rows).
    public static func lowRank(_ b: SiteBlocks, structure: CovarianceStructure, theta: [Double],
                               order: Int) throws -> LMMLowRankContribution? {
        guard b.nested == nil else { return nil }
        let fz = try factorize(b, structure: structure, theta: theta, order: order, keepLevelRows: true)
        let space = fz.contribution.logDet.space, jw = space.width
        let r = b.first?.dimension ?? 0, td = b.tailDimension, width = b.width
        let m = fz.levelRows.count * r + td
        var v = JetMatrix(rows: m, cols: width, space: space)
        for (l, rows) in fz.levelRows.enumerated() {
            let lifted = rows.lifted(to: space, map: fz.levelMap)
            for j in 0..<width { for i in 0..<r {
                let s = lifted.offset(i, j), d = v.offset(l * r + i, j)
                for x in 0..<jw { v.storage[d + x] = lifted.storage[s + x] }
            } }
        }
        let tail = fz.tailCross, o = fz.levelRows.count * r
        for j in 0..<width { for i in 0..<td {
            let s = tail.offset(i, j), d = v.offset(o + i, j)
            for x in 0..<jw { v.storage[d + x] = tail.storage[s + x] }
        } }
        return LMMLowRankContribution(factor: v, logDet: fz.contribution.logDet, rows: b.rows)
    }
}

extension JetMatrix {
    /// Columns `cols` ← columns `cols` · t (t square, cols.count wide).
    mutating func scaleColumns(_ cols: Range<Int>, by t: JetMatrix, kernel: JetKernel) {
        let r = cols.count, jw = space.width
        var tmp = [Double](repeating: 0, count: r * jw)
        storage.withUnsafeMutableBufferPointer { sp in
            t.storage.withUnsafeBufferPointer { tp in
                tmp.withUnsafeMutableBufferPointer { wp in
                    let S = sp.baseAddress!, T = tp.baseAddress!, W = wp.baseAddress!
                    for i in 0..<rows {
                        for x in 0..<(r * jw) { W[x] = 0 }
                        for b in 0..<r { for a in 0..<r {
                            kernel.mulAdd(W + b * jw, S + (i + (cols.lowerBound + a) * rows) * jw, T + (a + b * r) * jw, 1)
                        } }
                        for b in 0..<r { for x in 0..<jw { S[(i + (cols.lowerBound + b) * rows) * jw + x] = W[b * jw + x] } }
                    }
                }
            }
        }
    }

    /// Adds `m`'s entry at `from` to this matrix at `at` and at its mirror.
    mutating func add(_ m: JetMatrix, from: (Int, Int), symmetricAt at: (Int, Int)) {
        let s = m.offset(from.0, from.1), d1 = offset(at.0, at.1), d2 = offset(at.1, at.0)
        for x in 0..<space.width { storage[d1 + x] += m.storage[s + x]; storage[d2 + x] += m.storage[s + x] }
    }
}

extension CrossedLevelElimination {
    /// `cheaper` for sites with within-site terms: their own effects
    /// (`ownEffects[k]`, m_k) become R's columns, coupled to each crossed
    /// level they share rows with; the dense path factors all q_G + w.
    public static func cheaper(ownEffects: [Int], layout: CrossedLayout, structure: CovarianceStructure, width w: Int) -> Bool {
        guard !layout.factors.isEmpty else { return false }
        let f = layout.factors.max { $0.levels * structure.factorDimension($0.factor) < $1.levels * structure.factorDimension($1.factor) }!
        let q1 = Double(f.levels * structure.factorDimension(f.factor)), q = Double(layout.dimension), w = Double(w)
        let own = Double(ownEffects.reduce(0, +))
        let sitesPerLevel = Double(layout.siteColumns.reduce(0) { $0 + $1.count }) / max(1, q)
        let coupling = sitesPerLevel * own / Double(max(1, ownEffects.count)) + (q - q1) + w
        let rest = q - q1 + own + w
        let byLevel = q1 * coupling * coupling + rest * rest * rest / 3
        let dense = (q + w) * (q + w) * (q + w) / 3
        return byLevel < dense
    }
}

extension CrossedLevelElimination {
    /// C[cols, cols] −= VᵀV for one level (V: r × cols, column-major jets),
    /// upper triangle only (C's lower one is mirrored once after all levels).
    static func subtractGramUpper(_ c: inout [Double], _ v: [Double], columns: [Int], r: Int, n: Int, space: JetSpace) {
        let general = JetKernel(space)
        if space.order == 2 && space.parameters == 1 { subtractGramUpper(&c, v, columns: columns, r: r, n: n, w: space.width, kernel: OneParameterJet()) }
        else if space.order == 2 && space.parameters == 2 { subtractGramUpper(&c, v, columns: columns, r: r, n: n, w: space.width, kernel: TwoParameterJet(general)) }
        else if space.order == 2 && space.parameters == 3 { subtractGramUpper(&c, v, columns: columns, r: r, n: n, w: space.width, kernel: ThreeParameterJet()) }
        else { subtractGramUpper(&c, v, columns: columns, r: r, n: n, w: space.width, kernel: general) }
    }

    @inline(__always)
    static func subtractGramUpper<K: JetArithmetic>(_ c: inout [Double], _ v: [Double], columns: [Int], r: Int, n: Int, w: Int, kernel: K) {
        v.withUnsafeBufferPointer { vp in
            c.withUnsafeMutableBufferPointer { cp in
                let V = vp.baseAddress!, C = cp.baseAddress!
                for (bj, j) in columns.enumerated() {
                    for ai in 0...bj {
                        let dst = C + (columns[ai] + j * n) * w
                        for a in 0..<r { kernel.mulAdd(dst, V + (a + ai * r) * w, V + (a + bj * r) * w, -1) }
                    }
                }
            }
        }
    }

    /// C's lower triangle ← its upper one.
    static func mirrorUpper(_ c: inout JetMatrix) {
        let n = c.rows, w = c.space.width
        c.storage.withUnsafeMutableBufferPointer { cp in
            let C = cp.baseAddress!
            for j in 0..<n { for i in 0..<j { for x in 0..<w { C[(j + i * n) * w + x] = C[(i + j * n) * w + x] } } }
        }
    }
}

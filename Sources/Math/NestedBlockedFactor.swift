// BlockedFactor for a site whose within-site factors form a nested chain
// (SiteBlocks.nested): M = ΛᵀZᵀWZΛ + I factored level by level, finest
// factor first (NestedElimination at order 0), keeping each level's F and
// Y = F⁻¹T_kᵀK_coarser so that PIRLS and the exact derivatives can solve
// with M. In the random-effects order of the chain (factor after factor,
// level after level, then the tail), L's off-diagonal block of level l
// towards a coarser effect c is (Y T_c)ᵀ, with T_c the coarser factor's T
// (its ancestor's level, or Λt for the tail): the solves below apply it
// without forming it. Nothing is of size (levels)².

extension BlockedFactor {
    /// The chain's per-level factors (values), and Σ YᵀY on the tail (td×td,
    /// column-major, before Λt) with the chain's part of log|M|.
    static func chainFactor(_ chain: NestedChain, structure: CovarianceStructure, theta: [Double],
                            tailDimension td: Int) throws -> (factors: [[Double]], cross: [[Double]], tailUpdate: [Double], logDet: Double) {
        let arena = JetArena(width: 1)
        let ops = arena.ops(ValueOnly())
        let fs = chain.factors
        let T = fs.map { f -> JetBlock in
            let t = structure.factorMatrix(f.factor, theta: theta), b = arena.block(t.rows, t.cols)
            for k in 0..<(t.rows * t.cols) { b.base[k] = t.data[k] }
            return b
        }
        func copy(_ v: [Double]) -> UnsafeMutablePointer<Double> {
            let p = arena.doubles(v.count)
            for (i, x) in v.enumerated() { p[i] = x }
            return p
        }
        let sums = NestedElimination.Sums(zz: fs.map { copy($0.zz) }, zw: fs.map { _ in arena.doubles(0) }, cross: fs.map { copy($0.cross) })
        let keep = fs.map { f in (factor: arena.doubles(f.levels * f.dimension * f.dimension),
                                  cross: arena.doubles(f.levels * f.dimension * f.crossWidth)) }
        let r = try NestedElimination.eliminate(fs, sums: sums, factorJets: T, width: 0, tailDimension: td, arena: arena,
                                                ops: ops, keep: keep)
        let factors = zip(fs, keep).map { f, k in Array(UnsafeBufferPointer(start: k.factor, count: f.levels * f.dimension * f.dimension)) }
        let cross = zip(fs, keep).map { f, k in Array(UnsafeBufferPointer(start: k.cross, count: f.levels * f.dimension * f.crossWidth)) }
        return (factors, cross, Array(UnsafeBufferPointer(start: r.tt.base, count: td * td)), r.logDet[0])
    }

    /// Offsets of each chain factor's first level in the random effects.
    var chainOffsets: [Int] {
        var o = [0]
        for f in blocks.nested?.factors ?? [] { o.append(o[o.count - 1] + f.levels * f.dimension) }
        return o
    }

    /// x ← F⁻¹x (forward, F lower, r×r column-major at `f`).
    static func solveLower(_ f: UnsafeBufferPointer<Double>, at o: Int, _ r: Int, _ x: inout [Double], _ x0: Int) {
        for i in 0..<r {
            var v = x[x0 + i]
            for k in 0..<i { v -= f[o + i + k * r] * x[x0 + k] }
            x[x0 + i] = v / f[o + i + i * r]
        }
    }

    /// x ← F⁻ᵀx.
    static func solveLowerTranspose(_ f: UnsafeBufferPointer<Double>, at o: Int, _ r: Int, _ x: inout [Double], _ x0: Int) {
        for i in stride(from: r - 1, through: 0, by: -1) {
            var v = x[x0 + i]
            for k in (i + 1)..<max(r, i + 1) { v -= f[o + k + i * r] * x[x0 + k] }
            x[x0 + i] = v / f[o + i + i * r]
        }
    }

    /// Solves M x = c with the chain's factors and the tail factor.
    func chainSolve(_ c: [Double]) -> [Double] {
        let chain = blocks.nested!, fs = chain.factors, K = fs.count
        let offsets = chainOffsets, n1 = offsets[K], td = blocks.tailDimension
        let T = chainT
        var x = c
        var yz = [Double](repeating: 0, count: td)   // Σ (tail part of Y)ᵀ z, before Λtᵀ
        var v = [Double](repeating: 0, count: fs.map(\.crossWidth).max() ?? 0)
        // Forward: z_l = F_l⁻¹ x_l; the coarser right-hand sides lose T_cᵀ Yᵀ z_l.
        for k in 0..<K {
            let r = fs[k].dimension, cw = fs[k].crossWidth
            chainFactors[k].withUnsafeBufferPointer { F in
                chainCross[k].withUnsafeBufferPointer { Y in
                    for l in 0..<fs[k].levels {
                        let xl = offsets[k] + l * r
                        Self.solveLower(F, at: l * r * r, r, &x, xl)
                        for b in 0..<cw {
                            var s = 0.0
                            for a in 0..<r { s += Y[l * r * cw + a + b * r] * x[xl + a] }
                            v[b] = s
                        }
                        var anc = l, o = 0
                        for s in (k + 1)..<max(K, k + 1) {
                            anc = fs[s - 1].parent[anc]
                            let rs = fs[s].dimension, xs = offsets[s] + anc * rs
                            for j in 0..<rs { var t = 0.0; for i in j..<rs { t += T[s][i, j] * v[o + i] }; x[xs + j] -= t }
                            o += rs
                        }
                        for j in 0..<td { yz[j] += v[o + j] }
                    }
                }
            }
        }
        var tailRHS = Array(x[n1...])
        let t = Dense.multiply(Dense.transpose(lambdaT), yz)
        for k in 0..<td { tailRHS[k] -= t[k] }
        let xt = Dense.solveLowerTranspose(lt, Dense.solveLower(lt, tailRHS))
        for k in 0..<td { x[n1 + k] = xt[k] }
        let lxt = Dense.multiply(lambdaT, xt)
        // Backward, coarsest chain factor first: x_l = F_l⁻ᵀ(z_l − Y (T_c x_coarser)).
        var tx = [Double](repeating: 0, count: v.count)
        for k in stride(from: K - 1, through: 0, by: -1) {
            let r = fs[k].dimension, cw = fs[k].crossWidth
            chainFactors[k].withUnsafeBufferPointer { F in
                chainCross[k].withUnsafeBufferPointer { Y in
                    for l in 0..<fs[k].levels {
                        var anc = l, o = 0
                        for s in (k + 1)..<max(K, k + 1) {
                            anc = fs[s - 1].parent[anc]
                            let rs = fs[s].dimension, xs = offsets[s] + anc * rs
                            for i in 0..<rs { var t = 0.0; for j in 0...i { t += T[s][i, j] * x[xs + j] }; tx[o + i] = t }
                            o += rs
                        }
                        for j in 0..<td { tx[o + j] = lxt[j] }
                        let xl = offsets[k] + l * r
                        for b in 0..<cw where tx[b] != 0 {
                            for a in 0..<r { x[xl + a] -= Y[l * r * cw + a + b * r] * tx[b] }
                        }
                        Self.solveLowerTranspose(F, at: l * r * r, r, &x, xl)
                    }
                }
            }
        }
        return x
    }
}

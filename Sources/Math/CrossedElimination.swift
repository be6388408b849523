// Crossed factors at the coordinator (DESIGN.md, "Crossed factors"). Each
// site sends its Schur complement onto [Z_G X y] (its own random effects
// eliminated, jets in its local θ), restricted to the crossed levels it has.
// Summed into the global index, in site order, they give
//     M = [[K, Kx], [Kxᵀ, S]] = Σ_k [Z_G X y]ᵀ(I − …)[Z_G X y] over sites;
// then with Λ_G block diagonal (each crossed factor's T repeated per level)
//     L_G L_Gᵀ = Λ_Gᵀ K Λ_G + I,  R = L_G⁻¹ Λ_Gᵀ Kx,
//     [[A, g], [gᵀ, s]] = S − RᵀR,  ℓ = Σ_k ℓ_k + log|L_G|²,
// the pooled model's totals, with exact jets in the whole θ.

/// Where the crossed factors' effects sit in u_G and which of them each site has.
public struct CrossedLayout: Sendable, Equatable {
    public struct Factor: Sendable, Equatable {
        /// The factor's index in the model's CovarianceStructure.
        public var factor: Int
        /// Its agreed levels; r effects each.
        public var levels: Int
        /// First effect of the factor in u_G.
        public var offset: Int
        public init(factor: Int, levels: Int, offset: Int) { self.factor = factor; self.levels = levels; self.offset = offset }
    }
    public var factors: [Factor]
    /// q_G: all crossed effects.
    public var dimension: Int
    /// For each site, the u_G index of each of its leading columns.
    public var siteColumns: [[Int]]
    /// The model's θ index of each θ of the sites' local model.
    public var localTheta: [Int]

    /// `presentLevels[k][c]`: the agreed levels site k has of crossed factor c (ascending).
    public init(structure: CovarianceStructure, crossed: [(factor: Int, levels: Int)], presentLevels: [[[Int]]], localTheta: [Int]) {
        var fs: [Factor] = [], o = 0
        for c in crossed {
            fs.append(Factor(factor: c.factor, levels: c.levels, offset: o))
            o += c.levels * structure.factorDimension(c.factor)
        }
        factors = fs
        dimension = o
        siteColumns = presentLevels.map { site in
            var cols: [Int] = []
            for (c, f) in fs.enumerated() {
                let r = structure.factorDimension(f.factor)
                for l in site[c] { for a in 0..<r { cols.append(f.offset + l * r + a) } }
            }
            return cols
        }
        self.localTheta = localTheta
    }
}

public enum CrossedElimination {
    /// The pooled totals and, for the conditional modes, L_G and R.
    public struct Result: Sendable {
        public var totals: LMMTotals
        public var factor: JetMatrix
        public var cross: JetMatrix
    }

    /// Sums the sites' contributions into the global index (in site order)
    /// and eliminates the crossed effects at θ (the whole model's).
    public static func combine(_ parts: [LMMContribution], layout: CrossedLayout, structure: CovarianceStructure,
                               theta: [Double], order: Int) throws -> Result {
        precondition(parts.count == layout.siteColumns.count, "one contribution per site")
        let space = JetSpace(parameters: structure.thetaCount, order: order)
        let jw = space.width, q = layout.dimension
        let w = parts[0].schur.rows - layout.siteColumns[0].count
        let n = q + w
        var m = JetMatrix(rows: n, cols: n, space: space)
        var logDet = ScalarJet(space: space)
        var rows = 0
        for (k, part) in parts.enumerated() {
            let lifted = part.schur.lifted(to: space, map: layout.localTheta)
            logDet.addLifted(part.logDet, map: layout.localTheta)
            rows += part.rows
            let cols = layout.siteColumns[k], qk = cols.count
            let index = (0..<part.schur.rows).map { $0 < qk ? cols[$0] : q + $0 - qk }
            for j in 0..<part.schur.cols {
                for i in 0..<part.schur.rows {
                    let src = lifted.offset(i, j), dst = m.offset(index[i], index[j])
                    for t in 0..<jw { m.storage[dst + t] += lifted.storage[src + t] }
                }
            }
        }
        // Λ_Gᵀ M Λ_G on the crossed rows and columns, block by block.
        let kernel = JetKernel(space)
        let blocks = layout.factors.map { f in
            (f, structure.factorDimension(f.factor), structure.factorJet(f.factor, theta: theta, space: space,
                                                                          parameterMap: Array(0..<structure.thetaCount)))
        }
        m.storage.withUnsafeMutableBufferPointer { mp in
            let M = mp.baseAddress!
            var tmp = [Double](repeating: 0, count: 8 * jw)
            tmp.withUnsafeMutableBufferPointer { tp in
                for (f, r, t) in blocks {
                    if tp.count < r * jw { fatalError("crossed term wider than 8 columns") }
                    let T = t.storage
                    T.withUnsafeBufferPointer { T in
                        for lvl in 0..<f.levels {
                            let base = f.offset + lvl * r
                            // columns: M[i, base..] ← M[i, base..] T
                            for i in 0..<n {
                                for x in 0..<(r * jw) { tp[x] = 0 }
                                for b in 0..<r { for a in 0..<r {
                                    kernel.mulAdd(tp.baseAddress! + b * jw, M + ((i + (base + a) * n) * jw), T.baseAddress! + t.offset(a, b), 1)
                                } }
                                for b in 0..<r { for x in 0..<jw { M[((i + (base + b) * n) * jw) + x] = tp[b * jw + x] } }
                            }
                            // rows: M[base.., j] ← Tᵀ M[base.., j]
                            for j in 0..<n {
                                for x in 0..<(r * jw) { tp[x] = 0 }
                                for b in 0..<r { for a in 0..<r {
                                    kernel.mulAdd(tp.baseAddress! + b * jw, T.baseAddress! + t.offset(a, b), M + ((base + a + j * n) * jw), 1)
                                } }
                                for b in 0..<r { for x in 0..<jw { M[((base + b + j * n) * jw) + x] = tp[b * jw + x] } }
                            }
                        }
                    }
                }
            }
        }
        var btt = JetMatrix(rows: q, cols: q, space: space)
        var btw = JetMatrix(rows: q, cols: w, space: space)
        var sww = JetMatrix(rows: w, cols: w, space: space)
        copy(m, rows: 0..<q, cols: 0..<q, into: &btt)
        copy(m, rows: 0..<q, cols: q..<n, into: &btw)
        copy(m, rows: q..<n, cols: q..<n, into: &sww)
        btt.addToDiagonal(1)
        try choleskyRowwise(&btt)
        btw.solveLowerInPlace(btt)
        sww.addProduct(btw, transposeA: true, btw, sign: -1)
        let tl = btt.sumLogDiagonal(scale: 2)
        for x in 0..<jw { logDet.storage[x] += tl.storage[x] }
        return Result(totals: LMMTotals(schur: sww, logDet: logDet, rows: rows), factor: btt, cross: btw)
    }

    /// `JetMatrix.choleskyInPlace`'s arithmetic (the same sums in the same
    /// order) with each row of the factor held contiguously while it is
    /// computed: the left-looking inner products then read memory in order,
    /// which for the thousands of crossed effects it is used for is several
    /// times faster than striding across columns. The result is stored as
    /// choleskyInPlace stores it (lower triangle, upper zero).
    static func choleskyRowwise(_ a: inout JetMatrix) throws {
        let n = a.rows, w = a.space.width
        if a.space.parameters == 1 && a.space.order == 2 {
            try choleskyRowwise(&a.storage, n: n, w: w, kernel: OneParameterJet())
        } else if a.space.parameters == 2 && a.space.order == 2 {
            try choleskyRowwise(&a.storage, n: n, w: w, kernel: TwoParameterJet(JetKernel(a.space)))
        } else if a.space.parameters == 3 && a.space.order == 2 {
            try choleskyRowwise(&a.storage, n: n, w: w, kernel: ThreeParameterJet())
        } else {
            try choleskyRowwise(&a.storage, n: n, w: w, kernel: JetKernel(a.space))
        }
    }

    static func choleskyRowwise<K: JetArithmetic>(_ storage: inout [Double], n: Int, w: Int, kernel: K) throws {
        var scratch = [Double](repeating: 0, count: w)
        try storage.withUnsafeMutableBufferPointer { sp in
            try scratch.withUnsafeMutableBufferPointer { tp in
                let s = sp.baseAddress!, t = tp.baseAddress!
                // L[i, k] lives at (k, i): column i holds row i of L (the
                // input's upper triangle, equal to its lower one, is overwritten).
                for j in 0..<n {
                    let djj = s + (j + j * n) * w
                    let rowJ = s + (j * n) * w
                    for k in 0..<j { kernel.mulAdd(djj, rowJ + k * w, rowJ + k * w, -1) }
                    guard djj[0] > 0, djj[0].isFinite else { throw LinearAlgebraError.notPositiveDefinite(pivot: j) }
                    kernel.sqrt(djj, djj)
                    for i in (j + 1)..<max(n, j + 1) {
                        let rowI = s + (i * n) * w
                        let dij = rowI + j * w
                        for k in 0..<j { kernel.mulAdd(dij, rowI + k * w, rowJ + k * w, -1) }
                        for c in 0..<w { t[c] = dij[c] }
                        kernel.divide(dij, t, djj)
                    }
                }
                // Back to column-major lower: (i, k) ← (k, i), upper zero.
                for i in 0..<n {
                    for k in 0..<i {
                        let lower = s + (i + k * n) * w, upper = s + (k + i * n) * w
                        for c in 0..<w { lower[c] = upper[c]; upper[c] = 0 }
                    }
                }
            }
        }
    }

    static func copy(_ m: JetMatrix, rows: Range<Int>, cols: Range<Int>, into out: inout JetMatrix) {
        let jw = m.space.width
        for (jj, j) in cols.enumerated() {
            for (ii, i) in rows.enumerated() {
                let s = m.offset(i, j), d = out.offset(ii, jj)
                for x in 0..<jw { out.storage[d + x] = m.storage[s + x] }
            }
        }
    }

    /// The crossed effects' conditional modes b_G = Λ_G u_G, with
    /// u_G = L_G⁻ᵀ(r_y − R_X β), and P = Λ_G (L_G L_Gᵀ)⁻¹ Λ_Gᵀ (σ² P is their
    /// conditional covariance), at the result's θ.
    public static func modes(_ r: Result, layout: CrossedLayout, structure: CovarianceStructure, theta: [Double],
                             beta: [Double]) -> (effects: [Double], covariance: Matrix) {
        let l = r.factor.valueMatrix, x = r.cross.valueMatrix
        let q = layout.dimension, p = beta.count
        var rhs = [Double](repeating: 0, count: q)
        for i in 0..<q {
            var v = x[i, p]
            for j in 0..<p { v -= x[i, j] * beta[j] }
            rhs[i] = v
        }
        let u = Dense.solveLowerTranspose(l, rhs)
        return scaled(modes: u, inverse: Dense.inverseFromCholesky(l), layout: layout, structure: structure, theta: theta)
    }

    /// b_G = Λ_G u_G and P = Λ_G A⁻¹ Λ_Gᵀ from the spherical modes u_G and
    /// A⁻¹ = [(ΛᵀZᵀZΛ + I)⁻¹]_GG, whichever elimination gave them.
    static func scaled(modes u: [Double], inverse: Matrix, layout: CrossedLayout, structure: CovarianceStructure,
                       theta: [Double]) -> (effects: [Double], covariance: Matrix) {
        let q = layout.dimension
        // Λ_G is block diagonal: each effect's block (offset, T) of its level.
        var block = [(offset: Int, t: Matrix)](repeating: (0, Matrix(rows: 0, cols: 0)), count: q)
        for f in layout.factors {
            let t = structure.factorMatrix(f.factor, theta: theta), d = t.rows
            for lvl in 0..<f.levels { for a in 0..<d { block[f.offset + lvl * d + a] = (f.offset + lvl * d, t) } }
        }
        var b = [Double](repeating: 0, count: q)
        for i in 0..<q {
            let (o, t) = block[i]
            for a in 0..<t.cols { b[i] += t[i - o, a] * u[o + a] }
        }
        // P = Λ A⁻¹ Λᵀ, entry by entry over the blocks (scalar blocks: t_i a_ij t_j).
        var cov = Matrix(rows: q, cols: q)
        if block.allSatisfy({ $0.t.rows == 1 }) {
            let t = block.map { $0.t[0, 0] }
            for j in 0..<q { for i in 0..<q { cov.data[i + j * q] = t[i] * inverse.data[i + j * q] * t[j] } }
            return (b, cov)
        }
        var left = Matrix(rows: q, cols: q)   // Λ · A⁻¹
        for j in 0..<q { for i in 0..<q {
            let (o, t) = block[i]
            var v = 0.0
            for a in 0..<t.cols { v += t[i - o, a] * inverse[o + a, j] }
            left[i, j] = v
        } }
        for j in 0..<q {
            let (o, t) = block[j]
            for i in 0..<q {
                var v = 0.0
                for a in 0..<t.cols { v += left[i, o + a] * t[j - o, a] }
                cov[i, j] = v
            }
        }
        return (b, cov)
    }
}

/// JetKernel for two parameters to second order (width 6: value, two first
/// derivatives, second derivatives (0,0), (0,1), (1,1)) with the product
/// written out, JetKernel's expression term by term: `(1 | site) + (1 | f)`
/// with f crossed, whose elimination is the inner loop of a fit.
struct TwoParameterJet: JetArithmetic {
    let general: JetKernel
    init(_ general: JetKernel) { self.general = general }
    var order: Int { 2 }

    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ sign: Double) {
        let a0 = a[0], b0 = b[0], a1 = a[1], a2 = a[2], b1 = b[1], b2 = b[2]
        c[0] += sign * a0 * b0
        c[1] += sign * (a1 * b0 + a0 * b1)
        c[2] += sign * (a2 * b0 + a0 * b2)
        c[3] += sign * (a[3] * b0 + a1 * b1 + a1 * b1 + a0 * b[3])
        c[4] += sign * (a[4] * b0 + a1 * b2 + a2 * b1 + a0 * b[4])
        c[5] += sign * (a[5] * b0 + a2 * b2 + a2 * b2 + a0 * b[5])
    }
    @inline(__always)
    func sqrt(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>) { general.sqrt(c, a) }
    @inline(__always)
    func divide(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>) { general.divide(c, a, b) }
    @inline(__always)
    func logAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ sign: Double) { general.logAdd(c, a, sign) }
}

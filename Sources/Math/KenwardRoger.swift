// Kenward and Roger's (1997) small-sample adjustment for REML fits of a
// linear mixed model, as pbkrtest computes it (lmerTest's ddf = "Kenward-Roger"),
// from the same order-2 totals as Satterthwaite's df: no extra round.
//
// KR needs the covariance linear in its parameters: φ = (the entries σ²TTᵀ
// of each term's covariance, lower triangle, then σ²), V = Σ φₖ Gₖ. With
// M(φ) = XᵀV⁻¹X and F(φ) = log|V| + log|M| (the REML log-determinants):
//     Pₖ = ∂M/∂φₖ,   Qₖₗ + Qₗₖ = ∂²M/∂φₖ∂φₗ,   tr(P̃GₖP̃Gₗ) = −∂²F/∂φₖ∂φₗ,
// (P̃ the REML projection). In the fit's parameters ψ = (θ, s = σ²),
// M = A(θ)/s and F = (n − p) log s + ℓ(θ) + log|A(θ)| + const, whose first
// and second derivatives come from the jets; the chain rule through the
// inverse of ψ ↦ φ turns them into φ-derivatives. Then, with Φ = M⁻¹,
//     W  = 2 [tr(P̃GₖP̃Gₗ)]⁻¹            (inverse expected information)
//     Φ_A = Φ + 2 Φ [Σₖₗ Wₖₗ (Qₖₗ − PₖΦPₗ)] Φ,
// and for a contrast l (rank 1), Θ = lᵀ(lΦlᵀ)⁻¹l,
//     A₁ = Σ Wₖₗ tr(ΘΦPₖΦ) tr(ΘΦPₗΦ),  A₂ = Σ Wₖₗ tr(ΘΦPₖΦΘΦPₗΦ),
//     B = (A₁ + 6A₂)/2,  g = (2A₁ − 5A₂)/(3A₂),  c₁ = g/(3 + 2(1 − g)),
//     c₂ = (1 − g)/(3 + 2(1 − g)),  c₃ = (3 − g)/(3 + 2(1 − g)),
//     E* = 1/(1 − A₂),  V* = 2(1 + c₁B)/((1 − c₂B)²(1 − c₃B)),
//     ρ = V*/(2E*²),  df = 4 + 3/(ρ − 1).

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

public struct KenwardRoger: Sendable, Equatable {
    /// Φ = Cov(β̂) unadjusted (σ² A⁻¹), in the fitted coordinates.
    let covariance: Matrix
    /// Φ_A, the adjusted covariance (pbkrtest's vcovAdj), in the fitted coordinates.
    let fittedAdjustedCovariance: Matrix
    /// β = T β̃ maps the fitted coordinates to the reported ones (identity
    /// unless the fit was centred).
    var map: Matrix
    /// Pₖ = ∂M/∂φₖ.
    let p: [Matrix]
    /// W = 2 I_E⁻¹.
    let w: Matrix

    /// From the summed contributions at a REML optimum (second derivatives in
    /// θ required). Nil for ML, or when a factor's diagonal is on its bound
    /// (the map θ ↦ φ is then not invertible), or a matrix is singular.
    public init?(totals t: LMMTotals, structure: CovarianceStructure, theta: [Double], method: EstimationMethod) {
        guard method == .reml, t.schur.space.order == 2, t.logDet.space.order == 2 else { return nil }
        let pCount = t.fixedCount, m = t.schur.space.parameters, n = m + 1
        guard m == structure.thetaCount, theta.count == m else { return nil }
        let nu = Double(t.rows - pCount)
        // A, its derivatives, r², ℓ + log|A|
        var l = t.schur
        guard (try? l.choleskyInPlace()) != nil else { return nil }
        let kernel = JetKernel(l.space)
        var logDet = t.logDet
        logDet.storage.withUnsafeMutableBufferPointer { dp in
            l.storage.withUnsafeBufferPointer { lp in
                for i in 0..<pCount { kernel.logAdd(dp.baseAddress!, lp.baseAddress! + l.offset(i, i), 2) }
            }
        }
        let rss = l.value(pCount, pCount) * l.value(pCount, pCount)
        let s = rss / nu
        func block(_ x: Matrix) -> Matrix {
            var b = Matrix(rows: pCount, cols: pCount)
            for j in 0..<pCount { for i in 0..<pCount { b[i, j] = x[i, j] } }
            return b
        }
        let a = block(t.schur.valueMatrix)
        let dA = (0..<m).map { block(t.schur.firstDerivative($0)) }
        var d2A = [[Matrix]](repeating: [], count: m)
        for i in 0..<m { d2A[i] = (0..<m).map { block(t.schur.secondDerivative(i, $0)) } }

        // ψ-derivatives of M = A/s (index m is s)
        func dM(_ i: Int) -> Matrix { i < m ? scaled(dA[i], 1 / s) : scaled(a, -1 / (s * s)) }
        func d2M(_ i: Int, _ j: Int) -> Matrix {
            switch (i < m, j < m) {
            case (true, true): return scaled(d2A[i][j], 1 / s)
            case (true, false): return scaled(dA[i], -1 / (s * s))
            case (false, true): return scaled(dA[j], -1 / (s * s))
            case (false, false): return scaled(a, 2 / (s * s * s))
            }
        }
        // ψ-derivatives of F
        let gLog = logDet.gradient, hLog = logDet.hessian
        var gF = [Double](repeating: 0, count: n), hF = Matrix(rows: n, cols: n)
        for i in 0..<m {
            gF[i] = gLog[i]
            for j in 0..<m { hF[i, j] = hLog[i * m + j] }
        }
        gF[m] = nu / s
        hF[m, m] = -nu / (s * s)

        // φ(ψ) with first and second derivatives, by jets in ψ.
        let space = JetSpace(parameters: n, order: 2)
        var phi: [ScalarJet] = []
        var sJet = ScalarJet(space: space, value: s)
        sJet.storage[1 + m] = 1
        for (term, offset) in zip(structure.terms, structure.thetaOffsets) {
            let r = term.dimension
            var tm = JetMatrix(rows: r, cols: r, space: space)
            var k = offset
            for j in 0..<r {
                for i in j..<r {
                    let o = tm.offset(i, j)
                    tm.storage[o] = theta[k]; tm.storage[o + 1 + k] = 1
                    k += 1
                }
            }
            var sigma = JetMatrix(rows: r, cols: r, space: space)
            sigma.addProduct(tm, tm, transposeB: true)
            for j in 0..<r {
                for i in j..<r {
                    var e = ScalarJet(space: space)
                    let entry = sigma.scalar(i, j)
                    e.storage.withUnsafeMutableBufferPointer { ep in
                        entry.storage.withUnsafeBufferPointer { xp in
                            sJet.storage.withUnsafeBufferPointer { sp in
                                kernel2(space).mulAdd(ep.baseAddress!, xp.baseAddress!, sp.baseAddress!, 1)
                            }
                        }
                    }
                    phi.append(e)
                }
            }
        }
        phi.append(sJet)
        var jPhi = Matrix(rows: n, cols: n)     // ∂φₖ/∂ψₐ
        for k in 0..<n { let g = phi[k].gradient; for a in 0..<n { jPhi[k, a] = g[a] } }
        guard let j = Self.inverse(jPhi) else { return nil }   // ∂ψₐ/∂φₖ
        // ∂²ψₐ/∂φₖ∂φₗ = −Σ_b J_ab Σ_cd (∂²φ_b/∂ψ_c∂ψ_d) J_ck J_dl
        var curvature = [Matrix](repeating: Matrix(rows: n, cols: n), count: n)   // per b: Jᵀ Hφ_b J
        for b in 0..<n {
            let h = Matrix(rows: n, cols: n, data: phi[b].hessian)
            curvature[b] = Dense.multiply(Dense.transpose(j), Dense.multiply(h, j))
        }
        var kPsi = [Matrix](repeating: Matrix(rows: n, cols: n), count: n)
        for aa in 0..<n {
            var kk = Matrix(rows: n, cols: n)
            for b in 0..<n where j[aa, b] != 0 {
                for q in 0..<(n * n) { kk.data[q] -= j[aa, b] * curvature[b].data[q] }
            }
            kPsi[aa] = kk
        }

        // φ-derivatives of M: P_k = Σ_a dM_a J_ak; ∂²M_kl = Σ_ab d2M_ab J_ak J_bl + Σ_a dM_a K_a,kl
        let dMs = (0..<n).map(dM)
        var pk: [Matrix] = []
        for k in 0..<n {
            var x = Matrix(rows: pCount, cols: pCount)
            for aa in 0..<n where j[aa, k] != 0 { for q in 0..<x.data.count { x.data[q] += dMs[aa].data[q] * j[aa, k] } }
            pk.append(x)
        }
        var d2Ms = [[Matrix]](repeating: [], count: n)
        for aa in 0..<n { d2Ms[aa] = (0..<n).map { d2M(aa, $0) } }
        // φ-Hessian of F, then W = 2 (−∇²F)⁻¹
        var hFphi = Dense.multiply(Dense.transpose(j), Dense.multiply(hF, j))
        for k in 0..<n { for ll in 0..<n { for aa in 0..<n { hFphi[k, ll] += gF[aa] * kPsi[aa][k, ll] } } }
        let info = Matrix(rows: n, cols: n, data: hFphi.data.map { -$0 })
        guard let li = try? Dense.cholesky(info) else { return nil }
        let w = Matrix(rows: n, cols: n, data: Dense.inverseFromCholesky(li).data.map { 2 * $0 })

        guard let la = try? Dense.cholesky(a) else { return nil }
        let phiCov = scaled(Dense.inverseFromCholesky(la), s)
        var sum = Matrix(rows: pCount, cols: pCount)
        for k in 0..<n {
            for ll in 0..<n {
                let wkl = w[k, ll]
                if wkl == 0 { continue }
                var second = Matrix(rows: pCount, cols: pCount)
                for aa in 0..<n {
                    for b in 0..<n {
                        let f = j[aa, k] * j[b, ll]
                        if f != 0 { for q in 0..<second.data.count { second.data[q] += f * d2Ms[aa][b].data[q] } }
                    }
                    let g = kPsi[aa][k, ll]
                    if g != 0 { for q in 0..<second.data.count { second.data[q] += g * dMs[aa].data[q] } }
                }
                let ppp = Dense.multiply(pk[k], Dense.multiply(phiCov, pk[ll]))
                for q in 0..<sum.data.count { sum.data[q] += wkl * (0.5 * second.data[q] - ppp.data[q]) }
            }
        }
        let adjustment = Dense.multiply(phiCov, Dense.multiply(sum, phiCov))
        var adjusted = phiCov
        for q in 0..<adjusted.data.count { adjusted.data[q] += 2 * adjustment.data[q] }
        covariance = phiCov
        fittedAdjustedCovariance = adjusted
        map = Matrix.identity(pCount)
        p = pk
        self.w = w
    }

    /// Degrees of freedom of the contrast lᵀβ̃ of the fitted coefficients (rank 1).
    public func degreesOfFreedom(contrast l: [Double]) -> Double {
        let phi = covariance
        let phiL = Dense.multiply(phi, l)
        var v = 0.0
        for i in 0..<l.count { v += l[i] * phiL[i] }
        // ΘΦPₖΦ with Θ = l lᵀ / v: its trace is (lᵀΦPₖΦl)/v, and
        // tr(ΘΦPₖΦΘΦPₗΦ) = (lᵀΦPₖΦl)(lᵀΦPₗΦl)/v² for rank one.
        let u = p.map { pk -> Double in
            let x = Dense.multiply(pk, phiL)
            var q = 0.0
            for i in 0..<l.count { q += phiL[i] * x[i] }
            return q / v
        }
        var a1 = 0.0, a2 = 0.0
        for k in 0..<u.count { for ll in 0..<u.count { a1 += w[k, ll] * u[k] * u[ll]; a2 += w[k, ll] * u[k] * u[ll] } }
        let b = (a1 + 6 * a2) / 2
        let g = (2 * a1 - 5 * a2) / (3 * a2)
        let denominator = 3 + 2 * (1 - g)
        let c1 = g / denominator, c2 = (1 - g) / denominator, c3 = (3 - g) / denominator
        let eStar = 1 / (1 - a2)
        let vStar = 2 * (1 + c1 * b) / ((1 - c2 * b) * (1 - c2 * b) * (1 - c3 * b))
        let rho = vStar / (2 * eStar * eStar)
        return 4 + 3 / (rho - 1)
    }

    /// The same for reported coefficients β = T β̃ (undoing a centring).
    public func transformed(by t: Matrix) -> KenwardRoger {
        var out = self
        out.map = Dense.multiply(t, map)
        return out
    }

    /// Φ_A in the reported coordinates.
    public var adjustedCovariance: Matrix {
        Dense.multiply(map, Dense.multiply(fittedAdjustedCovariance, Dense.transpose(map)))
    }

    /// Degrees of freedom of each reported coefficient: the contrast eₖᵀT
    /// of the fitted ones.
    public var degreesOfFreedom: [Double] {
        (0..<map.rows).map { k in degreesOfFreedom(contrast: (0..<map.cols).map { map[k, $0] }) }
    }

    /// The adjusted standard errors √diag(Φ_A).
    public var standardErrors: [Double] {
        let v = adjustedCovariance
        return (0..<v.rows).map { v[$0, $0].squareRoot() }
    }

    /// A general square matrix's inverse (Gauss–Jordan, partial pivoting); nil when singular.
    static func inverse(_ x: Matrix) -> Matrix? {
        let n = x.rows
        var a = x, inv = Matrix.identity(n)
        for c in 0..<n {
            var pivot = c
            for r in c..<n where abs(a[r, c]) > abs(a[pivot, c]) { pivot = r }
            guard abs(a[pivot, c]) > 1e-300 else { return nil }
            if pivot != c {
                for k in 0..<n { (a[c, k], a[pivot, k]) = (a[pivot, k], a[c, k]); (inv[c, k], inv[pivot, k]) = (inv[pivot, k], inv[c, k]) }
            }
            let d = a[c, c]
            for k in 0..<n { a[c, k] /= d; inv[c, k] /= d }
            for r in 0..<n where r != c {
                let f = a[r, c]
                if f == 0 { continue }
                for k in 0..<n { a[r, k] -= f * a[c, k]; inv[r, k] -= f * inv[c, k] }
            }
        }
        return inv
    }
}

private func scaled(_ x: Matrix, _ f: Double) -> Matrix { Matrix(rows: x.rows, cols: x.cols, data: x.data.map { f * $0 }) }
private func kernel2(_ space: JetSpace) -> JetKernel { JetKernel(space) }

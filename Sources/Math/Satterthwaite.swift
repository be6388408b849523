// Satterthwaite's degrees of freedom for the fixed effects of a linear mixed
// model, as lmerTest computes them, but from exact derivatives: the summed
// Schur complement [[A, g], [gᵀ, s]] and the log-determinant ℓ arrive with
// their first and second θ-derivatives at the last evaluation, so no round
// is added.
//
// Variance parameters φ = (θ, σ). The unprofiled criterion (−2 log L, or the
// REML criterion, up to constants) is
//     d(θ, σ) = ℓ(θ) [+ log|A(θ)|] + ν log(2πσ²) + r²(θ)/σ²,
// ν = n − p (REML, with the bracketed term) or n (ML), r² = s − gᵀA⁻¹g, so
//     ∂²d/∂θᵢ∂θⱼ = (ℓ [+ log|A|])ᵢⱼ + (r²)ᵢⱼ/σ²
//     ∂²d/∂θᵢ∂σ  = −2 (r²)ᵢ/σ³
//     ∂²d/∂σ²    = −2ν/σ² + 6 r²/σ⁴.
// With H that Hessian at the optimum, W = 2H⁻¹ is the asymptotic covariance
// of φ̂ (a pseudo-inverse over H's positive eigenvalues when H is not
// positive definite, as lmerTest does). The covariance of β̂ is
// C(φ) = σ² A(θ)⁻¹, with ∂C/∂θᵢ = −σ² A⁻¹ (∂A/∂θᵢ) A⁻¹ and ∂C/∂σ = 2σ A⁻¹.
// For a contrast l, v = lᵀCl and ∇v = (lᵀ ∂C/∂φₖ l)ₖ:
//     df = 2 v² / (∇vᵀ W ∇v).

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

public struct Satterthwaite: Sendable, Equatable {
    /// Cov(β̂) = σ² A⁻¹ (p×p).
    public let covariance: Matrix
    /// ∂C/∂φₖ for φ = (θ₁, …, θₘ, σ).
    public let covarianceGradient: [Matrix]
    /// 2 H⁻¹: the asymptotic covariance of (θ̂, σ̂).
    public let varianceParameterCovariance: Matrix

    public init(covariance: Matrix, covarianceGradient: [Matrix], varianceParameterCovariance: Matrix) {
        self.covariance = covariance
        self.covarianceGradient = covarianceGradient
        self.varianceParameterCovariance = varianceParameterCovariance
    }

    /// From the summed contributions at the optimum, which must carry second
    /// derivatives in θ. Nil when they do not, or when A is singular.
    public init?(totals t: LMMTotals, method: EstimationMethod) {
        guard t.schur.space.order == 2, t.logDet.space.order == 2 else { return nil }
        let p = t.fixedCount, m = t.schur.space.parameters
        let nu = Double(method == .reml ? t.rows - p : t.rows)
        guard nu > 0 else { return nil }
        var l = t.schur
        guard (try? l.choleskyInPlace()) != nil else { return nil }
        // ℓ [+ log|A|], and r = L[p, p] with its derivatives.
        var logDet = t.logDet
        let kernel = JetKernel(l.space)
        if method == .reml {
            logDet.storage.withUnsafeMutableBufferPointer { dp in
                l.storage.withUnsafeBufferPointer { lp in
                    for i in 0..<p { kernel.logAdd(dp.baseAddress!, lp.baseAddress! + l.offset(i, i), 2) }
                }
            }
        }
        var r2 = ScalarJet(space: l.space)
        r2.storage.withUnsafeMutableBufferPointer { rp in
            l.storage.withUnsafeBufferPointer { lp in
                let r = lp.baseAddress! + l.offset(p, p)
                kernel.mulAdd(rp.baseAddress!, r, r, 1)
            }
        }
        let rss = r2.value
        guard rss > 0 else { return nil }
        let sigma2 = rss / nu, sigma = sigma2.squareRoot()
        let dLog = logDet.hessian, dR2 = r2.hessian, gR2 = r2.gradient

        var h = Matrix(rows: m + 1, cols: m + 1)
        for i in 0..<m {
            for j in 0..<m { h[i, j] = dLog[i * m + j] + dR2[i * m + j] / sigma2 }
            h[i, m] = -2 * gR2[i] / (sigma2 * sigma)
            h[m, i] = h[i, m]
        }
        h[m, m] = -2 * nu / sigma2 + 6 * rss / (sigma2 * sigma2)

        // C = σ² A⁻¹ and its derivatives.
        let s = t.schur.valueMatrix
        var a = Matrix(rows: p, cols: p)
        for j in 0..<p { for i in 0..<p { a[i, j] = s[i, j] } }
        guard let la = try? Dense.cholesky(a) else { return nil }
        let aInverse = Dense.inverseFromCholesky(la)
        var gradient: [Matrix] = []
        for k in 0..<m {
            let dk = t.schur.firstDerivative(k)
            var dA = Matrix(rows: p, cols: p)
            for j in 0..<p { for i in 0..<p { dA[i, j] = dk[i, j] } }
            let g = Dense.multiply(aInverse, Dense.multiply(dA, aInverse))
            gradient.append(Matrix(rows: p, cols: p, data: g.data.map { -sigma2 * $0 }))
        }
        gradient.append(Matrix(rows: p, cols: p, data: aInverse.data.map { 2 * sigma * $0 }))
        self.init(covariance: Matrix(rows: p, cols: p, data: aInverse.data.map { sigma2 * $0 }),
                  covarianceGradient: gradient, varianceParameterCovariance: Self.twiceInverse(h))
    }

    /// 2 H⁻¹ by Cholesky; when H is not positive definite, twice the
    /// pseudo-inverse over eigenvalues above 1e-8 (lmerTest's tolerance).
    static func twiceInverse(_ h: Matrix) -> Matrix {
        if let l = try? Dense.cholesky(h) {
            return Matrix(rows: h.rows, cols: h.cols, data: Dense.inverseFromCholesky(l).data.map { 2 * $0 })
        }
        let (values, vectors) = Dense.symmetricEigen(h)
        let n = h.rows
        var w = Matrix(rows: n, cols: n)
        for (k, lambda) in values.enumerated() where lambda > 1e-8 {
            for j in 0..<n { for i in 0..<n { w[i, j] += 2 * vectors[i, k] * vectors[j, k] / lambda } }
        }
        return w
    }

    /// The same for β' = Tβ (an exact reparameterization of the fixed
    /// effects, such as undoing a centring): C ↦ T C Tᵀ.
    public func transformed(by t: Matrix) -> Satterthwaite {
        func map(_ c: Matrix) -> Matrix { Dense.multiply(t, Dense.multiply(c, Dense.transpose(t))) }
        return Satterthwaite(covariance: map(covariance), covarianceGradient: covarianceGradient.map(map),
                             varianceParameterCovariance: varianceParameterCovariance)
    }

    /// Degrees of freedom of the contrast lᵀβ.
    public func degreesOfFreedom(contrast l: [Double]) -> Double {
        func quadratic(_ c: Matrix) -> Double {
            var q = 0.0
            for j in 0..<c.cols { for i in 0..<c.rows { q += l[i] * c[i, j] * l[j] } }
            return q
        }
        let v = quadratic(covariance)
        let g = covarianceGradient.map(quadratic)
        let w = varianceParameterCovariance
        var denominator = 0.0
        for j in 0..<g.count { for i in 0..<g.count { denominator += g[i] * w[i, j] * g[j] } }
        return 2 * v * v / denominator
    }

    /// Degrees of freedom of each coefficient (l = eₖ).
    public var degreesOfFreedom: [Double] {
        let p = covariance.rows
        return (0..<p).map { k in
            var l = [Double](repeating: 0, count: p)
            l[k] = 1
            return degreesOfFreedom(contrast: l)
        }
    }
}

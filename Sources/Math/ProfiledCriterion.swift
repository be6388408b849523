// The coordinator's side of an LMM fit: summed site contributions profiled
// over β and σ (DESIGN.md): β̂ = A⁻¹g, r² = s − gᵀβ̂ and
//     ML:   d(θ)   = ℓ + n (1 + log(2π r² / n))
//     REML: d_R(θ) = ℓ + log|A| + (n − p)(1 + log(2π r² / (n − p)))
// Both are computed from the Cholesky factor of [[A, g], [gᵀ, s]] as jets,
// so the gradient and Hessian in θ come with the value.

public enum EstimationMethod: String, Sendable { case reml = "REML", ml = "ML" }

public enum CriterionError: Error, Equatable, CustomStringConvertible {
    case rankDeficient
    case perfectFit
    case tooFewRows(rows: Int, parameters: Int)

    public var description: String {
        switch self {
        case .rankDeficient:
            return "the fixed-effects design matrix is rank deficient (some columns are linear combinations of others): remove or recode the redundant terms"
        case .perfectFit:
            return "the model fits the data exactly (zero residual variance): check that the response is not a copy of a covariate"
        case .tooFewRows(let n, let p):
            return "\(n) rows are too few for \(p) fixed effects"
        }
    }
}

/// Sums of site contributions, in site order (so the floating-point result
/// never depends on which site answered first).
public struct LMMTotals: Sendable, Equatable {
    public var schur: JetMatrix
    public var logDet: ScalarJet
    public var rows: Int

    public init(schur: JetMatrix, logDet: ScalarJet, rows: Int) { self.schur = schur; self.logDet = logDet; self.rows = rows }

    public init(summing parts: [LMMContribution]) {
        precondition(!parts.isEmpty, "no site contributions to sum")
        var s = parts[0].schur, l = parts[0].logDet, n = parts[0].rows
        for part in parts.dropFirst() {
            for k in 0..<s.storage.count { s.storage[k] += part.schur.storage[k] }
            for k in 0..<l.storage.count { l.storage[k] += part.logDet.storage[k] }
            n += part.rows
        }
        schur = s; logDet = l; rows = n
    }

    /// Number of fixed effects p.
    public var fixedCount: Int { schur.rows - 1 }
}

public enum ProfiledCriterion {
    /// The REML criterion or ML deviance, with derivatives of the totals' order.
    public static func evaluate(_ t: LMMTotals, method: EstimationMethod) throws -> ScalarJet {
        let p = t.fixedCount
        let n = Double(t.rows)
        guard t.rows > p else { throw CriterionError.tooFewRows(rows: t.rows, parameters: p) }
        var l = t.schur
        do { try l.choleskyInPlace() } catch LinearAlgebraError.notPositiveDefinite(let k) {
            throw k < p ? CriterionError.rankDeficient : CriterionError.perfectFit
        }
        // relative rank check on A's pivots
        let a = t.schur.valueMatrix
        for i in 0..<p where l.value(i, i) * l.value(i, i) < 1e-10 * max(a[i, i], 1e-300) {
            throw CriterionError.rankDeficient
        }
        var d = t.logDet
        let nu = method == .reml ? n - Double(p) : n
        d.storage[0] += nu * (1 + log(2 * Double.pi / nu))
        let space = l.space
        let kernel = JetKernel(space)
        d.storage.withUnsafeMutableBufferPointer { dp in
            l.storage.withUnsafeBufferPointer { lp in
                if method == .reml {
                    for i in 0..<p { kernel.logAdd(dp.baseAddress!, lp.baseAddress! + l.offset(i, i), 2) }
                }
                kernel.logAdd(dp.baseAddress!, lp.baseAddress! + l.offset(p, p), 2 * nu)
            }
        }
        return d
    }

    /// β̂, σ̂ and the unscaled covariance A⁻¹ at the totals' θ.
    public static func estimates(_ t: LMMTotals, method: EstimationMethod) throws
        -> (beta: [Double], sigma: Double, unscaledCovariance: Matrix, residualSumOfSquares: Double)
    {
        let p = t.fixedCount
        let s = t.schur.valueMatrix
        var a = Matrix(rows: p, cols: p)
        var g = [Double](repeating: 0, count: p)
        for j in 0..<p { g[j] = s[j, p]; for i in 0..<p { a[i, j] = s[i, j] } }
        let la: Matrix
        do { la = try Dense.cholesky(a) } catch { throw CriterionError.rankDeficient }
        let beta = Dense.solveLowerTranspose(la, Dense.solveLower(la, g))
        var r2 = s[p, p]
        for j in 0..<p { r2 -= g[j] * beta[j] }
        guard r2 > 0 else { throw CriterionError.perfectFit }
        let nu = method == .reml ? Double(t.rows - p) : Double(t.rows)
        return (beta, (r2 / nu).squareRoot(), Dense.inverseFromCholesky(la), r2)
    }
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

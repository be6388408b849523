// Each fixed-effects column's mean and spread over the used rows, pooled
// from the sites' column sums and sums of squares. Diagnostics that judge
// the size of an estimate (separation) or the conditioning of a design
// (uncentred covariates) use them, so that neither depends on a
// covariate's units: an intercept of 69 from a year coded 95-97 is not
// separation, a log-odds ratio of 40 per standard deviation is.

import Foundation
import Protocol
import Math

struct ColumnScale {
    let names: [String]
    let means: [Double]
    let sds: [Double]

    init?(prepared: [PrepareReply], names: [String]) {
        let p = names.count
        guard !prepared.isEmpty, prepared.allSatisfy({ $0.summary.columnSums?.count == p && $0.summary.columnSquareSums?.count == p }) else { return nil }
        let n = Double(prepared.reduce(0) { $0 + $1.summary.used })
        guard n > 1 else { return nil }
        var sums = [Double](repeating: 0, count: p), squares = sums
        for r in prepared {
            for j in 0..<p { sums[j] += r.summary.columnSums![j]; squares[j] += r.summary.columnSquareSums![j] }
        }
        self.names = names
        means = sums.map { $0 / n }
        sds = (0..<p).map { j in max(0, (squares[j] - sums[j] * sums[j] / n) / (n - 1)).squareRoot() }
    }

    /// A column that does not vary (the intercept): its coefficient moves the
    /// linear predictor at the average covariate profile.
    func isConstant(_ j: Int) -> Bool { sds[j] <= 1e-12 * max(1, abs(means[j])) }

    /// How far each coefficient moves the linear predictor: |β_j|·SD_j for a
    /// covariate, |η at the average profile| for a constant column.
    func linkScaleSizes(_ beta: [Double]) -> [Double] {
        let etaAtMean = zip(beta, means).reduce(0) { $0 + $1.0 * $1.1 }
        return beta.indices.map { j in isConstant(j) ? abs(etaAtMean) : abs(beta[j]) * sds[j] }
    }

    /// Covariates whose mean is far from zero relative to their spread: the
    /// intercept is then an extrapolation to 0 and nearly collinear with them.
    func uncentred(threshold: Double = 10) -> [(name: String, mean: Double, sd: Double)] {
        names.indices.filter { !isConstant($0) && abs(means[$0]) > threshold * sds[$0] }
            .map { (names[$0], means[$0], sds[$0]) }
    }
}

/// The optimizer's coordinates for the fixed effects: β = T β̃, with each
/// covariate centred and scaled by its pooled mean and SD (the intercept
/// absorbing the centring). A linear change of coordinates at the
/// coordinator only: sites still receive β and answer in β, and the
/// gradient and Hessian are carried over exactly (g̃ = Tᵀg, H̃ = TᵀHT). Why:
/// a covariate in thousands, or one far from zero (a year coded 95-97),
/// makes the Hessian in β ill-conditioned and the trust region's radius
/// meaningless; in β̃ every direction has the scale of one SD.
struct Standardization {
    let t: Matrix

    init(scale: ColumnScale?, p: Int) {
        var t = Matrix.identity(p)
        if let scale, scale.means.count == p {
            let intercept = (0..<p).first { scale.isConstant($0) && abs(scale.means[$0] - 1) < 1e-12 }
            for j in 0..<p where !scale.isConstant(j) {
                if let c = intercept {
                    t[j, j] = 1 / scale.sds[j]
                    t[c, j] = -scale.means[j] / scale.sds[j]
                } else {
                    // No intercept to absorb a centring: scale by the root mean square.
                    let rms = (scale.sds[j] * scale.sds[j] + scale.means[j] * scale.means[j]).squareRoot()
                    if rms > 0 { t[j, j] = 1 / rms }
                }
            }
        }
        self.t = t
    }

    /// β from the optimizer's β̃.
    func beta(_ tilde: [Double]) -> [Double] {
        (0..<t.rows).map { i in (0..<t.cols).reduce(0) { $0 + t[i, $1] * tilde[$1] } }
    }

    /// An evaluation in (θ, β) carried over to (θ, β̃).
    func transformed(_ e: BoundedNewton.Evaluation, thetaCount m: Int) -> BoundedNewton.Evaluation {
        let p = t.rows, n = m + p
        // Full transform J = diag(I_m, T): g̃ = Jᵀg, H̃ = JᵀHJ.
        var j = Matrix.identity(n)
        for a in 0..<p { for b in 0..<p { j[m + a, m + b] = t[a, b] } }
        let jt = Dense.transpose(j)
        let g = (0..<n).map { i in (0..<n).reduce(0) { $0 + jt[i, $1] * e.gradient[$1] } }
        let h = Dense.multiply(jt, Dense.multiply(e.hessian, j))
        return .init(value: e.value, gradient: g, hessian: h)
    }

    /// Cov(β) = T Cov(β̃) Tᵀ.
    func covariance(_ tilde: Matrix) -> Matrix {
        Dense.multiply(t, Dense.multiply(tilde, Dense.transpose(t)))
    }
}

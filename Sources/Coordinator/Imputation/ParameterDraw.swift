// One draw of an imputation model's parameters from their posterior
// approximation, made at the coordinator from the federated fit, so that the
// M imputations reflect the uncertainty of the fitted model (proper multiple
// imputation). The scheme (README "Multiple imputation"):
//   σ*² = σ̂² (n − p) / g,  g ~ χ²(n − p)                  (gaussian models)
//   log θ*_k ~ N(log θ̂_k, ·) for diagonal θ (a variance part can only be
//       positive; the log scale is where its likelihood is close to normal),
//       off-diagonal θ on their own scale, jointly normal with covariance
//       2 H⁻¹ mapped by the delta method, H the Hessian of the deviance
//       (REML criterion for LMMs; Laplace deviance in (θ, β) for GLMMs);
//       a diagonal θ̂ on its bound 0 stays 0 (the data support no variance);
//   β* ~ N(β̂, (σ*² / σ̂²) Cov(β̂))                           (gaussian models)
//   (θ*, β*) drawn jointly from the GLMM's 2 H⁻¹              (logistic GLMMs)
//   β* ~ N(β̂, Cov(β̂))                                        (logistic glm)
// Every number comes from ImputationStream.parameters(seed, m, variable).

import Foundation
import Math
import Protocol

enum ParameterDraw {
    struct Draw: Sendable { var theta: [Double]; var beta: [Double]; var sigma: Double }

    static func draw(_ fit: FitResult, spec: ModelSpec, stream: inout ImputationStream) throws -> Draw {
        let beta = fit.fixedEffects.map(\.estimate)
        let p = beta.count
        let cov = Matrix(rows: p, cols: p, data: (0..<p).flatMap { j in (0..<p).map { fit.vcov[$0][j] } })
        let bounds = spec.covarianceStructure.lowerBounds
        if spec.family == .gaussian {
            let df = Double(fit.nObs - p)
            guard df >= 1 else { throw SettingError("\(.impute): the imputation model \(spec.formula) has no residual degrees of freedom") }
            let sigma = fit.sigma * (df / stream.chiSquare(df)).squareRoot()
            var theta = fit.theta
            if !spec.isFlat {
                guard let o = fit.optimum, o.x.count == theta.count else { throw SettingError("\(.impute): the imputation model's optimum is not available") }
                if o.recoded && spec.terms.contains(where: { $0.columns.count > 1 }) {
                    throw SettingError("\(.impute): the imputation model \(spec.formula) was fitted centred (a covariate far from 0); centre it in the formula (e.g. I(x - 2000)) so that θ's draw is on the model's own scale")
                }
                theta = try normalDraw(center: theta, covariance: scaled(inverse(o.hessian), 2), bounds: bounds, stream: &stream)
            }
            let scale = sigma / fit.sigma
            let b = try multivariateNormal(mean: beta, covariance: scaled(cov, scale * scale), stream: &stream)
            return Draw(theta: theta, beta: b, sigma: sigma)
        }
        if spec.isFlat {
            return Draw(theta: [], beta: try multivariateNormal(mean: beta, covariance: cov, stream: &stream), sigma: 1)
        }
        guard let o = fit.optimum, o.x.count == fit.theta.count + p else { throw SettingError("\(.impute): the imputation model's optimum is not available") }
        let joint = try normalDraw(center: fit.theta + beta, covariance: scaled(inverse(o.hessian), 2),
                                   bounds: bounds + [Double](repeating: -.infinity, count: p), stream: &stream)
        return Draw(theta: Array(joint.prefix(fit.theta.count)), beta: Array(joint.suffix(p)), sigma: 1)
    }

    /// A normal draw around `center` in which entries with a lower bound of
    /// 0 are drawn on the log scale (delta method), and entries on that bound
    /// are held at 0.
    static func normalDraw(center: [Double], covariance: Matrix, bounds: [Double], stream: inout ImputationStream) throws -> [Double] {
        let free = center.indices.filter { !(bounds[$0] == 0 && center[$0] < 1e-6) }
        let logScale = free.map { bounds[$0] == 0 }
        var c = Matrix(rows: free.count, cols: free.count)
        for (a, i) in free.enumerated() {
            for (b, j) in free.enumerated() {
                c[a, b] = covariance[i, j] / (logScale[a] ? center[i] : 1) / (logScale[b] ? center[j] : 1)
            }
        }
        let mean = free.enumerated().map { a, i in logScale[a] ? Foundation.log(center[i]) : center[i] }
        let t = try multivariateNormal(mean: mean, covariance: c, stream: &stream)
        var out = center.map { _ in 0.0 }
        for (a, i) in free.enumerated() { out[i] = logScale[a] ? Foundation.exp(t[a]) : t[a] }
        return out
    }

    static func multivariateNormal(mean: [Double], covariance: Matrix, stream: inout ImputationStream) throws -> [Double] {
        guard !mean.isEmpty else { return [] }
        let l: Matrix
        do { l = try Dense.cholesky(covariance) } catch {
            throw SettingError("\(.impute): the imputation model's parameter covariance is not positive definite (a parameter is not determined by the data); simplify the imputation model")
        }
        let z = mean.map { _ in stream.normal() }
        return mean.indices.map { i in mean[i] + (0...i).reduce(0) { $0 + l[i, $1] * z[$1] } }
    }

    static func inverse(_ h: Matrix) throws -> Matrix {
        do { return Dense.inverseFromCholesky(try Dense.cholesky(h)) } catch {
            throw SettingError("\(.impute): the imputation model's Hessian is not positive definite at its optimum; simplify the imputation model")
        }
    }

    static func scaled(_ m: Matrix, _ s: Double) -> Matrix { Matrix(rows: m.rows, cols: m.cols, data: m.data.map { $0 * s }) }
}

// Population-averaged quantities of a GLMM over one site's rows: the
// marginal mean of row i integrates the conditional mean over the random
// effects. Row i's random part zᵢᵀb, summed over the terms, is normal with
// variance sᵢ² = Σ_f ‖T_fᵀ z_f,ᵢ‖² (b_f = T_f u, u ~ N(0, I)), so for any
// terms, scalar or vector, nested or not,
//   m(ηᵢ) = ∫ g⁻¹(ηᵢ + sᵢ u) φ(u) du,
// one-dimensional, by Gauss-Hermite quadrature. The site sums, over its rows, m and the
// average marginal effect of each fixed-effects column (the derivative
// βⱼ ∂m/∂η, or for a 0/1 factor column the discrete change m(xⱼ = 1) −
// m(xⱼ = 0)), each with its gradient in β for the delta method.

import Foundation

public struct GLMMMarginalSums: Sendable, Equatable {
    public var rows: Int
    /// 1 + p sums: Σ m, then per column j Σ AMEⱼ.
    public var values: [Double]
    /// (1 + p) × p, column-major: the gradient in β of each sum (row q, column k).
    public var gradients: [Double]
    public init(rows: Int, values: [Double], gradients: [Double]) { self.rows = rows; self.values = values; self.gradients = gradients }
}

public enum GLMMMarginal {
    /// The inverse link and its first two derivatives, unclamped.
    @inline(__always) static func mean(_ link: Link, _ eta: Double) -> (mu: Double, d1: Double, d2: Double) {
        switch link {
        case .logit:
            let mu = 1 / (1 + Foundation.exp(-eta)), d1 = mu * (1 - mu)
            return (mu, d1, d1 * (1 - 2 * mu))
        case .probit:
            let d1 = Foundation.exp(-0.5 * eta * eta) / (2 * Double.pi).squareRoot()
            return (0.5 * Foundation.erfc(-eta / 2.0.squareRoot()), d1, -eta * d1)
        case .cloglog:
            let e = Foundation.exp(eta), d1 = e * Foundation.exp(-e)
            return (-Foundation.expm1(-e), d1, d1 * (1 - e))
        case .log:
            let e = Foundation.exp(eta)
            return (e, e, e)
        case .identity:
            return (eta, 1, 0)
        }
    }

    /// ∫ g⁻¹, g⁻¹′ and g⁻¹″ at η + σ s u over u ~ N(0, 1).
    @inline(__always) static func integrated(_ link: Link, _ eta: Double, spread: Double, rule: GaussHermiteRule) -> (m: Double, m1: Double, m2: Double) {
        var m = 0.0, m1 = 0.0, m2 = 0.0
        for (u, w) in zip(rule.nodes, rule.weights) {
            let v = mean(link, eta + spread * u)
            m += w * v.mu; m1 += w * v.d1; m2 += w * v.d2
        }
        return (m, m1, m2)
    }

    /// Each row's SD sᵢ of its random part at θ.
    public static func spreads(_ data: GLMMSiteData, theta: [Double]) -> [Double] {
        var variance = [Double](repeating: 0, count: data.rows)
        for f in 0..<data.structure.factorCount {
            let t = data.structure.factorMatrix(f, theta: theta), r = t.rows
            for i in 0..<data.rows {
                for c in 0..<r {
                    var v = 0.0   // (Tᵀz)_c
                    for a in 0..<r { v += t[a, c] * data.z[f][i * r + a] }
                    variance[i] += v * v
                }
            }
        }
        return variance.map { $0.squareRoot() }
    }

    /// The site's sums at (β, θ) with a `points`-point rule; `discrete[j]`
    /// marks the 0/1 factor columns whose effect is a discrete change.
    public static func sums(_ data: GLMMSiteData, beta: [Double], theta: [Double], discrete: [Bool], points: Int) -> GLMMMarginalSums {
        let p = data.p, q = 1 + p, link = data.family.link
        let rule = GaussHermiteRule.cached(points: points)
        let spreads = spreads(data, theta: theta)
        var values = [Double](repeating: 0, count: q), gradients = [Double](repeating: 0, count: q * p)
        for i in 0..<data.rows {
            let x = Array(data.x[(i * p)..<((i + 1) * p)])
            var eta = data.offset[i]
            for k in 0..<p { eta += x[k] * beta[k] }
            let spread = spreads[i]
            let at = integrated(link, eta, spread: spread, rule: rule)
            values[0] += at.m
            for k in 0..<p { gradients[0 + k * q] += x[k] * at.m1 }
            for j in 0..<p {
                if discrete[j] {
                    let eta1 = eta + beta[j] * (1 - x[j]), eta0 = eta - beta[j] * x[j]
                    let one = integrated(link, eta1, spread: spread, rule: rule), zero = integrated(link, eta0, spread: spread, rule: rule)
                    values[1 + j] += one.m - zero.m
                    for k in 0..<p {
                        let x1 = k == j ? 1 : x[k], x0 = k == j ? 0 : x[k]
                        gradients[1 + j + k * q] += x1 * one.m1 - x0 * zero.m1
                    }
                } else {
                    values[1 + j] += beta[j] * at.m1
                    for k in 0..<p { gradients[1 + j + k * q] += (k == j ? at.m1 : 0) + beta[j] * x[k] * at.m2 }
                }
            }
        }
        return GLMMMarginalSums(rows: data.rows, values: values, gradients: gradients)
    }
}

// Distributions and links of generalized linear mixed models, written as R's
// `binomial()` and `poisson()` families compute them (same clamping of the
// inverse link), so that deviances agree with glmer's to rounding.

import Foundation

/// The response distribution, as R's family names it. The one family type
/// of the project: the model specification carries it and the math uses it
/// (its wire spelling is the raw value; the Protocol module codes it).
public enum Family: String, Sendable, Hashable, CaseIterable { case gaussian, binomial, poisson }
/// The link function, as R names it (one type for the specification and the math).
public enum Link: String, Sendable, Hashable, CaseIterable { case identity, logit, probit, cloglog, log }

/// A GLMM's distribution and link. The gaussian family is fitted as a linear
/// mixed model (`ProfiledCriterion`), never through these functions.
public struct GLMFamily: Sendable, Equatable {
    public var distribution: Family
    public var link: Link
    public init(_ distribution: Family, _ link: Link) { self.distribution = distribution; self.link = link }

    /// Whether the pair is supported.
    public var isValid: Bool {
        switch distribution {
        case .gaussian: return false
        case .binomial: return [.logit, .probit, .cloglog].contains(link)
        case .poisson: return [.log].contains(link)
        }
    }

    static let eps = Double.ulpOfOne
    static let thresh = 30.0

    /// μ = g⁻¹(η)
    @inline(__always) public func mu(_ eta: Double) -> Double {
        switch link {
        case .logit:
            let e = eta < -Self.thresh ? Self.eps : (eta > Self.thresh ? 1 / Self.eps : Foundation.exp(eta))
            return e / (1 + e)
        case .probit:
            let t = -qnormEpsilon
            let x = min(max(eta, -t), t)
            return 0.5 * Foundation.erfc(-x / 2.0.squareRoot())
        case .cloglog:
            return max(min(-Foundation.expm1(-Foundation.exp(eta)), 1 - Self.eps), Self.eps)
        case .log:
            return max(Foundation.exp(eta), Self.eps)
        case .identity:
            return eta
        }
    }

    /// dμ/dη
    @inline(__always) public func muEta(_ eta: Double) -> Double {
        switch link {
        case .logit:
            if eta > Self.thresh || eta < -Self.thresh { return Self.eps }
            let o = Foundation.exp(-abs(eta))
            return o / ((1 + o) * (1 + o))
        case .probit:
            return max(Foundation.exp(-0.5 * eta * eta) / (2 * Double.pi).squareRoot(), Self.eps)
        case .cloglog:
            let e = min(eta, 700)
            return max(Foundation.exp(e) * Foundation.exp(-Foundation.exp(e)), Self.eps)
        case .log:
            return max(Foundation.exp(eta), Self.eps)
        case .identity:
            return 1
        }
    }

    /// V(μ)
    @inline(__always) public func variance(_ mu: Double) -> Double {
        switch distribution {
        case .gaussian: return 1
        case .binomial: return mu * (1 - mu)
        case .poisson: return mu
        }
    }

    /// −2 log p(y | μ) for one row (binomial: y successes of n trials;
    /// Poisson: n is the row's prior weight).
    @inline(__always) public func minusTwoLogLik(y: Double, n: Double, mu: Double) -> Double {
        switch distribution {
        case .gaussian: preconditionFailure("the gaussian family is fitted as a linear mixed model")
        case .binomial:
            let f = n - y
            var ll = lchoose(n, y)
            if y > 0 { ll += y * Foundation.log(mu) }
            if f > 0 { ll += f * Foundation.log1p(-mu) }
            return -2 * ll
        case .poisson:
            // n is the prior weight (1 without weights)
            return -2 * n * ((y > 0 ? y * Foundation.log(mu) : 0) - mu - Foundation.lgamma(y + 1))
        }
    }

    /// −2 log p(y | μ = y): the saturated model's term, which lme4's
    /// nAGQ > 1 objective leaves out.
    public func saturatedMinusTwoLogLik(y: Double, n: Double) -> Double {
        switch distribution {
        case .gaussian: preconditionFailure("the gaussian family is fitted as a linear mixed model")
        case .binomial: return minusTwoLogLik(y: y, n: n, mu: n > 0 ? min(max(y / n, 0), 1) : 0.5)
        case .poisson: return y > 0 ? minusTwoLogLik(y: y, n: n, mu: y) : 0
        }
    }

    /// Prior-weighted Fisher weight n (dμ/dη)² / V(μ) and working residual (y/n − μ)/(dμ/dη).
    @inline(__always) public func weightAndResidual(y: Double, n: Double, eta: Double) -> (w: Double, r: Double, mu: Double) {
        weightAndResidual(y: y, n: n, mu: mu(eta), muEta: muEta(eta))
    }

    /// The same from μ = `mu(η)` and dμ/dη = `muEta(η)` already at hand (PIRLS
    /// keeps them from its step's deviance; the exact derivatives reuse them).
    @inline(__always) func weightAndResidual(y: Double, n: Double, mu m: Double, muEta d: Double) -> (w: Double, r: Double, mu: Double) {
        switch distribution {
        case .gaussian: preconditionFailure("the gaussian family is fitted as a linear mixed model")
        case .binomial:
            let v = max(variance(m), Self.eps)
            return (n * d * d / v, (y / n - m) / d, m)
        case .poisson:
            return (n * d * d / max(m, Self.eps), (y - m) / d, m)
        }
    }

    @inline(__always) func lchoose(_ n: Double, _ k: Double) -> Double {
        if k == 0 || k == n { return 0 }
        return Foundation.lgamma(n + 1) - Foundation.lgamma(k + 1) - Foundation.lgamma(n - k + 1)
    }
}

/// R's probit threshold: −qnorm(DBL_EPSILON).
let qnormEpsilon = -8.125890664701906

extension GLMFamily {
    /// The largest share one row holds of the working weights Σ w at `eta`,
    /// over all rows and over the rows of each group (`groups[g][i]`: row
    /// i's group under grouping g): an honest β spreads the weights, a
    /// crafted one steep in a column puts them on the row nearest its
    /// threshold, and sums then describe that row. 1 when the weights
    /// vanished entirely (every fitted probability at 0 or 1).
    public func largestWeightShare(y: [Double], n: [Double], eta: [Double], groups: [[Int]] = []) -> Double {
        var total = [[Double]](repeating: [0], count: 1), largest = total
        for g in groups { let k = (g.max() ?? -1) + 1; total.append([Double](repeating: 0, count: k)); largest.append(total.last!) }
        var all = 0.0, top = 0.0   // over all rows: kept apart from the per-group arrays, the loop's one hot sum
        for i in eta.indices {
            let (m, d) = meanAndSlope(eta[i])   // one exp for the logit (PIRLS's μ and dμ/dη)
            let w = weightAndResidual(y: y[i], n: n[i], mu: m, muEta: d).w
            all += w; top = max(top, w)
            for (g, grouping) in groups.enumerated() {
                let c = grouping[i]
                total[g + 1][c] += w; largest[g + 1][c] = max(largest[g + 1][c], w)
            }
        }
        total[0][0] = all; largest[0][0] = top
        if !eta.isEmpty && !(total[0][0] > 0) { return 1 }
        var share = 0.0
        for (t, l) in zip(total, largest) { for (a, b) in zip(t, l) where a > 0 { share = max(share, b / a) } }
        return share
    }

    /// x β + offset for rows × p row-major `x`.
    public static func linearPredictor(x: [Double], p: Int, beta: [Double], offset: [Double]) -> [Double] {
        offset.indices.map { i in
            var v = offset[i]
            for j in 0..<p { v += x[i * p + j] * beta[j] }
            return v
        }
    }
}


// One site's rows of a flat model (no random effects), and the two things
// the sites compute for it: an IRLS step of R's glm.fit (the weighted normal
// equations at a working point) and the per-cluster sums of the estimating
// functions that sandwich::vcovCL's meat adds up.

import Foundation

/// A flat model's rows at one site.
public struct FlatSite: Sendable {
    /// Nil for the gaussian family (lm).
    public var family: GLMFamily?
    public var p: Int
    /// rows × p, row-major.
    public var x: [Double]
    /// The response; for a binomial model, successes.
    public var y: [Double]
    /// Binomial: trials (1 for a 0/1 response). Otherwise the prior weights (1 without).
    public var n: [Double]
    public var offset: [Double]
    /// The cluster of each row (0 ..< clusterCount; all 0 when the cluster is the site).
    public var clusters: [Int]
    public var clusterCount: Int

    public init(family: GLMFamily?, p: Int, x: [Double], y: [Double], n: [Double], offset: [Double],
                clusters: [Int]? = nil, clusterCount: Int = 1) {
        self.family = family; self.p = p; self.x = x; self.y = y; self.n = n; self.offset = offset
        self.clusters = clusters ?? [Int](repeating: 0, count: y.count); self.clusterCount = clusters == nil ? 1 : clusterCount
    }

    public var rows: Int { y.count }

    /// Rows in each cluster.
    public var clusterSizes: [Int] {
        var out = [Int](repeating: 0, count: clusterCount)
        for c in clusters { out[c] += 1 }
        return out
    }

    func eta(_ beta: [Double], row i: Int) -> Double {
        var e = offset[i]
        for j in 0..<p { e += x[i * p + j] * beta[j] }
        return e
    }

    /// glm.fit's starting μ (the family's `initialize`).
    func startMu(row i: Int, family: GLMFamily) -> Double {
        switch family.distribution {
        case .binomial: return (y[i] + 0.5) / (n[i] + 1)
        case .poisson, .gaussian: return y[i] + 0.1
        }
    }

    /// The response on μ's scale: a binomial row's proportion, a count as it is.
    func mean(row i: Int, family: GLMFamily) -> Double {
        family.distribution == .binomial ? y[i] / n[i] : y[i]
    }

    /// R's deviance residual of one row at μ (binomial: y successes of n).
    static func devianceResidual(y: Double, n: Double, mu: Double, family: GLMFamily) -> Double {
        family.minusTwoLogLik(y: y, n: n, mu: mu) - family.saturatedMinusTwoLogLik(y: y, n: n)
    }

    /// One IRLS step of glm.fit: at `beta` (nil: the family's start μ), the
    /// deviance there, XᵀWX (p×p, column-major) and XᵀWz, with z the working
    /// response less the offset and W the working weights n μ'(η)²/V(μ).
    /// Rows with zero weight are left out, as glm.fit does.
    public func normalEquations(at beta: [Double]?) -> (deviance: Double, information: [Double], working: [Double]) {
        guard let family else { preconditionFailure("the gaussian flat model is fitted from its θ-free sums") }
        var info = [Double](repeating: 0, count: p * p), work = [Double](repeating: 0, count: p)
        var deviance = 0.0
        for i in 0..<rows where n[i] > 0 {
            // glm.fit: η = g(mustart) at the start, and μ = g⁻¹(η) always.
            let eta = beta.map { self.eta($0, row: i) } ?? family.linkValue(startMu(row: i, family: family))
            let mu = family.mu(eta), d = family.muEta(eta)
            deviance += Self.devianceResidual(y: y[i], n: n[i], mu: mu, family: family)
            let w = n[i] * d * d / family.variance(mu)
            let z = eta - offset[i] + (mean(row: i, family: family) - mu) / d
            for a in 0..<p {
                let xa = x[i * p + a] * w
                work[a] += xa * z
                for b in 0...a { info[a * p + b] += xa * x[i * p + b] }
            }
        }
        for a in 0..<p { for b in 0..<a { info[b * p + a] = info[a * p + b] } }
        return (deviance, info, work)
    }

    /// The estimating function's scalar factor for each row, as
    /// sandwich::estfun gives it: lm, w·(y − offset − xβ); glm, the working
    /// residual at `beta` times the working weight at `weightsAt` (glm.fit's
    /// last iteration took its weights there; nil: at the start μ).
    public func scoreFactors(beta: [Double], weightsAt: [Double]?) -> [Double] {
        (0..<rows).map { i in
            let eta = self.eta(beta, row: i)
            guard let family else { return n[i] * (y[i] - eta) }
            guard n[i] > 0 else { return 0 }
            let d = family.muEta(eta), residual = (mean(row: i, family: family) - family.mu(eta)) / d
            let etaW = weightsAt.map { self.eta($0, row: i) } ?? family.linkValue(startMu(row: i, family: family))
            let muW = family.mu(etaW), dW = family.muEta(etaW)
            return residual * n[i] * dW * dW / family.variance(muW)
        }
    }

    /// Σ over rows of x_i·factor_i per cluster, s_c (p values each).
    public func clusterScores(beta: [Double], weightsAt: [Double]?) -> [[Double]] {
        let f = scoreFactors(beta: beta, weightsAt: weightsAt)
        var s = [[Double]](repeating: [Double](repeating: 0, count: p), count: clusterCount)
        for i in 0..<rows { for j in 0..<p { s[clusters[i]][j] += x[i * p + j] * f[i] } }
        return s
    }

    /// Σ_c s_c s_cᵀ over the site's clusters (p×p, column-major).
    public func scoreCrossProducts(beta: [Double], weightsAt: [Double]?) -> [Double] {
        var out = [Double](repeating: 0, count: p * p)
        for s in clusterScores(beta: beta, weightsAt: weightsAt) {
            for b in 0..<p { for a in 0..<p { out[a + b * p] += s[a] * s[b] } }
        }
        return out
    }

    /// Σ −2 log p(y | μ = y): with the deviance, −2 log L (R's glm aic less 2p).
    public var saturatedConstant: Double {
        guard let family else { return 0 }
        var s = 0.0
        for i in 0..<rows where n[i] > 0 { s += family.saturatedMinusTwoLogLik(y: y[i], n: n[i]) }
        return s
    }
}

extension GLMFamily {
    /// η = g(μ), the link itself (glm.fit's start: η = linkfun(mustart)).
    public func linkValue(_ mu: Double) -> Double {
        switch link {
        case .logit: return Foundation.log(mu / (1 - mu))
        case .log: return Foundation.log(mu)
        case .cloglog: return Foundation.log(-Foundation.log1p(-mu))
        case .identity: return mu
        case .probit:
            // Φ⁻¹(μ) by Newton's method on Φ(x) = erfc(−x/√2)/2 from a logistic start.
            var x = Foundation.log(mu / (1 - mu)) / 1.702
            for _ in 0..<60 {
                let phi = 0.5 * Foundation.erfc(-x / 2.0.squareRoot())
                let dens = Foundation.exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
                let step = (phi - mu) / dens
                x -= step
                if abs(step) <= 1e-15 * max(1, abs(x)) { break }
            }
            return x
        }
    }
}

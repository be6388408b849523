// Flat models: a formula without random-effects terms is an ordinary
// regression, fitted exactly as R fits it on the pooled rows. gaussian: lm,
// from the θ-free sums every site sends with its prepare answer (no further
// round). binomial and Poisson: glm, by glm.fit's own iteration (IRLS from
// the family's mustart, its convergence rule, its covariance from the last
// iteration's weights), each iteration one round in which every site sums
// its weighted normal equations. With a cluster, the finalize answers carry
// the sums sandwich::vcovCL's meat needs (RobustCovariance).

import Foundation
import Math
import Protocol

struct FlatObjective: FitObjective {
    let session: FitSession
    private(set) var evaluations = 0
    /// gaussian: the sites' sums [X y]ᵀ[X y], and Σ log w.
    private var totals: LMMTotals? = nil
    private let logWeightSum: Double
    /// glm: the fit and the null deviance.
    private var irls: IRLS? = nil
    private var nullDeviance: Double? = nil

    struct IRLS {
        var beta: [Double]
        var deviance: Double
        /// (XᵀWX)⁻¹ with W from the last iteration's working point.
        var unscaled: Matrix
        /// That working point (nil: the start).
        var weightsAt: [Double]?
        var iterations: Int
        var converged: Bool
    }

    /// glm.control()'s defaults.
    static let epsilon = 1e-8, maxIterations = 25

    static func validate(_ spec: ModelSpec, options: FitOptions) throws {
        if options.nAGQ > 1 { throw SettingError("\(.nAGQ) applies to GLMMs; a model without random-effects terms has no quadrature") }
    }

    /// lm: the LMM's exact centring of the sums; glm: none.
    static func recoding(_ session: FitSession) throws -> Centring? {
        session.spec.family == .gaussian ? try LMMObjective.recoding(session) : nil
    }

    init(_ session: FitSession, options: FitOptions) throws {
        self.session = session
        logWeightSum = session.prepared.reduce(0.0) { $0 + ($1.summary.logWeightSum ?? 0) }
    }

    var parameterNames: [String] { [] }
    var lowerBounds: [Double] { [] }
    var isLinear: Bool { session.spec.family == .gaussian }
    var intercept: Int? { session.spec.fixed.firstIndex { $0.expr == .number(1) } }

    mutating func minimize(_ optimizer: BoundedNewton) throws -> BoundedNewton.Result {
        if isLinear {
            let spec = session.spec
            guard let blocks = try LMMObjective.siteBlocks(session) else { throw FitFailure("the sites sent no sums for a linear model") }
            let t = LMMTotals(summing: try blocks.map { try LMMSite.evaluate($0, structure: spec.covarianceStructure, theta: [], order: 0) })
            totals = t
            // −2 log L of lm (ML, σ̂² = RSS/n), less Σ log w with prior weights.
            let value = try ProfiledCriterion.evaluate(t, method: .ml).value - logWeightSum
            return result(value: value, converged: true, message: "least squares, exact: solved from the sites' sums (no iteration)")
        }
        let fit = try iterate(columns: Array(0..<session.spec.fixedCount))
        irls = fit
        // R's null deviance: the intercept-only fit with the same offset and
        // weights (or μ = g⁻¹(offset) without an intercept).
        if let c = intercept {
            nullDeviance = try iterate(columns: [c]).deviance
        } else {
            nullDeviance = try step(at: [Double](repeating: 0, count: session.spec.fixedCount)).deviance
        }
        let message = fit.converged
            ? "IRLS converged in \(fit.iterations) iterations (glm.fit: relative deviance change below \(Self.epsilon))"
            : "IRLS did not converge in \(Self.maxIterations) iterations (glm.fit's limit); the outcome may be separated by a covariate"
        return result(value: fit.deviance, converged: fit.converged, message: message)
    }

    func result(value: Double, converged: Bool, message: String) -> BoundedNewton.Result {
        BoundedNewton.Result(x: [], value: value, gradient: [], hessian: Matrix(rows: 0, cols: 0), evaluations: evaluations,
                             iterations: irls?.iterations ?? 0, converged: converged, message: message,
                             newtonDecrement: nil, scaledGradient: nil, atBound: [])
    }

    /// One round: every site's deviance, XᵀWX and XᵀWz at β (nil: the start), summed.
    mutating func step(at beta: [Double]?) throws -> (deviance: Double, information: Matrix, working: [Double]) {
        evaluations += 1
        let p = session.spec.fixedCount
        let parts = try session.evaluate(EvaluateRequest(session: session.id, theta: [], order: 2, beta: beta)) { reply, site in
            guard case .glmStep(let s) = reply else { throw unexpected(reply, site, expected: "glm_step") }
            guard s.working.count == p else { throw SiteFailure(site: site, message: "sent a GLM step for \(s.working.count) coefficients, the model has \(p)") }
            return s
        }
        var info = Matrix(rows: p, cols: p), work = [Double](repeating: 0, count: p), deviance = 0.0
        for s in parts {
            deviance += s.deviance
            for k in 0..<(p * p) { info.data[k] += s.information[k] }
            for j in 0..<p { work[j] += s.working[j] }
        }
        return (deviance, info, work)
    }

    /// glm.fit on the given columns (the others held at 0): β from the
    /// weighted normal equations at the previous point, until the deviance
    /// changes by less than ε relative; the covariance is (XᵀWX)⁻¹ at the
    /// point of the last iteration's weights, as R reports it.
    mutating func iterate(columns: [Int]) throws -> IRLS {
        let p = session.spec.fixedCount
        func restrict(_ s: (deviance: Double, information: Matrix, working: [Double])) -> (Matrix, [Double]) {
            var a = Matrix(rows: columns.count, cols: columns.count)
            for (j, cj) in columns.enumerated() { for (i, ci) in columns.enumerated() { a[i, j] = s.information[ci, cj] } }
            return (a, columns.map { s.working[$0] })
        }
        var current = try step(at: nil)
        var devold = current.deviance
        var weightsAt: [Double]? = nil
        for iteration in 1...Self.maxIterations {
            let (a, g) = restrict(current)
            guard let l = try? Dense.cholesky(a) else {
                throw FitFailure("the fixed effects are not identified (their weighted cross-product matrix is singular): some columns are collinear. Remove or merge the offending terms")
            }
            let b = Dense.solveLowerTranspose(l, Dense.solveLower(l, g))
            var beta = [Double](repeating: 0, count: p)
            for (k, c) in columns.enumerated() { beta[c] = b[k] }
            let next = try step(at: beta)
            guard next.deviance.isFinite else { throw FitFailure("the deviance is not finite at an IRLS step: fitted values at the edge of the family's range") }
            let done = abs(next.deviance - devold) / (abs(next.deviance) + 0.1) < Self.epsilon
            if done || iteration == Self.maxIterations {
                return IRLS(beta: beta, deviance: next.deviance, unscaled: Dense.inverseFromCholesky(l), weightsAt: weightsAt,
                            iterations: iteration, converged: done)
            }
            devold = next.deviance; current = next; weightsAt = beta
        }
        preconditionFailure("unreachable")
    }

    mutating func estimates(at optimum: BoundedNewton.Result) throws -> FitEstimates {
        if let totals {
            let e = try ProfiledCriterion.estimates(totals, method: .reml)   // lm's σ̂² = RSS/(n − p)
            return FitEstimates(theta: [], beta: e.beta, sigma: e.sigma, unscaledCovariance: e.unscaledCovariance,
                                residualSumOfSquares: e.residualSumOfSquares, nObs: totals.rows, method: .reml)
        }
        let fit = irls!
        var e = FitEstimates(theta: [], beta: fit.beta, sigma: 1, unscaledCovariance: fit.unscaled, nObs: session.usedRows, method: .ml)
        e.weightsAt = fit.weightsAt
        return e
    }

    func complete(_ r: inout FitResult, optimum: BoundedNewton.Result, finals: [FinalizeReply]) {
        let spec = session.spec, n = Double(r.nObs), p = spec.fixedCount
        r.varianceComponents = []; r.theta = []; r.thetaNames = []; r.icc = [:]; r.groupOrder = []
        r.dfResid = r.nObs - p
        var stats = FitResult.FlatStatistics(statistic: isLinear ? "t" : "z", dfResidual: r.dfResid, deviance: 0, logLikDF: p)
        if let totals {
            r.model.kind = "lm"; r.model.method = "least squares"
            let s = totals.schur.valueMatrix
            let rss = r.sigma * r.sigma * Double(r.dfResid)
            // Total sum of squares about the (weighted) mean with an intercept, about 0 without.
            var tss = s[p, p]
            if let c = intercept { tss -= s[c, p] * s[c, p] / s[c, c] }
            let dfTotal = Double(r.nObs - (intercept == nil ? 0 : 1))
            stats.residualStandardError = r.sigma
            stats.rSquared = 1 - rss / tss
            stats.adjRSquared = 1 - (1 - stats.rSquared!) * dfTotal / Double(r.dfResid)
            let numdf = p - (intercept == nil ? 0 : 1)
            if numdf > 0 {
                stats.fStatistic = .init(value: (tss - rss) / Double(numdf) / (r.sigma * r.sigma), numdf: numdf, dendf: r.dfResid)
                stats.fPValue = FDistribution.upperTail(stats.fStatistic!.value, numdf: Double(numdf), dendf: Double(r.dfResid))
            }
            stats.deviance = rss
            stats.logLikDF = p + 1
            // summary.lm's p-values and confint.lm's intervals: Student's t on n − p.
            let df = Double(r.dfResid), q = StudentT.quantile(0.975, degreesOfFreedom: df)
            for k in r.fixedEffects.indices {
                let e = r.fixedEffects[k]
                r.fixedEffects[k].pValue = StudentT.twoSidedPValue(e.statistic, degreesOfFreedom: df)
                r.fixedEffects[k].ciLower = e.estimate - q * e.stdError
                r.fixedEffects[k].ciUpper = e.estimate + q * e.stdError
            }
        } else if let fit = irls {
            r.model.kind = "glm"; r.model.method = "IRLS"
            stats.dispersion = 1
            stats.deviance = fit.deviance
            stats.nullDeviance = nullDeviance
            stats.dfNull = r.nObs - (intercept == nil ? 0 : 1)
            stats.iterations = fit.iterations
            let minusTwoLogLik = fit.deviance + finals.reduce(0) { $0 + ($1.saturatedDeviance ?? 0) }
            r.loglik = -minusTwoLogLik / 2
            r.objective = minusTwoLogLik
            r.aic = minusTwoLogLik + 2 * Double(p)
            r.bic = minusTwoLogLik + log(n) * Double(p)
        }
        r.flat = stats
        if let robust = r.robust, isLinear {
            // lm's robust table: t on the residual degrees of freedom (coeftest).
            r.robust = robust.withStatistics(names: spec.fixed.map(\.name), estimates: r.fixedEffects.map(\.estimate), df: Double(r.dfResid))
        } else if let robust = r.robust {
            r.robust = robust.withStatistics(names: spec.fixed.map(\.name), estimates: r.fixedEffects.map(\.estimate), df: nil)
        }
    }
}

/// sandwich::vcovCL from the sites' score sums: V = U·M·U·G/(G−1), times
/// (n−1)/(n−k) for HC1, with U the unscaled covariance (XᵀWX)⁻¹ and
/// M = Σ_g s_g s_gᵀ; sandwich's default type is HC1 for lm, HC0 for glm.
enum RobustCovariance {
    static func build(_ cluster: Grouping, finals: [FinalizeReply], sites: [String], unscaled u: Matrix,
                      nObs: Int, linear: Bool) throws -> (vcov: Matrix, clusters: Int, cadjust: Double, hc1: Double) {
        let p = u.rows
        var meat = Matrix(rows: p, cols: p), clusters = 0
        for (f, site) in zip(finals, sites) {
            switch cluster {
            case .site:
                guard let s = f.score, s.count == p else { throw SiteFailure(site: site, message: "sent no score of \(p) values for the robust covariance") }
                for b in 0..<p { for a in 0..<p { meat[a, b] += s[a] * s[b] } }
                clusters += 1
            case .withinSite, .crossed:   // the coordinator never clusters by a crossed factor
                guard let m = f.scoreCrossProducts, m.count == p * p, let g = f.clusters else {
                    throw SiteFailure(site: site, message: "sent no score cross-products of \(p)×\(p) values for the robust covariance")
                }
                for k in 0..<(p * p) { meat.data[k] += m[k] }
                clusters += g
            }
        }
        guard clusters > 1 else {
            throw FitFailure("robust standard errors need at least 2 clusters; the rows used form \(clusters)")
        }
        let cadjust = Double(clusters) / Double(clusters - 1)
        let hc1 = linear ? Double(nObs - 1) / Double(nObs - p) : 1
        var v = Dense.multiply(Dense.multiply(u, meat), u)
        for k in 0..<v.data.count { v.data[k] *= cadjust * hc1 }
        // Exactly symmetric, as the sums are.
        for j in 0..<p { for i in 0..<j { let m = (v[i, j] + v[j, i]) / 2; v[i, j] = m; v[j, i] = m } }
        return (v, clusters, cadjust, hc1)
    }
}

// The federated GLMM fit: each round sends (θ, β) to every site, which finds
// its conditional modes locally and returns its Laplace (or adaptive
// Gauss–Hermite) contribution with gradient and Hessian; the coordinator
// takes trust-region Newton steps on the sum. As lme4 does by default, the
// fixed effects' covariance is the β block of 2·H⁻¹ at the optimum.

import Foundation
import Math
import Protocol

public enum GLMMFit {
    public static func run(_ federation: Federation, dataset: String, spec: ModelSpec,
                           options: FitOptions = FitOptions()) throws -> FitResult {
        let started = Date()
        let roundsBefore = federation.rounds
        let nAGQ = options.nAGQ
        let structure = spec.covarianceStructure
        if nAGQ > 1 && !(structure.terms.count == 1 && structure.terms[0].dimension == 1) {
            throw UsageError("--nagq \(nAGQ) needs a single scalar random-effects term such as (1 | site); use --nagq 1 (Laplace) for this model")
        }
        guard (1...25).contains(nAGQ) else { throw UsageError("--nagq must be between 1 and 25") }
        let session = UUID().uuidString.lowercased()
        let prepared = try federation.round({ _ in .prepare(PrepareRequest(session: session, dataset: dataset, model: spec)) }) { reply, site in
            guard case .prepared(let p) = reply else { throw unexpected(reply, site, expected: "prepared") }
            try ReplyChecks.check(p, spec: spec, site: site)
            return p
        }
        try GroupingChecks.check(spec, prepared: prepared)
        let m = structure.thetaCount, p = spec.fixedCount
        // Separation is an estimate running off while the likelihood
        // flattens; sizes are judged on the link scale per SD of the
        // column, so an uncentred covariate's large intercept is not it.
        let scale = ColumnScale(prepared: prepared, names: spec.fixed.map(\.name))
        let runningOff = 30.0
        let standard = Standardization(scale: scale, p: p)
        var evaluations = 0
        /// The objective in the optimizer's coordinates (θ, β̃), β = Tβ̃.
        func evaluate(_ par: [Double]) throws -> BoundedNewton.Evaluation {
            evaluations += 1
            let theta = Array(par[0..<m]), beta = standard.beta(Array(par[m...]))
            if let scale, let j = scale.linkScaleSizes(beta).firstIndex(where: { $0 > runningOff }) {
                throw FitFailure(Separation.message(term: spec.fixed[j].name, scale: scale, j: j, beta: beta, stdError: nil))
            }
            let parts: [ScalarJet]
            do { parts = try federation.round({ _ in
                .evaluate(EvaluateRequest(session: session, theta: theta, order: 2, beta: beta, nAGQ: nAGQ))
            }) { reply, site in
                guard case .glmmContribution(let c) = reply else { throw unexpected(reply, site, expected: "glmm_contribution") }
                let j = try c.jet()
                guard j.space.parameters == m + p, j.space.order == 2, j.storage.allSatisfy(\.isFinite) else {
                    throw SiteFailure(site: site, message: "sent an objective of the wrong shape")
                }
                try ReplyChecks.check(j, site: site)
                return j
            }
            } catch let f as SiteFailure where f.code == .glmmFailed && evaluations > 1 {
                // A trial step too far (e.g. probabilities at 0 or 1 at a site): step back.
                throw InfeasiblePoint(f.description)
            }
            let total = parts.dropFirst().reduce(parts[0], +)
            let n = m + p
            return standard.transformed(.init(value: total.value, gradient: total.gradient, hessian: Matrix(rows: n, cols: n, data: total.hessian)),
                                        thetaCount: m)
        }
        var optimizer = BoundedNewton(lower: structure.lowerBounds + [Double](repeating: -.infinity, count: p))
        optimizer.parameterNames = spec.thetaLabels + spec.fixed.map { "β \($0.name) (standardised)" }
        optimizer.maxEvaluations = options.maxEvaluations; optimizer.progress = options.progress
        optimizer.relativeNoise = 2e-16 * Double(max(1, prepared.reduce(0) { $0 + $1.summary.used })).squareRoot()
        optimizer.gradientTolerance = 1e-6
        optimizer.decrementTolerance = 1e-10
        // lme4's start: β from the GLM (θ = 0), θ = 1. The GLM is also the
        // boundary candidate: a Laplace objective can have a local minimum
        // inside while its lowest point is θ = 0, so the lower of the two wins.
        let zeroTheta = [Double](repeating: 0, count: m)
        var glmOptimizer = BoundedNewton(lower: [Double](repeating: -.infinity, count: p))
        glmOptimizer.parameterNames = spec.fixed.map { "β \($0.name) (standardised)" }
        glmOptimizer.maxEvaluations = options.maxEvaluations
        glmOptimizer.relativeNoise = optimizer.relativeNoise
        glmOptimizer.decrementTolerance = optimizer.decrementTolerance
        var glmEvaluated: [([Double], BoundedNewton.Evaluation)] = []
        let glm = try glmOptimizer.minimize(from: [Double](repeating: 0, count: p)) { b in
            let full = try evaluate(zeroTheta + b)
            glmEvaluated.append((b, full))
            var h = Matrix(rows: p, cols: p)
            for j in 0..<p { for i in 0..<p { h[i, j] = full.hessian[m + i, m + j] } }
            return .init(value: full.value, gradient: Array(full.gradient[m...]), hessian: h)
        }
        var result = try optimizer.minimize(from: structure.initialTheta + glm.x, evaluate: evaluate)
        if glm.converged, glm.value < result.value - optimizer.relativeNoise * max(1, abs(result.value)) {
            // The GLM's point, with its full (θ, β) derivatives for the covariance.
            let at = try glmEvaluated.last(where: { $0.0 == glm.x })?.1 ?? evaluate(zeroTheta + glm.x)
            let inside = result.message
            result.x = zeroTheta + glm.x; result.value = at.value; result.gradient = at.gradient; result.hessian = at.hessian
            result.converged = true; result.atBound = Array(0..<m)
            result.newtonDecrement = glm.newtonDecrement; result.scaledGradient = glm.scaledGradient
            result.message = "converged on the bound θ = 0 (the GLM: \(glm.message)), lower than the optimum inside (\(inside))"
        }
        let theta = Array(result.x[0..<m]), beta = standard.beta(Array(result.x[m...]))
        guard let covarianceTilde = fixedEffectsCovariance(hessian: result.hessian, thetaCount: m) else {
            throw FitFailure("the fixed effects are not identified at the optimum (their information matrix is singular): some columns are collinear, or the outcome is separated by a term. Remove or merge the offending terms (e.g. categories with no events)")
        }
        let covariance = standard.covariance(covarianceTilde)
        result.x = theta + beta
        if let scale {
            let sizes = scale.linkScaleSizes(beta)
            for j in 0..<p where sizes[j] > Separation.large {
                let se = covariance[j, j].squareRoot()
                if !(abs(beta[j]) > se) {
                    throw FitFailure(Separation.message(term: spec.fixed[j].name, scale: scale, j: j, beta: beta, stdError: se))
                }
            }
        }
        let finals = try federation.round({ _ in
            .finalize(FinalizeRequest(session: session, theta: theta, beta: beta, sigma: 1))
        }) { reply, site in
            guard case .finalized(let f) = reply else { throw unexpected(reply, site, expected: "finalized") }
            try ReplyChecks.check(f, siteLevelDimension: ReplyChecks.siteLevelDimension(spec), site: site)
            return f
        }
        let nObs = prepared.reduce(0) { $0 + $1.summary.used }
        var r = ResultBuilder(spec: spec, method: .ml, structure: structure, sites: federation.sites,
                              prepared: prepared, finals: finals, theta: theta, objective: result.value,
                              estimates: (beta, 1, covariance, 0), nObs: nObs, optimizer: result).build(
            evaluations: evaluations, rounds: federation.rounds - roundsBefore,
            bytesSent: federation.bytesSent, bytesReceived: federation.bytesReceived,
            elapsed: Date().timeIntervalSince(started))
        for c in scale?.uncentred() ?? [] {
            r.messages.append("\(c.name) is far from 0 relative to its spread (mean \(Separation.format(c.mean)), SD \(Separation.format(c.sd))): the intercept extrapolates to \(c.name) = 0 and is nearly collinear with it. Centring it, e.g. I(\(c.name) - \(Separation.format(c.mean))), gives a better-conditioned fit with the same slopes")
        }
        r.model.method = nAGQ == 1 ? "Laplace" : "AGQ nAGQ=\(nAGQ)"
        r.nAGQ = nAGQ
        if nAGQ > 1 {
            r.lme4Objective = result.value - finals.reduce(0) { $0 + ($1.saturatedDeviance ?? 0) }
        }
        return r
    }

    /// β block of 2·H⁻¹ (lme4's `vcov` with use.hessian); falls back to
    /// 2·(H_ββ)⁻¹ when the full Hessian is not positive definite (θ on its bound).
    static func fixedEffectsCovariance(hessian h: Matrix, thetaCount m: Int) -> Matrix? {
        let n = h.rows, p = n - m
        var cov = Matrix(rows: p, cols: p)
        if let l = try? Dense.cholesky(h) {
            let inv = Dense.inverseFromCholesky(l)
            for j in 0..<p { for i in 0..<p { cov[i, j] = 2 * inv[m + i, m + j] } }
            return cov
        }
        var hb = Matrix(rows: p, cols: p)
        for j in 0..<p { for i in 0..<p { hb[i, j] = h[m + i, m + j] } }
        guard let l = try? Dense.cholesky(hb) else { return nil }
        let inv = Dense.inverseFromCholesky(l)
        for k in 0..<inv.data.count { cov.data[k] = 2 * inv.data[k] }
        return cov
    }
}

/// A fit that cannot give a trustworthy answer, with what to do about it.
public struct FitFailure: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Words for (quasi-)separation: which estimate ran off, how far on the link
/// scale, and how flat the likelihood was there.
enum Separation {
    /// Per SD of a covariate (or at the average profile, for the intercept),
    /// a link-scale effect beyond this with |z| < 1 is running off.
    static let large = 8.0

    static func message(term: String, scale: ColumnScale, j: Int, beta: [Double], stdError: Double?) -> String {
        let size = scale.linkScaleSizes(beta)[j]
        let where_ = scale.isConstant(j) ? "the linear predictor at the average covariate profile is \(format(size))"
                                         : "its effect is \(format(size)) on the link scale per SD of \(term)"
        let flat = stdError.map { ", with a standard error of \(format($0)) (|z| = \(format(abs(beta[j]) / $0)))" } ?? ""
        return "the estimate of \(term) runs off (\(where_)\(flat)): the likelihood keeps improving as it grows, so the outcome is (quasi-)separated by this term (almost perfectly predicted by it), at one site or overall. Remove or coarsen the term, or check for categories in which the outcome never (or always) occurs"
    }

    static func format(_ x: Double) -> String { String(format: "%.3g", x) }
}

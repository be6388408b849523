// The GLMM's objective: each round sends (θ, β) to every site, which finds
// its conditional modes locally and returns its Laplace (or adaptive
// Gauss–Hermite) contribution with gradient and Hessian; the driver takes
// trust-region Newton steps on the sum. As lme4 does by default, the
// fixed effects' covariance is the β block of 2·H⁻¹ at the optimum.

import Foundation
import Math
import Protocol

struct GLMMObjective: FitObjective {
    let session: FitSession
    let nAGQ: Int
    let scale: ColumnScale?
    let standard: Standardization
    private(set) var evaluations = 0
    /// Separation is an estimate running off while the likelihood flattens;
    /// sizes are judged on the link scale per SD of the column, so an
    /// uncentred covariate's large intercept is not it.
    static let runningOff = 30.0

    /// (Models with crossed factors are CrossedGLMMObjective's; FitDriver never sends them here.)
    static func validate(_ spec: ModelSpec, options: FitOptions) throws {
        let structure = spec.covarianceStructure, nAGQ = options.nAGQ
        if nAGQ > 1 && !(structure.terms.count == 1 && structure.terms[0].dimension == 1) {
            throw SettingError("\(.nAGQ) \(nAGQ) needs a single scalar random-effects term such as (1 | site); use \(.nAGQ) 1 (Laplace) for this model")
        }
        guard ProtocolLimits.quadraturePoints.contains(nAGQ) else {
            throw SettingError("\(.nAGQ) must be between \(ProtocolLimits.quadraturePoints.lowerBound) and \(ProtocolLimits.quadraturePoints.upperBound)")
        }
    }

    /// The GLM start's first point: β = 0 at θ = 0, in β alone (`glmEvaluate`).
    static func firstEvaluation(_ spec: ModelSpec, options: FitOptions, session: String) -> EvaluateRequest? {
        var r = EvaluateRequest(session: session, theta: [Double](repeating: 0, count: spec.covarianceStructure.thetaCount), order: 2,
                                beta: [Double](repeating: 0, count: spec.fixedCount), nAGQ: options.nAGQ)
        r.derivatives = GLMMDerivatives.beta.rawValue
        return r
    }

    init(_ session: FitSession, options: FitOptions) throws {
        self.session = session
        nAGQ = options.nAGQ
        scale = ColumnScale(prepared: session.prepared, names: session.spec.fixed.map(\.name))
        standard = Standardization(scale: scale, p: session.spec.fixedCount)
    }

    var thetaCount: Int { session.structure.thetaCount }
    var fixedCount: Int { session.spec.fixedCount }
    var parameterNames: [String] { session.spec.thetaLabels + betaNames }
    var betaNames: [String] { session.spec.fixed.map { "β \($0.name) (standardised)" } }
    var lowerBounds: [Double] { session.structure.lowerBounds + [Double](repeating: -.infinity, count: fixedCount) }

    func tune(_ optimizer: inout BoundedNewton) {
        optimizer.gradientTolerance = 1e-6
        optimizer.decrementTolerance = 1e-10
    }

    /// The objective in the optimizer's coordinates (θ, β̃), β = Tβ̃.
    mutating func evaluate(_ par: [Double]) throws -> BoundedNewton.Evaluation {
        let m = thetaCount
        let total = try siteSum(theta: Array(par[0..<m]), betaTilde: Array(par[m...]), derivatives: .all)
        let n = m + fixedCount
        return standard.transformed(.init(value: total.value, gradient: total.gradient, hessian: Matrix(rows: n, cols: n, data: total.hessian)),
                                    thetaCount: m)
    }

    /// The GLM at θ = 0 in the optimizer's β̃ alone: the sites answer the β
    /// block only (`derivatives: beta`, GLMMStart.swift), one pass over their
    /// rows; the numbers are those of the full evaluation's β block.
    mutating func glmEvaluate(_ betaTilde: [Double]) throws -> BoundedNewton.Evaluation {
        let p = fixedCount
        let total = try siteSum(theta: [Double](repeating: 0, count: thetaCount), betaTilde: betaTilde, derivatives: .beta)
        return standard.transformed(.init(value: total.value, gradient: total.gradient, hessian: Matrix(rows: p, cols: p, data: total.hessian)),
                                    thetaCount: 0)
    }

    /// One evaluate round: the sites' jets, summed in site order, in (θ, β)
    /// or, for `.beta`, in β alone.
    private mutating func siteSum(theta: [Double], betaTilde: [Double], derivatives: GLMMDerivatives) throws -> ScalarJet {
        evaluations += 1
        let m = thetaCount, p = fixedCount, spec = session.spec
        let beta = standard.beta(betaTilde)
        if let scale, let j = scale.linkScaleSizes(beta).firstIndex(where: { $0 > Self.runningOff }) {
            throw FitFailure(Separation.message(term: spec.fixed[j].name, scale: scale, j: j, beta: beta, stdError: nil))
        }
        var request = EvaluateRequest(session: session.id, theta: theta, order: 2, beta: beta, nAGQ: nAGQ)
        if derivatives != .all { request.derivatives = derivatives.rawValue }
        let width = derivatives == .all ? m + p : p
        let parts: [ScalarJet]
        do {
            parts = try session.evaluate(request) { reply, site in
                guard case .glmmContribution(let c) = reply else { throw unexpected(reply, site, expected: "glmm_contribution") }
                var j = try c.jet()
                if derivatives == .beta, j.space.parameters == m + p, j.space.order == 2 {
                    j = Self.betaBlock(j, thetaCount: m)   // an agent that predates `derivatives` answers in (θ, β)
                }
                guard j.space.parameters == width, j.space.order == 2, j.storage.allSatisfy(\.isFinite) else {
                    throw SiteFailure(site: site, message: "sent an objective of the wrong shape")
                }
                try ReplyChecks.check(j, site: site)
                return j
            }
        } catch let f as SiteFailure where f.code == .glmmFailed && evaluations > 1 {
            // A trial step too far (e.g. probabilities at 0 or 1 at a site): step back.
            throw InfeasiblePoint(f.description)
        }
        return parts.dropFirst().reduce(parts[0], +)
    }

    /// A jet in (θ, β) restricted to β.
    static func betaBlock(_ j: ScalarJet, thetaCount m: Int) -> ScalarJet {
        let p = j.space.parameters - m, space = JetSpace(parameters: p, order: j.space.order)
        var b = ScalarJet(space: space, value: j.value)
        for a in 0..<p { b.storage[1 + a] = j.storage[1 + m + a] }
        for k in 0..<space.pairFirst.count {
            b.storage[1 + p + k] = j.storage[j.space.secondIndex(m + space.pairFirst[k], m + space.pairSecond[k])]
        }
        return b
    }

    /// lme4's start: β from the GLM (θ = 0), θ = 1. The GLM is also the
    /// boundary candidate: a Laplace objective can have a local minimum
    /// inside while its lowest point is θ = 0, so the lower of the two wins.
    ///
    /// The start needs the GLM only roughly: its iterations stop once the
    /// Newton decrement is below `startDecrement`, and the start is that
    /// point's Newton step, taken without a round (`newtonPoint`). The GLM
    /// is finished exactly only when it could be the lower of the two: its
    /// optimum lies within about the decrement below that point (the
    /// quadratic model's gain; `boundaryMargin` times it is allowed), so a
    /// fit whose optimum is further below cannot lose to it. That saves one
    /// or two of a GLMM fit's rounds (ohio: 6 GLM rounds to 4).
    mutating func minimize(_ optimizer: BoundedNewton) throws -> BoundedNewton.Result {
        let m = thetaCount, p = fixedCount
        let zeroTheta = [Double](repeating: 0, count: m)
        let exactGLM = optimizer.glmStart(names: betaNames)
        var roughGLM = exactGLM
        roughGLM.decrementTolerance = Self.startDecrement
        roughGLM.stepTolerance = .infinity
        let rough = try roughGLM.minimize(from: [Double](repeating: 0, count: p)) { try glmEvaluate($0) }
        let start = rough.newtonPoint ?? rough.x
        var result = try optimizer.minimize(from: session.structure.initialTheta + start) { try evaluate($0) }
        if rough.mayBeBelow(result.value, margin: Self.boundaryMargin) {
            let glm = try exactGLM.minimize(from: start) { try glmEvaluate($0) }
            if result.isAboveBoundary(glm, noise: optimizer.relativeNoise) {
                // The GLM's point, with its full (θ, β) derivatives for the covariance: one more round.
                result.takeBoundary(glm, at: try evaluate(zeroTheta + glm.x), thetaCount: m)
            }
        }
        return result
    }

    /// The GLM start's stopping decrement (½gᵀH⁻¹g, in deviance units).
    static let startDecrement = 0.05
    /// How many decrements below its last point a rough GLM's optimum may lie.
    static let boundaryMargin = 10.0

    /// β and its covariance (the β block of 2·H⁻¹) in the analyst's
    /// coordinates; refuses an estimate that ran off (separation).
    mutating func estimates(at optimum: BoundedNewton.Result) throws -> FitEstimates {
        let m = thetaCount, p = fixedCount, spec = session.spec
        let theta = Array(optimum.x[0..<m]), beta = standard.beta(Array(optimum.x[m...]))
        guard let covarianceTilde = FixedEffectsCovariance(hessian: optimum.hessian, thetaCount: m)?.matrix else {
            throw FitFailure("the fixed effects are not identified at the optimum (their information matrix is singular): some columns are collinear, or the outcome is separated by a term. Remove or merge the offending terms (e.g. categories with no events)")
        }
        let covariance = standard.covariance(covarianceTilde)
        if let scale {
            let sizes = scale.linkScaleSizes(beta)
            for j in 0..<p where sizes[j] > Separation.large {
                let se = covariance[j, j].squareRoot()
                if !(abs(beta[j]) > se) {
                    throw FitFailure(Separation.message(term: spec.fixed[j].name, scale: scale, j: j, beta: beta, stdError: se))
                }
            }
        }
        return FitEstimates(theta: theta, beta: beta, sigma: 1, unscaledCovariance: covariance, nObs: session.usedRows, method: .ml)
    }

    func complete(_ r: inout FitResult, optimum: BoundedNewton.Result, finals: [FinalizeReply]) {
        for c in scale?.uncentred() ?? [] {
            r.messages.append("\(c.name) is far from 0 relative to its spread (mean \(Separation.format(c.mean)), SD \(Separation.format(c.sd))): the intercept extrapolates to \(c.name) = 0 and is nearly collinear with it. Centring it, e.g. I(\(c.name) - \(Separation.format(c.mean))), gives a better-conditioned fit with the same slopes")
        }
        r.model.method = nAGQ == 1 ? "Laplace" : "AGQ nAGQ=\(nAGQ)"
        r.nAGQ = nAGQ
        if nAGQ > 1 {
            r.lme4Objective = optimum.value - finals.reduce(0) { $0 + ($1.saturatedDeviance ?? 0) }
        }
    }
}

extension BoundedNewton {
    /// The optimizer for a GLMM's start, the GLM at θ = 0 over β alone, with this one's settings.
    func glmStart(names: [String]) -> BoundedNewton {
        var glm = BoundedNewton(lower: [Double](repeating: -.infinity, count: names.count))
        glm.parameterNames = names
        glm.maxEvaluations = maxEvaluations
        glm.relativeNoise = relativeNoise
        glm.decrementTolerance = decrementTolerance
        return glm
    }
}

extension BoundedNewton.Result {
    /// The Newton step's end from this point, x − H⁻¹g (for a result with
    /// no parameter on a bound; nil when H is not positive definite).
    var newtonPoint: [Double]? {
        guard atBound.isEmpty, let step = try? Dense.solveSPD(hessian, gradient), step.allSatisfy(\.isFinite) else { return nil }
        return zip(x, step).map { $0 - $1 }
    }

    /// Whether this rough optimum (converged to a larger decrement) might
    /// still fall below `value` once finished: unless it converged with a
    /// positive definite Hessian and `margin` times its decrement would not
    /// reach `value`.
    func mayBeBelow(_ value: Double, margin: Double) -> Bool {
        guard converged, let d = newtonDecrement, d.isFinite else { return true }
        return self.value - margin * d < value
    }

    /// Whether the GLM at θ = 0 (converged) lies below this optimum inside by more than the noise.
    func isAboveBoundary(_ glm: BoundedNewton.Result, noise: Double) -> Bool {
        glm.converged && glm.value < value - noise * max(1, abs(value))
    }

    /// This optimum replaced by the boundary θ = 0 at the GLM's β, with the
    /// full (θ, β) evaluation there (for the covariance) and a message saying why.
    mutating func takeBoundary(_ glm: BoundedNewton.Result, at: BoundedNewton.Evaluation, thetaCount m: Int) {
        let inside = message
        x = [Double](repeating: 0, count: m) + glm.x; value = at.value; gradient = at.gradient; hessian = at.hessian
        converged = true; atBound = Array(0..<m)
        newtonDecrement = glm.newtonDecrement; scaledGradient = glm.scaledGradient
        message = "converged on the bound θ = 0 (the GLM: \(glm.message)), lower than the optimum inside (\(inside))"
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

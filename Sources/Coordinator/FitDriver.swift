// One federated fit for every model kind: prepare at every site, minimize the
// kind's objective over the sites' summed contributions, finalize, build the
// result. The pooled fit is this fit with one site. A model kind (LMM, GLMM,
// flat lm/glm, GEE) plugs in as a `FitObjective`; ARCHITECTURE.md shows where.

import Foundation
import Synchronization
import Math
import Protocol

public struct FitOptions: Sendable {
    /// REML or ML (linear mixed models).
    public var method: EstimationMethod = .reml
    public var family: Family = .gaussian
    /// Nil: the family's canonical link.
    public var link: Link? = nil
    /// Quadrature points for GLMMs (1 = Laplace).
    public var nAGQ = 1
    /// Multiple imputation: the draws every site completes its data with
    /// before this fit's prepare (MultipleImputation.swift); nil for none.
    public var imputations: [ImputationDraw]? = nil
    /// Variables the fit reads as observed although `imputations` completes
    /// them (PrepareRequest.observed): a chained-equation imputation model's fit.
    public var observedOnly: [String]? = nil
    /// Flat models: cluster-robust standard errors (sandwich::vcovCL) with
    /// clusters "site" or a variable nested within sites; nil for none.
    public var cluster: String? = nil
    /// GEE (fedmix gee): the working correlation, the variable ordering rows
    /// within a cluster (ar1), and the small-sample correction to report.
    public var gee: GEESettings? = nil
    /// GLMMs: population-averaged
    /// predictions and average marginal effects (MarginalEffects), summed by
    /// the sites in the finalize round.
    public var marginal = false
    /// A numeric variable of prior weights (GLMMs: binomial trials for a
    /// proportion response, or Poisson log-likelihood multipliers).
    public var weights: String? = nil
    public var maxEvaluations = 100
    /// GLMMs with crossed factors: the form of the sites' Hessians in the
    /// crossed effects (nil: the level form when every own term is grouped
    /// by the site and it is cheaper; a model with within-site terms always
    /// takes the dense form).
    public var crossedGLMMForm: CrossedGLMMForm? = nil
    /// Confidence intervals to add (`confint` in the result): nil for none.
    public var confint: ConfidenceIntervalMethod? = nil
    /// A row filter (`age >= 50 & sex == "F"`; RowFilterParser), or nil for every row.
    public var filter: String? = nil
    /// Called at each optimizer iteration with (iteration, objective, Newton
    /// decrement), for progress reports on a terminal (Analysis.fit sets it
    /// when the federation has an enabled ProgressReporter).
    public var progress: (@Sendable (Int, Double, Double?) -> Void)? = nil
    /// Crossed LMMs: take (true) or avoid (false) the level-by-level
    /// elimination wherever the sites allow it, instead of the cost rule
    /// (nil). For tests that compare the two paths on the same fit.
    var crossedByLevel: Bool? = nil
    public init(method: EstimationMethod = .reml, family: Family = .gaussian, link: Link? = nil, nAGQ: Int = 1) {
        self.method = method; self.family = family; self.link = link; self.nAGQ = nAGQ
    }
}

/// The sites' side of one fit: the session every request names and what
/// each site answered to prepare.
struct FitSession {
    let federation: Federation
    let dataset: String
    let spec: ModelSpec
    let id: String
    let prepared: [PrepareReply]
    /// The fit's first evaluate round, answered with the prepare round.
    var prefetched: PrefetchedEvaluation? = nil

    var structure: CovarianceStructure { spec.covarianceStructure }
    var sites: [String] { federation.sites }
    /// Rows used over all sites.
    var usedRows: Int { prepared.reduce(0) { $0 + $1.summary.used } }

    /// The prepare round, its replies checked, and lme4's level-count rules
    /// on the rows the sites will use.
    /// `first`, given the session id, is the fit's first evaluate request:
    /// the sites answer it with the prepare (PrepareRequest.firstEvaluate),
    /// and the first `evaluate` that asks exactly it takes those answers
    /// instead of a round. Sites that do not answer it (older agents, sites
    /// sending θ-free sums) leave it to a round of its own.
    static func prepare(_ federation: Federation, dataset: String, spec: ModelSpec,
                        imputations: [ImputationDraw]? = nil, observed: [String]? = nil,
                        first: ((String) -> EvaluateRequest?)? = nil) throws -> FitSession {
        let id = UUID().uuidString.lowercased()
        let firstRequest = first?(id)
        let prepared = try federation.round({ _ in
            var r = PrepareRequest(session: id, dataset: dataset, model: spec, imputations: imputations)
            r.observed = observed
            r.firstEvaluate = firstRequest
            // Linear mixed models: Schur complements as the lower triangle the
            // coordinator reads (ProfiledCriterion: the jets' Cholesky; their
            // values are symmetric). Not with crossed factors, whose
            // elimination reads both.
            if spec.family == .gaussian && !spec.isFlat && !spec.hasCrossedTerms { r.schurForm = WireJetMatrix.lowerForm }
            return .prepare(r)
        }) { reply, site in
            guard case .prepared(let p) = reply else { throw unexpected(reply, site, expected: "prepared") }
            try ReplyChecks.check(p, spec: spec, site: site)
            return p
        }
        try GroupingChecks.check(spec, prepared: prepared)
        for (site, p) in zip(federation.sites, prepared) where p.summary.groups.count != spec.terms.count {
            throw SiteFailure(site: site, message: "reported group counts for \(p.summary.groups.count) terms, the model has \(spec.terms.count)")
        }
        var session = FitSession(federation: federation, dataset: dataset, spec: spec, id: id, prepared: prepared)
        if let firstRequest {
            let answers = prepared.compactMap { p in p.firstAnswer.flatMap { try? LineCodec.decodeReply($0).reply } }
            if answers.count == prepared.count { session.prefetched = PrefetchedEvaluation(firstRequest, answers: answers) }
        }
        return session
    }

    /// One evaluate round; `accept` checks and converts each site's reply.
    func evaluate<T: Sendable>(_ request: EvaluateRequest,
                               accept: @escaping @Sendable (Reply, String) throws -> T) throws -> [T] {
        if let answers = prefetched?.take(request) { return try federation.settle(answers, request: .evaluate(request), accept) }
        return try federation.round({ _ in .evaluate(request) }, accept)
    }

    /// The finalize round: each site's partially pooled site-level effects at
    /// the optimum; the sites then free the session.
    func finalize(theta: [Double], beta: [Double], sigma: Double, weightsAt: [Double]? = nil,
                  marginal: MarginalRequest? = nil, crossed: CrossedModes? = nil) throws -> [FinalizeReply] {
        let spec = self.spec
        return try federation.round({ k in
            var request = FinalizeRequest(session: id, theta: theta, beta: beta, sigma: sigma, weightsAt: weightsAt, marginal: marginal)
            // Crossed factors: the site's own effects are taken given the crossed ones at its levels.
            if let parts = crossed?.finalizeParts(site: k) {
                request.crossedEffects = parts.effects; request.crossedCovariance = parts.covariance; request.crossedTerm = parts.term
                request.crossedProduct = crossed?.siteProducts?[k]
            }
            return .finalize(request)
        }) { reply, site in
            guard case .finalized(let f) = reply else { throw unexpected(reply, site, expected: "finalized") }
            try ReplyChecks.check(f, siteLevelDimension: ReplyChecks.siteLevelDimension(spec), site: site)
            return f
        }
    }
}

/// The estimates at an optimum, in the form ResultBuilder reads.
struct FitEstimates {
    var theta: [Double]
    var beta: [Double]
    /// σ for LMMs; 1 for GLMMs.
    var sigma: Double
    /// Cov(β) / σ² (LMMs); Cov(β) itself for GLMMs (σ = 1).
    var unscaledCovariance: Matrix
    var residualSumOfSquares: Double = 0
    var nObs: Int
    var method: EstimationMethod
    /// LMMs: what Satterthwaite's degrees of freedom need (nil for GLMMs).
    var satterthwaite: Satterthwaite? = nil
    /// REML LMMs: Kenward-Roger's adjusted covariance and df (nil otherwise).
    var kenwardRoger: KenwardRoger? = nil
    /// A flat GLM's last working point (FinalizeRequest.weightsAt).
    var weightsAt: [Double]? = nil
    /// LMMs with crossed factors: their effects' conditional modes.
    var crossed: CrossedModes? = nil
}

/// A fit's first evaluate round, answered with its prepare round
/// (FitSession.prepare): taken by the first evaluation that asks exactly the
/// same request (the same bytes on the wire), once.
final class PrefetchedEvaluation: Sendable {
    private let line: String?
    private let answers: Mutex<[Reply]?>
    init(_ request: EvaluateRequest, answers: [Reply]) {
        line = try? LineCodec.encode(.evaluate(request), id: 0)
        self.answers = Mutex(answers)
    }
    /// The sites' answers to `request`, if it is the prefetched one and they
    /// were not taken yet (once taken, later requests are not encoded to compare).
    func take(_ request: EvaluateRequest) -> [Reply]? {
        answers.withLock { a in
            guard a != nil, let line, (try? LineCodec.encode(.evaluate(request), id: 0)) == line else { return nil }
            defer { a = nil }
            return a
        }
    }
}

/// A model kind, as the driver sees it: the objective over the summed site
/// contributions, the strategy to minimize it, and the estimates at the
/// optimum. Conformers are small: the sites compute, the driver orchestrates.
protocol FitObjective {
    /// Refuses options the kind cannot honour, before any round.
    static func validate(_ spec: ModelSpec, options: FitOptions) throws
    /// The fit's first evaluate request, known before the prepare round
    /// (its start), so that the sites answer it with the prepare; nil when
    /// it depends on what the sites answer to the prepare.
    static func firstEvaluation(_ spec: ModelSpec, options: FitOptions, session: String) -> EvaluateRequest?
    /// An exact reparameterization to fit instead, chosen from the first
    /// preparation (the LMM's centring); nil for none.
    static func recoding(_ session: FitSession) throws -> Centring?
    init(_ session: FitSession, options: FitOptions) throws
    var parameterNames: [String] { get }
    var lowerBounds: [Double] { get }
    /// Evaluations of the objective so far (each is a round unless the sites
    /// sent θ-free sums).
    var evaluations: Int { get }
    /// Kind-specific optimizer tolerances.
    func tune(_ optimizer: inout BoundedNewton)
    /// The optimum, from the kind's start(s).
    mutating func minimize(_ optimizer: BoundedNewton) throws -> BoundedNewton.Result
    /// θ, β, σ and Cov(β) at the optimum (refusing a fit that cannot be
    /// trusted, e.g. separation).
    mutating func estimates(at optimum: BoundedNewton.Result) throws -> FitEstimates
    /// The kind's additions to the result (method label, advice).
    func complete(_ result: inout FitResult, optimum: BoundedNewton.Result, finals: [FinalizeReply])
}

extension FitObjective {
    static func validate(_ spec: ModelSpec, options: FitOptions) throws {}
    static func firstEvaluation(_ spec: ModelSpec, options: FitOptions, session: String) -> EvaluateRequest? { nil }
    static func recoding(_ session: FitSession) throws -> Centring? { nil }
    func tune(_ optimizer: inout BoundedNewton) {}
    func complete(_ result: inout FitResult, optimum: BoundedNewton.Result, finals: [FinalizeReply]) {}
}

extension BoundedNewton.Result {
    /// Whether `other` should replace this optimum: lower by more than the
    /// criterion's noise, and converged unless this one did not either.
    func isBeaten(by other: BoundedNewton.Result, noise: Double) -> Bool {
        other.value < value - noise * max(1, abs(value)) && (other.converged || !converged)
    }
}

public enum FitDriver {
    /// Fits `spec` on `dataset` at every site of the federation: GEE when the
    /// spec carries `gee`, lm or glm without random-effects terms, an LMM for
    /// the gaussian family, a GLMM otherwise.
    public static func fit(_ federation: Federation, dataset: String, spec: ModelSpec,
                           options: FitOptions = FitOptions()) throws -> FitResult {
        spec.gee != nil ? try run(GEEObjective.self, federation, dataset: dataset, spec: spec, options: options)
        : spec.isFlat ? try run(FlatObjective.self, federation, dataset: dataset, spec: spec, options: options)
        : spec.family == .gaussian
            ? try run(LMMObjective.self, federation, dataset: dataset, spec: spec, options: options)
            : spec.hasCrossedTerms ? try run(CrossedGLMMObjective.self, federation, dataset: dataset, spec: spec, options: options)
            : try run(GLMMObjective.self, federation, dataset: dataset, spec: spec, options: options)
    }

    static func run<Objective: FitObjective>(_ kind: Objective.Type, _ federation: Federation, dataset: String,
                                             spec: ModelSpec, options: FitOptions) throws -> FitResult {
        let started = Date()
        let roundsBefore = federation.rounds
        try Objective.validate(spec, options: options)
        var session = try FitSession.prepare(federation, dataset: dataset, spec: spec, imputations: options.imputations, observed: options.observedOnly,
                                             first: { Objective.firstEvaluation(spec, options: options, session: $0) })
        let recoding = try Objective.recoding(session)
        if let recoding {
            let recoded = recoding.apply(spec)
            session = try FitSession.prepare(federation, dataset: dataset, spec: recoded, imputations: options.imputations, observed: options.observedOnly,
                                             first: { Objective.firstEvaluation(recoded, options: options, session: $0) })
        }
        var objective = try Objective(session, options: options)
        var optimizer = BoundedNewton(lower: objective.lowerBounds)
        optimizer.parameterNames = objective.parameterNames
        optimizer.maxEvaluations = options.maxEvaluations
        let trace = TraceRecorder()
        optimizer.progress = { iteration, value, decrement in
            trace.record(.init(iteration: iteration, objective: value, newtonDecrement: decrement?.isFinite == true ? decrement : nil))
            options.progress?(iteration, value, decrement)
        }
        // The criterion's rounding level grows with the number of rows summed.
        optimizer.relativeNoise = 2e-16 * Double(max(1, session.usedRows)).squareRoot()
        objective.tune(&optimizer)
        let optimum = try objective.minimize(optimizer)
        var estimates = try objective.estimates(at: optimum)
        // Profile intervals need the session (their points are evaluate
        // rounds for within-site terms), so they come before finalize.
        var profiled: ConfidenceIntervals.Profiled? = nil
        if options.confint == .profile {
            profiled = try profile(objective, session: session, recoding: recoding, federation: federation, dataset: dataset,
                                   spec: spec, estimates: estimates, options: options)
        }
        if options.marginal && (spec.isFlat || spec.family == .gaussian || recoding != nil) {
            throw SettingError("marginal effects apply to GLMMs (\(.family) binomial or poisson)")
        }
        var finals = try session.finalize(theta: estimates.theta, beta: estimates.beta, sigma: estimates.sigma,
                                          weightsAt: estimates.weightsAt,
                                          marginal: options.marginal ? MarginalEffects.request(spec) : nil, crossed: estimates.crossed)
        // Flat models with a cluster: vcovCL in the fitted coordinates, carried back with β.
        // (GEE's own sandwich comes from its rounds.)
        var robust = try session.spec.cluster.flatMap { c in spec.gee != nil ? nil : c }.map {
            try RobustCovariance.build($0, finals: finals, sites: federation.sites, unscaled: estimates.unscaledCovariance,
                                       nObs: estimates.nObs, linear: spec.family == .gaussian)
        }
        if let recoding {
            if let r = robust { robust!.vcov = recoding.fixedEffects(estimates.beta, covariance: r.vcov, spec: spec).1 }
            (estimates.beta, estimates.unscaledCovariance) = recoding.fixedEffects(estimates.beta, covariance: estimates.unscaledCovariance, spec: spec)
            estimates.satterthwaite = estimates.satterthwaite?.transformed(by: recoding.fixedEffectsMatrix(spec: spec))
            estimates.kenwardRoger = estimates.kenwardRoger?.transformed(by: recoding.fixedEffectsMatrix(spec: spec))
            estimates.theta = recoding.theta(estimates.theta, structure: session.structure, spec: spec)
            finals = finals.map { recoding.finalize($0, spec: spec) }
        }
        var builder = ResultBuilder(spec: spec, method: estimates.method, structure: session.structure, sites: federation.sites,
                                   prepared: session.prepared, finals: finals, theta: estimates.theta, objective: optimum.value,
                                   estimates: (estimates.beta, estimates.sigma, estimates.unscaledCovariance, estimates.residualSumOfSquares),
                                   nObs: estimates.nObs, optimizer: optimum)
        builder.satterthwaite = estimates.satterthwaite
        builder.kenwardRoger = estimates.kenwardRoger
        var result = builder.build(
            evaluations: objective.evaluations, rounds: federation.rounds - roundsBefore,
            bytesSent: federation.bytesSent, bytesReceived: federation.bytesReceived,
            elapsed: Date().timeIntervalSince(started))
        if let robust, let cluster = spec.cluster {
            let p = robust.vcov.rows
            result.robust = FitResult.Robust(
                type: spec.family == .gaussian ? "HC1" : "HC0",
                cluster: { if case .withinSite(let vs) = cluster { return vs.joined(separator: ":") }; return "site" }(),
                clusters: robust.clusters, cadjustFactor: robust.cadjust, hc1Factor: robust.hc1,
                stdErrors: (0..<p).map { robust.vcov[$0, $0].squareRoot() },
                vcov: (0..<p).map { i in (0..<p).map { robust.vcov[i, $0] } })
        }
        result.crossedEffects = estimates.crossed?.results(spec: spec, sigma: estimates.sigma)
        objective.complete(&result, optimum: optimum, finals: finals)
        if options.marginal {
            result.marginal = try MarginalEffects.build(finals, sites: federation.sites, spec: spec, beta: estimates.beta,
                                                        theta: estimates.theta, vcov: estimates.unscaledCovariance)
        }
        result.trace = trace.points
        result.optimum = .init(parameters: objective.parameterNames, x: optimum.x, hessian: optimum.hessian, recoded: recoding != nil)
        switch options.confint {
        case .profile?:
            if let profiled {
                result.confint = profiled.rows
                result.iccConfint = profiled.icc
                result.profile = profiled.cost
                result.messages += profiled.messages
            }
        case .wald?:
            let order = VarianceComponentTable.lme4Order(levels: ConfidenceIntervals.groupCounts(session))
            var names = ConfidenceIntervals.variableNames(spec, structure: session.structure, order: order)
            if spec.family != .gaussian { names.removeAll { $0 == ".sigma" } }
            result.confint = ConfidenceIntervals.wald(result, variance: names)
        case nil: break
        }
        return result
    }

    /// Profile intervals of an LMM (refused for other kinds). A centred fit
    /// (Centring) is profiled on the model as written: one more prepare round
    /// (θ-free sums, so no evaluate round), and a finalize that frees it.
    static func profile<Objective: FitObjective>(_ objective: Objective, session: FitSession, recoding: Centring?,
                                                 federation: Federation, dataset: String, spec: ModelSpec,
                                                 estimates: FitEstimates, options: FitOptions) throws -> ConfidenceIntervals.Profiled {
        guard let lmm = objective as? LMMObjective else {
            throw SettingError("\(.confint) profile applies to linear mixed models (the gaussian family); use \(.confint) wald")
        }
        let counts = ConfidenceIntervals.groupCounts(session)
        guard let recoding else {
            return try ConfidenceIntervals.profile(lmm, theta: estimates.theta, beta: estimates.beta, sigma: estimates.sigma,
                                                   unscaledCovariance: estimates.unscaledCovariance, method: estimates.method,
                                                   groupCounts: counts)
        }
        let plain = try FitSession.prepare(federation, dataset: dataset, spec: spec, imputations: options.imputations, observed: options.observedOnly)
        let original = try LMMObjective(plain, options: options)
        let theta = recoding.theta(estimates.theta, structure: session.structure, spec: spec)
        let (beta, covariance) = recoding.fixedEffects(estimates.beta, covariance: estimates.unscaledCovariance, spec: spec)
        let out = try ConfidenceIntervals.profile(original, theta: theta, beta: beta, sigma: estimates.sigma,
                                                  unscaledCovariance: covariance, method: estimates.method, groupCounts: counts)
        _ = try plain.finalize(theta: theta, beta: beta, sigma: estimates.sigma)
        return out
    }
}

/// Collects the optimizer's path for the result (the progress callback is
/// @Sendable, so the points sit behind a Mutex).
final class TraceRecorder: Sendable {
    private let state = Mutex<[FitResult.TracePoint]>([])
    func record(_ p: FitResult.TracePoint) { state.withLock { $0.append(p) } }
    var points: [FitResult.TracePoint] { state.withLock { $0 } }
}

// The federated LMM fit: prepare at every site, optimize θ on the summed
// contributions (one round per evaluation, or none when every term is
// grouped by site and the sites sent their θ-free sums), then finalize.
// The pooled fit is this fit with one site.

import Foundation
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
    /// A numeric variable of prior weights (GLMMs: binomial trials for a
    /// proportion response, or Poisson log-likelihood multipliers).
    public var weights: String? = nil
    public var maxEvaluations = 100
    /// A row filter (`age >= 50 & sex == "F"`; RowFilterParser), or nil for every row.
    public var filter: String? = nil
    /// Called at each optimizer iteration with (iteration, objective, Newton
    /// decrement), for progress reports on a terminal (Analysis.fit sets it
    /// when the federation has an enabled ProgressReporter).
    public var progress: (@Sendable (Int, Double, Double?) -> Void)? = nil
    public init(method: EstimationMethod = .reml, family: Family = .gaussian, link: Link? = nil, nAGQ: Int = 1) {
        self.method = method; self.family = family; self.link = link; self.nAGQ = nAGQ
    }
}

public enum LMMFit {
    /// Fits `spec` on `dataset` at every site of the federation.
    public static func run(_ federation: Federation, dataset: String, spec: ModelSpec,
                           options: FitOptions = FitOptions()) throws -> FitResult {
        try fit(federation, dataset: dataset, spec: spec, options: options, centring: nil,
                started: Date(), roundsBefore: federation.rounds)
    }

    /// `centring`: the sites fit the model with the response and far-off
    /// covariates shifted (Centring.swift): the same model, mapped back
    /// exactly; chosen from the site-grouped sums when their digits would
    /// otherwise be lost (one more round).
    private static func fit(_ federation: Federation, dataset: String, spec original: ModelSpec, options: FitOptions,
                            centring: Centring?, started: Date, roundsBefore: Int) throws -> FitResult {
        let spec: ModelSpec = centring?.apply(original) ?? original
        let session = UUID().uuidString.lowercased()
        let prepared = try federation.round({ _ in .prepare(PrepareRequest(session: session, dataset: dataset, model: spec)) }) { reply, site in
            guard case .prepared(let p) = reply else { throw unexpected(reply, site, expected: "prepared") }
            try ReplyChecks.check(p, spec: spec, site: site)
            return p
        }
        try GroupingChecks.check(spec, prepared: prepared)
        let structure = spec.covarianceStructure
        for (site, p) in zip(federation.sites, prepared) where p.summary.groups.count != spec.terms.count {
            throw SiteFailure(site: site, message: "reported group counts for \(p.summary.groups.count) terms, the model has \(spec.terms.count)")
        }
        let blocks: [SiteBlocks]? = spec.allTermsGroupedBySite ? try prepared.enumerated().map { i, p in
            guard let b = p.blocks else { throw SiteFailure(site: federation.sites[i], message: "sent no θ-free sums for a site-grouped model") }
            if let why = b.inconsistency(structure: structure, width: spec.fixedCount + 1) {
                throw SiteFailure(site: federation.sites[i], message: "sent inconsistent sums (\(why))")
            }
            return b
        } : nil

        if centring == nil, let blocks, let c = Centring.choose(blocks, spec: spec) {
            return try fit(federation, dataset: dataset, spec: original, options: options, centring: c,
                           started: started, roundsBefore: roundsBefore)
        }
        // With prior weights, lme4 subtracts Σ log w from the criterion.
        let logWeightSum = prepared.reduce(0.0) { $0 + ($1.summary.logWeightSum ?? 0) }
        var evaluations = 0
        var lastTotals: (theta: [Double], totals: LMMTotals)? = nil
        func totals(_ theta: [Double], order: Int) throws -> LMMTotals {
            let parts: [LMMContribution]
            if let blocks {
                parts = try blocks.map { try LMMSite.evaluate($0, structure: structure, theta: theta, order: order) }
            } else {
                parts = try federation.round({ _ in .evaluate(EvaluateRequest(session: session, theta: theta, order: order)) }) { reply, site in
                    guard case .contribution(let c) = reply else { throw unexpected(reply, site, expected: "contribution") }
                    let part = try c.contribution()
                    guard part.schur.rows == spec.fixedCount + 1, part.schur.cols == spec.fixedCount + 1,
                          (0...ProtocolLimits.maxRows).contains(part.rows), part.schur.storage.allSatisfy(\.isFinite),
                          part.logDet.storage.allSatisfy(\.isFinite), part.schur.space.parameters == structure.thetaCount,
                          part.schur.space.order == order else {
                        throw SiteFailure(site: site, message: "sent a contribution of the wrong shape")
                    }
                    try ReplyChecks.check(part, site: site)
                    return part
                }
            }
            return LMMTotals(summing: parts)
        }

        var optimizer = BoundedNewton(lower: structure.lowerBounds)
        optimizer.parameterNames = spec.thetaLabels
        optimizer.maxEvaluations = options.maxEvaluations; optimizer.progress = options.progress
        optimizer.relativeNoise = 2e-16 * Double(max(1, prepared.reduce(0) { $0 + $1.summary.used })).squareRoot()
        func criterion(_ theta: [Double]) throws -> BoundedNewton.Evaluation {
            evaluations += 1
            let t = try totals(theta, order: 2)
            lastTotals = (theta, t)
            var d = try ProfiledCriterion.evaluate(t, method: options.method)
            d.storage[0] -= logWeightSum
            let m = theta.count
            return .init(value: d.value, gradient: d.gradient, hessian: Matrix(rows: m, cols: m, data: d.hessian))
        }
        // A profiled criterion can have a local minimum on a bound and a
        // lower one inside (or the reverse). When the sites sent their
        // θ-free sums, evaluations cost no round: start also from small
        // factors and keep the lowest optimum. Otherwise one start, lme4's.
        let starts = blocks == nil ? [structure.initialTheta]
            : [structure.initialTheta, structure.initialTheta.map { $0 * 0.1 }, structure.initialTheta.map { $0 * 1e-3 }]
        var result = try optimizer.minimize(from: starts[0], evaluate: criterion)
        for start in starts.dropFirst() {
            let other = try optimizer.minimize(from: start, evaluate: criterion)
            if other.value < result.value - optimizer.relativeNoise * max(1, abs(result.value)) && (other.converged || !result.converged) {
                result = other
            }
        }
        result.evaluations = evaluations
        let thetaHat = result.x
        let finalTotals: LMMTotals
        if let lt = lastTotals, lt.theta == thetaHat { finalTotals = lt.totals }
        else { finalTotals = try totals(thetaHat, order: 0); evaluations += 1 }
        var est = try ProfiledCriterion.estimates(finalTotals, method: options.method)

        let finals = try federation.round({ _ in
            .finalize(FinalizeRequest(session: session, theta: thetaHat, beta: est.beta, sigma: est.sigma))
        }) { reply, site in
            guard case .finalized(let f) = reply else { throw unexpected(reply, site, expected: "finalized") }
            try ReplyChecks.check(f, siteLevelDimension: ReplyChecks.siteLevelDimension(spec), site: site)
            return f
        }
        var thetaOut = thetaHat, finalsOut = finals
        if let centring {
            (est.beta, est.unscaledCovariance) = centring.fixedEffects(est.beta, covariance: est.unscaledCovariance, spec: original)
            thetaOut = centring.theta(thetaHat, structure: structure, spec: original)
            finalsOut = finals.map { centring.finalize($0, spec: original) }
        }
        return ResultBuilder(spec: original, method: options.method, structure: structure, sites: federation.sites,
                             prepared: prepared, finals: finalsOut, theta: thetaOut, objective: result.value,
                             estimates: est, nObs: finalTotals.rows, optimizer: result).build(
            evaluations: evaluations, rounds: federation.rounds - roundsBefore,
            bytesSent: federation.bytesSent, bytesReceived: federation.bytesReceived,
            elapsed: Date().timeIntervalSince(started))
    }
}

// The linear mixed model's objective: the profiled REML or ML criterion of θ
// over the summed site contributions, one round per evaluation, or none when
// every term is grouped by site and the sites sent their θ-free sums
// (DESIGN.md). β and σ are profiled out and read off at the optimum.

import Foundation
import Math
import Protocol

struct LMMObjective: FitObjective {
    let session: FitSession
    let method: EstimationMethod
    /// The sites' θ-free sums, when every term is grouped by site.
    let blocks: [SiteBlocks]?
    /// With prior weights, lme4 subtracts Σ log w from the criterion.
    let logWeightSum: Double
    /// Crossed factors: where each site's leading columns sit (nil without).
    let crossed: CrossedLayout?
    /// The sites' sums in the order of the level-by-level elimination, when
    /// it is taken (`CrossedLevelElimination.cheaper`); nil otherwise.
    let levelSums: CrossedLevelElimination.Sums?
    /// With within-site terms, the level-by-level elimination's sums when
    /// every site sent A_k (`crossed_sums`) and it is taken: each
    /// evaluation then asks the sites for V_kᵀ (`low_rank`), not their
    /// dense Schur complements (Math/CrossedLowRank.swift).
    let lowRankSums: CrossedLevelElimination.Sums?
    private(set) var evaluations = 0
    private var last: (theta: [Double], totals: LMMTotals)? = nil

    static let maxCrossedForRestarts = 500

    /// The sites' θ-free sums, checked, or nil when some term is grouped
    /// within sites (then every evaluation is a round).
    static func siteBlocks(_ session: FitSession) throws -> [SiteBlocks]? {
        let spec = session.spec, structure = spec.localModel.covarianceStructure
        guard spec.localModel.allTermsGroupedBySite else { return nil }
        let crossed = try session.crossedLayout()
        return try session.prepared.enumerated().map { i, p in
            guard let b = p.blocks else { throw SiteFailure(site: session.sites[i], message: "sent no θ-free sums for a site-grouped model") }
            let width = (crossed?.siteColumns[i].count ?? 0) + spec.fixedCount + 1
            if let why = b.inconsistency(structure: structure, width: width) {
                throw SiteFailure(site: session.sites[i], message: "sent inconsistent sums (\(why))")
            }
            return b
        }
    }

    /// lme4's start, at second order (`criterion`); with crossed factors the
    /// first round depends on the sums the sites prepare.
    static func firstEvaluation(_ spec: ModelSpec, options: FitOptions, session: String) -> EvaluateRequest? {
        spec.hasCrossedTerms ? nil : EvaluateRequest(session: session, theta: spec.covarianceStructure.initialTheta, order: 2)
    }

    /// Centring (Centring.swift), chosen from the site-grouped sums when
    /// their digits would otherwise be lost: the sites then prepare the
    /// shifted model, one more round.
    static func recoding(_ session: FitSession) throws -> Centring? {
        // Crossed factors' columns lead the sums; centring is not offered for them.
        guard !session.spec.hasCrossedTerms, let blocks = try siteBlocks(session) else { return nil }
        return Centring.choose(blocks, spec: session.spec)
    }

    init(_ session: FitSession, options: FitOptions) throws {
        self.session = session
        method = options.method
        blocks = try Self.siteBlocks(session)
        crossed = try session.crossedLayout()
        if let blocks, let crossed, options.crossedByLevel ?? CrossedLevelElimination.cheaper(blocks, layout: crossed, structure: session.structure) {
            levelSums = CrossedLevelElimination.sums(blocks, layout: crossed, structure: session.structure,
                                                     localStructure: session.spec.localModel.covarianceStructure)
        } else {
            levelSums = nil
        }
        lowRankSums = try crossed.flatMap { try Self.lowRankSums(session, layout: $0, choose: options.crossedByLevel) }
        logWeightSum = session.prepared.reduce(0.0) { $0 + ($1.summary.logWeightSum ?? 0) }
    }

    /// Each site's own effects: Σ over its within-site factors of levels × r.
    static func ownEffects(_ session: FitSession, site k: Int) -> Int {
        let spec = session.spec, local = spec.localModel.covarianceStructure
        return spec.localModel.factorGroupings.enumerated().reduce(0) { sum, fg in
            let t = spec.terms.firstIndex { $0.grouping == fg.element }!
            return sum + session.prepared[k].summary.groups[t] * local.factorDimension(fg.offset)
        }
    }

    /// The sums of the level-by-level elimination with the sites' own
    /// effects as columns (nil when some site did not send A_k, when every
    /// term is grouped by the site, or when the dense path costs less).
    static func lowRankSums(_ session: FitSession, layout: CrossedLayout, choose: Bool?) throws -> CrossedLevelElimination.Sums? {
        let spec = session.spec
        guard !spec.localModel.allTermsGroupedBySite, choose != false,
              session.prepared.allSatisfy({ $0.crossedSums != nil }) else { return nil }
        let widths = session.sites.indices.map { ownEffects(session, site: $0) }
        var sums: [SiteBlocks] = []
        for (k, p) in session.prepared.enumerated() {
            let a = p.crossedSums!, site = session.sites[k]
            if let why = a.inconsistency(structure: spec.localModel.covarianceStructure, width: layout.siteColumns[k].count + spec.fixedCount + 1) {
                throw SiteFailure(site: site, message: "sent inconsistent crossed sums (\(why))")
            }
            try ReplyChecks.check(a, spec: spec, used: p.summary.used, site: site)
            sums.append(a)
        }
        guard choose ?? CrossedLevelElimination.cheaper(ownEffects: widths, layout: layout, structure: session.structure,
                                                        width: spec.fixedCount + 1) else { return nil }
        return CrossedLevelElimination.sums(crossedSums: sums, virtualWidths: widths, layout: layout, structure: session.structure,
                                            localStructure: spec.localModel.covarianceStructure)
    }

    var parameterNames: [String] { session.spec.thetaLabels }
    var lowerBounds: [Double] { session.structure.lowerBounds }

    /// The summed contributions at θ, with derivatives up to `order`.
    func totals(_ theta: [Double], order: Int) throws -> LMMTotals {
        try crossedTotals(theta, order: order).totals
    }

    /// The elimination of the crossed effects, whose factors the conditional modes read.
    enum CrossedFactorization {
        case dense(CrossedElimination.Result)
        case byLevel(CrossedLevelElimination.Result)
    }

    /// Whether the crossed effects are eliminated level by level
    /// (CrossedLevelElimination): the coordinator holds the sites' θ-free
    /// sums and that costs less than the dense elimination.
    var eliminatesByLevel: Bool { levelSums != nil || lowRankSums != nil }

    /// The totals, and with crossed factors the elimination of their effects.
    func crossedTotals(_ theta: [Double], order: Int) throws -> (totals: LMMTotals, crossed: CrossedFactorization?) {
        let spec = session.spec, structure = spec.localModel.covarianceStructure
        if let levelSums, let crossed {
            let r = try CrossedLevelElimination.combine(levelSums, layout: crossed, structure: session.structure,
                                                        localStructure: structure, theta: theta, order: order)
            return (r.totals, .byLevel(r))
        }
        if let low = try lowRankTotals(theta, order: order) { return (low.result.totals, .byLevel(low.result)) }
        let parts: [LMMContribution]
        if let blocks {
            let local = spec.localTheta(theta)
            parts = try blocks.map { try LMMSite.evaluate($0, structure: structure, theta: local, order: order) }
        } else {
            let thetaCount = structure.thetaCount, sites = session.sites, crossed = self.crossed
            let width = spec.fixedCount + 1
            parts = try session.evaluate(EvaluateRequest(session: session.id, theta: theta, order: order)) { reply, site in
                guard case .contribution(let c) = reply else { throw unexpected(reply, site, expected: "contribution") }
                let part = try c.contribution()
                let lead = crossed.map { $0.siteColumns[sites.firstIndex(of: site)!].count } ?? 0
                try Self.check(part, width: lead + width, thetaCount: thetaCount, order: order, site: site)
                return part
            }
        }
        guard let crossed else { return (LMMTotals(summing: parts), nil) }
        let r = try CrossedElimination.combine(parts, layout: crossed, structure: session.structure, theta: theta, order: order)
        return (r.totals, .dense(r))
    }

    /// With within-site terms on the level path: one round for each
    /// site's V_kᵀ at θ, and the elimination (nil on the other paths).
    func lowRankTotals(_ theta: [Double], order: Int) throws -> (result: CrossedLevelElimination.Result, virtual: [LMMLowRankContribution])? {
        guard let lowRankSums, let crossed else { return nil }
        let spec = session.spec, structure = spec.localModel.covarianceStructure
        let thetaCount = structure.thetaCount, sites = session.sites, width = spec.fixedCount + 1
        let virtual = try session.evaluate(EvaluateRequest(session: session.id, theta: theta, order: order, lowRank: true)) { reply, site in
            guard case .lowRankContribution(let c) = reply else { throw unexpected(reply, site, expected: "low_rank_contribution") }
            let part = try c.contribution()
            let k = sites.firstIndex(of: site)!, lead = crossed.siteColumns[k].count
            guard part.factor.rows == lowRankSums.plan.virtualWidths[k], part.factor.cols == lead + width,
                  part.factor.space.parameters == thetaCount, part.factor.space.order == order,
                  part.rows == session.prepared[k].summary.used else {
                throw SiteFailure(site: site, message: "sent a low-rank contribution of the wrong shape")
            }
            try ReplyChecks.check(part.values.schur(sums: session.prepared[k].crossedSums!.ww), site: site)
            return part
        }
        let r = try CrossedLevelElimination.combine(lowRankSums, virtual: virtual, layout: crossed, structure: session.structure,
                                                    localStructure: structure, theta: theta, order: order)
        return (r, virtual)
    }

    /// A site's contribution must have the model's shape, finite numbers,
    /// and sums that rows could produce.
    static func check(_ part: LMMContribution, width: Int, thetaCount: Int, order: Int, site: String) throws {
        guard part.schur.rows == width, part.schur.cols == width,
              (0...ProtocolLimits.maxRows).contains(part.rows), part.schur.storage.allSatisfy(\.isFinite),
              part.logDet.storage.allSatisfy(\.isFinite), part.schur.space.parameters == thetaCount,
              part.schur.space.order == order else {
            throw SiteFailure(site: site, message: "sent a contribution of the wrong shape")
        }
        try ReplyChecks.check(part, site: site)
    }

    /// The summed contributions at several θ with derivatives up to
    /// `order`: computed here from the θ-free sums (no round), or asked of
    /// the sites in batched evaluate requests (`thetas`), one round per
    /// `ProtocolLimits.maxExtraThetaPoints + 1` points.
    func totals(batch thetas: [[Double]], order: Int) throws -> [LMMTotals] {
        guard !thetas.isEmpty else { return [] }
        if blocks != nil || thetas.count == 1 || crossed != nil { return try thetas.map { try totals($0, order: order) } }
        let spec = session.spec, structure = session.structure
        let width = spec.fixedCount + 1, thetaCount = structure.thetaCount
        var out: [LMMTotals] = []
        let chunk = ProtocolLimits.maxExtraThetaPoints + 1
        for start in stride(from: 0, to: thetas.count, by: chunk) {
            let points = Array(thetas[start..<min(thetas.count, start + chunk)])
            let request = EvaluateRequest(session: session.id, theta: points[0], order: order,
                                          thetas: points.count > 1 ? Array(points.dropFirst()) : nil)
            let perSite = try session.evaluate(request) { reply, site in
                guard case .contribution(let c) = reply else { throw unexpected(reply, site, expected: "contribution") }
                let parts = try c.contributions()
                guard parts.count == points.count else {
                    throw SiteFailure(site: site, message: "answered \(parts.count) points where \(points.count) were asked")
                }
                for part in parts { try Self.check(part, width: width, thetaCount: thetaCount, order: order, site: site) }
                return parts
            }
            for k in points.indices { out.append(LMMTotals(summing: perSite.map { $0[k] })) }
        }
        return out
    }

    mutating func criterion(_ theta: [Double]) throws -> BoundedNewton.Evaluation {
        evaluations += 1
        let t = try totals(theta, order: 2)
        last = (theta, t)
        var d = try ProfiledCriterion.evaluate(t, method: method)
        d.storage[0] -= logWeightSum
        let m = theta.count
        return .init(value: d.value, gradient: d.gradient, hessian: Matrix(rows: m, cols: m, data: d.hessian))
    }

    /// A profiled criterion can have a local minimum on a bound and a lower
    /// one inside (or the reverse). When the sites sent their θ-free sums,
    /// evaluations cost no round: start also from small factors and keep the
    /// lowest optimum. Otherwise one start, lme4's; and one when more than
    /// `maxCrossedForRestarts` crossed effects make each evaluation a dense
    /// factorization of their size (not when they are eliminated level by level).
    mutating func minimize(_ optimizer: BoundedNewton) throws -> BoundedNewton.Result {
        let initial = session.structure.initialTheta
        let restarts = blocks != nil && ((crossed?.dimension ?? 0) <= Self.maxCrossedForRestarts || eliminatesByLevel)
        let starts = !restarts ? [initial] : [initial, initial.map { $0 * 0.1 }, initial.map { $0 * 1e-3 }]
        var result = try optimizer.minimize(from: starts[0]) { try criterion($0) }
        for start in starts.dropFirst() {
            let other = try optimizer.minimize(from: start) { try criterion($0) }
            if result.isBeaten(by: other, noise: optimizer.relativeNoise) { result = other }
        }
        result.evaluations = evaluations
        return result
    }

    mutating func estimates(at optimum: BoundedNewton.Result) throws -> FitEstimates {
        let theta = optimum.x
        let totals: LMMTotals
        // Second order either way: Satterthwaite's df read the derivatives.
        if let last, last.theta == theta { totals = last.totals }
        else { totals = try self.totals(theta, order: 2); evaluations += 1 }
        let e = try ProfiledCriterion.estimates(totals, method: method)
        var modes: CrossedModes? = nil
        if let crossed {
            let m: (effects: [Double], covariance: Matrix)
            if let low = try lowRankTotals(theta, order: 0) {
                m = CrossedLevelElimination.modes(low.result, layout: crossed, structure: session.structure, theta: theta, beta: e.beta)
                // The sites are sent X P Xᵀ (r × r), not P at their levels.
                let local = session.spec.localModel
                let r = local.siteFactorIndex.map { local.covarianceStructure.factorDimension($0) } ?? 0
                modes = CrossedModes(layout: crossed, effects: m.effects, covariance: m.covariance).withSiteProducts(low.virtual, siteDimension: r)
            } else {
                switch try crossedTotals(theta, order: 0).crossed! {
                case .dense(let r): m = CrossedElimination.modes(r, layout: crossed, structure: session.structure, theta: theta, beta: e.beta)
                case .byLevel(let r): m = CrossedLevelElimination.modes(r, layout: crossed, structure: session.structure, theta: theta, beta: e.beta)
                }
                modes = CrossedModes(layout: crossed, effects: m.effects, covariance: m.covariance)
            }
            // Holding the sites' sums, the coordinator sends each its r × r term, not P at its levels.
            if let blocks {
                let spec = session.spec
                modes = try modes?.withSiteTerms(blocks, localStructure: spec.localModel.covarianceStructure, localTheta: spec.localTheta(theta))
            }
        }
        var out = FitEstimates(theta: theta, beta: e.beta, sigma: e.sigma, unscaledCovariance: e.unscaledCovariance,
                               residualSumOfSquares: e.residualSumOfSquares, nObs: totals.rows, method: method)
        out.crossed = modes
        out.satterthwaite = Satterthwaite(totals: totals, method: method)
        out.kenwardRoger = KenwardRoger(totals: totals, structure: session.structure, theta: theta, method: method)
        return out
    }
}

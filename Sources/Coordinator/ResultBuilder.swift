// Assembles the FitResult from the optimum: the statistics tables come from
// Math (CoefficientTable, VarianceComponentTable); here are the sites'
// partially pooled estimates and the messages.

import Foundation
import Math
import Protocol

struct ResultBuilder {
    let spec: ModelSpec
    let method: EstimationMethod
    let structure: CovarianceStructure
    let sites: [String]
    let prepared: [PrepareReply]
    let finals: [FinalizeReply]
    let theta: [Double]
    let objective: Double
    let estimates: (beta: [Double], sigma: Double, unscaledCovariance: Matrix, residualSumOfSquares: Double)
    let nObs: Int
    let optimizer: BoundedNewton.Result
    /// Warn when complete-case analysis drops more than this share of a site's rows.
    var maxDroppedShare = 0.2
    /// LMMs: Satterthwaite's df for the fixed effects' t tests (lmerTest);
    /// nil keeps the normal (z) p-values.
    var satterthwaite: Satterthwaite? = nil
    /// REML LMMs: Kenward-Roger's adjusted SEs and df (an addition to each
    /// fixed effect; the main columns stay Satterthwaite's).
    var kenwardRoger: KenwardRoger? = nil

    /// Number of levels of each term's grouping factor over all sites.
    var groupCounts: [Int] {
        GroupingChecks.pooledLevels(spec, prepared: prepared)
    }

    /// The GLMM's family; nil for a linear model.
    var glmFamily: GLMFamily? {
        spec.family == .gaussian ? nil : GLMFamily(spec.family, spec.link)
    }

    var fixedEffectsCovariance: FixedEffectsCovariance {
        FixedEffectsCovariance(sigma: estimates.sigma, unscaled: estimates.unscaledCovariance)
    }

    var coefficientTable: CoefficientTable {
        if let satterthwaite, spec.family == .gaussian {
            return CoefficientTable(names: spec.fixed.map(\.name), estimates: estimates.beta, covariance: fixedEffectsCovariance,
                                    degreesOfFreedom: satterthwaite.degreesOfFreedom)
        }
        return CoefficientTable(names: spec.fixed.map(\.name), estimates: estimates.beta, covariance: fixedEffectsCovariance)
    }

    var varianceComponentTable: VarianceComponentTable {
        let terms = zip(spec.terms, groupCounts).map { VarianceComponentTable.Term(name: $0.name, columns: $0.columns.map(\.name), levels: $1) }
        return VarianceComponentTable(structure: structure, terms: terms, theta: theta, sigma: estimates.sigma,
                                      includesResidual: spec.family == .gaussian)
    }

    func build(evaluations: Int, rounds: Int, bytesSent: [Int], bytesReceived: [Int], elapsed: Double) -> FitResult {
        let vc = varianceComponentTable
        let icc = VarianceComponentTable.latentResidualVariance(family: glmFamily, sigma: estimates.sigma)
            .map(vc.intraclassCorrelations) ?? [:]
        let nGroups = Dictionary(zip(spec.terms.map(\.name), groupCounts)) { $1 }
        let perSite = siteResults(bytesSent: bytesSent, bytesReceived: bytesReceived)
        let npar = Double(spec.fixedCount + theta.count + (spec.family == .gaussian ? 1 : 0))
        let loglik = -objective / 2
        let singular = structure.isSingular(theta: theta)
        var result = FitResult(
            model: .init(formula: spec.formula, family: spec.family.rawValue, link: spec.link.rawValue, method: method.rawValue),
            variables: spec.requiredVariables,
            converged: optimizer.converged, singular: singular, messages: messages(singular: singular, sites: perSite),
            nObs: nObs, nSites: sites.count, nGroups: nGroups,
            fixedEffects: coefficientTable.rows.map(FitResult.FixedEffect.init), theta: vc.theta, thetaNames: vc.thetaNames,
            varianceComponents: vc.rows.map(FitResult.VarianceComponent.init),
            sigma: estimates.sigma, loglik: loglik, aic: -2 * loglik + 2 * npar, bic: -2 * loglik + log(Double(nObs)) * npar,
            objective: objective, icc: icc, sites: perSite, evaluations: evaluations, rounds: rounds,
            bytesSent: bytesSent.reduce(0, +), bytesReceived: bytesReceived.reduce(0, +),
            elapsedSeconds: elapsed, groupOrder: vc.groupNames, nAGQ: nil, lme4Objective: nil)
        result.convergence = optimizer.message
        // exactly symmetric, as lme4's (a GLMM's block of H⁻¹ is symmetric
        // only to rounding); the diagonal, and so every SE, is untouched
        let v = fixedEffectsCovariance.matrix
        result.vcov = (0..<v.rows).map { i in (0..<v.cols).map { j in (v[i, j] + v[j, i]) / 2 } }
        if let kr = kenwardRoger, spec.family == .gaussian {
            let se = kr.standardErrors, df = kr.degreesOfFreedom
            // Only where the adjustment is defined: a nearly singular fit can
            // leave it without a finite SE or df, and then it is left out.
            for k in result.fixedEffects.indices where k < se.count && se[k].isFinite && se[k] > 0 && df[k].isFinite && df[k] > 0 {
                let t = result.fixedEffects[k].estimate / se[k]
                result.fixedEffects[k].kenwardRoger = .init(stdError: se[k], df: df[k], statistic: t,
                                                            pValue: StudentT.twoSidedPValue(t, degreesOfFreedom: df[k]))
            }
        }
        result.dfResid = nObs - Int(npar)
        return result
    }

    /// Singular fit, non-convergence, and sites under-represented after
    /// complete-case analysis.
    func messages(singular: Bool, sites: [FitResult.SiteResult]) -> [String] {
        var messages: [String] = []
        if singular { messages.append("boundary (singular) fit: see help('isSingular')") }
        if !optimizer.converged { messages.append("Model failed to converge: \(optimizer.message)") }
        let losing = sites.filter { $0.droppedShare > maxDroppedShare }.sorted { $0.droppedShare > $1.droppedShare }
        if !losing.isEmpty {
            let list = losing.map { String(format: "%@ (drops %.0f%%; %.1f%% of all rows before, %.1f%% after)", $0.site, 100 * $0.droppedShare, 100 * $0.shareBefore, 100 * $0.shareAfter) }
            messages.append("complete-case analysis drops more than \(Int(100 * maxDroppedShare))% of the rows at \(losing.count) site(s): " + list.joined(separator: "; ") + ". These sites are under-represented; see the missing-data table, and consider `fedmix sensitivity`.")
        }
        return messages
    }

    /// Each site's rows, missing data, partially pooled estimates, traffic and audit receipts.
    func siteResults(bytesSent: [Int], bytesReceived: [Int]) -> [FitResult.SiteResult] {
        let totalRows = max(prepared.reduce(0) { $0 + $1.summary.rows }, 1)
        let totalUsed = max(prepared.reduce(0) { $0 + $1.summary.used }, 1)
        let meanX = meanCovariates(totalUsed: totalUsed)
        return sites.enumerated().map { i, site in
            let s = prepared[i].summary
            let pooled = pooledEstimates(finals[i])
            let patterns = (s.patterns ?? []).map {
                FitResult.SiteResult.Pattern(missing: $0.missing, count: $0.count.exactValue.map(MissingCount.exact) ?? .suppressed($0.count.description))
            }
            var result = FitResult.SiteResult(site: site, nRows: s.rows, nUsed: s.used,
                                     missing: s.missing.mapValues { $0.exactValue.map(MissingCount.exact) ?? .suppressed($0.description) },
                                     effects: pooled.effects, condSD: pooled.condSD, ownEffects: pooled.own, coefficients: pooled.coefficients,
                                     bytesSent: bytesSent[i], bytesReceived: bytesReceived[i],
                                     responseScale: responseScale(intercept: pooled.effects["(Intercept)"], sd: pooled.condSD["(Intercept)"], meanX: meanX),
                                     droppedShare: s.rows > 0 ? 1 - Double(s.used) / Double(s.rows) : 0,
                                     shareBefore: Double(s.rows) / Double(totalRows), shareAfter: Double(s.used) / Double(totalUsed),
                                     missingPatterns: patterns)
            result.receipts = ReceiptLedger.shared.take(session: prepared[i].session, site: site)
            result.imputed = s.imputed?.mapValues { $0.exactValue.map(MissingCount.exact) ?? .suppressed($0.description) }
            result.imputedMeans = s.imputedMeans
            return result
        }
    }

    /// A site's conditional modes of the site-level effects with their
    /// conditional SDs, its own estimates, and lme4's coef() (β plus the modes),
    /// keyed by column ("term.column" where two site terms share a column name).
    func pooledEstimates(_ final: FinalizeReply) -> (effects: [String: Double], condSD: [String: Double], own: [String: Double], coefficients: [String: Double]) {
        let siteColumns = spec.terms.filter { $0.grouping == .site }.flatMap { term in term.columns.map { (term.name, $0.name) } }
        let duplicated = Set(siteColumns.map(\.1).filter { n in siteColumns.filter { $0.1 == n }.count > 1 })
        let keys = siteColumns.map { duplicated.contains($0.1) ? "\($0.0).\($0.1)" : $0.1 }
        var effects: [String: Double] = [:], condSD: [String: Double] = [:], own: [String: Double] = [:]
        var coefficients: [String: Double] = [:]
        for (j, c) in spec.fixed.enumerated() { coefficients[c.name] = estimates.beta[j] }
        if let e = final.effects, let cc = final.conditionalCovariance, e.count == keys.count {
            let r = e.count
            for (a, key) in keys.enumerated() {
                effects[key] = e[a]
                condSD[key] = cc[a + a * r].squareRoot()
                if coefficients[siteColumns[a].1] != nil { coefficients[siteColumns[a].1]! += e[a] }
                if let o = final.ownEffects, o.count == keys.count { own[key] = o[a] }
            }
        }
        return (effects, condSD, own, coefficients)
    }

    /// The average covariate profile over all used rows, when every site sent its column sums.
    func meanCovariates(totalUsed: Int) -> [Double]? {
        let p = spec.fixedCount
        guard prepared.allSatisfy({ $0.summary.columnSums?.count == p }) else { return nil }
        var sums = [Double](repeating: 0, count: p)
        for s in prepared { for j in 0..<p { sums[j] += s.summary.columnSums![j] } }
        return sums.map { $0 / Double(totalUsed) }
    }

    /// GLMMs: a site's intercept on the response scale at the average
    /// covariate profile, with a 95% conditional interval.
    func responseScale(intercept: Double?, sd: Double?, meanX: [Double]?) -> FitResult.ResponseScale? {
        guard let family = glmFamily, let b0 = intercept, let sd, let xbar = meanX else { return nil }
        var eta = b0
        for j in 0..<spec.fixedCount { eta += xbar[j] * estimates.beta[j] }
        let z = StandardNormal.quantile975
        return .init(estimate: family.mu(eta), lower: family.mu(eta - z * sd), upper: family.mu(eta + z * sd))
    }
}

// Turns the optimum into what an analyst reads: fixed effects with Wald
// statistics, variance components in lme4's `as.data.frame(VarCorr)` shape
// and order, ICCs, and each site's partially pooled estimates.

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

    /// Number of levels of each term's grouping factor over all sites.
    var groupCounts: [Int] {
        spec.terms.indices.map { t in
            spec.terms[t].grouping == .site ? prepared.count : prepared.reduce(0) { $0 + $1.summary.groups[t] }
        }
    }

    /// lme4 orders terms by decreasing number of levels (reversing ties) when
    /// the order as written is not already non-increasing.
    var lme4Order: [Int] {
        let nl = groupCounts
        let increasing = zip(nl, nl.dropFirst()).contains { $0 < $1 }
        guard increasing else { return Array(nl.indices) }
        let ascending = nl.indices.sorted { nl[$0] != nl[$1] ? nl[$0] < nl[$1] : $0 < $1 }
        return ascending.reversed()
    }

    func build(evaluations: Int, rounds: Int, bytesSent: [Int], bytesReceived: [Int], elapsed: Double) -> FitResult {
        let p = spec.fixedCount
        let sigma = estimates.sigma
        let z = 1.959963984540054
        var fixed: [FitResult.FixedEffect] = []
        for (i, c) in spec.fixed.enumerated() {
            let b = estimates.beta[i]
            let se = sigma * estimates.unscaledCovariance[i, i].squareRoot()
            let stat = b / se
            fixed.append(.init(name: c.name, estimate: b, stdError: se.isFinite ? se : .nan, statistic: stat,
                               pValue: erfc(abs(stat) / 2.0.squareRoot()), ciLower: b - z * se, ciUpper: b + z * se))
        }
        // Variance components and θ in lme4's order.
        let order = lme4Order
        let offsets = structure.thetaOffsets
        var names: [String] = []
        var seen: [String: Int] = [:]
        for t in order {
            let base = spec.terms[t].name
            if let k = seen[base] { names.append("\(base).\(k)"); seen[base] = k + 1 } else { names.append(base); seen[base] = 1 }
        }
        var vc: [FitResult.VarianceComponent] = []
        var thetaOut: [Double] = [], thetaNames: [String] = []
        var icc: [String: Double] = [:]
        var interceptVariances: [(String, Double)] = []
        for (k, t) in order.enumerated() {
            let term = spec.terms[t]
            let r = term.columns.count
            var tm = Matrix(rows: r, cols: r)
            var q = offsets[t]
            for j in 0..<r { for i in j..<r {
                tm[i, j] = theta[q]
                thetaOut.append(theta[q])
                thetaNames.append(i == j ? "\(names[k]).\(term.columns[i].name)"
                                         : "\(names[k]).\(term.columns[i].name).\(term.columns[j].name)")
                q += 1
            } }
            var cov = Dense.multiply(tm, Dense.transpose(tm))
            for e in 0..<cov.data.count { cov.data[e] *= sigma * sigma }
            for i in 0..<r {
                vc.append(.init(group: names[k], var1: term.columns[i].name, var2: nil, vcov: cov[i, i], sdcor: cov[i, i].squareRoot()))
                if term.columns[i].name == "(Intercept)" { interceptVariances.append((names[k], cov[i, i])) }
            }
            for i in 0..<r { for j in (i + 1)..<max(r, i + 1) {
                let sd = (cov[i, i] * cov[j, j]).squareRoot()
                vc.append(.init(group: names[k], var1: term.columns[i].name, var2: term.columns[j].name,
                                vcov: cov[i, j], sdcor: sd > 0 ? cov[i, j] / sd : 0))
            } }
        }
        if spec.family == .gaussian {
            vc.append(.init(group: "Residual", var1: nil, var2: nil, vcov: sigma * sigma, sdcor: sigma))
        }
        if let residual = latentResidualVariance {
            let totalIntercept = interceptVariances.reduce(residual) { $0 + $1.1 }
            for (g, v) in interceptVariances { icc[g] = v / totalIntercept }
        }

        var nGroups: [String: Int] = [:]
        for (t, n) in groupCounts.enumerated() { nGroups[spec.terms[t].name] = n }

        // Sites: conditional modes of site-level effects and lme4's coef().
        let siteColumns = spec.terms.filter { $0.grouping == .site }.flatMap { term in term.columns.map { (term.name, $0.name) } }
        let duplicated = Set(siteColumns.map(\.1).filter { n in siteColumns.filter { $0.1 == n }.count > 1 })
        let keys = siteColumns.map { duplicated.contains($0.1) ? "\($0.0).\($0.1)" : $0.1 }
        var siteResults: [FitResult.SiteResult] = []
        let totalRows = max(prepared.reduce(0) { $0 + $1.summary.rows }, 1)
        let totalUsed = max(prepared.reduce(0) { $0 + $1.summary.used }, 1)
        // Average covariate profile over all used rows (GLMM response scale).
        var meanX: [Double]? = nil
        if prepared.allSatisfy({ $0.summary.columnSums?.count == p }) {
            var sums = [Double](repeating: 0, count: p)
            for s in prepared { for j in 0..<p { sums[j] += s.summary.columnSums![j] } }
            meanX = sums.map { $0 / Double(totalUsed) }
        }
        for (i, site) in sites.enumerated() {
            let s = prepared[i].summary
            var effects: [String: Double] = [:], condSD: [String: Double] = [:], own: [String: Double] = [:]
            var coefficients: [String: Double] = [:]
            for (j, c) in spec.fixed.enumerated() { coefficients[c.name] = estimates.beta[j] }
            if let e = finals[i].effects, let cc = finals[i].conditionalCovariance, e.count == keys.count {
                let r = e.count
                for (a, key) in keys.enumerated() {
                    effects[key] = e[a]
                    condSD[key] = cc[a + a * r].squareRoot()
                    if coefficients[siteColumns[a].1] != nil { coefficients[siteColumns[a].1]! += e[a] }
                    if let o = finals[i].ownEffects, o.count == keys.count { own[key] = o[a] }
                }
            }
            var responseScale: FitResult.ResponseScale? = nil
            if spec.family != .gaussian, let b0 = effects["(Intercept)"], let sd = condSD["(Intercept)"], let xbar = meanX {
                let fam = GLMFamily(spec.family, spec.link)
                var eta = b0
                for j in 0..<p { eta += xbar[j] * estimates.beta[j] }
                responseScale = .init(estimate: fam.mu(eta), lower: fam.mu(eta - 1.959963984540054 * sd), upper: fam.mu(eta + 1.959963984540054 * sd))
            }
            let patterns = (s.patterns ?? []).map {
                FitResult.SiteResult.Pattern(missing: $0.missing, count: $0.count.exactValue.map(MissingCount.exact) ?? .suppressed($0.count.description))
            }
            siteResults.append(.init(site: site, nRows: s.rows, nUsed: s.used,
                                     missing: s.missing.mapValues { $0.exactValue.map(MissingCount.exact) ?? .suppressed($0.description) },
                                     effects: effects, condSD: condSD, ownEffects: own, coefficients: coefficients,
                                     bytesSent: bytesSent[i], bytesReceived: bytesReceived[i], responseScale: responseScale,
                                     droppedShare: s.rows > 0 ? 1 - Double(s.used) / Double(s.rows) : 0,
                                     shareBefore: Double(s.rows) / Double(totalRows), shareAfter: Double(s.used) / Double(totalUsed),
                                     missingPatterns: patterns))
            siteResults[siteResults.count - 1].receipts = ReceiptLedger.shared.take(session: prepared[i].session, site: site)
        }
        let npar = Double(p + theta.count + (spec.family == .gaussian ? 1 : 0))
        let loglik = -objective / 2
        var messages: [String] = []
        let singular = structure.isSingular(theta: theta)
        if singular { messages.append("boundary (singular) fit: see help('isSingular')") }
        if !optimizer.converged { messages.append("Model failed to converge: \(optimizer.message)") }
        let losing = siteResults.filter { $0.droppedShare > maxDroppedShare }.sorted { $0.droppedShare > $1.droppedShare }
        if !losing.isEmpty {
            let list = losing.map { String(format: "%@ (drops %.0f%%; %.1f%% of all rows before, %.1f%% after)", $0.site, 100 * $0.droppedShare, 100 * $0.shareBefore, 100 * $0.shareAfter) }
            messages.append("complete-case analysis drops more than \(Int(100 * maxDroppedShare))% of the rows at \(losing.count) site(s): " + list.joined(separator: "; ") + ". These sites are under-represented; see the missing-data table, and consider `fedmix sensitivity`.")
        }
        var result = FitResult(
            model: .init(formula: spec.formula, family: spec.family.rawValue, link: spec.link.rawValue, method: method.rawValue),
            variables: spec.requiredVariables,
            converged: optimizer.converged, singular: singular, messages: messages,
            nObs: nObs, nSites: sites.count, nGroups: nGroups,
            fixedEffects: fixed, theta: thetaOut, thetaNames: thetaNames, varianceComponents: vc,
            sigma: sigma, loglik: loglik, aic: -2 * loglik + 2 * npar, bic: -2 * loglik + log(Double(nObs)) * npar,
            objective: objective, icc: icc, sites: siteResults, evaluations: evaluations, rounds: rounds,
            bytesSent: bytesSent.reduce(0, +), bytesReceived: bytesReceived.reduce(0, +),
            elapsedSeconds: elapsed, groupOrder: names, nAGQ: nil, lme4Objective: nil)
        result.convergence = optimizer.message
        result.dfResid = nObs - Int(npar)
        return result
    }

    /// The residual variance on the latent scale, for ICCs: σ² (gaussian),
    /// π²/3 (logit), 1 (probit), π²/6 (cloglog); none for Poisson.
    var latentResidualVariance: Double? {
        switch (spec.family, spec.link) {
        case (.gaussian, _): return estimates.sigma * estimates.sigma
        case (.binomial, .logit): return Double.pi * Double.pi / 3
        case (.binomial, .probit): return 1
        case (.binomial, .cloglog): return Double.pi * Double.pi / 6
        default: return nil
        }
    }
}

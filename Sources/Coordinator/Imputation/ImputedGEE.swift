// `fedmix gee --impute`: the GEE fitted on each of the M completed datasets
// (the same draws as `fit --impute`: MultipleImputation.chains) and pooled by
// Rubin's rules on the GEE's own terms. Every reported standard error (robust,
// naive, Mancl-DeRouen, Kauermann-Carroll) is pooled with its own within
// variance and the one between-imputation variance of the estimates. The
// complete-data df is infinite for the robust z test (so Barnard-Rubin's df is
// Rubin's (M − 1)/λ²) and clusters − parameters with --small-sample, as for
// one GEE. α and φ are means over the completed datasets.

import Foundation
import Math
import Protocol

extension GEEResult {
    /// The pooled GEE over M completed datasets.
    public static func imputed(_ federation: Federation, dataset: String, formula: String, descriptions: [SiteDescription],
                               options: FitOptions, settings: ImputationSettings,
                               missingData: MissingDataStrategy = MissingDataStrategy()) throws -> GEEResult {
        let started = Date()
        let roundsBefore = federation.rounds
        let chains = try MultipleImputation.chains(federation, dataset: dataset, analysisFormula: formula,
                                                   descriptions: descriptions, options: options, settings: settings)
        let run = try MultipleImputation.each(federation, chains: chains, options: options) { lane, o in
            try Analysis.fit(lane, dataset: dataset, formula: formula, descriptions: descriptions, options: o, missingData: missingData)
        }
        let fits = run.results
        let geeFits = fits.compactMap(GEEResult.init)
        guard geeFits.count == fits.count, var out = geeFits.first else { throw SettingError("the analyses returned no GEE section") }
        out = pooled(geeFits)
        out.messages = chains.warnings.map { "warning: " + $0 } + out.messages + run.notes
        out.messages.append("multiple imputation: M = \(settings.m), seed \(settings.seed); pooled by Rubin's rules (each SE with its own within variance; α and φ are means over the datasets)")
        out.imputation = MultipleImputation.summary(chains, settings: settings, sites: fits.map(\.sites), analysisFits: settings.m,
                                                    rounds: federation.rounds - roundsBefore, analyses: run)
        out.rounds = federation.rounds - roundsBefore
        (out.bytesSent, out.bytesReceived) = (federation.bytesSent.reduce(0, +), federation.bytesReceived.reduce(0, +))
        out.elapsedSeconds = Date().timeIntervalSince(started)
        return out
    }

    /// Rubin's rules over GEE fits of the same model on M completed datasets.
    static func pooled(_ fits: [GEEResult]) -> GEEResult {
        var out = fits[0]
        let m = Double(fits.count), p = out.fixedEffects.count
        let dfCom = out.smallSample.map { Double($0.df) } ?? .infinity
        for j in 0..<p {
            let estimates = fits.map { $0.fixedEffects[j].estimate }
            func pool(_ se: (Coefficient) -> Double?) -> RubinPooled? {
                let variances = fits.compactMap { se($0.fixedEffects[j]).map { $0 * $0 } }
                guard variances.count == fits.count else { return nil }
                return RubinRules.pool(estimates: estimates, variances: variances, completeDataDF: dfCom)
            }
            let robust = pool { $0.stdError }!
            let md = pool { $0.stdErrorMD }, kc = pool { $0.stdErrorKC }
            // The SE the test uses: the correction's with --small-sample, else the robust one.
            let tested = out.smallSample.map { $0.method == "kc" ? kc : md } ?? robust
            let used = tested ?? robust
            var f = out.fixedEffects[j]
            f.estimate = robust.estimate
            f.stdError = robust.stdError
            f.naiveStdError = pool { $0.naiveStdError }!.stdError
            f.stdErrorMD = md?.stdError
            f.stdErrorKC = kc?.stdError
            f.statistic = used.estimate / used.stdError
            f.pValue = used.df.isFinite ? StudentT.twoSidedPValue(f.statistic, degreesOfFreedom: used.df)
                                        : StandardNormal.twoSidedPValue(f.statistic)
            (f.ciLower, f.ciUpper) = used.interval
            f.df = used.df; f.riv = used.riv; f.fmi = used.fmi
            out.fixedEffects[j] = f
        }
        func pooledCovariance(_ v: (GEEResult) -> [[Double]]) -> [[Double]] {
            let means = (0..<p).map { j in fits.reduce(0) { $0 + $1.fixedEffects[j].estimate } / m }
            return (0..<p).map { i in (0..<p).map { j in
                let within = fits.reduce(0) { $0 + v($1)[i][j] } / m
                let between = m > 1 ? fits.reduce(0) { $0 + ($1.fixedEffects[i].estimate - means[i]) * ($1.fixedEffects[j].estimate - means[j]) } / (m - 1) : 0
                return within + (1 + 1 / m) * between
            } }
        }
        out.vcov = pooledCovariance(\.vcov)
        out.naiveVcov = pooledCovariance(\.naiveVcov)
        out.scale = fits.reduce(0) { $0 + $1.scale } / m
        if out.correlation.alpha != nil { out.correlation.alpha = fits.reduce(0) { $0 + ($1.correlation.alpha ?? 0) } / m }
        out.converged = fits.allSatisfy(\.converged)
        out.iterations = fits.reduce(0) { $0 + $1.iterations }
        out.glmIterations = fits.reduce(0) { $0 + $1.glmIterations }
        out.statistic = "t"
        out.convergence = out.converged ? "all \(fits.count) GEE fits converged (geepack's criterion)"
                                        : "\(fits.filter { !$0.converged }.count) of the \(fits.count) GEE fits did not converge"
        return out
    }
}

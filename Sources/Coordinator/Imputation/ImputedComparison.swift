// `fedmix compare --impute`: the nested models compared on each of the M
// completed datasets (every model on the same completed rows), each model's
// estimates pooled by Rubin's rules, and each likelihood-ratio test pooled by
// the D2 rule (PooledLikelihoodRatio). AIC, BIC, log-likelihood and deviance
// are the means over datasets (descriptive only: they have no Rubin variance).

import Foundation
import Math

extension ModelComparison {
    public static func compare(_ federation: Federation, dataset: String, formulas: [String], options: FitOptions,
                               imputation settings: ImputationSettings) throws -> Comparison {
        let roundsBefore = federation.rounds
        let descriptions = try Analysis.describe(federation, dataset: dataset)
        // The largest model's outcome is what the imputation models should hold.
        let c = try MultipleImputation.chains(federation, dataset: dataset, analysisFormula: formulas[formulas.count - 1],
                                              descriptions: descriptions, options: options, settings: settings)
        let run = try MultipleImputation.each(federation, chains: c, options: options) { lane, o in
            try compare(lane, dataset: dataset, formulas: formulas, options: o)
        }
        let each = run.results
        var out = each[0]
        out.models = out.models.indices.map { k in MultipleImputation.pooled(each.map { $0.models[k] }) }
        let mCount = Double(settings.m)
        for i in out.anova.indices {
            func mean(_ f: (Comparison.Row) -> Double) -> Double { each.reduce(0) { $0 + f($1.anova[i]) } / mCount }
            out.anova[i].aic = mean(\.aic); out.anova[i].bic = mean(\.bic)
            out.anova[i].loglik = mean(\.loglik); out.anova[i].deviance = mean(\.deviance)
            guard let df = out.anova[i].df, df > 0 else { continue }
            let pooled = PooledLikelihoodRatio.pool(each.map { $0.anova[i].chisq ?? 0 }, df: df)
            out.anova[i].chisq = pooled.statistic * Double(df)
            out.anova[i].pValue = pooled.pValue
            out.anova[i].pooledF = pooled.statistic
            out.anova[i].pooledDF2 = pooled.df2
            // The boundary mixture has no pooled counterpart.
            out.anova[i].pValueMixture = nil
            out.anova[i].mixture = nil
        }
        out.flatVsMixed = []
        out.designEffect = nil
        out.notes = c.warnings.map { "warning: " + $0 } + out.notes.filter { !$0.contains("mixture") } + run.notes
        out.notes.append("multiple imputation: M = \(settings.m), seed \(settings.seed); each model pooled by Rubin's rules; likelihood-ratio tests pooled by D2 (Li et al. 1991, as mitml::testModels): Chisq = D2 × Df, Pr from F(Df, pooled_df2); AIC, BIC, logLik and deviance are means over the completed datasets")
        out.rounds = federation.rounds - roundsBefore
        out.bytesSent = federation.bytesSent.reduce(0, +)
        out.bytesReceived = federation.bytesReceived.reduce(0, +)
        out.imputation = MultipleImputation.summary(c, settings: settings, sites: each.map { $0.models[$0.models.count - 1].sites },
                                                    analysisFits: settings.m * formulas.count, rounds: out.rounds,
                                                    analyses: run)
        return out
    }
}

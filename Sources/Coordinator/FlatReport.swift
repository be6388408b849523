// The text summary of a flat model, laid out like R's summary.lm and
// summary.glm, with the cluster-robust table when there is one, then the
// federated parts every report has (sites, missing data, rounds).

import Foundation

extension Report {
    static func flatText(_ r: FitResult, _ f: FitResult.FlatStatistics) -> String {
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        let linear = r.model.kind == "lm"
        line(linear ? "Linear model fit by least squares (R's lm) [fedmix, \(r.nSites) site\(r.nSites == 1 ? "" : "s")]"
                    : "Generalized linear model fit by IRLS (R's glm) [fedmix, \(r.nSites) site\(r.nSites == 1 ? "" : "s")]")
        if !linear { line(" Family: \(r.model.family)  ( \(r.model.link) )") }
        line("Formula: \(r.model.formula)")
        line()
        line("Coefficients:")
        out += coefficientTable(r.fixedEffects.map { ($0.name, $0.estimate, $0.stdError, $0.statistic, $0.pValue) },
                                statistic: f.statistic)
        if let robust = r.robust {
            line()
            line("Cluster-robust standard errors (sandwich::vcovCL, type \(robust.type), cluster \(robust.cluster): \(robust.clusters) clusters):")
            out += coefficientTable(robust.coefficients.map { ($0.name, $0.estimate, $0.stdError, $0.statistic, $0.pValue) },
                                    statistic: f.statistic)
        }
        line("---")
        line("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        line()
        if linear {
            line("Residual standard error: \(fmt(f.residualStandardError ?? r.sigma, digits: 4)) on \(f.dfResidual) degrees of freedom")
            if let r2 = f.rSquared, let a = f.adjRSquared {
                line("Multiple R-squared:  \(fmt(r2, digits: 4)),\tAdjusted R-squared:  \(fmt(a, digits: 4)) ")
            }
            if let fs = f.fStatistic, let p = f.fPValue {
                line("F-statistic: \(fmt(fs.value, digits: 4)) on \(fs.numdf) and \(fs.dendf) DF,  p-value: \(fmtP(p))")
            }
        } else {
            line("(Dispersion parameter for \(r.model.family) family taken to be \(f.dispersion == 1 ? "1" : fmt(f.dispersion ?? 1, digits: 4)))")
            line()
            if let n = f.nullDeviance, let d = f.dfNull { line("    Null deviance: \(fmt(n, digits: 5))  on \(d)  degrees of freedom") }
            line("Residual deviance: \(fmt(f.deviance, digits: 5))  on \(f.dfResidual)  degrees of freedom")
            line("AIC: \(fmt(r.aic, digits: 5))")
            line()
            if let k = f.iterations { line("Number of Fisher Scoring iterations: \(k)") }
        }
        line("logLik: \(fmt(r.loglik, digits: 7)) (df=\(f.logLikDF))   AIC: \(fmt(r.aic, digits: 7))   BIC: \(fmt(r.bic, digits: 7))   Number of obs: \(r.nObs)")
        line()
        line("Sites:")
        var st: [[String]] = [["site", "rows", "used", "sent", "received"]]
        for s in r.sites { st.append([s.site, String(s.nRows), String(s.nUsed), bytes(s.bytesSent), bytes(s.bytesReceived)]) }
        out += table(st, rightAlign: true, leftFirst: true)
        out += "\n" + missingTable(r)
        for m in r.messages { line(m) }
        line()
        line("fedmix: \(r.nSites) sites, \(r.rounds) rounds, "
             + "\(bytes(r.bytesSent)) sent, \(bytes(r.bytesReceived)) received, \(String(format: "%.2f", r.elapsedSeconds)) s; "
             + (r.converged ? "converged" : "NOT converged") + " (\(r.convergence))")
        return out
    }

    /// summary.lm / summary.glm's coefficient table with significance stars.
    static func coefficientTable(_ rows: [(String, Double, Double, Double, Double)], statistic: String) -> String {
        var t: [[String]] = [["", "Estimate", "Std. Error", "\(statistic) value", "Pr(>|\(statistic)|)", ""]]
        for (name, b, se, z, p) in rows {
            t.append([name, fmt(b, digits: 5), fmt(se, digits: 4), fmtFixed(z, 3), fmtP(p), stars(p)])
        }
        return table(t, rightAlign: true, leftFirst: true)
    }

    static func stars(_ p: Double) -> String {
        p < 0.001 ? "***" : p < 0.01 ? "**" : p < 0.05 ? "*" : p < 0.1 ? "." : ""
    }
}

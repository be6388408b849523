// The text summary of a pooled multiple-imputation fit: the pooled fixed
// effects with Rubin's figures, the pooled variance components, the
// imputation models and what each site imputed. The per-dataset details of
// an ordinary summary (AIC, site effects) belong to one completed dataset
// and are left to the JSON's first analysis; they are not shown here.

import Foundation

enum ImputationReport {
    static func text(_ r: FitResult) -> String {
        guard let mi = r.imputation else { return "" }
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        let kind = r.model.family == "gaussian" ? "Linear mixed model (\(r.model.method))" : "Generalized linear mixed model (\(r.model.method))"
        line("\(kind) by multiple imputation [fedmix, \(r.nSites) sites, M = \(mi.m), seed \(mi.seed)]")
        if r.model.family != "gaussian" { line(" Family: \(r.model.family)  ( \(r.model.link) )") }
        line("Formula: \(r.model.formula)")
        line("Number of obs: \(r.nObs) (after imputation)")
        line()
        line("Fixed effects, pooled by Rubin's rules (df: Barnard-Rubin; riv: relative increase in variance; fmi: fraction of missing information):")
        var rows: [[String]] = [["", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)", "riv", "fmi", "2.5 %", "97.5 %"]]
        for f in r.fixedEffects {
            rows.append([f.name, Report.fmt(f.estimate, digits: 5), Report.fmt(f.stdError, digits: 4), Report.fmt(f.df ?? .nan, digits: 4),
                         Report.fmtFixed(f.statistic, 2), Report.fmtP(f.pValue), Report.fmt(f.riv ?? .nan, digits: 3),
                         Report.fmt(f.fmi ?? .nan, digits: 3), Report.fmt(f.ciLower, digits: 4), Report.fmt(f.ciUpper, digits: 4)])
        }
        out += Report.table(rows, rightAlign: true, leftFirst: true)
        line()
        line("Variance components (mean over datasets of log SD; correlations of atanh):")
        var vc: [[String]] = [[" Groups", "Name", "Std.Dev."]]
        for v in r.varianceComponents {
            vc.append([" " + v.group, [v.var1, v.var2].compactMap { $0 }.joined(separator: ":"), Report.fmt(v.sdcor, digits: 4)])
        }
        if r.model.family == "gaussian" { vc.append([" Residual", "", Report.fmt(r.sigma, digits: 4)]) }
        out += Report.table(vc, rightAlign: false)
        line()
        line("Imputation models (fitted on the rows where the variable is observed):")
        for m in mi.models {
            line("  \(m.formula)  [\(m.kind), \(m.nObs) rows\(m.transform == "log" ? ", log scale" : "")\(m.delta != 0 ? ", shifted by \(Report.fmt(m.delta, digits: 4))" : "")]")
        }
        if mi.models.count > 1 { line("  chained equations: \(mi.iterations) sweeps") }
        line()
        let variables = mi.models.map(\.variable)
        var sites: [[String]] = [["site"] + variables.flatMap { ["\($0) imputed", "observed mean", "imputed mean"] }]
        for s in mi.perSite {
            sites.append([s.site] + variables.flatMap { v in
                [s.imputed[v]?.text ?? "0", s.observedMean?[v].map { Report.fmt($0, digits: 4) } ?? "-",
                 s.imputedMean?[v].map { Report.fmt($0, digits: 4) } ?? "-"]
            })
        }
        out += Report.table(sites, rightAlign: true, leftFirst: true)
        line("(means only where the site's rules allow them)")
        line()
        line("fits: \(mi.imputationFits) imputation model(s), \(mi.analysisFits) analyses; rounds \(mi.rounds) (\(mi.roundsPerAnalysis) per analysis"
             + (mi.batched ? "; the \(mi.m) analyses batched into \(mi.analysisRounds))" : ", one after another)"))
        for m in r.messages { line(m) }
        return out
    }
}

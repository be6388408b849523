// The human-readable summary, laid out like lme4's `summary()` so that an
// analyst who knows R reads it without a legend, followed by what only a
// federated fit has: per-site partially pooled estimates and the rounds.

import Foundation

public enum Report {
    /// lme4-style text summary of a fit.
    public static func text(_ r: FitResult) -> String {
        if let flat = r.flat { return flatText(r, flat) }
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        let isREML = r.model.method == "REML"
        if r.model.family == "gaussian" {
            line("Linear mixed model fit by \(isREML ? "REML" : "maximum likelihood") [fedmix, \(r.nSites) site\(r.nSites == 1 ? "" : "s")]")
        } else {
            line("Generalized linear mixed model fit by maximum likelihood (\(r.model.method)) [fedmix, \(r.nSites) sites]")
            line(" Family: \(r.model.family)  ( \(r.model.link) )")
        }
        line("Formula: \(r.model.formula)")
        line()
        if isREML {
            line("REML criterion at convergence: \(fmt(r.objective, digits: 5))")
        } else {
            line(table([["AIC", "BIC", "logLik", "deviance", "df.resid"],
                        [fmt(r.aic, digits: 5), fmt(r.bic, digits: 5), fmt(r.loglik, digits: 5),
                         fmt(-2 * r.loglik, digits: 5), String(r.dfResid)]],
                       rightAlign: true, indent: " "))
        }
        line()
        line("Random effects:")
        var rows: [[String]] = [[" Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
        let groups = r.groupOrder + ["Residual"]
        for g in groups {
            let comps = r.varianceComponents.filter { $0.group == g }
            let variances = comps.filter { $0.var2 == nil }
            for (i, v) in variances.enumerated() {
                var corr: [String] = []
                for j in 0..<i {
                    if let c = comps.first(where: { $0.var1 == variances[j].var1 && $0.var2 == v.var1 }) {
                        corr.append(fmtFixed(c.sdcor, 2))
                    }
                }
                rows.append([i == 0 ? " \(g)" : "", v.var1 ?? "", fmt(v.vcov, digits: 4), fmt(v.sdcor, digits: 4),
                             corr.joined(separator: " ")])
            }
        }
        out += table(rows, rightAlign: false)
        let groupsText = r.groupOrder.compactMap { g -> String? in
            let base = g.split(separator: ".").count > 1 && r.nGroups[g] == nil ? String(g[..<g.lastIndex(of: ".")!]) : g
            guard let n = r.nGroups[base] else { return nil }
            return "\(g), \(n)"
        }
        line("Number of obs: \(r.nObs), groups:  \(groupsText.joined(separator: "; "))")
        line()
        line("Fixed effects:")
        let statName = r.model.family == "gaussian" ? "t value" : "z value"
        var fe: [[String]] = [["", "Estimate", "Std. Error", statName]]
        if r.model.family != "gaussian" { fe[0].append("Pr(>|z|)") }
        for f in r.fixedEffects {
            var row = [f.name, fmt(f.estimate, digits: 5), fmt(f.stdError, digits: 4), fmtFixed(f.statistic, 2)]
            if r.model.family != "gaussian" { row.append(fmtP(f.pValue)) }
            fe.append(row)
        }
        out += table(fe, rightAlign: true, leftFirst: true)
        if !r.icc.isEmpty {
            line()
            line("Intraclass correlation (random intercepts, covariates at 0):")
            out += table(r.icc.keys.sorted().map { [" \($0)", fmtFixed(r.icc[$0]!, 3)] }, rightAlign: false)
        }
        let siteEffects = r.sites.contains { !$0.effects.isEmpty }
        line()
        line(siteEffects ? "Sites (conditional modes of site effects with 95% intervals; partially pooled coefficients):"
                         : "Sites:")
        var st: [[String]] = [["site", "rows", "used", "sent", "received"]]
        let effectNames = r.sites.first?.effects.keys.sorted(by: { a, b in a == "(Intercept)" || (b != "(Intercept)" && a < b) }) ?? []
        for e in effectNames { st[0].append(e); st[0].append("95% interval") }
        let coefNames = effectNames.filter { n in r.fixedEffects.contains { $0.name == n } }
        for c in coefNames { st[0].append("coef \(c)") }
        for s in r.sites {
            var row = [s.site, String(s.nRows), String(s.nUsed), bytes(s.bytesSent), bytes(s.bytesReceived)]
            for e in effectNames {
                let v = s.effects[e] ?? .nan, sd = s.condSD[e] ?? .nan
                row.append(fmt(v, digits: 4))
                row.append("[\(fmt(v - 1.959963984540054 * sd, digits: 4)), \(fmt(v + 1.959963984540054 * sd, digits: 4))]")
            }
            for c in coefNames { row.append(fmt(s.coefficients[c] ?? .nan, digits: 5)) }
            st.append(row)
        }
        out += table(st, rightAlign: true, leftFirst: true)
        if r.sites.contains(where: { $0.responseScale != nil }) {
            line()
            line("Sites on the response scale (inverse link at the average covariates of all rows used, with the site's effect; 95% conditional interval):")
            var rs: [[String]] = [["site", "estimate", "95% interval"]]
            for s in r.sites {
                guard let v = s.responseScale else { continue }
                rs.append([s.site, fmt(v.estimate, digits: 4), "[\(fmt(v.lower, digits: 4)), \(fmt(v.upper, digits: 4))]"])
            }
            out += table(rs, rightAlign: true, leftFirst: true)
        }
        if let l = r.lme4Objective {
            line()
            line("−2 log-likelihood \(fmt(r.objective, digits: 7)) includes the binomial coefficients; lme4 reports \(fmt(l, digits: 7)) for nAGQ > 1, leaving out the saturated model's constant.")
        }
        out += "\n" + missingTable(r)
        for m in r.messages { line(m) }
        line()
        line("fedmix: \(r.nSites) sites, \(r.rounds) rounds, \(r.evaluations) criterion evaluations, "
             + "\(bytes(r.bytesSent)) sent, \(bytes(r.bytesReceived)) received, \(String(format: "%.2f", r.elapsedSeconds)) s; "
             + (r.converged ? "converged" : "NOT converged"))
        return out
    }

    public static func missingTable(_ r: FitResult) -> String {
        let vars = r.variables
        var rows: [[String]] = [["site", "rows", "used", "dropped"] + vars]
        for s in r.sites.sorted(by: { $0.droppedShare != $1.droppedShare ? $0.droppedShare > $1.droppedShare : $0.site < $1.site }) {
            var row = [s.site, String(s.nRows), String(s.nUsed), String(format: "%.1f%%", 100 * s.droppedShare)]
            for v in vars {
                switch s.missing[v] {
                case .exact(let n)?: row.append(n == 0 ? "-" : String(format: "%d (%.0f%%)", n, 100 * Double(n) / Double(max(s.nRows, 1))))
                case .suppressed(let t)?: row.append(t)
                case nil: row.append("?")
                }
            }
            rows.append(row)
        }
        let total = r.sites.reduce(0) { $0 + $1.nRows }, used = r.sites.reduce(0) { $0 + $1.nUsed }
        var out = "Missing data (model variables; complete-case analysis uses \(used) of \(total) rows, \(String(format: "%.1f%%", 100 * Double(used) / Double(max(total, 1))))):\n"
        out += table(rows, rightAlign: true, leftFirst: true)
        return out
    }

    static func bytes(_ n: Int) -> String {
        n < 10_000 ? "\(n) B" : n < 10_000_000 ? String(format: "%.1f kB", Double(n) / 1000) : String(format: "%.1f MB", Double(n) / 1e6)
    }

    /// R-like formatting with `digits` significant digits.
    static func fmt(_ x: Double, digits: Int) -> String {
        if !x.isFinite { return x.isNaN ? "NA" : (x > 0 ? "Inf" : "-Inf") }
        if x == 0 { return "0" }
        let mag = Int(floor(log10(abs(x))))
        if mag >= 15 || mag < -4 { return String(format: "%.\(max(digits - 1, 0))e", x) }
        let decimals = max(0, digits - 1 - mag)
        return String(format: "%.\(decimals)f", x)
    }

    static func fmtFixed(_ x: Double, _ d: Int) -> String { x.isFinite ? String(format: "%.\(d)f", x) : "NA" }

    static func fmtP(_ p: Double) -> String {
        p < 2e-16 ? "< 2e-16" : p < 0.001 ? String(format: "%.2e", p) : String(format: "%.4f", p)
    }

    /// Aligns a table; the first column left-aligned when asked.
    public static func table(_ rows: [[String]], rightAlign: Bool, leftFirst: Bool = false, indent: String = "") -> String {
        let ncol = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: ncol)
        for r in rows { for (j, c) in r.enumerated() { widths[j] = max(widths[j], c.count) } }
        var out = ""
        for r in rows {
            var cells: [String] = []
            for j in 0..<ncol {
                let c = j < r.count ? r[j] : ""
                let pad = String(repeating: " ", count: widths[j] - c.count)
                cells.append((rightAlign && !(leftFirst && j == 0)) ? pad + c : c + pad)
            }
            out += indent + cells.joined(separator: " ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
        }
        return out
    }
}

// The human-readable summary, laid out like lme4's `summary()` so that an
// analyst who knows R reads it without a legend, followed by what only a
// federated fit has: per-site partially pooled estimates and the rounds.

import Foundation
import Math

public enum Report {
    /// lme4-style text summary of a fit.
    public static func text(_ r: FitResult) -> String {
        if r.imputation != nil { return ImputationReport.text(r) }
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
        // lme4's "Data:" line names the data frame; here the data are the sites.
        let names = r.sites.map(\.site)
        let shown = names.count <= 10 ? names.joined(separator: ", ") : names.prefix(8).joined(separator: ", ") + ", … (\(names.count - 8) more)"
        line("   Data: \(names.count) site\(names.count == 1 ? "" : "s") (\(shown))")
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
        // lme4 has a Corr column only when some term has correlations.
        let hasCorrelations = r.varianceComponents.contains { $0.var2 != nil }
        var rows: [[String]] = [[" Groups", "Name", "Variance", "Std.Dev."] + (hasCorrelations ? ["Corr"] : [])]
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
                rows.append([i == 0 ? " \(g)" : "", v.var1 ?? "", fmt(v.vcov, digits: 4), fmt(v.sdcor, digits: 4)]
                             + (hasCorrelations ? [corr.joined(separator: " ")] : []))
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
        // LMMs with Satterthwaite's df: lmerTest's columns (Estimate, Std. Error, df, t value, Pr(>|t|)).
        let satterthwaite = r.model.family == "gaussian" && !r.fixedEffects.isEmpty && r.fixedEffects.allSatisfy { $0.df != nil }
        var fe: [[String]] = [["", "Estimate", "Std. Error", statName]]
        if satterthwaite { fe[0] = ["", "Estimate", "Std. Error", "df", statName, "Pr(>|t|)"] }
        if r.model.family != "gaussian" { fe[0].append("Pr(>|z|)") }
        for f in r.fixedEffects {
            var row = [f.name, fmt(f.estimate, digits: 5), fmt(f.stdError, digits: 4), fmtFixed(f.statistic, 2)]
            if satterthwaite { row = [f.name, fmt(f.estimate, digits: 5), fmt(f.stdError, digits: 4), fmt(f.df!, digits: 5), fmtFixed(f.statistic, 2), fmtP(f.pValue)] }
            if r.model.family != "gaussian" { row.append(fmtP(f.pValue)) }
            fe.append(row)
        }
        out += table(fe, rightAlign: true, leftFirst: true)
        out += correlationBlock(r.vcov, names: r.fixedEffects.map(\.name))
        if !r.icc.isEmpty {
            line()
            line("Intraclass correlation (random intercepts, covariates at 0):")
            out += table(r.icc.keys.sorted().map { [" \($0)", fmtFixed(r.icc[$0]!, 3)] }, rightAlign: false)
        }
        if let ci = r.confint {
            line()
            out += confintTable(r, ci)
        }
        if let m = r.marginal { line(); out += marginalText(m) }
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
        if let crossed = r.crossedEffects, !crossed.isEmpty {
            line()
            line("Crossed factors (conditional modes with 95% intervals; shared by the sites):")
            var ct: [[String]] = [["group", "level"]]
            let names = Set(crossed.flatMap(\.effects.keys)).sorted(by: { a, b in a == "(Intercept)" || (b != "(Intercept)" && a < b) })
            for n in names { ct[0].append(n); ct[0].append("95% interval") }
            for c in crossed {
                var row = [c.group, c.level]
                for n in names {
                    let v = c.effects[n] ?? .nan, sd = c.condSD[n] ?? .nan
                    row.append(c.effects[n] == nil ? "" : fmt(v, digits: 4))
                    row.append(c.effects[n] == nil ? "" : "[\(fmt(v - 1.959963984540054 * sd, digits: 4)), \(fmt(v + 1.959963984540054 * sd, digits: 4))]")
                }
                ct.append(row)
            }
            out += table(ct, rightAlign: true, leftFirst: true)
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

    /// The population-averaged section of a GLMM fit with --marginal.
    static func marginalText(_ m: MarginalResult) -> String {
        var out = "Population-averaged effects (integrated over the random effects\(m.sigma.map { ", σ = \(fmt($0, digits: 4))" } ?? ""); delta-method SEs, θ held fixed):\n"
        var rows: [[String]] = [["", "kind", "Estimate", "Std. Error", "2.5 %", "97.5 %"]]
        for e in [m.predicted] + m.effects {
            rows.append([e.name, e.kind, fmt(e.estimate, digits: 5), fmt(e.stdError, digits: 4), fmt(e.ciLower, digits: 4), fmt(e.ciUpper, digits: 4)])
        }
        out += table(rows, rightAlign: true, leftFirst: true)
        guard !m.attenuation.isEmpty else { return out + m.attenuationMethod + "\n" }
        out += "GLMM-implied marginal coefficients (\(m.attenuationMethod)):\n"
        let ratios = m.attenuation.first?.conditionalRatio != nil
        var at: [[String]] = [["", "conditional", "marginal"] + (ratios ? ["exp(cond.)", "exp(marg.)"] : [])]
        for a in m.attenuation {
            at.append([a.name, fmt(a.conditional, digits: 5), fmt(a.marginal, digits: 5)]
                      + (ratios ? [fmt(a.conditionalRatio!, digits: 4), fmt(a.marginalRatio!, digits: 4)] : []))
        }
        return out + table(at, rightAlign: true, leftFirst: true)
    }

    /// lme4's "Correlation of Fixed Effects" block as `print(summary(m))`
    /// lays it out: the strict lower triangle of the correlations, rounded to
    /// 3 decimals and formatted to one width, under the first p − 1 names
    /// abbreviated to 6 characters, each row named by its effect abbreviated
    /// to 11; every cell left-aligned and padded to its column's width (so
    /// rows keep their trailing blanks, as R prints them). Nothing for p = 1;
    /// for p > 12 lme4's note instead (it shows the matrix only on request).
    public static func correlationBlock(_ vcov: [[Double]], names: [String]) -> String {
        let p = vcov.count
        guard p > 1, names.count == p, vcov.allSatisfy({ $0.count == p }) else { return "" }
        guard p <= 12 else {
            return "\nCorrelation matrix not shown by default, as p = \(p) > 12.\nThe covariance of the fixed effects is \"vcov\" in the JSON output (--format json).\n"
        }
        let correlation = FixedEffectsCovariance(sigma: 1, unscaled: Matrix(rows: p, cols: p, data: (0..<p).flatMap { j in (0..<p).map { i in vcov[i][j] } })).correlation
        // format(round(x, 3), nsmall = 3) over the whole matrix, diagonal included.
        var cells = (0..<p).map { i in (0..<p).map { j -> String in
            let x = correlation[i, j]
            guard x.isFinite else { return x.isNaN ? "NaN" : (x > 0 ? "Inf" : "-Inf") }
            let text = String(format: "%.3f", x)
            return text == "-0.000" ? "0.000" : text
        } }
        let width = cells.joined().map(\.count).max() ?? 0
        cells = cells.map { $0.map { String(repeating: " ", count: width - $0.count) + $0 } }
        let rowNames = Array(abbreviate(names, minLength: 11).dropFirst())
        let columnNames = Array(abbreviate(names, minLength: 6).dropLast())
        func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(0, w - s.count)) }
        let rowWidth = rowNames.map(\.count).max() ?? 0
        let widths = columnNames.indices.map { j in max(columnNames[j].count, (j + 1..<p).map { cells[$0][j].count }.max() ?? 0) }
        var out = "\nCorrelation of Fixed Effects:\n" + pad("", rowWidth)
        for (j, c) in columnNames.enumerated() { out += " " + pad(c, widths[j]) }
        out += "\n"
        for i in 1..<p {
            out += pad(rowNames[i - 1], rowWidth)
            for j in 0..<(p - 1) { out += " " + pad(j < i ? cells[i][j] : "", widths[j]) }
            out += "\n"
        }
        return out
    }

    /// R's `abbreviate(names, minlength)` with its defaults (method
    /// "left.kept", use.classes = TRUE, strict = FALSE): each name is
    /// shortened to `minLength` characters by dropping, from the right and
    /// never a word's first letter, first lower-case vowels that end a word,
    /// then other lower-case vowels, then lower-case letters that end a word,
    /// then other lower-case letters, then any other characters; the blanks
    /// between words go last. Names that collide are redone one character
    /// longer until all differ. Letters are ASCII's.
    public static func abbreviate(_ names: [String], minLength: Int) -> [String] {
        let trimmed = names.map { String($0.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed()) }
        var unique: [String] = []
        for n in trimmed where !unique.contains(n) { unique.append(n) }
        var result = unique, redo = [Bool](repeating: true, count: unique.count), length = minLength
        while true {
            for i in unique.indices where redo[i] { result[i] = abbreviate(unique[i], minLength: length) }
            var seen = Set<String>(), collided = Set<String>()
            for x in result { if !seen.insert(x).inserted { collided.insert(x) } }
            if collided.isEmpty { break }
            length += 1
            // every name whose abbreviation collided, the first of each set included
            redo = result.map { collided.contains($0) }
        }
        return trimmed.map { result[unique.firstIndex(of: $0)!] }
    }

    /// One name's abbreviation (see `abbreviate(_:minLength:)`).
    static func abbreviate(_ name: String, minLength: Int) -> String {
        var b = Array(name)
        func isBlank(_ c: Character) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\u{0B}" || c == "\u{0C}" }
        func isLower(_ c: Character) -> Bool { c.isASCII && c.isLowercase }
        func isVowel(_ c: Character) -> Bool { "aeiou".contains(c) }
        let blanks = b.filter(isBlank).count
        func short() -> Bool { b.count - blanks <= minLength }
        // position i (≥ 1) starts a word / ends a word of two or more characters
        func startsWord(_ i: Int) -> Bool { isBlank(b[i - 1]) }
        func endsWord(_ i: Int) -> Bool { !isBlank(b[i - 1]) && (i + 1 == b.count || isBlank(b[i + 1])) }
        let passes: [(Int) -> Bool] = [
            { isVowel(b[$0]) && endsWord($0) },
            { isVowel(b[$0]) && !startsWord($0) },
            { isLower(b[$0]) && endsWord($0) },
            { isLower(b[$0]) && !startsWord($0) },
            { !startsWord($0) && !isBlank(b[$0]) },
        ]
        if b.count > minLength && !short() {
            passes: for drops in passes {
                var i = b.count - 1
                while i > 0 {
                    if drops(i) { b.remove(at: i) }
                    if short() { break passes }
                    i -= 1
                }
            }
        }
        if b.count > minLength { b = b.enumerated().filter { $0.offset == 0 || !isBlank($0.element) }.map(\.element) }
        return String(b)
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

    /// lme4's confint table (R prints each column with 7 significant digits,
    /// common decimals, NA where R has none), then the ICC's interval and
    /// what the profile cost.
    static func confintTable(_ r: FitResult, _ ci: [FitResult.ConfidenceInterval]) -> String {
        func column(_ xs: [Double?]) -> [String] {
            let decimals = xs.compactMap { $0 }.filter { $0 != 0 && $0.isFinite }
                .map { max(0, 6 - Int(floor(log10(abs($0))))) }.max() ?? 0
            return xs.map { $0.map { String(format: "%.\(min(decimals, 15))f", $0) } ?? "NA" }
        }
        let lower = column(ci.map(\.lower)), upper = column(ci.map(\.upper))
        var rows: [[String]] = [["", "2.5 %", "97.5 %"]]
        for (k, c) in ci.enumerated() { rows.append([c.parameter, lower[k], upper[k]]) }
        let method = ci.first?.method == "Wald" ? "Wald" : "profile likelihood"
        var out = "Confidence intervals (95%, \(method)\(method == "Wald" ? "" : "; the ML deviance, as lme4's confint")):\n"
        out += table(rows, rightAlign: true, leftFirst: true)
        for i in r.iccConfint ?? [] {
            let lo = i.lower.map { fmtFixed($0, 4) } ?? "NA", hi = i.upper.map { fmtFixed($0, 4) } ?? "NA"
            out += "ICC \(i.group): \(fmtFixed(i.icc, 4)), 95% profile interval [\(lo), \(hi)] (\(r.model.method) criterion profiled in σ_\(i.group)/σ)\n"
        }
        if let p = r.profile {
            out += "profile: \(p.rounds) rounds (\(p.batches) steps, \(p.points) points), \(bytes(p.bytesSent)) sent, \(bytes(p.bytesReceived)) received\n"
        }
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
        aligned(rows, leftColumns: rightAlign ? (leftFirst ? 1 : 0) : Int.max, separator: " ", indent: indent)
    }

    /// Columns padded to their widest cell: the first `leftColumns` left-aligned,
    /// the rest right-aligned; trailing blanks trimmed (an empty row is a blank line).
    static func aligned(_ rows: [[String]], leftColumns: Int, separator: String, indent: String = "") -> String {
        let ncol = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: ncol)
        for r in rows { for (j, c) in r.enumerated() { widths[j] = max(widths[j], c.count) } }
        var out = ""
        for r in rows {
            var cells: [String] = []
            for j in 0..<ncol {
                let c = j < r.count ? r[j] : ""
                let pad = String(repeating: " ", count: widths[j] - c.count)
                cells.append(j < leftColumns ? c + pad : pad + c)
            }
            out += indent + cells.joined(separator: separator).replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
        }
        return out
    }
}

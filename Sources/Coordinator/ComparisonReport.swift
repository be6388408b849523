// `fedmix compare` as text: lme4's anova() layout ("Data:", "Models:", the
// table with R's column headers and significance stars), then the notes on
// the boundary, the flat and mixed estimates side by side and the design
// effect, and what the comparison cost in rounds and bytes.

import Foundation

public enum ComparisonReport {
    public static func text(_ c: Comparison) -> String {
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        if c.refittedML { line("refitting model(s) with ML (instead of REML)") }
        line("Data: \(c.dataset) (\(c.nObs) rows at \(c.nSites) site\(c.nSites == 1 ? "" : "s"): the complete cases of every model)")
        line("Models:")
        for r in c.anova { line("\(r.model): \(r.formula)") }
        out += anovaTable(c.anova)
        let others = c.notes.filter { !$0.hasPrefix("refitting model(s)") }
        if !others.isEmpty {
            line()
            for n in others { line(n) }
        }
        if !c.flatVsMixed.isEmpty, let first = c.flatVsMixed.first {
            line()
            line("Fixed effects, flat model \(first.flatModel) vs mixed model \(first.mixedModel) (SE ratio = mixed SE / flat SE):")
            var rows: [[String]] = [["", "flat", "SE", "robust SE", "mixed", "SE", "SE ratio"]]
            for f in c.flatVsMixed {
                rows.append([f.term, RFormat.significant(f.flatEstimate, 5), RFormat.significant(f.flatStdError, 4),
                             f.robustStdError.map { RFormat.significant($0, 4) } ?? "-",
                             RFormat.significant(f.mixedEstimate, 5), RFormat.significant(f.mixedStdError, 4),
                             String(format: "%.2f", f.seRatio)])
            }
            out += Report.table(rows, rightAlign: true, leftFirst: true)
        }
        if let d = c.designEffect {
            line()
            line("Intraclass correlation (\(d.group), \(d.iccScale) scale\(d.method.map { ", \($0) fit" } ?? "")\(d.model.map { " of \($0)" } ?? "")): \(RFormat.significant(d.icc, 4))")
            var sizes = "clusters: \(d.nClusters), mean size \(RFormat.significant(d.meanClusterSize, 4))"
            if let cv = d.cvClusterSize { sizes += ", CV of sizes \(RFormat.significant(cv, 3))" }
            line(sizes)
            var de = "design effect: \(RFormat.significant(d.equal, 4)) (equal sizes)"
            if let u = d.unequal { de += ", \(RFormat.significant(u, 4)) (unequal sizes)" }
            line(de)
            line(d.summary)
        }
        line()
        line("fedmix: \(c.nSites) sites, \(c.models.count) fits, \(c.rounds) rounds, \(Report.bytes(c.bytesSent)) sent, \(Report.bytes(c.bytesReceived)) received")
        return out
    }

    /// The table as R's print.anova lays it out.
    static func anovaTable(_ rows: [Comparison.Row]) -> String {
        func column(_ values: [Double?]) -> [String] { RFormat.column(values, digits: 5) }
        let aic = column(rows.map(\.aic)), bic = column(rows.map(\.bic)), ll = column(rows.map(\.loglik)), dev = column(rows.map(\.deviance))
        let chisq = RFormat.column(rows.map { $0.chisq.map { ($0 * 1e4).rounded() / 1e4 } }, digits: 5)
        let p = rows.map { $0.pValue.map(RFormat.pValue) ?? "" }
        let stars = rows.map { $0.pValue.map(RFormat.stars) ?? "" }
        var table: [[String]] = [["", "npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)", ""]]
        for (k, r) in rows.enumerated() {
            table.append([r.model, String(r.npar), aic[k], bic[k], ll[k], dev[k], chisq[k], r.df.map(String.init) ?? "", p[k], stars[k]])
        }
        var widths = [Int](repeating: 0, count: table[0].count)
        for r in table { for (j, c) in r.enumerated() { widths[j] = max(widths[j], c.count) } }
        var out = ""
        for r in table {
            var cells: [String] = []
            for (j, c) in r.enumerated() {
                let pad = String(repeating: " ", count: widths[j] - c.count)
                cells.append(j == 0 || j == r.count - 1 ? c + pad : pad + c)
            }
            out += cells.joined(separator: " ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
        }
        if stars.contains(where: { !$0.isEmpty }) {
            out += "---\nSignif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1\n"
        }
        return out
    }
}

/// Numbers formatted as R's format() and format.pval() print them.
public enum RFormat {
    /// R's format(x, digits = d) of one number: d significant digits,
    /// trailing zeros dropped, fixed notation unless scientific is narrower.
    public static func significant(_ x: Double, _ d: Int) -> String { column([x], digits: d)[0] }

    /// A column formatted together, as R formats a numeric vector: each
    /// number to `digits` significant digits, all with the decimals the most
    /// demanding one needs; scientific when fixed notation would be wider.
    public static func column(_ values: [Double?], digits: Int) -> [String] {
        let finite = values.compactMap { $0 }.filter(\.isFinite)
        guard !finite.isEmpty else { return values.map { v in v.map { $0.isNaN ? "NaN" : ($0 > 0 ? "Inf" : "-Inf") } ?? "" } }
        var decimals = 0, mantissa = 0
        for x in finite where x != 0 {
            let (s, e) = sigDigits(x, digits)
            decimals = max(decimals, max(0, s - 1 - e))
            mantissa = max(mantissa, s - 1)
        }
        let fixed = finite.map { String(format: "%.\(decimals)f", $0) }
        let sci = finite.map { x -> String in x == 0 ? "0" : scientific(x, mantissa) }
        let useSci = (fixed.map(\.count).max() ?? 0) > (sci.map(\.count).max() ?? 0)
        return values.map { v in
            guard let x = v else { return "" }
            guard x.isFinite else { return x.isNaN ? "NaN" : (x > 0 ? "Inf" : "-Inf") }
            return useSci ? (x == 0 ? "0" : scientific(x, mantissa)) : String(format: "%.\(decimals)f", x)
        }
    }

    /// Significant digits x needs at `digits` precision (trailing zeros
    /// dropped), and the decimal exponent of x so rounded.
    static func sigDigits(_ x: Double, _ digits: Int) -> (Int, Int) {
        let text = String(format: "%.\(digits - 1)e", abs(x))
        let parts = text.split(separator: "e")
        let exponent = Int(parts[1])!
        var m = parts[0].replacingOccurrences(of: ".", with: "")
        while m.count > 1 && m.hasSuffix("0") { m.removeLast() }
        return (m.count, exponent)
    }

    static func scientific(_ x: Double, _ mantissaDecimals: Int) -> String {
        String(format: "%.\(mantissaDecimals)e", x)
    }

    /// R's format.pval(p, digits = 4, eps = .Machine$double.eps), as printCoefmat shows Pr(>Chisq).
    public static func pValue(_ p: Double) -> String {
        if p < 2.220446049250313e-16 { return "< 2.2e-16" }
        return significant(p, 4)
    }

    /// R's significance stars.
    public static func stars(_ p: Double) -> String {
        p < 0.001 ? "***" : p < 0.01 ? "**" : p < 0.05 ? "*" : p < 0.1 ? "." : " "
    }
}

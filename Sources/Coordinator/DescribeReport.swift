// `fedmix describe` as text: one labelled table, a row per site and
// variable (type, non-missing n, missing, mean, SD, number of distinct
// values), with a pooled row under each numeric variable, then the levels.
// Suppressed counts are shown as the sites sent them.

import Foundation
import Protocol

public enum DescribeReport {
    /// A numeric variable's moments over all sites, combined exactly from
    /// each site's n, mean and SD: the pooled mean is Σ nᵢ x̄ᵢ / N and the
    /// pooled sum of squares Σ (nᵢ − 1) sᵢ² + Σ nᵢ (x̄ᵢ − x̄)², so that the SD
    /// (N − 1 denominator) is that of the pooled values themselves. Nil
    /// unless every site has the variable and sent its moments.
    public static func pooledMoments(_ name: String, _ sites: [SiteDescription]) -> (n: Int, mean: Double, sd: Double)? {
        var parts: [(n: Int, mean: Double, sd: Double)] = []
        for s in sites {
            guard let v = s.variables.first(where: { $0.name == name }), let n = v.nonMissing?.exactValue,
                  let mean = v.mean, let sd = v.sd, n >= 2 else { return nil }
            parts.append((n, mean, sd))
        }
        guard !parts.isEmpty else { return nil }
        let total = parts.reduce(0) { $0 + $1.n }
        let mean = parts.reduce(0.0) { $0 + Double($1.n) * $1.mean } / Double(total)
        let ss = parts.reduce(0.0) { acc, p in
            acc + Double(p.n - 1) * p.sd * p.sd + Double(p.n) * (p.mean - mean) * (p.mean - mean)
        }
        return (total, mean, (ss / Double(total - 1)).squareRoot())
    }

    /// Five significant digits, without an exponent in the usual range.
    public static func number(_ x: Double) -> String {
        if x == 0 { return "0" }
        let a = abs(x)
        if a >= 1e6 || a < 1e-3 { return String(format: "%.4e", x) }
        let decimals = max(0, min(6, 4 - Int(floor(log10(a)))))
        return String(format: "%.\(decimals)f", x)
    }

    public static func text(_ sites: [SiteDescription]) -> String {
        var out = ""
        var names = sites.first.map { $0.variables.map(\.name) } ?? []
        for s in sites.dropFirst() { for v in s.variables where !names.contains(v.name) { names.append(v.name) } }
        out += "Dataset \"\(sites.first?.dataset ?? "")\" at \(sites.count) sites; \(sites.reduce(0) { $0 + $1.rows }) rows ("
            + sites.map { "\($0.site) \($0.rows)" }.joined(separator: ", ") + ").\n\n"
        var rows: [[String]] = [["site", "variable", "type", "n", "missing", "mean", "sd", "levels"]]
        var notes = Set<String>()
        for (k, name) in names.enumerated() {
            if k > 0 { rows.append([]) }
            let views = sites.map { s in s.variables.first { $0.name == name } }
            for (site, v) in zip(sites, views) {
                guard let v else { rows.append([site.site, name, "absent"]); notes.insert("absent"); continue }
                let missing: String
                switch v.missing {
                case .exact(0): missing = "0"
                case .exact(let m): missing = String(format: "%d (%.0f%%)", m, 100 * Double(m) / Double(max(site.rows, 1)))
                case .below: missing = v.missing.description
                }
                var mean = "", sd = ""
                if v.type == .numeric {
                    if let m = v.mean, let s = v.sd { mean = number(m); sd = number(s) }
                    else {
                        let why = v.momentsWithheld ?? "not sent"
                        mean = why == "min_rows" ? "n<min_rows" : why
                        notes.insert(why)
                    }
                }
                rows.append([site.site, name, v.type.rawValue, v.nonMissing?.description ?? "", missing, mean, sd, String(v.distinct)])
            }
            guard views.contains(where: { $0?.type == .numeric }) else { continue }
            let ns = views.map { $0?.nonMissing?.exactValue }
            let misses = views.map { $0?.missing.exactValue }
            let n = ns.contains(where: { $0 == nil }) ? "" : String(ns.reduce(0) { $0 + $1! })
            let missing = misses.contains(where: { $0 == nil }) ? "" : String(misses.reduce(0) { $0 + $1! })
            if let p = pooledMoments(name, sites) {
                rows.append(["pooled", name, "numeric", n, missing, number(p.mean), number(p.sd)])
            } else {
                rows.append(["pooled", name, "numeric", n, missing, "-", "-"])
                notes.insert("pooled")
            }
        }
        out += table(rows, leftColumns: 3)
        var lines: [String] = [
            "n: non-missing values; mean and sd (n − 1 denominator) are given where a site has at least its min_rows values; no site sends a minimum or maximum, nor any value that fewer than its min_cell rows share.",
            "levels: distinct values at the site; counts below a site's min_cell are shown as <N.",
        ]
        if notes.contains("min_rows") { lines.append("n<min_rows: fewer non-missing values than the site's min_rows, so no mean or sd.") }
        if notes.contains("differencing") { lines.append("differencing: the variable's rows differ from rows the site answered before by fewer than its min_rows, so no mean or sd.") }
        if notes.contains("not sent") { lines.append("not sent: the site's agent predates numeric summaries.") }
        if notes.contains("pooled") { lines.append("pooled mean and sd only when every site sent its moments.") }
        out += "\n" + lines.joined(separator: "\n") + "\n"
        out += "\nLevels (count per site; counts below the sites' threshold are shown as <N):\n"
        for n in names {
            let views = sites.map { s in s.variables.first { $0.name == n } }
            guard views.allSatisfy({ $0?.type == .text }) else { continue }
            if views.contains(where: { $0?.levels == nil }) {
                let total = views.compactMap { $0?.distinct }.reduce(0, +)
                out += " \(n): \(total) distinct values over the sites (identifiers: levels not listed)\n"
                continue
            }
            var levels: [String] = []
            for v in views { for l in v!.levels! where !levels.contains(l.level) { levels.append(l.level) } }
            levels.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            out += " \(n): " + levels.map { l in
                "\(l) [" + views.map { v in v!.levels!.first { $0.level == l }.map { $0.count.description } ?? "0" }.joined(separator: " ") + "]"
            }.joined(separator: ", ")
            let held = views.map { $0?.suppressedLevels ?? 0 }
            if held.contains(where: { $0 > 0 }) {
                out += "; not named (fewer rows than the site's threshold): " + held.map(String.init).joined(separator: " ") + " level(s) per site"
            }
            out += "\n"
        }
        return out
    }

    /// Columns left-aligned up to `leftColumns`, right-aligned after; an empty row is a blank line.
    static func table(_ rows: [[String]], leftColumns: Int) -> String {
        Report.aligned(rows, leftColumns: leftColumns, separator: "  ")
    }
}

// `fedmix describe` as text: each variable's type, missingness and levels,
// site by site, with suppressed counts shown as the sites sent them.

import Protocol

public enum DescribeReport {
    public static func text(_ sites: [SiteDescription]) -> String {
        var out = ""
        let names = sites.first.map { $0.variables.map(\.name) } ?? []
        out += "Dataset \"\(sites.first?.dataset ?? "")\" at \(sites.count) sites; \(sites.reduce(0) { $0 + $1.rows }) rows.\n\n"
        var rows: [[String]] = [["variable", "type"] + sites.map(\.site)]
        rows.append(["rows", ""] + sites.map { String($0.rows) })
        for n in names {
            let views = sites.map { s in s.variables.first { $0.name == n } }
            let type = views.compactMap { $0?.type.rawValue }.first ?? "?"
            rows.append([n, type] + zip(sites, views).map { site, v in
                guard let v else { return "absent" }
                switch v.missing {
                case .exact(0): return "-"
                case .exact(let m): return String(format: "%d missing (%.0f%%)", m, 100 * Double(m) / Double(max(site.rows, 1)))
                case .below: return "\(v.missing) missing"
                }
            })
        }
        out += Report.table(rows, rightAlign: true, leftFirst: true)
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
}

// `fedmix sensitivity`: the same model under several missing-data
// strategies, fixed effects side by side with each one's shift from the main
// (complete-case) analysis and the sites each analysis left out.

import Foundation

public enum SensitivityReport {
    public static func text(formula: String, analyses: [(label: String, result: FitResult)]) -> String {
        guard let main = analyses.first?.result else { return "" }
        var out = "Sensitivity of \(formula) to missing data (\(main.nSites + main.excludedSites.count) sites)\n\n"
        var head: [[String]] = [["", "analysis", "sites", "rows used", "left out"]]
        for (k, a) in analyses.enumerated() {
            head.append([letter(k), a.label, String(a.result.nSites), String(a.result.nObs),
                         a.result.excludedSites.isEmpty ? "-" : a.result.excludedSites.joined(separator: ", ")])
        }
        out += Report.table(head, rightAlign: false)
        out += "\nFixed effects: estimate (SE); shift = difference from A in A's standard errors\n"
        var rows: [[String]] = [["term"] + analyses.indices.flatMap { k in k == 0 ? ["A"] : [letter(k), "shift"] }]
        let names = analyses.flatMap { $0.result.fixedEffects.map(\.name) }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for n in names {
            var row = [n]
            let base = main.fixedEffects.first { $0.name == n }
            for (k, a) in analyses.enumerated() {
                guard let f = a.result.fixedEffects.first(where: { $0.name == n }) else {
                    row.append("-"); if k > 0 { row.append("") }; continue
                }
                row.append("\(Report.fmt(f.estimate, digits: 4)) (\(Report.fmt(f.stdError, digits: 3)))")
                if k > 0 {
                    if let b = base { row.append(String(format: "%+.2f", (f.estimate - b.estimate) / b.stdError)) } else { row.append("new") }
                }
            }
            rows.append(row)
        }
        out += Report.table(rows, rightAlign: true, leftFirst: true)
        out += "\nVariance components (SD):\n"
        var vc: [[String]] = [["group", "name"] + analyses.indices.map(letter)]
        for v in main.varianceComponents where v.var2 == nil {
            vc.append([v.group, v.var1 ?? ""] + analyses.map { a in
                a.result.varianceComponents.first { $0.group == v.group && $0.var1 == v.var1 && $0.var2 == nil }
                    .map { Report.fmt($0.sdcor, digits: 4) } ?? "-"
            })
        }
        out += Report.table(vc, rightAlign: true, leftFirst: true)
        for (k, a) in analyses.enumerated() where !a.result.messages.isEmpty {
            out += "\n\(letter(k)): " + a.result.messages.joined(separator: "\n   ") + "\n"
        }
        return out
    }

    static func letter(_ k: Int) -> String { String(UnicodeScalar(UInt8(65 + k % 26))) }
}

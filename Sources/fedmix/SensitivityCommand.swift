import Foundation
import Coordinator
import Protocol

/// `fedmix sensitivity`: a main complete-case fit and the alternatives asked for.
enum SensitivityCommand {
    static func run(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: ["sites", "dataset", "formula", "family", "link", "nagq", "weights", "format", "output",
                                              "exclude-sites-missing-above", "missing-indicator"],
                              flags: ["ml", "in-process"])
        let formula = try a.require("formula")
        let options = try fitOptions(a)
        var analyses: [(String, MissingDataStrategy)] = [("complete case", MissingDataStrategy())]
        for (v, fractions) in try MissingDataStrategy.parseAssignments(a.values["exclude-sites-missing-above"] ?? [], option: "exclude-sites-missing-above") {
            for f in fractions {
                let s = MissingDataStrategy(excludeAbove: [v: f])
                analyses.append((s.label, s))
            }
        }
        for (v, values) in try MissingDataStrategy.parseAssignments(a.values["missing-indicator"] ?? [], option: "missing-indicator") {
            let s = MissingDataStrategy(indicators: [v: values[0]])
            analyses.append((s.label, s))
        }
        guard analyses.count > 1 else {
            throw UsageError("give at least one alternative: --exclude-sites-missing-above VAR=FRACTION[,FRACTION...] or --missing-indicator VAR=VALUE")
        }
        let (federation, dataset) = try connect(a)
        defer { federation.close() }
        let descriptions = try Analysis.describe(federation, dataset: dataset)
        var results: [(label: String, result: FitResult)] = []
        for (label, strategy) in analyses {
            results.append((label, try Analysis.fit(federation, dataset: dataset, formula: formula, descriptions: descriptions,
                                                    options: options, missingData: strategy)))
        }
        if a.value("format") == "json" {
            let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]
            struct Entry: Encodable { var analysis: String; var result: FitResult }
            let text = String(decoding: try e.encode(results.map { Entry(analysis: $0.label, result: $0.result) }), as: UTF8.self) + "\n"
            if let o = a.value("output") { try text.write(toFile: o, atomically: true, encoding: .utf8) } else { print(text, terminator: "") }
        } else {
            let text = SensitivityReport.text(formula: formula, analyses: results)
            if let o = a.value("output") { try text.write(toFile: o, atomically: true, encoding: .utf8) } else { print(text, terminator: "") }
        }
        return 0
    }

    /// Agents from a sites file, or local agents for CSV paths.
    static func connect(_ a: Arguments) throws -> (Federation, String) {
        if let sites = a.value("sites") {
            return (try SitesFile.load(path: sites).connect(), try a.require("dataset"))
        }
        guard !a.positionals.isEmpty else { throw UsageError("give --sites FILE --dataset NAME, or CSV files/folders") }
        return (try LocalFederation.start(files: try LocalCommand.siteFiles(a.positionals), inProcess: a.has("in-process")), "data")
    }
}

import Foundation
import CommandKit
import Coordinator
import Protocol

/// `fedmix sensitivity`: a main complete-case fit and the alternatives asked for.
enum SensitivityCommand {
    static let paths = Positional("PATH", help: "CSV files or folders of CSV files (one file per site), instead of --sites", arity: .any)
    static let excludeAbove = Option<Assignment>("exclude-sites-missing-above", value: "VAR=F[,F...]",
                                                 help: "one alternative per fraction F: leave out sites where VAR is missing in more than F of rows",
                                                 repeatable: true, Assignment.parser(fractions: true, several: true))
    static let missingIndicator = Option<Assignment>("missing-indicator", value: "VAR=VALUE",
                                                     help: "an alternative: fill VAR with VALUE where missing and add missing(VAR) as a 0/1 term",
                                                     repeatable: true, Assignment.parser(fractions: false, several: false))
    
    static let command = Command(
        "sensitivity", abstract: "Main complete-case fit next to each alternative, with shifts and dropped sites.",
        synopsis: "(PATH... | --sites FILE --dataset NAME) --formula F [options]",
        arguments: [paths],
        options: [Opt.sites, Opt.dataset, Opt.requiredFormula] + Opt.model + [excludeAbove, missingIndicator] + Opt.result + [Opt.inProcess, Opt.excludeSites, Opt.report] + Opt.network,
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let formula = try a.require(Opt.requiredFormula)
        let options = try fitOptions(a)
        var analyses: [(String, MissingDataStrategy)] = [("complete case", MissingDataStrategy())]
        for x in a.values(excludeAbove) {
            for f in x.numbers {
                let s = MissingDataStrategy(excludeAbove: [x.variable: f])
                analyses.append((s.label, s))
            }
        }
        for x in a.values(missingIndicator) {
            let s = MissingDataStrategy(indicators: [x.variable: x.numbers[0]])
            analyses.append((s.label, s))
        }
        guard analyses.count > 1 else {
            throw ArgumentError("give at least one alternative: --exclude-sites-missing-above VAR=FRACTION[,FRACTION...] or --missing-indicator VAR=VALUE")
        }
        for (_, strategy) in analyses { try Analysis.validate(formula: formula, options: options, missingData: strategy) }
        let format = a.value(Opt.format, default: .text)
        let (federation, dataset) = try connect(a)
        defer { federation.close() }
        let descriptions = try Analysis.describe(federation, dataset: dataset)
        var results: [(label: String, result: FitResult)] = []
        for (label, strategy) in analyses {
            results.append((label, try Analysis.fit(federation, dataset: dataset, formula: formula, descriptions: descriptions,
                                                    options: options, missingData: strategy)))
        }
        switch format {
        case .json:
            let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]
            struct Entry: Encodable { var analysis: String; var result: FitResult }
            try write(String(decoding: try e.encode(results.map { Entry(analysis: $0.label, result: $0.result) }), as: UTF8.self) + "\n", a)
        case .text:
            try write(SensitivityReport.text(formula: formula, analyses: results), a)
        }
        if let path = a.value(Opt.report) {
            try HTMLReport.html(analyses: results, title: "fedmix sensitivity: \(formula)",
                                text: SensitivityReport.text(formula: formula, analyses: results)).write(toFile: path, atomically: true, encoding: .utf8)
        }
        return 0
    }

    /// Agents from a sites file, or local agents for CSV paths.
    static func connect(_ a: ParsedArguments, paths: Positional = SensitivityCommand.paths) throws -> (Federation, String) {
        if let sites = a.value(Opt.sites) {
            try a.refuse(paths, "with --sites (the agents serve the data)")
            try a.refuse([Opt.inProcess], "with --sites (it runs local agents for CSV paths)")
            return (try connectSites(sites, a), try a.require(Opt.dataset))
        }
        try a.refuse([Opt.dataset], "with CSV paths (each file is the one dataset of its site); --dataset goes with --sites")
        try a.refuse([Opt.connectTimeout, Opt.roundTimeout, Opt.reconnectBudget], "with CSV paths (they apply to agents reached through --sites)")
        let files = a.positionals(paths)
        guard !files.isEmpty else { throw ArgumentError("give --sites FILE --dataset NAME, or CSV files/folders") }
        return (try LocalFederation.start(files: try LocalCommand.siteFiles(files), inProcess: a.flag(Opt.inProcess),
                                          excluding: a.value(Opt.excludeSites) ?? [], quiet: a.flag(Opt.quiet)), "data")
    }
}

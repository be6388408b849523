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
    
    static let deltaGrid = Option<Assignment>("delta", value: "VAR=D[,D...]",
                                              help: "with --impute: one more multiple imputation per shift D of VAR's imputed values (MNAR; its model's scale, logit for 0/1 variables)",
                                              repeatable: true, Assignment.parser(fractions: false, several: true))
    static let tipping = Option<String>("tipping-point", value: "TERM",
                                        help: "with --delta: the shift at which TERM's 95% interval starts or stops including 0 (default: the imputed variable's term)")
    static let imputation: [any OptionDeclaration] = [Opt.impute, Opt.imputations, Opt.seed, Opt.iterations, deltaGrid, tipping]

    static let command = Command(
        "sensitivity", abstract: "Main complete-case fit next to each alternative, with shifts and dropped sites.",
        synopsis: "(PATH... | --sites FILE --dataset NAME) --formula F [options]",
        arguments: [paths],
        options: [Opt.sites, Opt.dataset, Opt.requiredFormula] + Opt.model + [excludeAbove, missingIndicator] + imputation + Opt.result + [Opt.inProcess, Opt.excludeSites, Opt.report] + Opt.network,
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
        let imputation = try imputationAnalyses(a, formula: formula)
        guard analyses.count + imputation.count > 1 else {
            throw ArgumentError("give at least one alternative: --exclude-sites-missing-above VAR=FRACTION[,FRACTION...], --missing-indicator VAR=VALUE or --impute MODEL")
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
        // The δ grid's imputations side by side: their rounds are batched.
        let imputed = try MultipleImputation.fits(federation, dataset: dataset, formula: formula, descriptions: descriptions,
                                                  options: options, settings: imputation.map(\.1))
        results += zip(imputation, imputed).map { ($0.0, $1) }
        let tippingPoint = try tippingPoint(a, imputation: imputation, results: results)
        switch format {
        case .json:
            let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]
            struct Entry: Encodable { var analysis: String; var result: FitResult; var delta: Double? = nil; var tippingPoint: TippingPoint? = nil
                enum CodingKeys: String, CodingKey { case analysis, result, delta, tippingPoint = "tipping_point" } }
            var entries = results.map { Entry(analysis: $0.label, result: $0.result) }
            for (k, (_, s)) in imputation.enumerated() { entries[results.count - imputation.count + k].delta = s.delta.values.first ?? 0 }
            if let t = tippingPoint { entries.append(Entry(analysis: "tipping point", result: results[results.count - 1].result, tippingPoint: t)) }
            try write(String(decoding: try e.encode(entries), as: UTF8.self) + "\n", a)
        case .text:
            try write(SensitivityReport.text(formula: formula, analyses: results) + (tippingPoint.map { "\n" + $0.text + "\n" } ?? ""), a)
        }
        if let path = a.value(Opt.report) {
            try HTMLReport.html(analyses: results, title: "fedmix sensitivity: \(formula)",
                                text: SensitivityReport.text(formula: formula, analyses: results)).write(toFile: path, atomically: true, encoding: .utf8)
        }
        return 0
    }

    /// --impute: multiple imputation (δ = 0), then one per shift of --delta.
    static func imputationAnalyses(_ a: ParsedArguments, formula: String) throws -> [(String, ImputationSettings)] {
        let models = a.values(Opt.impute)
        guard !models.isEmpty else {
            try a.refuse([Opt.imputations, Opt.seed, Opt.iterations, deltaGrid, tipping], "without --impute (they set up multiple imputation)")
            return []
        }
        let base = ImputationSettings(models: models, m: a.value(Opt.imputations) ?? 20, seed: a.value(Opt.seed) ?? 1,
                                      iterations: a.value(Opt.iterations) ?? 10)
        _ = try MultipleImputation.validate(base, analysisFormula: formula)
        var out: [(String, ImputationSettings)] = [("multiple imputation (M = \(base.m))", base)]
        let grid = a.values(deltaGrid)
        guard grid.count <= 1 else { throw ArgumentError("--delta: give the shifts of one variable (a tipping point moves one shift)") }
        if grid.isEmpty { try a.refuse([tipping], "without --delta (the tipping point is found over its shifts)") }
        for g in grid {
            for d in g.numbers where d != 0 {
                var s = base
                s.delta = [g.variable: d]
                _ = try MultipleImputation.validate(s, analysisFormula: formula)
                out.append(("MI, \(g.variable) shifted by \(RNumberFormat.format(d))", s))
            }
        }
        return out
    }

    /// The tipping point over the δ grid, for --tipping-point TERM (or the
    /// term named as the shifted variable).
    static func tippingPoint(_ a: ParsedArguments, imputation: [(String, ImputationSettings)],
                             results: [(label: String, result: FitResult)]) throws -> TippingPoint? {
        guard imputation.count > 1, let variable = imputation[1].1.delta.keys.first else { return nil }
        let term = a.value(tipping) ?? variable
        let runs = results.suffix(imputation.count)
        let points = zip(imputation, runs).map { (imp, run) in (delta: imp.1.delta[variable] ?? 0, result: run.result) }
        guard points[0].result.fixedEffects.contains(where: { $0.name == term }) else {
            throw ArgumentError("--tipping-point \(term): the model has no fixed effect \(term) (it has \(points[0].result.fixedEffects.map(\.name).joined(separator: ", ")))")
        }
        return TippingPoint.find(term: term, variable: variable, points: points)
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

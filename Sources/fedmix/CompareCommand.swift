import Foundation
import CommandKit
import Coordinator
import Protocol

/// `fedmix compare`: nested models on the same rows, and lme4's anova() table.
enum CompareCommand {
    static let paths = Positional("PATH", help: "CSV files or folders of CSV files (one file per site), instead of --sites", arity: .any)
    static let formulas = Option<String>("formula", value: "F",
                                         help: "a model in lme4's formula language; give two or more (--formula F0 --formula F1 ...), nested in one another",
                                         repeatable: true, required: true)

    static let command = Command(
        "compare", abstract: "Fits nested models on the same rows and prints lme4's anova() table (likelihood-ratio tests).",
        synopsis: "(PATH... | --sites FILE --dataset NAME) --formula F0 --formula F1 [--formula F2 ...] [options]",
        discussion: "Every model is fitted on the complete cases of all the models. Linear mixed models are fitted by ML (lme4 refits REML fits for anova). Where a model adds one random effect, the p-value from the 50:50 mixture of chi-squares (the null is on the boundary) is reported beside Pr(>Chisq).",
        arguments: [paths],
        options: [Opt.sites, Opt.dataset, formulas] + Opt.model + Opt.imputation + Opt.result + [Opt.inProcess, Opt.excludeSites, Opt.report] + Opt.network,
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let list = a.values(formulas)
        guard list.count >= 2 else {
            throw ArgumentError("give at least two models to compare: --formula F0 --formula F1 [--formula F2 ...]")
        }
        let options = try fitOptions(a)
        for f in list { try Analysis.validate(formula: f, options: options) }
        let imputation = try imputationSettings(a)
        if let imputation { _ = try MultipleImputation.validate(imputation, analysisFormula: list[list.count - 1]) }
        let format = a.value(Opt.format, default: .text)
        let (federation, dataset) = try SensitivityCommand.connect(a, paths: paths)
        defer { federation.close() }
        let comparison: Comparison
        do {
            comparison = try imputation.map {
                try ModelComparison.compare(federation, dataset: dataset, formulas: list, options: options, imputation: $0)
            } ?? ModelComparison.compare(federation, dataset: dataset, formulas: list, options: options)
        } catch let e as ComparisonError {
            throw UsageError(e.message)
        }
        switch format {
        case .json: try write(try comparison.json() + "\n", a)
        case .text: try write(ComparisonReport.text(comparison), a)
        }
        if let path = a.value(Opt.report) {
            try HTMLReport.html(analyses: zip(comparison.names, comparison.models).map { ($0, $1) }, title: "fedmix compare",
                                text: ComparisonReport.text(comparison)).write(toFile: path, atomically: true, encoding: .utf8)
        }
        return 0
    }
}

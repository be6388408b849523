import Foundation
import CommandKit
import Coordinator
import Math

/// `fedmix gee`: population-averaged effects by generalized estimating
/// equations, as geepack's geeglm fits them on the pooled rows.
enum GEECommand {
    static let paths = Positional("PATH", help: "CSV files or folders of CSV files (one file per site), instead of --sites", arity: .any)
    static let formula = Option<String>("formula", value: "F", help: "the mean model, fixed effects only, e.g. 'y ~ treat + age'", required: true)
    static let family = Option<Family>("family", value: "NAME", help: "gaussian (the default), binomial or poisson",
                                       .oneOf([("gaussian", .gaussian), ("binomial", .binomial), ("poisson", .poisson)]))
    static let cluster = Option<String>("cluster", value: "site|VAR",
                                        help: "the clusters: each site, or a variable nested within sites (e.g. a patient id; equal codes at two sites are two clusters)",
                                        required: true)
    static let corstr = Option<WorkingCorrelation>("corstr", value: "NAME",
                                                   help: "the working correlation within a cluster: independence (the default), exchangeable or ar1", .cases)
    static let order = Option<String>("order", value: "VAR",
                                      help: "ar1: the numeric variable ordering rows within a cluster (geeglm's waves; distances are differences of its values)")
    static let smallSample = Option<SmallSampleCorrection>("small-sample", value: "md|kc",
                                                           help: "add bias-corrected sandwich SEs for few clusters (Mancl-DeRouen and Kauermann-Carroll; one more round) and test with t on clusters − parameters df using md's or kc's",
                                                           .cases)

    static let glmm = Flag("glmm", help: "also fit the matching GLMM (a random intercept per cluster) with --marginal, and show its conditional and marginal odds (or rate) ratios and average marginal effects beside the GEE's")

    static let command = Command(
        "gee", abstract: "Fits a marginal (population-averaged) model by GEE, as geepack's geeglm does on the pooled rows.",
        synopsis: "(PATH... | --sites FILE --dataset NAME) --formula F --cluster site|VAR [--family F] [--corstr C] [--order VAR] [options]",
        discussion: "Fixed effects only; clusters never span sites and their codes never leave them. Each round is one step of geepack's Fisher scoring: the sites send sums over their clusters (estimating function, its derivative, the sandwich's meat, the moments of the correlation and scale).",
        arguments: [paths],
        options: [Opt.sites, Opt.dataset, formula, family, Opt.link, Opt.filter, cluster, corstr, order, smallSample, glmm]
            + Opt.missingData + Opt.imputation + Opt.result + [Opt.inProcess, Opt.excludeSites] + Opt.network,
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let formula = try a.require(Self.formula)
        var options = FitOptions(family: a.value(family, default: .gaussian), link: a.value(Opt.link))
        options.filter = a.value(Opt.filter)
        options.cluster = try a.require(cluster)
        let correlation = a.value(corstr, default: .independence)
        if correlation == .ar1 && a.value(order) == nil {
            throw ArgumentError("--corstr ar1 needs --order VAR, the numeric variable ordering rows within a cluster (e.g. the visit number)")
        }
        if a.flag(glmm) && options.family == .gaussian {
            throw ArgumentError("--glmm compares odds or rate ratios: it needs --family binomial or poisson")
        }
        options.gee = GEESettings(correlation: correlation, order: a.value(order), smallSample: a.value(smallSample))
        let missing = missingDataStrategy(a)
        try Analysis.validate(formula: formula, options: options, missingData: missing)
        let imputation = try imputationSettings(a)
        if let imputation { _ = try MultipleImputation.validate(imputation, analysisFormula: formula) }
        let (federation, dataset) = try SensitivityCommand.connect(a, paths: paths)
        defer { federation.close() }
        var result: GEEResult
        if let imputation {
            let descriptions = try Analysis.describe(federation, dataset: dataset)
            result = try GEEResult.imputed(federation, dataset: dataset, formula: formula, descriptions: descriptions,
                                           options: options, settings: imputation, missingData: missing)
        } else {
            let fit = try Analysis.fit(federation, dataset: dataset, formula: formula, options: options, missingData: missing)
            guard let r = GEEResult(fit) else { throw UsageError("the fit returned no GEE section") }
            result = r
        }
        if a.flag(glmm) {
            var g = FitOptions(family: options.family, link: options.link)
            g.filter = options.filter
            g.marginal = true
            let mixed = try Analysis.fit(federation, dataset: dataset, formula: SideBySide.glmmFormula(formula, cluster: options.cluster!),
                                         options: g, missingData: missing)
            result.sideBySide = SideBySide(gee: result, glmm: mixed)
            result.rounds += mixed.rounds
            (result.bytesSent, result.bytesReceived) = (mixed.bytesSent, mixed.bytesReceived)   // the federation's totals, both fits
            result.messages += mixed.messages.map { "GLMM: " + $0 }
        }
        switch a.value(Opt.format, default: .text) {
        case .text: try write(result.text, a)
        case .json: try write(try result.json() + "\n", a)
        }
        return 0
    }
}

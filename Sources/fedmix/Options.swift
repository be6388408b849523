import Foundation
import CommandKit
import Coordinator
import Math
import Protocol

/// The options several `fedmix` commands share, declared once: each command
/// lists the ones it takes, and reads them through the functions below.
enum Opt {
    // Where the data is.
    static let sites = Option<String>("sites", value: "FILE", help: "the sites file: the coordinator's certificate and each agent's address")
    static let dataset = Option<String>("dataset", value: "NAME", help: "the dataset, as the agents' configurations name it")
    static let splitBy = Option<String>("split-by", value: "COLUMN",
                                        help: "fedmix local: one CSV of pooled rows, split into one site per value of COLUMN (the site names)")
    static let inProcess = Flag("in-process", help: "run the local site agents in this process (protocol lines, no TLS) instead of over loopback TLS")

    // The model.
    static let formula = Option<String>("formula", value: "F", help: formulaHelp)
    /// For the commands that always need a formula.
    static let requiredFormula = Option<String>("formula", value: "F", help: formulaHelp, required: true)
    static let formulaHelp = "the model in lme4's formula language, e.g. 'y ~ x + (1 | site)'"
    static let family = Option<Family>("family", value: "NAME", help: "gaussian (the default: a linear mixed model), binomial or poisson",
                                       .oneOf([("gaussian", .gaussian), ("binomial", .binomial), ("poisson", .poisson)]))
    static let link = Option<Link>("link", value: "LINK", help: "binomial: logit (the default), probit or cloglog; poisson: log",
                                   .oneOf([("logit", .logit), ("probit", .probit), ("cloglog", .cloglog), ("log", .log), ("identity", .identity)]))
    static let nagq = Option<Int>("nagq", value: "N", help: "GLMMs: adaptive Gauss-Hermite points per group, 1 (Laplace, the default) to \(ProtocolLimits.quadraturePoints.upperBound)",
                                  .integer(in: ProtocolLimits.quadraturePoints))
    static let ml = Flag("ml", help: "linear mixed models: maximum likelihood instead of REML")
    static let weights = Option<String>("weights", value: "VAR",
                                        help: "prior weights, as lmer/glmer read them: LMM rows scaled by √w; binomial: trials of a proportion response; Poisson: log-likelihood multipliers")
    static let filter = Option<String>("filter", value: "EXPR", help: "fit on the rows it selects at every site, e.g. 'age >= 50 & sex == \"F\"'")
    static let cluster = Option<String>("cluster", value: "site|VAR",
                                        help: "flat models (no random-effects term): cluster-robust standard errors as sandwich::vcovCL gives them, clustered by site or by a variable nested within sites")
    static let marginal = Flag("marginal", help: "GLMMs: population-averaged predicted probability (or rate) and average marginal effects, by quadrature over the random effects, and (random intercepts) the GLMM-implied marginal coefficients")
    static let excludeAbove = Option<Assignment>("exclude-sites-missing-above", value: "VAR=F",
                                                 help: "leave out sites where VAR is missing in more than the fraction F of rows",
                                                 repeatable: true, Assignment.parser(fractions: true, several: false))
    static let missingIndicator = Option<Assignment>("missing-indicator", value: "VAR=VALUE",
                                                     help: "fill the covariate VAR with VALUE where missing and add missing(VAR) as a 0/1 term",
                                                     repeatable: true, Assignment.parser(fractions: false, several: false))

    // Multiple imputation (README "Multiple imputation").
    static let impute = Option<String>("impute", value: "MODEL",
                                       help: "multiple imputation of the model's left-side variable, e.g. 'lactate ~ age + iss + died + (1 | site)' or 'log(lactate) ~ …'; a 0/1 variable gets a logistic model; repeat for chained equations",
                                       repeatable: true)
    static let imputations = Option<Int>("m", value: "M", help: "with --impute: completed datasets (default 20)", .integer(in: 2...1000))
    static let seed = Option<UInt64>("seed", value: "S", help: "with --impute: the seed every draw derives from (default 1); the same seed gives the same pooled result", .unsigned)
    static let iterations = Option<Int>("iterations", value: "N", help: "with several --impute models: chained-equation sweeps (default 10)", .integer(in: 1...100))
    static let delta = Option<Assignment>("delta", value: "VAR=D",
                                          help: "with --impute: MNAR shift added to VAR's imputed values on its model's scale (logit scale for 0/1 variables)",
                                          repeatable: true, Assignment.parser(fractions: false, several: false))
    static let imputation: [any OptionDeclaration] = [impute, imputations, seed, iterations, delta]

    static let excludeSites = Option<[String]>("exclude-sites", value: "A,B",
                                               help: "leave these sites out (by name); the result lists them with the reason. For sites that refuse a model the analyst accepts to fit without",
                                               .list(of: .string, what: "site names"))

    // The network (commands that reach agents through a sites file).
    static let connectTimeout = Option<Double>("connect-timeout", value: "SECONDS",
                                               help: "seconds for each site's connection, handshake and hello (default: the sites file's connect_timeout, else 10)",
                                               .number(positive: true))
    static let roundTimeout = Option<Double>("round-timeout", value: "SECONDS",
                                             help: "seconds a site may take to answer one request (default: the sites file's round_timeout, else 120)",
                                             .number(positive: true))
    static let reconnectBudget = Option<Double>("reconnect-budget", value: "SECONDS",
                                                help: "seconds a site may stay unreachable mid-fit while fedmix reconnects and resumes; 0 fails at once (default: the sites file's reconnect_budget, else 30)",
                                                ValueParser { t in
                                                    guard let x = Double(t), x.isFinite, x >= 0 else { throw InvalidValue("must be a number of seconds, 0 or more") }
                                                    return x
                                                })
    static let quiet = Flag("quiet", help: "no progress or waiting notices on standard error (they appear only on a terminal, or with FEDMIX_PROGRESS=1)")
    static let network: [any OptionDeclaration] = [connectTimeout, roundTimeout, reconnectBudget, quiet]

    // The result.
    static let format = Option<OutputFormat>("format", value: "FORMAT", help: "text (lme4's summary; the default) or json", .cases)
    static let output = Option<String>("output", value: "FILE", help: "write the result to FILE instead of standard output")
    static let report = Option<String>("report", value: "FILE.html",
                                       help: "also write the result as one self-contained HTML page (no scripts or external files): forest plot of the fixed effects, site effects, shrinkage, ICC, missing values by site, traffic")
    static let confint = Option<ConfidenceIntervalMethod>("confint", value: "METHOD",
                                                          help: "add 95% confidence intervals, as lme4's confint(): profile (likelihood profile; linear mixed models; also the ICC of one random intercept) or wald (fixed effects)",
                                                          .cases)

    /// The options of a model: family, link, quadrature, method, weights, filter.
    static let model: [any OptionDeclaration] = [family, link, nagq, ml, weights, filter]
    /// The missing-data options of a single fit.
    static let missingData: [any OptionDeclaration] = [excludeAbove, missingIndicator]
    static let result: [any OptionDeclaration] = [format, output]
}

enum OutputFormat: String, CaseIterable, Sendable { case text, json }

/// VAR=NUMBER or VAR=NUMBER,NUMBER,...
struct Assignment: Sendable, Equatable {
    var variable: String
    var numbers: [Double]

    static func parser(fractions: Bool, several: Bool) -> ValueParser<Assignment> {
        let form = several ? "VAR=NUMBER[,NUMBER...]" : "VAR=NUMBER"
        return ValueParser { text in
            guard let eq = text.firstIndex(of: "="), eq != text.startIndex else { throw InvalidValue("takes \(form)") }
            let numbers = text[text.index(after: eq)...].split(separator: ",", omittingEmptySubsequences: false)
                .map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !numbers.isEmpty, numbers.allSatisfy({ $0?.isFinite == true }) else { throw InvalidValue("takes \(form)") }
            if !several && numbers.count > 1 {
                throw InvalidValue("takes one number per variable in a fit (\(form)); fedmix sensitivity compares several")
            }
            if fractions && !numbers.allSatisfy({ (0...1).contains($0!) }) {
                throw InvalidValue("takes fractions of rows, from 0 to 1")
            }
            return Assignment(variable: String(text[..<eq]), numbers: numbers.map { $0! })
        }
    }
}

/// --ml, --family, --link, --nagq, --weights and --filter as fit options.
func fitOptions(_ a: ParsedArguments) throws -> FitOptions {
    let family = a.value(Opt.family, default: .gaussian)
    let nagq = a.value(Opt.nagq)
    let ml = a.flag(Opt.ml)
    if family == .gaussian && nagq != nil { throw ArgumentError("--nagq applies to GLMMs (--family binomial or poisson)") }
    if family != .gaussian && ml { throw ArgumentError("--ml applies to linear mixed models; GLMMs are always fitted by maximum likelihood") }
    var options = FitOptions(method: ml ? .ml : .reml, family: family, link: a.value(Opt.link), nAGQ: nagq ?? 1)
    options.filter = a.value(Opt.filter)
    options.weights = a.value(Opt.weights)
    return options
}

/// fitOptions with --cluster (the commands that fit one model: fit, local).
func singleFitOptions(_ a: ParsedArguments) throws -> FitOptions {
    var options = try fitOptions(a)
    options.cluster = a.value(Opt.cluster)
    options.marginal = a.flag(Opt.marginal)
    return options
}

/// --exclude-sites-missing-above and --missing-indicator as the strategy of one fit.
func missingDataStrategy(_ a: ParsedArguments) -> MissingDataStrategy {
    var s = MissingDataStrategy()
    for x in a.values(Opt.excludeAbove) { s.excludeAbove[x.variable] = x.numbers[0] }
    for x in a.values(Opt.missingIndicator) { s.indicators[x.variable] = x.numbers[0] }
    return s
}

/// --impute, --m, --seed, --iterations and --delta; nil without --impute.
func imputationSettings(_ a: ParsedArguments) throws -> ImputationSettings? {
    let models = a.values(Opt.impute)
    guard !models.isEmpty else {
        try a.refuse([Opt.imputations, Opt.seed, Opt.iterations, Opt.delta], "without --impute (they set up multiple imputation)")
        return nil
    }
    var s = ImputationSettings(models: models, m: a.value(Opt.imputations) ?? 20, seed: a.value(Opt.seed) ?? 1,
                               iterations: a.value(Opt.iterations) ?? 10)
    for d in a.values(Opt.delta) { s.delta[d.variable] = d.numbers[0] }
    return s
}

/// A fit with --impute (pooled over the completed datasets) or without.
func fitMaybeImputed(_ federation: Federation, dataset: String, formula: String, options: FitOptions,
                     missingData: MissingDataStrategy, imputation: ImputationSettings?) throws -> FitResult {
    guard let imputation else {
        return try Analysis.fit(federation, dataset: dataset, formula: formula, options: options, missingData: missingData)
    }
    let descriptions = try Analysis.describe(federation, dataset: dataset, hashingLevelsOf: Analysis.groupingVariables(formula))
    return try MultipleImputation.fit(federation, dataset: dataset, formula: formula, descriptions: descriptions,
                                      options: options, settings: imputation, missingData: missingData)
}

/// The sites file, with the sites of --exclude-sites left out (not contacted)
/// and the network options applied.
func loadSites(_ path: String, _ a: ParsedArguments, exclusions: Bool = true) throws -> SitesFile {
    var file = try SitesFile.load(path: path)
    if let t = a.value(Opt.connectTimeout) { file.network.connectTimeout = t }
    if let t = a.value(Opt.roundTimeout) { file.network.roundTimeout = t }
    if let t = a.value(Opt.reconnectBudget) { file.network.reconnectBudget = t }
    guard exclusions, let names = a.value(Opt.excludeSites) else { return file }
    return try file.excluding(names, reason: "excluded by the analyst (--exclude-sites)")
}

/// Connects to the sites of a sites file (loadSites), with progress notices
/// on standard error unless --quiet.
func connectSites(_ path: String, _ a: ParsedArguments, exclusions: Bool = true) throws -> Federation {
    let federation = try loadSites(path, a, exclusions: exclusions).connect()
    federation.reporter = .standardError(quiet: a.flag(Opt.quiet))
    return federation
}

/// Writes text to --output FILE, or to standard output. Reports quote what
/// sites sent (levels, names, messages): control characters and escape
/// sequences are removed line by line (JSON escapes them itself).
func write(_ text: String, _ a: ParsedArguments) throws {
    let text = TerminalText.cleanLines(text)
    if let output = a.value(Opt.output) { try text.write(toFile: output, atomically: true, encoding: .utf8) } else { print(text, terminator: "") }
}

/// Writes a result in the --format asked for, to --output or standard output.
func emit(_ r: FitResult, _ a: ParsedArguments) throws {
    switch a.value(Opt.format, default: .text) {
    case .text: try write(Report.text(r), a)
    case .json: try write(try r.json() + "\n", a)
    }
}

/// --report FILE.html: the HTML page of the same result the text or JSON is written from.
func writeReport(_ r: FitResult, _ a: ParsedArguments, title: String) throws {
    guard let path = a.value(Opt.report) else { return }
    try HTMLReport.html(r, title: title).write(toFile: path, atomically: true, encoding: .utf8)
}

/// A problem with the command line, worded for it (exit status 2, as
/// CommandKit's own usage errors).
struct UsageError: Error, CustomStringConvertible, Equatable, UsageFailure {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
    var usageMessage: String { message }
}

/// The library names settings; on this command line they are flags.
extension SettingError: UsageFailure {
    public var usageMessage: String { worded(Self.flag) }

    static func flag(_ s: Setting) -> String {
        switch s {
        case .formula: return "--formula"
        case .family: return "--family"
        case .nAGQ: return "--nagq"
        case .filter: return "--filter"
        case .weights: return "--weights"
        case .missingIndicator: return "--missing-indicator"
        case .excludeSitesMissingAbove: return "--exclude-sites-missing-above"
        case .excludeSites: return "--exclude-sites"
        case .confint: return "--confint"
        case .cluster: return "--cluster"
        case .corstr: return "--corstr"
        case .order: return "--order"
        case .smallSample: return "--small-sample"
        case .marginal: return "--marginal"
        case .impute: return "--impute"
        case .imputations: return "--m"
        case .seed: return "--seed"
        case .iterations: return "--iterations"
        case .delta: return "--delta"
        }
    }
}

extension FileHandle {
    func write(_ s: String) { write(Data(s.utf8)) }
}

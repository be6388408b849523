// Multiple imputation across sites (`--impute`): each incomplete variable's
// imputation model is fitted federated with the ordinary fit path, on the
// rows where the variable is observed; M parameter draws are made here
// (ParameterDraw); each analysis prepare carries its dataset's draws, and
// every site completes its own rows (SiteAgent/Imputer.swift), so imputed
// values never leave a site. The analysis is fitted on each completed
// dataset and pooled by Rubin's rules (RubinRules). With several variables
// the draws come from chained equations: each of the M chains sweeps the
// variables `iterations` times, refitting each model on its observed rows
// with the other variables as completed so far in that chain. The M chains,
// and then the M analyses, run side by side with their rounds batched
// (Federation.lanes, RoundBatcher.swift): about one fit's rounds, not M
// times them, with results bit-identical to running them one after another.

import Foundation
import Math
import Protocol

/// What the analyst asked for with --impute, --m, --seed, --iterations, --delta.
public struct ImputationSettings: Sendable, Equatable {
    /// Imputation model formulas, one per incomplete variable (`lactate ~ age + iss + (1 | site)`,
    /// `log(lactate) ~ …`); a variable whose described values are 0 and 1 gets a logistic model.
    public var models: [String]
    public var m: Int
    public var seed: UInt64
    /// Chained-equation sweeps (several variables; one variable needs none).
    public var iterations: Int
    /// MNAR shifts by variable, added to imputed values on the model's scale.
    public var delta: [String: Double]
    /// Whether the M chains and analyses share rounds (RoundBatcher); false
    /// runs them one after another, as a check that batching changes nothing
    /// but the rounds.
    public var batched = true
    public init(models: [String], m: Int = 20, seed: UInt64 = 1, iterations: Int = 10, delta: [String: Double] = [:]) {
        self.models = models; self.m = m; self.seed = seed; self.iterations = iterations; self.delta = delta
    }
}

/// The `imputation` block of a pooled result.
public struct ImputationSummary: Codable, Sendable {
    public struct Model: Codable, Sendable {
        public var variable: String
        public var formula: String
        /// lmm, lm, glmm (binomial logit) or glm.
        public var kind: String
        public var transform: String
        public var delta: Double
        /// The first imputation model's fit (chained equations refit it per chain and sweep).
        public var nObs: Int
        public var fixedEffects: [String: Double]
        public var theta: [Double]
        public var sigma: Double
        enum CodingKeys: String, CodingKey {
            case variable, formula, kind, transform, delta, nObs = "n_obs", fixedEffects = "fixed_effects", theta, sigma
        }
    }
    public struct SiteCounts: Codable, Sendable {
        public var site: String
        public var imputed: [String: MissingCount]
        /// Mean of the observed values and mean over the M datasets of the
        /// imputed values' mean, where the site's rules let it send them.
        public var observedMean: [String: Double]? = nil
        public var imputedMean: [String: Double]? = nil
        enum CodingKeys: String, CodingKey { case site, imputed, observedMean = "observed_mean", imputedMean = "imputed_mean" }
    }
    public var m: Int
    public var seed: UInt64
    public var models: [Model]
    public var iterations: Int
    public var perSite: [SiteCounts]
    /// How the pooled numbers were made, in words.
    public var pooling: [String]
    /// Fits made: imputation models and analyses.
    public var imputationFits: Int
    public var analysisFits: Int
    /// Rounds on the wire for the whole run (imputation models, chains and
    /// analyses), and the most rounds one analysis needed by itself.
    public var rounds: Int
    public var roundsPerAnalysis: Int
    /// Whether the M chains and analyses shared rounds (batch lines), and
    /// the rounds on the wire the analyses took together.
    public var batched: Bool
    public var analysisRounds: Int
    enum CodingKeys: String, CodingKey {
        case m, seed, models, iterations, perSite = "per_site", pooling, imputationFits = "imputation_fits"
        case analysisFits = "analysis_fits", rounds, roundsPerAnalysis = "rounds_per_analysis"
        case batched, analysisRounds = "analysis_rounds"
    }
}

public enum MultipleImputation {
    /// One resolved imputation model.
    struct Model: Sendable {
        var variable: String
        var formula: String
        var transform: ImputationTransform
        var options: FitOptions
        var spec: ModelSpec
        var delta: Double
    }

    /// Checks what needs no site: the formulas parse, each response is a
    /// variable or its log, no variable is imputed twice, M and the sweeps are in range.
    public static func validate(_ s: ImputationSettings, analysisFormula: String) throws -> [String] {
        guard (2...1000).contains(s.m) else { throw SettingError("\(.imputations) must be between 2 and 1000 completed datasets") }
        guard (1...100).contains(s.iterations) else { throw SettingError("\(.iterations) must be between 1 and 100") }
        var variables: [String] = []
        for f in s.models {
            let (v, _) = try responseVariable(f)
            guard !variables.contains(v) else { throw SettingError("\(.impute): \(v) has two imputation models; give one per variable") }
            variables.append(v)
        }
        for v in s.delta.keys.sorted() where !variables.contains(v) {
            throw SettingError("\(.delta) \(v): no --impute model completes \(v)")
        }
        var warnings: [String] = []
        if let analysis = try? Formula.parse(analysisFormula) {
            var names: [(String, Int)] = []
            analysis.response.names(into: &names)
            for (outcome, _) in names {
                for f in s.models where !((try? Formula.parse(f))?.variablesUsed.contains(outcome) ?? true) {
                    warnings.append("the analysis outcome \(outcome) is not in the imputation model \(f): imputations ignore its relation to the outcome and bias that coefficient toward 0")
                }
            }
            for v in variables where !analysis.variablesUsed.contains(v) {
                warnings.append("the analysis does not use the imputed variable \(v)")
            }
        }
        return warnings
    }

    /// The variable a formula imputes and how its response transforms it.
    static func responseVariable(_ formula: String) throws -> (String, ImputationTransform) {
        let parsed: Formula
        do { parsed = try Formula.parse(formula) } catch { throw SettingError("\(.impute) \(formula): \(error)") }
        var names: [(String, Int)] = []
        parsed.response.names(into: &names)
        let text = parsed.response.description.replacingOccurrences(of: " ", with: "")
        guard names.count == 1 else {
            throw SettingError("\(.impute) \(formula): the left side must be the variable to impute, or log(variable)")
        }
        let v = names[0].0
        if text == v { return (v, .identity) }
        if text == "log(\(v))" { return (v, .log) }
        throw SettingError("\(.impute) \(formula): the left side must be the variable to impute, or log(variable)")
    }

    /// Whether every site describes the variable with the values 0 and 1 only.
    static func isBinary(_ v: String, _ descriptions: [SiteDescription]) -> Bool {
        descriptions.allSatisfy { d in
            guard let x = d.variables.first(where: { $0.name == v }), x.type == .numeric, let levels = x.levels else { return false }
            return levels.allSatisfy { $0.level == "0" || $0.level == "1" }
        }
    }

    /// The M chains of draws: what each completed dataset's prepare carries.
    struct Chains {
        var draws: [[ImputationDraw]]
        var models: [Model]
        /// Each variable's first imputation-model fit (for the summary).
        var first: [FitResult?]
        var imputationFits: Int
        var sweeps: Int
        var warnings: [String]
        var batched: Bool
    }

    /// What `each` ran: the analyses' results, the most rounds one took by
    /// itself, the rounds on the wire they took together, and sites that
    /// answered one request at a time (they do not take batch lines).
    struct Analyses<T> {
        var results: [T]
        var roundsPerAnalysis: Int
        var rounds: Int
        var unbatchedSites: [String]
        /// The note for the result's messages when some site took no batches.
        var notes: [String] {
            unbatchedSites.isEmpty ? [] : ["sites \(unbatchedSites.joined(separator: ", ")) do not take batched requests (an older agent): their requests were sent one at a time"]
        }
    }

    /// Runs `body(m)` for every completed dataset m, with a federation of its
    /// own: side by side, their rounds batched (`Federation.lanes`), or one
    /// after another. Returns the results in order (the error of the lowest
    /// failing m, if any), the most rounds one run took, the rounds on the
    /// wire in all, and the sites that took no batches.
    static func perDataset<T: Sendable>(_ federation: Federation, count: Int, batched: Bool,
                                        _ body: @escaping @Sendable (Int, Federation) throws -> T) throws -> Analyses<T> {
        let before = federation.rounds
        var results: [T] = []
        var most = 0
        var unbatched: [String] = []
        if batched {
            let lanes = federation.lanes(count, body)
            for r in lanes.results {
                let (value, rounds) = try r.get()
                results.append(value); most = max(most, rounds)
            }
            unbatched = lanes.unbatchedSites
        } else {
            for m in 0..<count {
                let start = federation.rounds
                results.append(try body(m, federation))
                most = max(most, federation.rounds - start)
            }
        }
        return Analyses(results: results, roundsPerAnalysis: most, rounds: federation.rounds - before, unbatchedSites: unbatched)
    }

    /// Fits the imputation models and draws their parameters: one fit per
    /// variable when one variable is imputed (every chain draws from it);
    /// with several, one refit per chain, variable and sweep after the first.
    static func chains(_ federation: Federation, dataset: String, analysisFormula formula: String,
                       descriptions: [SiteDescription], options: FitOptions, settings: ImputationSettings) throws -> Chains {
        let warnings = try validate(settings, analysisFormula: formula)
        var models: [Model] = []
        for f in settings.models {
            let (v, transform) = try responseVariable(f)
            var o = FitOptions(method: .reml, family: isBinary(v, descriptions) ? .binomial : .gaussian)
            o.maxEvaluations = options.maxEvaluations
            if o.family == .binomial && transform == .log { throw SettingError("\(.impute) \(f): \(v) is binary (0/1); impute it on its own scale") }
            let spec = try Analysis.model(federation, dataset: dataset, formula: f, descriptions: descriptions, options: o)
            guard spec.terms.allSatisfy({ $0.grouping == .site }) else {
                throw SettingError("\(.impute) \(f): random-effects terms of an imputation model must be grouped by site, e.g. (1 | site); for site-stratified imputation add site as a fixed effect")
            }
            models.append(Model(variable: v, formula: f, transform: transform, options: o, spec: spec, delta: settings.delta[v] ?? 0))
        }
        // The first variable's first fit, on its observed rows, serves every chain.
        let sweeps = models.count > 1 ? settings.iterations : 1
        let shared = try FitDriver.fit(federation, dataset: dataset, spec: models[0].spec, options: models[0].options)
        // Each chain then sweeps on its own: a refit per variable and sweep
        // after the first, on the rows completed so far in that chain (its
        // draws; a variable's later draw supersedes its earlier one at the
        // site). The M chains run side by side, their rounds batched.
        let steps = (0..<sweeps).flatMap { sweep in models.indices.map { (sweep, $0) } }
        let fixedModels = models
        let chainRuns = try perDataset(federation, count: settings.m, batched: settings.batched) { m, lane -> (draws: [ImputationDraw], firstFits: [FitResult]) in
            var draws: [ImputationDraw] = []
            var firstFits: [FitResult] = []
            for (sweep, k) in steps {
                let model = fixedModels[k]
                let fit: FitResult
                if draws.isEmpty { fit = shared } else {
                    var o = model.options
                    o.imputations = draws; o.observedOnly = [model.variable]
                    fit = try FitDriver.fit(lane, dataset: dataset, spec: model.spec, options: o)
                }
                if sweep == 0 { firstFits.append(fit) }
                var stream = ImputationStream.parameters(seed: settings.seed, m: m + 1, variable: model.variable, iteration: sweep)
                let d = try ParameterDraw.draw(fit, spec: model.spec, stream: &stream)
                draws.append(ImputationDraw(variable: model.variable, model: model.spec, transform: model.transform,
                                            theta: d.theta, beta: d.beta, sigma: d.sigma, delta: model.delta,
                                            seed: settings.seed, m: m + 1))
            }
            return (draws, firstFits)
        }
        return Chains(draws: chainRuns.results.map { $0.draws }, models: models, first: chainRuns.results[0].firstFits.map { $0 },
                      imputationFits: 1 + settings.m * (steps.count - 1), sweeps: sweeps, warnings: warnings, batched: settings.batched)
    }

    /// Runs `analysis` once per completed dataset with `options` carrying
    /// that dataset's draws and the federation to use (a lane whose rounds
    /// are batched with the other datasets', unless batching is off).
    static func each<T: Sendable>(_ federation: Federation, chains: Chains, options: FitOptions,
                                  _ analysis: @escaping @Sendable (Federation, FitOptions) throws -> T) throws -> Analyses<T> {
        let draws = chains.draws
        return try perDataset(federation, count: draws.count, batched: chains.batched) { m, lane in
            var o = options
            o.imputations = draws[m]
            return try analysis(lane, o)
        }
    }

    /// The `imputation` block of a pooled result.
    static func summary<T>(_ c: Chains, settings: ImputationSettings, sites: [[FitResult.SiteResult]], analysisFits: Int,
                           rounds: Int, analyses: Analyses<T>) -> ImputationSummary {
        ImputationSummary(
            m: settings.m, seed: settings.seed,
            models: zip(c.models, c.first).map { model, fit in
                ImputationSummary.Model(variable: model.variable, formula: model.formula,
                                        kind: (model.spec.family == .gaussian ? "l" : "gl") + (model.spec.isFlat ? "m" : "mm"),
                                        transform: model.transform.rawValue, delta: model.delta, nObs: fit?.nObs ?? 0,
                                        fixedEffects: Dictionary(uniqueKeysWithValues: (fit?.fixedEffects ?? []).map { ($0.name, $0.estimate) }),
                                        theta: fit?.theta ?? [], sigma: fit?.sigma ?? 1)
            },
            iterations: c.sweeps,
            perSite: sites[0].map { site in
                var out = ImputationSummary.SiteCounts(site: site.site, imputed: site.imputed ?? [:])
                // Means only where every dataset's answer carried them.
                let means = sites.map { $0.first { $0.site == site.site }?.imputedMeans }
                if let first = means.first ?? nil, means.allSatisfy({ $0 != nil }) {
                    let variables = first.keys.filter { v in means.allSatisfy { $0?[v] != nil } }
                    if !variables.isEmpty {
                        out.observedMean = Dictionary(uniqueKeysWithValues: variables.map { ($0, first[$0]!.observed) })
                        out.imputedMean = Dictionary(uniqueKeysWithValues: variables.map { v in
                            (v, means.reduce(0) { $0 + $1![v]!.imputed } / Double(means.count)) })
                    }
                }
                return out
            },
            pooling: ["fixed effects: Rubin's rules; df Barnard-Rubin with complete-data df = rows used \u{2212} fixed effects",
                      "variance components and sigma: mean of log SD over datasets, back-transformed; correlations: mean of atanh"],
            imputationFits: c.imputationFits, analysisFits: analysisFits, rounds: rounds, roundsPerAnalysis: analyses.roundsPerAnalysis,
            batched: c.batched, analysisRounds: analyses.rounds)
    }

    /// The pooled fit of `formula` over M completed datasets.
    public static func fit(_ federation: Federation, dataset: String, formula: String, descriptions: [SiteDescription],
                           options: FitOptions, settings: ImputationSettings,
                           missingData: MissingDataStrategy = MissingDataStrategy()) throws -> FitResult {
        let started = Date()
        let roundsBefore = federation.rounds
        let c = try chains(federation, dataset: dataset, analysisFormula: formula, descriptions: descriptions,
                           options: options, settings: settings)
        let run = try each(federation, chains: c, options: options) { lane, o in
            try Analysis.fit(lane, dataset: dataset, formula: formula, descriptions: descriptions, options: o, missingData: missingData)
        }
        let analyses = run.results
        var result = pooled(analyses)
        result.messages = c.warnings.map { "warning: " + $0 } + result.messages + run.notes
        let shifts = settings.delta.sorted { $0.key < $1.key }.map { "\($0.key) shifted by \(RNumberFormat.format($0.value))" }
        result.messages.append("multiple imputation: M = \(settings.m), seed \(settings.seed)\(shifts.isEmpty ? "" : ", " + shifts.joined(separator: ", ")); pooled by Rubin's rules")
        result.imputation = summary(c, settings: settings, sites: analyses.map(\.sites), analysisFits: settings.m,
                                    rounds: federation.rounds - roundsBefore, analyses: run)
        result.rounds = federation.rounds - roundsBefore
        // Bytes of the whole run (each analysis saw the shared channels' totals at its own end).
        let (sent, received) = (federation.bytesSent, federation.bytesReceived)
        result.bytesSent = sent.reduce(0, +); result.bytesReceived = received.reduce(0, +)
        for (i, site) in result.sites.enumerated() {
            if let k = federation.sites.firstIndex(of: site.site) { result.sites[i].bytesSent = sent[k]; result.sites[i].bytesReceived = received[k] }
        }
        result.elapsedSeconds = Date().timeIntervalSince(started)
        return result
    }

    /// Several pooled fits (a sensitivity analysis's δ grid), side by side
    /// with their rounds batched unless the first settings turn batching
    /// off; the error of the first failing one, if any.
    public static func fits(_ federation: Federation, dataset: String, formula: String, descriptions: [SiteDescription],
                            options: FitOptions, settings: [ImputationSettings]) throws -> [FitResult] {
        guard let first = settings.first else { return [] }
        return try perDataset(federation, count: settings.count, batched: first.batched) { k, lane in
            try fit(lane, dataset: dataset, formula: formula, descriptions: descriptions, options: options, settings: settings[k])
        }.results
    }

    /// The first analysis with its estimates replaced by the pooled ones.
    static func pooled(_ analyses: [FitResult]) -> FitResult {
        var out = analyses[0]
        let p = out.fixedEffects.count
        let dfCom = Double(out.nObs - p)
        let isT = out.fixedEffects.first?.df != nil || out.model.family == "gaussian"
        for j in 0..<p {
            let r = RubinRules.pool(estimates: analyses.map { $0.fixedEffects[j].estimate },
                                    variances: analyses.map { $0.fixedEffects[j].stdError * $0.fixedEffects[j].stdError },
                                    completeDataDF: dfCom)
            let ci = r.interval
            var f = out.fixedEffects[j]
            f.estimate = r.estimate; f.stdError = r.stdError; f.statistic = r.estimate / r.stdError
            f.df = r.df; f.riv = r.riv; f.fmi = r.fmi; f.ciLower = ci.lower; f.ciUpper = ci.upper
            f.pValue = r.df.isFinite ? StudentT.twoSidedPValue(f.statistic, degreesOfFreedom: r.df) : StandardNormal.twoSidedPValue(f.statistic)
            f.kenwardRoger = nil
            out.fixedEffects[j] = f
        }
        _ = isT
        // Total covariance: mean within + (1 + 1/M) between.
        let mCount = Double(analyses.count)
        let means = (0..<p).map { j in analyses.reduce(0) { $0 + $1.fixedEffects[j].estimate } / mCount }
        out.vcov = (0..<p).map { i in (0..<p).map { j in
            let within = analyses.reduce(0) { $0 + $1.vcov[i][j] } / mCount
            let between = mCount > 1 ? analyses.reduce(0) { $0 + ($1.fixedEffects[i].estimate - means[i]) * ($1.fixedEffects[j].estimate - means[j]) } / (mCount - 1) : 0
            return within + (1 + 1 / mCount) * between
        } }
        for k in out.varianceComponents.indices {
            let isCorrelation = out.varianceComponents[k].var2 != nil
            let values = analyses.map { $0.varianceComponents[k].sdcor }
            let pooledValue = isCorrelation
                ? Foundation.tanh(values.reduce(0) { $0 + Foundation.atanh(max(-0.999999, min(0.999999, $1))) } / mCount)
                : Foundation.exp(values.reduce(0) { $0 + Foundation.log(max($1, 1e-300)) } / mCount)
            out.varianceComponents[k].sdcor = pooledValue
            if !isCorrelation { out.varianceComponents[k].vcov = pooledValue * pooledValue }
        }
        out.sigma = Foundation.exp(analyses.reduce(0) { $0 + Foundation.log($1.sigma) } / mCount)
        out.theta = (0..<out.theta.count).map { i in analyses.reduce(0) { $0 + $1.theta[i] } / mCount }
        out.evaluations = analyses.reduce(0) { $0 + $1.evaluations }
        out.optimum = nil
        out.trace = nil
        return out
    }
}

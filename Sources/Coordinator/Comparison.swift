// `fedmix compare`: nested models fitted on the same rows and lme4's anova()
// table (npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)), with the
// boundary-corrected p-value where one random effect is added, and — when a
// model without random terms takes part — the flat and mixed estimates side
// by side with the design effect.

import Foundation
import Math
import Protocol

/// The result of a comparison, in the JSON form scripts read.
public struct Comparison: Codable, Sendable {
    /// One row of lme4's anova table; the first row (fewest parameters) has no test.
    public struct Row: Codable, Sendable, Equatable {
        public var model: String
        public var formula: String
        public var npar: Int
        public var aic: Double
        public var bic: Double
        public var loglik: Double
        public var deviance: Double
        public var chisq: Double?
        public var df: Int?
        public var pValue: Double?
        /// The 50:50 mixture p-value when the row's model adds one random
        /// effect to the previous row's (null otherwise).
        public var pValueMixture: Double?
        /// "chi2_q:chi2_(q+1)" naming the mixture, or null.
        public var mixture: String?
        /// Multiple imputation: the D2 statistic (an F on df and `pooled_df2`;
        /// `chisq` is then D2 × df) and its denominator df. Absent otherwise.
        public var pooledF: Double? = nil
        public var pooledDF2: Double? = nil
        enum CodingKeys: String, CodingKey {
            case model, formula, npar, aic, bic, loglik, deviance, chisq, df, pValue = "p_value", pValueMixture = "p_value_mixture", mixture
            case pooledF = "pooled_f", pooledDF2 = "pooled_df2"
        }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(model, forKey: .model); try c.encode(formula, forKey: .formula); try c.encode(npar, forKey: .npar)
            try c.encode(aic, forKey: .aic); try c.encode(bic, forKey: .bic); try c.encode(loglik, forKey: .loglik)
            try c.encode(deviance, forKey: .deviance)
            try c.encode(chisq, forKey: .chisq); try c.encode(df, forKey: .df)   // explicit nulls, as R's NA
            try c.encode(pValue, forKey: .pValue); try c.encode(pValueMixture, forKey: .pValueMixture)
            try c.encode(mixture, forKey: .mixture)
            try c.encodeIfPresent(pooledF, forKey: .pooledF); try c.encodeIfPresent(pooledDF2, forKey: .pooledDF2)
        }
    }

    /// One fixed effect under the flat model and under the mixed model.
    public struct FlatVsMixed: Codable, Sendable, Equatable {
        public var term: String
        public var flatModel: String
        public var mixedModel: String
        public var flatEstimate: Double
        public var flatStdError: Double
        /// The flat model's cluster-robust SE (sandwich, by site), when the flat fit reports it.
        public var robustStdError: Double?
        public var mixedEstimate: Double
        public var mixedStdError: Double
        /// Mixed SE over flat SE: how much ignoring the clustering understates the SE.
        public var seRatio: Double
        enum CodingKeys: String, CodingKey {
            case term, flatModel = "flat_model", mixedModel = "mixed_model", flatEstimate = "flat_estimate", flatStdError = "flat_std_error"
            case robustStdError = "robust_std_error", mixedEstimate = "mixed_estimate", mixedStdError = "mixed_std_error", seRatio = "se_ratio"
        }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(term, forKey: .term); try c.encode(flatModel, forKey: .flatModel); try c.encode(mixedModel, forKey: .mixedModel)
            try c.encode(flatEstimate, forKey: .flatEstimate); try c.encode(flatStdError, forKey: .flatStdError)
            try c.encode(robustStdError, forKey: .robustStdError)
            try c.encode(mixedEstimate, forKey: .mixedEstimate); try c.encode(mixedStdError, forKey: .mixedStdError)
            try c.encode(seRatio, forKey: .seRatio)
        }
    }

    /// Names each model by its place among the --formula options (m0, m1, …).
    public var names: [String]
    /// The fits, in the order the formulas were given.
    public var models: [FitResult]
    /// lme4's anova table: rows ordered by npar.
    public var anova: [Row]
    public var flatVsMixed: [FlatVsMixed] = []
    public var designEffect: DesignEffect?
    /// Whether REML fits were refitted by ML for the table (lme4's message).
    public var refittedML: Bool
    /// Notes on the test: the boundary, the refit.
    public var notes: [String]
    public var dataset: String
    public var nObs: Int
    public var nSites: Int
    /// Rounds and bytes of the whole comparison (describe and every fit).
    public var rounds: Int
    public var bytesSent: Int
    public var bytesReceived: Int

    /// `--impute`: how the pooled comparison was made (absent otherwise).
    public var imputation: ImputationSummary? = nil

    enum CodingKeys: String, CodingKey {
        case names, models, anova, flatVsMixed = "flat_vs_mixed", designEffect = "design_effect", refittedML = "refitted_ml", notes
        case dataset, nObs = "n_obs", nSites = "n_sites", rounds, bytesSent = "bytes_sent", bytesReceived = "bytes_received"
        case imputation
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(names, forKey: .names); try c.encode(models, forKey: .models); try c.encode(anova, forKey: .anova)
        try c.encode(flatVsMixed, forKey: .flatVsMixed)
        try c.encode(designEffect, forKey: .designEffect)   // explicit null without a flat model
        try c.encode(refittedML, forKey: .refittedML); try c.encode(notes, forKey: .notes)
        try c.encode(dataset, forKey: .dataset); try c.encode(nObs, forKey: .nObs); try c.encode(nSites, forKey: .nSites)
        try c.encode(rounds, forKey: .rounds); try c.encode(bytesSent, forKey: .bytesSent); try c.encode(bytesReceived, forKey: .bytesReceived)
        try c.encodeIfPresent(imputation, forKey: .imputation)
    }

    /// The JSON form (pretty-printed, keys sorted).
    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(self), as: UTF8.self)
    }
}

/// Why models cannot be compared.
public struct ComparisonError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum ModelComparison {
    /// lme4's count of a model's parameters: fixed effects, covariance
    /// parameters θ, and σ for a linear model.
    public static func npar(_ spec: ModelSpec) -> Int {
        spec.fixedCount + spec.thetaCount + (spec.family == .gaussian ? 1 : 0)
    }

    /// The specifications made to use the same rows: each model also
    /// requires every variable any of the models requires (the complete
    /// cases of all of them, which are those of the largest model when the
    /// models are nested).
    public static func sameRows(_ specs: [ModelSpec]) -> [ModelSpec] {
        var all: [String] = []
        for s in specs { for v in s.requiredVariables where !all.contains(v) { all.append(v) } }
        return specs.map { s in
            var s = s
            let own = s.requiredVariables
            s.alsoRequired += all.filter { !own.contains($0) }
            return s
        }
    }

    /// The models' indices ordered by npar as lme4's anova orders them
    /// (ties keep the given order).
    public static func order(_ specs: [ModelSpec]) -> [Int] {
        specs.indices.sorted { (npar(specs[$0]), $0) < (npar(specs[$1]), $1) }
    }

    /// Refuses models that are not plausibly nested: a different response,
    /// family, link or weights; a smaller model's fixed effect or random
    /// term that the next larger model lacks; two models with the same
    /// number of parameters.
    public static func checkNested(_ specs: [ModelSpec], names: [String]) throws {
        guard specs.count >= 2 else { throw ComparisonError("give at least two models to compare") }
        let first = specs[0]
        for (k, s) in specs.enumerated().dropFirst() {
            if s.response != first.response {
                throw ComparisonError("\(names[k]) has a different response from \(names[0]); nested models share the response")
            }
            if s.family != first.family || s.link != first.link {
                throw ComparisonError("\(names[k]) is a \(s.family.rawValue) (\(s.link.rawValue)) model and \(names[0]) a \(first.family.rawValue) (\(first.link.rawValue)) one; nested models share family and link")
            }
            if s.weights != first.weights {
                throw ComparisonError("\(names[k]) and \(names[0]) have different prior weights; nested models share them")
            }
        }
        let ordered = order(specs)
        for (i, j) in zip(ordered, ordered.dropFirst()) {
            let small = specs[i], large = specs[j]
            if npar(small) == npar(large) {
                throw ComparisonError("\(names[i]) and \(names[j]) both have \(npar(small)) parameters: neither is nested in the other")
            }
            let extra = small.fixed.map(\.name).filter { n in !large.fixed.contains { $0.name == n } }
            if !extra.isEmpty {
                throw ComparisonError("\(names[i]) is not nested in \(names[j]): its fixed effect\(extra.count == 1 ? "" : "s") \(extra.joined(separator: ", ")) \(extra.count == 1 ? "is" : "are") not in \(names[j])")
            }
            for t in small.terms {
                let columns = Set(t.columns.map(\.name))
                let covered = large.terms.contains { $0.grouping == t.grouping && columns.isSubset(of: Set($0.columns.map(\.name))) }
                if !covered {
                    throw ComparisonError("\(names[i]) is not nested in \(names[j]): its random term (\(t.columns.map(\.name).joined(separator: " + ")) | \(t.name)) has no counterpart in \(names[j])")
                }
            }
        }
    }

    /// How the larger model extends the smaller one's random part, when by
    /// exactly one random effect with the same fixed effects: the number of
    /// random effects already on that grouping (0 for a new scalar term, or
    /// a flat model against a random intercept). Nil otherwise: then no 50:50
    /// mixture applies.
    public static func addedRandomEffect(small: ModelSpec, large: ModelSpec) -> Int? {
        guard Set(small.fixed.map(\.name)) == Set(large.fixed.map(\.name)) else { return nil }
        func key(_ t: RandomTerm) -> (Grouping, Set<String>) { (t.grouping, Set(t.columns.map(\.name))) }
        var smallRest = small.terms, largeRest = large.terms
        smallRest.removeAll { s in
            guard let k = largeRest.firstIndex(where: { key($0) == key(s) }) else { return false }
            largeRest.remove(at: k); return true
        }
        let present: Int
        switch (smallRest.count, largeRest.count) {
        case (0, 1) where largeRest[0].columns.count == 1:
            present = 0
        case (1, 1):
            let s = key(smallRest[0]), l = key(largeRest[0])
            guard s.0 == l.0, s.1.isSubset(of: l.1), l.1.count == s.1.count + 1 else { return nil }
            present = s.1.count
        default:
            return nil
        }
        return npar(large) - npar(small) == present + 1 ? present : nil
    }

    /// lme4's anova table from the fits (in `names` order), rows ordered by
    /// npar: AIC = −2 logLik + 2 npar, BIC = −2 logLik + npar log n,
    /// Chisq = 2 max(0, ΔlogLik), Df = Δnpar, Pr(>Chisq) its upper tail; and
    /// the 50:50 mixture where one random effect is added.
    public static func table(specs: [ModelSpec], results: [FitResult], names: [String]) -> [Comparison.Row] {
        var rows: [Comparison.Row] = []
        var previous: Int? = nil
        for i in order(specs) {
            let r = results[i], k = npar(specs[i]), n = Double(r.nObs)
            var row = Comparison.Row(model: names[i], formula: specs[i].formula, npar: k,
                                     aic: -2 * r.loglik + 2 * Double(k), bic: -2 * r.loglik + Double(k) * log(n),
                                     loglik: r.loglik, deviance: -2 * r.loglik)
            if let p = previous {
                let chisq = 2 * max(0, r.loglik - results[p].loglik)
                let df = k - npar(specs[p])
                row.chisq = chisq; row.df = df
                row.pValue = ChiSquare.upperTail(chisq, df: Double(df))
                if let present = addedRandomEffect(small: specs[p], large: specs[i]) {
                    row.pValueMixture = ChiSquare.mixtureUpperTail(chisq, present: present)
                    row.mixture = "chi2_\(present):chi2_\(present + 1)"
                }
            }
            rows.append(row)
            previous = i
        }
        return rows
    }

    /// Notes on the boundary: for each row whose model adds random effects.
    static func boundaryNotes(specs: [ModelSpec], rows: [Comparison.Row], names: [String]) -> [String] {
        var notes: [String] = []
        for (a, b) in zip(rows, rows.dropFirst()) {
            guard let i = names.firstIndex(of: a.model), let j = names.firstIndex(of: b.model) else { continue }
            guard specs[j].thetaCount > specs[i].thetaCount else { continue }
            var note = "\(b.model) vs \(a.model): the variance of the added random effect is 0 under the null, on the boundary of the parameter space, so Pr(>Chisq) from chi2_\(b.df ?? 0) is conservative"
            if let p = b.pValueMixture, let m = b.mixture {
                let parts = m.split(separator: ":").map { String($0).replacingOccurrences(of: "chi2_", with: "") }
                note += "; the 50:50 mixture of chi-squares with \(parts[0]) and \(parts[1]) df (Self & Liang 1987, Stram & Lee 1994) gives p = \(RFormat.pValue(p))"
            } else {
                note += "; it adds more than one random effect, and no 50:50 mixture applies"
            }
            notes.append(note)
        }
        return notes
    }

    /// The flat model's fixed effects next to the mixed model's.
    public static func flatVsMixed(flat: FitResult, flatName: String, mixed: FitResult, mixedName: String) -> [Comparison.FlatVsMixed] {
        flat.fixedEffects.enumerated().compactMap { k, f in
            guard let m = mixed.fixedEffects.first(where: { $0.name == f.name }) else { return nil }
            let robust = flat.robust.flatMap { k < $0.stdErrors.count ? $0.stdErrors[k] : nil }
            return Comparison.FlatVsMixed(term: f.name, flatModel: flatName, mixedModel: mixedName, flatEstimate: f.estimate,
                                          flatStdError: f.stdError, robustStdError: robust, mixedEstimate: m.estimate,
                                          mixedStdError: m.stdError, seRatio: m.stdError / f.stdError)
        }
    }

    /// Fits the models over one federation on the same rows and compares
    /// them. Linear mixed models are fitted by ML for the table (lme4 refits
    /// REML fits; `refittedML` says so when `options.method` was REML).
    public static func compare(_ federation: Federation, dataset: String, formulas: [String],
                               options: FitOptions) throws -> Comparison {
        guard formulas.count >= 2 else { throw ComparisonError("give at least two models to compare (--formula F0 --formula F1)") }
        let started = Date()
        let roundsBefore = federation.rounds
        let sentBefore = federation.bytesSent.reduce(0, +), receivedBefore = federation.bytesReceived.reduce(0, +)
        let names = formulas.indices.map { "m\($0)" }
        var grouping: [String] = []
        for f in formulas { for v in Analysis.groupingVariables(f) where !grouping.contains(v) { grouping.append(v) } }
        let descriptions = try Analysis.describe(federation, dataset: dataset, hashingLevelsOf: grouping)
        var fitOptions = options
        let refit = options.family == .gaussian && options.method == .reml
        fitOptions.method = .ml
        if fitOptions.progress == nil, let reporter = federation.reporter, reporter.enabled {
            fitOptions.progress = Analysis.progressReport(federation, reporter: reporter, started: started)
        }
        let resolved = try formulas.map { try Analysis.model(formula: $0, descriptions: descriptions, options: fitOptions) }
        try checkNested(resolved, names: names)
        // scale() and poly() take their pooled moments over the rows every
        // model is fitted on (the same rows for all, as in R's anova).
        let specs = try zip(formulas, sameRows(resolved)).map { formula, spec in
            try Analysis.withPooledMoments(spec, formula: formula, federation: federation, dataset: dataset,
                                           descriptions: descriptions, options: fitOptions)
        }
        var results: [FitResult] = []
        // A flat model gets cluster-robust SEs clustered as the smallest
        // mixed model groups its rows (the standard approach beside it).
        let flatCluster = order(specs).lazy.map { specs[$0] }.first { !$0.terms.isEmpty }?.terms.first?.grouping
        var robustNotes: [String] = []
        for var spec in specs {
            if spec.terms.isEmpty, let flatCluster { spec.cluster = flatCluster }
            try Analysis.requireNesting(spec, descriptions: descriptions, federation: federation, dataset: dataset)
            let fitStarted = Date()
            var r: FitResult
            do {
                r = try FitDriver.fit(federation, dataset: dataset, spec: spec, options: fitOptions)
            } catch let refusal where spec.cluster != nil && (refusal is SiteFailure || refusal is SiteFailures) {
                // A site may refuse the clusters (fewer than its min_cell rows
                // in one): the flat fit is still compared, without robust SEs.
                spec.cluster = nil
                robustNotes.append("no cluster-robust SEs for the flat model: \(refusal)")
                r = try FitDriver.fit(federation, dataset: dataset, spec: spec, options: fitOptions)
            }
            r.elapsedSeconds = Date().timeIntervalSince(fitStarted)
            r.exclusions = federation.exclusions
            r.excludedSites = r.exclusions.map(\.site)
            for e in federation.exclusions { r.messages.append("site \(e.site) left out: \(e.reason)") }
            if let f = spec.filter {
                r.messages.append("rows at each site filtered by: \(Explain.expression(f))")
                r.filter = .init(text: Explain.expression(f), expression: f, variables: f.variables)
            }
            if !spec.alsoRequired.isEmpty {
                r.messages.append("fitted on the rows where \(spec.alsoRequired.joined(separator: ", ")) \(spec.alsoRequired.count == 1 ? "is" : "are") also present (the rows of the compared models)")
            }
            results.append(r)
        }
        let counts = results.map(\.nObs)
        if Set(counts).count > 1 {
            throw ComparisonError("the models were fitted on different numbers of rows (\(zip(names, counts).map { "\($0): \($1)" }.joined(separator: ", "))); lme4's anova compares models fitted on the same rows")
        }
        let rows = table(specs: specs, results: results, names: names)
        var notes: [String] = []
        let anyMixed = specs.contains { !$0.terms.isEmpty }
        if refit && anyMixed { notes.append("refitting model(s) with ML (instead of REML)") }
        notes += boundaryNotes(specs: specs, rows: rows, names: names)
        notes += robustNotes
        var comparison = Comparison(names: names, models: results, anova: rows, refittedML: refit && anyMixed, notes: notes,
                                    dataset: dataset, nObs: counts[0], nSites: results[0].nSites, rounds: federation.rounds - roundsBefore,
                                    bytesSent: federation.bytesSent.reduce(0, +) - sentBefore,
                                    bytesReceived: federation.bytesReceived.reduce(0, +) - receivedBefore)
        // A flat model: its estimates beside the smallest mixed model's, and the design effect.
        let ordered = order(specs)
        if let f = ordered.first(where: { specs[$0].terms.isEmpty }),
           let m = ordered.first(where: { !specs[$0].terms.isEmpty }) {
            comparison.flatVsMixed = flatVsMixed(flat: results[f], flatName: names[f], mixed: results[m], mixedName: names[m])
            comparison.designEffect = DesignEffect(mixed: results[m], spec: specs[m], name: names[m])
        }
        return comparison
    }
}

// The analyst's operations on a federation: describe the sites' data and
// fit a model written in lme4's formula language.

import Foundation
import Math
import Protocol

public enum Analysis {
    /// One describe round: every site's variables, types, levels and
    /// missingness. With `hashingLevelsOf`, the sites also send keyed hashes
    /// of those variables' codes under a salt drawn for this round (at most
    /// 20 variables), so that `VariableCatalog.requireNesting` can check
    /// grouping factors with any number of levels.
    public static func describe(_ federation: Federation, dataset: String,
                                hashingLevelsOf variables: [String] = [], numericSummaries: Bool = false) throws -> [SiteDescription] {
        let hashes = variables.isEmpty ? nil
            : LevelHashRequest(salt: LevelHasher.randomSalt(), variables: Array(variables.prefix(20)))
        return try federation.round({ _ in .describe(DescribeRequest(dataset: dataset, levelHashes: hashes, numericSummaries: numericSummaries)) }) { reply, site in
            guard case .described(let d) = reply else { throw unexpected(reply, site, expected: "described") }
            return try ReplyChecks.check(d, asked: hashes, summariesAsked: numericSummaries, site: site)
        }
    }

    /// The grouping variables of a formula whose nesting in the sites must
    /// be checked: the components of every grouping factor that does not
    /// name `site` (`site:ward` and `site/ward` are nested by construction,
    /// so their codes are not hashed). None when the formula does not parse
    /// (resolving it then reports why).
    public static func groupingVariables(_ formula: String) -> [String] {
        guard let parsed = try? Formula.parse(formula) else { return [] }
        var out: [String] = []
        for t in parsed.random where !t.grouping.contains("site") {
            for v in t.grouping where !out.contains(v) { out.append(v) }
        }
        return out
    }

    /// Parses and resolves `formula` against the sites' descriptions, and
    /// refuses what the descriptions already show to be unfit: a grouping
    /// factor that crosses sites, a factor with one level. Grouping factors
    /// whose nesting the descriptions cannot show (levels not listed, no
    /// level hashes) pass here; `fit` checks them completely.
    public static func resolve(formula: String, descriptions: [SiteDescription],
                               family: Family = .gaussian, link: Link? = nil,
                               moments: [String: PooledMoments] = [:]) throws -> ModelSpec {
        let parsed = try Formula.parse(formula)
        let catalog = VariableCatalog(descriptions)
        try requireVariablesEverywhere(parsed.variablesUsed, descriptions: descriptions)
        try catalog.requireVariables(parsed.variablesUsed)
        let written = try Formula.resolve(parsed, variables: try catalog.variables(Set(parsed.variablesUsed)), family: family,
                                          link: link ?? defaultLink(family), moments: moments)
        let spec = try catalog.resolveCrossed(written)
        try catalog.requireNesting(spec)
        try GroupingChecks.checkDescribed(spec, descriptions: descriptions)
        return spec
    }

    /// Every site that lacks a variable of the model, with each variable it
    /// lacks, in one error (a variable no site has is left to
    /// `VariableCatalog.requireVariables`, which lists what the sites have).
    static func requireVariablesEverywhere(_ names: [String], descriptions: [SiteDescription]) throws {
        let somewhere = Set(descriptions.flatMap { $0.variables.map(\.name) })
        let wanted = names.filter { $0 != "site" && somewhere.contains($0) }
        let gaps = descriptions.compactMap { d -> (String, [String])? in
            let lacking = wanted.filter { v in !d.variables.contains { $0.name == v } }
            return lacking.isEmpty ? nil : (d.site, lacking)
        }
        // One variable missing: VariableCatalog's message already names every site lacking it.
        guard Set(gaps.flatMap(\.1)).count > 1 else { return }
        var message = "model variables are missing at \(gaps.count) site\(gaps.count == 1 ? "" : "s"):"
        for (site, vars) in gaps { message += "\n  site \"\(site)\": \(vars.joined(separator: ", "))" }
        message += "\nevery site must provide the model's variables (or be left out of the fit: --exclude-sites \(gaps.map(\.0).joined(separator: ",")))"
        throw CatalogError(message: message)
    }

    /// Refuses a grouping factor that crosses sites, whatever its number of
    /// levels: with the level hashes in `descriptions`, or else with those of
    /// one more describe round that asks for them.
    static func requireNesting(_ spec: ModelSpec, descriptions: [SiteDescription], federation: Federation,
                               dataset: String) throws {
        let variables = VariableCatalog.nestingVariables(spec)
        guard !variables.isEmpty else { return }
        var catalog = VariableCatalog(descriptions)
        if !catalog.hasLevelHashes && variables.contains(where: { if case .unknown = catalog.sharing($0) { return true }; return false }) {
            catalog = VariableCatalog(try describe(federation, dataset: dataset, hashingLevelsOf: variables))
        }
        try catalog.requireNesting(spec, complete: true)
    }

    /// Checks everything about a fit that needs no site: the formula's
    /// syntax, quadrature against the random-effects terms, the row filter's
    /// syntax, and the missing-data options against the formula. Called
    /// before any connection is opened, so that a typo is reported as what it
    /// is (a usage error naming the option) and never as a network failure,
    /// and no agent logs a session for a fit that could not have run.
    public static func validate(formula: String, options: FitOptions,
                                missingData: MissingDataStrategy = MissingDataStrategy()) throws {
        let parsed: Formula
        do { parsed = try Formula.parse(formula) } catch let e as FormulaError {
            throw SettingError("\(.formula): \(e)")
        }
        guard ProtocolLimits.quadraturePoints.contains(options.nAGQ) else {
            throw SettingError("\(.nAGQ) must be between \(ProtocolLimits.quadraturePoints.lowerBound) and \(ProtocolLimits.quadraturePoints.upperBound)")
        }
        if options.nAGQ > 1 {
            guard options.family != .gaussian else {
                throw SettingError("\(.nAGQ) applies to GLMMs (\(.family) binomial or poisson)")
            }
            // Adaptive quadrature needs one scalar term; a factor on the left
            // side may still widen it, which the fit itself refuses.
            let scalar = parsed.random.count == 1
                && (parsed.random[0].lhs.intercept ? 1 : 0) + parsed.random[0].lhs.terms.count == 1
            guard scalar else {
                throw SettingError("\(.nAGQ) \(options.nAGQ) needs a single scalar random-effects term such as (1 | site); the formula has \(parsed.random.count == 1 ? "a term with several columns" : "\(parsed.random.count) random-effects terms"). Use \(.nAGQ) 1 (Laplace) for this model")
            }
        }
        if options.marginal {
            guard options.family != .gaussian else {
                throw SettingError("\(.marginal) applies to GLMMs (\(.family) binomial or poisson): a linear mixed model's fixed effects are already population-averaged")
            }
            guard !parsed.random.isEmpty else {
                throw SettingError("\(.marginal) integrates over the random effects; the formula has no random-effects term (a GLM's effects are already population-averaged)")
            }
        }
        if let f = options.filter {
            do { _ = try RowFilterParser.parse(f, variables: guessedFilterVariables(f)) } catch { throw SettingError("\(.filter): \(error)") }
        }
        if let g = options.gee {
            guard parsed.random.isEmpty else {
                throw SettingError("\(.formula): GEE models the population-averaged mean with fixed effects only; remove the random-effects term\(parsed.random.count == 1 ? "" : "s") (grouped by \(parsed.random.map(\.name).joined(separator: ", "))) and name the clusters with \(.cluster)")
            }
            guard options.cluster != nil else { throw SettingError("GEE needs its clusters: \(.cluster) site, or \(.cluster) VAR for a variable nested within sites (e.g. a patient id)") }
            if g.order != nil && g.correlation != .ar1 { throw SettingError("\(.order) orders rows for \(.corstr) ar1 only") }
            if let o = g.order, o.range(of: #"^[A-Za-z.][A-Za-z0-9._]*$"#, options: .regularExpression) == nil {
                throw SettingError("\(.order) takes the name of a numeric variable")
            }
        }
        if let c = options.cluster {
            guard parsed.random.isEmpty else {
                throw SettingError("\(.cluster) applies to flat models (no random-effects term); a mixed model accounts for its clusters through its random effects")
            }
            guard c == "site" || c.range(of: #"^[A-Za-z.][A-Za-z0-9._]*$"#, options: .regularExpression) != nil else {
                throw SettingError("\(.cluster) takes site or the name of a variable nested within sites")
            }
        }
        for v in missingData.indicators.keys.sorted() where !parsed.variablesUsed.contains(v) {
            throw SettingError("\(.missingIndicator) \(v): the formula does not use \(v)")
        }
    }

    /// One line per optimizer iteration on standard error: objective, rounds,
    /// the slowest site of the last round and the time so far.
    static func progressReport(_ federation: Federation, reporter: ProgressReporter, started: Date) -> @Sendable (Int, Double, Double?) -> Void {
        { iteration, value, _ in
            var slowest = ""
            if let (i, t) = federation.lastRoundSeconds.enumerated().compactMap({ i, t in t.map { (i, $0) } }).max(by: { $0.1 < $1.1 }),
               i < federation.sites.count {
                slowest = ", slowest site \(federation.sites[i]) \(String(format: "%.2f", t)) s"
            }
            reporter.say("iteration \(iteration): objective \(String(format: "%.6f", value)), round \(federation.rounds)\(slowest), elapsed \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        }
    }

    /// Each variable of a filter typed as its comparisons suggest (text when
    /// compared with a quoted or bare level, numeric otherwise), so that the
    /// filter's syntax can be checked before the sites have described their
    /// variables; the real types are checked again after describe.
    static func guessedFilterVariables(_ text: String) throws -> [String: VariableInfo] {
        let tokens = try RowFilterParser.tokenize(text)
        var out: [String: VariableInfo] = [:]
        for (i, t) in tokens.enumerated() {
            guard case .name(let n) = t, n != "is.na" else { continue }
            var kind = VariableInfo.Kind.numeric
            if i + 2 < tokens.count, case .op = tokens[i + 1] {
                switch tokens[i + 2] { case .string, .name: kind = .text; default: break }
            }
            if out[n] == nil || kind == .text { out[n] = VariableInfo(name: n, kind: kind) }
        }
        return out
    }

    public static func defaultLink(_ f: Family) -> Link {
        switch f { case .gaussian: return .identity; case .binomial: return .logit; case .poisson: return .log }
    }

    /// describe → resolve → fit, with a missing-data strategy.
    public static func fit(_ federation: Federation, dataset: String, formula: String,
                           options: FitOptions = FitOptions(),
                           missingData: MissingDataStrategy = MissingDataStrategy()) throws -> FitResult {
        let started = Date()
        let recoveries = federation.channels.map(\.recoveries.count)
        let descriptions = try describe(federation, dataset: dataset, hashingLevelsOf: groupingVariables(formula))
        return try fit(federation, dataset: dataset, formula: formula, descriptions: descriptions,
                       options: options, missingData: missingData, started: started, recoveriesBefore: recoveries)
    }

    /// Fits with descriptions already in hand (several analyses share one describe round).
    public static func fit(_ federation: Federation, dataset: String, formula: String, descriptions: [SiteDescription],
                           options: FitOptions, missingData: MissingDataStrategy, started: Date = Date(),
                           recoveriesBefore: [Int]? = nil) throws -> FitResult {
        let excluded = try missingData.sitesToExclude(descriptions)
        let kept = federation.channels.filter { c in !excluded.contains { $0.site == c.site } }
        guard !kept.isEmpty else { throw SettingError("every site would be excluded by \(.excludeSitesMissingAbove)") }
        let used = excluded.isEmpty ? federation : federation.restricted(to: kept)
        let keptDescriptions = descriptions.filter { d in !excluded.contains { $0.site == d.site } }
        let recoveryCounts = federation.channels.map(\.recoveries.count)
        var options = options
        if options.progress == nil, let reporter = federation.reporter, reporter.enabled {
            options.progress = progressReport(used, reporter: reporter, started: started)
        }
        let spec = try model(used, dataset: dataset, formula: formula, descriptions: keptDescriptions,
                             options: options, missingData: missingData)
        var result = try FitDriver.fit(used, dataset: dataset, spec: spec, options: options)
        result.elapsedSeconds = Date().timeIntervalSince(started)
        result.exclusions = federation.exclusions
            + excluded.map { SiteExclusion(site: $0.site, reason: "--exclude-sites-missing-above: " + $0.reason) }
        result.excludedSites = result.exclusions.map(\.site)
        for e in federation.exclusions { result.messages.append("site \(e.site) left out: \(e.reason)") }
        for (c, before) in zip(federation.channels, recoveriesBefore ?? recoveryCounts) {
            for r in c.recoveries.dropFirst(before) { result.messages.append("site \(c.site): \(r)") }
        }
        for (v, c) in missingData.indicators.sorted(by: { $0.key < $1.key }) {
            result.messages.append("missing-indicator method: \(v) filled with \(RNumberFormat.format(c)) where missing; column missing(\(v)) added")
        }
        for e in excluded { result.messages.append("site \(e.site) left out: \(e.reason)") }
        if let f = spec.filter {
            result.messages.append("rows at each site filtered by: \(Explain.expression(f))")
            result.filter = .init(text: Explain.expression(f), expression: f, variables: f.variables)
        }
        return result
    }

    /// The model a fit sends to the sites, with the rounds that need sites:
    /// the nesting of grouping factors, and the pooled moments of scale() and
    /// poly() arguments over the model's rows (MomentsRound.swift).
    public static func model(_ federation: Federation, dataset: String, formula: String, descriptions: [SiteDescription],
                             options: FitOptions, missingData: MissingDataStrategy = MissingDataStrategy()) throws -> ModelSpec {
        let spec = try model(formula: formula, descriptions: descriptions, options: options, missingData: missingData)
        try requireNesting(spec, descriptions: descriptions, federation: federation, dataset: dataset)
        return try withPooledMoments(spec, formula: formula, federation: federation, dataset: dataset,
                                     descriptions: descriptions, options: options, missingData: missingData)
    }

    /// `spec` resolved again with the pooled moments of its scale() and
    /// poly() arguments over exactly the rows `spec` uses (its filter, its
    /// complete cases and `also_required`); `spec` itself when it has none.
    static func withPooledMoments(_ spec: ModelSpec, formula: String, federation: Federation, dataset: String,
                                  descriptions: [SiteDescription], options: FitOptions,
                                  missingData: MissingDataStrategy = MissingDataStrategy()) throws -> ModelSpec {
        let parsed = try Formula.parse(formula)
        let arguments = try Formula.momentArguments(parsed, variables: try VariableCatalog(descriptions).variables(Set(parsed.variablesUsed)))
        guard !arguments.isEmpty else { return spec }
        let moments = try pooledMoments(federation, dataset: dataset, spec: spec, arguments: arguments)
        var out = try model(formula: formula, descriptions: descriptions, options: options, missingData: missingData, moments: moments)
        out.alsoRequired = spec.alsoRequired
        out.cluster = spec.cluster
        return out
    }

    /// The model specification a fit sends to the sites: the formula
    /// resolved against the descriptions, the missing-data strategy applied,
    /// and the row filter (`options.filter`) resolved.
    public static func model(formula: String, descriptions: [SiteDescription], options: FitOptions,
                             missingData: MissingDataStrategy = MissingDataStrategy(),
                             moments: [String: PooledMoments] = [:]) throws -> ModelSpec {
        var spec = try resolve(formula: formula, descriptions: descriptions, family: options.family, link: options.link, moments: moments)
        if let c = options.cluster {
            guard spec.isFlat else {
                throw SettingError("\(.cluster) applies to flat models (no random-effects term); a mixed model accounts for its clusters through its random effects")
            }
            guard descriptions.count > 1 || c != "site" else { throw SettingError("\(.cluster) site needs at least 2 sites") }
            if c != "site" { try VariableCatalog(descriptions).requireVariables([c]) }
            // Clusters are site-local: equal codes at two sites are two clusters (sandwich's cluster = ~site:VAR).
            spec.cluster = c == "site" ? .site : .withinSite([c])
        }
        if let g = options.gee {
            if let o = g.order {
                try VariableCatalog(descriptions).requireVariables([o])
                guard try VariableCatalog(descriptions).variables([o])[o]?.kind == .numeric else {
                    throw SettingError("\(.order) \(o): the order of rows within a cluster must be a numeric variable (e.g. the visit number)")
                }
            }
            spec.gee = GEESpec(correlation: g.correlation, order: g.order)
        }
        if let w = options.weights {
            try VariableCatalog(descriptions).requireVariables([w])
            guard try VariableCatalog(descriptions).variables([w])[w]?.kind == .numeric else {
                throw SettingError("\(.weights) \(w): prior weights must be a numeric variable")
            }
            spec.weights = .variable(w)
        }
        // Only the variables these steps use: an unused variable of mixed types must not stop the fit.
        let names = Set(missingData.indicators.keys).union(try options.filter.map(RowFilterParser.variableNames) ?? [])
        guard !names.isEmpty else { return spec }
        let variables = try VariableCatalog(descriptions).variables(names)
        spec = try missingData.apply(to: spec, variables: variables)
        if let f = options.filter { spec.filter = try RowFilterParser.parse(f, variables: variables) }
        return spec
    }
}

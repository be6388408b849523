// The analyst's operations on a federation: describe the sites' data and
// fit a model written in lme4's formula language.

import Foundation
import Math
import Protocol

public enum Analysis {
    /// One describe round: every site's variables, types, levels and missingness.
    public static func describe(_ federation: Federation, dataset: String) throws -> [SiteDescription] {
        try federation.round({ _ in .describe(DescribeRequest(dataset: dataset)) }) { reply, site in
            guard case .described(let d) = reply else { throw unexpected(reply, site, expected: "described") }
            return d
        }
    }

    /// Parses and resolves `formula` against the sites' descriptions.
    public static func resolve(formula: String, descriptions: [SiteDescription],
                               family: Family = .gaussian, link: Link? = nil) throws -> ModelSpec {
        let parsed = try Formula.parse(formula)
        let catalog = VariableCatalog(descriptions)
        try catalog.requireVariables(parsed.variablesUsed)
        let spec = try Formula.resolve(parsed, variables: try catalog.variables(Set(parsed.variablesUsed)), family: family,
                                       link: link ?? defaultLink(family))
        try catalog.requireNesting(spec)
        return spec
    }

    public static func defaultLink(_ f: Family) -> Link {
        switch f { case .gaussian: return .identity; case .binomial: return .logit; case .poisson: return .log }
    }

    /// describe → resolve → fit.
    public static func fit(_ federation: Federation, dataset: String, formula: String,
                           options: FitOptions = FitOptions()) throws -> FitResult {
        let started = Date()
        let descriptions = try describe(federation, dataset: dataset)
        let spec = try resolve(formula: formula, descriptions: descriptions, family: options.family, link: options.link)
        var result = options.family == .gaussian
            ? try LMMFit.run(federation, dataset: dataset, spec: spec, options: options)
            : try GLMMFit.run(federation, dataset: dataset, spec: spec, options: options)
        result.elapsedSeconds = Date().timeIntervalSince(started)
        return result
    }
}

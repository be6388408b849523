// Conditional and marginal effects side by side (`fedmix gee --glmm`): the
// GEE fit beside the matching GLMM (the same fixed effects and a random
// intercept per cluster) fitted with --marginal on the same federation.
// Per covariate: the GLMM's conditional ratio with its Wald interval, the
// GLMM-implied marginal ratio (attenuation approximation), the GLMM's
// average marginal effect on the response scale, and the GEE's ratio with
// its robust interval; and one line saying why they differ.

import Foundation
import Math

public struct SideBySide: Codable, Sendable {
    public struct Row: Codable, Sendable {
        public var name: String
        /// exp(β) of the GLMM (subject- or cluster-specific), with its 95% Wald interval.
        public var conditionalRatio: Double
        public var conditionalLower: Double
        public var conditionalUpper: Double
        /// exp() of the GLMM-implied marginal coefficient (approximation).
        public var impliedMarginalRatio: Double?
        /// The GLMM's average marginal effect on the probability (or rate) scale, and its SE.
        public var averageMarginalEffect: Double?
        public var averageMarginalEffectSE: Double?
        /// exp(β) of the GEE (population-averaged), with its robust interval.
        public var geeRatio: Double
        public var geeLower: Double
        public var geeUpper: Double
        enum CodingKeys: String, CodingKey {
            case name, conditionalRatio = "conditional_ratio", conditionalLower = "conditional_lower", conditionalUpper = "conditional_upper"
            case impliedMarginalRatio = "implied_marginal_ratio", averageMarginalEffect = "average_marginal_effect"
            case averageMarginalEffectSE = "average_marginal_effect_se"
            case geeRatio = "gee_ratio", geeLower = "gee_lower", geeUpper = "gee_upper"
        }
    }
    /// "odds ratio" (logit) or "rate ratio" (log).
    public var ratio: String
    public var glmmFormula: String
    /// The GLMM's random-intercept SD σ.
    public var sigma: Double
    public var rows: [Row]
    public var explanation: String
    enum CodingKeys: String, CodingKey { case ratio, glmmFormula = "glmm_formula", sigma, rows, explanation }

    /// The GLMM formula matching a GEE's: a random intercept per cluster.
    public static func glmmFormula(_ formula: String, cluster: String) -> String {
        formula + " + (1 | " + (cluster == "site" ? "site" : "site:\(cluster)") + ")"
    }

    /// Nil when the GLMM has no marginal section or the link has no ratio.
    public init?(gee: GEEResult, glmm: FitResult) {
        guard let m = glmm.marginal, gee.model.link == "logit" || gee.model.link == "log" else { return nil }
        ratio = gee.model.link == "logit" ? "odds ratio" : "rate ratio"
        glmmFormula = glmm.model.formula
        sigma = m.sigma ?? .nan
        let z = StandardNormal.quantile975
        rows = gee.fixedEffects.filter { $0.name != "(Intercept)" }.compactMap { g in
            guard let c = glmm.fixedEffects.first(where: { $0.name == g.name }) else { return nil }
            let ame = m.effects.first { $0.name == g.name }
            let lower = g.estimate - z * g.stdError, upper = g.estimate + z * g.stdError   // the robust Wald interval
            return Row(name: g.name, conditionalRatio: exp(c.estimate), conditionalLower: exp(c.estimate - z * c.stdError),
                       conditionalUpper: exp(c.estimate + z * c.stdError),
                       impliedMarginalRatio: m.attenuation.first { $0.name == g.name }?.marginalRatio,
                       averageMarginalEffect: ame?.estimate, averageMarginalEffectSE: ame?.stdError,
                       geeRatio: exp(g.estimate), geeLower: exp(lower), geeUpper: exp(upper))
        }
        let (one, many) = gee.cluster == "site" ? ("site", "sites") : ("\(gee.cluster) cluster", "\(gee.cluster) clusters")
        let closer = rows.filter { abs(log($0.geeRatio)) <= abs(log($0.conditionalRatio)) }.count
        if gee.model.link == "logit" {
            explanation = "The GLMM's odds ratios compare patients within the same \(one); the GEE's and the GLMM-implied marginal ones compare the whole population, averaged over \(many), and are expected to lie closer to 1, because the variation between \(many) (σ = \(String(format: "%.3g", sigma)) on the log-odds scale) dilutes an effect when it is averaged over them."
                + (closer == rows.count ? " Here every GEE odds ratio is closer to 1 than the GLMM's."
                   : " Here \(closer) of the \(rows.count) GEE odds ratios are closer to 1: the two fits weight the data differently and the GEE's carry the sampling error of \(gee.nClusters) clusters; the implied marginal ratios show the attenuation the GLMM itself predicts.")
        } else {
            explanation = "With a log link the GLMM's rate ratios and the population-averaged ones agree in theory (only the intercept shifts, by σ²/2); a gap between the GLMM's and the GEE's reflects estimation, not attenuation."
        }
    }

    public var text: String {
        var out = "Conditional and marginal effects side by side (\(ratio)s; GLMM \(glmmFormula)):\n"
        let label = ratio == "odds ratio" ? "OR" : "RR"
        var t: [[String]] = [["", "GLMM \(label) [95% CI]", "implied marginal \(label)", "AME (SE)", "GEE \(label) [robust 95% CI]"]]
        func f(_ x: Double) -> String { Report.fmt(x, digits: 4) }
        for r in rows {
            t.append([r.name, "\(f(r.conditionalRatio)) [\(f(r.conditionalLower)), \(f(r.conditionalUpper))]",
                      r.impliedMarginalRatio.map(f) ?? "",
                      r.averageMarginalEffect.map { "\(f($0)) (\(f(r.averageMarginalEffectSE ?? .nan)))" } ?? "",
                      "\(f(r.geeRatio)) [\(f(r.geeLower)), \(f(r.geeUpper))]"])
        }
        out += Report.table(t, rightAlign: true, leftFirst: true)
        return out + explanation + "\n"
    }
}

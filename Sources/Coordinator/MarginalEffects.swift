// Population-averaged effects of a GLMM (`--marginal`): the sites integrate
// the conditional mean over the random effects (a row's random part is one
// normal variable, whatever the terms) by Gauss-Hermite quadrature row by row and send sums with their
// β-gradients in the finalize round (no extra round; GLMMMarginal); here the
// sums are added in site order, averaged over the rows, and given delta-
// method SEs from the fit's Cov(β̂) (θ's uncertainty is not included). Beside
// them, the marginal coefficients the GLMM implies by the standard
// attenuation approximation (Zeger, Liang & Albert 1988), labelled as such.

import Foundation
import Math
import Protocol

public struct MarginalResult: Codable, Sendable {
    public struct Estimate: Codable, Sendable {
        public var name: String
        /// "predicted" (the mean of the population-averaged μ), "derivative"
        /// (the average of βⱼ ∂m/∂η) or "discrete change" (a 0/1 factor column: m(1) − m(0)).
        public var kind: String
        public var estimate: Double
        public var stdError: Double
        public var ciLower: Double
        public var ciUpper: Double
        enum CodingKeys: String, CodingKey { case name, kind, estimate, stdError = "std_error", ciLower = "ci_lower", ciUpper = "ci_upper" }
    }
    public struct Attenuated: Codable, Sendable {
        public var name: String
        public var conditional: Double
        /// The approximate population-averaged coefficient.
        public var marginal: Double
        /// exp() of each (odds or rate ratios) for the log and logit links.
        public var conditionalRatio: Double?
        public var marginalRatio: Double?
        enum CodingKeys: String, CodingKey { case name, conditional, marginal, conditionalRatio = "conditional_ratio", marginalRatio = "marginal_ratio" }
    }
    /// Gauss-Hermite points per row.
    public var points: Int
    /// The SD σ of the random intercepts summed (√Σθ², every term an
    /// intercept); nil with random slopes, whose spread varies by row.
    public var sigma: Double?
    public var rows: Int
    public var predicted: Estimate
    public var effects: [Estimate]
    /// How the SEs were computed.
    public var method: String
    public var attenuation: [Attenuated]
    /// How the attenuated coefficients were computed (an approximation).
    public var attenuationMethod: String
    enum CodingKeys: String, CodingKey {
        case points, sigma, rows, predicted, effects, method, attenuation, attenuationMethod = "attenuation_method"
    }
}

enum MarginalEffects {
    /// Quadrature points per row: exact to rounding for the logit and probit
    /// means at any σ a GLMM reports (checked against adaptive quadrature in R).
    static let points = 40

    /// What finalize asks for: the 0/1 factor columns take a discrete change.
    static func request(_ spec: ModelSpec) -> MarginalRequest {
        MarginalRequest(points: points, discrete: spec.fixed.map { if case .indicator = $0.expr { return true }; return false })
    }

    /// The random intercepts' total SD, when every term is an intercept.
    static func interceptSD(_ spec: ModelSpec, theta: [Double]) -> Double? {
        guard spec.terms.allSatisfy({ $0.columns.count == 1 && $0.columns[0].expr == .number(1) }) else { return nil }
        return theta.reduce(0) { $0 + $1 * $1 }.squareRoot()
    }

    /// The result from the sites' sums, at β̂ and θ̂ with covariance `vcov`.
    static func build(_ finals: [FinalizeReply], sites: [String], spec: ModelSpec, beta: [Double], theta: [Double],
                      vcov: Matrix) throws -> MarginalResult {
        let sigma = interceptSD(spec, theta: theta)
        let p = spec.fixedCount, q = 1 + p
        var values = [Double](repeating: 0, count: q), gradients = [Double](repeating: 0, count: q * p), rows = 0
        for (f, site) in zip(finals, sites) {
            guard let m = f.marginal, m.values.count == q else { throw SiteFailure(site: site, message: "sent no marginal sums for \(p) coefficients") }
            rows += m.rows
            for k in 0..<q { values[k] += m.values[k] }
            for k in 0..<(q * p) { gradients[k] += m.gradients[k] }
        }
        let n = Double(rows), z = StandardNormal.quantile975
        func estimate(_ k: Int, name: String, kind: String) -> MarginalResult.Estimate {
            let g = (0..<p).map { gradients[k + $0 * q] / n }
            let v = Dense.multiply(vcov, g)
            let se = zip(g, v).reduce(0) { $0 + $1.0 * $1.1 }.squareRoot()
            let e = values[k] / n
            return .init(name: name, kind: kind, estimate: e, stdError: se, ciLower: e - z * se, ciUpper: e + z * se)
        }
        let discrete = request(spec).discrete
        let intercept = spec.fixed.firstIndex { $0.expr == .number(1) }
        let effects = (0..<p).filter { $0 != intercept }.map { j in
            estimate(1 + j, name: spec.fixed[j].name, kind: discrete[j] ? "discrete change" : "derivative")
        }
        // Attenuation: logit β/√(1 + c²σ²), c = 16√3/(15π); probit β/√(1 + σ²) (exact);
        // log link: the slopes unchanged and the intercept + σ²/2 (exact); others none.
        let c = 16 * 3.0.squareRoot() / (15 * Double.pi)
        let ratio = spec.link == .logit || spec.link == .log
        var attenuation: [MarginalResult.Attenuated] = []
        var method = ""
        switch spec.link {
        case _ where sigma == nil:
            method = "none: with random slopes the attenuation varies with the covariates; use the average marginal effects"
        case .logit, .probit, .log:
            let sigma = sigma!
            let factor = spec.link == .logit ? 1 / (1 + c * c * sigma * sigma).squareRoot()
                : spec.link == .probit ? 1 / (1 + sigma * sigma).squareRoot() : 1
            method = spec.link == .logit ? "approximation: β / √(1 + c²σ²), c = 16√3/(15π) (Zeger, Liang & Albert 1988)"
                : spec.link == .probit ? "β / √(1 + σ²) (exact for the probit link)"
                : "slopes unchanged, intercept + σ²/2 (exact for the log link)"
            attenuation = spec.fixed.enumerated().map { j, col in
                var m = beta[j] * factor
                if spec.link == .log && j == intercept { m = beta[j] + sigma * sigma / 2 }
                return .init(name: col.name, conditional: beta[j], marginal: m,
                             conditionalRatio: ratio ? exp(beta[j]) : nil, marginalRatio: ratio ? exp(m) : nil)
            }
        default:
            method = "no closed-form attenuation for the \(spec.link.rawValue) link; use the average marginal effects"
        }
        return MarginalResult(points: points, sigma: sigma, rows: rows,
                              predicted: estimate(0, name: "mean predicted " + (spec.family == .poisson ? "rate" : "probability"), kind: "predicted"),
                              effects: effects,
                              method: "Gauss-Hermite quadrature (\(points) points) per row over its random part zᵢᵀb ~ N(0, zᵢᵀΣzᵢ), averaged over the rows used; delta-method SEs from Cov(β̂), σ held at its estimate (θ's uncertainty not included)",
                              attenuation: attenuation, attenuationMethod: method)
    }
}

// What a site needs to complete one incomplete variable for imputed dataset
// m (multiple imputation, `--impute`): the imputation model, one draw of its
// parameters from their posterior approximation (made at the coordinator),
// the MNAR shift δ, and the seed of the site's own random stream. The site
// draws its random effect and the missing values itself, so imputed values
// never leave it; the request (and so the audit log) holds everything that
// determines them.

import Foundation

/// How the imputation model's response relates to the variable it completes.
public enum ImputationTransform: String, Sendable, Hashable, Codable {
    /// The response is the variable itself.
    case identity
    /// The response is log(variable); imputed values are exp of the draw.
    case log
}

/// One incomplete variable's imputation for one completed dataset.
public struct ImputationDraw: Codable, Sendable, Hashable {
    /// The variable completed (a numeric column of the dataset).
    public var variable: String
    /// The imputation model, resolved as for a fit: gaussian (LMM or lm) or
    /// binomial logit (GLMM or glm); random-effects terms grouped by site only.
    public var model: ModelSpec
    public var transform: ImputationTransform
    /// The parameter draw: θ (lme4's relative factor), β, and σ (1 for binomial).
    public var theta: [Double]
    public var beta: [Double]
    public var sigma: Double
    /// MNAR shift added to every imputed value on the model's scale (the link
    /// scale for binary variables; log scale for a log-transformed variable).
    public var delta: Double
    /// The analyst's seed and the completed dataset's index (1…M): with the
    /// site's name and the variable they seed the site's stream (ImputationStream).
    public var seed: UInt64
    public var m: Int
    enum CodingKeys: String, CodingKey { case variable, model, transform, theta, beta, sigma, delta, seed, m }
    public init(variable: String, model: ModelSpec, transform: ImputationTransform, theta: [Double], beta: [Double],
                sigma: Double, delta: Double, seed: UInt64, m: Int) {
        self.variable = variable; self.model = model; self.transform = transform; self.theta = theta
        self.beta = beta; self.sigma = sigma; self.delta = delta; self.seed = seed; self.m = m
    }

    /// Refuses draws no imputation can use: non-finite parameters, a
    /// non-positive σ, counts that do not match the model.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        variable = try c.decode(String.self, forKey: .variable)
        model = try c.decode(ModelSpec.self, forKey: .model)
        transform = try c.decode(ImputationTransform.self, forKey: .transform)
        theta = try c.decode([Double].self, forKey: .theta)
        beta = try c.decode([Double].self, forKey: .beta)
        sigma = try c.decode(Double.self, forKey: .sigma)
        delta = try c.decode(Double.self, forKey: .delta)
        seed = try c.decode(UInt64.self, forKey: .seed)
        m = try c.decode(Int.self, forKey: .m)
        func fail(_ key: CodingKeys, _ why: String) -> ProtocolError {
            .inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why)
        }
        guard theta.count == model.thetaCount, theta.allSatisfy(\.isFinite) else { throw fail(.theta, "must hold one finite value per covariance parameter of the model") }
        guard beta.count == model.fixed.count, beta.allSatisfy(\.isFinite) else { throw fail(.beta, "must hold one finite value per fixed effect of the model") }
        guard sigma.isFinite, sigma > 0 else { throw fail(.sigma, "must be positive and finite") }
        guard delta.isFinite else { throw fail(.delta, "must be finite") }
        guard m >= 1 else { throw fail(.m, "must be at least 1") }
    }
}

/// A site's mean of a variable's observed values and of the values it
/// imputed (original scale), sent only when both are over at least the
/// site's min_rows and min_cell rows.
public struct ImputedMeans: Codable, Sendable, Hashable {
    public var observed: Double
    public var imputed: Double
    enum CodingKeys: String, CodingKey { case observed, imputed }
    public init(observed: Double, imputed: Double) { self.observed = observed; self.imputed = imputed }
}

/// The reproducible random stream of one imputation: SplitMix64 seeded by
/// the first 8 bytes of SHA-256 over a label that names its use, so that the
/// coordinator's parameter draws and each site's draws are independent
/// streams fixed by (seed, site, m, variable) and by nothing else.
public struct ImputationStream: Sendable {
    private var state: UInt64
    private var spare: Double? = nil

    public init(label: String) {
        let h = SHA256Digest.hash(label)
        state = h.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// A site's stream for completing `variable` in dataset m.
    public static func site(seed: UInt64, site: String, m: Int, variable: String) -> ImputationStream {
        ImputationStream(label: "fedmix-impute-site\u{1f}\(seed)\u{1f}\(site)\u{1f}\(m)\u{1f}\(variable)")
    }

    /// The coordinator's stream for the parameter draw of `variable` in dataset m
    /// (`iteration` counts chained-equation sweeps).
    public static func parameters(seed: UInt64, m: Int, variable: String, iteration: Int = 0) -> ImputationStream {
        ImputationStream(label: "fedmix-impute-parameters\u{1f}\(seed)\u{1f}\(m)\u{1f}\(variable)\u{1f}\(iteration)")
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }

    /// Uniform on (0, 1): never 0, so logs are finite.
    public mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) * 0x1.0p-53 }

    /// A standard normal draw (Box–Muller, both values used).
    public mutating func normal() -> Double {
        if let s = spare { spare = nil; return s }
        let u = uniform(), v = uniform()
        let r = (-2 * Foundation.log(u)).squareRoot()
        spare = r * Foundation.sin(2 * .pi * v)
        return r * Foundation.cos(2 * .pi * v)
    }

    /// A Gamma(shape, 1) draw (Marsaglia and Tsang 2000; shape < 1 by boosting).
    public mutating func gamma(shape a: Double) -> Double {
        if a < 1 { return gamma(shape: a + 1) * Foundation.pow(uniform(), 1 / a) }
        let d = a - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x: Double, v: Double
            repeat { x = normal(); v = 1 + c * x } while v <= 0
            v = v * v * v
            let u = uniform()
            if Foundation.log(u) < 0.5 * x * x + d - d * v + d * Foundation.log(v) { return d * v }
        }
    }

    /// A χ² draw with `df` degrees of freedom.
    public mutating func chiSquare(_ df: Double) -> Double { 2 * gamma(shape: df / 2) }
}

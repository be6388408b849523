// The result of a fit, in the stable JSON form documented in the README.
// Field names follow the README; they change only with a major version.

import Foundation
import Math
import Protocol

public struct FitResult: Codable, Sendable {
    public struct Model: Codable, Sendable {
        public var formula: String
        public var family: String
        public var link: String
        public var method: String
        /// Flat models: "lm" or "glm" (absent for mixed models).
        public var kind: String? = nil
    }
    public struct FixedEffect: Codable, Sendable {
        public var name: String
        public var estimate: Double
        public var stdError: Double
        public var statistic: Double
        public var pValue: Double
        public var ciLower: Double
        public var ciUpper: Double
        /// LMMs: Satterthwaite's degrees of freedom (lmerTest); `pValue`
        /// is then from Student's t. Absent for GLMMs (z tests).
        public var df: Double? = nil
        /// REML LMMs: Kenward-Roger's adjusted SE, df, t and p (pbkrtest,
        /// lmerTest's ddf = "Kenward-Roger").
        public var kenwardRoger: KenwardRogerTest? = nil
        /// Multiple imputation (Rubin's rules): relative increase in variance
        /// and fraction of missing information; `df` is then Barnard-Rubin's.
        public var riv: Double? = nil
        public var fmi: Double? = nil
        enum CodingKeys: String, CodingKey {
            case name, estimate, stdError = "std_error", statistic, pValue = "p_value", ciLower = "ci_lower", ciUpper = "ci_upper"
            case df, kenwardRoger = "kenward_roger", riv, fmi
        }
    }
    public struct KenwardRogerTest: Codable, Sendable {
        public var stdError: Double
        public var df: Double
        public var statistic: Double
        public var pValue: Double
        enum CodingKeys: String, CodingKey { case stdError = "std_error", df, statistic, pValue = "p_value" }
    }
    public struct VarianceComponent: Codable, Sendable {
        public var group: String
        public var var1: String?
        public var var2: String?
        public var vcov: Double
        public var sdcor: Double
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(group, forKey: .group)
            try c.encode(var1, forKey: .var1)   // explicit null, as R's NA
            try c.encode(var2, forKey: .var2)
            try c.encode(vcov, forKey: .vcov)
            try c.encode(sdcor, forKey: .sdcor)
        }
    }
    public struct ResponseScale: Codable, Sendable {
        public var estimate: Double
        public var lower: Double
        public var upper: Double
    }
    public struct SiteResult: Codable, Sendable {
        public var site: String
        public var nRows: Int
        public var nUsed: Int
        /// Missing values per model variable; a string such as "<5" when suppressed by the site.
        public var missing: [String: MissingCount]
        /// Conditional modes of the site-level random effects, by term column.
        public var effects: [String: Double]
        public var condSD: [String: Double]
        /// The site's own (no-pooling) estimate of the same effects given β̂, when defined.
        public var ownEffects: [String: Double]
        /// Partially pooled site coefficients (lme4's `coef()`).
        public var coefficients: [String: Double]
        public var bytesSent: Int
        public var bytesReceived: Int
        /// GLMMs: the site's intercept on the response scale (e.g. its adjusted
        /// probability at covariates 0) with a 95% conditional interval.
        public var responseScale: ResponseScale?
        /// Share of the site's rows that complete-case analysis drops.
        public var droppedShare: Double
        /// The site's share of all sites' rows, before and after dropping incomplete rows.
        public var shareBefore: Double
        public var shareAfter: Double
        /// Combinations of missing model variables with their counts (a
        /// string such as "<5" when suppressed by the site).
        public var missingPatterns: [Pattern]
        /// The agent's signed audit-chain heads after each answer of this fit
        /// (nil without an audit log at the site, or in-process): check them
        /// against the site's log with `fedmix-agent audit verify --receipts`.
        public var receipts: [Receipt]? = nil
        /// Multiple imputation: values the site imputed per variable (a
        /// string such as "<5" when suppressed); absent otherwise.
        public var imputed: [String: MissingCount]? = nil
        /// Multiple imputation: observed and imputed means per variable, where the site's rules allow.
        public var imputedMeans: [String: ImputedMeans]? = nil
        public struct Pattern: Codable, Sendable {
            public var missing: [String]
            public var count: MissingCount
        }
        enum CodingKeys: String, CodingKey {
            case responseScale = "response_scale", droppedShare = "dropped_share", shareBefore = "share_before"
            case shareAfter = "share_after", missingPatterns = "missing_patterns"
            case site, nRows = "n_rows", nUsed = "n_used", missing, effects, condSD = "cond_sd", ownEffects = "own_effects", coefficients
            case bytesSent = "bytes_sent", bytesReceived = "bytes_received", receipts, imputed, imputedMeans = "imputed_means"
        }
    }

    public var model: Model
    /// Model variables in first-use order (the missing-data table's columns).
    public var variables: [String]
    public var converged: Bool
    /// The optimizer's verdict and the figures it checked (Newton decrement,
    /// scaled gradient, parameters on their bounds), converged or not.
    public var convergence: String = ""
    public var singular: Bool
    public var messages: [String]
    public var nObs: Int
    public var nSites: Int
    public var nGroups: [String: Int]
    public var fixedEffects: [FixedEffect]
    /// Covariance of the fixed-effects estimates (lme4's `vcov()`): p rows of
    /// p numbers, in the order of `fixedEffects`, in the analyst's coordinates.
    public var vcov: [[Double]] = []
    public var theta: [Double]
    public var thetaNames: [String]
    public var varianceComponents: [VarianceComponent]
    public var sigma: Double
    public var loglik: Double
    public var aic: Double
    public var bic: Double
    public var objective: Double
    /// Residual degrees of freedom as lme4 counts them: rows used minus
    /// parameters (β, θ, and σ for linear models).
    public var dfResid: Int = 0
    public var icc: [String: Double]
    public var sites: [SiteResult]
    public var evaluations: Int
    public var rounds: Int
    public var bytesSent: Int
    public var bytesReceived: Int
    public var elapsedSeconds: Double
    /// Group names in lme4's order (for the text summary).
    public var groupOrder: [String]
    /// GLMMs: quadrature points (1 = Laplace).
    public var nAGQ: Int?
    /// GLMMs with nAGQ > 1: the objective as lme4 reports it, which omits the
    /// saturated model's constant (Σ −2 log p(y | μ = y)); nil otherwise.
    public var lme4Objective: Double?
    /// Every site left out of the fit: by a missing-data rule
    /// (--exclude-sites-missing-above) or by the analyst (--exclude-sites,
    /// `exclude_sites` in the sites file). Names only; `exclusions` says why.
    public var excludedSites: [String] = []
    /// The row filter the sites applied (`--filter`), as text and as the
    /// expression tree the sites evaluated; absent without a filter.
    public var filter: RowFilterUsed? = nil

    public struct RowFilterUsed: Codable, Sendable, Equatable {
        /// The filter written back in the formula language.
        public var text: String
        /// The expression as the sites received it (ModelSpec's coding).
        public var expression: Expr
        /// The variables it reads.
        public var variables: [String]
        public init(text: String, expression: Expr, variables: [String]) {
            self.text = text; self.expression = expression; self.variables = variables
        }
    }
    /// Each left-out site with the reason, so a result never hides a site.
    public var exclusions: [SiteExclusion] = []
    /// `--confint profile|wald`: lme4's confint table (absent without the option).
    public var confint: [ConfidenceInterval]? = nil
    /// `--confint profile` on a model with one scalar random term: the ICC's profile interval.
    public var iccConfint: [ICCInterval]? = nil
    /// `--confint profile`: the rounds and θ points the profile used.
    public var profile: ProfileCost? = nil
    /// The optimizer's path: the objective at each Newton iteration, in the
    /// order taken (a second start begins again at iteration 1).
    public var trace: [TracePoint]? = nil

    public struct TracePoint: Codable, Sendable, Equatable {
        public var iteration: Int
        public var objective: Double
        /// ½ gᵀH⁻¹g on the free parameters, when their Hessian is positive definite.
        public var newtonDecrement: Double?
        enum CodingKeys: String, CodingKey { case iteration, objective, newtonDecrement = "newton_decrement" }
        public init(iteration: Int, objective: Double, newtonDecrement: Double?) {
            self.iteration = iteration; self.objective = objective; self.newtonDecrement = newtonDecrement
        }
    }
    /// Models with crossed factors: the conditional mode and conditional SD
    /// of every crossed level's effects (lme4's `ranef(condVar = TRUE)` for
    /// those factors); absent otherwise.
    public var crossedEffects: [CrossedEffect]? = nil

    public struct CrossedEffect: Codable, Sendable, Equatable {
        public var group: String
        public var level: String
        public var effects: [String: Double]
        public var condSD: [String: Double]
        enum CodingKeys: String, CodingKey { case group, level, effects, condSD = "cond_sd" }
        public init(group: String, level: String, effects: [String: Double], condSD: [String: Double]) {
            self.group = group; self.level = level; self.effects = effects; self.condSD = condSD
        }
    }
    /// Flat models: R's summary.lm / summary.glm figures (absent for mixed models).
    public var flat: FlatStatistics? = nil
    /// `--impute`: how the pooled result was made (absent otherwise).
    public var imputation: ImputationSummary? = nil
    /// The optimizer's end point and Hessian (not in the JSON): what an
    /// imputation model's parameter draws need (ParameterDraw.swift).
    public var optimum: Optimum? = nil
    public struct Optimum: Sendable {
        public var parameters: [String]
        public var x: [Double]
        public var hessian: Matrix
        /// Whether x is in a recoded (centred) parameterization.
        public var recoded: Bool
    }
    /// Flat models with a cluster: sandwich::vcovCL (absent otherwise).
    public var robust: Robust? = nil
    /// GEE (fedmix gee): its own figures (absent otherwise).
    public var gee: GEEDetails? = nil
    /// GLMMs with `--marginal`: population-averaged predictions and effects.
    public var marginal: MarginalResult? = nil

    enum CodingKeys: String, CodingKey {
        case model, variables, converged, convergence, dfResid = "df_resid", singular, messages, nObs = "n_obs", nSites = "n_sites", nGroups = "n_groups"
        case fixedEffects = "fixed_effects", vcov, theta, thetaNames = "theta_names"
        case varianceComponents = "variance_components", sigma, loglik, aic, bic, objective, icc, sites
        case evaluations, rounds, bytesSent = "bytes_sent", bytesReceived = "bytes_received"
        case elapsedSeconds = "elapsed_seconds", groupOrder = "group_order", nAGQ = "nagq", lme4Objective = "lme4_objective", excludedSites = "excluded_sites"
        case exclusions, flat, robust, filter, gee, marginal, imputation
        case confint, iccConfint = "icc_confint", profile, trace, crossedEffects = "crossed_effects"
    }

    /// The JSON form (pretty-printed, keys sorted).
    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(self), as: UTF8.self)
    }
}

extension FitResult.FixedEffect {
    init(_ row: CoefficientTable.Row) {
        self.init(name: row.name, estimate: row.estimate, stdError: row.standardError, statistic: row.statistic,
                  pValue: row.pValue, ciLower: row.lower, ciUpper: row.upper, df: row.degreesOfFreedom)
    }
}

extension FitResult.VarianceComponent {
    init(_ row: VarianceComponentTable.Row) {
        self.init(group: row.group, var1: row.var1, var2: row.var2, vcov: row.vcov, sdcor: row.sdcor)
    }
}

/// A missing count as reported: exact, or suppressed ("<5").
public enum MissingCount: Codable, Sendable, Equatable {
    case exact(Int)
    case suppressed(String)
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(Int.self) { self = .exact(v) } else { self = .suppressed(try c.decode(String.self)) }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self { case .exact(let v): try c.encode(v); case .suppressed(let s): try c.encode(s) }
    }
    public var text: String { switch self { case .exact(let v): return String(v); case .suppressed(let s): return s } }
}

extension FitResult {
    /// An ordinary regression's summary figures, as R's summary.lm and
    /// summary.glm report them.
    public struct FlatStatistics: Codable, Sendable {
        public struct FStatistic: Codable, Sendable {
            public var value: Double
            public var numdf: Int
            public var dendf: Int
        }
        /// "t" (lm: Student's t on df_residual) or "z" (glm).
        public var statistic: String
        public var dfResidual: Int
        /// lm: the residual sum of squares; glm: the residual deviance.
        public var deviance: Double
        /// Parameters logLik counts: p + 1 for lm (σ), p for binomial and Poisson.
        public var logLikDF: Int
        public var residualStandardError: Double? = nil
        public var rSquared: Double? = nil
        public var adjRSquared: Double? = nil
        public var fStatistic: FStatistic? = nil
        public var fPValue: Double? = nil
        public var dispersion: Double? = nil
        public var nullDeviance: Double? = nil
        public var dfNull: Int? = nil
        /// glm: IRLS iterations (R's iter).
        public var iterations: Int? = nil
        enum CodingKeys: String, CodingKey {
            case statistic, dfResidual = "df_residual", deviance, logLikDF = "loglik_df"
            case residualStandardError = "residual_se", rSquared = "r_squared", adjRSquared = "adj_r_squared"
            case fStatistic = "fstatistic", fPValue = "f_p_value", dispersion, nullDeviance = "null_deviance", dfNull = "df_null", iterations
        }
    }

    /// Cluster-robust covariance of the fixed effects (sandwich::vcovCL with
    /// its defaults: HC1 for lm, HC0 for glm, G/(G−1) always).
    public struct Robust: Codable, Sendable {
        public struct Row: Codable, Sendable {
            public var name: String
            public var estimate: Double
            public var stdError: Double
            public var statistic: Double
            public var pValue: Double
            enum CodingKeys: String, CodingKey { case name, estimate, stdError = "std_error", statistic, pValue = "p_value" }
        }
        /// "HC1" or "HC0".
        public var type: String
        /// "site", or the within-site variable(s) joined by ":".
        public var cluster: String
        public var clusters: Int
        /// G/(G−1).
        public var cadjustFactor: Double
        /// (n−1)/(n−k) for HC1, 1 for HC0.
        public var hc1Factor: Double
        public var stdErrors: [Double]
        /// Rows in fixed-effect order.
        public var vcov: [[Double]]
        public var coefficients: [Row] = []
        enum CodingKeys: String, CodingKey {
            case type, cluster, clusters, cadjustFactor = "cadjust_factor", hc1Factor = "hc1_factor", stdErrors = "std_errors", vcov, coefficients
        }

        /// The robust table: t on `df` (lm, as lmtest::coeftest does) or z (df nil).
        func withStatistics(names: [String], estimates: [Double], df: Double?) -> Robust {
            var out = self
            out.coefficients = zip(zip(names, estimates), stdErrors).map { ne, se in
                let z = ne.1 / se
                return Row(name: ne.0, estimate: ne.1, stdError: se, statistic: z,
                           pValue: df.map { StudentT.twoSidedPValue(z, degreesOfFreedom: $0) } ?? StandardNormal.twoSidedPValue(z))
            }
            return out
        }
    }
}

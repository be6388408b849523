/// Every size limit of the protocol, defined once. Both sides read them here,
/// so a coordinator never accepts what no site would build, and a decoder
/// can refuse an absurd message before any of it is used.
public enum ProtocolLimits {
    /// Longest line either side accepts unless configured otherwise (bytes);
    /// each side announces its own in its hello.
    public static let maxLineBytes = 16 * 1024 * 1024
    /// Largest dense tail of a site's θ-free sums (every factor but the one
    /// with the most levels): held densely, so its cost grows with its square.
    public static let maxTailDimension = 2_000
    /// Covariance parameters θ a site evaluates: derivatives travel as jets
    /// whose width grows with θ².
    public static let maxThetaCount = 60
    /// Fixed-effects columns of a model.
    public static let maxFixedColumns = 500
    /// Random-effects terms of a model.
    public static let randomTerms = 1...50
    /// Columns of one random-effects term.
    public static let randomTermColumns = 1...20
    /// Derivative orders: 0 value, 1 gradient, 2 Hessian.
    public static let derivativeOrders = 0...2
    /// Rows a site may report (plausibility of counts).
    public static let maxRows = 1_000_000_000_000
    /// Adaptive Gauss–Hermite points per group (1 is the Laplace approximation).
    public static let quadraturePoints = 1...25
    /// Extra θ points one evaluate request may carry (`thetas`, linear
    /// models): a profile-likelihood search evaluates many points per round.
    public static let maxExtraThetaPoints = 63
    /// A site's own effects in a crossed GLMM piece's level form (its
    /// site-grouped terms' columns).
    public static let maxCrossedOwnEffects = 100
    /// Levels of one grouping factor at one site.
    public static let maxGroupLevels = 100_000_000

    /// Parameters a jet is differentiated in: θ for an LMM, (θ, β) for a GLMM.
    public static var maxJetParameters: Int { maxThetaCount + maxFixedColumns }
    /// Rows and columns of a jet matrix (the Schur complement of [X y]).
    public static var maxJetDimension: Int { maxFixedColumns + 1 }
    /// Random effects per level of one factor (all its terms' columns).
    public static var maxFactorDimension: Int { randomTerms.upperBound * randomTermColumns.upperBound }
    /// Imputation draws one prepare may apply (variables × chained-equation sweeps).
    public static let maxImputedVariables = 400
}

// The fedmix line protocol: one compact JSON object per line. The agent
// speaks first with its hello; the coordinator answers with its own; then
// every request carries an id that its answer echoes. Everything a site
// sends is an aggregate over its rows and is logged at the site first.

import Math

/// Protocol version spoken by this build. A peer with another version is refused.
public let protocolVersion = 1

/// First line each side sends.
public struct Hello: Codable, Sendable, Equatable {
    public var type = "hello"
    public var protocolVersion: Int
    public var role: String            // "agent" or "coordinator"
    public var site: String?           // the agent's site name
    public var software: String
    public var maxLineBytes: Int
    enum CodingKeys: String, CodingKey {
        case type, protocolVersion = "protocol", role, site, software, maxLineBytes = "max_line_bytes"
    }
    public init(role: String, site: String?, software: String, maxLineBytes: Int = ProtocolLimits.maxLineBytes) {
        self.protocolVersion = fedmixProtocolVersion; self.role = role; self.site = site
        self.software = software; self.maxLineBytes = maxLineBytes
    }
}
/// Alias kept separate so `Hello.init` reads the module constant unambiguously.
public let fedmixProtocolVersion = protocolVersion

/// A count that may be suppressed because it is below the disclosure threshold.
/// On the wire: a number, or a string such as "<5".
public enum DisclosedCount: Codable, Sendable, Equatable, CustomStringConvertible {
    case exact(Int)
    case below(Int)

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(Int.self) { self = .exact(v); return }
        let s = try c.decode(String.self)
        guard s.hasPrefix("<"), let v = Int(s.dropFirst()) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "a count is a number or \"<N\"")
        }
        self = .below(v)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self { case .exact(let v): try c.encode(v); case .below(let v): try c.encode("<\(v)") }
    }
    public var description: String {
        switch self { case .exact(let v): return String(v); case .below(let v): return "<\(v)" }
    }
    /// The exact value, if disclosed.
    public var exactValue: Int? { if case .exact(let v) = self { return v }; return nil }
}

// MARK: - Requests

public struct DescribeRequest: Codable, Sendable, Equatable {
    public var dataset: String
    /// Asks for keyed hashes of these variables' codes (the grouping
    /// factors of the model about to be fitted), so that the coordinator
    /// can check that each factor is nested in the sites whatever its
    /// number of levels. Absent from the wire when nil; an agent that does
    /// not know the field ignores it and the coordinator then refuses the
    /// factors it cannot check.
    public var levelHashes: LevelHashRequest?
    /// Asks for numeric variables' n, mean and SD (`fedmix describe`; the
    /// describe round before a fit does not). Absent from the wire unless
    /// true; an older agent ignores it and sends none.
    public var numericSummaries: Bool?
    enum CodingKeys: String, CodingKey { case dataset, levelHashes = "level_hashes", numericSummaries = "numeric_summaries" }
    public init(dataset: String, levelHashes: LevelHashRequest? = nil, numericSummaries: Bool = false) {
        self.dataset = dataset; self.levelHashes = levelHashes; self.numericSummaries = numericSummaries ? true : nil
    }
}

/// Which variables' codes to hash, and the salt (see `LevelHasher`).
public struct LevelHashRequest: Codable, Sendable, Equatable {
    /// 32 to 128 hex digits, drawn at random for this request; an agent
    /// refuses a salt it has seen before.
    public var salt: String
    public var variables: [String]
    enum CodingKeys: String, CodingKey { case salt, variables }
    public init(salt: String, variables: [String]) { self.salt = salt; self.variables = variables }
}

public struct PrepareRequest: Codable, Sendable, Equatable {
    /// Chosen by the coordinator; a repeated prepare with the same session
    /// and model is idempotent, so a coordinator can resume after a reconnect.
    public var session: String
    public var dataset: String
    public var model: ModelSpec
    /// Multiple imputation: the variables the site completes, in order,
    /// before evaluating `model` (ImputationDraw). Absent from the wire when nil.
    public var imputations: [ImputationDraw]? = nil
    /// Variables the model reads as observed although `imputations`
    /// completes them: the chained-equation fit of their own imputation
    /// model, on the rows where they are observed. Absent when nil.
    public var observed: [String]? = nil
    /// The fit's first evaluate request (same session), answered with the
    /// prepare (`PrepareReply.firstAnswer`) to save a round: it is known
    /// before the prepare (lme4's start), and the site answers it exactly as
    /// if it came alone. Absent when nil; an agent that predates it ignores it.
    public var firstEvaluate: EvaluateRequest? = nil
    /// LMMs: "lower" asks the session's `contribution` answers to send each
    /// Schur complement as its lower triangle (WireJetMatrix.form), the
    /// entries the coordinator reads (it mirrors them). Asked once here, not
    /// in every evaluate request. Any other value is ignored, as an agent
    /// that predates the field ignores it (it answers in full, read as before).
    public var schurForm: String? = nil
    enum CodingKeys: String, CodingKey { case session, dataset, model, imputations, observed, firstEvaluate = "first_evaluate", schurForm = "schur_form" }
    public init(session: String, dataset: String, model: ModelSpec, imputations: [ImputationDraw]? = nil) {
        self.session = session; self.dataset = dataset; self.model = model; self.imputations = imputations
    }
}

public struct EvaluateRequest: Codable, Sendable, Equatable {
    public var session: String
    public var theta: [Double]
    /// 0: value only, 1: with gradient, 2: with gradient and Hessian
    /// (in θ for LMMs; in (θ, β) for GLMMs).
    public var order: Int
    /// Fixed effects (GLMMs only: their objective is not profiled over β; a
    /// flat GLM's IRLS step without β starts from the family's mustart).
    public var beta: [Double]?
    /// Quadrature points (GLMMs; 1 = Laplace).
    public var nAGQ: Int?
    /// More points to evaluate in the same round (linear models only): the
    /// site answers `theta` first, then each of these, at `order`. At most
    /// `ProtocolLimits.maxExtraThetaPoints`; the site costs each point alone.
    public var thetas: [[Double]]?
    /// GEE: the round's α and φ (and the bread for the corrected meats); the
    /// site answers `gee_step` at (beta, α, φ).
    public var gee: GEEPoint?
    /// GLMMs with crossed factors: the points (θ, β, b_G) the site answers
    /// with `glmm_crossed` (CrossedGLMMMessages.swift).
    public var crossed: [CrossedGLMMPoint]?
    /// With `crossed`: the form of the sites' Hessians in b_G, "dense"
    /// (absent: the upper triangle) or "level" (CrossedGLMMForm).
    public var crossedForm: String?
    /// LMMs with crossed factors and within-site terms, from a site that
    /// sent `crossed_sums`: answer V_kᵀ (`low_rank_contribution`), not the
    /// dense Schur complement (CrossedLowRankMessages.swift).
    public var lowRank: Bool?
    /// GLMMs: which derivatives to answer (GLMMDerivatives): absent, all of
    /// (θ, β); "beta", the GLM at θ = 0 in β alone (the start's rounds).
    public var derivatives: String?
    enum CodingKeys: String, CodingKey { case session, theta, order, beta, nAGQ = "nagq", thetas, gee, crossed, crossedForm = "crossed_form", lowRank = "low_rank", derivatives }
    public init(session: String, theta: [Double], order: Int, beta: [Double]? = nil, nAGQ: Int? = nil,
                thetas: [[Double]]? = nil, gee: GEEPoint? = nil, lowRank: Bool? = nil) {
        self.session = session; self.theta = theta; self.order = order; self.beta = beta; self.nAGQ = nAGQ
        self.thetas = thetas; self.gee = gee; self.lowRank = lowRank
    }
    /// Refuses more extra points than `ProtocolLimits.maxExtraThetaPoints`,
    /// an empty list, and points of another length than `theta`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        theta = try c.decode([Double].self, forKey: .theta)
        order = try c.decode(Int.self, forKey: .order)
        beta = try c.decodeIfPresent([Double].self, forKey: .beta)
        nAGQ = try c.decodeIfPresent(Int.self, forKey: .nAGQ)
        thetas = try c.decodeIfPresent([[Double]].self, forKey: .thetas)
        gee = try c.decodeIfPresent(GEEPoint.self, forKey: .gee)
        crossed = try c.decodeIfPresent([CrossedGLMMPoint].self, forKey: .crossed)
        crossedForm = try c.decodeIfPresent(String.self, forKey: .crossedForm)
        lowRank = try c.decodeIfPresent(Bool.self, forKey: .lowRank)
        derivatives = try c.decodeIfPresent(String.self, forKey: .derivatives)
        if let why = problem {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.thetas]), reason: why)
        }
    }
    /// Why `thetas` does not fit, if it does not.
    public var problem: String? {
        guard let thetas else { return nil }
        guard (1...ProtocolLimits.maxExtraThetaPoints).contains(thetas.count) else {
            return "has \(thetas.count) points; between 1 and \(ProtocolLimits.maxExtraThetaPoints) are allowed"
        }
        guard thetas.allSatisfy({ $0.count == theta.count }) else { return "holds a point whose length differs from theta's" }
        return nil
    }
    /// Every point of the request: `theta`, then `thetas`.
    public var points: [[Double]] { [theta] + (thetas ?? []) }
}

/// Which derivatives a GLMM evaluation answers (EvaluateRequest.derivatives).
public enum GLMMDerivatives: String, Sendable, CaseIterable {
    /// In (θ, β): the default.
    case all
    /// In β alone, at θ = 0, where the objective is the GLM's deviance
    /// Σ dev_i(x_iβ + o_i): no modes, one pass over the rows. The answer is
    /// the β block of the full answer at θ = 0 (GLMMObjective's start).
    case beta
}

public struct FinalizeRequest: Codable, Sendable, Equatable {
    public var session: String
    public var theta: [Double]
    public var beta: [Double]
    public var sigma: Double
    /// A flat GLM with a cluster: the β at which glm.fit's last iteration
    /// took its working weights (the estimating functions use them); absent,
    /// the family's start (mustart). Ignored by every other model.
    public var weightsAt: [Double]?
    /// A GLMM with `--marginal`: the population-averaged sums to add.
    public var marginal: MarginalRequest?
    /// Models with crossed factors: the conditional modes b = Λu of the
    /// crossed effects at this site's levels (its leading columns, in
    /// order), and σ⁻² times their conditional covariance there (column-
    /// major), from which the site's own effects and their conditional
    /// covariance follow (LMMSite.siteEffects). Absent otherwise.
    public var crossedEffects: [Double]?
    public var crossedCovariance: [Double]?
    /// Instead of `crossedCovariance`, when the coordinator holds the site's
    /// θ-free sums (every own term grouped by the site): what P adds to the
    /// site effects' conditional covariance, r × r (LMMSite.crossedCovarianceTerm).
    public var crossedTerm: [Double]?
    /// Instead of either, when the site answered `low_rank`: X P Xᵀ, r × r,
    /// X being the site effects' rows of its V_kᵀ at its crossed levels; the
    /// site forms its term L_ss⁻ᵀ X P Xᵀ L_ss⁻¹ (LMMSite.siteEffects).
    public var crossedProduct: [Double]?
    enum CodingKeys: String, CodingKey {
        case session, theta, beta, sigma, weightsAt = "weights_at", marginal
        case crossedEffects = "crossed_effects", crossedCovariance = "crossed_covariance", crossedTerm = "crossed_term"
        case crossedProduct = "crossed_product"
    }
    public init(session: String, theta: [Double], beta: [Double], sigma: Double, weightsAt: [Double]? = nil,
                marginal: MarginalRequest? = nil) {
        self.session = session; self.theta = theta; self.beta = beta; self.sigma = sigma; self.weightsAt = weightsAt
        self.marginal = marginal
    }
}

public enum Request: Sendable, Equatable {
    case describe(DescribeRequest)
    case prepare(PrepareRequest)
    case evaluate(EvaluateRequest)
    case finalize(FinalizeRequest)
    case ping
    /// Several prepare/evaluate/finalize lines in one (BatchMessages.swift).
    case batch(BatchRequest)

    public var typeName: String {
        switch self {
        case .describe: return "describe"
        case .prepare: return "prepare"
        case .evaluate: return "evaluate"
        case .finalize: return "finalize"
        case .ping: return "ping"
        case .batch: return "batch"
        }
    }
}

// MARK: - Replies

/// One variable as a site describes it: type, missingness, and for text
/// variables (and numeric ones with few distinct values) the levels.
public struct VariableDescription: Codable, Sendable, Equatable {
    public struct Level: Codable, Sendable, Equatable {
        public var level: String
        public var count: DisclosedCount
        enum CodingKeys: String, CodingKey { case level, count }
        public init(level: String, count: DisclosedCount) { self.level = level; self.count = count }
    }
    public var name: String
    public var type: VariableInfo.Kind
    public var missing: DisclosedCount
    /// Distinct non-missing values.
    public var distinct: Int
    /// Nil when the variable has too many distinct values to list (identifiers).
    /// Levels held by fewer than the site's min_cell rows are never named.
    public var levels: [Level]?
    /// How many levels were held back because fewer than min_cell rows have
    /// them (absent when none were).
    public var suppressedLevels: Int?
    /// Numeric variables only: the number of non-missing values, disclosed
    /// as counts are (below min_cell as "<min_cell"). Absent from older agents.
    public var nonMissing: DisclosedCount?
    /// Numeric variables only, and only when at least the site's min_rows
    /// values are present: their mean and standard deviation (n − 1
    /// denominator). Both or neither. Never a minimum, maximum or any one value.
    public var mean: Double?
    public var sd: Double?
    /// Why a numeric variable has no moments: "min_rows" (fewer non-missing
    /// values than the site's min_rows) or "differencing" (its non-missing
    /// rows differ from rows answered before by fewer than min_rows).
    public var momentsWithheld: String?
    enum CodingKeys: String, CodingKey {
        case name, type, missing, distinct, levels, suppressedLevels = "suppressed_levels"
        case nonMissing = "n", mean, sd, momentsWithheld = "moments_withheld"
    }
    public init(name: String, type: VariableInfo.Kind, missing: DisclosedCount, distinct: Int, levels: [Level]?,
                suppressedLevels: Int? = nil, nonMissing: DisclosedCount? = nil, mean: Double? = nil, sd: Double? = nil,
                momentsWithheld: String? = nil) {
        self.name = name; self.type = type; self.missing = missing; self.distinct = distinct; self.levels = levels
        self.suppressedLevels = suppressedLevels
        self.nonMissing = nonMissing; self.mean = mean; self.sd = sd; self.momentsWithheld = momentsWithheld
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        type = try c.decode(VariableInfo.Kind.self, forKey: .type)
        missing = try c.decode(DisclosedCount.self, forKey: .missing)
        distinct = try c.decode(Int.self, forKey: .distinct)
        levels = try c.decodeIfPresent([Level].self, forKey: .levels)
        suppressedLevels = try c.decodeIfPresent(Int.self, forKey: .suppressedLevels)
        nonMissing = try c.decodeIfPresent(DisclosedCount.self, forKey: .nonMissing)
        mean = try c.decodeIfPresent(Double.self, forKey: .mean)
        sd = try c.decodeIfPresent(Double.self, forKey: .sd)
        momentsWithheld = try c.decodeIfPresent(String.self, forKey: .momentsWithheld)
        guard (mean == nil) == (sd == nil) else {
            throw DecodingError.dataCorruptedError(forKey: .sd, in: c, debugDescription: "mean and sd come together or not at all")
        }
        if let mean, let sd {
            guard type == .numeric, mean.isFinite, sd.isFinite, sd >= 0 else {
                throw DecodingError.dataCorruptedError(forKey: .sd, in: c, debugDescription: "moments of a numeric variable: a finite mean and a finite sd ≥ 0")
            }
            guard case .exact(let n)? = nonMissing, n >= 2 else {
                throw DecodingError.dataCorruptedError(forKey: .nonMissing, in: c, debugDescription: "moments need an exact count n of at least 2")
            }
        }
        if case .exact(let n)? = nonMissing, n < 0 {
            throw DecodingError.dataCorruptedError(forKey: .nonMissing, in: c, debugDescription: "a count is not negative")
        }
    }
}

public struct SiteDescription: Codable, Sendable, Equatable {
    public var site: String
    public var dataset: String
    public var rows: Int
    public var variables: [VariableDescription]
    /// The keyed hashes asked for in the describe request, if any.
    public var levelHashes: LevelHashes?
    enum CodingKeys: String, CodingKey { case site, dataset, rows, variables, levelHashes = "level_hashes" }
    public init(site: String, dataset: String, rows: Int, variables: [VariableDescription], levelHashes: LevelHashes? = nil) {
        self.site = site; self.dataset = dataset; self.rows = rows; self.variables = variables; self.levelHashes = levelHashes
    }
}

/// A site's keyed hashes of variables' codes: for each variable, the
/// `LevelHasher` hash of every distinct non-missing value among all rows of
/// the dataset (whatever the model, its filter or its complete cases), sorted,
/// without counts. Variables the site may not use, does not have, or will not
/// hash (numbers that are not whole: measurements, not codes) have no entry.
public struct LevelHashes: Codable, Sendable, Equatable {
    /// The request's salt, echoed so the audit log and the coordinator see which key was used.
    public var salt: String
    public var variables: [String: [String]]
    enum CodingKeys: String, CodingKey { case salt, variables }
    public init(salt: String, variables: [String: [String]]) { self.salt = salt; self.variables = variables }
}

/// One combination of missing model variables and how many rows have it.
public struct MissingPattern: Codable, Sendable, Equatable {
    /// The model variables missing together (empty: complete rows).
    public var missing: [String]
    public var count: DisclosedCount
    enum CodingKeys: String, CodingKey { case missing, count }
    public init(missing: [String], count: DisclosedCount) { self.missing = missing; self.count = count }
}

/// What a site reports about the rows a model uses.
public struct SiteSummary: Codable, Sendable, Equatable {
    public var rows: Int
    public var used: Int
    /// Missing values per model variable (among all rows).
    public var missing: [String: DisclosedCount]
    /// Levels of each random-effects term's grouping factor among used rows, in model term order.
    public var groups: [Int]
    /// Missing-data patterns over the model's variables (counts below the
    /// site's min_cell suppressed).
    public var patterns: [MissingPattern]?
    /// Sums over used rows of each fixed-effects column (for averages such as
    /// the covariate profile of response-scale estimates).
    public var columnSums: [Double]?
    /// Σ log w over used rows when the model has prior weights (LMMs).
    public var logWeightSum: Double?
    /// Sums of squares over used rows of each fixed-effects column: with
    /// `columnSums`, each column's spread, so that diagnostics (separation,
    /// bad scaling) do not depend on a covariate's units.
    public var columnSquareSums: [Double]?
    /// Multiple imputation: values the site imputed per variable (counts
    /// below min_cell suppressed). Absent without imputation.
    public var imputed: [String: DisclosedCount]?
    /// Multiple imputation: per variable, the mean of its observed and of its
    /// imputed values, where both counts reach min_rows and min_cell.
    public var imputedMeans: [String: ImputedMeans]?
    /// Models with crossed factors (ModelSpec.crossedFactors, in that
    /// order): the agreed level indices present among the used rows,
    /// ascending; each has at least min_cell rows here. The site's leading
    /// columns of [X y] are these levels' effects (r per level).
    public var crossedLevels: [[Int]]?
    enum CodingKeys: String, CodingKey {
        case rows, used, missing, groups, patterns, columnSums = "column_sums", logWeightSum = "log_weight_sum"
        case columnSquareSums = "column_square_sums", imputed, imputedMeans = "imputed_means", crossedLevels = "crossed_levels"
    }
    public init(rows: Int, used: Int, missing: [String: DisclosedCount], groups: [Int],
                patterns: [MissingPattern]? = nil, columnSums: [Double]? = nil) {
        self.rows = rows; self.used = used; self.missing = missing; self.groups = groups
        self.patterns = patterns; self.columnSums = columnSums
    }
    /// Refuses counts no site can have (negative, more used than rows).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rows = try c.decode(Int.self, forKey: .rows)
        used = try c.decode(Int.self, forKey: .used)
        missing = try c.decode([String: DisclosedCount].self, forKey: .missing)
        groups = try c.decode([Int].self, forKey: .groups)
        patterns = try c.decodeIfPresent([MissingPattern].self, forKey: .patterns)
        columnSums = try c.decodeIfPresent([Double].self, forKey: .columnSums)
        logWeightSum = try c.decodeIfPresent(Double.self, forKey: .logWeightSum)
        columnSquareSums = try c.decodeIfPresent([Double].self, forKey: .columnSquareSums)
        imputed = try c.decodeIfPresent([String: DisclosedCount].self, forKey: .imputed)
        imputedMeans = try c.decodeIfPresent([String: ImputedMeans].self, forKey: .imputedMeans)
        crossedLevels = try c.decodeIfPresent([[Int]].self, forKey: .crossedLevels)
        func fail(_ key: CodingKeys, _ why: String) -> ProtocolError {
            .inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why)
        }
        guard (0...ProtocolLimits.maxRows).contains(rows) else { throw fail(.rows, "is out of range") }
        guard (0...rows).contains(used) else { throw fail(.used, "is not between 0 and rows") }
        guard groups.allSatisfy({ (0...ProtocolLimits.maxGroupLevels).contains($0) }) else { throw fail(.groups, "holds a count out of range") }
        if let cl = crossedLevels, !cl.allSatisfy({ l in l.allSatisfy { $0 >= 0 } && zip(l, l.dropFirst()).allSatisfy { $0 < $1 } }) {
            throw fail(.crossedLevels, "must list ascending, distinct, non-negative level indices")
        }
    }
}

public struct PrepareReply: Codable, Sendable, Equatable {
    public var session: String
    public var summary: SiteSummary
    /// The θ-free sums, sent only when every term is grouped by the site
    /// (then the coordinator iterates alone and the fit needs one round).
    public var blocks: SiteBlocks?
    /// LMMs with crossed factors and within-site terms: A_k =
    /// [Z_G X y]ᵀ[Z_G X y] (as blocks without own effects), when the site
    /// offers the low-rank evaluation (CrossedLowRankMessages.swift).
    public var crossedSums: SiteBlocks? = nil
    /// GLMMs with crossed factors: m_k, the site's own effects, when it
    /// answers `crossed_form: "level"` (CrossedGLMMMessages.swift); absent
    /// when it answers the dense form only.
    public var crossedLevelForm: Int? = nil
    /// The answer line to the request's `first_evaluate`, as the site would
    /// have sent it alone (an error answer included); absent when the
    /// request had none, or when the site sends θ-free sums (`blocks`,
    /// `crossed_sums`, `crossed_level_form`: then the fit asks differently),
    /// or when it would not fit the site's answer limit.
    public var firstAnswer: String? = nil
    enum CodingKeys: String, CodingKey { case session, summary, blocks, crossedSums = "crossed_sums", crossedLevelForm = "crossed_level_form", firstAnswer = "first_answer" }
    public init(session: String, summary: SiteSummary, blocks: SiteBlocks?) {
        self.session = session; self.summary = summary; self.blocks = blocks
    }
    /// The blocks travel as `WireSiteBlocks`, checked as they are decoded.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        summary = try c.decode(SiteSummary.self, forKey: .summary)
        blocks = try c.decodeIfPresent(WireSiteBlocks.self, forKey: .blocks)?.blocks
        crossedSums = try c.decodeIfPresent(WireSiteBlocks.self, forKey: .crossedSums)?.blocks
        if let s = crossedSums, s.first != nil || s.tailDimension != 0 {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.crossedSums]),
                                             reason: "must hold [Z_G X y]ᵀ[Z_G X y] only (no first factor, no tail)")
        }
        crossedLevelForm = try c.decodeIfPresent(Int.self, forKey: .crossedLevelForm)
        if let m = crossedLevelForm, !(0...ProtocolLimits.maxCrossedOwnEffects).contains(m) {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.crossedLevelForm]), reason: "is out of range")
        }
        firstAnswer = try c.decodeIfPresent(String.self, forKey: .firstAnswer)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(session, forKey: .session)
        try c.encode(summary, forKey: .summary)
        try c.encodeIfPresent(blocks.map(WireSiteBlocks.init), forKey: .blocks)
        try c.encodeIfPresent(crossedSums.map(WireSiteBlocks.init), forKey: .crossedSums)
        try c.encodeIfPresent(crossedLevelForm, forKey: .crossedLevelForm)
        try c.encodeIfPresent(firstAnswer, forKey: .firstAnswer)
    }
}

/// A matrix of jets on the wire.
public struct WireJetMatrix: Codable, Sendable, Equatable {
    public var rows: Int
    public var cols: Int
    public var parameters: Int
    public var order: Int
    /// The entries' jets as sent: every entry column-major, or with `form`
    /// "lower" the entries (i, j), i ≥ j, column by column.
    public var values: [Double]
    /// Absent: every entry. "lower": a square matrix sent as its lower
    /// triangle, read back with each entry (j, i) equal to (i, j) (a Schur
    /// complement, whose lower triangle is what the coordinator reads).
    public var form: String? = nil
    enum CodingKeys: String, CodingKey { case rows, cols, parameters, order, values, form }
    public static let lowerForm = "lower"
    public init(_ m: JetMatrix) {
        rows = m.rows; cols = m.cols; parameters = m.space.parameters; order = m.space.order; values = m.storage
    }
    /// With `lower`, a square matrix goes as its lower triangle.
    public init(_ m: JetMatrix, lower: Bool) {
        self.init(m)
        guard lower, rows == cols else { return }
        let w = m.space.width
        var packed: [Double] = []
        packed.reserveCapacity(rows * (rows + 1) / 2 * w)
        for j in 0..<cols { packed.append(contentsOf: m.storage[m.offset(j, j)..<m.offset(0, j + 1)]) }
        values = packed
        form = Self.lowerForm
    }
    /// Refuses a shape outside `ProtocolLimits`, an unknown form, or values that do not fill the shape.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rows = try c.decode(Int.self, forKey: .rows)
        cols = try c.decode(Int.self, forKey: .cols)
        parameters = try c.decode(Int.self, forKey: .parameters)
        order = try c.decode(Int.self, forKey: .order)
        values = try c.decode([Double].self, forKey: .values)
        form = try c.decodeIfPresent(String.self, forKey: .form)
        if let why = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath), reason: why) }
    }
    /// Why the shape, form and values do not fit, if they do not.
    var problem: String? {
        guard ProtocolLimits.derivativeOrders.contains(order), (0...ProtocolLimits.maxJetParameters).contains(parameters),
              (0...ProtocolLimits.maxJetDimension).contains(rows), (0...ProtocolLimits.maxJetDimension).contains(cols) else {
            return "has a shape out of range"
        }
        if let form {
            guard form == Self.lowerForm else { return "has form \"\(form.prefix(40))\"; the forms are \"lower\" or none" }
            guard rows == cols else { return "is sent as a lower triangle but is not square" }
        }
        let entries = form == nil ? rows * cols : rows * (rows + 1) / 2
        let needed = entries * JetSpace.width(parameters: parameters, order: order)
        guard values.count == needed else { return "has \(values.count) values; its shape needs \(needed)" }
        guard values.allSatisfy(\.isFinite) else { return "holds a non-finite number" }
        return nil
    }
    /// The full matrix (a lower triangle mirrored).
    public func jetMatrix() throws -> JetMatrix {
        if let why = problem { throw ProtocolError.inconsistent(field: "schur", reason: why) }
        var m = JetMatrix(rows: rows, cols: cols, space: JetSpace(parameters: parameters, order: order))
        guard form != nil else { m.storage = values; return m }
        let w = m.space.width
        var k = 0
        for j in 0..<cols {
            for i in j..<rows {
                let a = m.offset(i, j), b = m.offset(j, i)
                for t in 0..<w { m.storage[a + t] = values[k + t]; m.storage[b + t] = values[k + t] }
                k += w
            }
        }
        return m
    }
}

public struct ContributionReply: Codable, Sendable, Equatable {
    /// The contribution at one more point of a batched evaluate request
    /// (`EvaluateRequest.thetas`), in the request's order.
    public struct Point: Codable, Sendable, Equatable {
        public var schur: WireJetMatrix
        public var logDet: [Double]
        enum CodingKeys: String, CodingKey { case schur, logDet = "log_det" }
        public init(_ c: LMMContribution, lower: Bool = false) { schur = WireJetMatrix(c.schur, lower: lower); logDet = c.logDet.storage }
    }
    public var session: String
    public var rows: Int
    public var schur: WireJetMatrix
    public var logDet: [Double]
    /// The answers at a batched request's extra points (absent otherwise).
    public var points: [Point]?
    enum CodingKeys: String, CodingKey { case session, rows, schur, logDet = "log_det", points }
    /// `lower`: the Schur complements go as their lower triangles (the prepare's `schur_form`).
    public init(session: String, contribution c: LMMContribution, lower: Bool = false) {
        self.session = session; rows = c.rows; schur = WireJetMatrix(c.schur, lower: lower); logDet = c.logDet.storage
    }
    /// The first contribution answers `theta`, the others each of `thetas`.
    public init(session: String, contributions c: [LMMContribution], lower: Bool = false) {
        self.init(session: session, contribution: c[0], lower: lower)
        if c.count > 1 { points = c.dropFirst().map { Point($0, lower: lower) } }
    }
    /// Refuses a row count out of range, a log_det that is not one jet of the
    /// Schur complement's shape, and extra points of another shape or more
    /// than a request may ask for.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        schur = try c.decode(WireJetMatrix.self, forKey: .schur)
        logDet = try c.decode([Double].self, forKey: .logDet)
        points = try c.decodeIfPresent([Point].self, forKey: .points)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }
    var problem: (CodingKeys, String)? {
        guard (0...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        let width = JetSpace.width(parameters: schur.parameters, order: schur.order)
        guard logDet.count == width else { return (.logDet, "has \(logDet.count) values; one jet of the schur's shape has \(width)") }
        guard logDet.allSatisfy(\.isFinite) else { return (.logDet, "holds a non-finite number") }
        if let points {
            guard (1...ProtocolLimits.maxExtraThetaPoints).contains(points.count) else { return (.points, "has \(points.count) points; between 1 and \(ProtocolLimits.maxExtraThetaPoints) are allowed") }
            for p in points {
                guard p.schur.rows == schur.rows, p.schur.cols == schur.cols, p.schur.parameters == schur.parameters,
                      p.schur.order == schur.order, p.schur.form == schur.form else { return (.points, "holds a point of another shape than schur") }
                guard p.logDet.count == width, p.logDet.allSatisfy(\.isFinite) else { return (.points, "holds a log_det that is not one finite jet") }
            }
        }
        return nil
    }
    /// Every contribution of the answer: at `theta`, then at each extra point.
    public func contributions() throws -> [LMMContribution] {
        var out = [try contribution()]
        for p in points ?? [] {
            var l = ScalarJet(space: JetSpace(parameters: p.schur.parameters, order: p.schur.order))
            l.storage = p.logDet
            out.append(LMMContribution(schur: try p.schur.jetMatrix(), logDet: l, rows: rows))
        }
        return out
    }
    public func contribution() throws -> LMMContribution {
        let s = try schur.jetMatrix()
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: key.stringValue, reason: why) }
        var l = ScalarJet(space: s.space)
        l.storage = logDet
        return LMMContribution(schur: s, logDet: l, rows: rows)
    }
}

/// One IRLS step of a flat GLM at a site (R's glm.fit, federated): at the
/// working point (β, or the family's start when the request had no β) the
/// site's deviance, XᵀWX and XᵀWz over its rows.
public struct GLMStepReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    public var deviance: Double
    /// XᵀWX, p×p column-major.
    public var information: [Double]
    /// XᵀWz (z the working response less the offset).
    public var working: [Double]
    enum CodingKeys: String, CodingKey { case session, rows, deviance, information, working }
    public init(session: String, rows: Int, deviance: Double, information: [Double], working: [Double]) {
        self.session = session; self.rows = rows; self.deviance = deviance; self.information = information; self.working = working
    }
    /// Refuses a row count or a width out of range, a non-square or
    /// asymmetric information matrix, and non-finite numbers.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        deviance = try c.decode(Double.self, forKey: .deviance)
        information = try c.decode([Double].self, forKey: .information)
        working = try c.decode([Double].self, forKey: .working)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }
    var problem: (CodingKeys, String)? {
        guard (0...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        guard deviance.isFinite, deviance >= 0 else { return (.deviance, "is not a finite non-negative number") }
        let p = working.count
        guard (1...ProtocolLimits.maxFixedColumns).contains(p) else { return (.working, "has a length out of range") }
        guard working.allSatisfy(\.isFinite) else { return (.working, "holds a non-finite number") }
        guard information.count == p * p else { return (.information, "has \(information.count) values; p×p needs \(p * p)") }
        guard information.allSatisfy(\.isFinite) else { return (.information, "holds a non-finite number") }
        for a in 0..<p { for b in 0..<a where information[a + b * p] != information[b + a * p] { return (.information, "is not symmetric") } }
        return nil
    }
}

/// A site's GLMM objective D_k with its derivatives in (θ, β).
public struct GLMMContributionReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    public var parameters: Int
    public var order: Int
    /// Value, gradient, upper-triangle Hessian (the jet layout).
    public var objective: [Double]
    enum CodingKeys: String, CodingKey { case session, rows, parameters, order, objective }
    public init(session: String, rows: Int, objective: ScalarJet) {
        self.session = session; self.rows = rows
        parameters = objective.space.parameters; order = objective.space.order; self.objective = objective.storage
    }
    /// Refuses a shape outside `ProtocolLimits` or an objective that is not one jet of it.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        parameters = try c.decode(Int.self, forKey: .parameters)
        order = try c.decode(Int.self, forKey: .order)
        objective = try c.decode([Double].self, forKey: .objective)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }
    var problem: (CodingKeys, String)? {
        guard (0...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        guard ProtocolLimits.derivativeOrders.contains(order) else { return (.order, "is out of range") }
        guard (0...ProtocolLimits.maxJetParameters).contains(parameters) else { return (.parameters, "is out of range") }
        let width = JetSpace.width(parameters: parameters, order: order)
        guard objective.count == width else { return (.objective, "has \(objective.count) values; its shape needs \(width)") }
        guard objective.allSatisfy(\.isFinite) else { return (.objective, "holds a non-finite number") }
        return nil
    }
    public func jet() throws -> ScalarJet {
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: key.stringValue, reason: why) }
        var j = ScalarJet(space: JetSpace(parameters: parameters, order: order))
        j.storage = objective
        return j
    }
}

public struct FinalizeReply: Codable, Sendable, Equatable {
    public var session: String
    /// Conditional modes of the site-level effects (nil when no term is grouped by site).
    public var effects: [Double]?
    /// Their conditional covariance, r×r column-major.
    public var conditionalCovariance: [Double]?
    /// The site's own (no-pooling) estimate of the same effects, when defined.
    public var ownEffects: [Double]?
    /// GLMMs: Σ −2 log p(y | μ = y) over the site's rows (the constant lme4's
    /// nAGQ > 1 objective leaves out), so reports can show lme4's figure too.
    public var saturatedDeviance: Double?
    /// Flat models clustered by site: the site's score Σᵢ xᵢ·estfunᵢ at β (p values).
    public var score: [Double]?
    /// Flat models clustered within the site: Σ_c s_c s_cᵀ over the site's
    /// clusters (p×p column-major), and their number.
    public var scoreCrossProducts: [Double]?
    public var clusters: Int?
    /// `--marginal`: the site's population-averaged sums (MarginalReply).
    public var marginal: MarginalReply?
    enum CodingKeys: String, CodingKey {
        case session, effects, conditionalCovariance = "conditional_covariance", ownEffects = "own_effects"
        case saturatedDeviance = "saturated_deviance", score, scoreCrossProducts = "score_cross_products", clusters, marginal
    }
    public init(session: String, effects: [Double]?, conditionalCovariance: [Double]?, ownEffects: [Double]? = nil,
                saturatedDeviance: Double? = nil) {
        self.session = session; self.effects = effects; self.conditionalCovariance = conditionalCovariance
        self.ownEffects = ownEffects; self.saturatedDeviance = saturatedDeviance
    }
    /// Refuses effects, covariance and own estimates that do not fit together
    /// (r effects, r×r covariance, r own estimates), a non-finite number, a
    /// cluster count out of range, and score cross products that are not a
    /// square matrix or come without their count; whether r and p are the
    /// model's dimensions is the coordinator's check.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        effects = try c.decodeIfPresent([Double].self, forKey: .effects)
        conditionalCovariance = try c.decodeIfPresent([Double].self, forKey: .conditionalCovariance)
        ownEffects = try c.decodeIfPresent([Double].self, forKey: .ownEffects)
        saturatedDeviance = try c.decodeIfPresent(Double.self, forKey: .saturatedDeviance)
        score = try c.decodeIfPresent([Double].self, forKey: .score)
        scoreCrossProducts = try c.decodeIfPresent([Double].self, forKey: .scoreCrossProducts)
        clusters = try c.decodeIfPresent(Int.self, forKey: .clusters)
        marginal = try c.decodeIfPresent(MarginalReply.self, forKey: .marginal)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }
    var problem: (CodingKeys, String)? {
        let r = effects?.count ?? 0
        guard r <= ProtocolLimits.maxThetaCount else { return (.effects, "has \(r) values; a site has at most \(ProtocolLimits.maxThetaCount) site-level effects") }
        if let v = conditionalCovariance, v.count != r * r {
            return (.conditionalCovariance, "has \(v.count) values; \(r) effects need \(r * r)")
        }
        if let o = ownEffects, o.count != r { return (.ownEffects, "has \(o.count) values; there are \(r) effects") }
        for (key, values) in [(CodingKeys.effects, effects), (.conditionalCovariance, conditionalCovariance), (.ownEffects, ownEffects)] {
            if let values, !values.allSatisfy(\.isFinite) { return (key, "holds a non-finite number") }
        }
        if let d = saturatedDeviance, !d.isFinite { return (.saturatedDeviance, "is not finite") }
        if let s = score, !(s.count <= ProtocolLimits.maxFixedColumns && s.allSatisfy(\.isFinite)) {
            return (.score, "has a length out of range or a non-finite number")
        }
        if let m = scoreCrossProducts {
            let p = Int(Double(m.count).squareRoot())
            guard p * p == m.count, p <= ProtocolLimits.maxFixedColumns, m.allSatisfy(\.isFinite) else {
                return (.scoreCrossProducts, "is not a finite square matrix of at most \(ProtocolLimits.maxFixedColumns) columns")
            }
            guard clusters != nil else { return (.clusters, "is missing beside score_cross_products") }
        }
        if let g = clusters, !(1...ProtocolLimits.maxRows).contains(g) { return (.clusters, "is out of range") }
        return nil
    }
}

/// An error answer. The message never contains data values.
public struct ErrorReply: Codable, Sendable, Equatable, Error, CustomStringConvertible {
    public var code: ErrorCode
    public var fatal: Bool
    public var message: String
    enum CodingKeys: String, CodingKey { case code, fatal, message }
    public init(code: ErrorCode, fatal: Bool, message: String) { self.code = code; self.fatal = fatal; self.message = message }
    public var description: String { "\(message) [\(code)]" }
}

public enum Reply: Sendable, Equatable {
    case described(SiteDescription)
    case prepared(PrepareReply)
    case contribution(ContributionReply)
    case glmmContribution(GLMMContributionReply)
    case glmStep(GLMStepReply)
    case geeStep(GEEStepReply)
    case glmmCrossed(CrossedGLMMReply)
    case lowRankContribution(LowRankContributionReply)
    case finalized(FinalizeReply)
    case pong
    case error(ErrorReply)
    case batched(BatchReply)

    public var typeName: String {
        switch self {
        case .described: return "described"
        case .prepared: return "prepared"
        case .contribution: return "contribution"
        case .glmmContribution: return "glmm_contribution"
        case .glmStep: return "glm_step"
        case .geeStep: return "gee_step"
        case .glmmCrossed: return "glmm_crossed"
        case .lowRankContribution: return "low_rank_contribution"
        case .finalized: return "finalized"
        case .pong: return "pong"
        case .error: return "error"
        case .batched: return "batched"
        }
    }
}

// MARK: - Receipts

/// The head of a site's audit chain right after one of its answers was
/// logged, signed with the key of the agent's TLS certificate. The agent
/// appends it to every answer line as `"receipt"` (the audit log stores the
/// line without it: a receipt is the entry's own sequence number and hash).
///
/// Why: the audit log's hash chain shows edits only against a head recorded
/// elsewhere; a site administrator could rewrite the log and recompute every
/// hash. The coordinator keeps each receipt, so a rewritten log no longer
/// matches what the agent signed at the time.
public struct Receipt: Codable, Sendable, Equatable {
    /// The site that signed (its configured name).
    public var site: String
    /// Sequence number of the answer's audit entry.
    public var seq: Int
    /// That entry's hash (the chain head after the answer), lowercase hex.
    public var hash: String
    /// SHA-256 fingerprint of the certificate whose key signed.
    public var certificate: String
    /// Base64 DER signature (ECDSA with SHA-256 for fedmix's P-256 keys)
    /// over `Receipt.signedBytes(site:seq:hash:)`.
    public var signature: String
    enum CodingKeys: String, CodingKey { case site, seq, hash, certificate, signature }

    public init(site: String, seq: Int, hash: String, certificate: String, signature: String) {
        self.site = site; self.seq = seq; self.hash = hash; self.certificate = certificate; self.signature = signature
    }

    /// What is signed: netstrings of "fedmix-receipt-1", the site, the
    /// sequence number in decimal and the hash (netstring(s) = UTF-8 byte
    /// count, ":", s, ",").
    public static func signedBytes(site: String, seq: Int, hash: String) -> [UInt8] {
        var out: [UInt8] = []
        for field in ["fedmix-receipt-1", site, String(seq), hash] {
            out.append(contentsOf: String(field.utf8.count).utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: field.utf8)
            out.append(UInt8(ascii: ","))
        }
        return out
    }

    public var signedBytes: [UInt8] { Self.signedBytes(site: site, seq: seq, hash: hash) }
}

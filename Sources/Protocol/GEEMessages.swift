// The wire form of GEE (fedmix gee): what the model specification adds, the
// point an evaluate request carries, and a site's answer. What the answer
// reveals is in docs/PRIVACY.md ("GEE").

import Math

/// A GEE fit's working correlation and, for ar1, the variable that orders
/// rows within a cluster. Carried by ModelSpec (`gee`).
public struct GEESpec: Sendable, Hashable, Codable {
    public var correlation: WorkingCorrelation
    public var order: String?
    enum CodingKeys: String, CodingKey { case correlation, order }
    public init(correlation: WorkingCorrelation, order: String? = nil) { self.correlation = correlation; self.order = order }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        correlation = try c.decodeRaw(WorkingCorrelation.self, forKey: .correlation)
        order = try c.decodeIfPresent(String.self, forKey: .order)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(correlation.rawValue, forKey: .correlation)
        try c.encodeIfPresent(order, forKey: .order)
    }
}

/// The working parameters of one GEE round (β travels as EvaluateRequest.beta).
public struct GEEPoint: Sendable, Equatable, Codable {
    /// The working correlation's α (0 for independence).
    public var alpha: Double
    /// The scale φ.
    public var scale: Double
    /// The final bread B = (Σ DᵀV⁻¹D)⁻¹, p×p column-major: asks for the
    /// leverage-corrected meats (Mancl-DeRouen, Kauermann-Carroll).
    public var bread: [Double]?
    enum CodingKeys: String, CodingKey { case alpha, scale, bread }
    public init(alpha: Double, scale: Double, bread: [Double]? = nil) { self.alpha = alpha; self.scale = scale; self.bread = bread }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        alpha = try c.decode(Double.self, forKey: .alpha)
        scale = try c.decode(Double.self, forKey: .scale)
        bread = try c.decodeIfPresent([Double].self, forKey: .bread)
        guard alpha.isFinite, alpha > -1, alpha < 1 else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.alpha]), reason: "must be a finite number between -1 and 1")
        }
        guard scale.isFinite, scale > 0 else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.scale]), reason: "must be a finite positive number")
        }
        if let b = bread, !(b.count <= ProtocolLimits.maxFixedColumns * ProtocolLimits.maxFixedColumns && b.allSatisfy(\.isFinite)) {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.bread]), reason: "must hold at most p×p finite numbers")
        }
    }
}

/// A site's sums for one GEE round (GEESite.sums), over its clusters.
public struct GEEStepReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    public var clusters: Int
    public var information: [Double]
    public var score: [Double]
    public var meat: [Double]
    public var pearsonSquares: Double
    public var alphaInformation: Double
    public var alphaCross: Double
    public var alphaFitted: Double
    public var validMean: Bool
    public var meatMD: [Double]?
    public var meatKC: [Double]?
    enum CodingKeys: String, CodingKey {
        case session, rows, clusters, information, score, meat, pearsonSquares = "pearson_squares"
        case alphaInformation = "alpha_information", alphaCross = "alpha_cross", alphaFitted = "alpha_fitted"
        case validMean = "valid_mean", meatMD = "meat_md", meatKC = "meat_kc"
    }

    public init(session: String, sums s: GEESums) {
        self.session = session; rows = s.rows; clusters = s.clusters; information = s.information; score = s.score; meat = s.meat
        pearsonSquares = s.pearsonSquares; alphaInformation = s.alphaInformation; alphaCross = s.alphaCross
        alphaFitted = s.alphaFitted; validMean = s.validMean; meatMD = s.meatMD; meatKC = s.meatKC
    }

    /// Refuses counts out of range, matrices that are not p×p (or not
    /// symmetric), and non-finite numbers, naming the field.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        clusters = try c.decode(Int.self, forKey: .clusters)
        information = try c.decode([Double].self, forKey: .information)
        score = try c.decode([Double].self, forKey: .score)
        meat = try c.decode([Double].self, forKey: .meat)
        pearsonSquares = try c.decode(Double.self, forKey: .pearsonSquares)
        alphaInformation = try c.decode(Double.self, forKey: .alphaInformation)
        alphaCross = try c.decode(Double.self, forKey: .alphaCross)
        alphaFitted = try c.decode(Double.self, forKey: .alphaFitted)
        validMean = try c.decode(Bool.self, forKey: .validMean)
        meatMD = try c.decodeIfPresent([Double].self, forKey: .meatMD)
        meatKC = try c.decodeIfPresent([Double].self, forKey: .meatKC)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }

    var problem: (CodingKeys, String)? {
        guard (1...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        guard (1...rows).contains(clusters) else { return (.clusters, "is out of range (1 to rows)") }
        let p = score.count
        guard (1...ProtocolLimits.maxFixedColumns).contains(p) else { return (.score, "has a length out of range") }
        guard score.allSatisfy(\.isFinite) else { return (.score, "holds a non-finite number") }
        for (key, m) in [(CodingKeys.information, information), (.meat, meat), (.meatMD, meatMD ?? meat), (.meatKC, meatKC ?? meat)] {
            guard m.count == p * p else { return (key, "has \(m.count) values; p×p needs \(p * p)") }
            guard m.allSatisfy(\.isFinite) else { return (key, "holds a non-finite number") }
        }
        guard pearsonSquares.isFinite, pearsonSquares >= 0 else { return (.pearsonSquares, "is not a finite non-negative number") }
        guard alphaInformation.isFinite, alphaInformation >= 0 else { return (.alphaInformation, "is not a finite non-negative number") }
        guard alphaCross.isFinite else { return (.alphaCross, "is not finite") }
        guard alphaFitted.isFinite else { return (.alphaFitted, "is not finite") }
        return nil
    }
}

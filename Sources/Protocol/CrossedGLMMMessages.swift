// GLMMs with factors crossed across sites (README, "Crossed factors in
// GLMMs"): an evaluate round carries points (θ, β, b_G at the site's own
// levels); the site answers each with its profiled penalized deviance, its
// gradient and Hessian in b_G, and log|H_ss| (GLMMCrossedSite).

/// One point of a crossed GLMM round.
public struct CrossedGLMMPoint: Codable, Sendable, Equatable {
    public var theta: [Double]
    public var beta: [Double]
    /// The crossed effects b_G = Λ_G u_G at the site's leading columns (its
    /// crossed levels in the agreed coding, ascending, r per level).
    public var effects: [Double]
    enum CodingKeys: String, CodingKey { case theta, beta, effects }
    public init(theta: [Double], beta: [Double], effects: [Double]) { self.theta = theta; self.beta = beta; self.effects = effects }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        theta = try c.decode([Double].self, forKey: .theta)
        beta = try c.decode([Double].self, forKey: .beta)
        effects = try c.decode([Double].self, forKey: .effects)
        for (key, v) in [(CodingKeys.theta, theta), (.beta, beta), (.effects, effects)] where !v.allSatisfy(\.isFinite) {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: "holds a non-finite number")
        }
    }
}

/// The forms a site's Hessian in b_G can take (EvaluateRequest.crossedForm).
public enum CrossedGLMMForm: String, Sendable, CaseIterable {
    /// The upper triangle of ∇²P_k: q_k(q_k+1)/2 numbers.
    case dense
    /// ½∇²P_k = A_k − V'V'ᵀ: A_k's nonzero column profile and V' (q_k × m_k),
    /// from a site that offered it at prepare (PrepareReply.crossedLevelForm;
    /// GLMMCrossedLevelForm).
    case level
}

/// A site's answer to one crossed GLMM point.
public struct CrossedGLMMPiece: Codable, Sendable, Equatable {
    public var value: Double
    public var gradient: [Double]
    /// The dense form: the upper triangle, column by column (H[0,0], H[0,1],
    /// H[1,1], H[0,2], …): width·(width+1)/2 values. Empty in the level form.
    public var hessian: [Double]
    public var logDet: Double
    /// The level form: column j of A_k's upper triangle holds rows
    /// aStart[j]...j, stored column after column in `a`; V' is q_k × m_k,
    /// column-major, with m_k = ownEffects.
    public var aStart: [Int]?
    public var a: [Double]?
    public var coupling: [Double]?
    public var ownEffects: Int?
    enum CodingKeys: String, CodingKey {
        case value, gradient, hessian, logDet = "log_det", aStart = "a_start", a, coupling = "v", ownEffects = "own_effects"
    }
    public init(value: Double, gradient: [Double], hessian: [Double], logDet: Double) {
        self.value = value; self.gradient = gradient; self.hessian = hessian; self.logDet = logDet
    }
    public init(value: Double, gradient: [Double], aStart: [Int], a: [Double], coupling: [Double], ownEffects: Int, logDet: Double) {
        self.value = value; self.gradient = gradient; hessian = []; self.logDet = logDet
        self.aStart = aStart; self.a = a; self.coupling = coupling; self.ownEffects = ownEffects
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        value = try c.decode(Double.self, forKey: .value)
        gradient = try c.decode([Double].self, forKey: .gradient)
        logDet = try c.decode(Double.self, forKey: .logDet)
        aStart = try c.decodeIfPresent([Int].self, forKey: .aStart)
        a = try c.decodeIfPresent([Double].self, forKey: .a)
        coupling = try c.decodeIfPresent([Double].self, forKey: .coupling)
        ownEffects = try c.decodeIfPresent(Int.self, forKey: .ownEffects)
        hessian = aStart == nil ? try c.decode([Double].self, forKey: .hessian) : []
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(value, forKey: .value)
        try c.encode(gradient, forKey: .gradient)
        if aStart == nil { try c.encode(hessian, forKey: .hessian) }
        try c.encode(logDet, forKey: .logDet)
        try c.encodeIfPresent(aStart, forKey: .aStart)
        try c.encodeIfPresent(a, forKey: .a)
        try c.encodeIfPresent(coupling, forKey: .coupling)
        try c.encodeIfPresent(ownEffects, forKey: .ownEffects)
    }

    /// Whether the piece is one well-formed answer of its form for a
    /// gradient's width q: the upper triangle, or a profile with
    /// aStart[j] in 0...j, its values, and q × ownEffects couplings; all finite.
    public var isWellFormed: Bool {
        let q = gradient.count
        guard ([value, logDet] + gradient + hessian).allSatisfy(\.isFinite) else { return false }
        guard let aStart else { return hessian.count == q * (q + 1) / 2 && a == nil && coupling == nil && ownEffects == nil }
        guard hessian.isEmpty, let a, let coupling, let m = ownEffects, aStart.count == q, (0...ProtocolLimits.maxCrossedOwnEffects).contains(m),
              aStart.enumerated().allSatisfy({ (0...$0.offset).contains($0.element) }),
              a.count == aStart.enumerated().reduce(0, { $0 + $1.offset - $1.element + 1 }),
              coupling.count == q * m, (a + coupling).allSatisfy(\.isFinite) else { return false }
        return true
    }
}

/// `glmm_crossed`: one piece per point, in the request's order.
public struct CrossedGLMMReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    public var pieces: [CrossedGLMMPiece]
    enum CodingKeys: String, CodingKey { case session, rows, pieces }
    public init(session: String, rows: Int, pieces: [CrossedGLMMPiece]) { self.session = session; self.rows = rows; self.pieces = pieces }
    /// Refuses pieces that are not well formed (CrossedGLMMPiece.isWellFormed).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        pieces = try c.decode([CrossedGLMMPiece].self, forKey: .pieces)
        guard (1...ProtocolLimits.maxRows).contains(rows) else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.rows]), reason: "is out of range")
        }
        for p in pieces where !p.isWellFormed {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.pieces]),
                                             reason: "holds a piece whose Hessian is neither the upper triangle of its gradient's length nor a level form (a_start, a, v, own_effects) of it, or a non-finite number")
        }
    }
}

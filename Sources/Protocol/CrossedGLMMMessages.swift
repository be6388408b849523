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

/// A site's answer to one crossed GLMM point.
public struct CrossedGLMMPiece: Codable, Sendable, Equatable {
    public var value: Double
    public var gradient: [Double]
    /// The upper triangle, column by column (H[0,0], H[0,1], H[1,1], H[0,2], …):
    /// width·(width+1)/2 values.
    public var hessian: [Double]
    public var logDet: Double
    enum CodingKeys: String, CodingKey { case value, gradient, hessian, logDet = "log_det" }
    public init(value: Double, gradient: [Double], hessian: [Double], logDet: Double) {
        self.value = value; self.gradient = gradient; self.hessian = hessian; self.logDet = logDet
    }
}

/// `glmm_crossed`: one piece per point, in the request's order.
public struct CrossedGLMMReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    public var pieces: [CrossedGLMMPiece]
    enum CodingKeys: String, CodingKey { case session, rows, pieces }
    public init(session: String, rows: Int, pieces: [CrossedGLMMPiece]) { self.session = session; self.rows = rows; self.pieces = pieces }
    /// Refuses pieces that are not one width (gradient) and its upper
    /// triangle (Hessian) of finite numbers each.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        pieces = try c.decode([CrossedGLMMPiece].self, forKey: .pieces)
        guard (1...ProtocolLimits.maxRows).contains(rows) else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.rows]), reason: "is out of range")
        }
        for p in pieces {
            let q = p.gradient.count
            guard p.hessian.count == q * (q + 1) / 2, ([p.value, p.logDet] + p.gradient + p.hessian).allSatisfy(\.isFinite) else {
                throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.pieces]),
                                                 reason: "holds a piece whose Hessian is not the upper triangle of its gradient's length, or a non-finite number")
            }
        }
    }
}

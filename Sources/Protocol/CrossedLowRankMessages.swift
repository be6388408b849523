// LMMs with factors crossed with the sites and within-site terms (wards in
// hospitals), level by level (Math/CrossedLowRank.swift): the site sends
// A_k = [Z_G X y]ᵀ[Z_G X y] once with its prepare answer (`crossed_sums`)
// and, at each θ it is asked with `low_rank`, V_kᵀ = L_ss⁻¹Λ_LᵀZ_Lᵀ[Z_G X y]
// (one row per own effect of the site) and log|L_ss|², jets in its θ.
// What these reveal: docs/PRIVACY.md, "Crossed factors with within-site terms".

import Math

/// `low_rank_contribution`: V_kᵀ and log|L_ss|² at the request's θ.
public struct LowRankContributionReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    /// V_kᵀ: m_k × width, jets in the site's local θ.
    public var factor: WireJetMatrix
    public var logDet: [Double]
    enum CodingKeys: String, CodingKey { case session, rows, factor, logDet = "log_det" }
    public init(session: String, contribution c: LMMLowRankContribution) {
        self.session = session; rows = c.rows; factor = WireJetMatrix(c.factor); logDet = c.logDet.storage
    }
    /// Refuses a row count out of range and a log_det that is not one finite
    /// jet of the factor's shape (the factor checks its own shape).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        factor = try c.decode(WireJetMatrix.self, forKey: .factor)
        logDet = try c.decode([Double].self, forKey: .logDet)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }
    var problem: (CodingKeys, String)? {
        guard (0...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        let width = JetSpace.width(parameters: factor.parameters, order: factor.order)
        guard logDet.count == width, logDet.allSatisfy(\.isFinite) else { return (.logDet, "is not one finite jet of the factor's shape (\(width) values)") }
        return nil
    }
    public func contribution() throws -> LMMLowRankContribution {
        let f = try factor.jetMatrix()
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: key.stringValue, reason: why) }
        var l = ScalarJet(space: f.space)
        l.storage = logDet
        return LMMLowRankContribution(factor: f, logDet: l, rows: rows)
    }
}

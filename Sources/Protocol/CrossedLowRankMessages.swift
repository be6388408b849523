// LMMs with factors crossed with the sites and within-site terms (wards in
// hospitals), level by level (Math/CrossedLowRank.swift): the site sends
// A_k = [Z_G X y]ᵀ[Z_G X y] once with its prepare answer (`crossed_sums`)
// and, at each θ it is asked with `low_rank`, V_kᵀ = L_ss⁻¹Λ_LᵀZ_Lᵀ[Z_G X y]
// (one row per own effect of the site) and log|L_ss|², jets in its θ.
// What these reveal: docs/PRIVACY.md, "Crossed factors with within-site terms".

import Math

/// `low_rank_contribution`: V_kᵀ and log|L_ss|² at the request's θ.
/// V_kᵀ travels as its nonzero numbers: a ward's row is zero at the crossed
/// levels without rows in the ward, and its jets have no derivatives in the
/// other factors' θ (the same numbers, bit for bit, checked on decoding).
public struct LowRankContributionReply: Codable, Sendable, Equatable {
    public var session: String
    public var rows: Int
    /// V_kᵀ's shape: m_k × width, jets in the site's local θ to `order`.
    public var factorRows: Int
    public var factorCols: Int
    public var parameters: Int
    public var order: Int
    /// Positions (ascending) in the column-major jet storage, and their numbers.
    public var at: [Int]
    public var values: [Double]
    public var logDet: [Double]
    enum CodingKeys: String, CodingKey {
        case session, rows, factorRows = "factor_rows", factorCols = "factor_cols", parameters, order, at, values, logDet = "log_det"
    }
    public init(session: String, contribution c: LMMLowRankContribution) {
        self.session = session; rows = c.rows
        factorRows = c.factor.rows; factorCols = c.factor.cols; parameters = c.factor.space.parameters; order = c.factor.space.order
        let nonzero = c.factor.storage.indices.filter { c.factor.storage[$0].bitPattern != 0 }   // −0 is sent as itself
        at = nonzero; values = nonzero.map { c.factor.storage[$0] }
        logDet = c.logDet.storage
    }
    /// Refuses a row count or shape out of range, positions that are not
    /// ascending within the shape with one finite value each, and a log_det
    /// that is not one finite jet.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        session = try c.decode(String.self, forKey: .session)
        rows = try c.decode(Int.self, forKey: .rows)
        factorRows = try c.decode(Int.self, forKey: .factorRows)
        factorCols = try c.decode(Int.self, forKey: .factorCols)
        parameters = try c.decode(Int.self, forKey: .parameters)
        order = try c.decode(Int.self, forKey: .order)
        at = try c.decode([Int].self, forKey: .at)
        values = try c.decode([Double].self, forKey: .values)
        logDet = try c.decode([Double].self, forKey: .logDet)
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: why) }
    }
    var problem: (CodingKeys, String)? {
        guard (0...ProtocolLimits.maxRows).contains(rows) else { return (.rows, "is out of range") }
        guard ProtocolLimits.derivativeOrders.contains(order), (0...ProtocolLimits.maxJetParameters).contains(parameters) else {
            return (.order, "or parameters out of range")
        }
        guard (0...ProtocolLimits.maxJetDimension).contains(factorRows), (0...ProtocolLimits.maxJetDimension).contains(factorCols) else {
            return (.factorRows, "or factor_cols out of range")
        }
        let width = JetSpace.width(parameters: parameters, order: order), cells = factorRows * factorCols * width
        guard at.count == values.count, zip(at, at.dropFirst()).allSatisfy({ $0 < $1 }), at.allSatisfy({ (0..<cells).contains($0) }) else {
            return (.at, "needs ascending positions within the factor's \(cells) numbers, one value each")
        }
        guard values.allSatisfy(\.isFinite) else { return (.values, "holds a non-finite number") }
        guard logDet.count == width, logDet.allSatisfy(\.isFinite) else { return (.logDet, "is not one finite jet of the factor's shape (\(width) values)") }
        return nil
    }
    public func contribution() throws -> LMMLowRankContribution {
        if let (key, why) = problem { throw ProtocolError.inconsistent(field: key.stringValue, reason: why) }
        let space = JetSpace(parameters: parameters, order: order)
        var f = JetMatrix(rows: factorRows, cols: factorCols, space: space)
        for (k, v) in zip(at, values) { f.storage[k] = v }
        var l = ScalarJet(space: space)
        l.storage = logDet
        return LMMLowRankContribution(factor: f, logDet: l, rows: rows)
    }
}

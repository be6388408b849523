// The wire form of a GLMM's population-averaged effects (`--marginal`),
// carried by finalize: what the coordinator asks, and the site's sums
// (GLMMMarginal). What the answer reveals is in docs/PRIVACY.md.

import Math

/// Asks finalize for the marginal sums: Gauss-Hermite points, and which
/// fixed-effects columns are 0/1 factor columns (discrete change).
public struct MarginalRequest: Sendable, Equatable, Codable {
    public var points: Int
    public var discrete: [Bool]
    enum CodingKeys: String, CodingKey { case points, discrete }
    public init(points: Int, discrete: [Bool]) { self.points = points; self.discrete = discrete }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        points = try c.decode(Int.self, forKey: .points)
        discrete = try c.decode([Bool].self, forKey: .discrete)
        guard (1...100).contains(points) else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.points]), reason: "must be between 1 and 100")
        }
        guard discrete.count <= ProtocolLimits.maxFixedColumns else {
            throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [CodingKeys.discrete]), reason: "has more values than fixed-effects columns allowed")
        }
    }
}

/// A site's marginal sums over its rows: 1 + p values and their (1 + p)×p gradients in β.
public struct MarginalReply: Sendable, Equatable, Codable {
    public var rows: Int
    public var values: [Double]
    public var gradients: [Double]
    enum CodingKeys: String, CodingKey { case rows, values, gradients }
    public init(_ s: GLMMMarginalSums) { rows = s.rows; values = s.values; gradients = s.gradients }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rows = try c.decode(Int.self, forKey: .rows)
        values = try c.decode([Double].self, forKey: .values)
        gradients = try c.decode([Double].self, forKey: .gradients)
        let q = values.count
        let why: (CodingKeys, String)? =
            !(1...ProtocolLimits.maxRows).contains(rows) ? (.rows, "is out of range")
            : !(2...(ProtocolLimits.maxFixedColumns + 1)).contains(q) || !values.allSatisfy(\.isFinite) ? (.values, "must hold 1 + p finite numbers")
            : gradients.count != q * (q - 1) || !gradients.allSatisfy(\.isFinite) ? (.gradients, "must hold (1 + p)×p finite numbers")
            : nil
        if let (key, reason) = why { throw ProtocolError.inconsistent(field: LineCodec.path(decoder.codingPath + [key]), reason: reason) }
    }
}

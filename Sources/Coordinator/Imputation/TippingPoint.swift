// MNAR sensitivity: the shift δ of an imputed variable at which a chosen
// coefficient's conclusion changes, i.e. its 95% interval starts or stops
// including 0. Read off a grid of δ-adjusted multiple imputations that share
// their seed (so their draws differ only by δ and the curve is smooth); the
// crossing is located by linear interpolation of the interval's bound
// between the two grid points that bracket it.

import Foundation

public struct TippingPoint: Codable, Sendable, Equatable {
    public struct Point: Codable, Sendable, Equatable {
        public var delta: Double
        public var estimate: Double
        public var ciLower: Double
        public var ciUpper: Double
        public var pValue: Double
        enum CodingKeys: String, CodingKey { case delta, estimate, ciLower = "ci_lower", ciUpper = "ci_upper", pValue = "p_value" }
    }
    public var term: String
    public var variable: String
    public var points: [Point]
    /// The interpolated δ where the conclusion at δ = 0 changes; nil when it holds over the whole grid.
    public var delta: Double?
    enum CodingKeys: String, CodingKey { case term, variable, points, delta }

    public static func find(term: String, variable: String, points: [(delta: Double, result: FitResult)]) -> TippingPoint {
        let rows = points.compactMap { p -> Point? in
            guard let f = p.result.fixedEffects.first(where: { $0.name == term }) else { return nil }
            return Point(delta: p.delta, estimate: f.estimate, ciLower: f.ciLower, ciUpper: f.ciUpper, pValue: f.pValue)
        }
        var out = TippingPoint(term: term, variable: variable, points: rows.sorted { $0.delta < $1.delta }, delta: nil)
        guard let base = rows.first(where: { $0.delta == 0 }) else { return out }
        let excludesZero = base.ciLower > 0 || base.ciUpper < 0
        // The bound that crosses 0 first: the one nearer 0 at δ = 0.
        func bound(_ p: Point) -> Double { base.estimate >= 0 ? p.ciLower : p.ciUpper }
        func changed(_ p: Point) -> Bool { (p.ciLower > 0 || p.ciUpper < 0) != excludesZero }
        var best: Double? = nil
        for direction in [1.0, -1.0] {
            let side = out.points.filter { direction > 0 ? $0.delta >= 0 : $0.delta <= 0 }
                .sorted { abs($0.delta) < abs($1.delta) }
            for (a, b) in zip(side, side.dropFirst()) where !changed(a) && changed(b) {
                let (ya, yb) = (bound(a), bound(b))
                let d = ya == yb ? b.delta : a.delta + (b.delta - a.delta) * (0 - ya) / (yb - ya)
                if best == nil || abs(d) < abs(best!) { best = d }
                break
            }
        }
        out.delta = best
        return out
    }

    /// The grid and the tipping point, in words.
    public var text: String {
        var rows: [[String]] = [["delta", "estimate", "95% CI", "p"]]
        for p in points {
            rows.append([Report.fmt(p.delta, digits: 3), Report.fmt(p.estimate, digits: 4),
                         "[\(Report.fmt(p.ciLower, digits: 4)), \(Report.fmt(p.ciUpper, digits: 4))]", Report.fmt(p.pValue, digits: 3)])
        }
        var out = "MNAR sensitivity: \(term) when the imputed values of \(variable) are shifted by delta (multiple imputation, same seed)\n"
        out += Report.table(rows, rightAlign: true)
        if let d = delta {
            out += "tipping point: at delta = \(Report.fmt(d, digits: 3)) (interpolated) the 95% interval of \(term) changes whether it includes 0\n"
        } else {
            out += "no tipping point on this grid: the conclusion about \(term) holds for every delta shown\n"
        }
        return out
    }
}

// A first-order prediction of a site's conditional modes at the next point.
//
// The exact derivatives already solve for dû/d(θ, β) at the last point
// (GLMMExactDerivatives.swift, stage 1), so the next evaluation's PIRLS can
// start from a prediction whose error is O(‖Δp‖²) rather than the last
// modes' O(‖Δp‖): about one PIRLS iteration (a weight pass and a trial
// deviance pass over the rows) fewer per evaluation as the outer Newton
// converges. The prediction is made for the effects b = Λu, which move
// little when θ does (u = Λ⁻¹b scales like 1/θ, so a step from θ = 0.1 to
// 0.8 predicted in u overshoots by several times and costs iterations), and
// mapped back through Λ at the new θ. How u moves with θ depends on the
// information per group (u ∝ 1/θ when θ²ZᵀWZ ≫ 1, nearly flat when it is
// about 1), so over a long step in θ neither a linear prediction in u nor
// one in b is reliably better than the last modes: a step that changes some
// θ by more than half of it (`longStep`; the outer trust region's first
// steps) starts from the last modes. PIRLS still iterates to its own
// tolerance from there, so the modes found are the same to that tolerance;
// where Λ is singular at the new θ, or PIRLS fails from the prediction,
// the last modes are the start too (GLMMSite.evaluate).

/// The effects b = Λû at the last evaluated point, with db/dp.
struct ModeSlope: Sendable {
    /// (θ…, β…) at which `b` and `db` hold.
    var point: [Double]
    /// b in u's layout (per factor and level, b_l = T u_l).
    var b: [Double]
    /// db/dp, q × dim(p), row-major.
    var db: [Double]
}

extension GLMMSite {
    /// The slope in b of the modes `u` with slopes `du` (q × dim(p)) at `theta`:
    /// db/dp_a = T u_a + (∂T/∂p_a) u, where T's entries are the θ's themselves.
    func modeSlope(theta: [Double], point: [Double], u: [Double], du: [Double]) -> ModeSlope {
        let s = data.structure, np = point.count
        var b = [Double](repeating: 0, count: u.count), db = [Double](repeating: 0, count: u.count * np)
        for f in 0..<s.factorCount {
            let t = s.factorMatrix(f, theta: theta), r = t.rows, entries = s.factorEntries(f)
            for l in 0..<data.levelCounts[f] {
                let o = uOffset(f) + l * r
                for i in 0..<r {
                    var v = 0.0
                    for k in 0...i { v += t[i, k] * u[o + k] }
                    b[o + i] = v
                    for a in 0..<np {
                        var d = 0.0
                        for k in 0...i { d += t[i, k] * du[(o + k) * np + a] }
                        db[(o + i) * np + a] = d
                    }
                }
                for e in entries { db[(o + e.row) * np + e.theta] += u[o + e.col] }
            }
        }
        return ModeSlope(point: point, b: b, db: db)
    }

    /// The largest change in a θ, relative to max(|θ|, 0.05) at the last
    /// point, that is predicted; beyond it the last modes are the start.
    static let longStep = 0.5

    /// u = T(θ)⁻¹(b + (db/dp)(p − point)) at p = (θ…, β…), or for scalar terms the rational prediction
    /// (`scalarPrediction`); nil when the shapes differ, the step in θ is long and a term is a vector, T is
    /// singular at θ (a bound), or the result is not finite.
    func predictedModes(_ slope: ModeSlope, theta: [Double], point p: [Double]) -> [Double]? {
        let s = data.structure, np = slope.point.count, q = slope.b.count
        guard p.count == np, q == dimension, slope.db.count == q * np, theta.count <= np else { return nil }
        let scalar = (0..<s.factorCount).allSatisfy { s.factorDimension($0) == 1 }
        var long = false
        for a in 0..<theta.count where !(abs(theta[a] - slope.point[a]) <= Self.longStep * max(abs(slope.point[a]), 0.05)) {
            long = true
        }
        if long && !scalar { return nil }
        var b = slope.b
        for c in 0..<q {
            var v = b[c]
            for a in 0..<np { v += slope.db[c * np + a] * (p[a] - slope.point[a]) }
            b[c] = v
        }
        if scalar {
            for f in 0..<s.factorCount {
                let k = s.factorEntries(f)[0].theta
                for l in 0..<data.levelCounts[f] {
                    let o = uOffset(f) + l
                    b[o] = scalarPrediction(slope, level: o, theta: k, to: p, linear: long ? nil : b[o])
                }
            }
        }
        var u = b
        for f in 0..<s.factorCount {
            let t = s.factorMatrix(f, theta: theta), r = t.rows
            for i in 0..<r where !(t[i, i] != 0) { return nil }
            for l in 0..<data.levelCounts[f] {
                let o = uOffset(f) + l * r
                for i in 0..<r {
                    var v = b[o + i]
                    for k in 0..<i { v -= t[i, k] * u[o + k] }
                    u[o + i] = v / t[i, i]
                }
            }
        }
        return u.allSatisfy(\.isFinite) ? u : nil
    }

    /// A scalar term's effect b at p, predicted along θ as a linear mixed model's would move:
    /// b(θ) = θ²c/(1 + θ²A) per level, A (the level's information) read from the slope at the last point,
    /// 1 + θ₀²A = 2b/(θ₀ ∂b/∂θ), and c moving linearly with the other parameters. It agrees with the linear
    /// prediction to first order, and stays right over long steps in θ where the information is large (b then
    /// barely moves, where u = b/θ does). Where A cannot be read (θ₀ = 0, b ≈ 0, a slope of the wrong sign):
    /// `linear`, or for a long step the last u (b scaled with θ).
    func scalarPrediction(_ slope: ModeSlope, level o: Int, theta k: Int, to p: [Double], linear: Double?) -> Double {
        let np = slope.point.count
        let t0 = slope.point[k], t1 = p[k], b0 = slope.b[o], bt = slope.db[o * np + k]
        let kappa = 2 * b0 / (t0 * bt)
        guard t0 != 0, kappa.isFinite, kappa >= 1 else { return linear ?? b0 * t1 / t0 }
        var rest = 0.0
        for a in 0..<np where a != k { rest += slope.db[o * np + a] * (p[a] - slope.point[a]) }
        let rho = (t1 * t1) / (t0 * t0)
        return rho * kappa / (1 + rho * (kappa - 1)) * (b0 + rest)
    }
}

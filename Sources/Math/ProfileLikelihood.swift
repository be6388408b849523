// Profile-likelihood confidence intervals for a linear mixed model, as lme4's
// confint(method = "profile") defines them: for each parameter ψ (a random
// effect's standard deviation or correlation, the residual σ, a fixed effect)
// the ML deviance profiled over every other parameter, D(ψ), and the bounds
// where ζ(ψ) = sign(ψ − ψ̂) √(D(ψ) − D_min) = ∓ z₀.₉₇₅. lme4 profiles the ML
// deviance even for a REML fit, and so does this.
//
// Everything is a function of θ through the summed totals (A, g, s, ℓ), so a
// profile point is one evaluation of the totals at one θ:
//   D(θ, β, σ) = ℓ(θ) + n log(2πσ²) + (r²(θ) + (β − β̂)ᵀA(β − β̂)) / σ²
//   σ = x fixed:         ℓ + n log(2πx²) + r²/x²
//   sd of row k = x:     σ = x/‖T_k‖, so ℓ + n log(2πx²) − n log ρ + ρ r²/x²
//                        with ρ = ‖T_k‖² (row k of the term's factor T)
//   correlation = x:     θ restricted linearly (row 1 of T = s·(x, √(1−x²))),
//                        σ and β profiled: ℓ + n(1 + log(2π r²/n))
//   β_j = x:             the least-squares problem on the Schur complement
//                        with column j moved to the response: r_j² replaces r²
// Each is minimized over the free θ coordinates by projected Newton steps on
// exact derivatives (the totals are jets in θ), and each bound is the root of
// ζ found by Newton steps on ζ (its derivative in ψ at the inner optimum is
// explicit). The searches run in lockstep: each step asks for one θ point per
// unfinished search, and the caller evaluates them all at once (one round
// with a batched evaluate request, or none when the sites sent θ-free sums).

import Foundation

/// What to profile.
public struct ProfileParameter: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The standard deviation σ‖T_k‖: θ indices of row k of a term's T.
        case standardDeviation(row: [Int])
        /// The correlation of a term's first two columns: θ indices of
        /// T₁₀ and T₁₁ (row 1 of the term's T).
        case correlation(offDiagonal: Int, diagonal: Int)
        /// The residual standard deviation σ.
        case sigma
        /// Fixed effect j.
        case fixed(Int)
        /// The single θ of a model with one scalar term (σ_group/σ), under the
        /// engine's `method` with σ and β profiled: the ICC's interval.
        case scalarTheta
    }
    public var name: String
    public var kind: Kind
    public init(name: String, kind: Kind) { self.name = name; self.kind = kind }
}

/// One interval: nil bounds where the search did not converge.
public struct ProfileInterval: Sendable, Equatable {
    public var name: String
    public var estimate: Double
    public var lower: Double?
    public var upper: Double?
}

public struct ProfileOutcome: Sendable {
    public var intervals: [ProfileInterval]
    /// Minimum ML deviance (at the ML estimates).
    public var minimumDeviance: Double
    public var mlTheta: [Double]
    /// Batches of θ points evaluated (each is one round for a model with
    /// within-site terms), and points evaluated in all.
    public var batches: Int
    public var points: Int
}

/// A value with its gradient and dense Hessian in k coordinates.
struct Dual2 {
    var v: Double
    var g: [Double]
    var h: [Double]
    init(_ v: Double, k: Int) { self.v = v; g = Array(repeating: 0, count: k); h = Array(repeating: 0, count: k * k) }
    init(_ j: ScalarJet) { v = j.value; g = j.gradient; h = j.hessian }
    var k: Int { g.count }
    static func + (a: Dual2, b: Dual2) -> Dual2 {
        var c = a; c.v += b.v
        for i in c.g.indices { c.g[i] += b.g[i] }
        for i in c.h.indices { c.h[i] += b.h[i] }
        return c
    }
    static func * (a: Dual2, b: Dual2) -> Dual2 {
        var c = Dual2(a.v * b.v, k: a.k)
        let k = a.k
        for i in 0..<k { c.g[i] = a.g[i] * b.v + a.v * b.g[i] }
        for i in 0..<k { for j in 0..<k {
            c.h[i * k + j] = a.h[i * k + j] * b.v + b.h[i * k + j] * a.v + a.g[i] * b.g[j] + a.g[j] * b.g[i]
        } }
        return c
    }
    func scaled(_ s: Double, plus c: Double = 0) -> Dual2 {
        var o = self; o.v = v * s + c
        for i in o.g.indices { o.g[i] *= s }
        for i in o.h.indices { o.h[i] *= s }
        return o
    }
    /// log of a positive value.
    func log() -> Dual2 {
        var o = Dual2(Foundation.log(v), k: k)
        for i in 0..<k { o.g[i] = g[i] / v }
        for i in 0..<k { for j in 0..<k { o.h[i * k + j] = h[i * k + j] / v - g[i] * g[j] / (v * v) } }
        return o
    }
}

public enum ProfileError: Error, CustomStringConvertible {
    case mlFitFailed
    public var description: String { "the ML refit that the profile starts from did not converge" }
}

public struct ProfileLikelihood {
    /// Summed totals at each θ of a batch, as jets of order 2 in θ.
    public typealias Evaluate = ([[Double]]) throws -> [LMMTotals]

    public let structure: CovarianceStructure
    public let parameters: [ProfileParameter]
    /// Standard errors of the fixed effects (to size the first step), in order.
    public let fixedStandardErrors: [Double]
    /// ζ's target: z₀.₉₇₅ for 95% intervals.
    public var z = StandardNormal.quantile975
    public var maxBatches = 200
    /// The criterion profiled: lme4's confint uses the ML deviance whatever the fit.
    public var method: EstimationMethod = .ml
    public init(structure: CovarianceStructure, parameters: [ProfileParameter], fixedStandardErrors: [Double]) {
        self.structure = structure; self.parameters = parameters; self.fixedStandardErrors = fixedStandardErrors
    }

    // MARK: criteria

    /// r² = s − gᵀA⁻¹g as a jet, from the Cholesky factor of the totals' Schur matrix.
    static func residual(_ schur: JetMatrix) throws -> Dual2 {
        var l = schur
        try l.choleskyInPlace()
        let p = schur.rows - 1
        let d = Dual2(l.scalar(p, p))
        guard d.v > 0, d.v.isFinite else { throw CriterionError.perfectFit }
        return d * d
    }

    /// The Schur matrix with fixed effect j held at x: column j moves to the response.
    static func constrained(_ s: JetMatrix, column j: Int, value x: Double) -> JetMatrix {
        let p = s.rows - 1, w = s.space.width
        let keep = (0...p).filter { $0 != j }
        var out = JetMatrix(rows: p, cols: p, space: s.space)
        for (a, ia) in keep.enumerated() { for (b, ib) in keep.enumerated() {
            let o = out.offset(a, b)
            for q in 0..<w {
                var v = s.storage[s.offset(ia, ib) + q]
                if ia == p { v -= x * s.storage[s.offset(j, ib) + q] }
                if ib == p { v -= x * s.storage[s.offset(ia, j) + q] }
                if ia == p && ib == p { v += x * x * s.storage[s.offset(j, j) + q] }
                out.storage[o + q] = v
            }
        } }
        return out
    }

    /// The profiled ML deviance over σ and β at θ: ℓ + n(1 + log(2π r²/n)).
    static func mlDeviance(_ t: LMMTotals) throws -> Dual2 {
        let n = Double(t.rows)
        return Dual2(t.logDet) + (try residual(t.schur)).scaled(1 / n).log().scaled(n, plus: n * (1 + log(2 * Double.pi)))
    }

    /// The target's deviance at θ (jets in θ) with the target held at x.
    func deviance(_ kind: ProfileParameter.Kind?, x: Double, theta: [Double], totals t: LMMTotals) throws -> Dual2 {
        let n = Double(t.rows), m = theta.count
        switch kind {
        case nil, .scalarTheta?:
            return method == .ml ? try Self.mlDeviance(t) : Dual2(try ProfiledCriterion.evaluate(t, method: method))
        case .correlation?:
            return try Self.mlDeviance(t)
        case .sigma?:
            return Dual2(t.logDet) + (try Self.residual(t.schur)).scaled(1 / (x * x), plus: n * log(2 * Double.pi * x * x))
        case .standardDeviation(let row)?:
            var rho = Dual2(0, k: m)
            for i in row { rho.v += theta[i] * theta[i]; rho.g[i] = 2 * theta[i]; rho.h[i * m + i] = 2 }
            guard rho.v > 0 else { throw CriterionError.perfectFit }
            let r2 = try Self.residual(t.schur)
            return Dual2(t.logDet) + rho.log().scaled(-n, plus: n * log(2 * Double.pi * x * x)) + (rho * r2).scaled(1 / (x * x))
        case .fixed(let j)?:
            let r2 = try Self.residual(Self.constrained(t.schur, column: j, value: x))
            return Dual2(t.logDet) + r2.scaled(1 / n).log().scaled(n, plus: n * (1 + log(2 * Double.pi)))
        }
    }

    /// ∂D/∂x at fixed θ (or along the correlation's map), at the inner optimum.
    func derivative(_ kind: ProfileParameter.Kind?, x: Double, theta: [Double], totals t: LMMTotals, gradient: [Double]) throws -> Double {
        let n = Double(t.rows)
        switch kind {
        case nil: return 0
        case .scalarTheta?: return try deviance(kind, x: x, theta: theta, totals: t).g[0]
        case .sigma?:
            let r2 = try Self.residual(t.schur).v
            return 2 * n / x - 2 * r2 / (x * x * x)
        case .standardDeviation(let row)?:
            let rho = row.reduce(0) { $0 + theta[$1] * theta[$1] }
            let r2 = try Self.residual(t.schur).v
            return 2 * n / x - 2 * rho * r2 / (x * x * x)
        case .correlation(let b, let c)?:
            let s = (theta[b] * theta[b] + theta[c] * theta[c]).squareRoot()
            return gradient[b] * s - gradient[c] * s * x / (1 - x * x).squareRoot()
        case .fixed(let j)?:
            // r_j²(x) is a quadratic in x at fixed θ: central differences are exact up to rounding.
            let hstep = 1e-3 * max(abs(x), fixedStandardErrors[j], 1e-8)
            let value = t.schur.valueMatrix
            func r2(_ v: Double) throws -> Double {
                let c = Self.constrained(JetMatrix(constant: value, space: JetSpace(parameters: 0, order: 0)), column: j, value: v)
                return try Self.residual(c).v
            }
            let up = try r2(x + hstep), down = try r2(x - hstep), mid = try r2(x)
            return n / mid * (up - down) / (2 * hstep)
        }
    }

    // MARK: coordinates

    /// θ from the search coordinates φ at x (identity but for a correlation:
    /// φ drops T₁₁ and holds s at T₁₀'s place, row 1 = s·(x, √(1−x²))).
    static func theta(_ kind: ProfileParameter.Kind?, x: Double, phi: [Double]) -> [Double] {
        if case .scalarTheta? = kind { return [x] }
        guard case .correlation(let b, let c)? = kind else { return phi }
        var t = phi
        let s = phi[b]
        t.insert(0, at: c)
        t[b] = x * s
        t[c] = (max(0, 1 - x * x)).squareRoot() * s
        return t
    }

    static func phi(_ kind: ProfileParameter.Kind?, theta: [Double]) -> [Double] {
        if case .scalarTheta? = kind { return [] }
        guard case .correlation(let b, let c)? = kind else { return theta }
        var p = theta
        p[b] = (theta[b] * theta[b] + theta[c] * theta[c]).squareRoot()
        p.remove(at: c)
        return p
    }

    func phiLower(_ kind: ProfileParameter.Kind?) -> [Double] {
        if case .scalarTheta? = kind { return [] }
        guard case .correlation(let b, let c)? = kind else { return structure.lowerBounds }
        var l = structure.lowerBounds
        l[b] = 0
        l.remove(at: c)
        return l
    }

    /// A θ-space jet as a φ-space one (the map is linear in φ).
    static func toPhi(_ d: Dual2, kind: ProfileParameter.Kind?, x: Double, m: Int) -> Dual2 {
        if case .scalarTheta? = kind { return Dual2(d.v, k: 0) }
        guard case .correlation(let b, let c)? = kind else { return d }
        // M: θ = M φ, m × (m − 1).
        var mm = [Double](repeating: 0, count: m * (m - 1))
        var col = 0
        for i in 0..<m where i != c {
            if i == b { mm[b * (m - 1) + col] = x; mm[c * (m - 1) + col] = (max(0, 1 - x * x)).squareRoot() }
            else { mm[i * (m - 1) + col] = 1 }
            col += 1
        }
        let k = m - 1
        var o = Dual2(d.v, k: k)
        for a in 0..<k { for i in 0..<m { o.g[a] += mm[i * k + a] * d.g[i] } }
        for a in 0..<k { for bb in 0..<k {
            var v = 0.0
            for i in 0..<m where mm[i * k + a] != 0 { for j in 0..<m where mm[j * k + bb] != 0 {
                v += mm[i * k + a] * d.h[i * m + j] * mm[j * k + bb]
            } }
            o.h[a * k + bb] = v
        } }
        return o
    }

    // MARK: the searches

    /// One projected-Newton minimization over φ at a fixed x, and (for a
    /// bound) the root search in x around it.
    struct Search {
        let kind: ProfileParameter.Kind?
        /// −1 lower bound, +1 upper bound, 0 the ML fit itself.
        let side: Double
        let lower: [Double]
        var x: Double
        var estimate: Double
        var pending: [Double]          // φ to evaluate next
        var fresh = true               // pending is the first point at this x
        var current: (phi: [Double], f: Double, g: [Double], h: [Double], totals: LMMTotals)? = nil
        var direction: [Double] = []
        var scale = 1.0
        var halvings = 0
        var inner = 0
        // outer
        var inside: Double? = nil      // an x with ζ short of the target
        var outside: Double? = nil     // an x with ζ beyond it
        var outerSteps = 0
        var done = false
        var failed = false
        var result: Double? = nil
    }

    /// Runs the ML fit and every bound search; `estimates` are the REML θ̂
    /// (the ML fit's start).
    public func run(start theta0: [Double], evaluate: Evaluate) throws -> ProfileOutcome {
        var batches = 0, points = 0
        let m = structure.thetaCount
        func step(_ searches: inout [Search], target: Double, minimum: Double) throws {
            let active = searches.indices.filter { !searches[$0].done }
            guard !active.isEmpty else { return }
            let thetas = active.map { Self.theta(searches[$0].kind, x: searches[$0].x, phi: searches[$0].pending) }
            let totals = try evaluate(thetas)
            batches += 1; points += thetas.count
            for (a, i) in active.enumerated() {
                feed(&searches[i], theta: thetas[a], totals: totals[a], m: m, target: target, minimum: minimum)
            }
        }

        // 1. The ML fit.
        var ml = [Search(kind: nil, side: 0, lower: structure.lowerBounds, x: 0, estimate: 0, pending: theta0)]
        while !ml[0].done && batches < maxBatches { try step(&ml, target: 0, minimum: 0) }
        guard let fit = ml[0].current, ml[0].done else { throw ProfileError.mlFitFailed }
        let thetaML = fit.phi, dmin = fit.f
        let est = try ProfiledCriterion.estimates(fit.totals, method: method)

        // 2. Every bound, in lockstep.
        let target = z
        var searches: [Search] = []
        for p in parameters {
            let xhat = estimateOf(p.kind, theta: thetaML, sigma: est.sigma, beta: est.beta)
            for side in [-1.0, 1.0] {
                var s = Search(kind: p.kind, side: side, lower: phiLower(p.kind), x: xhat, estimate: xhat,
                               pending: Self.phi(p.kind, theta: thetaML))
                s.x = firstStep(p.kind, xhat: xhat, side: side, sigma: est.sigma)
                if isBoundary(p.kind, xhat: xhat, side: side) { s.done = true; s.result = xhat }
                s.inside = xhat
                searches.append(s)
            }
        }
        while searches.contains(where: { !$0.done }) && batches < maxBatches {
            try step(&searches, target: target, minimum: dmin)
        }
        var intervals: [ProfileInterval] = []
        for (k, p) in parameters.enumerated() {
            let lo = searches[2 * k], hi = searches[2 * k + 1]
            intervals.append(ProfileInterval(name: p.name, estimate: lo.estimate, lower: lo.done && !lo.failed ? lo.result : nil,
                                             upper: hi.done && !hi.failed ? hi.result : nil))
        }
        return ProfileOutcome(intervals: intervals, minimumDeviance: dmin, mlTheta: thetaML, batches: batches, points: points)
    }

    /// The ML estimate of a parameter.
    func estimateOf(_ kind: ProfileParameter.Kind, theta: [Double], sigma: Double, beta: [Double]) -> Double {
        switch kind {
        case .sigma: return sigma
        case .standardDeviation(let row): return sigma * row.reduce(0) { $0 + theta[$1] * theta[$1] }.squareRoot()
        case .correlation(let b, let c):
            let s = (theta[b] * theta[b] + theta[c] * theta[c]).squareRoot()
            return s > 0 ? theta[b] / s : 0
        case .fixed(let j): return beta[j]
        case .scalarTheta: return theta[0]
        }
    }

    /// A parameter at the edge of its range has that edge as its bound on that side.
    func isBoundary(_ kind: ProfileParameter.Kind, xhat: Double, side: Double) -> Bool {
        switch kind {
        case .standardDeviation, .scalarTheta: return side < 0 && xhat <= 0
        case .correlation: return abs(xhat) >= 1 && xhat * side > 0
        default: return false
        }
    }

    func firstStep(_ kind: ProfileParameter.Kind, xhat: Double, side: Double, sigma: Double) -> Double {
        switch kind {
        case .sigma, .standardDeviation:
            return xhat > 0 ? xhat * (1 + 0.2 * side) : 0.1 * sigma
        case .correlation: return xhat + 0.2 * (side - xhat)
        case .fixed(let j): return xhat + side * z * fixedStandardErrors[j]
        case .scalarTheta: return xhat > 0 ? xhat * (1 + 0.2 * side) : 0.1
        }
    }

    /// Takes the evaluation at the search's pending point and decides the next one.
    func feed(_ s: inout Search, theta: [Double], totals: LMMTotals, m: Int, target: Double, minimum: Double) {
        var value: Dual2? = nil
        if let d = try? deviance(s.kind, x: s.x, theta: theta, totals: totals), d.v.isFinite {
            value = Self.toPhi(d, kind: s.kind, x: s.x, m: m)
        }
        if s.fresh {
            s.fresh = false
            guard let v = value else {
                // The profile cannot be evaluated at this x: step back toward the inside.
                let back = s.inside ?? s.estimate
                s.outside = s.outside ?? s.x
                restart(&s, at: (s.x + back) / 2)
                return
            }
            s.current = (s.pending, v.v, v.g, v.h, totals)
        } else if let v = value, let cur = s.current, v.v <= cur.f + 1e-13 * max(1, abs(cur.f)) {
            s.current = (s.pending, v.v, v.g, v.h, totals)
        } else {
            s.halvings += 1
            guard s.halvings <= 40, let cur = s.current else { innerDone(&s, target: target, minimum: minimum); return }
            s.scale /= 2
            s.pending = clipped(cur.phi, s.direction, s.scale, s.lower)
            return
        }
        newtonStep(&s, target: target, minimum: minimum)
    }

    static func solve(_ h: [Double], _ g: [Double], free: [Int]) -> [Double]? {
        let k = free.count
        guard k > 0 else { return [] }
        var a = Matrix(rows: k, cols: k)
        for (i, fi) in free.enumerated() { for (j, fj) in free.enumerated() { a[i, j] = h[fi * g.count + fj] } }
        let diag = (0..<k).map { abs(a[$0, $0]) }.max() ?? 1
        var shift = 0.0
        for _ in 0..<30 {
            var b = a
            for i in 0..<k { b[i, i] += shift }
            if let x = try? Dense.solveSPD(b, free.map { -g[$0] }) { return x }
            shift = shift == 0 ? 1e-10 * max(diag, 1e-300) : shift * 10
        }
        return nil
    }

    func clipped(_ phi: [Double], _ d: [Double], _ scale: Double, _ lower: [Double]) -> [Double] {
        zip(zip(phi, d), lower).map { pd, l in max(l, pd.0 + scale * pd.1) }
    }

    func newtonStep(_ s: inout Search, target: Double, minimum: Double) {
        guard let cur = s.current else { return }
        let k = cur.phi.count
        s.inner += 1
        let free = (0..<k).filter { !(cur.phi[$0] <= s.lower[$0] && cur.g[$0] > 0) }
        guard let dFree = Self.solve(cur.h, cur.g, free: free), s.inner < 200 else { innerDone(&s, target: target, minimum: minimum); return }
        var d = [Double](repeating: 0, count: k)
        var decrement = 0.0
        for (i, fi) in free.enumerated() { d[fi] = dFree[i]; decrement -= cur.g[fi] * dFree[i] }
        if decrement < 1e-11 * max(1, abs(cur.f)) { innerDone(&s, target: target, minimum: minimum); return }
        s.direction = d; s.scale = 1; s.halvings = 0
        s.pending = clipped(cur.phi, d, 1, s.lower)
        if s.pending == cur.phi { innerDone(&s, target: target, minimum: minimum) }
    }

    func restart(_ s: inout Search, at x: Double) {
        s.x = x
        s.fresh = true
        s.inner = 0
        if let cur = s.current { s.pending = cur.phi }
    }

    /// The inner minimum at x is found: the ML fit is done, or take a Newton step on ζ.
    func innerDone(_ s: inout Search, target: Double, minimum: Double) {
        guard let cur = s.current else { s.done = true; return }
        guard let kind = s.kind else { s.done = true; return }
        let theta = Self.theta(s.kind, x: s.x, phi: cur.phi)
        let dD = (try? derivative(kind, x: s.x, theta: theta, totals: cur.totals, gradient: thetaGradient(cur, s))) ?? .nan
        let excess = max(0, cur.f - minimum)
        let zeta = s.side * excess.squareRoot()
        let h = abs(zeta) - target
        s.outerSteps += 1
        if abs(h) < 1e-10 * target { s.done = true; s.result = s.x; return }
        if s.outerSteps > 60 { s.done = true; s.failed = true; return }
        if h < 0 { s.inside = s.x } else { s.outside = s.x }
        // Newton on ζ: ζ' = D'/(2√(D − D_min)).
        var next = s.x
        if excess > 0, dD.isFinite, dD * s.side > 0 {
            let zp = s.side * dD / (2 * excess.squareRoot())
            next = s.x - (zeta - s.side * target) / zp
        } else {
            next = s.x + 2 * (s.x - s.estimate)
        }
        if let o = s.outside, let i = s.inside {
            let (a, b) = (min(o, i), max(o, i))
            if !(next > a && next < b) { next = (o + i) / 2 }
        }
        // Stay in the parameter's range; an edge reached inside the interval is the bound.
        switch kind {
        case .sigma, .standardDeviation:
            if next <= 0 { next = s.x / 10 }
            if s.side < 0 && s.x < 1e-8 * abs(s.estimate) && h < 0 { s.done = true; s.result = 0; return }
        case .correlation:
            if abs(next) >= 1 { next = (s.x + s.side) / 2 }
            if abs(s.x) > 1 - 1e-9 && h < 0 { s.done = true; s.result = s.side; return }
        case .scalarTheta:
            if s.side < 0 && s.x == 0 && h < 0 { s.done = true; s.result = 0; return }
            if next <= 0 { next = 0 }
        case .fixed: break
        }
        if abs(next - s.x) <= 1e-13 * max(abs(s.x), 1e-300) { s.done = true; s.result = s.x; return }
        restart(&s, at: next)
    }

    /// ∂D/∂θ at the current point (θ coordinates; for the correlation's map the
    /// θ gradient is recovered from the φ one where it is needed).
    func thetaGradient(_ cur: (phi: [Double], f: Double, g: [Double], h: [Double], totals: LMMTotals), _ s: Search) -> [Double] {
        guard case .correlation? = s.kind else { return cur.g }
        guard let d = try? Self.mlDeviance(cur.totals) else { return Array(repeating: .nan, count: structure.thetaCount) }
        return d.g
    }
}

// The joint conditional mode of a GLMM with crossed factors, found by Newton
// on the crossed effects u_G at the coordinator (README, "Crossed factors
// in GLMMs"). Each round sends every active point (θ, β, b_G = Λ_G u_G) to
// the sites; site k answers with its profiled piece (GLMMCrossedSite):
//     Φ(u_G)  = Σ_k P_k(Λ_G u_G) + ‖u_G‖²
//     ∇Φ      = Λ_Gᵀ Σ_k ∇P_k + 2u_G,   ∇²Φ = 2S,   S = Λ_Gᵀ(Σ_k ∇²P_k / 2)Λ_G + I,
// and at the mode lme4's Laplace deviance is
//     F(θ, β) = Φ(ũ_G) + Σ_k log|H_ss,k| + log|S|.
// Several points run in lockstep, so a finite-difference stencil of F costs
// the rounds of one Newton solve.

import Math
import Protocol

struct CrossedGLMMModes {
    let session: FitSession
    let layout: CrossedLayout
    /// How the sites send their Hessians in b_G: the upper triangle (dense,
    /// factored here as a q_G × q_G Cholesky) or the level form (factored
    /// level by level, CrossedGLMMLevelSystem).
    let form: CrossedGLMMForm

    /// The level form when every site offered it at prepare
    /// (`crossed_level_form`: always for own terms grouped by the site; with
    /// within-site terms only where each of their levels has min_cell rows)
    /// and, unless `forced`, it costs less than the dense Cholesky. One site
    /// without the offer keeps the whole fit dense.
    static func form(_ session: FitSession, layout: CrossedLayout, forced: CrossedGLMMForm?) -> CrossedGLMMForm {
        let offered = session.prepared.compactMap(\.crossedLevelForm)
        guard offered.count == session.prepared.count else { return .dense }
        if let forced { return forced }
        return CrossedGLMMLevelSystem.cheaper(layout: layout, structure: session.structure, localDimensions: offered) ? .level : .dense
    }

    /// m_k per site in the level form: its own effects, as it offered at prepare (0 without the offer).
    var ownEffects: [Int] { session.prepared.map { $0.crossedLevelForm ?? 0 } }

    /// The sites' Hessians at one point, summed (dense) or as sent (level form).
    enum Hessian {
        case dense(Matrix)
        case level([CrossedLevelHessian])
    }

    /// S = ½∇²Φ at a point, factored.
    enum Factor {
        case dense(Matrix)
        case level(CrossedGLMMLevelSystem, [CrossedLevelHessian])
    }

    /// One point's joint mode and Laplace deviance.
    struct Solution {
        var deviance: Double
        var u: [Double]
        /// S = ½∇²Φ at the mode, factored.
        var schurFactor: Factor
        var rounds: Int
    }

    /// Λ_G's blocks at θ: (offset, levels, T) per crossed factor.
    func lambdaBlocks(_ theta: [Double]) -> [(offset: Int, levels: Int, t: Matrix)] {
        layout.factors.map { ($0.offset, $0.levels, session.structure.factorMatrix($0.factor, theta: theta)) }
    }

    /// Λ_G x.
    func lambda(_ theta: [Double], _ x: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for (o, levels, t) in lambdaBlocks(theta) {
            let r = t.rows
            for l in 0..<levels {
                let b = o + l * r
                for i in 0..<r { var v = 0.0; for k in 0...i { v += t[i, k] * x[b + k] }; out[b + i] = v }
            }
        }
        return out
    }

    /// Λ_Gᵀ x.
    func lambdaTransposed(_ theta: [Double], _ x: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for (o, levels, t) in lambdaBlocks(theta) {
            let r = t.rows
            for l in 0..<levels {
                let b = o + l * r
                for k in 0..<r { var v = 0.0; for i in k..<r { v += t[i, k] * x[b + i] }; out[b + k] = v }
            }
        }
        return out
    }

    /// A M Aᵀ for a square M and a linear map A given on vectors: A on each
    /// column, then on each row of the result.
    static func onBothSides(_ m: Matrix, _ apply: ([Double]) -> [Double]) -> Matrix {
        let q = m.rows
        var out = m
        for j in 0..<q {
            let col = apply((0..<q).map { out[$0, j] })
            for i in 0..<q { out[i, j] = col[i] }
        }
        for i in 0..<q {
            let row = apply((0..<q).map { out[i, $0] })
            for j in 0..<q { out[i, j] = row[j] }
        }
        return out
    }

    /// Λ_Gᵀ K Λ_G + I.
    func schur(_ theta: [Double], _ k: Matrix) -> Matrix {
        let q = layout.dimension
        // K is symmetric: Λ_Gᵀ on its columns, then on its rows.
        var m = Self.onBothSides(k) { lambdaTransposed(theta, $0) }
        for i in 0..<q { m[i, i] += 1 }
        for j in 0..<q { for i in 0..<j { let v = 0.5 * (m[i, j] + m[j, i]); m[i, j] = v; m[j, i] = v } }
        return m
    }

    /// The sites' pieces for each point, summed in site order into u_G's index.
    func round(_ points: [(theta: [Double], beta: [Double], u: [Double])]) throws
        -> [(value: Double, gradient: [Double], hessian: Hessian, logDet: Double)] {
        let q = layout.dimension, layout = self.layout, id = session.id, sites = session.sites, form = self.form
        let own = ownEffects
        let effects = points.map { lambda($0.theta, $0.u) }
        let replies = try session.federation.round({ k in
            var r = EvaluateRequest(session: id, theta: points[0].theta, order: 0)
            r.crossed = zip(points, effects).map { p, b in
                CrossedGLMMPoint(theta: p.theta, beta: p.beta, effects: layout.siteColumns[k].map { b[$0] })
            }
            if form == .level { r.crossedForm = form.rawValue }
            return .evaluate(r)
        }) { reply, site in
            guard case .glmmCrossed(let c) = reply else { throw unexpected(reply, site, expected: "glmm_crossed") }
            guard c.pieces.count == points.count else { throw SiteFailure(site: site, message: "answered \(c.pieces.count) crossed points of \(points.count)") }
            let k = sites.firstIndex(of: site)!, qk = layout.siteColumns[k].count
            guard c.pieces.allSatisfy({ $0.gradient.count == qk }) else { throw SiteFailure(site: site, message: "answered crossed pieces of the wrong size (its levels have \(qk) effects)") }
            guard c.pieces.allSatisfy({ ($0.aStart != nil) == (form == .level) && (form == .dense || $0.ownEffects == own[k]) }) else {
                throw SiteFailure(site: site, message: "answered crossed pieces in another form than the \(form.rawValue) form asked for (or with another count of own effects than the \(own[k]) it offered at prepare)")
            }
            return c.pieces
        }
        return points.indices.map { i in
            var value = 0.0, logDet = 0.0
            var g = [Double](repeating: 0, count: q)
            for (k, pieces) in replies.enumerated() {
                let piece = pieces[i], cols = layout.siteColumns[k]
                value += piece.value; logDet += piece.logDet
                for b in cols.indices { g[cols[b]] += piece.gradient[b] }
            }
            if form == .level {
                return (value, g, .level(replies.map { pieces in
                    let p = pieces[i]
                    return CrossedLevelHessian(start: p.aStart!, values: p.a!, coupling: p.coupling!, localDimension: p.ownEffects!)
                }), logDet)
            }
            var h = Matrix(rows: q, cols: q)
            for (k, pieces) in replies.enumerated() {
                let piece = pieces[i], cols = layout.siteColumns[k], qk = cols.count
                var t = 0
                for b in 0..<qk {
                    for a in 0...b {
                        h[cols[a], cols[b]] += piece.hessian[t]
                        if a != b { h[cols[b], cols[a]] += piece.hessian[t] }
                        t += 1
                    }
                }
            }
            return (value, g, .dense(h), logDet)
        }
    }

    /// S factored, log|S|, and S⁻¹x.
    func factor(_ theta: [Double], _ hessian: Hessian) throws -> (factor: Factor, logDet: Double) {
        switch hessian {
        case .dense(let h):
            let factor = try Dense.cholesky(schur(theta, h.scaled(0.5)))
            var logDet = 0.0
            for k in 0..<layout.dimension { logDet += 2 * Foundation.log(factor[k, k]) }
            return (.dense(factor), logDet)
        case .level(let sites):
            let system = try CrossedGLMMLevelSystem(layout: layout, structure: session.structure, theta: theta, sites: sites)
            return (.level(system, sites), system.logDet)
        }
    }

    func solve(_ factor: Factor, _ x: [Double]) -> [Double] {
        switch factor {
        case .dense(let l): return Dense.solveLowerTranspose(l, Dense.solveLower(l, x))
        case .level(let system, _): return system.solve(x)
        }
    }

    /// Newton with step halving on each point's Φ from `starts`, in
    /// lockstep; converged when the last accepted step was below 1e-6
    /// (relative), so that quadratic convergence puts the mode within ~1e-12
    /// before F is read (2 rounds per stencil near the optimum).
    func solve(_ points: [(theta: [Double], beta: [Double])], starts: [[Double]]) throws -> [Solution] {
        let q = layout.dimension
        struct State {
            var u: [Double]; var trial: [Double]; var phi = Double.infinity
            var direction: [Double] = []; var scale = 1.0; var lastStep = Double.infinity
            var done: Solution? = nil; var accepted: (deviance: Double, factor: Factor)? = nil
        }
        var states = starts.map { State(u: $0, trial: $0) }
        var rounds = 0
        while let _ = states.firstIndex(where: { $0.done == nil }) {
            rounds += 1
            guard rounds <= 100 else {
                throw FitFailure("the crossed effects' conditional modes did not converge in 100 rounds (Newton on u_G); the model may be too complex for the data, or the outcome separated by a crossed level")
            }
            let active = states.indices.filter { states[$0].done == nil }
            let answers = try round(active.map { (points[$0].theta, points[$0].beta, states[$0].trial) })
            for (a, i) in active.enumerated() {
                let theta = points[i].theta, ans = answers[a]
                var s = states[i]
                let phi = ans.value + s.trial.reduce(0) { $0 + $1 * $1 }
                let size = max(1, s.u.reduce(0) { max($0, abs($1)) })
                guard phi.isFinite else { throw FitFailure("the penalized deviance is not finite at the crossed effects' trial point") }
                if s.phi.isFinite && phi > s.phi + 1e-11 * abs(s.phi) {
                    // Step halving toward the last accepted mode.
                    s.scale *= 0.5
                    if s.scale < 1e-10, let acc = s.accepted {
                        s.done = Solution(deviance: acc.deviance, u: s.u, schurFactor: acc.factor, rounds: rounds)
                    } else {
                        s.trial = zip(s.u, s.direction).map { $0 + s.scale * $1 }
                    }
                    states[i] = s
                    continue
                }
                s.lastStep = s.phi.isFinite ? s.scale * s.direction.reduce(0) { max($0, abs($1)) } : .infinity
                s.u = s.trial; s.phi = phi
                let (factor, logDetS) = try self.factor(theta, ans.hessian)
                let deviance = phi + ans.logDet + logDetS
                s.accepted = (deviance, factor)
                if s.lastStep <= 1e-6 * size || q == 0 {
                    s.done = Solution(deviance: deviance, u: s.u, schurFactor: factor, rounds: rounds)
                    states[i] = s
                    continue
                }
                // Newton: Δ = −(2S)⁻¹ ∇Φ.
                let grad = zip(lambdaTransposed(theta, ans.gradient), s.u).map { $0 + 2 * $1 }
                let y = solve(factor, grad)
                s.direction = y.map { -0.5 * $0 }
                let stepSize = s.direction.reduce(0) { max($0, abs($1)) }
                if stepSize <= 1e-13 * size {
                    s.done = Solution(deviance: deviance, u: s.u, schurFactor: factor, rounds: rounds)
                } else {
                    s.scale = 1
                    s.trial = zip(s.u, s.direction).map { $0 + $1 }
                }
                states[i] = s
            }
        }
        return states.map { $0.done! }
    }

    /// The crossed effects at a solution: b_G = Λ_G ũ_G and P = Λ_G S⁻¹ Λ_Gᵀ
    /// (their conditional covariance, lme4's condVar). In the level form only
    /// P's diagonal is formed, and each site gets N_k = V'ᵀPV' (m_k × m_k)
    /// for its own effects instead of P at its levels.
    func modes(_ s: Solution, theta: [Double]) -> CrossedModes {
        switch s.schurFactor {
        case .level(let system, let sites):
            return CrossedModes(layout: layout, effects: lambda(theta, s.u), covariance: Matrix(rows: 0, cols: 0),
                                siteTerms: system.siteTerms(sites), variances: system.conditionalVariances())
        case .dense(let factor):
            let p = Self.onBothSides(Dense.inverseFromCholesky(factor)) { lambda(theta, $0) }
            return CrossedModes(layout: layout, effects: lambda(theta, s.u), covariance: p)
        }
    }
}

import Foundation

private extension Matrix {
    func scaled(_ c: Double) -> Matrix { Matrix(rows: rows, cols: cols, data: data.map { $0 * c }) }
}

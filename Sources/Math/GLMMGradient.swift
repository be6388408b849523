// The exact gradient of a site's Laplace term D_k(θ, β) at its conditional
// modes. With F(u) = Σ dev_i + ‖u‖² (minimal at û) and G = log|M(û)|,
//     dD/dp = ∂F/∂p + ∂G/∂p − vᵀ(½ ∂²F/∂u∂p),   v = M_obs⁻¹ ∂G/∂u,
// where ∂G/∂η_i = (dw_i/dη_i)·z̃_iᵀM⁻¹z̃_i (z̃_i = Λᵀz_i) and M_obs uses the
// observed weights (equal to the Fisher weights for canonical links). Every
// term is a sum over the site's rows of small blocked solves, so the
// gradient costs about two passes over the rows.
// `evaluate` takes its derivatives from the forward-mode jets of
// GLMMExactDerivatives.swift; this reverse-mode (adjoint) gradient is kept as
// `laplaceValueAndGradient`, an independent implementation the tests check
// the jets against.

import Foundation

extension GLMMSite {
    /// Whether observed and Fisher weights coincide (canonical links).
    var isCanonical: Bool {
        (data.family.distribution == .binomial && data.family.link == .logit)
            || (data.family.distribution == .poisson && data.family.link == .log)
    }

    /// Row i's ∂dev/∂η, observed weight ½∂²dev/∂η² and the slope dw/dη of its
    /// Fisher weight; closed forms for canonical links, differences in η otherwise.
    func rowDerivatives(_ i: Int, eta: Double) -> (devPrime: Double, observedWeight: Double, weightSlope: Double) {
        let y = data.y[i], n = data.n[i]
        let (w, r, mu) = data.family.weightAndResidual(y: y, n: n, eta: eta)
        if data.family.distribution == .binomial && data.family.link == .logit {
            return (-2 * w * r, w, n * mu * (1 - mu) * (1 - 2 * mu))
        }
        if data.family.distribution == .poisson && data.family.link == .log { return (-2 * w * r, w, n * mu) }
        let h = 1e-5 * max(1, abs(eta))
        let up = data.family.weightAndResidual(y: y, n: n, eta: eta + h), dn = data.family.weightAndResidual(y: y, n: n, eta: eta - h)
        return (-2 * w * r, -(up.w * up.r - dn.w * dn.r) / (2 * h), (up.w - dn.w) / (2 * h))
    }

    /// Row i's z̃_i = Λᵀz_i, split into its first-factor block and the dense tail.
    private func reducedRow(_ i: Int, theta: [Double], lambdas: [Matrix]) -> (level: Int?, first: [Double], tail: [Double]) {
        let s = data.structure
        var first: [Double] = []
        var level: Int? = nil
        var tail = [Double](repeating: 0, count: layoutTailDimension)
        for f in 0..<s.factorCount {
            let r = lambdas[f].rows
            let l = data.levels[f][i]
            var zt = [Double](repeating: 0, count: r)
            for b in 0..<r { var v = 0.0; for a in b..<r { v += lambdas[f][a, b] * data.z[f][i * r + a] }; zt[b] = v }
            if f == firstFactorIndex { first = zt; level = l }
            else { let o = tailOffset(f) + l * r; for b in 0..<r { tail[o + b] = zt[b] } }
        }
        return (level, first, tail)
    }

    /// The exact gradient of D_k in (θ…, β…) at the modes `m` (Laplace only).
    func laplaceGradient(theta: [Double], beta: [Double], modes m: Modes) throws -> [Double] {
        precondition(data.chain == nil, "the adjoint gradient is for the first-factor layout; a nested chain's comes from exactJet")
        if firstFactorIndex == nil { return try tailOnlyGradient(theta: theta, beta: beta, modes: m) }
        let s = data.structure
        let nt = theta.count, p = data.p
        let lambdas = (0..<s.factorCount).map { s.factorMatrix($0, theta: theta) }
        let entries = (0..<s.factorCount).map { s.factorEntries($0) }
        var grad = [Double](repeating: 0, count: nt + p)
        let q = dimension
        var dGdu = [Double](repeating: 0, count: q)
        let canonical = isCanonical
        var wObs = [Double](repeating: 0, count: data.rows)
        var devPrime = [Double](repeating: 0, count: data.rows)
        var g = [Double](repeating: 0, count: data.rows)
        // Pass 1: ∂F/∂p, ∂G/∂p at fixed u, ∂G/∂u.
        for i in 0..<data.rows {
            let d = rowDerivatives(i, eta: m.eta[i])
            devPrime[i] = d.devPrime
            wObs[i] = d.observedWeight
            let dw = d.weightSlope
            let row = reducedRow(i, theta: theta, lambdas: lambdas)
            let sol = m.factor.solveLower(level: row.level, first: row.first, tail: row.tail)
            let h = sol.first.reduce(0) { $0 + $1 * $1 } + sol.tail.reduce(0) { $0 + $1 * $1 }
            g[i] = dw * h
            for j in 0..<p { grad[nt + j] += (devPrime[i] + g[i]) * data.x[i * p + j] }
            scatter(row, g[i], into: &dGdu)
            for f in 0..<s.factorCount {
                let r = lambdas[f].rows, l = data.levels[f][i], uo = uOffset(f) + l * r
                for e in entries[f] {
                    let zu = data.z[f][i * r + e.row] * m.u[uo + e.col]      // z_iᵀ ∂Λ_k u
                    grad[e.theta] += (devPrime[i] + g[i]) * zu
                    // explicit: 2 w_i ⟨L⁻¹z̃_i, L⁻¹ E_kᵀ z_i⟩, E_kᵀz_i = z_i[a] at column b of the row's level
                    var ev = (level: row.level, first: [Double](repeating: 0, count: row.first.count),
                              tail: [Double](repeating: 0, count: row.tail.count))
                    if f == firstFactorIndex { ev.first[e.col] = data.z[f][i * r + e.row] }
                    else { ev.tail[tailOffset(f) + l * r + e.col] = data.z[f][i * r + e.row] }
                    let se = m.factor.solveLower(level: ev.level, first: ev.first, tail: ev.tail)
                    var dotv = 0.0
                    for k in 0..<se.first.count { dotv += se.first[k] * sol.first[k] }
                    for k in 0..<se.tail.count { dotv += se.tail[k] * sol.tail[k] }
                    grad[e.theta] += 2 * m.weights[i] * dotv
                }
            }
        }
        // v = M_obs⁻¹ ∂G/∂u
        let obsFactor: BlockedFactor
        if canonical { obsFactor = m.factor } else { obsFactor = try factor(weights: wObs, theta: theta) }
        let v = obsFactor.solve(dGdu)
        // Pass 2: −vᵀ(½ ∂²F/∂u∂p)
        for i in 0..<data.rows {
            let row = reducedRow(i, theta: theta, lambdas: lambdas)
            let zv = gather(row, v)
            for j in 0..<p { grad[nt + j] -= wObs[i] * data.x[i * p + j] * zv }
            for f in 0..<s.factorCount {
                let r = lambdas[f].rows, l = data.levels[f][i], uo = uOffset(f) + l * r
                for e in entries[f] {
                    let za = data.z[f][i * r + e.row]
                    let vb = v[uo + e.col]
                    grad[e.theta] -= 0.5 * devPrime[i] * za * vb + wObs[i] * za * m.u[uo + e.col] * zv
                }
            }
        }
        return grad
    }

    private func scatter(_ row: (level: Int?, first: [Double], tail: [Double]), _ c: Double, into x: inout [Double]) {
        if let l = row.level { let r = row.first.count; for a in 0..<r { x[l * r + a] += c * row.first[a] } }
        let n1 = firstDimension
        for k in 0..<row.tail.count where row.tail[k] != 0 { x[n1 + k] += c * row.tail[k] }
    }

    private func gather(_ row: (level: Int?, first: [Double], tail: [Double]), _ x: [Double]) -> Double {
        var v = 0.0
        if let l = row.level { let r = row.first.count; for a in 0..<r { v += x[l * r + a] * row.first[a] } }
        let n1 = firstDimension
        for k in 0..<row.tail.count where row.tail[k] != 0 { v += x[n1 + k] * row.tail[k] }
        return v
    }

    /// M = ΛᵀZᵀWZΛ + I for given row weights, factored.
    func factor(weights: [Double], theta: [Double]) throws -> BlockedFactor {
        let blocks = weightedBlocks(rootWeights: weights.map { max($0, 0).squareRoot() }, responses: nil)
        return try BlockedFactor(blocks, structure: data.structure, theta: theta)
    }
}

extension GLMMSite {
    /// D_k and its exact gradient in (θ…, β…) (Laplace).
    public func laplaceValueAndGradient(theta: [Double], beta: [Double], start: [Double]? = nil) throws -> (value: Double, gradient: [Double], modes: [Double]) {
        let m = try modes(theta: theta, beta: beta, start: start)
        return (m.penalizedDeviance + m.factor.logDet, try laplaceGradient(theta: theta, beta: beta, modes: m), m.u)
    }
}

extension GLMMSite {
    /// The same gradient when every factor has few levels at the site (no
    /// per-level blocks): L⁻¹ is a small dense matrix, so every row's terms
    /// are dot products with reused buffers.
    func tailOnlyGradient(theta: [Double], beta: [Double], modes m: Modes) throws -> [Double] {
        let s = data.structure
        let nf = s.factorCount, nt = theta.count, p = data.p
        let td = layoutTailDimension
        let lambdas = (0..<nf).map { s.factorMatrix($0, theta: theta) }
        let dims = lambdas.map(\.rows)
        let entries = (0..<nf).map { s.factorEntries($0) }
        let offsets = (0..<nf).map { tailOffset($0) }
        // L⁻¹ of the tail factor, column-major td × td.
        var linv = [Double](repeating: 0, count: td * td)
        for c in 0..<td {
            var e = [Double](repeating: 0, count: td); e[c] = 1
            let (_, col) = m.factor.solveLower(level: nil, first: [], tail: e)
            for r in 0..<td { linv[r + c * td] = col[r] }
        }
        let canonical = isCanonical
        var grad = [Double](repeating: 0, count: nt + p)
        var dGdu = [Double](repeating: 0, count: td)
        var wObs = [Double](repeating: 0, count: data.rows)
        var devPrime = [Double](repeating: 0, count: data.rows)
        var zt = [Double](repeating: 0, count: td), sol = [Double](repeating: 0, count: td)
        func reduce(_ i: Int) {
            for k in 0..<td { zt[k] = 0 }
            for f in 0..<nf {
                let r = dims[f], base = offsets[f] + data.levels[f][i] * r
                for b in 0..<r { var v = 0.0; for a in b..<r { v += lambdas[f][a, b] * data.z[f][i * r + a] }; zt[base + b] = v }
            }
        }
        for i in 0..<data.rows {
            let d = rowDerivatives(i, eta: m.eta[i])
            devPrime[i] = d.devPrime
            wObs[i] = d.observedWeight
            let dw = d.weightSlope
            reduce(i)
            var h = 0.0
            for r2 in 0..<td {
                var v = 0.0
                for c in 0...r2 { v += linv[r2 + c * td] * zt[c] }
                sol[r2] = v; h += v * v
            }
            let g = dw * h
            for j in 0..<p { grad[nt + j] += (devPrime[i] + g) * data.x[i * p + j] }
            for k in 0..<td { dGdu[k] += g * zt[k] }
            for f in 0..<nf {
                let rf = dims[f], base = offsets[f] + data.levels[f][i] * rf
                for e in entries[f] {
                    let za = data.z[f][i * rf + e.row]
                    grad[e.theta] += (devPrime[i] + g) * za * m.u[base + e.col]
                    // 2 w ⟨L⁻¹z̃, L⁻¹(za e_c)⟩, L⁻¹e_c = column c of L⁻¹
                    let c = base + e.col
                    var dotv = 0.0
                    for r2 in c..<td { dotv += linv[r2 + c * td] * sol[r2] }
                    grad[e.theta] += 2 * m.weights[i] * za * dotv
                }
            }
        }
        let v: [Double]
        if canonical { v = m.factor.solve(dGdu) } else { v = try factor(weights: wObs, theta: theta).solve(dGdu) }
        for i in 0..<data.rows {
            reduce(i)
            var zv = 0.0
            for k in 0..<td { zv += zt[k] * v[k] }
            for j in 0..<p { grad[nt + j] -= wObs[i] * data.x[i * p + j] * zv }
            for f in 0..<nf {
                let rf = dims[f], base = offsets[f] + data.levels[f][i] * rf
                for e in entries[f] {
                    let za = data.z[f][i * rf + e.row]
                    grad[e.theta] -= 0.5 * devPrime[i] * za * v[base + e.col] + wObs[i] * za * m.u[base + e.col] * zv
                }
            }
        }
        return grad
    }
}

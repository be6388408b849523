// Exact first and second derivatives of a site's GLMM objective D_k(θ, β),
// Laplace or adaptive Gauss–Hermite, from one PIRLS solve.
//
// Forward mode: every quantity is carried as a jet in p = (θ…, β…) (value,
// gradient, upper-triangle Hessian). The conditional modes û(p) are defined
// implicitly by the mode equation
//     Φ(u, p) = ∂F/∂u = Σ_i dev′(η_i) z̃_i + 2u = 0,   z̃_i = Λᵀz_i,
// whose Jacobian in u is ∂Φ/∂u = 2·M_obs (M_obs = Σ ½dev″(η_i) z̃_i z̃_iᵀ + I).
// Differentiating Φ(û(p), p) = 0 once and twice, the unknown derivative of
// û enters linearly with that Jacobian, so
//     û_a  = −(2M_obs)⁻¹ Φ_a          (Φ evaluated with û's derivatives set to 0)
//     û_ab = −(2M_obs)⁻¹ Φ_ab         (Φ evaluated with û_a known and û_ab set to 0):
// one pass over the rows and dim(p) (then dim(p)(dim(p)+1)/2) solves with the
// blocked factor each. The Laplace objective outside a nested chain skips the
// second stage: D depends on û_ab only through G_uᵀû_ab (G = F + log|M|), which
// is −½vᵀΦ_ab with v = M_obs⁻¹G_u, G_u = Φ + Σ_i w′_i (z̃_iᵀM⁻¹z̃_i) z̃_i taken
// in stage 1's pass; vᵀΦ_ab is added row by row in the Laplace pass, from the
// η jets it forms anyway (with û_ab = 0, as stage 2 would). A nested chain and
// quadrature keep the two stages. With û as a full jet, η_i, every row's deviance and
// Fisher weight are jets by the chain rule, and so is
//     Laplace:  D = Σ dev_i + ‖û‖² + log|ΛᵀZᵀW(û)ZΛ + I|,
// whose log-determinant is taken through the same blocked Cholesky as the
// value (per-level blocks of the largest within-site factor, dense tail),
// with jet arithmetic; and
//     AGQ:      D = Σ_g [h_g(û_g) + log m_g − 2 log Σ_k w_k exp(−(h_g(û_g + z_k/√m_g) − h_g(û_g) − z_k²)/2)],
// where every node moves with the mode and the scale (implicit function
// theorem through û and m_g). The row functions dev, dev′, dev″, dev‴ and the
// Fisher weight w, w′, w″ are closed forms for every supported link.

import Foundation

/// One row's deviance −2 log p(y | μ(η)) with three η-derivatives, and its
/// Fisher weight n (dμ/dη)²/V(μ) with two.
struct RowEtaDerivatives {
    var dev: Double, d1: Double, d2: Double, d3: Double
    var w: Double, w1: Double, w2: Double
}

extension GLMFamily {
    /// μ and dμ/dη (as `mu` and `muEta` give them at η), with the second and
    /// third derivatives of the inverse link in closed form.
    @inline(__always) func muDerivatives(_ eta: Double, mu m: Double, muEta m1: Double) -> (m: Double, m1: Double, m2: Double, m3: Double) {
        switch link {
        case .logit:
            let s = 1 - 2 * m, m2 = m1 * s
            return (m, m1, m2, m2 * s - 2 * m1 * m1)
        case .probit:
            return (m, m1, -eta * m1, (eta * eta - 1) * m1)
        case .cloglog:
            let t = Foundation.exp(min(eta, 700))
            return (m, m1, m1 * (1 - t), m1 * ((1 - t) * (1 - t) - t))
        case .log:
            return (m, m1, m1, m1)
        case .identity:
            return (m, 1, 0, 0)
        }
    }

    /// Row derivatives in η (the values are those of `minusTwoLogLik` and
    /// `weightAndResidual`, so they agree with PIRLS to the bit).
    /// μ and dμ/dη come from `meanAndSlope`, as PIRLS takes them, so the GLM start agrees with the full
    /// evaluation at θ = 0 to the bit.
    @inline(__always) func etaDerivatives(y: Double, n: Double, eta: Double) -> RowEtaDerivatives {
        let (m, d) = meanAndSlope(eta)
        return etaDerivatives(y: y, n: n, eta: eta, mu: m, muEta: d, deviance: minusTwoLogLik(y: y, n: n, mu: m))
    }

    /// The same from μ, dμ/dη and the row's deviance at η already at hand
    /// (PIRLS's last pass, GLMMSite.Modes): no exp or log again.
    @inline(__always) func etaDerivatives(y: Double, n: Double, eta: Double, mu: Double, muEta: Double, deviance dev: Double) -> RowEtaDerivatives {
        let (m, m1, m2, m3) = muDerivatives(eta, mu: mu, muEta: muEta)
        let w = weightAndResidual(y: y, n: n, mu: m, muEta: m1).w
        switch distribution {
        case .gaussian: preconditionFailure("the gaussian family is fitted as a linear mixed model")
        case .binomial:
            // dev = −2[y log μ + (n−y) log(1−μ)]: with A = ∂/∂μ of the bracket
            let f = n - y
            var a0 = 0.0, a1 = 0.0, a2 = 0.0
            if y > 0 { a0 += y / m; a1 -= y / (m * m); a2 += 2 * y / (m * m * m) }
            if f > 0 { let c = 1 - m; a0 -= f / c; a1 -= f / (c * c); a2 -= 2 * f / (c * c * c) }
            let d1 = -2 * a0 * m1
            let d2 = -2 * (a1 * m1 * m1 + a0 * m2)
            let d3 = -2 * (a2 * m1 * m1 * m1 + 3 * a1 * m1 * m2 + a0 * m3)
            // w = n·a·b with a = μ′², b = 1/V, V = μ(1−μ)
            let v = Swift.max(m * (1 - m), Self.eps)
            let v1 = (1 - 2 * m) * m1, v2 = -2 * m1 * m1 + (1 - 2 * m) * m2
            let a = m1 * m1, ap = 2 * m1 * m2, app = 2 * (m2 * m2 + m1 * m3)
            let b = 1 / v, bp = -v1 / (v * v), bpp = -v2 / (v * v) + 2 * v1 * v1 / (v * v * v)
            return RowEtaDerivatives(dev: dev, d1: d1, d2: d2, d3: d3, w: w,
                                     w1: n * (ap * b + a * bp), w2: n * (app * b + 2 * ap * bp + a * bpp))
        case .poisson:
            // log link: dev = −2n(y log μ − μ − log y!), μ′ = μ″ = μ
            return RowEtaDerivatives(dev: dev, d1: -2 * n * (y - m), d2: 2 * n * m, d3: 2 * n * m,
                                     w: w, w1: n * m, w2: n * m)
        }
    }
}

extension GLMMSite {
    /// D_k at the modes `m`, exactly as `objective` computes it.
    func objectiveValue(theta: [Double], modes m: Modes, nAGQ: Int) throws -> Double {
        if nAGQ <= 1 { return m.penalizedDeviance + m.factor.logDet }
        let s = data.structure
        guard s.terms.count == 1, s.terms[0].dimension == 1 else { throw GLMMError.quadratureNeedsOneScalarTerm }
        let rule = GaussHermiteRule.cached(points: nAGQ)
        let th = theta[0]
        let groups = data.levelCounts[0]
        var rowsOf = [[Int]](repeating: [], count: groups)
        for i in 0..<data.rows { rowsOf[data.levels[0][i]].append(i) }
        var total = 0.0
        for g in 0..<groups {
            let ug = m.u[uOffset(0) + g]
            var swz = 0.0
            for i in rowsOf[g] { swz += m.weights[i] * data.z[0][i] * data.z[0][i] }
            let mgg = 1 + th * th * swz
            func h(_ u: Double) -> Double {
                var d = u * u
                for i in rowsOf[g] {
                    let e = m.eta[i] + data.z[0][i] * th * (u - ug)
                    d += data.family.minusTwoLogLik(y: data.y[i], n: data.n[i], mu: data.family.meanAndSlope(e).mu)
                }
                return d
            }
            let h0 = h(ug)
            let sd = 1 / mgg.squareRoot()
            var sum = 0.0
            for (z, w) in zip(rule.nodes, rule.weights) {
                sum += w * Foundation.exp(-(h(ug + z * sd) - h0 - z * z) / 2)
            }
            total += h0 + Foundation.log(mgg) - 2 * Foundation.log(sum)
        }
        guard total.isFinite else { throw GLMMError.nonFinite }
        return total
    }

    /// D_k with its exact gradient (order 1) and Hessian (order 2) in
    /// (θ…, β…) at the modes `m`; the value slot holds `value`.
    /// `modeSlopes`, when given, receives dû/d(θ, β) (q × dim(p), row-major)
    /// once the first-order solves have them (GLMMModeSlope.swift). With only site-level effects the jet
    /// comes from the site-level sums (GLMMSiteLevelJet.swift) unless `siteLevelSums` is false (tests compare).
    func exactJet(theta: [Double], beta: [Double], modes m: Modes, order: Int, nAGQ: Int, value: Double,
                  modeSlopes: (([Double]) -> Void)? = nil, siteLevelSums: Bool = true) throws -> ScalarJet {
        let s = data.structure, nf = s.factorCount
        let nt = theta.count, p = data.p, np = nt + p
        let space = JetSpace(parameters: np, order: order)
        var out = ScalarJet(space: space, value: value)
        guard order >= 1 else { return out }
        if nAGQ > 1 { guard s.terms.count == 1, s.terms[0].dimension == 1 else { throw GLMMError.quadratureNeedsOneScalarTerm } }
        if siteLevelSums && usesSiteLevelJet(nAGQ: nAGQ) {
            return try siteLevelJet(theta: theta, modes: m, order: order, value: value, modeSlopes: modeSlopes)
        }
        let W = space.width
        let kernel = JetKernel(space)
        let q = dimension, rows = data.rows
        let dims = (0..<nf).map { s.factorDimension($0) }
        let lambdas = (0..<nf).map { s.factorMatrix($0, theta: theta) }
        let entries = (0..<nf).map { s.factorEntries($0) }
        let rowWidth = dims.reduce(0, +)
        let rd = (0..<rows).map { i in
            data.family.etaDerivatives(y: data.y[i], n: data.n[i], eta: m.eta[i], mu: m.rows.mu[i], muEta: m.rows.muEta[i],
                                       deviance: m.rows.deviance[i])
        }

        let buffer = Scratch()
        defer { buffer.free() }
        let zt = buffer.doubles(max(rowWidth, 1) * W)          // the row's z̃ entries as jets in θ
        let cols = buffer.ints(max(rowWidth, 1))               // their positions in u
        let E = buffer.doubles(W), T1 = buffer.doubles(W), T2 = buffer.doubles(W)
        let U = buffer.doubles(max(q, 1) * W)                  // û as jets
        let Phi = buffer.doubles(max(q, 1) * W)
        for c in 0..<q { U[c * W] = m.u[c] }

        /// z̃_i = Λᵀz_i for row i (jets: linear in θ) and the u index of each entry.
        func loadRow(_ i: Int) {
            var k = 0
            for f in 0..<nf {
                let r = dims[f], base = uOffset(f) + data.levels[f][i] * r, zrow = i * r, k0 = k
                for c in 0..<r {
                    // z̃ is linear in θ: only its value and θ slots are ever written (the rest stay 0).
                    let dst = zt + k * W
                    dst.update(repeating: 0, count: 1 + nt)
                    var v = 0.0
                    for a in c..<r { v += lambdas[f][a, c] * data.z[f][zrow + a] }
                    dst[0] = v
                    cols[k] = base + c
                    k += 1
                }
                for e in entries[f] { zt[(k0 + e.col) * W + 1 + e.theta] += data.z[f][zrow + e.row] }
            }
        }
        /// The derivative parts of η_i = o + xβ + z̃ᵀû (its value slot is not used).
        func etaJet(_ i: Int) { etaJet(i, kernel) }
        func etaJet(_ i: Int, _ kernel: JetKernel) {
            E.update(repeating: 0, count: W)
            for j in 0..<p { E[1 + nt + j] = data.x[i * p + j] }
            for k in 0..<rowWidth { kernel.mulAdd(E, linear: zt + k * W, m: nt, U + cols[k] * W) }
        }
        /// c = f∘a given f, f′, f″ at a's value (c may alias a).
        func compose(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ f0: Double, _ f1: Double, _ f2: Double) {
            compose(c, a, f0, f1, f2, order: order)
        }
        func compose(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ f0: Double, _ f1: Double, _ f2: Double,
                     order: Int) {
            if order >= 2 {
                var k = 1 + np   // the pairs (i ≤ j) in the jet's order
                for j in 1...np { let aj = a[j]; for i in 1...j { c[k] = f2 * a[i] * aj + f1 * a[k]; k += 1 } }
            }
            for k in 1...np { c[k] = f1 * a[k] }
            c[0] = f0
        }

        // The derivatives of û, from the mode equation.
        let mObs = isCanonical ? m.factor : try factor(weights: rd.map { 0.5 * $0.d2 }, theta: theta)
        // Stage 1 needs first derivatives only: the same storage, a first-order kernel.
        let firstOrder = JetKernel(JetSpace(parameters: np, order: 1))
        // Laplace at order 2 outside a nested chain: û_ab is not solved for. D depends on û_ab only
        // through G_uᵀû_ab, G_u = Φ + ∂log|M|/∂u (Φ ≈ 0 at the mode), and û_ab = −(2M_obs)⁻¹Φ_ab, so
        // G_uᵀû_ab = −½ vᵀΦ_ab with the adjoint v = M_obs⁻¹G_u; vᵀΦ_ab is summed in the Laplace pass from
        // the η jets it forms anyway (with û_ab = 0, as stage 2 would): one pass over the rows fewer.
        let adjoint = order >= 2 && nAGQ <= 1 && data.chain == nil && q > 0
        let gU = buffer.doubles(max(q, 1))                     // ∂log|M|/∂u = Σ_i w′_i (z̃_iᵀM⁻¹z̃_i) z̃_i
        let leverage = adjoint ? rowLeverage(m.factor) : nil
        func modeEquation(order stage: Int) {
            let k2 = stage >= 2 ? kernel : firstOrder
            Phi.update(repeating: 0, count: max(q, 1) * W)
            for i in 0..<rows {
                loadRow(i)
                etaJet(i, k2)
                compose(T1, E, rd[i].d1, rd[i].d2, rd[i].d3, order: stage)
                for k in 0..<rowWidth { k2.mulAdd(Phi + cols[k] * W, T1, linear: zt + k * W, m: nt) }
                if let leverage {
                    let c = rd[i].w1 * leverage(zt, cols, rowWidth, W)
                    for k in 0..<rowWidth { gU[cols[k]] += c * zt[k * W] }
                }
            }
            for t in 0..<(q * W) { Phi[t] += 2 * U[t] }
        }
        func solveSlots(_ slots: Range<Int>) {
            var rhs = [Double](repeating: 0, count: q)
            for slot in slots {
                for c in 0..<q { rhs[c] = Phi[c * W + slot] }
                let x = mObs.solve(rhs)
                for c in 0..<q { U[c * W + slot] = -0.5 * x[c] }
            }
        }
        let adjointV = buffer.doubles(max(q, 1))
        if q > 0 {
            modeEquation(order: 1); solveSlots(1..<(1 + np))
            if let modeSlopes {
                var du = [Double](repeating: 0, count: q * np)
                for c in 0..<q { for a in 0..<np { du[c * np + a] = U[c * W + 1 + a] } }
                modeSlopes(du)
            }
            if adjoint {
                for c in 0..<q { gU[c] += Phi[c * W] }
                let v = mObs.solve((0..<q).map { gU[$0] })
                for c in 0..<q { adjointV[c] = v[c] }
            } else if order >= 2 { modeEquation(order: 2); solveSlots((1 + np)..<W) }
        }

        let acc = buffer.doubles(W)
        let S = buffer.doubles(1 + nt)
        /// Adds −½ vᵀ(row i's term of Φ)'s second-order slots to T1 (row i's deviance jet, just composed from
        /// the η jet E): with s = vᵀz̃_i (linear in θ) and Φ's row term dev′(η)·z̃_i, the pair (a, b) gets
        /// −½[s₀(dev‴E_aE_b + dev″E_ab) + dev″(s_aE_b + s_bE_a)].
        func adjointRow(_ i: Int) {
            S.update(repeating: 0, count: 1 + nt)
            for k in 0..<rowWidth {
                let vc = adjointV[cols[k]], z = zt + k * W
                for t in 0...nt { S[t] += vc * z[t] }
            }
            let s0 = S[0], d2 = rd[i].d2, f2 = -0.5 * s0 * rd[i].d3, f1 = -0.5 * s0 * d2, h = -0.5 * d2
            var k = 1 + np
            for b in 1...np {
                let eb = E[b], sb = b <= nt ? S[b] : 0
                for a in 1...b {
                    let sa = a <= nt ? S[a] : 0
                    T1[k] += f2 * E[a] * eb + f1 * E[k] + h * (sa * eb + sb * E[a])
                    k += 1
                }
            }
        }
        if nAGQ > 1 {
            try quadratureJet(theta: theta, modes: m, nAGQ: nAGQ, rd: rd, space: space, kernel: kernel, U: U,
                              loadRow: loadRow, etaJet: etaJet, compose: compose, zt: zt, E: E, into: acc)
        } else {
            try laplaceJet(theta: theta, modes: m, rd: rd, space: space, kernel: kernel, U: U,
                           loadRow: loadRow, etaJet: etaJet, compose: compose, E: E, T1: T1, T2: T2,
                           adjointRow: adjoint ? adjointRow : nil, into: acc)
        }
        for k in 1..<W { out.storage[k] = acc[k] }
        guard out.storage.allSatisfy(\.isFinite) else { throw GLMMError.nonFinite }
        return out
    }

    /// Σ dev_i + ‖û‖² + log|M| as a jet, M's blocks accumulated row by row as
    /// jets and factored blockwise with jet arithmetic.
    private func laplaceJet(theta: [Double], modes m: Modes, rd: [RowEtaDerivatives], space: JetSpace, kernel: JetKernel,
                            U: UnsafeMutablePointer<Double>, loadRow: (Int) -> Void, etaJet: (Int) -> Void,
                            compose: (UnsafeMutablePointer<Double>, UnsafePointer<Double>, Double, Double, Double) -> Void,
                            E: UnsafeMutablePointer<Double>, T1: UnsafeMutablePointer<Double>, T2: UnsafeMutablePointer<Double>,
                            adjointRow: ((Int) -> Void)?, into out: UnsafeMutablePointer<Double>) throws {
        let s = data.structure, nf = s.factorCount, nt = theta.count
        let W = space.width, q = dimension
        let dims = (0..<nf).map { s.factorDimension($0) }
        let blocks = m.factor.blocks
        let td = blocks.tailDimension
        let buffer = Scratch()
        defer { buffer.free() }
        let fb = blocks.first
        let r1 = fb?.dimension ?? 0, levels1 = fb?.levels ?? 0
        let A = buffer.doubles(max(levels1 * r1 * r1, 1) * W)
        let nCross = fb?.crossColumn.count ?? 0
        let C = buffer.doubles(max(nCross * r1, 1) * W)
        var tt = JetMatrix(rows: td, cols: td, space: space)
        let tailFactors = blocks.tail
        let tailWidth = tailFactors.reduce(0) { $0 + dims[$1.factor] }
        let tcols = buffer.ints(max(tailWidth, 1))
        let tvals = buffer.doubles(max(tailWidth, 1))
        let firstFactor = fb?.factor
        // A nested chain's per-level sums as jets (NestedChain.Factor's layouts), in an arena for NestedElimination.
        let chain = m.factor.blocks.nested?.factors ?? []
        let arena = JetArena(width: W)
        let chainZZ = chain.map { arena.doubles($0.levels * $0.dimension * $0.dimension * W) }
        let chainCross = chain.map { arena.doubles($0.levels * $0.dimension * $0.crossWidth * W) }
        var coarserOffset = [0]          // a row's coarser values: the chain factors' z, then the tail
        for f in chain { coarserOffset.append(coarserOffset[coarserOffset.count - 1] + f.dimension) }
        let coarser = buffer.doubles(max(coarserOffset.last! + td, 1))
        try tt.storage.withUnsafeMutableBufferPointer { ttp in
            let TT = ttp.baseAddress!
            for i in 0..<data.rows {
                loadRow(i)
                etaJet(i)
                compose(T1, E, rd[i].dev, rd[i].d1, rd[i].d2)
                adjointRow?(i)
                for k in 1..<W { out[k] += T1[k] }
                compose(T2, E, rd[i].w, rd[i].w1, rd[i].w2)
                var nt2 = 0
                for t in tailFactors {
                    let f = t.factor, r = dims[f], base = t.offset + data.levels[f][i] * r
                    for a in 0..<r { tcols[nt2] = base + a; tvals[nt2] = data.z[f][i * r + a]; nt2 += 1 }
                }
                for b in 0..<nt2 {
                    let vb = tvals[b]
                    if vb == 0 { continue }
                    for a in 0..<nt2 {
                        let f = tvals[a] * vb
                        if f == 0 { continue }
                        let dst = TT + (tcols[a] + tcols[b] * td) * W
                        for k in 0..<W { dst[k] += f * T2[k] }
                    }
                }
                if !chain.isEmpty {
                    let vt = coarserOffset[chain.count]
                    for (k, f) in chain.enumerated() {
                        for a in 0..<f.dimension { coarser[coarserOffset[k] + a] = data.z[f.factor][i * f.dimension + a] }
                    }
                    for q in 0..<td { coarser[vt + q] = 0 }
                    for b in 0..<nt2 { coarser[vt + tcols[b]] = tvals[b] }
                    for (k, f) in chain.enumerated() {
                        let r = f.dimension, c = f.crossWidth, l = data.levels[f.factor][i], zk = coarser + coarserOffset[k]
                        let zzl = chainZZ[k] + l * r * r * W, crl = chainCross[k] + l * r * c * W, co = coarser + coarserOffset[k + 1]
                        for b in 0..<r { for a in 0..<r {
                            let f = zk[a] * zk[b]
                            if f == 0 { continue }
                            let dst = zzl + (a + b * r) * W
                            for q in 0..<W { dst[q] += f * T2[q] }
                        } }
                        for b in 0..<c { for a in 0..<r {
                            let f = zk[a] * co[b]
                            if f == 0 { continue }
                            let dst = crl + (a + b * r) * W
                            for q in 0..<W { dst[q] += f * T2[q] }
                        } }
                    }
                }
                guard let f1 = firstFactor, let fb else { continue }
                let l = data.levels[f1][i], z1 = i * r1
                let al = A + l * r1 * r1 * W
                for b in 0..<r1 { for a in 0..<r1 {
                    let f = data.z[f1][z1 + a] * data.z[f1][z1 + b]
                    if f == 0 { continue }
                    let dst = al + (a + b * r1) * W
                    for k in 0..<W { dst[k] += f * T2[k] }
                } }
                let cs = fb.crossStart[l], ce = fb.crossStart[l + 1]
                for b in 0..<nt2 {
                    // the cross entry of (level l, tail column tcols[b]); columns are sorted
                    var lo = cs, hi = ce
                    while lo < hi { let mid = (lo + hi) / 2; if fb.crossColumn[mid] < tcols[b] { lo = mid + 1 } else { hi = mid } }
                    guard lo < ce, fb.crossColumn[lo] == tcols[b] else { throw GLMMError.nonFinite }
                    let ce0 = C + lo * r1 * W
                    for a in 0..<r1 {
                        let f = data.z[f1][z1 + a] * tvals[b]
                        if f == 0 { continue }
                        let dst = ce0 + a * W
                        for k in 0..<W { dst[k] += f * T2[k] }
                    }
                }
            }
        }
        // ‖û‖²
        for c in 0..<q { kernel.mulAdd(out, U + c * W, U + c * W, 1) }
        // log|M|, blockwise: per level F Fᵀ = T₁ᵀA_lT₁ + I, Y = F⁻¹T₁ᵀC_l,
        // then the tail Λtᵀ(TT − Σ YᵀY)Λt + I.
        let thetaMap = Array(0..<nt)
        if let fb {
            let t1 = s.factorJet(fb.factor, theta: theta, space: space, parameterMap: thetaMap)
            var ncMax = 0
            for l in 0..<levels1 { ncMax = max(ncMax, fb.crossStart[l + 1] - fb.crossStart[l]) }
            let Kb = buffer.doubles(r1 * r1 * W), F = buffer.doubles(r1 * r1 * W)
            let Y = buffer.doubles(max(r1 * ncMax, 1) * W), YY = buffer.doubles(max(ncMax * ncMax, 1) * W)
            let tmp = buffer.doubles(W)
            try t1.storage.withUnsafeBufferPointer { t1p in
                try tt.storage.withUnsafeMutableBufferPointer { ttp in
                    let T = t1p.baseAddress!, TT = ttp.baseAddress!
                    for l in 0..<levels1 {
                        let al = A + l * r1 * r1 * W
                        Kb.update(repeating: 0, count: r1 * r1 * W)
                        JetBlas.addProduct(Kb, m: r1, n: r1, inner: r1, al, ar: r1, transposeA: false, T, br: r1,
                                           transposeB: false, sign: 1, w: W, kernel: kernel)
                        F.update(repeating: 0, count: r1 * r1 * W)
                        JetBlas.addProduct(F, m: r1, n: r1, inner: r1, T, ar: r1, transposeA: true, Kb, br: r1,
                                           transposeB: false, sign: 1, w: W, kernel: kernel)
                        for a in 0..<r1 { F[(a + a * r1) * W] += 1 }
                        try JetBlas.cholesky(F, n: r1, w: W, kernel: kernel, scratch: tmp)
                        for a in 0..<r1 { kernel.logAdd(out, F + (a + a * r1) * W, 2) }
                        let cs = fb.crossStart[l], nc = fb.crossStart[l + 1] - cs
                        guard nc > 0 else { continue }
                        Y.update(repeating: 0, count: r1 * nc * W)
                        JetBlas.addProduct(Y, m: r1, n: nc, inner: r1, T, ar: r1, transposeA: true, C + cs * r1 * W, br: r1,
                                           transposeB: false, sign: 1, w: W, kernel: kernel)
                        JetBlas.solveLower(Y, n: r1, cols: nc, F, w: W, kernel: kernel, scratch: tmp)
                        YY.update(repeating: 0, count: nc * nc * W)
                        JetBlas.addProduct(YY, m: nc, n: nc, inner: r1, Y, ar: r1, transposeA: true, Y, br: r1,
                                           transposeB: false, sign: 1, w: W, kernel: kernel)
                        for b in 0..<nc { for a in 0..<nc {
                            let src = YY + (a + b * nc) * W
                            let dst = TT + (fb.crossColumn[cs + a] + fb.crossColumn[cs + b] * td) * W
                            for k in 0..<W { dst[k] -= src[k] }
                        } }
                    }
                }
            }
        }
        if !chain.isEmpty {
            // log|M|, level by level over the chain (finest first), leaving Σ YᵀY to subtract from the tail.
            let T = chain.map { arena.block(copying: s.factorJet($0.factor, theta: theta, space: space, parameterMap: thetaMap)) }
            let sums = NestedElimination.Sums(zz: chainZZ, zw: chain.map { _ in arena.doubles(0) }, cross: chainCross)
            let r = try NestedElimination.eliminate(chain, sums: sums, factorJets: T, width: 0, tailDimension: td, arena: arena,
                                                    ops: arena.ops(kernel))
            for k in 0..<W { out[k] += r.logDet[k] }
            tt.storage.withUnsafeMutableBufferPointer { ttp in
                for k in 0..<(td * td * W) { ttp[k] -= r.tt.base[k] }
            }
        }
        guard td > 0 else { return }
        try addTailLogDet(tt, tail: tailFactors, theta: theta, space: space, kernel: kernel, into: out)
    }

    /// Adds the derivative slots of log|ΛtᵀTTΛt + I| to `out`, TT (td × td jets, both triangles) being the
    /// tail's sums less what the levels before it took (the Laplace pass's, or the site-level sums' of
    /// GLMMSiteLevelJet.swift).
    func addTailLogDet(_ tt: JetMatrix, tail tailFactors: [SiteBlocks.TailFactor], theta: [Double], space: JetSpace,
                       kernel: JetKernel, into out: UnsafeMutablePointer<Double>) throws {
        let s = data.structure, nf = s.factorCount, nt = theta.count, W = space.width, td = tt.rows
        let dims = (0..<nf).map { s.factorDimension($0) }
        let thetaMap = Array(0..<nt)
        let buffer = Scratch()
        defer { buffer.free() }
        // Λtᵀ TT Λt block by block: Λt is block diagonal (one T per level of
        // each tail factor), so block (I, J) is T_Iᵀ TT[I, J] T_J, and blocks
        // of TT that are zero (wards that share no row) are skipped.
        var factorJets: [Int: JetMatrix] = [:]
        var tailBlocks: [(offset: Int, r: Int, factor: Int)] = []
        for tf in tailFactors {
            let r = dims[tf.factor]
            factorJets[tf.factor] = s.factorJet(tf.factor, theta: theta, space: space, parameterMap: thetaMap)
            for lvl in 0..<tf.levels { tailBlocks.append((tf.offset + lvl * r, r, tf.factor)) }
        }
        var btt = JetMatrix(rows: td, cols: td, space: space)
        let rMax = dims.max() ?? 1
        let tmpIJ = buffer.doubles(rMax * rMax * W), outIJ = buffer.doubles(rMax * rMax * W)
        tt.storage.withUnsafeBufferPointer { ttp in
            btt.storage.withUnsafeMutableBufferPointer { bp in
                let TT = ttp.baseAddress!, B = bp.baseAddress!
                for bj in tailBlocks {
                    let tJ = factorJets[bj.factor]!
                    for bi in tailBlocks {
                        let sub = TT + (bi.offset + bj.offset * td) * W
                        var zero = true
                        check: for j in 0..<bj.r { for i in 0..<bi.r {
                            let e = sub + (i + j * td) * W
                            for k in 0..<W where e[k] != 0 { zero = false; break check }
                        } }
                        if zero { continue }
                        tmpIJ.update(repeating: 0, count: bi.r * bj.r * W)
                        tJ.storage.withUnsafeBufferPointer { tjp in
                            JetBlas.addProduct(tmpIJ, m: bi.r, n: bj.r, inner: bj.r, sub, ar: td, transposeA: false,
                                               tjp.baseAddress!, br: bj.r, transposeB: false, sign: 1, w: W, kernel: kernel)
                        }
                        outIJ.update(repeating: 0, count: bi.r * bj.r * W)
                        factorJets[bi.factor]!.storage.withUnsafeBufferPointer { tip in
                            JetBlas.addProduct(outIJ, m: bi.r, n: bj.r, inner: bi.r, tip.baseAddress!, ar: bi.r, transposeA: true,
                                               tmpIJ, br: bi.r, transposeB: false, sign: 1, w: W, kernel: kernel)
                        }
                        for j in 0..<bj.r { for i in 0..<bi.r {
                            let src = outIJ + (i + j * bi.r) * W, dst = B + (bi.offset + i + (bj.offset + j) * td) * W
                            for k in 0..<W { dst[k] = src[k] }
                        } }
                    }
                }
            }
        }
        btt.addToDiagonal(1)
        let tmpEntry = buffer.doubles(W)
        try btt.storage.withUnsafeMutableBufferPointer { bp in
            try Self.sparseCholesky(bp.baseAddress!, n: td, w: W, kernel: kernel, scratch: tmpEntry)
        }
        let ld = btt.sumLogDiagonal(scale: 2)
        for k in 1..<W { out[k] += ld.storage[k] }
    }

    /// z̃ᵀM⁻¹z̃ for one row's z̃ (the value slots of `zt`, width-`W` jets, at u positions `cols`), with M
    /// the factored first-factor or tail-only layout: M⁻¹ itself when only the small tail exists, else
    /// ‖L⁻¹z̃‖² through one level's block and the tail.
    func rowLeverage(_ factor: BlockedFactor) -> (UnsafePointer<Double>, UnsafePointer<Int>, Int, Int) -> Double {
        let n1 = firstDimension, td = layoutTailDimension
        guard let lb = factor.blocks.first else {
            let inv = factor.trailingInverse(size: td)
            return { zt, cols, width, W in
                var h = 0.0
                for b in 0..<width {
                    var t = 0.0
                    for a in 0..<width { t += inv[cols[a], cols[b]] * zt[a * W] }
                    h += t * zt[b * W]
                }
                return h
            }
        }
        let r1 = lb.dimension
        return { zt, cols, width, W in
            var first = [Double](repeating: 0, count: r1), tail = [Double](repeating: 0, count: td)
            var level = 0
            for k in 0..<width {
                let c = cols[k]
                if c < n1 { level = c / r1; first[c % r1] = zt[k * W] } else { tail[c - n1] = zt[k * W] }
            }
            let y = factor.solveLower(level: level, first: first, tail: tail)
            return y.first.reduce(0) { $0 + $1 * $1 } + y.tail.reduce(0) { $0 + $1 * $1 }
        }
    }

    /// JetBlas.cholesky, skipping products with entries that are zero in
    /// every slot (wards that share no patient, and their zero fill): the
    /// same sums without their exact-zero terms, at a fraction of the cost
    /// for a tail of many nested levels and one site effect.
    static func sparseCholesky(_ s: UnsafeMutablePointer<Double>, n: Int, w: Int, kernel: JetKernel,
                               scratch t: UnsafeMutablePointer<Double>) throws {
        var nz = [Bool](repeating: false, count: n * n)
        func isNonzero(_ e: UnsafePointer<Double>) -> Bool {
            for k in 0..<w where e[k] != 0 { return true }
            return false
        }
        for j in 0..<n { for i in j..<n { nz[i + j * n] = isNonzero(s + (i + j * n) * w) } }
        for j in 0..<n {
            let djj = s + (j + j * n) * w
            // L[j, k] for k < j that are nonzero
            var ks: [Int] = []
            for k in 0..<j where nz[j + k * n] { ks.append(k) }
            for k in ks { let ljk = s + (j + k * n) * w; kernel.mulAdd(djj, ljk, ljk, -1) }
            guard djj[0] > 0, djj[0].isFinite else { throw LinearAlgebraError.notPositiveDefinite(pivot: j) }
            kernel.sqrt(djj, djj)
            for i in (j + 1)..<max(n, j + 1) {
                let dij = s + (i + j * n) * w
                for k in ks where nz[i + k * n] {
                    kernel.mulAdd(dij, s + (i + k * n) * w, s + (j + k * n) * w, -1)
                }
                if !nz[i + j * n] && !isNonzero(dij) { continue }
                for c in 0..<w { t[c] = dij[c] }
                kernel.divide(dij, t, djj)
                nz[i + j * n] = isNonzero(dij)
            }
            for i in 0..<j { let dij = s + (i + j * n) * w; for c in 0..<w { dij[c] = 0 } }
        }
    }

    /// The adaptive Gauss–Hermite objective as a jet (a single scalar term):
    /// per group, with û_g and m_g = 1 + θ² Σ w_i z_i² as jets, the nodes
    /// û_g + z_k/√m_g move with them.
    private func quadratureJet(theta: [Double], modes m: Modes, nAGQ: Int, rd: [RowEtaDerivatives], space: JetSpace,
                               kernel: JetKernel, U: UnsafeMutablePointer<Double>, loadRow: (Int) -> Void, etaJet: (Int) -> Void,
                               compose: (UnsafeMutablePointer<Double>, UnsafePointer<Double>, Double, Double, Double) -> Void,
                               zt: UnsafeMutablePointer<Double>, E: UnsafeMutablePointer<Double>,
                               into out: UnsafeMutablePointer<Double>) throws {
        let W = space.width
        let rule = GaussHermiteRule.cached(points: nAGQ)
        let th = theta[0]
        let groups = data.levelCounts[0]
        var rowsOf = [[Int]](repeating: [], count: groups)
        for i in 0..<data.rows { rowsOf[data.levels[0][i]].append(i) }
        let maxRows = rowsOf.reduce(0) { max($0, $1.count) }
        let buffer = Scratch()
        defer { buffer.free() }
        let etas = buffer.doubles(max(maxRows, 1) * W)      // η_i jets of the group's rows
        let thetaJet = buffer.doubles(W)
        thetaJet[0] = th; thetaJet[1] = 1
        let hU = buffer.doubles(W), mg = buffer.doubles(W), sj = buffer.doubles(W), ts = buffer.doubles(W)
        let zz = buffer.doubles(W), t1 = buffer.doubles(W), t2 = buffer.doubles(W)
        let uk = buffer.doubles(W), hk = buffer.doubles(W), sum = buffer.doubles(W), ek = buffer.doubles(W)
        for g in 0..<groups {
            let ug = U + (uOffset(0) + g) * W
            hU.update(repeating: 0, count: W)
            kernel.mulAdd(hU, ug, ug, 1)
            mg.update(repeating: 0, count: W); mg[0] = 1
            for (k, i) in rowsOf[g].enumerated() {
                loadRow(i)
                etaJet(i)
                let ei = etas + k * W
                for c in 0..<W { ei[c] = E[c] }
                ei[0] = m.eta[i]
                compose(t1, E, rd[i].dev, rd[i].d1, rd[i].d2)
                for c in 0..<W { hU[c] += t1[c] }
                compose(t2, E, m.weights[i], rd[i].w1, rd[i].w2)
                zz.update(repeating: 0, count: W)
                kernel.mulAdd(zz, zt, zt, 1)                   // z̃² = θ²z²
                kernel.mulAdd(mg, t2, zz, 1)
            }
            // s = m_g^(−1/2), and θ·s (the node spacing on the η scale per unit z)
            let m0 = mg[0], s0 = 1 / m0.squareRoot()
            compose(sj, mg, s0, -0.5 * s0 / m0, 0.75 * s0 / (m0 * m0))
            ts.update(repeating: 0, count: W)
            kernel.mulAdd(ts, thetaJet, sj, 1)
            sum.update(repeating: 0, count: W)
            for (zk, wk) in zip(rule.nodes, rule.weights) {
                for c in 0..<W { uk[c] = ug[c] + zk * sj[c] }
                hk.update(repeating: 0, count: W)
                kernel.mulAdd(hk, uk, uk, 1)
                for (k, i) in rowsOf[g].enumerated() {
                    let zi = data.z[0][i]
                    let ei = etas + k * W
                    for c in 0..<W { t1[c] = ei[c] + zi * zk * ts[c] }
                    let d = data.family.etaDerivatives(y: data.y[i], n: data.n[i], eta: t1[0])
                    compose(t1, t1, d.dev, d.d1, d.d2)
                    for c in 0..<W { hk[c] += t1[c] }
                }
                // exp(−(h_k − h(û) − z_k²)/2)
                for c in 0..<W { t2[c] = hk[c] - hU[c] }
                t2[0] -= zk * zk
                let e0 = Foundation.exp(-0.5 * t2[0])
                compose(ek, t2, e0, -0.5 * e0, 0.25 * e0)
                for c in 0..<W { sum[c] += wk * ek[c] }
            }
            for c in 0..<W { out[c] += hU[c] }
            kernel.logAdd(out, mg, 1)
            kernel.logAdd(out, sum, -2)
        }
    }
}

/// Raw buffers freed together (the jet passes run on pointers).
final class Scratch {
    private var doublesList: [UnsafeMutablePointer<Double>] = []
    private var intsList: [UnsafeMutablePointer<Int>] = []
    func doubles(_ n: Int) -> UnsafeMutablePointer<Double> {
        let p = UnsafeMutablePointer<Double>.allocate(capacity: n)
        p.initialize(repeating: 0, count: n)
        doublesList.append(p)
        return p
    }
    func ints(_ n: Int) -> UnsafeMutablePointer<Int> {
        let p = UnsafeMutablePointer<Int>.allocate(capacity: n)
        p.initialize(repeating: 0, count: n)
        intsList.append(p)
        return p
    }
    func free() {
        for p in doublesList { p.deallocate() }
        for p in intsList { p.deallocate() }
        doublesList = []; intsList = []
    }
}

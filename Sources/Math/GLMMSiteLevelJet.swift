// The exact Laplace jet of a site whose random effects are all site-level
// (every factor has one level here, e.g. `(1 | site)`), from one pass of
// small sums over the rows instead of per-row jet arithmetic.
//
// Here η_i = o_i + v_iᵀγ with v_i = (x_i, z_i) (length p + q) and
// γ = (β, b), b = Λu: every row moves along the same directions. With û's
// slopes U_a from the mode equation, η_i's jet is E_a = v_iᵀG_a and
// E_ab = v_iᵀG_ab, where G_a = ∂γ/∂p_a = (e_a | ∂Λ/∂p_a û + ΛU_a) and
// G_ab = (0 | ∂Λ/∂p_a U_b + ∂Λ/∂p_b U_a) (Λ is linear in θ; û_ab is not
// needed, GLMMExactDerivatives.swift's adjoint). So every row sum of the
// general pass,
//     Σ_i f(η_i)·E_a E_b and Σ_i f(η_i)·E_ab (times z entries),
// is a small quadratic form in G of the sums S_f = Σ_i f(η_i) v_i v_iᵀ and
// s_f = Σ_i f(η_i) v_i, taken once per evaluation:
//     Σ dev_i:      s_{dev′}, S_{dev″}            (value, gradient, Hessian)
//     mode eq.:     the z rows of S_{dev″}, s_{dev′}
//     adjoint:      Σ dev‴ z_c v vᵀ (Hessian), Σ w′ z_c z_d v (∂log|M|/∂u)
//     ZᵀW(û)Z:      Σ w z_c z_d, Σ w′ z_c z_d v, Σ w″ z_c z_d v vᵀ
// The sums are the general pass's own, regrouped (the same row terms, the
// same row order), so the jet agrees with it to rounding; log|M| is then
// taken by the same tail code (addTailLogDet). Per row: the closed-form
// η-derivatives from PIRLS's μ and dμ/dη (no exp or log) and about
// (p+q)²(1+q²)/2 multiply-adds, against two passes of jet arithmetic.

import Foundation

extension GLMMSite {
    /// Whether `siteLevelJet` applies: Laplace, a canonical link (observed and Fisher weights agree, so the
    /// mode equation's matrix is PIRLS's factor), and only site-level effects (a dense tail of one level per factor).
    func usesSiteLevelJet(nAGQ: Int) -> Bool {
        nAGQ <= 1 && isCanonical && data.chain == nil && firstDimension == 0 && chainLayout == nil
            && dimension > 0 && layoutTailDimension == dimension && data.levelCounts.allSatisfy { $0 == 1 }
    }

    /// D_k's jet at the modes `m` (value slot `value`) from the site-level sums; the same quantity as
    /// `exactJet`'s general path (see the file's comment).
    func siteLevelJet(theta: [Double], modes m: Modes, order: Int, value: Double,
                      modeSlopes: (([Double]) -> Void)?) throws -> ScalarJet {
        let s = data.structure, nf = s.factorCount
        let nt = theta.count, p = data.p, np = nt + p, q = dimension, nv = p + q, rows = data.rows
        let space = JetSpace(parameters: np, order: order)
        var out = ScalarJet(space: space, value: value)
        let W = space.width
        let second = order >= 2
        let dims = (0..<nf).map { s.factorDimension($0) }
        let offsets = (0..<nf).map { uOffset($0) }
        let lambdas = (0..<nf).map { s.factorMatrix($0, theta: theta) }
        let entries = (0..<nf).map { s.factorEntries($0) }
        let zPairs = q * (q + 1) / 2, vPairs = nv * nv

        // The sums, in one pass over the rows (full nv × nv matrices, upper triangle accumulated).
        let buffer = Scratch()
        defer { buffer.free() }
        let v = buffer.doubles(nv)
        let s1 = buffer.doubles(nv)                                  // Σ dev′ v
        let s2 = buffer.doubles(vPairs)                              // Σ dev″ v vᵀ
        let s3 = buffer.doubles(second ? q * vPairs : 1)             // Σ dev‴ z_c v vᵀ
        let sw = buffer.doubles(zPairs)                              // Σ w z_c z_d (c ≤ d)
        let sw1 = buffer.doubles(zPairs * nv)                        // Σ w′ z_c z_d v
        let sw2 = buffer.doubles(second ? zPairs * vPairs : 1)       // Σ w″ z_c z_d v vᵀ
        let fv = buffer.doubles(nv)
        let family = data.family
        data.x.withUnsafeBufferPointer { x in
        data.y.withUnsafeBufferPointer { y in
        data.n.withUnsafeBufferPointer { n in
        m.eta.withUnsafeBufferPointer { eta in
        m.rows.mu.withUnsafeBufferPointer { mu in
        m.rows.muEta.withUnsafeBufferPointer { muEta in
        m.rows.deviance.withUnsafeBufferPointer { dev in
            for i in 0..<rows {
                for j in 0..<p { v[j] = x[i * p + j] }
                for f in 0..<nf {
                    let r = dims[f]
                    data.z[f].withUnsafeBufferPointer { z in for a in 0..<r { v[p + offsets[f] + a] = z[i * r + a] } }
                }
                let d = family.etaDerivatives(y: y[i], n: n[i], eta: eta[i], mu: mu[i], muEta: muEta[i], deviance: dev[i])
                for a in 0..<nv { s1[a] += d.d1 * v[a]; fv[a] = d.d2 * v[a] }
                addUpper(s2, fv, v, nv)
                var k = 0
                for c in 0..<q {
                    let zc = v[p + c]
                    if second {
                        let f3 = d.d3 * zc
                        if f3 != 0 { for a in 0..<nv { fv[a] = f3 * v[a] }; addUpper(s3 + c * vPairs, fv, v, nv) }
                    }
                    for e in c..<q {
                        let zz = zc * v[p + e]
                        defer { k += 1 }
                        if zz == 0 { continue }
                        sw[k] += d.w * zz
                        let f1 = d.w1 * zz, row1 = sw1 + k * nv
                        for a in 0..<nv { row1[a] += f1 * v[a] }
                        if second {
                            let f2 = d.w2 * zz
                            for a in 0..<nv { fv[a] = f2 * v[a] }
                            addUpper(sw2 + k * vPairs, fv, v, nv)
                        }
                    }
                }
            }
        } } } } } } }
        mirror(s2, nv)
        if second { for c in 0..<q { mirror(s3 + c * vPairs, nv) }; for k in 0..<zPairs { mirror(sw2 + k * vPairs, nv) } }

        // Λ, ∂Λ/∂θ_a and Λᵀ on q-vectors in u's layout (per factor, b_f = T_f u_f).
        func lambda(_ u: UnsafePointer<Double>, into b: UnsafeMutablePointer<Double>) {
            for f in 0..<nf {
                let o = offsets[f], t = lambdas[f]
                for i in 0..<dims[f] { var a = 0.0; for k in 0...i { a += t[i, k] * u[o + k] }; b[o + i] = a }
            }
        }
        func lambdaTransposed(_ y: UnsafePointer<Double>, into c: UnsafeMutablePointer<Double>) {
            for f in 0..<nf {
                let o = offsets[f], t = lambdas[f], r = dims[f]
                for k in 0..<r { var a = 0.0; for i in k..<r { a += t[i, k] * y[o + i] }; c[o + k] = a }
            }
        }
        /// b += (∂Λ/∂θ_a) u
        func addSlope(_ a: Int, _ u: UnsafePointer<Double>, into b: UnsafeMutablePointer<Double>) {
            for f in 0..<nf { for e in entries[f] where e.theta == a { b[offsets[f] + e.row] += u[offsets[f] + e.col] } }
        }
        /// c += (∂Λ/∂θ_a)ᵀ y
        func addSlopeTransposed(_ a: Int, _ y: UnsafePointer<Double>, into c: UnsafeMutablePointer<Double>) {
            for f in 0..<nf { for e in entries[f] where e.theta == a { c[offsets[f] + e.col] += y[offsets[f] + e.row] } }
        }
        func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) -> Double {
            var t = 0.0; for k in 0..<n { t += a[k] * b[k] }; return t
        }
        /// aᵀ S b for S full n × n (column-major).
        func form(_ a: UnsafePointer<Double>, _ sm: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) -> Double {
            var t = 0.0
            for j in 0..<n where b[j] != 0 { var c = 0.0; for i in 0..<n { c += a[i] * sm[i + j * n] }; t += c * b[j] }
            return t
        }

        // Stage 1: û's slopes U_a = −½ M⁻¹Φ_a, Φ_a = Λᵀ(S_{dev″})_{z·}G⁰_a + (∂Λ/∂θ_a)ᵀ(s_{dev′})_z (G⁰: G without ΛU_a).
        let u = buffer.doubles(q)
        for c in 0..<q { u[c] = m.u[c] }
        let G = buffer.doubles(np * nv)                              // G_a, a = 0..<np
        let U = buffer.doubles(np * q)                               // U_a
        let y = buffer.doubles(q), phi = buffer.doubles(q)
        for a in 0..<np {
            let g = G + a * nv
            if a < nt { addSlope(a, u, into: g + p) } else { g[a - nt] = 1 }
            for c in 0..<q { var t = 0.0; for j in 0..<nv { t += s2[(p + c) + j * nv] * g[j] }; y[c] = t }
            lambdaTransposed(y, into: phi)
            addSlopeTransposed(a, s1 + p, into: phi)
            let x = m.factor.solve((0..<q).map { phi[$0] })
            for c in 0..<q { U[a * q + c] = -0.5 * x[c] }
        }
        if let modeSlopes {
            var du = [Double](repeating: 0, count: q * np)
            for c in 0..<q { for a in 0..<np { du[c * np + a] = U[a * q + c] } }
            modeSlopes(du)
        }
        let lu = buffer.doubles(q)
        for a in 0..<np {
            lambda(U + a * q, into: lu)
            for c in 0..<q { G[a * nv + p + c] += lu[c] }
        }
        let acc = buffer.doubles(W)
        // Gradient: Σ dev′E_a + 2ûᵀU_a (log|M| below).
        for a in 0..<np { acc[1 + a] = dot(s1, G + a * nv, nv) + 2 * dot(u, U + a * q, q) }

        // ZᵀW(û)Z as jets (td = q, both triangles): value Σw zz, slots Σw′zz vᵀG_a, pairs G_aᵀΣw″zz vvᵀG_b + Σw′zz vᵀG_ab.
        var tt = JetMatrix(rows: q, cols: q, space: space)
        let gab = buffer.doubles(nv)
        /// G_ab: (0 | ∂Λ/∂θ_a U_b + ∂Λ/∂θ_b U_a).
        func pairDirection(_ a: Int, _ b: Int) {
            gab.update(repeating: 0, count: nv)
            if a < nt { addSlope(a, U + b * q, into: gab + p) }
            if b < nt { addSlope(b, U + a * q, into: gab + p) }
        }
        tt.storage.withUnsafeMutableBufferPointer { ttp in
            let TT = ttp.baseAddress!
            var k = 0
            for c in 0..<q {
                for e in c..<q {
                    let dst = TT + (c + e * q) * W, row1 = sw1 + k * nv
                    dst[0] = sw[k]
                    for a in 0..<np { dst[1 + a] = dot(row1, G + a * nv, nv) }
                    if second {
                        var slot = 1 + np
                        for b in 0..<np {
                            for a in 0...b {
                                pairDirection(a, b)
                                dst[slot] = form(G + a * nv, sw2 + k * vPairs, G + b * nv, nv) + dot(row1, gab, nv)
                                slot += 1
                            }
                        }
                    }
                    if c != e { let mirrorDst = TT + (e + c * q) * W; for t in 0..<W { mirrorDst[t] = dst[t] } }
                    k += 1
                }
            }
            guard second else { return }
            // The adjoint v = M⁻¹(Φ + ∂log|M|/∂u), ∂log|M|/∂u = Λᵀ Σ_cd K_cd Σw′ z_c z_d z, K = ΛM⁻¹Λᵀ.
            let minv = m.factor.trailingInverse(size: q)
            let LM = buffer.doubles(q * q), K = buffer.doubles(q * q), col = buffer.doubles(q)
            for d in 0..<q {                                         // ΛM⁻¹, column by column
                for c in 0..<q { y[c] = minv[c, d] }
                lambda(y, into: col)
                for c in 0..<q { LM[c + d * q] = col[c] }
            }
            for c in 0..<q {                                         // K = (ΛM⁻¹)Λᵀ: row c is Λ times row c of ΛM⁻¹
                for d in 0..<q { y[d] = LM[c + d * q] }
                lambda(y, into: col)
                for d in 0..<q { K[c + d * q] = col[d] }
            }
            let gz = buffer.doubles(q)
            k = 0
            for c in 0..<q {
                for e in c..<q {
                    let f = (c == e ? 1 : 2) * K[c + e * q], row1 = sw1 + k * nv
                    for t in 0..<q { gz[t] += f * row1[p + t] }
                    k += 1
                }
            }
            // Φ's value Λᵀ s_{dev′,z} + 2û, plus Λᵀ gz.
            for c in 0..<q { y[c] = s1[p + c] + gz[c] }
            lambdaTransposed(y, into: phi)
            for c in 0..<q { phi[c] += 2 * u[c] }
            let adjoint = m.factor.solve((0..<q).map { phi[$0] })
            for c in 0..<q { y[c] = adjoint[c] }
            // σ0 = ΛV, σ_a = (∂Λ/∂θ_a)V: the row's vᵀz̃_i and its θ slopes are z_iᵀσ.
            let sigma0 = buffer.doubles(q), sigma = buffer.doubles(max(nt, 1) * q)
            lambda(y, into: sigma0)
            for a in 0..<nt { addSlope(a, y, into: sigma + a * q) }
            // Σ_c σ0_c Σdev‴ z_c v vᵀ, and the z rows of S_{dev″} weighted by σ0 and σ_a.
            let s3v = buffer.doubles(vPairs)
            for c in 0..<q where sigma0[c] != 0 { let src = s3 + c * vPairs; for t in 0..<vPairs { s3v[t] += sigma0[c] * src[t] } }
            let zs0 = buffer.doubles(nv), zsa = buffer.doubles(max(nt, 1) * nv)
            for j in 0..<nv {
                var t = 0.0
                for c in 0..<q { t += sigma0[c] * s2[(p + c) + j * nv] }
                zs0[j] = t
                for a in 0..<nt {
                    var ta = 0.0
                    for c in 0..<q { ta += sigma[a * q + c] * s2[(p + c) + j * nv] }
                    zsa[a * nv + j] = ta
                }
            }
            var slot = 1 + np
            for b in 0..<np {
                for a in 0...b {
                    pairDirection(a, b)
                    let ga = G + a * nv, gb = G + b * nv
                    var h = form(ga, s2, gb, nv) + dot(s1, gab, nv) + 2 * dot(U + a * q, U + b * q, q)
                    h -= 0.5 * (form(ga, s3v, gb, nv) + dot(zs0, gab, nv))
                    if a < nt { h -= 0.5 * dot(zsa + a * nv, gb, nv) }
                    if b < nt { h -= 0.5 * dot(zsa + b * nv, ga, nv) }
                    acc[slot] = h
                    slot += 1
                }
            }
        }
        // log|ΛᵀZᵀWZΛ + I|'s slots.
        try addTailLogDet(tt, tail: m.factor.blocks.tail, theta: theta, space: space, kernel: JetKernel(space), into: acc)
        for k in 1..<W { out.storage[k] = acc[k] }
        guard out.storage.allSatisfy(\.isFinite) else { throw GLMMError.nonFinite }
        return out
    }
}

/// S += a bᵀ on the upper triangle (i ≤ j) of an n × n column-major matrix.
@inline(__always) private func addUpper(_ s: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) {
    for j in 0..<n { let bj = b[j]; if bj == 0 { continue }; let col = s + j * n; for i in 0...j { col[i] += a[i] * bj } }
}

/// Copies the upper triangle of an n × n column-major matrix to its lower.
private func mirror(_ s: UnsafeMutablePointer<Double>, _ n: Int) {
    for j in 0..<n { for i in (j + 1)..<max(n, j + 1) { s[i + j * n] = s[j + i * n] } }
}

// The "level form" of a site's crossed GLMM piece (README, "Crossed factors
// in GLMMs"; DESIGN.md, "Crossed factors"). The dense piece sends the
// Hessian in b_G, q_k²/2 numbers, which caps a site at a few hundred crossed
// levels. That Hessian has structure, through the site's own effects u_L
// (m_k of them: r for terms grouped by the site, plus r per level of a
// within-site factor such as its wards, which are then ~20–40 numbers):
//     ½∇²P_k = A_k − V_k V_kᵀ,
//     A_k = Z_GᵀWZ_G               (block diagonal by level of a crossed factor,
//                                   plus couplings between crossed factors'
//                                   levels that share rows),
//     V_k = Z_GᵀWZ_LΛ_L L_ss⁻ᵀ     (q_k × m_k, L_ss L_ssᵀ = H_ss, the site's
//                                   blocked own-effects matrix, here dense m_k × m_k).
// The site sends A_k's nonzero profile and V_k in a canonical form that is a
// function of V_kV_kᵀ alone (V' = V Q lower trapezoidal with a nonnegative
// diagonal: the pivotless Cholesky factor of V_kV_kᵀ). With own terms grouped
// by the site alone the answer holds nothing the dense Hessian does not; with
// within-site terms V_kV_kᵀ separates their levels' sums, so a site offers the
// form only when each such level has min_cell rows (docs/PRIVACY.md).

import Foundation

/// One point's answer in the level form.
public struct CrossedLevelPiece: Sendable, Equatable {
    public var value: Double
    public var gradient: [Double]
    /// A_k's upper triangle by column profile: column j holds rows
    /// start[j]...j, stored column after column in `values`.
    public var start: [Int]
    public var values: [Double]
    /// V' (q_k × m_k, column-major): lower trapezoidal, diagonal ≥ 0.
    public var coupling: [Double]
    public var localDimension: Int
    public var logDet: Double
    /// Not on the wire (max_row_share).
    public var largestRowShare: Double = 0
    public init(value: Double, gradient: [Double], start: [Int], values: [Double], coupling: [Double], localDimension: Int, logDet: Double) {
        self.value = value; self.gradient = gradient; self.start = start; self.values = values
        self.coupling = coupling; self.localDimension = localDimension; self.logDet = logDet
    }

    /// ∇²P_k = 2(A − V'V'ᵀ), q × q column-major: the dense piece's Hessian
    /// (for tests and for comparing the two forms).
    public var denseHessian: [Double] {
        let q = gradient.count, m = localDimension
        var h = [Double](repeating: 0, count: q * q)
        var t = 0
        for j in 0..<q {
            for i in start[j]...j { h[i + j * q] = 2 * values[t]; h[j + i * q] = 2 * values[t]; t += 1 }
        }
        for j in 0..<q { for i in 0..<q { for e in 0..<m { h[i + j * q] -= 2 * coupling[i + e * q] * coupling[j + e * q] } } }
        return h
    }
}

/// V' = V Q from V (q × m, column-major) by Householder reflections applied
/// from the right, row by row, each making a row's entries right of its
/// diagonal zero and its diagonal nonnegative; Q (m × m, column-major) is
/// returned too, for the site's own effects at finalize.
public enum CanonicalCoupling {
    public static func lowerTrapezoidal(_ v: [Double], rows q: Int, cols m: Int) -> (coupling: [Double], rotation: [Double]) {
        var a = v
        var rot = [Double](repeating: 0, count: m * m)
        for e in 0..<m { rot[e + e * m] = 1 }
        // Reflect columns k..<m of every row of a (and of rot).
        func reflect(_ x: inout [Double], rows: Int, from k: Int, _ h: [Double], _ beta: Double) {
            for i in 0..<rows {
                var s = 0.0
                for c in k..<m { s += x[i + c * rows] * h[c - k] }
                s *= beta
                if s != 0 { for c in k..<m { x[i + c * rows] -= s * h[c - k] } }
            }
        }
        for k in 0..<min(m, q) {
            let x = (k..<m).map { a[k + $0 * q] }
            let sigma = x.dropFirst().reduce(0) { $0 + $1 * $1 }
            if sigma == 0 {
                if x[0] < 0 { for i in 0..<q { a[i + k * q] = -a[i + k * q] }; for i in 0..<m { rot[i + k * m] = -rot[i + k * m] } }
                continue
            }
            let alpha = (x[0] * x[0] + sigma).squareRoot()
            // h = x − α e₁ without cancellation (Golub & Van Loan 5.1.1).
            var h = x
            h[0] = x[0] <= 0 ? x[0] - alpha : -sigma / (x[0] + alpha)
            let hh = h.reduce(0) { $0 + $1 * $1 }
            let beta = 2 / hh
            reflect(&a, rows: q, from: k, h, beta)
            reflect(&rot, rows: m, from: k, h, beta)
            a[k + k * q] = alpha
            for c in (k + 1)..<m { a[k + c * q] = 0 }
        }
        return (a, rot)
    }
}

extension GLMMCrossedSite {
    /// m_k in the level form: all the site's own effects (its own factors'
    /// r per level: one level for a factor grouped by the site, one per ward
    /// for a within-site factor).
    public var ownEffectCount: Int {
        (0..<local.structure.factorCount).reduce(0) { $0 + local.levelCounts[$1] * local.structure.factorDimension($1) }
    }

    /// The fewest rows any level of a factor not grouped by the site has here
    /// (nil when every own factor is grouped by the site): what the site's
    /// offer of the level form is decided on (docs/PRIVACY.md).
    public func smallestWithinSiteLevel(groupedBySite: [Bool]) -> Int? {
        (0..<local.structure.factorCount).filter { !groupedBySite[$0] }.compactMap { f -> Int? in
            var counts = [Int](repeating: 0, count: local.levelCounts[f])
            for l in local.levels[f] { counts[l] += 1 }
            return counts.min()
        }.min()
    }

    /// Λ_L over the site's own effects in u's order (GLMMSite: factor by
    /// factor, level by level), dense m × m.
    func ownLambda(_ site: GLMMSite, thetaL: [Double]) -> Matrix {
        let s = local.structure, m = ownEffectCount
        var lambda = Matrix(rows: m, cols: m)
        for f in 0..<s.factorCount {
            let t = s.factorMatrix(f, theta: thetaL), r = t.rows
            for l in 0..<local.levelCounts[f] {
                let o = site.uOffset(f) + l * r
                for j in 0..<t.cols { for i in 0..<t.rows { lambda[o + i, o + j] = t[i, j] } }
            }
        }
        return lambda
    }

    /// The level-form piece at (θ, β) and b_G at the site's levels. Whether
    /// the site may send it is the site's rule (SiteService.offersLevelForm).
    public func levelPiece(theta: [Double], beta: [Double], effects: [Double]) throws -> CrossedLevelPiece {
        precondition(effects.count == crossed.width, "one crossed effect per leading column")
        let thetaL = localTheta.map { theta[$0] }
        let site = shifted(effects)
        let modes = try site.modes(theta: thetaL, beta: beta, start: warm.withLock { $0 })
        warm.withLock { $0 = modes.u }
        let parts = try levelParts(site, thetaL: thetaL, eta: modes.eta)
        var piece = CrossedLevelPiece(value: modes.penalizedDeviance, gradient: parts.gradient, start: parts.start, values: parts.values,
                                      coupling: parts.coupling, localDimension: parts.m, logDet: modes.factor.logDet)
        piece.largestRowShare = largestWeightShare(eta: modes.eta)
        return piece
    }

    /// The sums over the rows at the linear predictor `eta`: the gradient,
    /// A's profile, V' and its rotation Q, and L_ss.
    func levelParts(_ site: GLMMSite, thetaL: [Double], eta: [Double]) throws
        -> (gradient: [Double], start: [Int], values: [Double], coupling: [Double], rotation: [Double], m: Int, lss: Matrix) {
        let q = crossed.width, n = local.rows, s = local.structure
        let lambda = ownLambda(site, thetaL: thetaL), m = lambda.rows
        // Per row, its own effects' u indices in ascending order (one level per factor).
        let factorOrder = (0..<s.factorCount).sorted { site.uOffset($0) < site.uOffset($1) }
        var gradient = [Double](repeating: 0, count: q)
        // A's upper entries per column (row → value), G = Z_GᵀWZ_L (q × m), K = Z_LᵀWZ_L.
        // Per column of A: its rows and values so far (a few per column: linear search beats hashing).
        var rowsOfA = [[Int]](repeating: [], count: q), valuesOfA = [[Double]](repeating: [], count: q)
        var g = [Double](repeating: 0, count: q * m)
        var k = Matrix(rows: m, cols: m)
        var cols: [Int] = [], zs: [Double] = []
        var ownCols: [Int] = [], zl: [Double] = []
        for i in 0..<n {
            let (w, r, _) = local.family.weightAndResidual(y: local.y[i], n: local.n[i], eta: eta[i])
            cols.removeAll(keepingCapacity: true); zs.removeAll(keepingCapacity: true)
            for f in crossed.factors {
                for a in 0..<f.dimension { cols.append(f.column[i] + a); zs.append(f.z[i * f.dimension + a]) }
            }
            for (c, z) in zip(cols, zs) { gradient[c] -= 2 * w * r * z }
            for b in cols.indices {
                let wb = w * zs[b]
                for a in 0...b {
                    let (lo, hi) = cols[a] <= cols[b] ? (cols[a], cols[b]) : (cols[b], cols[a])
                    let v = zs[a] * wb
                    if let at = rowsOfA[hi].firstIndex(of: lo) { valuesOfA[hi][at] += v } else { rowsOfA[hi].append(lo); valuesOfA[hi].append(v) }
                }
            }
            ownCols.removeAll(keepingCapacity: true); zl.removeAll(keepingCapacity: true)
            for f in factorOrder {
                let r = s.factorDimension(f), base = site.uOffset(f) + local.levels[f][i] * r
                for a in 0..<r { ownCols.append(base + a); zl.append(local.z[f][i * r + a]) }
            }
            for (c, z) in zip(cols, zs) { let wz = w * z; for (e, v) in zip(ownCols, zl) { g[c + e * q] += wz * v } }
            for (b, vb) in zip(ownCols, zl) { let wb = w * vb; for (a, va) in zip(ownCols, zl) { k[a, b] += va * wb } }
        }
        // H_ss = Λ_LᵀKΛ_L + I = L_ss L_ssᵀ; V = G Λ_L L_ss⁻ᵀ.
        var h = Dense.multiply(Dense.multiply(Dense.transpose(lambda), k), lambda)
        for e in 0..<m { h[e, e] += 1 }
        let lss = try Dense.cholesky(h)
        let gl = Dense.multiply(Matrix(rows: q, cols: m, data: g), lambda)
        var v = [Double](repeating: 0, count: q * m)
        for i in 0..<q {
            let row = Dense.solveLower(lss, (0..<m).map { gl[i, $0] })
            for e in 0..<m { v[i + e * q] = row[e] }
        }
        let canonical = CanonicalCoupling.lowerTrapezoidal(v, rows: q, cols: m)
        var start = [Int](repeating: 0, count: q), values: [Double] = []
        for j in 0..<q {
            let s = rowsOfA[j].min().map { min($0, j) } ?? j
            start[j] = s
            var column = [Double](repeating: 0, count: j - s + 1)
            for (i, v) in zip(rowsOfA[j], valuesOfA[j]) { column[i - s] = v }
            values += column
        }
        return (gradient, start, values, canonical.coupling, canonical.rotation, m, lss)
    }

    /// The site-level effects at the optimum in the level form: given b_G
    /// and N = V'ᵀ P V' (m × m, P = Λ_G S⁻¹ Λ_Gᵀ at the site's levels, sent
    /// by the coordinator instead of P), the site factor's mode and
    /// conditional covariance: its block of
    /// Λ_L(H_ss⁻¹ + L_ss⁻ᵀ Q N Qᵀ L_ss⁻¹)Λ_Lᵀ over all own effects (wards
    /// too), the same as `siteEffects` with P (V = V'Qᵀ, and
    /// H_ss⁻¹H_sG S⁻¹ H_Gs H_ss⁻¹ = L_ss⁻ᵀVᵀPVL_ss⁻¹).
    public func siteEffects(theta: [Double], beta: [Double], effects: [Double], levelTerm: Matrix) throws -> SiteLevelEffects? {
        guard let sf = local.siteFactor else { return nil }
        let thetaL = localTheta.map { theta[$0] }
        let site = shifted(effects)
        let modes = try site.modes(theta: thetaL, beta: beta, start: warm.withLock { $0 })
        let t = local.structure.factorMatrix(sf, theta: thetaL), r = t.rows, m = ownEffectCount
        precondition(levelTerm.rows == m && levelTerm.cols == m, "the level term is m × m")
        let o = site.uOffset(sf)
        let own = Dense.multiply(t, Array(modes.u[o..<(o + r)]))
        let parts = try levelParts(site, thetaL: thetaL, eta: modes.eta)
        let rot = Matrix(rows: m, cols: m, data: parts.rotation)
        let inner = Dense.multiply(Dense.multiply(rot, levelTerm), Dense.transpose(rot))
        // L⁻ᵀ inner L⁻¹, column by column, then H_ss⁻¹.
        var middle = Matrix(rows: m, cols: m)
        for j in 0..<m {
            let col = Dense.solveLowerTranspose(parts.lss, (0..<m).map { inner[$0, j] })
            for i in 0..<m { middle[i, j] = col[i] }
        }
        var cov = Matrix(rows: m, cols: m)
        for i in 0..<m {
            let row = Dense.solveLowerTranspose(parts.lss, (0..<m).map { middle[i, $0] })
            for j in 0..<m { cov[i, j] = row[j] }
        }
        let inv = Dense.inverseFromCholesky(parts.lss)
        for i in 0..<(m * m) { cov.data[i] += inv.data[i] }
        var block = Matrix(rows: r, cols: r)
        for j in 0..<r { for i in 0..<r { block[i, j] = cov[o + i, o + j] } }
        let full = Dense.multiply(Dense.multiply(t, block), Dense.transpose(t))
        return SiteLevelEffects(effects: own, conditionalCovariance: full)
    }
}

// The coordinator's Newton system on the crossed effects u_G of a GLMM,
// level by level (DESIGN.md, "Crossed factors"; the sites' level form,
// GLMMCrossedLevelForm.swift). With A = Σ_k A_k placed at each site's
// columns and U = Λ_Gᵀ[V_1 … V_K] (q_G × m, m = Σ m_k),
//     S = Λ_GᵀAΛ_G + I − UUᵀ
// is the Schur complement onto u_G of the positive-definite
//     J = [[Λ_GᵀAΛ_G + I, U], [Uᵀ, I_m]],
// so log|S| = log|J|, S⁻¹g is the u_G part of J⁻¹[g; 0], and the blocks of
// S⁻¹ are blocks of J⁻¹. J is factored with the largest crossed factor F
// eliminated first, level by level, as CrossedLevelElimination does for
// LMMs: a row has one level of F, so each level's block couples only to
// the other crossed factors' levels it shares rows with and to the U
// columns of the sites it occurs at. What remains, R = [other crossed
// effects, m], is small and dense. No q_G × q_G matrix is formed.

import Foundation

/// One site's level-form Hessian in its own leading columns (CrossedLevelPiece).
public struct CrossedLevelHessian: Sendable {
    public var start: [Int]
    public var values: [Double]
    /// V' (q_k × m_k, column-major).
    public var coupling: [Double]
    public var localDimension: Int
    public init(start: [Int], values: [Double], coupling: [Double], localDimension: Int) {
        self.start = start; self.values = values; self.coupling = coupling; self.localDimension = localDimension
    }
}

public enum CrossedGLMMLevelError: Error, CustomStringConvertible {
    /// Two levels of the eliminated factor share rows (never for data: a row has one level).
    case levelsCoupled
    public var description: String { "two levels of the largest crossed factor were reported as sharing rows, which a row's single level rules out" }
}

public struct CrossedGLMMLevelSystem: Sendable {
    /// One level of F after elimination: L_l, the R columns it couples to, W_l = L_l⁻¹B_l (r × columns).
    struct Level: Sendable {
        var factor: Matrix
        var columns: [Int]
        var coupling: Matrix
    }
    let layout: CrossedLayout
    let first: Int
    let r1: Int
    /// R index of each u_G index outside F (−1 for F's own).
    let restOfG: [Int]
    /// R index of each site's first own effect.
    let siteStart: [Int]
    let localDimensions: [Int]
    let restDimension: Int
    /// Λ_G's blocks at θ, per crossed factor.
    let lambdas: [Matrix]
    let levels: [Level]
    /// Cholesky factor of R's Schur complement.
    let restFactor: Matrix
    /// log|J| = log|S|.
    public let logDet: Double

    /// The index of layout.factors eliminated level by level: the most effects.
    public static func firstFactor(_ layout: CrossedLayout, structure: CovarianceStructure) -> Int {
        layout.factors.indices.max { a, b in
            let fa = layout.factors[a], fb = layout.factors[b]
            return fa.levels * structure.factorDimension(fa.factor) < fb.levels * structure.factorDimension(fb.factor)
        }!
    }

    /// Whether this does less floating-point work than the dense Cholesky
    /// of S (q_G³/3): each of F's levels couples to the U columns of the
    /// sites it occurs at and to the other crossed effects, then R is factored.
    public static func cheaper(layout: CrossedLayout, structure: CovarianceStructure, localDimensions: [Int]) -> Bool {
        guard !layout.factors.isEmpty else { return false }
        let f = layout.factors[firstFactor(layout, structure: structure)]
        let q1 = Double(f.levels * structure.factorDimension(f.factor)), q = Double(layout.dimension)
        let m = Double(localDimensions.reduce(0, +))
        let sitesPerEffect = Double(layout.siteColumns.reduce(0) { $0 + $1.count }) / max(1, q)
        let meanLocal = m / Double(max(1, localDimensions.count))
        let coupling = sitesPerEffect * meanLocal + (q - q1)
        let rest = q - q1 + m
        return q1 * coupling * coupling + rest * rest * rest / 3 < q * q * q / 3
    }

    /// Factors J at θ from the sites' level-form Hessians (in site order).
    public init(layout: CrossedLayout, structure: CovarianceStructure, theta: [Double], sites: [CrossedLevelHessian]) throws {
        precondition(sites.count == layout.siteColumns.count, "one level-form Hessian per site")
        self.layout = layout
        let firstIndex = Self.firstFactor(layout, structure: structure)
        first = firstIndex
        let f1 = layout.factors[firstIndex]
        let r1 = structure.factorDimension(f1.factor)
        self.r1 = r1
        lambdas = layout.factors.map { structure.factorMatrix($0.factor, theta: theta) }
        // u_G index → (factor index in layout, level, component).
        var factorOfG = [Int](repeating: 0, count: layout.dimension)
        for (c, f) in layout.factors.enumerated() {
            let r = structure.factorDimension(f.factor)
            for g in f.offset..<(f.offset + f.levels * r) { factorOfG[g] = c }
        }
        var restOfG = [Int](repeating: -1, count: layout.dimension), next = 0
        for (c, f) in layout.factors.enumerated() where c != firstIndex {
            let r = structure.factorDimension(f.factor)
            for g in f.offset..<(f.offset + f.levels * r) { restOfG[g] = next; next += 1 }
        }
        let qOther = next
        var siteStart: [Int] = []
        for s in sites { siteStart.append(next); next += s.localDimension }
        self.restOfG = restOfG; self.siteStart = siteStart; restDimension = next
        localDimensions = sites.map(\.localDimension)
        let dR = next

        // Unscaled sums, site by site: F's diagonal blocks, F's couplings
        // (R column → r1 values, A part in u_G terms and V part), R's block.
        var diagonal = [[Double]](repeating: [Double](repeating: 0, count: r1 * r1), count: f1.levels)
        var couplingA = [[Int: [Double]]](repeating: [:], count: f1.levels)   // other u_G index → r1 values (A, unscaled)
        var couplingV = [[Int: [Double]]](repeating: [:], count: f1.levels)   // R index (site effect) → r1 values (V, unscaled)
        var restA = [Double](repeating: 0, count: qOther * qOther)
        var restV = [Double](repeating: 0, count: qOther * max(0, dR - qOther))
        let mAll = dR - qOther
        func place(_ g: Int) -> (level: Int, component: Int)? {
            guard restOfG[g] < 0 else { return nil }
            let o = g - f1.offset
            return (o / r1, o % r1)
        }
        for (k, s) in sites.enumerated() {
            let cols = layout.siteColumns[k], qk = cols.count
            var t = 0
            for j in 0..<qk {
                for i in s.start[j]...j {
                    let v = s.values[t]; t += 1
                    if v == 0 { continue }
                    let gi = cols[i], gj = cols[j]
                    switch (place(gi), place(gj)) {
                    case let (a?, b?):
                        guard a.level == b.level else { throw CrossedGLMMLevelError.levelsCoupled }
                        diagonal[a.level][a.component + b.component * r1] += v
                        if a.component != b.component { diagonal[a.level][b.component + a.component * r1] += v }
                    case let (a?, nil):
                        couplingA[a.level][gj, default: [Double](repeating: 0, count: r1)][a.component] += v
                    case let (nil, b?):
                        couplingA[b.level][gi, default: [Double](repeating: 0, count: r1)][b.component] += v
                    case (nil, nil):
                        let ri = restOfG[gi], rj = restOfG[gj]
                        restA[ri + rj * qOther] += v
                        if ri != rj { restA[rj + ri * qOther] += v }
                    }
                }
            }
            for e in 0..<s.localDimension {
                let column = siteStart[k] + e
                for i in 0..<qk {
                    let v = s.coupling[i + e * qk]
                    if v == 0 { continue }
                    let g = cols[i]
                    if let a = place(g) {
                        couplingV[a.level][column, default: [Double](repeating: 0, count: r1)][a.component] += v
                    } else {
                        restV[restOfG[g] + (column - qOther) * qOther] += v
                    }
                }
            }
        }

        // R's block: [[Λ_oᵀA_ooΛ_o + I, Λ_oᵀV_o], [·, I]].
        var c = Matrix(rows: dR, cols: dR)
        // Λ_o as a dense qOther × qOther block diagonal.
        var lambdaOther = Matrix(rows: qOther, cols: qOther)
        for (ci, f) in layout.factors.enumerated() where ci != firstIndex {
            let t = lambdas[ci], r = t.rows
            for l in 0..<f.levels {
                let b = restOfG[f.offset + l * r]
                for j in 0..<r { for i in 0..<r { lambdaOther[b + i, b + j] = t[i, j] } }
            }
        }
        if qOther > 0 {
            let lt = Dense.transpose(lambdaOther)
            let a = Dense.multiply(Dense.multiply(lt, Matrix(rows: qOther, cols: qOther, data: restA)), lambdaOther)
            let uv = Dense.multiply(lt, Matrix(rows: qOther, cols: mAll, data: restV))
            for j in 0..<qOther { for i in 0..<qOther { c[i, j] = a[i, j] }; c[j, j] += 1 }
            for j in 0..<mAll { for i in 0..<qOther { c[i, qOther + j] = uv[i, j]; c[qOther + j, i] = uv[i, j] } }
        }
        for e in qOther..<dR { c[e, e] += 1 }

        // F level by level: L_l, W_l, C −= W_lᵀW_l.
        let t1 = lambdas[firstIndex]
        var logDet = 0.0
        var levels: [Level] = []
        levels.reserveCapacity(f1.levels)
        for l in 0..<f1.levels {
            var d = Dense.multiply(Dense.multiply(Dense.transpose(t1), Matrix(rows: r1, cols: r1, data: diagonal[l])), t1)
            for a in 0..<r1 { d[a, a] += 1 }
            let ll = try Dense.cholesky(d)
            for a in 0..<r1 { logDet += 2 * Foundation.log(ll[a, a]) }
            // B_l's columns: other crossed effects (T₁ᵀ A Λ_o), then site effects (T₁ᵀ V).
            var unscaled: [Int: [Double]] = [:]
            for (g, v) in couplingA[l] {
                // Right-multiply by Λ_o: column g's values feed R columns of its level block.
                let ci = factorOfG[g], f = layout.factors[ci], t = lambdas[ci], r = t.rows
                let o = g - f.offset, level = o / r, comp = o % r
                for col in 0..<r where t[comp, col] != 0 {
                    let target = restOfG[f.offset + level * r + col]
                    var acc = unscaled[target] ?? [Double](repeating: 0, count: r1)
                    for a in 0..<r1 { acc[a] += v[a] * t[comp, col] }
                    unscaled[target] = acc
                }
            }
            for (column, v) in couplingV[l] {
                var acc = unscaled[column] ?? [Double](repeating: 0, count: r1)
                for a in 0..<r1 { acc[a] += v[a] }
                unscaled[column] = acc
            }
            let columns = unscaled.keys.sorted()
            var w = Matrix(rows: r1, cols: columns.count)
            for (j, col) in columns.enumerated() {
                let v = unscaled[col]!
                // T₁ᵀ v, then L_l⁻¹.
                var tv = [Double](repeating: 0, count: r1)
                for a in 0..<r1 { for i in a..<r1 { tv[a] += t1[i, a] * v[i] } }
                let x = Dense.solveLower(ll, tv)
                for a in 0..<r1 { w[a, j] = x[a] }
            }
            for (bj, j) in columns.enumerated() {
                for (ai, i) in columns.enumerated() {
                    var s = 0.0
                    for a in 0..<r1 { s += w[a, ai] * w[a, bj] }
                    c[i, j] -= s
                }
            }
            levels.append(Level(factor: ll, columns: columns, coupling: w))
        }
        let lr = try Dense.cholesky(c)
        for e in 0..<dR { logDet += 2 * Foundation.log(lr[e, e]) }
        self.levels = levels
        restFactor = lr
        self.logDet = logDet
    }

    /// J⁻¹ [b; y] for b in u_G order and y over the m site columns (nil: 0):
    /// (u_G part, site part).
    func solveJ(_ b: [Double], sites y: [Double]? = nil) -> (u: [Double], sites: [Double]) {
        let f1 = layout.factors[first], dR = restDimension, qOther = dR - localDimensions.reduce(0, +)
        var rest = [Double](repeating: 0, count: dR)
        for g in 0..<b.count where restOfG[g] >= 0 { rest[restOfG[g]] = b[g] }
        if let y { for e in 0..<y.count { rest[qOther + e] = y[e] } }
        var z: [[Double]] = []
        z.reserveCapacity(levels.count)
        for (l, level) in levels.enumerated() {
            let zl = Dense.solveLower(level.factor, (0..<r1).map { b[f1.offset + l * r1 + $0] })
            for (j, col) in level.columns.enumerated() {
                var s = 0.0
                for a in 0..<r1 { s += level.coupling[a, j] * zl[a] }
                rest[col] -= s
            }
            z.append(zl)
        }
        let xr = Dense.solveLowerTranspose(restFactor, Dense.solveLower(restFactor, rest))
        var x = [Double](repeating: 0, count: b.count)
        for g in 0..<b.count where restOfG[g] >= 0 { x[g] = xr[restOfG[g]] }
        for (l, level) in levels.enumerated() {
            var rhs = z[l]
            for (j, col) in level.columns.enumerated() { for a in 0..<r1 { rhs[a] -= level.coupling[a, j] * xr[col] } }
            let xl = Dense.solveLowerTranspose(level.factor, rhs)
            for a in 0..<r1 { x[f1.offset + l * r1 + a] = xl[a] }
        }
        return (x, Array(xr[qOther...]))
    }

    /// S⁻¹ g.
    public func solve(_ g: [Double]) -> [Double] { solveJ(g).u }

    /// The diagonal blocks of S⁻¹ by crossed level, as the diagonal of
    /// P = Λ_G S⁻¹ Λ_Gᵀ (each crossed effect's conditional variance over σ²),
    /// by the selected inverse: level l of F has (L_lL_lᵀ)⁻¹ + Y_l C⁻¹ Y_lᵀ
    /// with Y_l = L_l⁻ᵀW_l, the other crossed levels their blocks of C⁻¹.
    public func conditionalVariances() -> [Double] {
        let f1 = layout.factors[first]
        let cinv = Dense.inverseFromCholesky(restFactor)
        var out = [Double](repeating: 0, count: layout.dimension)
        func addScaled(_ block: Matrix, factor c: Int, at offset: Int) {
            // diag(T B Tᵀ).
            let t = lambdas[c], r = t.rows
            for i in 0..<r {
                var s = 0.0
                for a in 0...i { for b in 0...i { s += t[i, a] * block[a, b] * t[i, b] } }
                out[offset + i] = s
            }
        }
        for (l, level) in levels.enumerated() {
            let n = level.columns.count
            var y = Matrix(rows: r1, cols: n)
            for j in 0..<n {
                let col = Dense.solveLowerTranspose(level.factor, (0..<r1).map { level.coupling[$0, j] })
                for a in 0..<r1 { y[a, j] = col[a] }
            }
            var block = Dense.inverseFromCholesky(level.factor)
            for (j, cj) in level.columns.enumerated() {
                for (i, ci) in level.columns.enumerated() {
                    let v = cinv[ci, cj]
                    for b in 0..<r1 { for a in 0..<r1 { block[a, b] += y[a, i] * v * y[b, j] } }
                }
            }
            addScaled(block, factor: first, at: f1.offset + l * r1)
        }
        for (c, f) in layout.factors.enumerated() where c != first {
            let r = lambdas[c].rows
            for l in 0..<f.levels {
                let b = restOfG[f.offset + l * r]
                var block = Matrix(rows: r, cols: r)
                for j in 0..<r { for i in 0..<r { block[i, j] = cinv[b + i, b + j] } }
                addScaled(block, factor: c, at: f.offset + l * r)
            }
        }
        return out
    }

    /// Per site, N_k = V'_kᵀ P_k V'_k = U_kᵀ S⁻¹ U_k (m_k × m_k,
    /// column-major): what the crossed effects add to its own effects'
    /// conditional covariance, sent at finalize instead of P at its levels.
    public func siteTerms(_ sites: [CrossedLevelHessian]) -> [[Double]] {
        sites.enumerated().map { k, s in
            let m = s.localDimension, cols = layout.siteColumns[k], qk = cols.count
            guard m > 0 else { return [] }
            // U_k's columns in u_G order: Λ_Gᵀ V'_k placed at the site's columns.
            let u: [[Double]] = (0..<m).map { e in
                var placed = [Double](repeating: 0, count: layout.dimension)
                for i in 0..<qk { placed[cols[i]] = s.coupling[i + e * qk] }
                return lambdaTransposed(placed)
            }
            let x = u.map { solve($0) }
            var n = [Double](repeating: 0, count: m * m)
            for b in 0..<m { for a in 0..<m {
                var v = 0.0
                for g in 0..<layout.dimension { v += u[a][g] * x[b][g] }
                n[a + b * m] = v
            } }
            for b in 0..<m { for a in 0..<b { let v = 0.5 * (n[a + b * m] + n[b + a * m]); n[a + b * m] = v; n[b + a * m] = v } }
            return n
        }
    }

    /// Λ_Gᵀ x.
    func lambdaTransposed(_ x: [Double]) -> [Double] {
        var out = [Double](repeating: 0, count: x.count)
        for (c, f) in layout.factors.enumerated() {
            let t = lambdas[c], r = t.rows
            for l in 0..<f.levels {
                let b = f.offset + l * r
                for k in 0..<r { var v = 0.0; for i in k..<r { v += t[i, k] * x[b + i] }; out[b + k] = v }
            }
        }
        return out
    }
}

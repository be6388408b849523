// Exact centring of a site-grouped linear mixed model. Sums of squares of a
// response whose mean dwarfs its spread, or of a covariate far from zero (a
// calendar year in a random slope), lose the digits the criterion needs, and
// the random intercept becomes an extrapolation to x = 0 that is nearly
// collinear with the slope. Fitting y − c and x − m instead is the same model:
// the fixed-effects columns span the same space (the intercept absorbs the
// shifts), and an unstructured random-effects term with an intercept has the
// same family of covariances under Z̃ = Z C (C unit upper triangular), so the
// criterion, σ and every estimate map back exactly:
//   β₀ = β̃₀ + c − Σ m_j β̃_j,  Cov(β) = Cβ Cov(β̃) Cβᵀ,
//   Σ = C Σ̃ Cᵀ (θ by Cholesky), b = C b̃, Cov(b) = C Cov(b̃) Cᵀ.
// The sites receive only expressions y − c and x − m, which their formula
// rules accept (affine maps), and use the same rows.

import Math
import Protocol

struct Centring: Sendable {
    /// Subtracted from the response.
    var response: Double?
    /// Subtracted from these variables wherever they stand alone as a column
    /// (fixed effects, and random-effects terms that have an intercept).
    var variables: [String: Double]

    var isEmpty: Bool { response == nil && variables.isEmpty }

    /// Shifts worth making, read off the site-grouped sums (Σ1, Σx, Σx², Σy,
    /// Σy²): the response when |mean| > 1000 SD, a covariate when |mean| > 10 SD.
    /// Nil without an intercept to absorb them.
    static func choose(_ blocks: [SiteBlocks], spec: ModelSpec) -> Centring? {
        guard let c = spec.fixed.firstIndex(where: { $0.expr == .number(1) }), let width = blocks.first?.width,
              blocks.allSatisfy({ $0.width == width }) else { return nil }
        func moments(_ j: Int) -> (mean: Double, sd: Double)? {
            var n = 0.0, sum = 0.0, squares = 0.0
            for b in blocks { n += b.ww[c + c * width]; sum += b.ww[c + j * width]; squares += b.ww[j + j * width] }
            guard n > 1 else { return nil }
            let mean = sum / n
            return (mean, max(0, squares / n - mean * mean).squareRoot())
        }
        var out = Centring(response: nil, variables: [:])
        if case .value = spec.response, let y = moments(width - 1), abs(y.mean) > 1000 * y.sd { out.response = y.mean }
        for (j, column) in spec.fixed.enumerated() {
            guard case .variable(let v) = column.expr, let x = moments(j), x.sd > 0, abs(x.mean) > 10 * x.sd else { continue }
            out.variables[v] = x.mean
        }
        return out.isEmpty ? nil : out
    }

    /// The model the sites fit.
    func apply(_ spec: ModelSpec) -> ModelSpec {
        var s = spec
        if let c = response, case .value(let y) = spec.response { s.response = .value(.binary(.subtract, y, .number(c))) }
        func shifted(_ column: DesignColumn) -> DesignColumn {
            guard case .variable(let v) = column.expr, let m = variables[v] else { return column }
            return DesignColumn(name: column.name, expr: .binary(.subtract, .variable(v), .number(m)))
        }
        s.fixed = spec.fixed.map(shifted)
        s.terms = spec.terms.map { t in
            var t = t
            if t.columns.contains(where: { $0.expr == .number(1) }) { t.columns = t.columns.map(shifted) }
            return t
        }
        return s
    }

    /// C of one term: identity, with −m_j in the intercept's row at each centred column.
    func termMatrix(_ term: RandomTerm) -> Matrix {
        let r = term.columns.count
        var m = Matrix.identity(r)
        guard let a0 = term.columns.firstIndex(where: { $0.expr == .number(1) }) else { return m }
        for (a, column) in term.columns.enumerated() {
            if case .variable(let v) = column.expr, let mean = variables[v] { m[a0, a] = -mean }
        }
        return m
    }

    /// Cβ, the linear part of the map from the fitted fixed effects to the
    /// analyst's (identity without an intercept to absorb the shifts).
    func fixedEffectsMatrix(spec: ModelSpec) -> Matrix {
        var cb = Matrix.identity(spec.fixedCount)
        guard let c = spec.fixed.firstIndex(where: { $0.expr == .number(1) }) else { return cb }
        for (j, column) in spec.fixed.enumerated() {
            if case .variable(let v) = column.expr, let m = variables[v] { cb[c, j] = -m }
        }
        return cb
    }

    /// β and its covariance in the analyst's coordinates.
    func fixedEffects(_ beta: [Double], covariance: Matrix, spec: ModelSpec) -> ([Double], Matrix) {
        guard let c = spec.fixed.firstIndex(where: { $0.expr == .number(1) }) else { return (beta, covariance) }
        let cb = fixedEffectsMatrix(spec: spec)
        var b = Dense.multiply(cb, beta)
        if let shift = response { b[c] += shift }
        return (b, Dense.multiply(cb, Dense.multiply(covariance, Dense.transpose(cb))))
    }

    /// θ in the analyst's coordinates: each term's T = chol(C T̃ T̃ᵀ Cᵀ).
    func theta(_ tilde: [Double], structure: CovarianceStructure, spec: ModelSpec) -> [Double] {
        var out = tilde
        for (t, (term, offset)) in zip(spec.terms, structure.thetaOffsets).enumerated() {
            let r = term.columns.count
            let c = termMatrix(term)
            guard c != Matrix.identity(r) else { continue }
            var tm = Matrix(rows: r, cols: r)
            var k = offset
            for j in 0..<r { for i in j..<r { tm[i, j] = tilde[k]; k += 1 } }
            let ct = Dense.multiply(c, tm)
            let l = Centring.semidefiniteCholesky(Dense.multiply(ct, Dense.transpose(ct)))
            k = offset
            for j in 0..<r { for i in j..<r { out[k] = l[i, j]; k += 1 } }
            _ = t
        }
        return out
    }

    /// A site's finalize answer in the analyst's coordinates (site-level
    /// effects are the terms grouped by site, in term order).
    func finalize(_ f: FinalizeReply, spec: ModelSpec) -> FinalizeReply {
        let siteTerms = spec.terms.filter { $0.grouping == .site }
        let r = siteTerms.reduce(0) { $0 + $1.columns.count }
        var c = Matrix.identity(r)
        var base = 0
        for term in siteTerms {
            let ct = termMatrix(term)
            for i in 0..<ct.rows { for j in 0..<ct.cols { c[base + i, base + j] = ct[i, j] } }
            base += term.columns.count
        }
        var out = f
        if let e = f.effects, e.count == r { out.effects = Dense.multiply(c, e) }
        if let o = f.ownEffects, o.count == r { out.ownEffects = Dense.multiply(c, o) }
        if let v = f.conditionalCovariance, v.count == r * r {
            out.conditionalCovariance = Dense.multiply(c, Dense.multiply(Matrix(rows: r, cols: r, data: v), Dense.transpose(c))).data
        }
        return out
    }

    /// Lower-triangular L with LLᵀ = A for a positive semi-definite A (a
    /// zero pivot gives a zero column), diagonal ≥ 0 as lme4's θ.
    static func semidefiniteCholesky(_ a: Matrix) -> Matrix {
        let n = a.rows
        var l = Matrix(rows: n, cols: n)
        let scale = (0..<n).map { abs(a[$0, $0]) }.max() ?? 0
        for j in 0..<n {
            var d = a[j, j]
            for k in 0..<j { d -= l[j, k] * l[j, k] }
            let pivot = d > 1e-14 * scale ? d.squareRoot() : 0
            l[j, j] = pivot
            for i in (j + 1)..<max(n, j + 1) {
                var s = a[i, j]
                for k in 0..<j { s -= l[i, k] * l[j, k] }
                l[i, j] = pivot > 0 ? s / pivot : 0
            }
        }
        return l
    }
}

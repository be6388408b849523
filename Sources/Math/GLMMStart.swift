// A site's GLMM objective at θ = 0, in β alone: the GLM that starts a GLMM
// fit (lme4's start, and the boundary candidate).
//
// At θ = 0, Λ = 0: the modes are û = 0, M = ΛᵀZᵀWZΛ + I = I, and
//     D_k(0, β) = Σ_i dev_i(η_i),   η_i = o_i + x_iβ,
// with gradient Σ dev′_i x_i and Hessian Σ dev″_i x_i x_iᵀ (observed, as
// the full evaluation's). One pass over the rows, no PIRLS, no jets. Each
// number is computed with the same operations, in the same order, as the
// β entries of `GLMMSite.evaluate` at θ = 0 (whose extra terms there are
// exact zeros), so for the Laplace objective the two agree to the bit
// (GLMMStartTests). For adaptive quadrature at θ = 0 the nodes do not move
// the deviance, so the objective is the same Σ dev_i; the full evaluation
// gets it through the quadrature's sums, equal up to rounding.

extension GLMMSite {
    /// D_k(0, β) with its gradient (order ≥ 1) and Hessian (order 2) in β.
    public func glmJet(beta: [Double], order: Int) throws -> ScalarJet {
        let p = data.p
        precondition(beta.count == p, "glmJet: one β per fixed effect")
        let space = JetSpace(parameters: p, order: order)
        var out = ScalarJet(space: space, value: 0)
        let eta = GLMFamily.linearPredictor(x: data.x, p: p, beta: beta, offset: data.offset)
        let pairI = space.pairFirst, pairJ = space.pairSecond, second = 1 + p
        var value = 0.0
        let family = data.family
        // Raw pointers over the rows (the same sums in the same order, without per-row array access).
        try out.storage.withUnsafeMutableBufferPointer { o in
        try data.x.withUnsafeBufferPointer { xs in
        try data.y.withUnsafeBufferPointer { ys in
        try data.n.withUnsafeBufferPointer { ns in
        try pairI.withUnsafeBufferPointer { pi in
        try pairJ.withUnsafeBufferPointer { pj in
            for i in 0..<data.rows {
                let x = i * p
                guard order >= 1 else {
                    value += family.minusTwoLogLik(y: ys[i], n: ns[i], mu: family.meanAndSlope(eta[i]).mu)
                    continue
                }
                let d = family.etaDerivatives(y: ys[i], n: ns[i], eta: eta[i])
                value += d.dev
                for j in 0..<p { o[1 + j] += d.d1 * xs[x + j] }
                if order >= 2 {
                    for k in 0..<pi.count { o[second + k] += d.d2 * xs[x + pi[k]] * xs[x + pj[k]] }
                }
            }
            guard value.isFinite else { throw GLMMError.nonFinite }
            o[0] = value
        } } } } } }
        guard out.storage.allSatisfy(\.isFinite) else { throw GLMMError.nonFinite }
        return out
    }
}

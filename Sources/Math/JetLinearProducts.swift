// Products with a jet that is linear in the first m parameters: its value
// and its first derivatives in those m slots may be nonzero, every other
// slot is zero. A GLMM row's z̃ = Λᵀz is such a jet in (θ…, β…) (linear in
// θ, free of β), and the exact derivatives multiply it into η and into the
// mode equation once per row and random effect (GLMMExactDerivatives.swift).
// These are `mulAdd` (sign 1) without the terms that are products with those
// zero slots: the remaining terms are added in mulAdd's order, so the sums
// are the same numbers (up to the sign of an exact zero) for about a third
// of the multiplications when most parameters are fixed effects.

extension JetKernel {
    /// c += a · b, where `a` is linear in the first `m` parameters.
    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, linear a: UnsafePointer<Double>, m: Int, _ b: UnsafePointer<Double>) {
        let a0 = a[0], b0 = b[0]
        c[0] += a0 * b0
        if order == 0 { return }
        for i in stride(from: 1, through: n, by: 1) { c[i] += i <= m ? a[i] * b0 + a0 * b[i] : a0 * b[i] }
        if order == 1 { return }
        var k = 1 + n
        for j in 1...max(n, 1) where j <= n {
            // mulAdd's a_ij b + a_i b_j + a_j b_i + a b_ij, with a_ij = 0, and a_i = 0 (i > m), a_j = 0 (j > m)
            if j <= m {
                for i in 1...j { c[k] += a[i] * b[j] + a[j] * b[i] + a0 * b[k]; k += 1 }
                continue
            }
            let bj = b[j], linear = min(m, j)
            for i in stride(from: 1, through: linear, by: 1) { c[k] += a[i] * bj + a0 * b[k]; k += 1 }
            for t in 0..<(j - linear) { c[k + t] += a0 * b[k + t] }
            k += j - linear
        }
    }

    /// c += a · b, where `b` is linear in the first `m` parameters.
    @inline(__always)
    func mulAdd(_ c: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, linear b: UnsafePointer<Double>, m: Int) {
        let a0 = a[0], b0 = b[0]
        c[0] += a0 * b0
        if order == 0 { return }
        for i in stride(from: 1, through: n, by: 1) { c[i] += i <= m ? a[i] * b0 + a0 * b[i] : a[i] * b0 }
        if order == 1 { return }
        var k = 1 + n
        for j in 1...max(n, 1) where j <= n {
            // mulAdd's a_ij b + a_i b_j + a_j b_i + a b_ij, with b_ij = 0, and b_j = 0 (j > m), b_i = 0 (i > m)
            if j <= m {
                for i in 1...j { c[k] += a[k] * b0 + a[i] * b[j] + a[j] * b[i]; k += 1 }
                continue
            }
            let aj = a[j], linear = min(m, j)
            for i in stride(from: 1, through: linear, by: 1) { c[k] += a[k] * b0 + aj * b[i]; k += 1 }
            for t in 0..<(j - linear) { c[k + t] += a[k + t] * b0 }
            k += j - linear
        }
    }
}

// scale(x) and poly(x, d) need the pooled rows' moments of their argument:
// R centres and scales, or orthogonalizes, over all the rows of the fit. The
// sites send the sums of powers of the argument, shifted by the pooled mean,
// over the rows the model uses (Analysis.pooledMoments); from them the
// coordinator writes each column as an expression the sites evaluate:
//   scale(x)      (x − m) / s, with R's mean and SD (n − 1);
//   poly(x, d)    R's three-term recurrence (predict.poly's form):
//                 Z₁ = x − α₁, Z_{k+1} = (x − α_{k+1}) Z_k − (n_{k}/n_{k−1}) Z_{k−1},
//                 column k = Z_k / √n_k, with α and n from the moments
//                 (Stieltjes' procedure), which are R's `alpha` and `norm2`.

import Protocol

/// Sums of powers of one argument over the pooled used rows.
public struct PooledMoments: Sendable, Hashable {
    /// The shift the sites subtracted before taking powers.
    public var center: Double
    /// Σ (x − center)^k over the used rows, k = 0 … 2d.
    public var sums: [Double]
    public init(center: Double, sums: [Double]) { self.center = center; self.sums = sums }

    public var count: Double { sums[0] }
    /// The pooled mean.
    public var mean: Double { center + sums[1] / sums[0] }
    /// The pooled standard deviation with n − 1 (R's sd).
    public var sd: Double {
        let n = sums[0]
        return (max(0, sums[2] - sums[1] * sums[1] / n) / max(1, n - 1)).squareRoot()
    }

    /// R's poly coefficients up to `degree`: α (in the argument's own units)
    /// and norm2 (n_0 = 1 omitted: [n, n_1, …, n_d]).
    public func orthogonalPolynomials(degree: Int) -> (alpha: [Double], norm2: [Double]) {
        // Polynomials in t = x − center as coefficient vectors; ⟨p, q⟩ = Σ p_i q_j μ_{i+j}.
        func inner(_ p: [Double], _ q: [Double]) -> Double {
            var s = 0.0
            for (i, a) in p.enumerated() where a != 0 { for (j, b) in q.enumerated() where b != 0 { s += a * b * sums[i + j] } }
            return s
        }
        func timesT(_ p: [Double]) -> [Double] { [0] + p }
        var previous: [Double] = [], current: [Double] = [1]
        var norms = [inner(current, current)]
        var alpha: [Double] = []
        for k in 0..<degree {
            let a = inner(timesT(current), current) / norms[k]
            alpha.append(a + center)
            var next = timesT(current)
            for (i, c) in current.enumerated() { next[i] -= a * c }
            if k > 0 {
                let b = norms[k] / norms[k - 1]
                for (i, c) in previous.enumerated() { next[i] -= b * c }
            }
            previous = current; current = next
            norms.append(inner(current, current))
        }
        return (alpha, norms)
    }

    /// The expression of scale(x).
    public func scaled(_ x: Expr) -> Expr {
        .binary(.divide, .binary(.subtract, x, .number(mean)), .number(sd))
    }

    /// The expressions of poly(x, degree)'s columns.
    public func poly(_ x: Expr, degree: Int) -> [Expr] {
        let (alpha, norm2) = orthogonalPolynomials(degree: degree)
        var z: [Expr] = []
        for k in 0..<degree {
            let shifted = Expr.binary(.subtract, x, .number(alpha[k]))
            switch k {
            case 0: z.append(shifted)
            case 1: z.append(.binary(.subtract, .binary(.multiply, shifted, z[0]), .number(norm2[1] / norm2[0])))
            default: z.append(.binary(.subtract, .binary(.multiply, shifted, z[k - 1]),
                                      .binary(.multiply, .number(norm2[k] / norm2[k - 1]), z[k - 2])))
            }
        }
        return z.enumerated().map { k, e in .binary(.divide, e, .number(norm2[k + 1].squareRoot())) }
    }
}

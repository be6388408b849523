// Student's t distribution for the p-values of an ordinary regression's t
// statistics (R's pt): the regularized incomplete beta function by its
// continued fraction, evaluated on whichever side converges fast.

import Foundation

public enum StudentT {
    /// P(|T| > |t|) on `df` degrees of freedom: 2·pt(−|t|, df) in R.
    public static func twoSidedPValue(_ t: Double, df: Double) -> Double {
        guard df > 0, !t.isNaN else { return .nan }
        if t.isInfinite { return 0 }
        if df.isInfinite { return StandardNormal.twoSidedPValue(t) }
        let t2 = t * t
        // P(|T| > t) = I_x(df/2, 1/2) with x = df/(df + t²), 1 − x = t²/(df + t²).
        return IncompleteBeta.regularized(x: df / (df + t2), complement: t2 / (df + t2), a: df / 2, b: 0.5)
    }

    /// P(T ≤ t) on `df` degrees of freedom (R's pt).
    public static func cdf(_ t: Double, df: Double) -> Double {
        let tail = twoSidedPValue(t, df: df) / 2
        return t < 0 ? tail : 1 - tail
    }
}

public enum IncompleteBeta {
    /// I_x(a, b), given x and 1 − x separately so that neither loses digits.
    public static func regularized(x: Double, complement y: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if y <= 0 { return 1 }
        // The continued fraction converges fast for x < (a + 1)/(a + b + 2);
        // otherwise I_x(a, b) = 1 − I_{1−x}(b, a).
        if x > (a + 1) / (a + b + 2) { return 1 - regularized(x: y, complement: x, a: b, b: a) }
        let logFront = a * log(x) + b * log(y) - log(a) - logBeta(a, b)
        return exp(logFront) * continuedFraction(x: x, a: a, b: b)
    }

    static func logBeta(_ a: Double, _ b: Double) -> Double { lgamma(a) + lgamma(b) - lgamma(a + b) }

    /// 1/(1+ d₁/(1+ d₂/(1+ …))) with the even and odd terms of the incomplete
    /// beta's expansion, by the modified Lentz method.
    static func continuedFraction(x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0
        var d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var f = d
        for m in 1...10_000 {
            let m = Double(m)
            // even step
            var num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            d = 1 + num * d; if abs(d) < tiny { d = tiny }
            c = 1 + num / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            f *= d * c
            // odd step
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 + num * d; if abs(d) < tiny { d = tiny }
            c = 1 + num / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            f *= delta
            if abs(delta - 1) < 1e-16 { break }
        }
        return f
    }
}

extension StudentT {
    /// The p-quantile (R's qt), by Newton's method on the CDF from the normal quantile.
    public static func quantile(_ p: Double, df: Double) -> Double {
        guard p > 0, p < 1, df > 0 else { return .nan }
        if p == 0.5 { return 0 }
        // A normal start (Acklam-free: bisection brackets keep Newton safe).
        var lo = -1e4, hi = 1e4
        var x = p > 0.5 ? 2.0 : -2.0
        for _ in 0..<200 {
            let f = cdf(x, df: df) - p
            if f > 0 { hi = x } else { lo = x }
            let dens = exp(lgamma((df + 1) / 2) - lgamma(df / 2) - 0.5 * log(df * Double.pi) - (df + 1) / 2 * log1p(x * x / df))
            var next = x - f / dens
            if !(next > lo && next < hi) { next = (lo + hi) / 2 }
            if abs(next - x) <= 1e-15 * max(1, abs(x)) { return next }
            x = next
        }
        return x
    }
}

/// The F distribution, for an ordinary regression's overall F test.
public enum FDistribution {
    /// P(F > f) on (numdf, dendf) degrees of freedom: pf(f, numdf, dendf, lower.tail = FALSE).
    public static func upperTail(_ f: Double, numdf: Double, dendf: Double) -> Double {
        guard f > 0 else { return 1 }
        let a = numdf * f
        return IncompleteBeta.regularized(x: dendf / (dendf + a), complement: a / (dendf + a), a: dendf / 2, b: numdf / 2)
    }
}

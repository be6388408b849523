// Student's t distribution, for the fixed-effects tests of a linear mixed
// model with Satterthwaite degrees of freedom (lmerTest's summary()). The
// distribution function is a regularized incomplete beta function:
//     P(|T| > |t|) = I_x(ν/2, 1/2),   x = ν / (ν + t²),
// evaluated by its continued fraction, with logarithms formed so that no
// digits are lost when t² is small or large against ν.

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

public enum StudentT {
    /// Two-sided p-value 2·P(T > |t|) for ν degrees of freedom (ν > 0, not
    /// necessarily an integer; ν = ∞ gives the normal p-value). NaN when t or
    /// ν is NaN or ν ≤ 0.
    public static func twoSidedPValue(_ t: Double, degreesOfFreedom nu: Double) -> Double {
        guard !t.isNaN, !nu.isNaN, nu > 0 else { return .nan }
        if nu == .infinity { return StandardNormal.twoSidedPValue(t) }
        if t.isInfinite { return 0 }
        if t == 0 { return 1 }
        let t2 = t * t
        // log x = −log(1 + t²/ν),  log(1 − x) = log(t²/(ν + t²))
        let logX = -log1p(t2 / nu)
        let log1mX = t2 < nu ? log(t2 / nu) + logX : log1p(-nu / (nu + t2))
        return IncompleteBeta.regularized(a: nu / 2, b: 0.5, logX: logX, log1mX: log1mX)
    }

    /// The distribution function P(T ≤ t) (R's `pt(t, df)`).
    public static func cdf(_ t: Double, degreesOfFreedom nu: Double) -> Double {
        let p = twoSidedPValue(t, degreesOfFreedom: nu)
        guard !p.isNaN else { return .nan }
        return t < 0 ? p / 2 : 1 - p / 2
    }
}

/// The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b).
public enum IncompleteBeta {
    /// I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1.
    public static func regularized(a: Double, b: Double, x: Double) -> Double {
        guard a > 0, b > 0, x >= 0, x <= 1 else { return .nan }
        if x == 0 { return 0 }
        if x == 1 { return 1 }
        return regularized(a: a, b: b, logX: log(x), log1mX: log1p(-x))
    }

    /// I_x(a, b) given log x and log(1 − x), so that a caller who knows them
    /// more accurately than x itself keeps the digits.
    public static func regularized(a: Double, b: Double, logX: Double, log1mX: Double) -> Double {
        let x = exp(logX), y = exp(log1mX)
        // The continued fraction converges fast for x < (a + 1)/(a + b + 2);
        // otherwise use I_x(a, b) = 1 − I_{1−x}(b, a).
        if x * (a + b + 2) < a + 1 {
            return front(a: a, b: b, logX: logX, log1mX: log1mX) * fraction(a: a, b: b, x: x) / a
        }
        return 1 - front(a: b, b: a, logX: log1mX, log1mX: logX) * fraction(a: b, b: a, x: y) / b
    }

    /// x^a (1 − x)^b / B(a, b).
    static func front(a: Double, b: Double, logX: Double, log1mX: Double) -> Double {
        exp(a * logX + b * log1mX - logBeta(a, b))
    }

    /// log B(a, b) = log Γ(a) + log Γ(b) − log Γ(a + b). When a or b is
    /// large (ν/2 of a t test on thousands of df), Stirling's series with the
    /// large terms cancelled by hand keeps the digits the plain sum loses:
    ///     log Γ(x) = (x − ½) log x − x + ½ log 2π + δ(x).
    static func logBeta(_ a: Double, _ b: Double) -> Double {
        let small = min(a, b), big = max(a, b)
        guard big >= 15 else { return lgamma(a) + lgamma(b) - lgamma(a + b) }
        let sum = a + b
        if small >= 15 {
            return 0.5 * log(2 * Double.pi) + (a - 0.5) * log(a / sum) + (b - 0.5) * log(b / sum) - 0.5 * log(sum)
                + stirlingRemainder(a) + stirlingRemainder(b) - stirlingRemainder(sum)
        }
        // log Γ(big) − log Γ(big + small)
        let ratio = -(big - 0.5) * log1p(small / big) - small * log(sum) + small
            + stirlingRemainder(big) - stirlingRemainder(sum)
        return lgamma(small) + ratio
    }

    /// δ(x) = log Γ(x) − ((x − ½) log x − x + ½ log 2π), for x ≥ 15 (error below 1e-16).
    static func stirlingRemainder(_ x: Double) -> Double {
        let r = 1 / x, r2 = r * r
        return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680 - r2 / 1188))))
    }

    /// The continued fraction 1/(1 + d₁/(1 + d₂/(1 + …))) of I_x(a, b), by
    /// the modified Lentz method, with
    ///     d₂ₘ₊₁ = −(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
    ///     d₂ₘ   =  m (b − m) x / ((a + 2m − 1)(a + 2m)).
    static func fraction(a: Double, b: Double, x: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0
        var d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var f = d
        for m in 1...100_000 {
            let mm = Double(m)
            // even step
            var num = mm * (b - mm) * x / ((a + 2 * mm - 1) * (a + 2 * mm))
            d = 1 + num * d; if abs(d) < tiny { d = tiny }
            c = 1 + num / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            f *= d * c
            // odd step
            num = -(a + mm) * (a + b + mm) * x / ((a + 2 * mm) * (a + 2 * mm + 1))
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
    /// The p-quantile (R's qt): Newton's method on the distribution
    /// function, kept inside a bisection bracket.
    public static func quantile(_ p: Double, degreesOfFreedom nu: Double) -> Double {
        guard p > 0, p < 1, nu > 0 else { return .nan }
        if p == 0.5 { return 0 }
        var lo = -1e4, hi = 1e4
        var x = p > 0.5 ? 2.0 : -2.0
        for _ in 0..<200 {
            let f = cdf(x, degreesOfFreedom: nu) - p
            if f > 0 { hi = x } else { lo = x }
            let logNormaliser: Double = lgamma((nu + 1) / 2) - lgamma(nu / 2) - 0.5 * log(nu * Double.pi)
            let logKernel: Double = -(nu + 1) / 2 * log1p(x * x / nu)
            let density = exp(logNormaliser + logKernel)
            var next = x - f / density
            if !(next > lo && next < hi) { next = (lo + hi) / 2 }
            if abs(next - x) <= 1e-15 * max(1, abs(x)) { return next }
            x = next
        }
        return x
    }
}

/// The F distribution, for an ordinary regression's overall F test.
public enum FDistribution {
    /// P(F > f) on (numdf, dendf) degrees of freedom: R's pf(f, numdf, dendf, lower.tail = FALSE).
    public static func upperTail(_ f: Double, numdf: Double, dendf: Double) -> Double {
        guard f > 0 else { return 1 }
        let a = numdf * f
        return IncompleteBeta.regularized(a: dendf / 2, b: numdf / 2, logX: log(dendf / (dendf + a)), log1mX: log(a / (dendf + a)))
    }
}

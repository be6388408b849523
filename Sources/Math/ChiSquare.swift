// Upper-tail probabilities of the chi-square distribution, for likelihood-ratio
// tests (`fedmix compare`): P(χ²_k > x) = Q(k/2, x/2), the regularized upper
// incomplete gamma function. Q is computed directly (never as 1 − P) wherever
// it is small, so that tail probabilities far below machine epsilon keep their
// relative accuracy, as R's pchisq(x, k, lower.tail = FALSE) does.

import Foundation

public enum ChiSquare {
    /// P(χ²_df > x). df = 0 is the point mass at 0 (R: 0 for every x ≥ 0).
    public static func upperTail(_ x: Double, df: Double) -> Double {
        precondition(df >= 0, "degrees of freedom must be non-negative")
        if x.isNaN || df.isNaN { return .nan }
        if df == 0 { return x < 0 ? 1 : 0 }
        if x <= 0 { return 1 }
        if x == .infinity { return 0 }
        return RegularizedGamma.upper(a: df / 2, x: x / 2)
    }

    /// The boundary-corrected p-value of a likelihood-ratio statistic when one
    /// random effect is added to a grouping that already has `present` of them
    /// (so the test has present + 1 degrees of freedom): the 50:50 mixture of
    /// χ²_present and χ²_(present+1) (Self & Liang 1987; Stram & Lee 1994).
    /// With present = 0 (a new scalar term) it is 0.5·P(χ²₁ > x).
    public static func mixtureUpperTail(_ x: Double, present: Int) -> Double {
        0.5 * upperTail(x, df: Double(present)) + 0.5 * upperTail(x, df: Double(present + 1))
    }
}

/// The regularized incomplete gamma functions P(a, x) and Q(a, x) = 1 − P(a, x).
public enum RegularizedGamma {
    /// Q(a, x) for a > 0, x ≥ 0.
    public static func upper(a: Double, x: Double) -> Double {
        if x <= 0 { return 1 }
        if x < a + 1 { return 1 - lowerSeries(a: a, x: x) }
        return upperContinuedFraction(a: a, x: x)
    }

    /// P(a, x) for a > 0, x ≥ 0.
    public static func lower(a: Double, x: Double) -> Double {
        if x <= 0 { return 0 }
        if x < a + 1 { return lowerSeries(a: a, x: x) }
        return 1 - upperContinuedFraction(a: a, x: x)
    }

    /// log of x^a e^(−x) / Γ(a): the common factor of both expansions.
    static func logPrefactor(a: Double, x: Double) -> Double { a * log(x) - x - lgamma(a) }

    /// P(a, x) = x^a e^(−x) / Γ(a+1) · Σ_n x^n / ((a+1)…(a+n)); converges fast for x < a + 1.
    static func lowerSeries(a: Double, x: Double) -> Double {
        var term = 1 / a, sum = term, denominator = a
        for _ in 0..<10_000 {
            denominator += 1
            term *= x / denominator
            sum += term
            if abs(term) < abs(sum) * 1e-17 { break }
        }
        return min(1, sum * exp(logPrefactor(a: a, x: x)))
    }

    /// Q(a, x) by Legendre's continued fraction, evaluated with the modified
    /// Lentz method; converges fast for x ≥ a + 1.
    static func upperContinuedFraction(a: Double, x: Double) -> Double {
        let tiny = 1e-300
        var b = x + 1 - a
        var c = 1 / tiny
        var d = 1 / b
        var h = d
        for i in 1..<10_000 {
            let an = -Double(i) * (Double(i) - a)
            b += 2
            d = an * d + b
            if abs(d) < tiny { d = tiny }
            c = b + an / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-16 { break }
        }
        return exp(logPrefactor(a: a, x: x)) * h
    }
}

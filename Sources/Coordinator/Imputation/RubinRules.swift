// Rubin's rules: one estimate and its uncertainty from M analyses of M
// completed datasets. For a coefficient with estimates Q_m and squared
// standard errors U_m:
//   Q̄ = mean Q_m, Ū = mean U_m (within), B = Σ(Q_m − Q̄)²/(M − 1) (between),
//   T = Ū + (1 + 1/M) B (total), riv r = (1 + 1/M) B / Ū, λ = (1 + 1/M) B / T,
//   df (Barnard and Rubin 1999): ν_old = (M − 1)/λ², ν_obs = (ν_com + 1)/(ν_com + 3) ν_com (1 − λ),
//   ν = ν_old ν_obs / (ν_old + ν_obs); fmi = (r + 2/(ν + 3)) / (1 + r) (as R's mice::pool).
// ν_com, the complete-data df, is the analysis' rows minus its fixed effects.

import Foundation
import Math

public struct RubinPooled: Sendable, Equatable {
    public var estimate: Double
    public var within: Double
    public var between: Double
    public var total: Double
    public var df: Double
    public var riv: Double
    public var lambda: Double
    public var fmi: Double
    public var stdError: Double { total.squareRoot() }
    /// The 95% interval on Student's t with the Barnard-Rubin df.
    public var interval: (lower: Double, upper: Double) {
        let t = df.isFinite ? StudentT.quantile(0.975, degreesOfFreedom: df) : 1.959963984540054
        return (estimate - t * stdError, estimate + t * stdError)
    }
}

public enum RubinRules {
    public static func pool(estimates q: [Double], variances u: [Double], completeDataDF dfCom: Double) -> RubinPooled {
        let m = Double(q.count)
        let qbar = q.reduce(0, +) / m
        let ubar = u.reduce(0, +) / m
        let b = m > 1 ? q.reduce(0) { $0 + ($1 - qbar) * ($1 - qbar) } / (m - 1) : 0
        let t = ubar + (1 + 1 / m) * b
        let riv = ubar > 0 ? (1 + 1 / m) * b / ubar : .infinity
        let lambda = t > 0 ? (1 + 1 / m) * b / t : 0
        let dfOld = lambda > 0 ? (m - 1) / (lambda * lambda) : .infinity
        let dfObs = dfCom.isFinite ? (dfCom + 1) / (dfCom + 3) * dfCom * (1 - lambda) : .infinity
        let df: Double
        switch (dfOld.isFinite, dfObs.isFinite) {
        case (true, true): df = dfOld * dfObs / (dfOld + dfObs)
        case (true, false): df = dfOld
        case (false, true): df = dfObs
        case (false, false): df = .infinity
        }
        let fmi = (riv + 2 / (df + 3)) / (1 + riv)
        return RubinPooled(estimate: qbar, within: ubar, between: b, total: t, df: df, riv: riv, lambda: lambda, fmi: fmi)
    }
}

/// Likelihood-ratio statistics pooled over imputations: the D2 statistic of
/// Li, Meng, Raghunathan and Rubin (1991), as mitml::testModels(method =
/// "D2") computes it. From the M statistics d_m on k df:
///   r = (1 + 1/M) var(√d_m),  D2 = (mean d / k − (M + 1)/(M − 1) r) / (1 + r),
///   df2 = k^(−3/M) (M − 1) (1 + 1/r)²,  p = P(F(k, df2) > D2).
public struct PooledLikelihoodRatio: Sendable, Equatable {
    public var statistic: Double
    public var df: Int
    public var df2: Double
    public var pValue: Double

    public static func pool(_ d: [Double], df k: Int) -> PooledLikelihoodRatio {
        let m = Double(d.count), kk = Double(k)
        let roots = d.map { max(0, $0).squareRoot() }
        let mean = roots.reduce(0, +) / m
        let variance = m > 1 ? roots.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (m - 1) : 0
        let r = (1 + 1 / m) * variance
        let statistic = max(0, (d.reduce(0, +) / m / kk - (m + 1) / (m - 1) * r) / (1 + r))
        let df2 = r > 0 ? Foundation.pow(kk, -3 / m) * (m - 1) * (1 + 1 / r) * (1 + 1 / r) : .infinity
        let p = df2.isFinite ? FDistribution.upperTail(statistic, numdf: kk, dendf: df2)
            : ChiSquare.upperTail(statistic * kk, df: kk)
        return PooledLikelihoodRatio(statistic: statistic, df: k, df2: df2, pValue: p)
    }
}

// The fixed effects' sampling covariance and their Wald table, as lme4's
// `vcov()` and `summary()$coefficients` give them (with 95% Wald intervals).

import Foundation

/// The two figures of the standard normal distribution a Wald table needs.
public enum StandardNormal {
    /// Φ⁻¹(0.975): the multiplier of a 95% Wald interval.
    public static let quantile975 = 1.959963984540054

    /// Two-sided p-value of a z statistic, 2·(1 − Φ(|z|)) = erfc(|z|/√2).
    public static func twoSidedPValue(_ z: Double) -> Double { erfc(abs(z) / 2.0.squareRoot()) }
}

/// Covariance of the fixed-effects estimates, σ²·U with U the p×p unscaled
/// covariance: for a linear mixed model σ̂²·(XᵀV⁻¹X)⁻¹ in σ units; for a
/// GLMM σ = 1 and U is the β block of 2·H⁻¹ (lme4's `use.hessian`). σ and U
/// are kept apart so that a standard error is σ·√Uᵢᵢ, computed as lme4 does.
public struct FixedEffectsCovariance: Sendable, Equatable {
    /// The residual standard deviation σ (1 for GLMMs).
    public let sigma: Double
    /// The unscaled covariance U (p×p).
    public let unscaled: Matrix

    public init(sigma: Double, unscaled: Matrix) {
        precondition(unscaled.rows == unscaled.cols, "a covariance is square")
        self.sigma = sigma; self.unscaled = unscaled
    }

    /// A GLMM's: the β block of 2·H⁻¹, where H is the Hessian of the
    /// objective (−2 log L) in (θ, β) with θ first; when H is not positive
    /// definite (θ on its bound), 2·(H_ββ)⁻¹. Nil when neither is.
    public init?(hessian h: Matrix, thetaCount m: Int) {
        let n = h.rows, p = n - m
        var cov = Matrix(rows: p, cols: p)
        if let l = try? Dense.cholesky(h) {
            let inv = Dense.inverseFromCholesky(l)
            for j in 0..<p { for i in 0..<p { cov[i, j] = 2 * inv[m + i, m + j] } }
        } else {
            var hb = Matrix(rows: p, cols: p)
            for j in 0..<p { for i in 0..<p { hb[i, j] = h[m + i, m + j] } }
            guard let l = try? Dense.cholesky(hb) else { return nil }
            let inv = Dense.inverseFromCholesky(l)
            for k in 0..<inv.data.count { cov.data[k] = 2 * inv.data[k] }
        }
        self.init(sigma: 1, unscaled: cov)
    }

    /// Number of fixed effects p.
    public var count: Int { unscaled.rows }

    /// The covariance σ²·U (lme4's `vcov()`).
    public var matrix: Matrix {
        let s2 = sigma * sigma
        return Matrix(rows: count, cols: count, data: unscaled.data.map { s2 * $0 })
    }

    /// Standard errors σ·√Uᵢᵢ.
    public var standardErrors: [Double] { (0..<count).map { sigma * unscaled[$0, $0].squareRoot() } }

    /// The correlation matrix (R's `cov2cor`): Vᵢⱼ/(√Vᵢᵢ·√Vⱼⱼ), unit diagonal.
    public var correlation: Matrix {
        let v = matrix
        let inverseSD = (0..<count).map { (1 / v[$0, $0]).squareRoot() }
        var r = Matrix(rows: count, cols: count)
        for j in 0..<count { for i in 0..<count { r[i, j] = i == j ? 1 : inverseSD[i] * v[i, j] * inverseSD[j] } }
        return r
    }
}

/// The fixed-effects table: estimate, standard error, z (or t) statistic,
/// two-sided normal p-value and 95% Wald interval for each coefficient.
public struct CoefficientTable: Sendable, Equatable {
    public struct Row: Sendable, Equatable {
        public var name: String
        public var estimate: Double
        /// NaN when the standard error is not finite.
        public var standardError: Double
        public var statistic: Double
        public var pValue: Double
        public var lower: Double
        public var upper: Double
        /// Satterthwaite's degrees of freedom (linear mixed models); the
        /// p-value is then from Student's t, else from the normal.
        public var degreesOfFreedom: Double? = nil
    }

    public let rows: [Row]

    /// `names` and `estimates` in the order of the covariance's rows. The
    /// statistic and interval use the standard error as computed, even when
    /// it is not finite (an infinite one gives z = 0 and an infinite interval).
    public init(names: [String], estimates: [Double], covariance: FixedEffectsCovariance) {
        precondition(names.count == estimates.count && estimates.count == covariance.count, "one name and one estimate per row of the covariance")
        let z = StandardNormal.quantile975
        rows = zip(zip(names, estimates), covariance.standardErrors).map { nameAndEstimate, se in
            let (name, b) = nameAndEstimate
            let statistic = b / se
            return Row(name: name, estimate: b, standardError: se.isFinite ? se : .nan, statistic: statistic,
                       pValue: StandardNormal.twoSidedPValue(statistic), lower: b - z * se, upper: b + z * se)
        }
    }

    /// The same table with t tests on the given degrees of freedom (one per
    /// row; lmerTest's summary()): the p-value is 2·P(T_df > |t|); the
    /// interval stays the Wald one.
    public init(names: [String], estimates: [Double], covariance: FixedEffectsCovariance, degreesOfFreedom: [Double]) {
        precondition(degreesOfFreedom.count == estimates.count, "one df per coefficient")
        let wald = CoefficientTable(names: names, estimates: estimates, covariance: covariance)
        // A df that is not a positive finite number (a singular fit can give
        // one) leaves the row's Wald test as it is.
        rows = zip(wald.rows, degreesOfFreedom).map { row, df in
            guard df.isFinite, df > 0 else { return row }
            var row = row
            row.degreesOfFreedom = df
            row.pValue = StudentT.twoSidedPValue(row.statistic, degreesOfFreedom: df)
            return row
        }
    }
}

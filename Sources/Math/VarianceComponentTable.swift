// The random-effects covariance as an analyst reads it: lme4's
// `as.data.frame(VarCorr(fit))` rows, θ with its names, and intraclass
// correlations on the latent scale, all in lme4's order of the terms.

extension CovarianceStructure {
    /// Entries of term t's own r×r factor T: (row, col within the term, θ
    /// index), in θ order (column by column).
    public func termEntries(_ t: Int) -> [(row: Int, col: Int, theta: Int)] {
        let first = thetaOffsets[t], r = terms[t].dimension
        let own = factorEntries(terms[t].factor).filter { (first..<(first + r * (r + 1) / 2)).contains($0.theta) }
        let base = own.map(\.row).min() ?? 0
        return own.map { ($0.row - base, $0.col - base, $0.theta) }
    }

    /// T of term t as a plain matrix.
    public func termMatrix(_ t: Int, theta: [Double]) -> Matrix {
        let r = terms[t].dimension
        var m = Matrix(rows: r, cols: r)
        for e in termEntries(t) { m[e.row, e.col] = theta[e.theta] }
        return m
    }
}

/// lme4's `as.data.frame(VarCorr(fit))`: per term (in lme4's order) the
/// variances of its columns, then the correlations of each pair, then the
/// residual; with θ reordered and named as lme4's `getME(fit, "theta")`.
public struct VarianceComponentTable: Sendable, Equatable {
    /// One random-effects term as written: its grouping name (possibly
    /// repeated, as in `(1 | g) + (0 + x | g)`), its columns' names, and the
    /// number of levels of its grouping factor.
    public struct Term: Sendable, Equatable {
        public var name: String
        public var columns: [String]
        public var levels: Int
        public init(name: String, columns: [String], levels: Int) { self.name = name; self.columns = columns; self.levels = levels }
    }

    /// One row, named as lme4's columns: `var2` is nil on a variance row,
    /// `sdcor` a standard deviation there and a correlation on a covariance row.
    public struct Row: Sendable, Equatable {
        public var group: String
        public var var1: String?
        public var var2: String?
        public var vcov: Double
        public var sdcor: Double
    }

    /// Term indices (as written) in lme4's order.
    public let order: [Int]
    /// The groups' names in lme4's order, made unique as R's `make.unique`.
    public let groupNames: [String]
    public let rows: [Row]
    /// θ in lme4's order, and its names ("g.(Intercept)", "g.x.(Intercept)").
    public let theta: [Double]
    public let thetaNames: [String]

    /// `structure` and `theta` in the terms' order as written; `sigma` the
    /// residual standard deviation (1 for GLMMs). A linear model's table
    /// ends with the "Residual" row (`includesResidual`).
    public init(structure: CovarianceStructure, terms: [Term], theta: [Double], sigma: Double, includesResidual: Bool) {
        precondition(structure.terms.count == terms.count && theta.count == structure.thetaCount, "terms and θ do not match the structure")
        order = Self.lme4Order(levels: terms.map(\.levels))
        groupNames = Self.uniqueNames(order.map { terms[$0].name })
        var rows: [Row] = [], thetaOut: [Double] = [], thetaNames: [String] = []
        for (group, t) in zip(groupNames, order) {
            let columns = terms[t].columns, r = columns.count
            for e in structure.termEntries(t) {
                thetaOut.append(theta[e.theta])
                thetaNames.append(e.row == e.col ? "\(group).\(columns[e.row])" : "\(group).\(columns[e.row]).\(columns[e.col])")
            }
            let cov = Self.covariance(structure.termMatrix(t, theta: theta), sigma: sigma)
            for i in 0..<r {
                rows.append(Row(group: group, var1: columns[i], var2: nil, vcov: cov[i, i], sdcor: cov[i, i].squareRoot()))
            }
            for i in 0..<r { for j in (i + 1)..<max(r, i + 1) {
                let sd = (cov[i, i] * cov[j, j]).squareRoot()
                rows.append(Row(group: group, var1: columns[i], var2: columns[j], vcov: cov[i, j], sdcor: sd > 0 ? cov[i, j] / sd : 0))
            } }
        }
        if includesResidual { rows.append(Row(group: "Residual", var1: nil, var2: nil, vcov: sigma * sigma, sdcor: sigma)) }
        self.rows = rows; self.theta = thetaOut; self.thetaNames = thetaNames
    }

    /// A term's covariance σ²·(T Tᵀ).
    static func covariance(_ t: Matrix, sigma: Double) -> Matrix {
        var cov = Dense.multiply(t, Dense.transpose(t))
        for e in 0..<cov.data.count { cov.data[e] *= sigma * sigma }
        return cov
    }

    /// lme4's order of terms: by decreasing number of levels, ties reversed
    /// (`rev(order(nl))`), unless the order as written is already non-increasing.
    public static func lme4Order(levels nl: [Int]) -> [Int] {
        let increasing = zip(nl, nl.dropFirst()).contains { $0 < $1 }
        guard increasing else { return Array(nl.indices) }
        let ascending = nl.indices.sorted { nl[$0] != nl[$1] ? nl[$0] < nl[$1] : $0 < $1 }
        return ascending.reversed()
    }

    /// R's `make.unique`: the second "g" becomes "g.1", the third "g.2".
    public static func uniqueNames(_ names: [String]) -> [String] {
        var seen: [String: Int] = [:]
        return names.map { base in
            guard let k = seen[base] else { seen[base] = 1; return base }
            seen[base] = k + 1
            return "\(base).\(k)"
        }
    }

    /// Intraclass correlations on the latent scale: each group's intercept
    /// variance over the sum of all intercept variances and the latent
    /// residual variance (see `latentResidualVariance`).
    public func intraclassCorrelations(latentResidualVariance residual: Double) -> [String: Double] {
        let intercepts = rows.filter { $0.var1 == "(Intercept)" && $0.var2 == nil }
        let total = intercepts.reduce(residual) { $0 + $1.vcov }
        var icc: [String: Double] = [:]
        for row in intercepts { icc[row.group] = row.vcov / total }
        return icc
    }

    /// The residual variance on the latent scale: σ² for a linear model
    /// (`family` nil), π²/3 for the logit link, 1 probit, π²/6 cloglog; nil
    /// where none is defined (Poisson).
    public static func latentResidualVariance(family: GLMFamily?, sigma: Double) -> Double? {
        guard let family else { return sigma * sigma }
        switch (family.distribution, family.link) {
        case (.binomial, .logit): return Double.pi * Double.pi / 3
        case (.binomial, .probit): return 1
        case (.binomial, .cloglog): return Double.pi * Double.pi / 6
        default: return nil
        }
    }
}

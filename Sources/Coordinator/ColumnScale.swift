// Each fixed-effects column's mean and spread over the used rows, pooled
// from the sites' column sums and sums of squares. Diagnostics that judge
// the size of an estimate (separation) or the conditioning of a design
// (uncentred covariates) use them, so that neither depends on a
// covariate's units: an intercept of 69 from a year coded 95-97 is not
// separation, a log-odds ratio of 40 per standard deviation is.

import Foundation
import Protocol

struct ColumnScale {
    let names: [String]
    let means: [Double]
    let sds: [Double]

    init?(prepared: [PrepareReply], names: [String]) {
        let p = names.count
        guard !prepared.isEmpty, prepared.allSatisfy({ $0.summary.columnSums?.count == p && $0.summary.columnSquareSums?.count == p }) else { return nil }
        let n = Double(prepared.reduce(0) { $0 + $1.summary.used })
        guard n > 1 else { return nil }
        var sums = [Double](repeating: 0, count: p), squares = sums
        for r in prepared {
            for j in 0..<p { sums[j] += r.summary.columnSums![j]; squares[j] += r.summary.columnSquareSums![j] }
        }
        self.names = names
        means = sums.map { $0 / n }
        sds = (0..<p).map { j in max(0, (squares[j] - sums[j] * sums[j] / n) / (n - 1)).squareRoot() }
    }

    /// A column that does not vary (the intercept): its coefficient moves the
    /// linear predictor at the average covariate profile.
    func isConstant(_ j: Int) -> Bool { sds[j] <= 1e-12 * max(1, abs(means[j])) }

    /// How far each coefficient moves the linear predictor: |β_j|·SD_j for a
    /// covariate, |η at the average profile| for a constant column.
    func linkScaleSizes(_ beta: [Double]) -> [Double] {
        let etaAtMean = zip(beta, means).reduce(0) { $0 + $1.0 * $1.1 }
        return beta.indices.map { j in isConstant(j) ? abs(etaAtMean) : abs(beta[j]) * sds[j] }
    }

    /// Covariates whose mean is far from zero relative to their spread: the
    /// intercept is then an extrapolation to 0 and nearly collinear with them.
    func uncentred(threshold: Double = 10) -> [(name: String, mean: Double, sd: Double)] {
        names.indices.filter { !isConstant($0) && abs(means[$0]) > threshold * sds[$0] }
            .map { (names[$0], means[$0], sds[$0]) }
    }
}

// The design effect of clustering: how much larger the variance of an
// estimate is under the clustering than under independent rows of the same
// number, from the intraclass correlation and the cluster sizes.
//   equal sizes:    1 + (m̄ − 1)·ICC
//   unequal sizes:  1 + ((CV² + 1)·m̄ − 1)·ICC, CV = sd(sizes)/m̄
// With the population sd (divisor G), (CV² + 1)·m̄ = Σm²/N; the sample sd
// (divisor G − 1) is reported beside it. For GLMMs the ICC is on the latent
// scale (residual variance π²/3 for logit, 1 probit, π²/6 cloglog).

import Foundation
import Protocol

public struct DesignEffect: Codable, Sendable, Equatable {
    /// The mixed model the ICC comes from (nil when computed on its own).
    public var model: String?
    /// The grouping factor of the random intercept.
    public var group: String
    public var icc: Double
    /// "response" (linear model) or "latent" (GLMM).
    public var iccScale: String
    /// The estimation method of the fit the ICC comes from (REML, ML, Laplace…).
    public var method: String?
    public var nClusters: Int
    public var nObs: Int
    public var meanClusterSize: Double
    /// Coefficient of variation of the cluster sizes, sd with divisor G (nil when the sizes are not known, only their mean).
    public var cvClusterSize: Double?
    /// The same with the sample sd (divisor G − 1).
    public var cvClusterSizeSample: Double?
    public var equal: Double
    public var unequal: Double?
    public var unequalSampleCV: Double?
    /// The rule of thumb: ICC above 0.05.
    public var clusteringMatters: Bool
    public var summary: String

    enum CodingKeys: String, CodingKey {
        case model, group, icc, iccScale = "icc_scale", method, nClusters = "n_clusters", nObs = "n_obs", meanClusterSize = "mean_cluster_size"
        case cvClusterSize = "cv_cluster_size", cvClusterSizeSample = "cv_cluster_size_sample", equal, unequal
        case unequalSampleCV = "unequal_sample_cv", clusteringMatters = "clustering_matters", summary
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model); try c.encode(group, forKey: .group); try c.encode(icc, forKey: .icc)
        try c.encode(iccScale, forKey: .iccScale); try c.encode(method, forKey: .method)
        try c.encode(nClusters, forKey: .nClusters); try c.encode(nObs, forKey: .nObs); try c.encode(meanClusterSize, forKey: .meanClusterSize)
        try c.encode(cvClusterSize, forKey: .cvClusterSize); try c.encode(cvClusterSizeSample, forKey: .cvClusterSizeSample)
        try c.encode(equal, forKey: .equal); try c.encode(unequal, forKey: .unequal); try c.encode(unequalSampleCV, forKey: .unequalSampleCV)
        try c.encode(clusteringMatters, forKey: .clusteringMatters); try c.encode(summary, forKey: .summary)
    }

    /// The rule of thumb's threshold.
    public static let threshold = 0.05

    /// From the ICC and every cluster's size.
    public init(icc: Double, clusterSizes sizes: [Int], group: String, iccScale: String = "response") {
        let g = Double(sizes.count), n = sizes.reduce(0, +)
        let mean = Double(n) / g
        let ss = sizes.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
        let cv = (ss / g).squareRoot() / mean
        let cvSample: Double? = sizes.count > 1 ? (ss / (g - 1)).squareRoot() / mean : nil
        self.init(icc: icc, nObs: n, nClusters: sizes.count, group: group, iccScale: iccScale)
        cvClusterSize = cv
        cvClusterSizeSample = cvSample
        unequal = 1 + ((cv * cv + 1) * mean - 1) * icc
        unequalSampleCV = cvSample.map { 1 + (($0 * $0 + 1) * mean - 1) * icc }
        summary = Self.summary(icc: icc, equal: equal, unequal: unequal)
    }

    /// From the ICC and the mean cluster size only (clusters within sites,
    /// whose sizes the sites do not report): the unequal-size version is nil.
    public init(icc: Double, nObs: Int, nClusters: Int, group: String, iccScale: String = "response") {
        let mean = Double(nObs) / Double(nClusters)
        self.group = group; self.icc = icc; self.iccScale = iccScale
        self.nClusters = nClusters; self.nObs = nObs; meanClusterSize = mean
        equal = 1 + (mean - 1) * icc
        clusteringMatters = icc > Self.threshold
        summary = Self.summary(icc: icc, equal: equal, unequal: nil)
    }

    /// From a mixed model's fit: the ICC of its first random intercept; the
    /// cluster sizes are the sites' rows when the intercept is by site. Nil
    /// when the model has no random intercept or no ICC (Poisson).
    init?(mixed r: FitResult, spec: ModelSpec, name: String) {
        guard let term = spec.terms.first(where: { $0.columns.contains { $0.name == "(Intercept)" } }),
              let icc = r.icc[term.name] else { return nil }
        let scale = spec.family == .gaussian ? "response" : "latent"
        if term.grouping == .site {
            self.init(icc: icc, clusterSizes: r.sites.map(\.nUsed).filter { $0 > 0 }, group: term.name, iccScale: scale)
        } else {
            guard let g = r.nGroups[term.name], g > 0 else { return nil }
            self.init(icc: icc, nObs: r.nObs, nClusters: g, group: term.name, iccScale: scale)
        }
        model = name
        method = r.model.method
    }

    static func summary(icc: Double, equal: Double, unequal: Double?) -> String {
        let de = RFormat.significant(unequal ?? equal, 3)
        if icc > threshold {
            return "ICC above 0.05: clustering matters for the standard errors (design effect \(de): ignoring it understates the SEs about \(RFormat.significant((unequal ?? equal).squareRoot(), 3))-fold)"
        }
        return "ICC at most 0.05: by the rule of thumb clustering matters little for the standard errors (design effect \(de))"
    }
}

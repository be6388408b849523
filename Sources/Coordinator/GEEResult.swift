// What `fedmix gee` writes: the GEE fit in its own stable JSON form (the
// fields of issue 15's interface) and a geepack-style text summary. Built
// from the one fit path's FitResult and its GEE section.

import Foundation
import Math

public struct GEEResult: Codable, Sendable {
    public struct Model: Codable, Sendable {
        public var formula: String
        public var family: String
        public var link: String
        public var method: String
    }
    public struct Coefficient: Codable, Sendable {
        public var name: String
        public var estimate: Double
        /// The robust (sandwich) standard error, geepack's Std.err.
        public var stdError: Double
        /// The model-based standard error (geepack's vbeta.naiv).
        public var naiveStdError: Double
        /// estimate / SE: z on the robust SE, or t on the chosen correction's SE.
        public var statistic: Double
        public var pValue: Double
        public var ciLower: Double
        public var ciUpper: Double
        public var stdErrorMD: Double? = nil
        public var stdErrorKC: Double? = nil
        /// With --impute: Barnard-Rubin df, relative increase in variance and
        /// fraction of missing information of the tested SE (Rubin's rules).
        public var df: Double? = nil
        public var riv: Double? = nil
        public var fmi: Double? = nil
        enum CodingKeys: String, CodingKey {
            case name, estimate, stdError = "std_error", naiveStdError = "naive_std_error", statistic, pValue = "p_value"
            case ciLower = "ci_lower", ciUpper = "ci_upper", stdErrorMD = "std_error_md", stdErrorKC = "std_error_kc"
            case df, riv, fmi
        }
    }
    public struct Correlation: Codable, Sendable {
        public var structure: String
        /// α (null for independence).
        public var alpha: Double?
        /// ar1: the variable ordering rows within a cluster.
        public var order: String?
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(structure, forKey: .structure)
            try c.encode(alpha, forKey: .alpha)   // explicit null for independence
            try c.encodeIfPresent(order, forKey: .order)
        }
    }
    public struct SmallSample: Codable, Sendable {
        /// "md" (Mancl-DeRouen) or "kc" (Kauermann-Carroll): the SE the t tests and intervals use.
        public var method: String
        /// Clusters − parameters.
        public var df: Int
    }
    public struct Site: Codable, Sendable {
        public var site: String
        public var nRows: Int
        public var nUsed: Int
        enum CodingKeys: String, CodingKey { case site, nRows = "n_rows", nUsed = "n_used" }
    }

    public var model: Model
    public var fixedEffects: [Coefficient]
    /// "z" (normal, robust SE) or "t" (with a small-sample correction).
    public var statistic: String
    public var smallSample: SmallSample?
    public var correlation: Correlation
    /// φ (geepack's gamma: the mean squared Pearson residual).
    public var scale: Double
    /// "site", or the within-site variable whose codes form the clusters.
    public var cluster: String
    public var nClusters: Int
    public var nObs: Int
    public var nSites: Int
    public var converged: Bool
    public var convergence: String
    /// Fisher-scoring iterations (geepack's), after glm's IRLS iterations for the start.
    public var iterations: Int
    public var glmIterations: Int
    /// The robust covariance, and the model-based one (rows in fixed-effect order).
    public var vcov: [[Double]]
    public var naiveVcov: [[Double]]
    public var messages: [String]
    public var sites: [Site]
    public var rounds: Int
    public var bytesSent: Int
    public var bytesReceived: Int
    public var elapsedSeconds: Double
    public var filter: FitResult.RowFilterUsed?
    public var excludedSites: [String]
    public var exclusions: [SiteExclusion]
    /// `fedmix gee --glmm`: the matching GLMM's conditional and marginal effects beside the GEE's.
    public var sideBySide: SideBySide? = nil
    /// `fedmix gee --impute`: the imputation models, M, seed and per-site counts.
    public var imputation: ImputationSummary? = nil

    enum CodingKeys: String, CodingKey {
        case model, fixedEffects = "fixed_effects", statistic, smallSample = "small_sample", correlation, scale, cluster
        case nClusters = "n_clusters", nObs = "n_obs", nSites = "n_sites", converged, convergence, iterations
        case glmIterations = "glm_iterations", vcov, naiveVcov = "naive_vcov", messages, sites, rounds
        case bytesSent = "bytes_sent", bytesReceived = "bytes_received", elapsedSeconds = "elapsed_seconds"
        case filter, excludedSites = "excluded_sites", exclusions, sideBySide = "side_by_side", imputation
    }

    /// The GEE result of a fit through the one fit path (nil: not a GEE fit).
    public init?(_ r: FitResult) {
        guard let g = r.gee else { return nil }
        let correction: (String, [Double], Int)? = {
            guard let m = g.smallSample, let df = g.df, df > 0 else { return nil }
            return (m, (m == "kc" ? g.stdErrorsKC : g.stdErrorsMD) ?? [], df)
        }()
        let q = correction.map { StudentT.quantile(0.975, degreesOfFreedom: Double($0.2)) } ?? StandardNormal.quantile975
        fixedEffects = r.fixedEffects.enumerated().map { k, f in
            let se = correction.map { $0.1[k] } ?? f.stdError
            let z = f.estimate / se
            let p = correction.map { StudentT.twoSidedPValue(z, degreesOfFreedom: Double($0.2)) } ?? StandardNormal.twoSidedPValue(z)
            return Coefficient(name: f.name, estimate: f.estimate, stdError: f.stdError, naiveStdError: g.naiveStdErrors[k],
                               statistic: z, pValue: p, ciLower: f.estimate - q * se, ciUpper: f.estimate + q * se,
                               stdErrorMD: g.stdErrorsMD?[k], stdErrorKC: g.stdErrorsKC?[k])
        }
        model = Model(formula: r.model.formula, family: r.model.family, link: r.model.link, method: "GEE")
        statistic = correction == nil ? "z" : "t"
        smallSample = correction.map { SmallSample(method: $0.0, df: $0.2) }
        correlation = Correlation(structure: g.structure, alpha: g.alpha, order: g.order)
        scale = g.scale; cluster = g.cluster; nClusters = g.nClusters
        nObs = r.nObs; nSites = r.nSites; converged = r.converged; convergence = r.convergence
        iterations = g.iterations; glmIterations = g.glmIterations
        vcov = r.vcov; naiveVcov = g.naiveVcov
        messages = r.messages
        sites = r.sites.map { Site(site: $0.site, nRows: $0.nRows, nUsed: $0.nUsed) }
        rounds = r.rounds; bytesSent = r.bytesSent; bytesReceived = r.bytesReceived; elapsedSeconds = r.elapsedSeconds
        filter = r.filter; excludedSites = r.excludedSites; exclusions = r.exclusions
    }

    /// The JSON form (pretty-printed, keys sorted).
    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(self), as: UTF8.self)
    }

    /// A summary laid out like geepack's summary(geeglm), with the naive
    /// SEs and intervals beside it and what only a federated fit has.
    public var text: String {
        var out = ""
        func line(_ s: String = "", terminator: String = "\n") { out += s + terminator }
        line("GEE fit by geepack's estimating equations [fedmix, \(nSites) site\(nSites == 1 ? "" : "s")]")
        line(" Family: \(model.family)  ( \(model.link) )")
        line("Formula: \(model.formula)")
        line("   Data: \(nObs) rows at \(nSites) site\(nSites == 1 ? "" : "s") (\(sites.map(\.site).joined(separator: ", ")))")
        line()
        let t = statistic == "t"
        if let mi = imputation {
            line(" Coefficients pooled over M = \(mi.m) completed datasets by Rubin's rules (t on Barnard-Rubin df, below; the test's SE is \(smallSample.map { $0.method == "kc" ? "Kauermann-Carroll's" : "Mancl-DeRouen's" } ?? "the robust sandwich")):")
        } else {
            line(t ? " Coefficients (t on \(smallSample!.df) df with the \(smallSample!.method == "kc" ? "Kauermann-Carroll" : "Mancl-DeRouen") SE; Std.err is the robust sandwich):"
                   : " Coefficients (Std.err: robust sandwich; Wald = (Estimate/Std.err)², geepack's test):")
        }
        var rows: [[String]] = [["", "Estimate", "Std.err", "Naive SE"]]
        if fixedEffects.first?.stdErrorMD != nil { rows[0] += ["SE (MD)", "SE (KC)"] }
        rows[0] += t ? ["t value", "Pr(>|t|)", "2.5 %", "97.5 %", ""] : ["Wald", "Pr(>|W|)", "2.5 %", "97.5 %", ""]
        let est = RFormat.column(fixedEffects.map(\.estimate), digits: 5), se = RFormat.column(fixedEffects.map(\.stdError), digits: 4)
        let naive = RFormat.column(fixedEffects.map(\.naiveStdError), digits: 4)
        let md = RFormat.column(fixedEffects.map(\.stdErrorMD), digits: 4), kc = RFormat.column(fixedEffects.map(\.stdErrorKC), digits: 4)
        let lo = RFormat.column(fixedEffects.map(\.ciLower), digits: 4), hi = RFormat.column(fixedEffects.map(\.ciUpper), digits: 4)
        for (k, f) in fixedEffects.enumerated() {
            var row = [f.name, est[k], se[k], naive[k]]
            if f.stdErrorMD != nil { row += [md[k], kc[k]] }
            row += [t ? String(format: "%.2f", f.statistic) : RFormat.significant(f.statistic * f.statistic, 4),
                    RFormat.pValue(f.pValue), lo[k], hi[k], RFormat.stars(f.pValue)]
            rows.append(row)
        }
        out += Report.table(rows, rightAlign: true, leftFirst: true)
        line("---")
        line("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        line()
        line("Correlation structure = \(correlation.structure)" + (correlation.order.map { " (ordered by \($0))" } ?? ""))
        line("Estimated Scale Parameters:")
        line(Report.table([["", "Estimate"], ["(Intercept)", RFormat.significant(scale, 7)]], rightAlign: true, leftFirst: true), terminator: "")
        if let a = correlation.alpha {
            line("  Link = identity ")
            line("Estimated Correlation Parameters:")
            line(Report.table([["", "Estimate"], ["alpha", RFormat.significant(a, 7)]], rightAlign: true, leftFirst: true), terminator: "")
        }
        line("Number of clusters:   \(nClusters)   (\(cluster == "site" ? "each site is one cluster" : "\(cluster) within sites"))")
        line()
        if let mi = imputation {
            line("Multiple imputation: M = \(mi.m), seed \(mi.seed); estimates and SEs pooled by Rubin's rules:")
            var rubin: [[String]] = [["", "df", "riv", "fmi"]]
            for f in fixedEffects {
                rubin.append([f.name, f.df.map { $0.isFinite ? RFormat.significant($0, 4) : "Inf" } ?? "-",
                              f.riv.map { RFormat.significant($0, 3) } ?? "-", f.fmi.map { RFormat.significant($0, 3) } ?? "-"])
            }
            out += Report.table(rubin, rightAlign: true, leftFirst: true)
            for m in mi.models { line("  imputed by \(m.formula)  [\(m.kind), \(m.nObs) rows]") }
            let variables = mi.models.map(\.variable)
            for s in mi.perSite {
                line("  \(s.site): " + variables.map { "\($0) imputed \(s.imputed[$0]?.text ?? "0")" }.joined(separator: ", "))
            }
            line()
        }
        line("\(convergence); \(iterations) GEE and \(glmIterations) glm iterations, \(rounds) rounds, \(bytesSent + bytesReceived) bytes.")
        for m in messages { line(m) }
        if let sideBySide { line(); out += sideBySide.text }
        return out
    }
}

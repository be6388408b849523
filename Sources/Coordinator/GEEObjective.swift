// GEE as a model kind of the one fit path: geepack's geese.fit reproduced
// over the sites' sums (src/gee2.cc, gee_est and gee_var). Start at glm's
// estimates (FlatObjective's IRLS, glm.fit's own iteration; least squares
// for the gaussian family), then per iteration:
//   β ← β + (Σ DᵀV⁻¹D)⁻¹ Σ DᵀV⁻¹r          at (β, α, φ)
//   φ ← Σ r²/N                              at the new β
//   α ← α + (Σ E·rⱼrₖ/φ − Σ E·ρ)/Σ E²        at the new β and φ, the old α
// until the largest change is at most geepack's ε = 1e-4 (25 iterations at
// most). φ and α need the residuals at the new β, so an iteration is two
// rounds: one at (β, α, φ) for the step, one at the new β for the moments.
// Each round's answer carries every sum (GEEStepReply), so the last moments
// round of a converged fit is also the variance round: the bread
// (Σ DᵀV⁻¹D)⁻¹ is the naive covariance and bread·meat·bread the robust one,
// as gee_var gives them (the β block of geepack's block-triangular
// Hessian). With small-sample corrections, one more round sends the bread.

import Foundation
import Math
import Protocol

/// The bias-corrected sandwich variances for few clusters.
public enum SmallSampleCorrection: String, Sendable, CaseIterable {
    /// Mancl & DeRouen (2001): (I − Hᵢᵢ)⁻¹ on each cluster's residuals.
    case md
    /// Kauermann & Carroll (2001): (I − Hᵢᵢ)^(-½).
    case kc
}

/// fedmix gee's settings beside the formula and cluster.
public struct GEESettings: Sendable {
    public var correlation: WorkingCorrelation
    /// ar1: the variable whose values order the rows of a cluster (geeglm's waves).
    public var order: String?
    public var smallSample: SmallSampleCorrection?
    public init(correlation: WorkingCorrelation = .independence, order: String? = nil, smallSample: SmallSampleCorrection? = nil) {
        self.correlation = correlation; self.order = order; self.smallSample = smallSample
    }
}

struct GEEObjective: FitObjective {
    let session: FitSession
    let options: FitOptions
    private(set) var evaluations = 0
    private var fit: GEEFit? = nil

    /// geese.control()'s defaults.
    static let epsilon = 1e-4, maxIterations = 25

    /// What the iteration ends with.
    struct GEEFit {
        var beta: [Double]
        var alpha: Double
        var scale: Double
        var iterations: Int
        var converged: Bool
        /// Σ DᵀV⁻¹D and the sums of the last round, at the final (β, α, φ).
        var bread: Matrix
        var meat: Matrix
        var clusters: Int
        var glmIterations: Int
        var corrected: (md: Matrix, kc: Matrix)? = nil
    }

    static func validate(_ spec: ModelSpec, options: FitOptions) throws {
        guard spec.isFlat else { throw SettingError("\(.formula): GEE models the mean with fixed effects only; remove the random-effects term (the clusters are \(.cluster))") }
        guard spec.gee != nil, spec.cluster != nil else { throw SettingError("GEE needs \(.cluster) site or a variable nested within sites") }
        guard spec.weights == nil else { throw SettingError("\(.weights) is not available for GEE (geeglm's weights are not recommended by geepack)") }
        if case .binomial = spec.response {
            throw SettingError("\(.formula): GEE takes a 0/1 binomial response, not cbind(successes, failures)")
        }
        if options.nAGQ > 1 { throw SettingError("\(.nAGQ) applies to GLMMs; GEE has no quadrature") }
    }

    init(_ session: FitSession, options: FitOptions) throws {
        self.session = session; self.options = options
    }

    var parameterNames: [String] { [] }
    var lowerBounds: [Double] { [] }
    var structure: WorkingCorrelation { session.spec.gee!.correlation }

    /// One round at (β, α, φ): every site's sums, added in site order.
    mutating func round(beta: [Double], alpha: Double, scale: Double, bread: Matrix? = nil) throws -> GEEStepReply {
        evaluations += 1
        let p = session.spec.fixedCount
        let point = GEEPoint(alpha: alpha, scale: scale, bread: bread?.data)
        let parts = try session.evaluate(EvaluateRequest(session: session.id, theta: [], order: 0, beta: beta, gee: point)) { reply, site in
            guard case .geeStep(let s) = reply else { throw unexpected(reply, site, expected: "gee_step") }
            guard s.score.count == p else { throw SiteFailure(site: site, message: "sent GEE sums for \(s.score.count) coefficients, the model has \(p)") }
            guard (bread == nil) == (s.meatMD == nil && s.meatKC == nil), bread == nil || (s.meatMD != nil && s.meatKC != nil) else {
                throw SiteFailure(site: site, message: "sent corrected meats \(bread == nil ? "it was not asked for" : "incompletely")")
            }
            return s
        }
        var total = parts[0]
        for s in parts.dropFirst() {
            total.rows += s.rows; total.clusters += s.clusters
            for k in 0..<(p * p) { total.information[k] += s.information[k]; total.meat[k] += s.meat[k] }
            for j in 0..<p { total.score[j] += s.score[j] }
            if let m = s.meatMD { for k in 0..<(p * p) { total.meatMD![k] += m[k] } }
            if let m = s.meatKC { for k in 0..<(p * p) { total.meatKC![k] += m[k] } }
            total.pearsonSquares += s.pearsonSquares
            total.alphaInformation += s.alphaInformation; total.alphaCross += s.alphaCross; total.alphaFitted += s.alphaFitted
            total.validMean = total.validMean && s.validMean
        }
        return total
    }

    /// glm's estimates, where geeglm starts.
    mutating func start() throws -> (beta: [Double], iterations: Int) {
        let p = session.spec.fixedCount
        if session.spec.family == .gaussian {
            // glm.fit's gaussian fit is least squares: one step from β = 0 with R = I and φ = 1.
            let s = try round(beta: [Double](repeating: 0, count: p), alpha: 0, scale: 1)
            return (try solve(s.information, s.score, p: p), 1)
        }
        var glm = try FlatObjective(session, options: options)
        let fit = try glm.iterate(columns: Array(0..<p))
        evaluations += glm.evaluations
        return (fit.beta, fit.iterations)
    }

    func solve(_ information: [Double], _ score: [Double], p: Int) throws -> [Double] {
        do { return try Dense.solveSPD(Matrix(rows: p, cols: p, data: information), score) }
        catch { throw FitFailure("the GEE information matrix Σ DᵀV⁻¹D is singular: some fixed-effects columns are collinear. Remove or merge the offending terms") }
    }

    mutating func minimize(_ optimizer: BoundedNewton) throws -> BoundedNewton.Result {
        let p = session.spec.fixedCount, n = Double(session.usedRows)
        let correlated = structure != .independence
        var (beta, glmIterations) = try start()
        // geese.fit's starting scale: the mean squared Pearson residual at glm's β; α starts at 0.
        var alpha = 0.0
        var current = try round(beta: beta, alpha: alpha, scale: 1)
        var scale = current.pearsonSquares / n
        // That round's step sums serve the first iteration: φ scales them alike, so the step is the same.
        var fresh = true
        var iterations = 0, converged = false
        while true {
            if !fresh { current = try round(beta: beta, alpha: alpha, scale: scale) }
            fresh = false
            if converged || iterations == Self.maxIterations { break }
            var delta = try solve(current.information, current.score, p: p)
            // geepack halves the step until μ is inside the family's range.
            var moments = try round(beta: zip(beta, delta).map(+), alpha: alpha, scale: scale)
            var halvings = 0
            while !moments.validMean {
                halvings += 1
                guard halvings <= 30 else { throw FitFailure("the GEE step leaves the family's range of μ however short it is: the outcome may be separated by a covariate") }
                delta = delta.map { $0 / 2 }
                moments = try round(beta: zip(beta, delta).map(+), alpha: alpha, scale: scale)
            }
            beta = zip(beta, delta).map(+)
            let newScale = moments.pearsonSquares / n
            var change = max(delta.map(abs).max() ?? 0, abs(newScale - scale))
            scale = newScale
            if correlated {
                guard moments.alphaInformation > 0 else { throw FitFailure("no cluster has two rows, so the working correlation cannot be estimated; use the independence working correlation") }
                let step = (moments.alphaCross / scale - moments.alphaFitted) / moments.alphaInformation
                alpha += step
                change = max(change, abs(step))
                guard alpha > -1, alpha < 1 else { throw FitFailure("the working correlation's α left (−1, 1) (α = \(alpha)); try another working correlation") }
            }
            iterations += 1
            if change <= Self.epsilon { converged = true }
        }
        let bread = try Dense.cholesky(Matrix(rows: p, cols: p, data: current.information))
        var out = GEEFit(beta: beta, alpha: alpha, scale: scale, iterations: iterations, converged: converged,
                         bread: Dense.inverseFromCholesky(bread), meat: Matrix(rows: p, cols: p, data: current.meat),
                         clusters: current.clusters, glmIterations: glmIterations)
        if options.gee?.smallSample != nil {
            let c = try round(beta: beta, alpha: alpha, scale: scale, bread: out.bread)
            out.corrected = (Matrix(rows: p, cols: p, data: c.meatMD!), Matrix(rows: p, cols: p, data: c.meatKC!))
        }
        fit = out
        let message = converged
            ? "GEE converged in \(iterations) iterations (geepack: largest change in β, φ, α at most \(Self.epsilon))"
            : "GEE did not converge in \(Self.maxIterations) iterations (geepack's limit); the estimates are those of the last iteration"
        return BoundedNewton.Result(x: [], value: 0, gradient: [], hessian: Matrix(rows: 0, cols: 0), evaluations: evaluations,
                                    iterations: iterations, converged: converged, message: message,
                                    newtonDecrement: nil, scaledGradient: nil, atBound: [])
    }

    static func sandwich(_ bread: Matrix, _ meat: Matrix) -> Matrix {
        var v = Dense.multiply(Dense.multiply(bread, meat), bread)
        for j in 0..<v.cols { for i in 0..<j { let m = (v[i, j] + v[j, i]) / 2; v[i, j] = m; v[j, i] = m } }
        return v
    }

    mutating func estimates(at optimum: BoundedNewton.Result) throws -> FitEstimates {
        let f = fit!
        // The result's table carries the robust (sandwich) covariance.
        return FitEstimates(theta: [], beta: f.beta, sigma: 1, unscaledCovariance: Self.sandwich(f.bread, f.meat),
                            nObs: session.usedRows, method: .ml)
    }

    func complete(_ r: inout FitResult, optimum: BoundedNewton.Result, finals: [FinalizeReply]) {
        let f = fit!, spec = session.spec, p = spec.fixedCount
        r.model.kind = "gee"; r.model.method = "GEE"
        r.varianceComponents = []; r.theta = []; r.thetaNames = []; r.icc = [:]; r.groupOrder = []
        r.dfResid = r.nObs - p
        let naive = (0..<p).map { f.bread[$0, $0].squareRoot() }
        var details = FitResult.GEEDetails(structure: structure.rawValue, order: spec.gee?.order,
                                 alpha: structure == .independence ? nil : f.alpha, scale: f.scale,
                                 cluster: { if case .withinSite(let vs)? = spec.cluster { return vs.joined(separator: ":") }; return "site" }(),
                                 nClusters: f.clusters, iterations: f.iterations, glmIterations: f.glmIterations,
                                 naiveStdErrors: naive, naiveVcov: (0..<p).map { i in (0..<p).map { f.bread[i, $0] } })
        if let c = f.corrected {
            let md = Self.sandwich(f.bread, c.md), kc = Self.sandwich(f.bread, c.kc)
            details.stdErrorsMD = (0..<p).map { md[$0, $0].squareRoot() }
            details.stdErrorsKC = (0..<p).map { kc[$0, $0].squareRoot() }
            details.smallSample = options.gee?.smallSample?.rawValue
            details.df = f.clusters - p
        }
        r.gee = details
        if f.clusters < 40 {
            r.messages.append("only \(f.clusters) clusters: the sandwich standard errors are biased downward with fewer than about 40 clusters"
                              + (options.gee?.smallSample == nil ? "; consider --small-sample md or kc (t intervals on clusters − parameters df)" : ""))
        }
        if let df = details.df, df < 1 {
            r.messages.append("clusters − parameters = \(df): the t intervals of the small-sample corrections are undefined")
        }
    }
}

extension FitResult {
    /// GEE's own figures (fedmix gee); absent for every other model kind.
    public struct GEEDetails: Codable, Sendable {
        public var structure: String
        public var order: String?
        /// The working correlation's α (nil for independence).
        public var alpha: Double?
        /// φ, geepack's gamma (Σ r²/N).
        public var scale: Double
        /// "site", or the within-site variable.
        public var cluster: String
        public var nClusters: Int
        public var iterations: Int
        public var glmIterations: Int
        public var naiveStdErrors: [Double]
        public var naiveVcov: [[Double]]
        public var stdErrorsMD: [Double]? = nil
        public var stdErrorsKC: [Double]? = nil
        /// The correction the t intervals use ("md" or "kc"), and their df (clusters − parameters).
        public var smallSample: String? = nil
        public var df: Int? = nil
    }
}

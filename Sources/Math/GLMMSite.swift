// One site's contribution to a GLMM's Laplace (or adaptive Gauss–Hermite)
// objective, computed on the site's own rows:
//     D_k(θ, β) = −2 Σ log p(y_i | μ_i(û)) + ‖û‖² + log|M(û)|,
//     M = ΛᵀZᵀW(û)ZΛ + I,
// where û are the site's conditional modes, found here by penalized
// iteratively reweighted least squares with step halving. Summed over sites
// this is glmer's objective on the pooled rows, because every random effect
// belongs to one site. Exact derivatives in (θ, β) come from the mode
// equation (GLMMExactDerivatives.swift), so a round returns value, gradient
// and Hessian together for the cost of about one evaluation.

import Foundation
import Synchronization

/// A site's rows for a GLMM, as the site holds them.
public struct GLMMSiteData: Sendable {
    public var family: GLMFamily
    public var structure: CovarianceStructure
    public var siteFactor: Int?
    public var rows: Int
    public var p: Int
    /// rows × p, row-major.
    public var x: [Double]
    /// Successes (binomial) or counts (Poisson).
    public var y: [Double]
    /// Trials (binomial; 1 for a 0/1 response), 1 for Poisson.
    public var n: [Double]
    public var offset: [Double]
    /// Per factor: the level of each row at this site.
    public var levels: [[Int]]
    public var levelCounts: [Int]
    /// Per factor: rows × r_f random-effects values, row-major.
    public var z: [[Double]]
    /// The within-site factors, finest first, when they are nested and held
    /// level by level (NestedChain.order; SiteDesign's rule); nil for the
    /// first-factor layout (one factor per level, the rest dense).
    public var chain: [Int]?

    public init(family: GLMFamily, structure: CovarianceStructure, siteFactor: Int?, p: Int, x: [Double], y: [Double],
                n: [Double], offset: [Double], levels: [[Int]], levelCounts: [Int], z: [[Double]], chain: [Int]? = nil) {
        self.family = family; self.structure = structure; self.siteFactor = siteFactor
        rows = y.count; self.p = p; self.x = x; self.y = y; self.n = n; self.offset = offset
        self.levels = levels; self.levelCounts = levelCounts; self.z = z; self.chain = chain
    }
}

public enum GLMMError: Error, Equatable, CustomStringConvertible {
    case modesDidNotConverge(iterations: Int)
    case nonFinite
    case quadratureNeedsOneScalarTerm

    public var description: String {
        switch self {
        case .modesDidNotConverge(let k):
            return "the conditional modes did not converge in \(k) iterations (PIRLS); the model may be too complex for this site's rows, or the outcome may be separated by a covariate"
        case .nonFinite:
            return "the objective is not finite at these parameters (fitted probabilities at 0 or 1)"
        case .quadratureNeedsOneScalarTerm:
            return "adaptive Gauss–Hermite quadrature (nAGQ > 1) needs a single scalar random-effects term, e.g. (1 | site); use the Laplace approximation (nAGQ = 1)"
        }
    }
}

/// Computes a site's GLMM contributions; remembers the last conditional
/// modes to start the next search from them.
public final class GLMMSite: Sendable {
    public let data: GLMMSiteData
    private let layout: SiteBlocks
    private let uOffsets: [Int]         // per factor: offset of level 0 in u
    /// The last modes (with their slopes, when an evaluation gave them) and
    /// the PIRLS settings: a session's requests may run on different threads.
    private let state = Mutex<(warmModes: [Double]?, slope: ModeSlope?, modeTolerance: Double, maxIterations: Int)>((nil, nil, 1e-11, 200))
    private var warmModes: [Double]? {
        get { state.withLock { $0.warmModes } }
        set { state.withLock { $0.warmModes = newValue } }
    }
    /// Convergence threshold on the largest PIRLS step.
    public var modeTolerance: Double {
        get { state.withLock { $0.modeTolerance } }
        set { state.withLock { $0.modeTolerance = newValue } }
    }
    public var maxIterations: Int {
        get { state.withLock { $0.maxIterations } }
        set { state.withLock { $0.maxIterations = newValue } }
    }

    public init(_ data: GLMMSiteData) {
        self.data = data
        let b = data.chain.map { Self.chainLayout(data, chain: $0) }
            ?? SiteBlocksBuilder(structure: data.structure, width: 1, levelCounts: data.levelCounts, siteFactor: data.siteFactor).finish()
        layout = b
        var offsets = [Int](repeating: 0, count: data.structure.factorCount)
        var n1 = b.first.map { $0.levels * $0.dimension } ?? 0
        if let f = b.first { offsets[f.factor] = 0 }
        for f in b.nested?.factors ?? [] { offsets[f.factor] = n1; n1 += f.levels * f.dimension }
        for t in b.tail { offsets[t.factor] = n1 + t.offset }
        uOffsets = offsets
    }

    /// Number of random effects at the site.
    public var dimension: Int {
        (layout.first.map { $0.levels * $0.dimension } ?? 0) + (layout.nested?.factors.reduce(0) { $0 + $1.levels * $1.dimension } ?? 0)
            + layout.tailDimension
    }
    /// The chain's shape (levels, dimensions, parents), when the site holds one.
    public var chainLayout: NestedChain? { layout.nested }
    var firstDimension: Int { layout.first.map { $0.levels * $0.dimension } ?? 0 }
    var firstFactorIndex: Int? { layout.first?.factor }
    var layoutTailDimension: Int { layout.tailDimension }
    func tailOffset(_ f: Int) -> Int { layout.tail.first { $0.factor == f }!.offset }
    func uOffset(_ f: Int) -> Int { uOffsets[f] }

    struct Modes {
        var u: [Double]
        var penalizedDeviance: Double   // Σ dev + ‖u‖²
        var factor: BlockedFactor
        var eta: [Double]
        var weights: [Double]
        /// Per row at `eta`: μ, dμ/dη and −2 log p(y | μ), which the exact
        /// derivatives reuse (GLMFamily.etaDerivatives) instead of recomputing.
        var rows: RowMeans
        /// PIRLS iterations taken (each a blocks solve; all but the last also a trial row pass).
        var iterations = 0
    }

    /// μ_i, dμ/dη_i and each row's deviance term at one η.
    struct RowMeans {
        var mu: [Double]
        var muEta: [Double]
        var deviance: [Double]
    }

    /// b = Λu per factor and level (flat per factor: levels × r_f).
    func effects(_ u: [Double], theta: [Double]) -> [[Double]] {
        let s = data.structure
        return (0..<s.factorCount).map { f in
            let t = s.factorMatrix(f, theta: theta), r = t.rows
            var b = [Double](repeating: 0, count: data.levelCounts[f] * r)
            for l in 0..<data.levelCounts[f] {
                let o = uOffsets[f] + l * r
                for i in 0..<r { var v = 0.0; for k in 0...i { v += t[i, k] * u[o + k] }; b[l * r + i] = v }
            }
            return b
        }
    }

    /// The conditional modes û at (θ, β) by PIRLS with step halving. Each
    /// point (the start, every trial step) costs one pass over the rows
    /// (`rowPass`), which sums ZᵀWZ too when the site has only a dense tail;
    /// other layouts take one more pass per iteration for their blocks.
    func modes(theta: [Double], beta: [Double], start: [Double]?) throws -> Modes {
        let q = dimension
        var u = start ?? [Double](repeating: 0, count: q)
        if u.count != q { u = [Double](repeating: 0, count: q) }
        let s = data.structure
        let nf = s.factorCount
        let dims = (0..<nf).map { s.factorDimension($0) }
        let fixed = GLMFamily.linearPredictor(x: data.x, p: data.p, beta: beta, offset: data.offset)
        // Only few-level factors (the site itself): the row pass sums the dense tail too.
        let tailOffsets = layout.first == nil && layout.nested == nil ? (0..<nf).map { tailOffset($0) } : nil
        let td = tailOffsets == nil ? 0 : layout.tailDimension
        // One set of per-row arrays: a trial point overwrites the accepted
        // one's, which are made again only if every trial fails (rare), so a
        // site of 10 million rows holds six arrays, not twelve.
        var current = PIRLSRows(rows: data.rows, tailDimension: td, keepResiduals: tailOffsets == nil)
        rowPass(u, theta: theta, fixed: fixed, tailOffsets: tailOffsets, into: &current)
        var iteration = 0
        var zwr = [Double](repeating: 0, count: q), c = zwr, trialU = zwr
        while true {
            iteration += 1
            let blocks: SiteBlocks
            if tailOffsets != nil {
                blocks = SiteBlocks(width: 1, rows: data.rows, first: nil, siteFactor: data.siteFactor, tail: layout.tail,
                                    tailDimension: layout.tailDimension, tt: current.tt, tw: current.tw, ww: [0])
            } else {
                let rootWeights = current.weights.map { $0.squareRoot() }
                let responses = (0..<data.rows).map { rootWeights[$0] * current.residuals[$0] }
                blocks = weightedBlocks(rootWeights: rootWeights, responses: responses)
            }
            let factor = try BlockedFactor(blocks, structure: s, theta: theta)
            let pen = current.total + u.reduce(0) { $0 + $1 * $1 }
            guard pen.isFinite else { throw GLMMError.nonFinite }
            // c = Λᵀ ZᵀW r − u
            if let lb = blocks.first { for k in 0..<(lb.levels * lb.dimension) { zwr[k] = lb.zw[k] } }
            var n1 = blocks.first.map { $0.levels * $0.dimension } ?? 0
            for f in blocks.nested?.factors ?? [] {
                for k in 0..<(f.levels * f.dimension) { zwr[n1 + k] = f.zw[k] }
                n1 += f.levels * f.dimension
            }
            for k in 0..<blocks.tailDimension { zwr[n1 + k] = blocks.tw[k] }
            for f in 0..<nf {
                let t = s.factorMatrix(f, theta: theta), r = dims[f]
                for l in 0..<data.levelCounts[f] {
                    let o = uOffsets[f] + l * r
                    for k in 0..<r { var v = 0.0; for i in k..<r { v += t[i, k] * zwr[o + i] }; c[o + k] = v - u[o + k] }
                }
            }
            let delta = factor.solve(c)
            let size = delta.reduce(0) { max($0, abs($1)) }
            if size <= modeTolerance * max(1, u.reduce(0) { max($0, abs($1)) }) || q == 0 {
                return modesAt(u, penalizedDeviance: pen, factor: factor, current, iterations: iteration)
            }
            guard iteration < maxIterations else { throw GLMMError.modesDidNotConverge(iterations: iteration) }
            // Step halving on the penalized deviance.
            var step = 1.0
            var accepted = false
            for _ in 0..<30 {
                for k in 0..<q { trialU[k] = u[k] + step * delta[k] }
                rowPass(trialU, theta: theta, fixed: fixed, tailOffsets: tailOffsets, into: &current)
                let d = current.total + trialU.reduce(0) { $0 + $1 * $1 }
                if d.isFinite && d <= pen + 1e-10 * abs(pen) {
                    swap(&u, &trialU); accepted = true; break
                }
                step *= 0.5
            }
            if !accepted {
                // No decrease possible: we are at the mode to rounding. Its
                // rows again (the trials overwrote them): the same pass at the
                // same u, so the same values to the bit.
                rowPass(u, theta: theta, fixed: fixed, tailOffsets: tailOffsets, into: &current)
                return modesAt(u, penalizedDeviance: pen, factor: factor, current, iterations: iteration)
            }
        }
    }

    private func modesAt(_ u: [Double], penalizedDeviance: Double, factor: BlockedFactor, _ rows: PIRLSRows, iterations: Int) -> Modes {
        Modes(u: u, penalizedDeviance: penalizedDeviance, factor: factor, eta: rows.eta, weights: rows.weights,
              rows: RowMeans(mu: rows.mu, muEta: rows.muEta, deviance: rows.deviance), iterations: iterations)
    }

    /// The chain layout's shape: the chain's factors with their parents
    /// (from the rows' levels), and the dense tail; no sums.
    static func chainLayout(_ data: GLMMSiteData, chain: [Int]) -> SiteBlocks {
        var b = SiteBlocks.nested(structure: data.structure, width: 1, levelCounts: data.levelCounts, siteFactor: data.siteFactor,
                                  chain: chain, w: [[]], levels: data.levels, z: [])
        for k in 0..<(chain.count - 1) {
            for (l, a) in zip(data.levels[chain[k]], data.levels[chain[k + 1]]) { b.nested!.factors[k].parent[l] = a }
        }
        for k in b.nested!.factors.indices { b.nested!.factors[k].zz = []; b.nested!.factors[k].zw = []; b.nested!.factors[k].cross = [] }
        return b
    }

    /// The blocks of ZᵀWZ and ZᵀW r in the site's layout: row i enters with
    /// √w_i z_i and the response √w_i r_i (`responses`; zero when nil).
    func weightedBlocks(rootWeights: [Double], responses: [Double]?) -> SiteBlocks {
        let s = data.structure, nf = s.factorCount
        let dims = (0..<nf).map { s.factorDimension($0) }
        if let chain = data.chain {
            let z = (0..<nf).map { f in (0..<dims[f]).map { a in (0..<data.rows).map { i in data.z[f][i * dims[f] + a] * rootWeights[i] } } }
            return SiteBlocks.nested(structure: s, width: 1, levelCounts: data.levelCounts, siteFactor: data.siteFactor, chain: chain,
                                     w: [responses ?? [Double](repeating: 0, count: data.rows)], levels: data.levels, z: z)
        }
        var builder = SiteBlocksBuilder(structure: s, width: 1, levelCounts: data.levelCounts, siteFactor: data.siteFactor)
        var zrow: [[Double]] = dims.map { [Double](repeating: 0, count: $0) }
        var lv = [Int](repeating: 0, count: nf)
        var response = [0.0]
        for i in 0..<data.rows {
            let sw = rootWeights[i]
            for f in 0..<nf {
                lv[f] = data.levels[f][i]
                for a in 0..<dims[f] { zrow[f][a] = data.z[f][i * dims[f] + a] * sw }
            }
            response[0] = responses?[i] ?? 0
            builder.add(w: response, levels: lv, z: zrow)
        }
        return builder.finish()
    }

    /// D_k(θ, β): the Laplace objective (nAGQ = 1) or adaptive Gauss–Hermite with `nAGQ` points.
    public func objective(theta: [Double], beta: [Double], nAGQ: Int = 1, start: [Double]? = nil) throws -> (value: Double, modes: [Double]) {
        if nAGQ > 1 {
            let s = data.structure
            guard s.terms.count == 1, s.terms[0].dimension == 1 else { throw GLMMError.quadratureNeedsOneScalarTerm }
        }
        let m = try modes(theta: theta, beta: beta, start: start)
        return (try objectiveValue(theta: theta, modes: m, nAGQ: nAGQ), m.u)
    }

    /// Value, gradient and Hessian of D_k in the parameters (θ…, β…), all
    /// exact (GLMMExactDerivatives.swift): one PIRLS solve for the modes,
    /// then passes over the site's rows, so that a round costs about one
    /// objective evaluation whatever the number of parameters.
    public func evaluate(theta: [Double], beta: [Double], order: Int, nAGQ: Int = 1) throws -> ScalarJet {
        if nAGQ > 1 {
            let s = data.structure
            guard s.terms.count == 1, s.terms[0].dimension == 1 else { throw GLMMError.quadratureNeedsOneScalarTerm }
        }
        let point = theta + beta
        let m: Modes
        if let slope = modeSlope, let predicted = predictedModes(slope, theta: theta, point: point),
           let found = try? modes(theta: theta, beta: beta, start: predicted) {
            m = found
        } else {
            m = try modes(theta: theta, beta: beta, start: warmModes)
        }
        var slope: ModeSlope? = nil
        defer { state.withLock { $0.warmModes = m.u; $0.slope = slope } }
        let value = try objectiveValue(theta: theta, modes: m, nAGQ: nAGQ)
        return try exactJet(theta: theta, beta: beta, modes: m, order: order, nAGQ: nAGQ, value: value) { du in
            slope = self.modeSlope(theta: theta, point: point, u: m.u, du: du)
        }
    }

    /// The slope of the modes recorded by the last evaluation (nil before one, or after order 0).
    var modeSlope: ModeSlope? { state.withLock { $0.slope } }

    /// Conditional modes and conditional covariance of the site-level effects.
    public func siteEffects(theta: [Double], beta: [Double]) throws -> SiteLevelEffects? {
        guard let sf = data.siteFactor else { return nil }
        let m = try modes(theta: theta, beta: beta, start: warmModes)
        let t = data.structure.factorMatrix(sf, theta: theta)
        let r = t.rows
        let o = uOffsets[sf]
        let us = Array(m.u[o..<(o + r)])
        let effects = Dense.multiply(t, us)
        let inv = m.factor.trailingInverse(size: r)
        let cov = Dense.multiply(Dense.multiply(t, inv), Dense.transpose(t))
        return SiteLevelEffects(effects: effects, conditionalCovariance: cov)
    }

    /// Σ −2 log p(y | μ = y) over the rows: what lme4's nAGQ > 1 objective omits.
    public var saturatedConstant: Double {
        var s = 0.0
        for i in 0..<data.rows { s += data.family.saturatedMinusTwoLogLik(y: data.y[i], n: data.n[i]) }
        return s
    }
}

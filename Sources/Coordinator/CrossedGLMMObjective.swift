// A GLMM with factors crossed across sites (Laplace, canonical links): lme4's
// deviance F(θ, β) is evaluated exactly at the joint conditional mode
// (CrossedGLMMModes); its derivatives in (θ, β) are central finite
// differences of that exact F, all points of a stencil in the same rounds.
// Exact outer derivatives would need third-order terms of every site's
// piece; lme4 itself optimizes glmer's deviance without derivatives and takes
// its covariance from a finite-difference Hessian, as here.

import Foundation
import Math
import Protocol

struct CrossedGLMMObjective: FitObjective {
    let session: FitSession
    let solver: CrossedGLMMModes
    let scale: ColumnScale?
    let standard: Standardization
    private(set) var evaluations = 0
    /// The last evaluated point's crossed modes: every stencil starts there,
    /// moved by `warmSlope` (dũ_G/dx from that stencil's differences) toward
    /// each of its points.
    private var warmU: [Double]
    private var warmAt: [Double] = []
    private var warmSlope: [[Double]?] = []
    /// The last evaluated point's solution (the optimum's, for its modes).
    private var lastSolution: (x: [Double], solution: CrossedGLMMModes.Solution)? = nil
    /// Step of the differences in (θ, β̃) (β̃: β per SD of its column).
    static let step = 2e-4
    /// How far from the last evaluation its slope predicts the modes.
    static let predictionReach = 0.02

    static func validate(_ spec: ModelSpec, options: FitOptions) throws {
        if options.nAGQ > 1 {
            throw SettingError("\(.nAGQ) \(options.nAGQ) is not available with grouping factors crossed with the sites (\(spec.crossedFactors.map(\.variable).joined(separator: ", "))); use \(.nAGQ) 1 (Laplace)")
        }
        if options.marginal {
            throw SettingError("marginal effects are not available for GLMMs with grouping factors crossed with the sites")
        }
        guard GLMMCrossedSite.isCanonical(GLMFamily(spec.family, spec.link)) else {
            throw SettingError("grouping factors crossed with the sites are fitted for GLMMs with the canonical link only (binomial with logit, poisson with log), not link \(spec.link.rawValue): the coordinator's Newton steps on the crossed effects use the sites' Hessians, which other links replace by expected information")
        }
    }

    init(_ session: FitSession, options: FitOptions) throws {
        self.session = session
        guard let layout = try session.crossedLayout() else { throw FitFailure("the model has no crossed factor") }
        solver = CrossedGLMMModes(session: session, layout: layout,
                                  form: CrossedGLMMModes.form(session, layout: layout, forced: options.crossedGLMMForm))
        scale = ColumnScale(prepared: session.prepared, names: session.spec.fixed.map(\.name))
        standard = Standardization(scale: scale, p: session.spec.fixedCount)
        warmU = [Double](repeating: 0, count: layout.dimension)
    }

    var thetaCount: Int { session.structure.thetaCount }
    var fixedCount: Int { session.spec.fixedCount }
    var parameterNames: [String] { session.spec.thetaLabels + session.spec.fixed.map { "β \($0.name) (standardised)" } }
    var lowerBounds: [Double] { session.structure.lowerBounds + [Double](repeating: -.infinity, count: fixedCount) }

    func tune(_ optimizer: inout BoundedNewton) {
        optimizer.gradientTolerance = 1e-6
        optimizer.decrementTolerance = 1e-10
        // F's differences carry the rounding of the modes: ~1e-13 relative.
        optimizer.relativeNoise = max(optimizer.relativeNoise, 1e-13)
    }

    /// (θ, β) from the optimizer's (θ, β̃).
    func point(_ x: [Double]) -> (theta: [Double], beta: [Double]) {
        (Array(x[0..<thetaCount]), standard.beta(Array(x[thetaCount...])))
    }

    /// F at `x` with its gradient and Hessian in the coordinates `coords`
    /// (others held), by central differences around a centre moved inside
    /// the bounds by at least one step; the gradient is carried back to `x`
    /// with the Hessian. One batch of points: the rounds of one mode search.
    mutating func evaluate(_ x: [Double], coords: [Int]) throws -> (value: Double, gradient: [Double], hessian: Matrix, solution: CrossedGLMMModes.Solution) {
        evaluations += 1
        let h = Self.step, lower = lowerBounds, n = coords.count
        var centre = x
        for c in coords where centre[c] - h < lower[c] { centre[c] = lower[c] + h }
        func shifted(_ moves: [(Int, Double)]) -> [Double] { var y = centre; for (c, d) in moves { y[coords[c]] += d }; return y }
        var xs = [x]
        let moved = centre != x
        if moved { xs.append(centre) }
        let plusBase = xs.count
        for i in 0..<n { xs.append(shifted([(i, h)])); xs.append(shifted([(i, -h)])) }
        let pairBase = xs.count
        for i in 0..<n { for j in 0..<i { xs.append(shifted([(i, h), (j, h)])); xs.append(shifted([(i, -h), (j, -h)])) } }
        let points = xs.map(point)
        let solutions: [CrossedGLMMModes.Solution]
        do {
            solutions = try solver.solve(points, starts: xs.map(predictedModes))
        } catch let f as SiteFailure where f.code == .glmmFailed && evaluations > 1 {
            // A trial step too far (a site's modes cannot be found there): step back.
            throw InfeasiblePoint(f.description)
        }
        warmU = solutions[0].u; warmAt = x; lastSolution = (x, solutions[0])
        warmSlope = Array(repeating: nil, count: x.count)
        for (i, c) in coords.enumerated() {
            warmSlope[c] = zip(solutions[plusBase + 2 * i].u, solutions[plusBase + 2 * i + 1].u).map { ($0 - $1) / (2 * h) }
        }
        let f = solutions.map(\.deviance)
        let f0 = f[moved ? 1 : 0]
        let plus = { (i: Int) in f[plusBase + 2 * i] }, minus = { (i: Int) in f[plusBase + 2 * i + 1] }
        var pairIndex = pairBase
        var hess = Matrix(rows: n, cols: n)
        var g = [Double](repeating: 0, count: n)
        for i in 0..<n {
            g[i] = (plus(i) - minus(i)) / (2 * h)
            hess[i, i] = (plus(i) - 2 * f0 + minus(i)) / (h * h)
            for j in 0..<i {
                let pp = f[pairIndex], mm = f[pairIndex + 1]
                pairIndex += 2
                let v = (pp - plus(i) - plus(j) + 2 * f0 - minus(i) - minus(j) + mm) / (2 * h * h)
                hess[i, j] = v; hess[j, i] = v
            }
        }
        for i in 0..<n { for j in 0..<n { g[i] += hess[i, j] * (x[coords[j]] - centre[coords[j]]) } }
        return (f[0], g, hess, solutions[0])
    }

    /// The crossed modes at `y` to first order from the last evaluation:
    /// Newton then needs a step or two.
    func predictedModes(_ y: [Double]) -> [Double] {
        // Only for nearby points: ũ_G is far from linear in θ over a long step.
        guard warmAt.count == y.count, zip(y, warmAt).allSatisfy({ abs($0 - $1) <= Self.predictionReach }) else { return warmU }
        var u = warmU
        for (c, slope) in warmSlope.enumerated() where y[c] != warmAt[c] {
            guard let slope else { continue }
            let d = y[c] - warmAt[c]
            for k in u.indices { u[k] += slope[k] * d }
        }
        return u
    }

    mutating func evaluate(_ x: [Double]) throws -> BoundedNewton.Evaluation {
        let e = try evaluate(x, coords: Array(x.indices))
        return .init(value: e.value, gradient: e.gradient, hessian: e.hessian)
    }

    /// lme4's start: β from the GLM (θ = 0), θ = 1; the GLM is also the
    /// boundary candidate, as in GLMMObjective.
    mutating func minimize(_ optimizer: BoundedNewton) throws -> BoundedNewton.Result {
        let m = thetaCount, p = fixedCount
        let zeroTheta = [Double](repeating: 0, count: m)
        let glm = try optimizer.glmStart(names: Array(parameterNames[m...])).minimize(from: [Double](repeating: 0, count: p)) { b in
            let e = try evaluate(zeroTheta + b, coords: Array(m..<(m + p)))
            return .init(value: e.value, gradient: e.gradient, hessian: e.hessian)
        }
        warmU = [Double](repeating: 0, count: solver.layout.dimension); warmAt = []; warmSlope = []
        var result = try optimizer.minimize(from: session.structure.initialTheta + glm.x) { try evaluate($0) }
        if result.isAboveBoundary(glm, noise: optimizer.relativeNoise) {
            result.takeBoundary(glm, at: try evaluate(zeroTheta + glm.x), thetaCount: m)
        }
        return result
    }

    /// β, Cov(β) (the β block of 2·H⁻¹ of the differenced Hessian, lme4's
    /// definition) and the crossed effects' modes at the optimum.
    mutating func estimates(at optimum: BoundedNewton.Result) throws -> FitEstimates {
        let m = thetaCount, (theta, beta) = point(optimum.x)
        guard let covarianceTilde = FixedEffectsCovariance(hessian: optimum.hessian, thetaCount: m)?.matrix else {
            throw FitFailure("the fixed effects are not identified at the optimum (their information matrix is singular): some columns are collinear, or the outcome is separated by a term. Remove or merge the offending terms (e.g. categories with no events)")
        }
        let solution = try lastSolution.flatMap { $0.x == optimum.x ? $0.solution : nil }
            ?? solver.solve([(theta, beta)], starts: [predictedModes(optimum.x)])[0]
        var e = FitEstimates(theta: theta, beta: beta, sigma: 1, unscaledCovariance: standard.covariance(covarianceTilde),
                             nObs: session.usedRows, method: .ml)
        e.crossed = solver.modes(solution, theta: theta)
        return e
    }

    func complete(_ r: inout FitResult, optimum: BoundedNewton.Result, finals: [FinalizeReply]) {
        r.model.method = "Laplace"
        r.nAGQ = 1
        switch solver.form {
        case .level:
            let own = solver.ownEffects, rank = own.min() == own.max() ? "\(own[0])" : "\(own.min()!)–\(own.max()!)"
            r.messages.append("crossed factors: the sites sent their Hessians in the crossed effects in the level form (a block per crossed level and a rank-\(rank) term for each site's own effects), and the Newton steps and log-determinant came from eliminating \(session.spec.crossedFactors[CrossedGLMMLevelSystem.firstFactor(solver.layout, structure: session.structure)].variable) level by level")
        case .dense:
            r.messages.append("crossed factors: the sites sent their Hessians in the crossed effects in the dense form, factored as one matrix of all \(solver.layout.dimension) crossed effects")
        }
        r.messages.append("crossed factors (\(session.spec.crossedFactors.map(\.variable).joined(separator: ", "))): the Laplace deviance is exact at the joint conditional mode, found by Newton steps on the crossed effects over rounds; its derivatives in (θ, β) are central finite differences of it (step \(Self.step) in θ and in β per SD of its column), so the standard errors come from a finite-difference Hessian, as lme4's do for glmer")
    }
}

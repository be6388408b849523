// A trust-region Newton method with lower bounds, for the covariance
// parameters θ (and, for GLMMs, the unbounded fixed effects β). Every
// evaluation of a federated fit is a round trip to every hospital, so the
// method uses the exact gradient and Hessian the sites return and needs about
// as many evaluations as Newton iterations.
//
// The rule at a bound (DESIGN.md, "Bounds"). The diagonal entries of each
// term's factor T are bounded below by 0. Negating a column of T leaves TTᵀ,
// and so every criterion fedmix minimises, unchanged; for the last column of
// a term (a scalar term's only θ) the criterion is therefore an even function
// of that θ, and its derivative at θ = 0 is exactly zero whatever the data
// say. A first-order test at the bound proves nothing there. So:
//
//  1. A parameter at its bound is held there only when its one-sided
//     derivative pushes outwards by more than the gradient tolerance.
//  2. Every other parameter, including one at its bound with a zero (or
//     negligible) derivative, is free; for those at a bound the step must not
//     point outwards.
//  3. On the free parameters the Hessian decides. If it is positive definite
//     the Newton step is taken (a bound parameter whose Newton step points
//     outwards joins the held set, one at a time, as in an active-set
//     method). If it has a negative eigenvalue, the point is a saddle of the
//     bounded problem: the trust-region step follows the direction of
//     negative curvature into the interior (at a scalar term's θ = 0 with
//     negative curvature, lme4's interior optimum lies that way).
//  4. Converged means: the held parameters' derivatives push outwards, the
//     Hessian on the free parameters is positive definite, and the Newton
//     decrement ½ gᵀH⁻¹g on them (the predicted gain of a full Newton step,
//     invariant to the scaling of the parameters, like lme4's scaled
//     gradient H⁻¹g) is below the tolerance or the criterion's rounding
//     level. Never because a step failed to decrease the criterion.
//
// Starting values are lme4's (identity factors; β from the caller).

/// Thrown by an objective at a point where it cannot be evaluated (e.g.
/// fitted probabilities at 0 or 1): the optimizer shrinks its step and tries
/// again. Any other error ends the optimization.
public struct InfeasiblePoint: Error, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
}

public struct BoundedNewton {
    /// Value, gradient and Hessian at a point.
    public struct Evaluation: Sendable {
        public var value: Double
        public var gradient: [Double]
        public var hessian: Matrix
        public init(value: Double, gradient: [Double], hessian: Matrix) {
            self.value = value; self.gradient = gradient; self.hessian = hessian
        }
    }

    public struct Result: Sendable {
        public var x: [Double]
        public var value: Double
        public var gradient: [Double]
        public var hessian: Matrix
        public var evaluations: Int
        public var iterations: Int
        public var converged: Bool
        /// What was checked, in words (the verdict and its figures).
        public var message: String
        /// Newton decrement ½ gᵀH⁻¹g on the free parameters at the end (nil
        /// when their Hessian is not positive definite).
        public var newtonDecrement: Double?
        /// Largest |(H⁻¹g)ᵢ| on the free parameters: lme4's scaled gradient.
        public var scaledGradient: Double?
        /// Parameters that ended on their bound.
        public var atBound: [Int]

        /// A result reached without iterating (a closed-form optimum, or one
        /// found by another method such as IRLS).
        public init(x: [Double], value: Double, gradient: [Double], hessian: Matrix, evaluations: Int, iterations: Int,
                    converged: Bool, message: String, newtonDecrement: Double?, scaledGradient: Double?, atBound: [Int]) {
            self.x = x; self.value = value; self.gradient = gradient; self.hessian = hessian; self.evaluations = evaluations
            self.iterations = iterations; self.converged = converged; self.message = message
            self.newtonDecrement = newtonDecrement; self.scaledGradient = scaledGradient; self.atBound = atBound
        }
    }

    public var lower: [Double]
    public var maxEvaluations = 100
    /// A parameter at its bound is held there when its derivative pushes
    /// outwards by more than this; below it, the curvature decides.
    public var gradientTolerance = 1e-7
    /// Converged when the Newton decrement on the free parameters is below
    /// this (in units of the criterion, e.g. a deviance)…
    public var decrementTolerance = 1e-12
    public var initialRadius = 1.0
    /// Relative rounding level of the objective (e.g. 2e-16·√rows for a sum
    /// over rows): decreases below it cannot be measured, so a decrement
    /// below ten times it also counts as converged.
    public var relativeNoise = 1e-15
    /// …and the Newton step is below this relative to the parameters
    /// (max(1, |xᵢ|)): a tiny decrement alone can hide a flat direction.
    public var stepTolerance = 1e-8
    /// A gain below this fraction of the criterion that a Newton step
    /// predicts but does not achieve is rounding (DESIGN.md asks for the
    /// criterion within 1e-8 relative of the optimum).
    public var resolvableGain = 1e-10
    /// Distance to a bound under which a parameter is on it.
    public var boundTolerance = 1e-10

    /// Names of the parameters, for verdicts ("θ site (Intercept) on its
    /// bound…"); "parameter k" when empty.
    public var parameterNames: [String] = []
    /// Called at each iteration with (iteration, criterion, Newton
    /// decrement), for progress reports.
    public var progress: ((Int, Double, Double?) -> Void)? = nil

    public init(lower: [Double]) { self.lower = lower }

    public func minimize(from start: [Double], evaluate: ([Double]) throws -> Evaluation) throws -> Result {
        var x = project(start)
        var e = try evaluate(x)
        var evaluations = 1, iterations = 0
        var radius = initialRadius
        var message = "maximum number of evaluations (\(maxEvaluations)) reached"
        var converged = false
        var local = LocalModel(self, x: x, e: e)
        var probedAt: [Double]? = nil
        while evaluations < maxEvaluations {
            iterations += 1
            let noise = relativeNoise * max(1, abs(e.value))
            local = LocalModel(self, x: x, e: e)
            progress?(iterations, e.value, local.decrement)
            if let verdict = local.convergence(tolerance: decrementTolerance, stepTolerance: stepTolerance) {
                // A bound held by its slope but curved downwards is a local
                // minimum only nearby: the quadratic model predicts a lower
                // value further in. Probe there once before accepting it.
                if probedAt != x, let i = local.held.filter({ e.hessian[$0, $0] < 0 }).min(by: { e.hessian[$0, $0] < e.hessian[$1, $1] }) {
                    probedAt = x
                    var probe = x
                    probe[i] += 3 * e.gradient[i] / -e.hessian[i, i]
                    evaluations += 1
                    do {
                        let trial = try evaluate(probe)
                        if trial.value < e.value - noise { x = probe; e = trial; radius = initialRadius; continue }
                    } catch is InfeasiblePoint {}
                }
                converged = true; message = verdict; break
            }
            var (raw, isNewton) = local.step(radius: radius)
            // Never jump from well inside onto a bound: a step that would
            // reach (or cross) a bound stops a tenth of the way from it, and the next
            // point's slope and curvature decide whether the bound is the
            // optimum (a profiled criterion can have a local minimum on the
            // bound and a lower one inside, which one jump would miss).
            // Within 1e-4 of the bound the step may land on it.
            var fraction = 1.0
            for i in 0..<x.count where lower[i].isFinite && raw[i] < 0 {
                let d = x[i] - lower[i]
                if d > 1e-4 * max(1, abs(lower[i])) && x[i] + raw[i] < lower[i] + 0.1 * d {
                    fraction = min(fraction, 0.9 * d / -raw[i])
                }
            }
            if fraction < 1 { raw = raw.map { $0 * fraction }; isNewton = false }
            var candidate = project(zip(x, raw).map { $0 + $1 })
            var step = zip(candidate, x).map { $0 - $1 }
            var predicted = -(dot(e.gradient, step) + 0.5 * quadratic(e.hessian, step))
            if predicted <= 0 {
                // Projection spoiled the step: scale the free step back to the bounds instead.
                var alpha = 1.0
                for i in 0..<x.count where raw[i] < 0 && lower[i].isFinite {
                    alpha = min(alpha, (x[i] - lower[i]) / -raw[i])
                }
                candidate = project(zip(x, raw).map { $0 + alpha * $1 })
                step = zip(candidate, x).map { $0 - $1 }
                predicted = -(dot(e.gradient, step) + 0.5 * quadratic(e.hessian, step))
            }
            let stepNorm = norm(step)
            if predicted <= 1e-15 * abs(e.value) || stepNorm < 1e-14 {
                if isNewton && local.positiveDefinite {
                    converged = true
                    message = "converged: the remaining Newton step gains \(short(predicted)), below the criterion's rounding; " + local.figures
                } else {
                    message = "stopped: no step decreases the criterion measurably, but " + local.unmetCondition
                }
                break
            }
            let trial: Evaluation
            do { trial = try evaluate(candidate) } catch is InfeasiblePoint {
                evaluations += 1
                radius = 0.25 * stepNorm
                continue
            }
            evaluations += 1
            let actual = e.value - trial.value
            let rho = actual / predicted
            if !(rho >= 0.25) && isNewton && predicted <= max(10 * noise, resolvableGain * max(1, abs(e.value))) {
                // A full Newton step that predicted a gain this small and did
                // not achieve it: the quadratic model is no longer accurate at
                // this scale, because the criterion and its derivatives are
                // summed over many rows and carry rounding. At the optimum to
                // that rounding.
                if trial.value <= e.value { x = candidate; e = trial }
                local = LocalModel(self, x: x, e: e)
                converged = true
                message = "converged: a Newton step predicted a gain of \(short(predicted)) (\(short(predicted / max(1, abs(e.value)))) relative) and gained \(short(actual)), the criterion's rounding level; " + local.figures
                break
            }
            if rho > 1e-4 && trial.value.isFinite {
                x = candidate; e = trial
            }
            if !(rho >= 0.25) { radius = 0.25 * stepNorm }
            else if rho > 0.75 && stepNorm > 0.99 * radius { radius *= 2 }
        }
        if !converged && evaluations >= maxEvaluations { local = LocalModel(self, x: x, e: e); message += "; " + local.unmetCondition }
        return Result(x: x, value: e.value, gradient: e.gradient, hessian: e.hessian,
                      evaluations: evaluations, iterations: iterations, converged: converged, message: message,
                      newtonDecrement: local.decrement, scaledGradient: local.scaledGradient, atBound: local.atBound)
    }

    /// Largest entry of the gradient after projection on the feasible directions.
    public func projectedGradientNorm(_ x: [Double], _ g: [Double]) -> Double {
        var m = 0.0
        for i in 0..<x.count {
            let gi = (x[i] <= lower[i] && g[i] > 0) ? 0 : g[i]
            m = max(m, abs(gi))
        }
        return m
    }

    func project(_ x: [Double]) -> [Double] { zip(x, lower).map { max($0, $1) } }

    /// The quadratic model at one point, split into held and free parameters
    /// by the rule at the top of this file.
    struct LocalModel {
        let n: Int
        let gradient: [Double]
        /// On a bound (whether held or free).
        let atBound: [Int]
        /// Held at the bound: the derivative pushes outwards.
        private(set) var held: Set<Int>
        private(set) var free: [Int]
        /// Eigen-decomposition of the Hessian on the free parameters.
        private(set) var lambda: [Double] = []
        private(set) var q = Matrix(rows: 0, cols: 0)
        private(set) var gt: [Double] = []
        let hessian: Matrix
        private(set) var decrement: Double? = nil
        private(set) var scaledGradient: Double? = nil
        /// Largest |(H⁻¹g)ᵢ| / max(1, |xᵢ|): the Newton step relative to the parameters.
        private(set) var scaledStep: Double? = nil

        let names: [String]

        init(_ o: BoundedNewton, x: [Double], e: Evaluation) {
            n = x.count; gradient = e.gradient; hessian = e.hessian
            names = o.parameterNames.count == x.count ? o.parameterNames : (0..<x.count).map { "parameter \($0 + 1)" }
            atBound = (0..<n).filter { o.lower[$0].isFinite && x[$0] - o.lower[$0] <= o.boundTolerance * max(1, abs(o.lower[$0])) }
            let outward = Set(atBound.filter { e.gradient[$0] > o.gradientTolerance })
            held = outward
            free = (0..<x.count).filter { !outward.contains($0) }
            decompose()
            // Active set: a bound parameter whose Newton step points outwards
            // is held, one at a time (the most outward first).
            while positiveDefinite, !free.isEmpty {
                let s = newtonStep()
                let outward = free.indices.filter { atBound.contains(free[$0]) && s[$0] < -1e-14 }
                guard let worst = outward.min(by: { s[$0] < s[$1] }) else { break }
                held.insert(free[worst]); free.remove(at: worst)
                decompose()
            }
            if positiveDefinite {
                let s = newtonStep()
                decrement = -0.5 * zip(s, free.map { gradient[$0] }).reduce(0) { $0 + $1.0 * $1.1 }
                scaledGradient = s.map(abs).max() ?? 0
                scaledStep = zip(s, free).map { abs($0) / max(1, abs(x[$1])) }.max() ?? 0
            }
        }

        private mutating func decompose() {
            var h = Matrix(rows: free.count, cols: free.count)
            for (a, i) in free.enumerated() { for (b, j) in free.enumerated() { h[a, b] = hessian[i, j] } }
            (lambda, q) = free.isEmpty ? ([], Matrix(rows: 0, cols: 0)) : Dense.symmetricEigen(h)
            gt = [Double](repeating: 0, count: free.count)
            for k in 0..<free.count { for (a, i) in free.enumerated() { gt[k] += q[a, k] * gradient[i] } }
        }

        var scale: Double { max(lambda.map(abs).max() ?? 1, 1e-300) }
        var positiveDefinite: Bool { (lambda.first ?? 1) > 1e-12 * scale }

        /// −H⁻¹g on the free parameters.
        private func newtonStep() -> [Double] { stepCoefficients(shift: 0) }

        private func stepCoefficients(shift mu: Double) -> [Double] {
            var s = [Double](repeating: 0, count: free.count)
            for k in 0..<free.count {
                let c = -gt[k] / (lambda[k] + mu)
                for a in 0..<free.count { s[a] += c * q[a, k] }
            }
            return s
        }

        /// The verdict when every convergence condition holds, else nil.
        func convergence(tolerance: Double, stepTolerance: Double) -> String? {
            if free.isEmpty { return "converged: every parameter is on its bound with its derivative pushing outwards" + boundNote }
            guard let d = decrement, d <= tolerance, let s = scaledStep, s <= stepTolerance else { return nil }
            return "converged: " + figures
        }

        /// The figures behind a verdict.
        var figures: String {
            var out = ""
            if let d = decrement, let s = scaledGradient {
                out = "Newton decrement \(short(d)), scaled gradient max|H⁻¹g| \(short(s))"
            }
            return out + boundNote
        }

        private var boundNote: String {
            let parts = atBound.map { i -> String in
                held.contains(i) ? "\(names[i]) on its bound with derivative \(short(gradient[i])) > 0"
                                 : "\(names[i]) on its bound with curvature \(short(hessian[i, i])) > 0"
            }
            return parts.isEmpty ? "" : "; " + parts.joined(separator: ", ")
        }

        /// Why the point is not (yet) an optimum, for messages.
        var unmetCondition: String {
            if !positiveDefinite {
                return "the Hessian on the free parameters is not positive definite (smallest eigenvalue \(short(lambda.first ?? 0))): the criterion is flat or curved downwards in some direction"
            }
            return "the Newton decrement is \(short(decrement ?? .nan)) (scaled gradient \(short(scaledGradient ?? .nan)))"
        }

        /// Minimizes the quadratic model over ‖s‖ ≤ radius on the free
        /// parameters (eigen-decomposition and a one-dimensional search on
        /// the shift); the result is over all parameters, held ones 0.
        func step(radius: Double) -> (step: [Double], isNewton: Bool) {
            var full = [Double](repeating: 0, count: n)
            guard !free.isEmpty else { return (full, false) }
            var isNewton = false
            let m = free.count
            func norm2(_ mu: Double) -> Double {
                var s = 0.0
                for k in 0..<m { let c = gt[k] / (lambda[k] + mu); s += c * c }
                return s.squareRoot()
            }
            let lmin = lambda[0]
            var s: [Double]
            if positiveDefinite && norm2(0) <= radius {
                s = newtonStep(); isNewton = true
            } else {
                let lo = max(0, -lmin) + 1e-14 * scale
                if norm2(lo) < radius {
                    // Hard case (e.g. a zero gradient at a saddle): move along
                    // the lowest eigenvector to the trust region's boundary.
                    s = stepCoefficients(shift: lo)
                    let sn = s.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    let extra = max(radius * radius - sn * sn, 0).squareRoot()
                    let sign = feasibleSign()
                    for a in 0..<m { s[a] += sign * extra * q[a, 0] }
                } else {
                    var lo = lo, hi = lo + max(1, gt.reduce(0) { $0 + $1 * $1 }.squareRoot() / radius)
                    while norm2(hi) > radius { hi *= 2 }
                    for _ in 0..<200 {
                        let mid = 0.5 * (lo + hi)
                        if norm2(mid) > radius { lo = mid } else { hi = mid }
                        if hi - lo <= 1e-15 * hi { break }
                    }
                    s = stepCoefficients(shift: hi)
                    if lmin < 0 {
                        // Along negative curvature either sign decreases the model
                        // equally to first order; take the one into the interior.
                        let c = -gt[0] / (lambda[0] + hi)
                        if c * feasibleSign() < 0 { for a in 0..<m { s[a] -= 2 * c * q[a, 0] } }
                    }
                }
            }
            for (a, i) in free.enumerated() { full[i] = s[a] }
            return (full, isNewton)
        }

        /// Sign of the lowest eigenvector that points into the interior at
        /// the bound parameters (or downhill when none is on a bound).
        private func feasibleSign() -> Double {
            var toward = 0.0, slope = 0.0
            for (a, i) in free.enumerated() {
                if atBound.contains(i) { toward += q[a, 0] }
                slope += q[a, 0] * gradient[i]
            }
            if toward != 0 { return toward > 0 ? 1 : -1 }
            return slope > 0 ? -1 : 1
        }
    }

    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
    func norm(_ a: [Double]) -> Double { dot(a, a).squareRoot() }
    func quadratic(_ h: Matrix, _ s: [Double]) -> Double {
        var v = 0.0
        for j in 0..<s.count { for i in 0..<s.count { v += s[i] * h[i, j] * s[j] } }
        return v
    }
}

/// A number in three significant digits, for verdicts.
func short(_ x: Double) -> String {
    guard x.isFinite else { return "\(x)" }
    if x == 0 { return "0" }
    let a = abs(x)
    if a >= 1e-3 && a < 1e5 {
        var s = String(Double(String(format: "%.3g", x)) ?? x)
        if s.hasSuffix(".0") { s.removeLast(2) }
        return s
    }
    return String(format: "%.2e", x)
}

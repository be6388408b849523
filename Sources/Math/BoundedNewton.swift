// A trust-region Newton method with lower bounds, for the covariance
// parameters θ. Every evaluation of a federated fit is a round trip to every
// hospital, so the method uses the exact gradient and Hessian the sites
// return and needs about as many evaluations as Newton iterations.

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
        public var message: String
    }

    public var lower: [Double]
    public var maxEvaluations = 100
    /// Converged when the projected gradient's largest entry is below this…
    public var gradientTolerance = 1e-7
    /// …or the predicted decrease of a Newton step is below this.
    public var decrementTolerance = 1e-12
    public var initialRadius = 1.0
    /// Relative rounding level of the objective (e.g. 2e-16·√rows for a sum
    /// over rows): decreases below it cannot be measured, so a Newton step
    /// predicting less ends the search instead of being retried.
    public var relativeNoise = 1e-15

    public init(lower: [Double]) { self.lower = lower }

    public func minimize(from start: [Double], evaluate: ([Double]) throws -> Evaluation) throws -> Result {
        let n = start.count
        var x = zip(start, lower).map { max($0, $1) }
        var e = try evaluate(x)
        var evaluations = 1, iterations = 0
        var radius = initialRadius
        var message = "maximum number of evaluations reached"
        var converged = false
        while evaluations < maxEvaluations {
            iterations += 1
            // Variables held at their bound: at (or within a hair of) it, with the gradient pushing outwards.
            let pgNorm = projectedGradientNorm(x, e.gradient)
            if pgNorm < gradientTolerance { converged = true; message = "converged: projected gradient \(pgNorm)"; break }
            let eps = min(1e-8, pgNorm)
            let free = (0..<n).filter { !(x[$0] - lower[$0] <= eps && e.gradient[$0] > 0) }
            if free.isEmpty { converged = true; message = "converged at the bounds"; break }
            var hf = Matrix(rows: free.count, cols: free.count)
            var gf = [Double](repeating: 0, count: free.count)
            for (a, i) in free.enumerated() {
                gf[a] = e.gradient[i]
                for (b, j) in free.enumerated() { hf[a, b] = e.hessian[i, j] }
            }
            let (stepFree, newtonDecrement) = trustRegionStep(gradient: gf, hessian: hf, radius: radius)
            // The criterion's own rounding (it sums over up to millions of rows)
            // bounds how small a decrease can be measured.
            let noise = relativeNoise * max(1, abs(e.value))
            if let nd = newtonDecrement, nd < decrementTolerance {
                converged = true; message = "converged: Newton decrement \(nd)"; break
            }
            var candidate = x
            for (a, i) in free.enumerated() { candidate[i] = max(x[i] + stepFree[a], lower[i]) }
            var step = zip(candidate, x).map { $0 - $1 }
            var predicted = -(dot(e.gradient, step) + 0.5 * quadratic(e.hessian, step))
            if predicted <= 0 {
                // Clipping spoiled the step: scale the free step back to the bounds instead.
                var alpha = 1.0
                for (a, i) in free.enumerated() where stepFree[a] < 0 && lower[i].isFinite {
                    alpha = min(alpha, (x[i] - lower[i]) / -stepFree[a])
                }
                for (a, i) in free.enumerated() { candidate[i] = max(x[i] + alpha * stepFree[a], lower[i]) }
                step = zip(candidate, x).map { $0 - $1 }
                predicted = -(dot(e.gradient, step) + 0.5 * quadratic(e.hessian, step))
            }
            let stepNorm = norm(step)
            if predicted <= 1e-15 * max(1, abs(e.value)) || stepNorm < 1e-12 {
                converged = pgNorm < 10 * gradientTolerance
                message = converged ? "converged: no further decrease possible (projected gradient \(pgNorm))"
                                    : "stopped: no decrease possible with projected gradient \(pgNorm)"
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
            if !(rho > 1e-4) && predicted < 10 * noise && newtonDecrement != nil {
                // A Newton step whose gain is below the criterion's rounding level
                // could not be measured: we are at the optimum to rounding.
                if trial.value <= e.value + 10 * noise { x = candidate; e = trial }
                converged = true
                message = "converged: predicted decrease \(predicted) at the criterion's rounding level"
                break
            }
            if rho > 1e-4 && trial.value.isFinite {
                x = candidate; e = trial
            }
            if !(rho >= 0.25) { radius = 0.25 * stepNorm }
            else if rho > 0.75 && stepNorm > 0.99 * radius { radius *= 2 }
        }
        return Result(x: x, value: e.value, gradient: e.gradient, hessian: e.hessian,
                      evaluations: evaluations, iterations: iterations, converged: converged, message: message)
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

    /// Minimizes gᵀs + ½ sᵀHs over ‖s‖ ≤ radius (eigen-decomposition and a
    /// one-dimensional search on the shift). Returns the step and, when the
    /// unconstrained Newton step was taken, its predicted decrease.
    func trustRegionStep(gradient g: [Double], hessian h: Matrix, radius: Double) -> ([Double], Double?) {
        let n = g.count
        let (lambda, q) = Dense.symmetricEigen(h)
        var gt = [Double](repeating: 0, count: n)
        for k in 0..<n { for i in 0..<n { gt[k] += q[i, k] * g[i] } }
        func stepNorm(_ mu: Double) -> Double {
            var s = 0.0
            for k in 0..<n { let c = gt[k] / (lambda[k] + mu); s += c * c }
            return s.squareRoot()
        }
        func step(_ mu: Double) -> [Double] {
            var s = [Double](repeating: 0, count: n)
            for k in 0..<n {
                let c = -gt[k] / (lambda[k] + mu)
                for i in 0..<n { s[i] += c * q[i, k] }
            }
            return s
        }
        let lmin = lambda.first ?? 0
        let scale = max(lambda.map(abs).max() ?? 1, 1e-300)
        if lmin > 1e-12 * scale && stepNorm(0) <= radius {
            var dec = 0.0
            for k in 0..<n { dec += gt[k] * gt[k] / lambda[k] }
            return (step(0), 0.5 * dec)
        }
        var lo = max(0, -lmin) + 1e-14 * scale
        if stepNorm(lo) < radius {
            // Hard case: move along the lowest eigenvector to reach the boundary.
            var s = step(lo)
            let sn = norm(s)
            let extra = (max(radius * radius - sn * sn, 0)).squareRoot()
            for i in 0..<n { s[i] += extra * q[i, 0] }
            return (s, nil)
        }
        var hi = lo + max(1, norm(g) / radius)
        while stepNorm(hi) > radius { hi *= 2 }
        for _ in 0..<200 {
            let mid = 0.5 * (lo + hi)
            if stepNorm(mid) > radius { lo = mid } else { hi = mid }
            if hi - lo <= 1e-15 * hi { break }
        }
        return (step(hi), nil)
    }

    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
    func norm(_ a: [Double]) -> Double { dot(a, a).squareRoot() }
    func quadratic(_ h: Matrix, _ s: [Double]) -> Double {
        var v = 0.0
        for j in 0..<s.count { for i in 0..<s.count { v += s[i] * h[i, j] * s[j] } }
        return v
    }
}

// Gauss–Hermite rules for the standard normal weight, by Golub–Welsch (the
// eigen-decomposition of the Jacobi matrix of the Hermite polynomials).

import Foundation
import Synchronization

public struct GaussHermiteRule: Sendable, Equatable {
    /// Nodes z_k and weights w_k with Σ w_k f(z_k) ≈ ∫ f(z) φ(z) dz.
    public let nodes: [Double]
    public let weights: [Double]

    public init(points n: Int) {
        precondition(n >= 1 && n <= 100, "Gauss–Hermite rules are defined here for 1 to 100 points")
        var j = Matrix(rows: n, cols: n)
        for k in 1..<max(n, 1) { let b = Double(k).squareRoot(); j[k - 1, k] = b; j[k, k - 1] = b }
        let (values, vectors) = Dense.symmetricEigen(j)
        var nodes = values
        _ = vectors
        // Polish each node by Newton's method on the orthonormal Hermite
        // polynomial p_n, and take weights from the Christoffel function
        // 1 / Σ_{k<n} p_k(x)², which is accurate for the extreme nodes too.
        func orthonormal(_ x: Double) -> (pn: Double, pn1: Double, christoffel: Double) {
            var prev = 0.0, cur = 1.0, sum = 1.0
            for k in 0..<n {
                let next = (x * cur - Double(k).squareRoot() * prev) / Double(k + 1).squareRoot()
                prev = cur; cur = next
                if k + 1 < n { sum += cur * cur }
            }
            return (cur, prev, sum)
        }
        for k in 0..<n {
            for _ in 0..<5 {
                let (pn, pn1, _) = orthonormal(nodes[k])
                let derivative = Double(n).squareRoot() * pn1
                if derivative == 0 { break }
                nodes[k] -= pn / derivative
            }
        }
        var weights = nodes.map { 1 / orthonormal($0).christoffel }
        // exact symmetry: average mirrored pairs
        for k in 0..<(n / 2) {
            let a = 0.5 * (nodes[n - 1 - k] - nodes[k]); nodes[k] = -a; nodes[n - 1 - k] = a
            let w = 0.5 * (weights[k] + weights[n - 1 - k]); weights[k] = w; weights[n - 1 - k] = w
        }
        if n % 2 == 1 { nodes[n / 2] = 0 }
        let s = weights.reduce(0, +)
        self.nodes = nodes
        self.weights = weights.map { $0 / s }
    }
}

extension GaussHermiteRule {
    private static let cache = RuleCache()

    /// The rule with `n` points, computed once per process: every AGQ
    /// evaluation needs it, and its eigen-decomposition costs more than a
    /// small site's whole objective.
    public static func cached(points n: Int) -> GaussHermiteRule { cache.rule(n) }

    private final class RuleCache: Sendable {
        private let rules = Mutex<[Int: GaussHermiteRule]>([:])
        func rule(_ n: Int) -> GaussHermiteRule {
            if let r = rules.withLock({ $0[n] }) { return r }
            let r = GaussHermiteRule(points: n)   // outside the lock: two threads may both compute it, with the same result
            rules.withLock { $0[n] = r }
            return r
        }
    }
}

// Gauss–Hermite rules for the standard normal weight, by Golub–Welsch (the
// eigen-decomposition of the Jacobi matrix of the Hermite polynomials).

import Foundation

public struct GaussHermiteRule: Sendable, Equatable {
    /// Nodes z_k and weights w_k with Σ w_k f(z_k) ≈ ∫ f(z) φ(z) dz.
    public let nodes: [Double]
    public let weights: [Double]

    public init(points n: Int) {
        precondition(n >= 1 && n <= 100, "Gauss–Hermite rules are defined here for 1 to 100 points")
        var j = Matrix(rows: n, cols: n)
        for k in 1..<max(n, 1) { let b = Double(k).squareRoot(); j[k - 1, k] = b; j[k, k - 1] = b }
        let (values, vectors) = Dense.symmetricEigen(j)
        var nodes = values, weights = (0..<n).map { vectors[0, $0] * vectors[0, $0] }
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

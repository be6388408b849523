import Foundation
@testable import Math

/// A simulated response at linear predictor `eta`: binomial successes out of
/// `trials` (inverse logit), otherwise a Poisson count (inverse log, at most 30).
enum GLMMResponseDraw {
    static func draw(_ family: GLMFamily, eta: Double, trials: Double, _ rng: inout SeededGenerator) -> Double {
        if family.distribution == .binomial {
            let prob = 1 / (1 + exp(-eta))
            var k = 0.0
            for _ in 0..<Int(trials) where Double.random(in: 0..<1, using: &rng) < prob { k += 1 }
            return k
        }
        let mu = exp(eta)
        var k = 0, prob = exp(-mu), sum = prob
        let u = Double.random(in: 0..<1, using: &rng)
        while u > sum && k < 30 { k += 1; prob *= mu / Double(k); sum += prob }
        return Double(k)
    }
}

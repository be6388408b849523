// The GLMM's start from a rough GLM (GLMMObjective.minimize): stopped at a
// Newton decrement of `startDecrement`, continued by one Newton step taken
// without evaluating it, and finished exactly only when it could be the
// boundary optimum. Checked on a logistic deviance, where every figure is
// known in closed form.

import Foundation
import XCTest
import Math
@testable import Coordinator

final class RoughGLMStartTests: XCTestCase {
    /// −2 log L of a logistic regression with an intercept and one slope.
    private struct Logistic {
        var x: [Double] = (0..<60).map { Double($0 % 12) / 4 - 1.5 }
        var y: [Double] = (0..<60).map { ($0 * 7 % 11) < 5 + $0 % 3 ? 1 : 0 }
        func evaluate(_ b: [Double]) -> BoundedNewton.Evaluation {
            var value = 0.0, g = [0.0, 0.0], h = [0.0, 0.0, 0.0, 0.0]
            for (xi, yi) in zip(x, y) {
                let eta = b[0] + b[1] * xi, mu = 1 / (1 + exp(-eta)), row = [1, xi]
                value += -2 * (yi * eta - log1p(exp(eta)))
                for a in 0..<2 {
                    g[a] += -2 * (yi - mu) * row[a]
                    for c in 0..<2 { h[a * 2 + c] += 2 * mu * (1 - mu) * row[a] * row[c] }
                }
            }
            return .init(value: value, gradient: g, hessian: Matrix(rows: 2, cols: 2, data: h))
        }
    }

    private func optimizer(decrement: Double) -> BoundedNewton {
        var o = BoundedNewton(lower: [-.infinity, -.infinity])
        o.decrementTolerance = decrement
        if decrement > 1e-10 { o.stepTolerance = .infinity }
        return o
    }

    func testTheRoughStartSavesEvaluationsAndItsNewtonPointIsAtTheOptimum() throws {
        let model = Logistic()
        let exact = try optimizer(decrement: 1e-10).minimize(from: [0, 0]) { model.evaluate($0) }
        let rough = try optimizer(decrement: GLMMObjective.startDecrement).minimize(from: [0, 0]) { model.evaluate($0) }
        XCTAssertTrue(exact.converged && rough.converged)
        XCTAssertLessThan(rough.evaluations, exact.evaluations, "the rough GLM stops sooner")
        let d = try XCTUnwrap(rough.newtonDecrement)
        XCTAssertLessThanOrEqual(d, GLMMObjective.startDecrement)
        let start = try XCTUnwrap(rough.newtonPoint)
        func distance(_ a: [Double]) -> Double { zip(a, exact.x).map { abs($0 - $1) }.max()! }
        XCTAssertLessThan(distance(start), distance(rough.x), "the Newton point is closer to the GLM's optimum")
        XCTAssertLessThan(distance(start), 1e-3)
        // The optimum lies within the margin below the rough point, and not above it.
        XCTAssertLessThanOrEqual(exact.value, rough.value)
        XCTAssertGreaterThanOrEqual(exact.value, rough.value - GLMMObjective.boundaryMargin * d)
        // Whether the exact GLM is needed: only when a fit's optimum is within the margin of the rough GLM or above it.
        XCTAssertTrue(rough.mayBeBelow(exact.value, margin: GLMMObjective.boundaryMargin), "a fit at the GLM's value (θ on its bound) finishes the GLM")
        XCTAssertTrue(rough.mayBeBelow(rough.value + 1, margin: GLMMObjective.boundaryMargin))
        XCTAssertFalse(rough.mayBeBelow(rough.value - GLMMObjective.boundaryMargin * d - 1e-6, margin: GLMMObjective.boundaryMargin),
                       "a fit whose optimum is further below than the margin cannot lose to the GLM")
    }

    func testAnUnfinishedOrIndefiniteGLMIsAlwaysFinished() throws {
        let model = Logistic()
        var capped = optimizer(decrement: GLMMObjective.startDecrement)
        capped.maxEvaluations = 1
        let r = try capped.minimize(from: [5, -5]) { model.evaluate($0) }
        XCTAssertFalse(r.converged)
        XCTAssertTrue(r.mayBeBelow(-1e300, margin: GLMMObjective.boundaryMargin), "not converged: the exact GLM decides")
        var indefinite = r
        indefinite.converged = true
        indefinite.newtonDecrement = nil
        XCTAssertTrue(indefinite.mayBeBelow(-1e300, margin: GLMMObjective.boundaryMargin), "no decrement: the exact GLM decides")
        indefinite.hessian = Matrix(rows: 2, cols: 2, data: [1, 0, 0, -1])
        XCTAssertNil(indefinite.newtonPoint, "no Newton point where the Hessian is not positive definite")
    }
}

import XCTest
@testable import Math

/// The rule at a bound (BoundedNewton.swift): a parameter on its bound with
/// zero slope is decided by the curvature, never declared converged by the
/// slope alone. Functions here are even in θ, as every criterion fedmix
/// minimises is in a scalar term's θ.
final class BoundedNewtonTests: XCTestCase {
    /// Value, gradient and Hessian of a function of one variable.
    private func oneDimensional(_ f: @escaping (Double) -> (Double, Double, Double)) -> ([Double]) -> BoundedNewton.Evaluation {
        { x in
            let (v, g, h) = f(x[0])
            return .init(value: v, gradient: [g], hessian: Matrix(rows: 1, cols: 1, data: [h]))
        }
    }

    /// f(θ) = θ⁴ − 2cθ²: zero slope at θ = 0 with negative curvature; the
    /// minimum is at θ = √c, inside.
    func testZeroSlopeWithNegativeCurvatureAtTheBoundMovesInside() throws {
        let c = 0.01
        let f = oneDimensional { t in (t * t * t * t - 2 * c * t * t, 4 * t * t * t - 4 * c * t, 12 * t * t - 4 * c) }
        for start in [0.0, 1.0, 3.0] {
            let r = try BoundedNewton(lower: [0]).minimize(from: [start], evaluate: f)
            XCTAssertTrue(r.converged, r.message)
            XCTAssertEqual(r.x[0], c.squareRoot(), accuracy: 1e-9, "from \(start): \(r.message)")
            XCTAssertEqual(r.atBound, [])
        }
    }

    /// f(θ) = θ⁴ + 2cθ²: zero slope at θ = 0 with positive curvature: the
    /// minimum is on the bound, and the verdict says why.
    func testZeroSlopeWithPositiveCurvatureConvergesOnTheBound() throws {
        let c = 0.01
        let f = oneDimensional { t in (t * t * t * t + 2 * c * t * t, 4 * t * t * t + 4 * c * t, 12 * t * t + 4 * c) }
        let r = try BoundedNewton(lower: [0]).minimize(from: [1], evaluate: f)
        XCTAssertTrue(r.converged, r.message)
        XCTAssertEqual(r.x[0], 0, accuracy: 1e-8)
        let onBound = try BoundedNewton(lower: [0]).minimize(from: [0], evaluate: f)
        XCTAssertTrue(onBound.converged)
        XCTAssertEqual(onBound.atBound, [0])
        XCTAssertTrue(onBound.message.contains("curvature"), onBound.message)
        XCTAssertEqual(onBound.evaluations, 1)
    }

    /// A slope that pushes outwards holds the parameter on its bound.
    func testOutwardSlopeHoldsTheBound() throws {
        let f = oneDimensional { t in ((t + 1) * (t + 1), 2 * (t + 1), 2) }
        let r = try BoundedNewton(lower: [0]).minimize(from: [2], evaluate: f)
        XCTAssertTrue(r.converged, r.message)
        XCTAssertEqual(r.x, [0])
        XCTAssertTrue(r.message.contains("derivative"), r.message)
    }

    /// Two parameters, one bounded and coupled to a free one: the saddle at
    /// (0, y) is left along the direction of negative curvature.
    func testCoupledSaddleOnTheBound() throws {
        // f = θ⁴ − 2cθ² + (y − θ)², minimum where y = θ and θ = √c.
        let c = 0.04
        let eval: ([Double]) -> BoundedNewton.Evaluation = { p in
            let t = p[0], y = p[1]
            let v = t * t * t * t - 2 * c * t * t + (y - t) * (y - t)
            let g = [4 * t * t * t - 4 * c * t - 2 * (y - t), 2 * (y - t)]
            let h = Matrix(rows: 2, cols: 2, data: [12 * t * t - 4 * c + 2, -2, -2, 2])
            return .init(value: v, gradient: g, hessian: h)
        }
        let r = try BoundedNewton(lower: [0, -.infinity]).minimize(from: [0, 0], evaluate: eval)
        XCTAssertTrue(r.converged, r.message)
        XCTAssertEqual(r.x[0], c.squareRoot(), accuracy: 1e-8)
        XCTAssertEqual(r.x[1], c.squareRoot(), accuracy: 1e-8)
    }

    /// A flat criterion (e.g. a grouping factor with one level) is never
    /// called converged.
    func testFlatCriterionIsNotConverged() throws {
        let f = oneDimensional { _ in (1, 0, 0) }
        let r = try BoundedNewton(lower: [0]).minimize(from: [1], evaluate: f)
        XCTAssertFalse(r.converged)
        XCTAssertTrue(r.message.contains("not positive definite"), r.message)
    }

    /// The verdict is scale-aware: a badly scaled quadratic converges in one
    /// Newton step whatever the scale, and reports the decrement.
    func testBadlyScaledQuadraticConvergesByDecrement() throws {
        for s in [1e-6, 1.0, 1e6] {
            let eval: ([Double]) -> BoundedNewton.Evaluation = { p in
                let d = p[0] - 3
                return .init(value: s * d * d, gradient: [2 * s * d], hessian: Matrix(rows: 1, cols: 1, data: [2 * s]))
            }
            let r = try BoundedNewton(lower: [0]).minimize(from: [1], evaluate: eval)
            XCTAssertTrue(r.converged, "scale \(s): \(r.message)")
            XCTAssertEqual(r.x[0], 3, accuracy: 1e-9)
            XCTAssertTrue(r.message.contains("Newton decrement"), r.message)
        }
    }
}

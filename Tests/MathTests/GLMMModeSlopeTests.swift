import XCTest
@testable import Math

/// The first-order prediction of the conditional modes (GLMMModeSlope.swift):
/// Λ(θ)⁻¹(b + (db/dp)Δp) from the last evaluation's exact slopes has error
/// O(‖Δp‖²) (halving Δp quarters it), and PIRLS started from it needs no
/// more iterations than from the last modes, and finds the same modes.
final class GLMMModeSlopeTests: XCTestCase {
    func testPredictionIsSecondOrderAndSavesPIRLSIterations() throws {
        var rng = SeededGenerator(seed: 4242)
        for family in GLMMExactDerivativeTests.families {
            for kind in GLMMExactDerivativeTests.Kind.allCases {
                let data = GLMMExactDerivativeTests.site(&rng, family: family, kind: kind, rows: 120, groups: 9, p: 3)
                let m = kind.structure.thetaCount
                let theta = (0..<m).map { 0.6 + 0.1 * Double($0 % 2) - (kind.structure.lowerBounds[$0] == 0 ? 0 : 0.7) }
                let beta = [-0.2, 0.4, -0.1]
                let site = GLMMSite(data)
                site.modeTolerance = 1e-13
                _ = try site.evaluate(theta: theta, beta: beta, order: 2)
                let slope = try XCTUnwrap(site.modeSlope, "\(family) \(kind)")
                let last = try site.modes(theta: theta, beta: beta, start: nil).u
                let direction = (0..<(m + 3)).map { _ in Double.random(in: -1...1, using: &rng) }
                var errors: [Double] = []
                var lastModeErrors: [Double] = []
                for h in [0.02, 0.01] {
                    let p = zip(theta + beta, direction).map { $0 + h * $1 }
                    let th = Array(p[0..<m]), be = Array(p[m...])
                    let exact = try site.modes(theta: th, beta: be, start: last).u
                    let predicted = try XCTUnwrap(site.predictedModes(slope, theta: th, point: p))
                    errors.append(zip(predicted, exact).reduce(0) { max($0, abs($1.0 - $1.1)) })
                    lastModeErrors.append(zip(last, exact).reduce(0) { max($0, abs($1.0 - $1.1)) })
                    let fromPrediction = try site.modes(theta: th, beta: be, start: predicted)
                    let fromLast = try site.modes(theta: th, beta: be, start: last)
                    XCTAssertLessThanOrEqual(fromPrediction.iterations, fromLast.iterations, "\(family) \(kind) h \(h)")
                    for (a, b) in zip(fromPrediction.u, fromLast.u) {
                        XCTAssertEqual(a, b, accuracy: 1e-10 * max(1, abs(b)), "\(family) \(kind) h \(h)")
                    }
                }
                // Second order: halving the step divides the error by about 4 (at least 3), where the last modes' error halves.
                if errors[0] > 1e-12 {
                    XCTAssertGreaterThan(errors[0] / errors[1], 3, "\(family) \(kind): prediction errors \(errors)")
                }
                XCTAssertLessThan(errors[1], lastModeErrors[1] / 10, "\(family) \(kind): \(errors) vs last modes \(lastModeErrors)")
            }
        }
    }

    /// A long step in θ (0.1 to 0.8, as an outer trust region's first steps
    /// take) is predicted for scalar terms by the rational rule
    /// (`scalarPrediction`: each level's b moves as a linear mixed model's,
    /// with the information read from the slope), and PIRLS from it takes no
    /// more iterations than from the last modes and finds the same modes; for
    /// a vector term, how u moves then depends on each group's information
    /// matrix, and the last modes are the start. A step within half of θ is
    /// predicted either way.
    func testLongStepsArePredictedForScalarTermsOnly() throws {
        var rng = SeededGenerator(seed: 77)
        let data = GLMMExactDerivativeTests.site(&rng, family: GLMFamily(.binomial, .logit), kind: .groupsOnly, rows: 400, groups: 12, p: 3)
        let beta = [-0.2, 0.4, -0.1]
        let site = GLMMSite(data)
        _ = try site.evaluate(theta: [0.1], beta: beta, order: 2)
        let long = try XCTUnwrap(site.predictedModes(try XCTUnwrap(site.modeSlope), theta: [0.8], point: [0.8] + beta))
        let lastAtShortTheta = try site.modes(theta: [0.1], beta: beta, start: nil).u
        let fromPrediction = try site.modes(theta: [0.8], beta: beta, start: long)
        let fromLast = try site.modes(theta: [0.8], beta: beta, start: lastAtShortTheta)
        XCTAssertLessThanOrEqual(fromPrediction.iterations, fromLast.iterations)
        for (a, b) in zip(fromPrediction.u, fromLast.u) { XCTAssertEqual(a, b, accuracy: 1e-10 * max(1, abs(b))) }
        let vector = GLMMSite(GLMMExactDerivativeTests.site(&rng, family: GLMFamily(.binomial, .logit), kind: .siteVector, rows: 200, groups: 12, p: 3))
        _ = try vector.evaluate(theta: [0.1, 0, 0.1], beta: beta, order: 2)
        XCTAssertNil(vector.predictedModes(try XCTUnwrap(vector.modeSlope), theta: [0.8, 0, 0.8], point: [0.8, 0, 0.8] + beta))
        _ = try site.evaluate(theta: [0.8], beta: beta, order: 2)   // from the last modes
        _ = try site.evaluate(theta: [0.6], beta: beta, order: 2)
        let slope = try XCTUnwrap(site.modeSlope)
        let predicted = try XCTUnwrap(site.predictedModes(slope, theta: [0.7], point: [0.7] + beta))
        let last = try site.modes(theta: [0.6], beta: beta, start: nil).u
        XCTAssertLessThanOrEqual(try site.modes(theta: [0.7], beta: beta, start: predicted).iterations,
                                 try site.modes(theta: [0.7], beta: beta, start: last).iterations)
        // Order 0 solves for no slopes: none is kept.
        _ = try site.evaluate(theta: [0.6], beta: beta, order: 0)
        XCTAssertNil(site.modeSlope)
    }
}

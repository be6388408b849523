import XCTest
@testable import Math

/// A site's piece of a GLMM with crossed factors (GLMMCrossedSite): its
/// gradient and Hessian in the crossed effects b_G are those of its profiled
/// penalized deviance, checked against central differences, for the
/// canonical links, scalar and vector crossed terms, with patients nested in
/// the site as local effects.
final class GLMMCrossedSiteTests: XCTestCase {
    func site(_ family: GLMFamily, crossedDimension r: Int, seed: UInt64) -> GLMMCrossedSite {
        var rng = SeededGenerator(seed: seed)
        let local = GLMMExactDerivativeTests.site(&rng, family: family, kind: .patientsAndSite, rows: 240, groups: 12, p: 2)
        let levels = 5
        var column: [Int] = [], z: [Double] = []
        for i in 0..<local.rows {
            column.append(((i * 7) % levels) * r)
            z.append(1)
            if r == 2 { z.append(local.x[i * 2 + 1]) }
        }
        return GLMMCrossedSite(local: local, crossed: CrossedRowColumns(factors: [.init(dimension: r, column: column, z: z)], width: levels * r),
                               localTheta: [0, 1])
    }

    func testGradientAndHessianAreThoseOfTheProfiledDeviance() throws {
        for family in [GLMFamily(.binomial, .logit), GLMFamily(.poisson, .log)] {
            for r in [1, 2] {
                let s = site(family, crossedDimension: r, seed: 17 + UInt64(r))
                let theta = [0.7, 0.4], beta = [-0.2, 0.3]
                let b = (0..<s.crossed.width).map { 0.1 * Double($0 % 4) - 0.15 }
                let at = try s.piece(theta: theta, beta: beta, effects: b)
                let h = 1e-5, q = b.count
                var worstG = 0.0, worstH = 0.0
                for j in 0..<q {
                    var up = b, down = b
                    up[j] += h; down[j] -= h
                    let pu = try s.piece(theta: theta, beta: beta, effects: up), pd = try s.piece(theta: theta, beta: beta, effects: down)
                    let g = (pu.value - pd.value) / (2 * h)
                    worstG = max(worstG, abs(g - at.gradient[j]) / max(1, abs(at.gradient[j])))
                    for i in 0..<q {
                        let hij = (pu.gradient[i] - pd.gradient[i]) / (2 * h)
                        worstH = max(worstH, abs(hij - at.hessian[i + j * q]) / max(1, abs(at.hessian[i + j * q])))
                    }
                }
                XCTAssertLessThanOrEqual(worstG, 1e-6, "\(family) r = \(r): gradient")
                XCTAssertLessThanOrEqual(worstH, 1e-6, "\(family) r = \(r): Hessian")
                XCTAssertTrue(at.logDet > 0 && at.logDet.isFinite)
            }
        }
    }
}

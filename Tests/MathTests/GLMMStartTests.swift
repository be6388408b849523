import XCTest
@testable import Math

/// The GLM start's cheap answer (GLMMSite.glmJet: D_k(0, β) in β alone,
/// one pass over the rows) against the β block of the full evaluation at
/// θ = 0. For the Laplace objective they are the same operations in the same
/// order (the full evaluation's extra terms are exact zeros there), so the
/// comparison is bit for bit: every link and family, every random-effects
/// layout, orders 0, 1 and 2. For adaptive quadrature (one scalar term) the
/// full evaluation reaches Σ dev_i through its quadrature sums, so there it
/// agrees to 1e-12 relative.
final class GLMMStartTests: XCTestCase {
    func testGLMJetIsTheBetaBlockOfTheFullEvaluationAtThetaZero() throws {
        var rng = SeededGenerator(seed: 1919)
        for family in GLMMExactDerivativeTests.families {
            for kind in GLMMExactDerivativeTests.Kind.allCases {
                let data = GLMMExactDerivativeTests.site(&rng, family: family, kind: kind, rows: 80, groups: 9, p: 3)
                let m = kind.structure.thetaCount, p = 3, zero = [Double](repeating: 0, count: m)
                for beta in [[-0.2, 0.4, -0.1], [0.7, -0.3, 0.25]] {
                    for order in 0...2 {
                        let full = try GLMMSite(data).evaluate(theta: zero, beta: beta, order: order)
                        let glm = try GLMMSite(data).glmJet(beta: beta, order: order)
                        let label = "\(family) \(kind) β=\(beta) order \(order)"
                        XCTAssertEqual(glm.space, JetSpace(parameters: p, order: order), label)
                        XCTAssertEqual(glm.value.bitPattern, full.value.bitPattern, "\(label): value \(glm.value) vs \(full.value)")
                        if order >= 1 {
                            for a in 0..<p {
                                XCTAssertEqual(glm.gradient[a].bitPattern, full.gradient[m + a].bitPattern, "\(label): gradient[\(a)]")
                            }
                        }
                        if order == 2 {
                            for a in 0..<p { for b in 0..<p {
                                XCTAssertEqual(glm.hessian[a * p + b].bitPattern, full.hessian[(m + a) * (m + p) + m + b].bitPattern,
                                               "\(label): Hessian[\(a), \(b)]")
                            } }
                        }
                    }
                }
            }
        }
    }

    func testGLMJetAgreesWithQuadratureAtThetaZero() throws {
        var rng = SeededGenerator(seed: 2020)
        var worst = 0.0
        for family in GLMMExactDerivativeTests.families {
            let data = GLMMExactDerivativeTests.site(&rng, family: family, kind: .groupsOnly, rows: 80, groups: 9, p: 3)
            let beta = [-0.2, 0.4, -0.1]
            for nAGQ in [3, 12] {
                let full = try GLMMSite(data).evaluate(theta: [0], beta: beta, order: 2, nAGQ: nAGQ)
                let glm = try GLMMSite(data).glmJet(beta: beta, order: 2)
                let block = [full.value] + Array(full.gradient[1...]) + (0..<9).map { full.hessian[(1 + $0 / 3) * 4 + 1 + $0 % 3] }
                let cheap = [glm.value] + glm.gradient + glm.hessian
                for (a, b) in zip(cheap, block) {
                    let e = abs(a - b) / max(abs(b), 1)
                    worst = max(worst, e)
                    XCTAssertLessThanOrEqual(e, 1e-12, "\(family) nAGQ \(nAGQ): \(a) vs \(b)")
                }
            }
        }
        print("glmJet against nAGQ > 1 at θ = 0: worst relative difference \(worst)")
    }

    /// A site whose rows give a non-finite deviance at β is refused as the full evaluation is.
    func testGLMJetRefusesANonFiniteDeviance() throws {
        var rng = SeededGenerator(seed: 7)
        let data = GLMMExactDerivativeTests.site(&rng, family: GLMFamily(.poisson, .log), kind: .siteScalar, rows: 30, groups: 1, p: 3)
        XCTAssertThrowsError(try GLMMSite(data).glmJet(beta: [800, 800, 800], order: 2)) { error in
            XCTAssertEqual(error as? GLMMError, .nonFinite)
        }
    }
}

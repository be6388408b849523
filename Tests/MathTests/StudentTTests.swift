import XCTest
@testable import Math

/// Student's t distribution against R 4.2.2's `pt(q, df)` and `2 * pt(-|q|, df)`
/// (printed with %.17g), non-integer df included.
final class StudentTTests: XCTestCase {
    /// (q, df, pt(q, df), 2·pt(−|q|, df))
    static let r: [(Double, Double, Double, Double)] = [
        (-40, 1, 0.007956089912025812, 0.015912179824051624),
        (-5.4446, 1, 0.057819002530959007, 0.11563800506191801),
        (-2, 1, 0.14758361765043321, 0.29516723530086642),
        (-0.3, 1, 0.40722642092225769, 0.81445284184451539),
        (0.1, 1, 0.53172551743055352, 0.93654896513889285),
        (1.5331, 1, 0.81602593436690773, 0.36794813126618459),
        (27.42, 1, 0.98839646692415739, 0.023207066151685298),
        (-40, 2.5, 7.0978171452466926e-05, 0.00014195634290493385),
        (-5.4446, 2.5, 0.0096103157575641671, 0.019220631515128334),
        (0.1, 2.5, 0.53609672796875518, 0.92780654406248964),
        (2.5, 2.5, 0.94771501846092232, 0.10456996307815537),
        (27.42, 2.5, 0.99981787749128614, 0.00036424501742766415),
        (-40, 17, 1.4660058684337017e-18, 2.9320117368674033e-18),
        (-2, 17, 0.03086930326505959, 0.061738606530119179),
        (-0.3, 17, 0.38390724848514801, 0.76781449697029602),
        (6.77, 17, 0.99999836357786753, 3.2728442648769009e-06),
        (27.42, 17, 0.99999999999999911, 1.6360765696950232e-15),
        (-40, 56.342, 2.3272378767300582e-43, 4.6544757534601164e-43),
        (1.5331, 56.342, 0.93457615931475002, 0.13084768137050001),
        (27.42, 56.342, 1, 2.8493040491980104e-34),
        (-5.4446, 74.889, 3.157890845377555e-07, 6.31578169075511e-07),
        (1.5331, 74.889, 0.93526743688732905, 0.12946512622534181),
        (6.77, 74.889, 0.99999999874406198, 2.5118761877341831e-09),
        (-40, 2609.077, 1.4118046983410063e-273, 2.8236093966820127e-273),
        (-5.4446, 2609.077, 2.8381461743064499e-08, 5.6762923486128999e-08),
        (0.1, 2609.077, 0.5398239958541371, 0.92035200829172581),
        (6.77, 2609.077, 0.99999999999207545, 1.5849236080321455e-11),
        (27.42, 2609.077, 1, 1.1329646624980729e-145),
        (-5.4446, 100000, 2.6021853500776757e-08, 5.2043707001553513e-08),
        (-0.3, 100000, 0.38208888959516885, 0.76417777919033769),
        (27.42, 100000, 1, 6.4874506815131307e-165),
    ]

    func testAgreesWithR() {
        var worst = 0.0
        for (q, df, lower, twoSided) in Self.r {
            let p = StudentT.twoSidedPValue(q, degreesOfFreedom: df)
            let e = abs(p - twoSided) / twoSided
            worst = max(worst, e)
            XCTAssertLessThanOrEqual(e, 1e-12, "2·pt(-|\(q)|, \(df)): \(p) vs R \(twoSided)")
            XCTAssertEqual(StudentT.cdf(q, degreesOfFreedom: df), lower, accuracy: 1e-11 * lower, "pt(\(q), \(df))")
        }
        print("Student t two-sided p vs R: worst relative error \(worst)")
    }

    func testEdgeCases() {
        XCTAssertEqual(StudentT.twoSidedPValue(0, degreesOfFreedom: 3), 1)
        XCTAssertEqual(StudentT.twoSidedPValue(.infinity, degreesOfFreedom: 3), 0)
        XCTAssertTrue(StudentT.twoSidedPValue(1, degreesOfFreedom: 0).isNaN)
        XCTAssertTrue(StudentT.twoSidedPValue(.nan, degreesOfFreedom: 3).isNaN)
        XCTAssertEqual(StudentT.twoSidedPValue(2, degreesOfFreedom: .infinity), StandardNormal.twoSidedPValue(2))
        // df = 1 is the Cauchy distribution: P(T ≤ t) = 1/2 + atan(t)/π.
        for t in [-3.0, -0.5, 0.25, 7] {
            XCTAssertEqual(StudentT.cdf(t, degreesOfFreedom: 1), 0.5 + atan(t) / Double.pi, accuracy: 1e-15)
        }
        // I_x(a, 1) = x^a
        XCTAssertEqual(IncompleteBeta.regularized(a: 3.5, b: 1, x: 0.3), pow(0.3, 3.5), accuracy: 1e-15)
    }

    /// The df of a contrast does not depend on the coordinates of β:
    /// df(l, C) = df(l T⁻¹, T C Tᵀ).
    func testSatterthwaiteIsInvariantUnderAReparameterizationOfBeta() {
        let c = Matrix(rows: 2, cols: 2, data: [2, 0.3, 0.3, 1])
        let g = [Matrix(rows: 2, cols: 2, data: [0.5, 0.1, 0.1, 0.2]), Matrix(rows: 2, cols: 2, data: [-0.2, 0.05, 0.05, 0.4])]
        let w = Matrix(rows: 2, cols: 2, data: [0.3, -0.1, -0.1, 0.2])
        let s = Satterthwaite(covariance: c, covarianceGradient: g, varianceParameterCovariance: w)
        // one variance parameter by hand: df = 2v²/(g² w)
        let one = Satterthwaite(covariance: c, covarianceGradient: [g[0]], varianceParameterCovariance: Matrix(rows: 1, cols: 1, data: [0.3]))
        XCTAssertEqual(one.degreesOfFreedom[0], 2 * 4 / (0.25 * 0.3), accuracy: 1e-12)
        let t = Matrix(rows: 2, cols: 2, data: [1, 0, -4.5, 1])   // column-major: β₀' = β₀ − 4.5 β₁
        let moved = s.transformed(by: t)
        // e₀ in the new coordinates is l = e₀ᵀ T, i.e. (1, −4.5) in the old ones
        XCTAssertEqual(moved.degreesOfFreedom[0], s.degreesOfFreedom(contrast: [1, -4.5]), accuracy: 1e-12)
        XCTAssertEqual(moved.degreesOfFreedom[1], s.degreesOfFreedom[1], accuracy: 1e-12)
    }
}

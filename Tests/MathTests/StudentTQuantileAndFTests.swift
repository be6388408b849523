import XCTest
@testable import Math

/// Student's t and F tails against R's own figures (summary.lm p-values of
/// the flat reference cases, Tests/Fixtures/inference/references.json, and pt/pf).
final class StudentTQuantileAndFTests: XCTestCase {
    func testTwoSidedPValuesEqualR() {
        // (t, df, 2·pt(−|t|, df)) from R's summary.lm on the reference cases.
        let cases: [(Double, Double, Double)] = [
            (38.033168843583354, 178, 2.1568882818126184e-87),
            (8.453663146744402, 178, 9.894096322215156e-15),
            (4.110834063858806, 4056, 4.020319025452383e-05),
            (-6.610869051771518, 4056, 4.317296386793049e-11),
        ]
        for (t, df, p) in cases {
            let got = StudentT.twoSidedPValue(t, degreesOfFreedom: df)
            XCTAssertLessThan(abs(got - p) / p, 1e-10, "t = \(t), df = \(df): \(got) vs \(p)")
        }
        // Small df and t near 0: pt(1, 1) = 0.75 exactly (Cauchy); pt(0, 5) = 0.5.
        XCTAssertEqual(StudentT.cdf(1, degreesOfFreedom: 1), 0.75, accuracy: 1e-15)
        XCTAssertEqual(StudentT.cdf(0, degreesOfFreedom: 5), 0.5, accuracy: 1e-15)
        // df = 2 has a closed form: pt(t, 2) = 1/2 + t / (2·√(2 + t²)).
        for t in [-3.0, -0.4, 0.7, 2.5, 40] {
            XCTAssertEqual(StudentT.cdf(t, degreesOfFreedom: 2), 0.5 + t / (2 * (2 + t * t).squareRoot()), accuracy: 1e-15)
        }
    }

    func testQuantileInvertsTheCDF() {
        // qt(0.975, 178) = 1.973381 (R); inverted to full precision.
        let q = StudentT.quantile(0.975, degreesOfFreedom: 178)
        XCTAssertEqual(StudentT.cdf(q, degreesOfFreedom: 178), 0.975, accuracy: 1e-15)
        XCTAssertEqual(q, 1.973381, accuracy: 1e-6)
        XCTAssertEqual(StudentT.quantile(0.975, degreesOfFreedom: 2), 0.95 / (2 * 0.975 * 0.025).squareRoot(), accuracy: 1e-12)   // df = 2: (2p−1)/√(2p(1−p))
    }

    func testFUpperTailEqualsR() {
        // summary.lm's F p-value on sleepstudy: pf(71.46442059862449, 1, 178, lower = FALSE)
        // equals the slope's t p-value (F = t² with one numerator df).
        let p = FDistribution.upperTail(71.46442059862449, numdf: 1, dendf: 178)
        XCTAssertLessThan(abs(p - 9.894096322215156e-15) / 9.894096322215156e-15, 1e-10)
    }
}

import XCTest
@testable import Math

/// NaturalSpline against R's splines::ns (values printed by
/// `ns(c(-3, -2, -1.5, 0.3, 1, 2, 2.5), knots = c(-1, 0, 1.2),
/// Boundary.knots = c(-2, 2), intercept = TRUE)`), below, at and beyond the
/// boundary knots. The intercept-free form is checked on the exam rows in
/// FormulaFunctionTests.
final class NaturalSplineTests: XCTestCase {
    func testMatchesRWithIntercept() throws {
        let x = [-3, -2, -1.5, 0.3, 1, 2, 2.5]
        let r: [Double] = [-1.4879747322073336, 0, -0.33151354951273387, 1.1602974232945686, -0.8287838737818346,
                           -0.2672612419124244, 0, -0.18156825980064073, 0.63548890930224267, -0.45392064950160188,
                           0.29904185796099925, 0.01953125, -0.1091018390123875, 0.38185643654335627, -0.27275459753096876,
                           0.08227588649039197, 0.59207859848484845, 0.29807925206819547, 0.068360875337073385, -0.044811339526480982,
                           0.00090289038672583728, 0.20359848484848481, 0.59437564841119228, 0.18294280631840246, 0.018136090724950638,
                           0, 0, -0.12820512820512822, 0.44871794871794879, 0.67948717948717952,
                           0, 0, -0.70512820512820507, 0.59294871794871806, 1.1121794871794872]
        let spline = try NaturalSpline(interior: [-1, 0, 1.2], boundary: (-2, 2), intercept: true)
        XCTAssertEqual(spline.columns.count, 5)
        var worst = 0.0
        for (i, xi) in x.enumerated() {
            for (j, v) in spline.values(at: xi).enumerated() { worst = max(worst, abs(v - r[i * 5 + j])) }
        }
        XCTAssertLessThan(worst, 1e-13, "largest difference from R's ns")
    }

    func testRefusesKnotsOutsideTheBoundary() {
        XCTAssertThrowsError(try NaturalSpline(interior: [3], boundary: (0, 2)))
        XCTAssertThrowsError(try NaturalSpline(interior: [], boundary: (1, 1)))
        XCTAssertThrowsError(try NaturalSpline(interior: [1, 1], boundary: (0, 2)))
    }
}

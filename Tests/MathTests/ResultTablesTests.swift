import XCTest
@testable import Math

/// The analyst's tables (FixedEffectsTables.swift, VarianceComponentTable.swift)
/// against values worked by hand.
final class ResultTablesTests: XCTestCase {
    private typealias Term = VarianceComponentTable.Term
    private typealias Row = VarianceComponentTable.Row

    // MARK: variance components

    /// (1 + x | g) with θ = (2, 0.5, 1.5): T = [2 0; 0.5 1.5], TTᵀ = [4 1; 1 2.5];
    /// with σ = 3, σ²TTᵀ = [36 9; 9 22.5], correlation 9/√(36·22.5) = 1/√10.
    func testRandomSlopeTermFromTheta() {
        let structure = CovarianceStructure(terms: [.init(dimension: 2, factor: 0)])
        let theta = [2, 0.5, 1.5]
        XCTAssertEqual(structure.termMatrix(0, theta: theta), Matrix(rows: 2, cols: 2, data: [2, 0.5, 0, 1.5]))
        let table = VarianceComponentTable(structure: structure, terms: [Term(name: "g", columns: ["(Intercept)", "x"], levels: 8)],
                                           theta: theta, sigma: 3, includesResidual: true)
        XCTAssertEqual(table.theta, theta)
        XCTAssertEqual(table.thetaNames, ["g.(Intercept)", "g.x.(Intercept)", "g.x"])
        XCTAssertEqual(table.groupNames, ["g"])
        XCTAssertEqual(table.rows.count, 4)
        XCTAssertEqual(table.rows[0], Row(group: "g", var1: "(Intercept)", var2: nil, vcov: 36, sdcor: 6))
        XCTAssertEqual(table.rows[1], Row(group: "g", var1: "x", var2: nil, vcov: 22.5, sdcor: 22.5.squareRoot()))
        XCTAssertEqual(table.rows[2].var1, "(Intercept)")
        XCTAssertEqual(table.rows[2].var2, "x")
        XCTAssertEqual(table.rows[2].vcov, 9)
        XCTAssertEqual(table.rows[2].sdcor, 1 / 10.0.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(table.rows[3], Row(group: "Residual", var1: nil, var2: nil, vcov: 9, sdcor: 3))
    }

    /// A zero variance gives a correlation of 0, not NaN; a GLMM has no residual row.
    func testZeroVarianceGivesZeroCorrelation() {
        let structure = CovarianceStructure(terms: [.init(dimension: 2, factor: 0)])
        let table = VarianceComponentTable(structure: structure, terms: [Term(name: "g", columns: ["(Intercept)", "x"], levels: 8)],
                                           theta: [1, 0.5, 0], sigma: 1, includesResidual: false)
        XCTAssertEqual(table.rows.map(\.group), ["g", "g", "g"])
        XCTAssertEqual(table.rows[1].vcov, 0.25)
        XCTAssertEqual(table.rows[2].vcov, 0.5)
        XCTAssertEqual(table.rows[2].sdcor, 1)   // 0.5/√(1·0.25)
        let singular = VarianceComponentTable(structure: structure, terms: [Term(name: "g", columns: ["(Intercept)", "x"], levels: 8)],
                                              theta: [1, 0, 0], sigma: 1, includesResidual: false)
        XCTAssertEqual(singular.rows[2].sdcor, 0)
    }

    /// Terms sharing one grouping factor, (1 | g) + (0 + x | g), each read their own θ.
    func testTermsSharingAFactor() {
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1), .init(dimension: 1, factor: 1)])
        let theta = [7, 1, 2, 3, 4.0]
        XCTAssertEqual(structure.termMatrix(0, theta: theta), Matrix(rows: 1, cols: 1, data: [7]))
        XCTAssertEqual(structure.termMatrix(1, theta: theta), Matrix(rows: 2, cols: 2, data: [1, 2, 0, 3]))
        XCTAssertEqual(structure.termMatrix(2, theta: theta), Matrix(rows: 1, cols: 1, data: [4]))
        XCTAssertEqual(structure.termEntries(2).map(\.theta), [4])
    }

    /// lme4 sorts by decreasing levels and reverses ties (`rev(order(nl))`),
    /// but only when the order as written increases somewhere.
    func testLme4OrderByLevelsWithTies() {
        XCTAssertEqual(VarianceComponentTable.lme4Order(levels: [10, 10, 3]), [0, 1, 2])
        XCTAssertEqual(VarianceComponentTable.lme4Order(levels: [5, 5]), [0, 1])
        XCTAssertEqual(VarianceComponentTable.lme4Order(levels: [3, 10, 10]), [2, 1, 0])
        XCTAssertEqual(VarianceComponentTable.lme4Order(levels: [10, 3, 10]), [2, 0, 1])
        XCTAssertEqual(VarianceComponentTable.lme4Order(levels: [3, 20, 10]), [1, 2, 0])
    }

    func testNamesMadeUniqueAsR() {
        XCTAssertEqual(VarianceComponentTable.uniqueNames(["g", "g", "h", "g"]), ["g", "g.1", "h", "g.2"])
    }

    /// (1 | site) with 3 levels, (1 | g) and (0 + x | g) with 10: order [2, 1, 0],
    /// the second g becomes "g.1", and θ follows the order.
    func testTableInLme4Order() {
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1), .init(dimension: 1, factor: 1)])
        let terms = [Term(name: "site", columns: ["(Intercept)"], levels: 3), Term(name: "g", columns: ["(Intercept)"], levels: 10),
                     Term(name: "g", columns: ["x"], levels: 10)]
        let table = VarianceComponentTable(structure: structure, terms: terms, theta: [1, 2, 3], sigma: 0.5, includesResidual: true)
        XCTAssertEqual(table.order, [2, 1, 0])
        XCTAssertEqual(table.groupNames, ["g", "g.1", "site"])
        XCTAssertEqual(table.theta, [3, 2, 1])
        XCTAssertEqual(table.thetaNames, ["g.x", "g.1.(Intercept)", "site.(Intercept)"])
        XCTAssertEqual(table.rows.map(\.group), ["g", "g.1", "site", "Residual"])
        XCTAssertEqual(table.rows.map(\.vcov), [2.25, 1, 0.25, 0.25])
        XCTAssertEqual(table.rows.map(\.sdcor), [1.5, 1, 0.5, 0.5])
    }

    // MARK: intraclass correlations

    private func scalarTable(variance: Double, sigma: Double) -> VarianceComponentTable {
        VarianceComponentTable(structure: CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]),
                               terms: [Term(name: "site", columns: ["(Intercept)"], levels: 5)],
                               theta: [variance.squareRoot() / sigma], sigma: sigma, includesResidual: sigma != 1)
    }

    func testLatentResidualVariances() {
        typealias V = VarianceComponentTable
        XCTAssertEqual(V.latentResidualVariance(family: nil, sigma: 2), 4)
        XCTAssertEqual(V.latentResidualVariance(family: GLMFamily(.binomial, .logit), sigma: 1), Double.pi * Double.pi / 3)
        XCTAssertEqual(V.latentResidualVariance(family: GLMFamily(.binomial, .probit), sigma: 1), 1)
        XCTAssertEqual(V.latentResidualVariance(family: GLMFamily(.binomial, .cloglog), sigma: 1), Double.pi * Double.pi / 6)
        XCTAssertNil(V.latentResidualVariance(family: GLMFamily(.poisson, .log), sigma: 1))
    }

    /// Site variance 1: gaussian with σ = 2 gives 1/(1 + 4) = 0.2; logit
    /// 1/(1 + π²/3) ≈ 0.2331; probit 1/2; cloglog 1/(1 + π²/6) ≈ 0.3780.
    func testIntraclassCorrelations() {
        let gaussian = scalarTable(variance: 1, sigma: 2)
        XCTAssertEqual(gaussian.intraclassCorrelations(latentResidualVariance: 4)["site"]!, 0.2, accuracy: 1e-15)
        let glmm = scalarTable(variance: 1, sigma: 1)
        XCTAssertEqual(glmm.intraclassCorrelations(latentResidualVariance: Double.pi * Double.pi / 3)["site"]!, 0.23310739837085, accuracy: 1e-13)
        XCTAssertEqual(glmm.intraclassCorrelations(latentResidualVariance: 1), ["site": 0.5])
        XCTAssertEqual(glmm.intraclassCorrelations(latentResidualVariance: Double.pi * Double.pi / 6)["site"]!, 0.37808125825670, accuracy: 1e-13)
    }

    /// Two intercept terms share the denominator; a slope's variance is not in it.
    func testIntraclassCorrelationsOfTwoGroups() {
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1)])
        let terms = [Term(name: "site", columns: ["(Intercept)"], levels: 4), Term(name: "g", columns: ["(Intercept)", "x"], levels: 40)]
        // σ = 1: site variance 1, g's intercept variance 4, slope variance 9 + 1.
        let table = VarianceComponentTable(structure: structure, terms: terms, theta: [1, 2, 1, 3], sigma: 1, includesResidual: true)
        XCTAssertEqual(table.groupNames, ["g", "site"])
        XCTAssertEqual(table.intraclassCorrelations(latentResidualVariance: 1), ["g": 4.0 / 6, "site": 1.0 / 6])
    }

    // MARK: fixed effects

    /// σ = 2, U = [1 0.5; 0.5 4]: V = [4 2; 2 16], SEs (2, 4), correlation 2/(2·4) = 0.25.
    func testLinearModelCovariance() {
        let c = FixedEffectsCovariance(sigma: 2, unscaled: Matrix(rows: 2, cols: 2, data: [1, 0.5, 0.5, 4]))
        XCTAssertEqual(c.count, 2)
        XCTAssertEqual(c.matrix, Matrix(rows: 2, cols: 2, data: [4, 2, 2, 16]))
        XCTAssertEqual(c.standardErrors, [2, 4])
        XCTAssertEqual(c.correlation, Matrix(rows: 2, cols: 2, data: [1, 0.25, 0.25, 1]))
    }

    /// H = [2 1; 1 2] with θ first: H⁻¹ = [2 −1; −1 2]/3, so the β block of 2·H⁻¹ is 4/3.
    func testGLMMCovarianceFromTheFullHessian() throws {
        let c = try XCTUnwrap(FixedEffectsCovariance(hessian: Matrix(rows: 2, cols: 2, data: [2, 1, 1, 2]), thetaCount: 1))
        XCTAssertEqual(c.sigma, 1)
        XCTAssertEqual(c.count, 1)
        XCTAssertEqual(c.matrix[0, 0], 4.0 / 3, accuracy: 1e-15)
    }

    /// H not positive definite (negative curvature in θ, on its bound): the
    /// fallback 2·(H_ββ)⁻¹ with H_ββ = [2 1; 1 2] gives [4 −2; −2 4]/3.
    func testGLMMCovarianceFallsBackWhenTheHessianIsNotPositiveDefinite() throws {
        let h = Matrix(rows: 3, cols: 3, data: [-1, 0, 0,
                                                0, 2, 1,
                                                0, 1, 2])
        XCTAssertThrowsError(try Dense.cholesky(h))
        let c = try XCTUnwrap(FixedEffectsCovariance(hessian: h, thetaCount: 1))
        XCTAssertEqual(c.count, 2)
        for (got, want) in zip(c.matrix.data, [4.0 / 3, -2.0 / 3, -2.0 / 3, 4.0 / 3]) { XCTAssertEqual(got, want, accuracy: 1e-15) }
        XCTAssertEqual(c.correlation[0, 1], -0.5, accuracy: 1e-15)
        // Neither H nor H_ββ positive definite: the fixed effects are not identified.
        XCTAssertNil(FixedEffectsCovariance(hessian: Matrix(rows: 2, cols: 2, data: [-1, 0, 0, 0]), thetaCount: 1))
    }

    /// β = 2·z₀.₉₇₅ with SE 2: z = z₀.₉₇₅, p = 0.05, interval (0, 4·z₀.₉₇₅).
    func testCoefficientTable() {
        let z = StandardNormal.quantile975
        let covariance = FixedEffectsCovariance(sigma: 2, unscaled: Matrix(rows: 2, cols: 2, data: [1, 0, 0, .infinity]))
        let table = CoefficientTable(names: ["(Intercept)", "x"], estimates: [2 * z, -1], covariance: covariance)
        let a = table.rows[0]
        XCTAssertEqual(a.name, "(Intercept)")
        XCTAssertEqual(a.standardError, 2)
        XCTAssertEqual(a.statistic, z)
        XCTAssertEqual(a.pValue, 0.05, accuracy: 1e-14)
        XCTAssertEqual(a.lower, 0)
        XCTAssertEqual(a.upper, 4 * z)
        // An infinite standard error is reported as NaN; z = 0, p = 1, the interval unbounded.
        let b = table.rows[1]
        XCTAssertTrue(b.standardError.isNaN)
        XCTAssertEqual(b.statistic, 0)
        XCTAssertEqual(b.pValue, 1)
        XCTAssertEqual(b.lower, -.infinity)
        XCTAssertEqual(b.upper, .infinity)
    }
}

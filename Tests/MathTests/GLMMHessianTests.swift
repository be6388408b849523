import XCTest
@testable import Math

/// The GLMM objective the coordinator optimizes is the sum of the sites'
/// D_k(θ, β). Its exact Hessian (in θ and β together) is checked here as a
/// whole matrix, every entry of both triangles, against central differences
/// of the summed exact gradient, and that gradient against central
/// differences of the summed value; for Laplace and adaptive Gauss–Hermite,
/// binomial and Poisson, scalar and vector terms and nested factors.
///
/// Step and tolerance. A central difference with step h has truncation error
/// h²/6 · |f‴| and rounding error about ε_f / h, where ε_f is the noise of
/// the differenced function. The objective varies on the scale s of its
/// smallest parameter (θ = 0.05 below), so the truncation error relative to
/// the entry is about (h/s)²/6; with the modes solved to rounding
/// (modeTolerance 1e-15) the exact gradient's noise is near 1e-12 of its
/// size. The step h = 1e-5 · max(1, |p|) balances the two: (1e-5/0.05)²/6 ≈
/// 7e-9 and 1e-12/1e-5 = 1e-7. (With h = 1e-4 the truncation term is 100
/// times larger and reaches 1e-6 at θ = 0.05, as observed.) The tolerance
/// is 1e-6 relative; the worst error observed is 1.8e-7 (Poisson, vector
/// terms per ward), most are near 1e-8, and a wrong entry (a missing term, a
/// transposed block) is off by far more. Each entry is compared relative to
/// max(|difference|, 1e-3 · √|H_ii H_kk|): an entry that is zero or nearly so
/// by structure (θ–β entries as θ → 0) is judged against the curvatures of
/// its row and column, not against itself.
extension GLMMSiteTests {
    private struct HessianCase {
        var family: GLMFamily
        var kind: GLMMExactDerivativeTests.Kind
        var nAGQ: Int
        var label: String { "\(family) \(kind) nAGQ \(nAGQ)" }
    }

    /// Three sites' data for a case, with rows from the same generator as the per-site tests.
    private func sites(_ c: HessianCase, _ rng: inout SeededGenerator) -> [GLMMSite] {
        (0..<3).map { k in
            let site = GLMMSite(GLMMExactDerivativeTests.site(&rng, family: c.family, kind: c.kind, rows: 40 + 7 * k,
                                                              groups: 8, p: 2))
            site.modeTolerance = 1e-15
            return site
        }
    }

    /// Σ_k D_k with gradient and Hessian (order 2) or value only (order 0).
    private func summed(_ sites: [GLMMSite], _ params: [Double], nt: Int, order: Int, nAGQ: Int) throws -> ScalarJet {
        let jets = try sites.map {
            try $0.evaluate(theta: Array(params[0..<nt]), beta: Array(params[nt...]), order: order, nAGQ: nAGQ)
        }
        return jets.dropFirst().reduce(jets[0], +)
    }

    /// Largest scaled error of the full Hessian and of the gradient.
    private func check(_ c: HessianCase, theta: [Double], beta: [Double], _ rng: inout SeededGenerator) throws -> (hessian: Double, gradient: Double) {
        let sites = sites(c, &rng)
        let nt = theta.count, params = theta + beta, np = params.count
        let jet = try summed(sites, params, nt: nt, order: 2, nAGQ: c.nAGQ)
        XCTAssertEqual(jet.space.parameters, np, c.label)
        let g = jet.gradient, hess = jet.hessian
        var differences = [Double](repeating: 0, count: np * np)   // column k: ∂g/∂p_k
        var worstGradient = 0.0
        for k in 0..<np {
            let h = 1e-5 * max(1, abs(params[k]))
            var up = params, down = params
            up[k] += h; down[k] -= h
            let ju = try summed(sites, up, nt: nt, order: 2, nAGQ: c.nAGQ)
            let jd = try summed(sites, down, nt: nt, order: 2, nAGQ: c.nAGQ)
            for i in 0..<np { differences[i * np + k] = (ju.gradient[i] - jd.gradient[i]) / (2 * h) }
            // the gradient against differences of the value (the same step)
            let fd = (ju.value - jd.value) / (2 * h)
            let e = abs(g[k] - fd) / max(abs(fd), 1)
            worstGradient = max(worstGradient, e)
            XCTAssertLessThanOrEqual(e, 1e-6, "\(c.label) θ=\(theta): gradient[\(k)] exact \(g[k]), differences \(fd)")
        }
        var worst = 0.0
        for i in 0..<np {
            for k in 0..<np {
                let exact = hess[i * np + k], fd = differences[i * np + k]
                XCTAssertEqual(exact, hess[k * np + i], "\(c.label): the Hessian is symmetric")
                let floor = 1e-3 * abs(hess[i * np + i] * hess[k * np + k]).squareRoot()
                let e = abs(exact - fd) / max(abs(fd), floor, 1e-300)
                worst = max(worst, e)
                XCTAssertLessThanOrEqual(e, 1e-6, "\(c.label) θ=\(theta): H[\(i),\(k)] exact \(exact), differences \(fd)")
            }
        }
        // The differences themselves are symmetric (the exact gradient is a
        // gradient field): ∂g_i/∂p_k and ∂g_k/∂p_i computed from different evaluations.
        for i in 0..<np {
            for k in 0..<i {
                let a = differences[i * np + k], b = differences[k * np + i]
                let floor = 1e-3 * abs(hess[i * np + i] * hess[k * np + k]).squareRoot()
                XCTAssertLessThanOrEqual(abs(a - b) / max(abs(a), abs(b), floor, 1e-300), 2e-6,
                                         "\(c.label): differences [\(i),\(k)] \(a) and [\(k),\(i)] \(b)")
            }
        }
        return (worst, worstGradient)
    }

    func testSummedHessianIsTheFullMatrixOfDifferencesOfTheGradient() throws {
        var rng = SeededGenerator(seed: 1313)
        let binomial = GLMFamily(.binomial, .logit), poisson = GLMFamily(.poisson, .log)
        var cases: [HessianCase] = []
        for family in [binomial, poisson] {
            // Laplace: scalar and vector site terms, patients nested in sites
            // (scalar and vector), three nested levels, vector terms per ward.
            for kind in [GLMMExactDerivativeTests.Kind.siteScalar, .siteVector, .patientsAndSite, .patientVectorAndSite,
                         .threeLevels, .wardVectorsAndSite, .groupsOnly] {
                cases.append(HessianCase(family: family, kind: kind, nAGQ: 1))
            }
            // Adaptive quadrature: only one scalar term is allowed (as in lme4).
            for kind in [GLMMExactDerivativeTests.Kind.siteScalar, .groupsOnly] {
                for nAGQ in [3, 9] { cases.append(HessianCase(family: family, kind: kind, nAGQ: nAGQ)) }
            }
        }
        var report: [String] = []
        for c in cases {
            let initial = c.kind.structure.initialTheta
            let generic = initial.enumerated().map { i, t in t == 1 ? 0.7 + 0.2 * Double(i) : -0.3 }
            let small = initial.map { $0 == 1 ? 0.05 : 0.01 }
            var worstH = 0.0, worstG = 0.0
            for theta in [generic, small] {
                let (h, g) = try check(c, theta: theta, beta: [-0.4, 0.6], &rng)
                worstH = max(worstH, h); worstG = max(worstG, g)
            }
            report.append("\(c.label): worst Hessian \(worstH), gradient \(worstG)")
        }
        print(report.joined(separator: "\n"))
    }

    /// Quadrature with more than one point needs a single scalar term: a
    /// vector or a nested model is refused, not approximated.
    func testQuadratureRefusesVectorAndNestedTerms() throws {
        var rng = SeededGenerator(seed: 5)
        for kind in [GLMMExactDerivativeTests.Kind.siteVector, .patientsAndSite, .threeLevels] {
            let site = GLMMSite(GLMMExactDerivativeTests.site(&rng, family: GLMFamily(.poisson, .log), kind: kind,
                                                              rows: 30, groups: 8, p: 2))
            let theta = kind.structure.initialTheta
            XCTAssertThrowsError(try site.evaluate(theta: theta, beta: [0, 0], order: 2, nAGQ: 5), "\(kind)") { error in
                XCTAssertEqual(error as? GLMMError, .quadratureNeedsOneScalarTerm, "\(kind)")
            }
            XCTAssertNoThrow(try site.evaluate(theta: theta, beta: [0, 0], order: 2, nAGQ: 1), "\(kind): Laplace is fine")
        }
    }
}

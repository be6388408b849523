import XCTest
@testable import Math

/// The level form of a crossed GLMM (GLMMCrossedLevelForm at the site,
/// CrossedGLMMLevelSystem at the coordinator) against the dense form: each
/// site's A − V'V'ᵀ is its dense Hessian, and the level-by-level
/// elimination gives the dense Cholesky's log|S|, Newton steps S⁻¹g,
/// conditional variances diag(Λ_G S⁻¹ Λ_Gᵀ) and the sites' own effects'
/// conditional covariances, on simulated sites with scalar and vector own
/// and crossed terms, one or two crossed factors.
final class CrossedGLMMLevelFormTests: XCTestCase {
    struct Case {
        var ownVector: Bool
        var crossedDimension: Int
        var twoFactors: Bool
        var family: GLMFamily
    }

    /// K sites with their crossed rows: F (`levels` levels, r each) and
    /// optionally year (3 levels, scalar); each site has 6-9 levels of F.
    func federation(_ c: Case, sites k: Int, levels: Int, seed: UInt64)
        -> (sites: [GLMMCrossedSite], layout: CrossedLayout, structure: CovarianceStructure, theta: [Double]) {
        var rng = SeededGenerator(seed: seed)
        let r = c.crossedDimension, own = c.ownVector ? 2 : 1
        var terms: [CovarianceStructure.Term] = [.init(dimension: own, factor: 0), .init(dimension: r, factor: 1)]
        if c.twoFactors { terms.append(.init(dimension: 1, factor: 2)) }
        let structure = CovarianceStructure(terms: terms)
        let ownTheta = own == 1 ? 1 : 3
        var crossed: [(factor: Int, levels: Int)] = [(1, levels)]
        if c.twoFactors { crossed.append((2, 3)) }
        var sites: [GLMMCrossedSite] = [], present: [[[Int]]] = []
        for _ in 0..<k {
            let local = GLMExactSite.site(&rng, family: c.family, vector: c.ownVector, rows: 160)
            var mine = Set<Int>()
            let count = Int.random(in: 6...9, using: &rng)
            while mine.count < count { mine.insert(Int.random(in: 0..<levels, using: &rng)) }
            let fLevels = mine.sorted()
            let years = c.twoFactors ? [0, 1, 2] : []
            var fColumn: [Int] = [], fz: [Double] = [], yColumn: [Int] = [], yz: [Double] = []
            for i in 0..<local.rows {
                let at = Int.random(in: 0..<fLevels.count, using: &rng)
                fColumn.append(at * r)
                fz.append(1); if r == 2 { fz.append(local.x[i * local.p + 1]) }
                if c.twoFactors { yColumn.append(fLevels.count * r + Int.random(in: 0..<3, using: &rng)); yz.append(1) }
            }
            var factors: [CrossedRowColumns.Factor] = [.init(dimension: r, column: fColumn, z: fz)]
            if c.twoFactors { factors.append(.init(dimension: 1, column: yColumn, z: yz)) }
            sites.append(GLMMCrossedSite(local: local, crossed: CrossedRowColumns(factors: factors, width: fLevels.count * r + years.count),
                                         localTheta: Array(0..<ownTheta)))
            present.append(c.twoFactors ? [fLevels, years] : [fLevels])
        }
        let layout = CrossedLayout(structure: structure, crossed: crossed, presentLevels: present, localTheta: Array(0..<ownTheta))
        let theta = (0..<structure.thetaCount).map { 0.5 + 0.2 * Double($0 % 3) }
        return (sites, layout, structure, theta)
    }

    static let cases: [Case] = [
        Case(ownVector: false, crossedDimension: 1, twoFactors: false, family: GLMFamily(.binomial, .logit)),
        Case(ownVector: true, crossedDimension: 1, twoFactors: false, family: GLMFamily(.poisson, .log)),
        Case(ownVector: false, crossedDimension: 2, twoFactors: true, family: GLMFamily(.binomial, .logit)),
        Case(ownVector: true, crossedDimension: 2, twoFactors: true, family: GLMFamily(.poisson, .log)),
    ]

    func relative(_ a: [Double], _ b: [Double]) -> Double {
        let scale = max(b.reduce(0) { max($0, abs($1)) }, 1e-300)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) } / scale
    }

    func testLevelFormEqualsDenseForm() throws {
        for (n, c) in Self.cases.enumerated() {
            let f = federation(c, sites: 6, levels: 25, seed: 40 + UInt64(n))
            let beta = [-0.2, 0.3]
            let q = f.layout.dimension
            let u = (0..<q).map { 0.3 * sin(Double($0)) }
            // b_G = Λ_G u.
            var b = [Double](repeating: 0, count: q)
            for fac in f.layout.factors {
                let t = f.structure.factorMatrix(fac.factor, theta: f.theta), r = t.rows
                for l in 0..<fac.levels { for i in 0..<r { for k in 0...i { b[fac.offset + l * r + i] += t[i, k] * u[fac.offset + l * r + k] } } }
            }
            var dense = Matrix(rows: q, cols: q)
            var hessians: [CrossedLevelHessian] = []
            var worstSite = 0.0
            for (k, s) in f.sites.enumerated() {
                let cols = f.layout.siteColumns[k], effects = cols.map { b[$0] }
                let d = try s.piece(theta: f.theta, beta: beta, effects: effects)
                let l = try XCTUnwrap(s.levelPiece(theta: f.theta, beta: beta, effects: effects))
                XCTAssertEqual(l.value, d.value, accuracy: 1e-12 * abs(d.value), "\(n) value")
                XCTAssertEqual(l.logDet, d.logDet, accuracy: 1e-12 * abs(d.logDet), "\(n) log|H_ss|")
                worstSite = max(worstSite, relative(l.gradient, d.gradient), relative(l.denseHessian, d.hessian))
                // V' is lower trapezoidal with a nonnegative diagonal.
                let qk = cols.count, m = l.localDimension
                for e in 0..<m {
                    XCTAssertGreaterThanOrEqual(l.coupling[e + e * qk], 0)
                    for i in 0..<e { XCTAssertEqual(l.coupling[i + e * qk], 0) }
                }
                for j in 0..<qk { for i in 0..<qk { dense[cols[i], cols[j]] += 0.5 * d.hessian[i + j * qk] } }
                hessians.append(CrossedLevelHessian(start: l.start, values: l.values, coupling: l.coupling, localDimension: m))
            }
            XCTAssertLessThanOrEqual(worstSite, 1e-12, "\(n): a site's level form is its dense Hessian")

            // Dense S = Λ_Gᵀ(½ΣH)Λ_G + I.
            var lambda = Matrix(rows: q, cols: q)
            for fac in f.layout.factors {
                let t = f.structure.factorMatrix(fac.factor, theta: f.theta), r = t.rows
                for l in 0..<fac.levels { for j in 0..<r { for i in 0..<r { lambda[fac.offset + l * r + i, fac.offset + l * r + j] = t[i, j] } } }
            }
            var sMatrix = Dense.multiply(Dense.multiply(Dense.transpose(lambda), dense), lambda)
            for i in 0..<q { sMatrix[i, i] += 1 }
            let chol = try Dense.cholesky(sMatrix)
            var logDet = 0.0
            for i in 0..<q { logDet += 2 * log(chol[i, i]) }
            let system = try CrossedGLMMLevelSystem(layout: f.layout, structure: f.structure, theta: f.theta, sites: hessians)
            XCTAssertEqual(system.logDet, logDet, accuracy: 1e-10 * abs(logDet), "\(n) log|S|")
            let g = (0..<q).map { cos(0.7 * Double($0)) }
            XCTAssertLessThanOrEqual(relative(system.solve(g), Dense.solveLowerTranspose(chol, Dense.solveLower(chol, g))), 1e-10, "\(n) Newton step")
            let p = Dense.multiply(Dense.multiply(lambda, Dense.inverseFromCholesky(chol)), Dense.transpose(lambda))
            XCTAssertLessThanOrEqual(relative(system.conditionalVariances(), (0..<q).map { p[$0, $0] }), 1e-10, "\(n) conditional variances")
            // Each site's own effects: P at its levels (dense) or N = V'ᵀPV' (level).
            let terms = system.siteTerms(hessians)
            for (k, s) in f.sites.enumerated() {
                let cols = f.layout.siteColumns[k], qk = cols.count
                var pk = Matrix(rows: qk, cols: qk)
                for j in 0..<qk { for i in 0..<qk { pk[i, j] = p[cols[i], cols[j]] } }
                let effects = cols.map { b[$0] }
                let viaP = try XCTUnwrap(s.siteEffects(theta: f.theta, beta: beta, effects: effects, crossedCovariance: pk))
                let m = hessians[k].localDimension
                let viaN = try XCTUnwrap(s.siteEffects(theta: f.theta, beta: beta, effects: effects, levelTerm: Matrix(rows: m, cols: m, data: terms[k])))
                XCTAssertLessThanOrEqual(relative(viaN.effects, viaP.effects), 1e-10, "\(n) site \(k) effects")
                XCTAssertLessThanOrEqual(relative(viaN.conditionalCovariance.data, viaP.conditionalCovariance.data), 1e-10, "\(n) site \(k) covariance")
            }
        }
    }

    /// V' depends on V only through VVᵀ: V rotated from the right gives the same V'.
    func testCanonicalCouplingIsAFunctionOfVVt() {
        var rng = SeededGenerator(seed: 5)
        let q = 7, m = 3
        let v = (0..<(q * m)).map { _ in Double.random(in: -1...1, using: &rng) }
        // A rotation: Householder reflection I − 2hhᵀ/hᵀh.
        let h = [0.3, -0.8, 0.5], hh = h.reduce(0) { $0 + $1 * $1 }
        var w = [Double](repeating: 0, count: q * m)
        for i in 0..<q { for b in 0..<m { for a in 0..<m {
            let qab = (a == b ? 1 : 0) - 2 * h[a] * h[b] / hh
            w[i + b * q] += v[i + a * q] * qab
        } } }
        let a = CanonicalCoupling.lowerTrapezoidal(v, rows: q, cols: m).coupling
        let b = CanonicalCoupling.lowerTrapezoidal(w, rows: q, cols: m).coupling
        XCTAssertLessThanOrEqual(relative(a, b), 1e-14)
    }
}

/// GLMM site rows with the site as the only own factor (scalar or vector).
enum GLMExactSite {
    static func site(_ rng: inout SeededGenerator, family: GLMFamily, vector: Bool, rows: Int) -> GLMMSiteData {
        GLMMExactDerivativeTests.site(&rng, family: family, kind: vector ? .siteVector : .siteScalar, rows: rows, groups: 1, p: 2)
    }
}

import XCTest
@testable import Math

/// The level form of a crossed GLMM with within-site own terms (issue 17:
/// `(1 | site/ward) + (1 | surgeon)`): a site's own effects are its own and
/// its wards' (m_k = r_site + Σ ward effects), H_ss is dense m_k × m_k, and
/// V' is q_k × m_k. Against the dense form on simulated sites: each site's
/// 2(A − V'V'ᵀ) is its dense Hessian (1e-12 of its scale), and the
/// coordinator's level-by-level elimination gives the dense Cholesky's
/// log|S|, Newton step and conditional variances, and each site's
/// site-level effects and their conditional covariance from N = V'ᵀPV'
/// equal those from P at its levels (1e-10): wards with a scalar term,
/// wards with a random slope in a further grouping, and wards without a
/// site term.
final class CrossedGLMMWardsLevelFormTests: XCTestCase {
    typealias Kind = GLMMExactDerivativeTests.Kind

    /// K sites with own structure `kind` (8 groups per site) and one crossed
    /// factor F (`levels` levels, r = 1), 6-9 of them per site.
    func federation(_ kind: Kind, family: GLMFamily, sites k: Int, levels: Int, seed: UInt64)
        -> (sites: [GLMMCrossedSite], layout: CrossedLayout, structure: CovarianceStructure, theta: [Double]) {
        var rng = SeededGenerator(seed: seed)
        let own = kind.structure, nf = own.factorCount
        let structure = CovarianceStructure(terms: own.terms + [.init(dimension: 1, factor: nf)])
        let ownTheta = Array(0..<own.thetaCount)
        var sites: [GLMMCrossedSite] = [], present: [[[Int]]] = []
        for _ in 0..<k {
            let local = GLMMExactDerivativeTests.site(&rng, family: family, kind: kind, rows: 160, groups: 8, p: 2)
            var mine = Set<Int>()
            let count = Int.random(in: 6...9, using: &rng)
            while mine.count < count { mine.insert(Int.random(in: 0..<levels, using: &rng)) }
            let fLevels = mine.sorted()
            let column = (0..<local.rows).map { _ in Int.random(in: 0..<fLevels.count, using: &rng) }
            let factor = CrossedRowColumns.Factor(dimension: 1, column: column, z: [Double](repeating: 1, count: local.rows))
            sites.append(GLMMCrossedSite(local: local, crossed: CrossedRowColumns(factors: [factor], width: fLevels.count), localTheta: ownTheta))
            present.append([fLevels])
        }
        let layout = CrossedLayout(structure: structure, crossed: [(nf, levels)], presentLevels: present, localTheta: ownTheta)
        let theta = (0..<structure.thetaCount).map { 0.5 + 0.2 * Double($0 % 3) }
        return (sites, layout, structure, theta)
    }

    func relative(_ a: [Double], _ b: [Double]) -> Double {
        let scale = max(b.reduce(0) { max($0, abs($1)) }, 1e-300)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) } / scale
    }

    func testLevelFormWithWardsEqualsDenseForm() throws {
        let cases: [(Kind, GLMFamily)] = [(.patientsAndSite, GLMFamily(.binomial, .logit)), (.wardVectorsAndSite, GLMFamily(.poisson, .log)),
                                          (.groupsOnly, GLMFamily(.binomial, .logit))]
        for (n, (kind, family)) in cases.enumerated() {
            let f = federation(kind, family: family, sites: 6, levels: 25, seed: 70 + UInt64(n))
            let beta = [-0.2, 0.3], q = f.layout.dimension
            let u = (0..<q).map { 0.3 * sin(Double($0)) }
            let t = f.structure.factorMatrix(f.layout.factors[0].factor, theta: f.theta)[0, 0]
            let b = u.map { t * $0 }
            var dense = Matrix(rows: q, cols: q)
            var hessians: [CrossedLevelHessian] = []
            var worstSite = 0.0
            for (k, s) in f.sites.enumerated() {
                let cols = f.layout.siteColumns[k], effects = cols.map { b[$0] }
                let d = try s.piece(theta: f.theta, beta: beta, effects: effects)
                let l = try s.levelPiece(theta: f.theta, beta: beta, effects: effects)
                XCTAssertEqual(l.localDimension, s.ownEffectCount)
                XCTAssertGreaterThan(l.localDimension, kind == .groupsOnly ? 1 : 2, "\(kind): the wards are own effects")
                XCTAssertEqual(l.value, d.value, accuracy: 1e-12 * abs(d.value), "\(kind) value")
                XCTAssertEqual(l.logDet, d.logDet, accuracy: 1e-12 * abs(d.logDet), "\(kind) log|H_ss|")
                worstSite = max(worstSite, relative(l.gradient, d.gradient), relative(l.denseHessian, d.hessian))
                let qk = cols.count, m = l.localDimension
                for e in 0..<min(m, qk) {
                    XCTAssertGreaterThanOrEqual(l.coupling[e + e * qk], 0)
                    for i in 0..<e { XCTAssertEqual(l.coupling[i + e * qk], 0) }
                }
                for j in 0..<qk { for i in 0..<qk { dense[cols[i], cols[j]] += 0.5 * d.hessian[i + j * qk] } }
                hessians.append(CrossedLevelHessian(start: l.start, values: l.values, coupling: l.coupling, localDimension: m))
            }
            XCTAssertLessThanOrEqual(worstSite, 1e-12, "\(kind): a site's level form is its dense Hessian")
            // Dense S = t²(½ΣH) + I.
            var sMatrix = Matrix(rows: q, cols: q)
            for j in 0..<q { for i in 0..<q { sMatrix[i, j] = t * t * dense[i, j] }; sMatrix[j, j] += 1 }
            let chol = try Dense.cholesky(sMatrix)
            var logDet = 0.0
            for i in 0..<q { logDet += 2 * log(chol[i, i]) }
            let system = try CrossedGLMMLevelSystem(layout: f.layout, structure: f.structure, theta: f.theta, sites: hessians)
            XCTAssertEqual(system.logDet, logDet, accuracy: 1e-10 * abs(logDet), "\(kind) log|S|")
            let g = (0..<q).map { cos(0.7 * Double($0)) }
            XCTAssertLessThanOrEqual(relative(system.solve(g), Dense.solveLowerTranspose(chol, Dense.solveLower(chol, g))), 1e-10, "\(kind) Newton step")
            let inverse = Dense.inverseFromCholesky(chol)
            let p = Matrix(rows: q, cols: q, data: inverse.data.map { t * t * $0 })
            XCTAssertLessThanOrEqual(relative(system.conditionalVariances(), (0..<q).map { p[$0, $0] }), 1e-10, "\(kind) conditional variances")
            let terms = system.siteTerms(hessians)
            for (k, s) in f.sites.enumerated() {
                let cols = f.layout.siteColumns[k], qk = cols.count
                var pk = Matrix(rows: qk, cols: qk)
                for j in 0..<qk { for i in 0..<qk { pk[i, j] = p[cols[i], cols[j]] } }
                let effects = cols.map { b[$0] }, m = hessians[k].localDimension
                let viaP = try s.siteEffects(theta: f.theta, beta: beta, effects: effects, crossedCovariance: pk)
                let viaN = try s.siteEffects(theta: f.theta, beta: beta, effects: effects, levelTerm: Matrix(rows: m, cols: m, data: terms[k]))
                XCTAssertEqual(viaP == nil, kind == .groupsOnly, "\(kind): site-level effects only with a site term")
                guard let viaP, let viaN else { XCTAssertNil(viaN); continue }
                XCTAssertEqual(viaN.effects.count, kind.structure.factorDimension(kind.siteFactor!))
                XCTAssertLessThanOrEqual(relative(viaN.effects, viaP.effects), 1e-10, "\(kind) site \(k) effects")
                XCTAssertLessThanOrEqual(relative(viaN.conditionalCovariance.data, viaP.conditionalCovariance.data), 1e-10, "\(kind) site \(k) covariance")
            }
        }
    }
}

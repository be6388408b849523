import XCTest
@testable import Math

/// A straightforward dense Laplace/AGQ implementation over all rows of all
/// sites (full Z, dense Newton for the modes), to check the blocked per-site one.
struct DenseGLMM {
    var family: GLMFamily
    var x: [[Double]], y: [Double], n: [Double], zfull: [[Double]]   // rows × q (all sites)
    var lambda: Matrix

    func penalized(_ u: [Double], _ beta: [Double]) -> (Double, [Double]) {
        var eta = [Double](repeating: 0, count: y.count)
        let b = Dense.multiply(lambda, u)
        var dev = 0.0
        for i in 0..<y.count {
            var e = 0.0
            for j in 0..<beta.count { e += x[i][j] * beta[j] }
            for k in 0..<b.count { e += zfull[i][k] * b[k] }
            eta[i] = e
            dev += family.minusTwoLogLik(y: y[i], n: n[i], mu: family.mu(e))
        }
        return (dev + u.reduce(0) { $0 + $1 * $1 }, eta)
    }

    func laplace(beta: [Double]) throws -> Double {
        let q = lambda.rows
        var u = [Double](repeating: 0, count: q)
        var logdet = 0.0, pen = 0.0
        for _ in 0..<200 {
            let (f, eta) = penalized(u, beta)
            pen = f
            var m = Matrix.identity(q)
            var c = u.map { -$0 }
            for i in 0..<y.count {
                let (w, r, _) = family.weightAndResidual(y: y[i], n: n[i], eta: eta[i])
                let zl = Dense.multiply(Dense.transpose(lambda), zfull[i])
                for a in 0..<q { c[a] += zl[a] * w * r; for b in 0..<q { m[a, b] += w * zl[a] * zl[b] } }
            }
            let l = try Dense.cholesky(m)
            logdet = (0..<q).reduce(0) { $0 + 2 * log(l[$1, $1]) }
            let d = Dense.solveLowerTranspose(l, Dense.solveLower(l, c))
            if d.map(abs).max()! < 1e-13 { break }
            u = zip(u, d).map { $0 + $1 }
        }
        return pen + logdet
    }
}

final class GLMMSiteTests: XCTestCase {
    func randomSites(_ rng: inout SeededGenerator, family: GLMFamily, structure: CovarianceStructure, siteFactor: Int?,
                     levelsPerSite: [Int], sites: Int, rowsPerSite: Int, p: Int) -> [GLMMSiteData] {
        (0..<sites).map { _ in
            let rows = rowsPerSite + Int.random(in: 0...10, using: &rng)
            var x: [Double] = [], y: [Double] = [], n: [Double] = []
            var levels = [[Int]](repeating: [], count: structure.factorCount)
            var z = [[Double]](repeating: [], count: structure.factorCount)
            for _ in 0..<rows {
                x.append(1); for _ in 1..<p { x.append(Double.random(in: -1...1, using: &rng)) }
                let trials = family.distribution == .binomial ? Double(Int.random(in: 1...4, using: &rng)) : 1
                n.append(trials)
                y.append(family.distribution == .binomial ? Double(Int.random(in: 0...Int(trials), using: &rng))
                                                         : Double(Int.random(in: 0...6, using: &rng)))
                for f in 0..<structure.factorCount {
                    levels[f].append(f == siteFactor ? 0 : Int.random(in: 0..<levelsPerSite[f], using: &rng))
                    let r = structure.factorDimension(f)
                    z[f].append(1); for _ in 1..<max(r, 1) { z[f].append(Double.random(in: -1...1, using: &rng)) }
                    if r == 0 { z[f].removeLast() }
                }
            }
            let counts = (0..<structure.factorCount).map { f in f == siteFactor ? 1 : (levels[f].max() ?? 0) + 1 }
            // re-index so every level occurs
            for f in 0..<structure.factorCount where f != siteFactor {
                let used = Array(Set(levels[f])).sorted()
                levels[f] = levels[f].map { used.firstIndex(of: $0)! }
            }
            let realCounts = (0..<structure.factorCount).map { f in f == siteFactor ? 1 : Set(levels[f]).count }
            _ = counts
            return GLMMSiteData(family: family, structure: structure, siteFactor: siteFactor, p: p, x: x, y: y, n: n,
                                offset: [Double](repeating: 0, count: rows), levels: levels, levelCounts: realCounts, z: z)
        }
    }

    func dense(_ sites: [GLMMSiteData], theta: [Double]) -> DenseGLMM {
        let s = sites[0].structure
        var offsets: [[Int]] = []   // per site, per factor
        var q = 0
        for site in sites {
            var o: [Int] = []
            for f in 0..<s.factorCount { o.append(q); q += site.levelCounts[f] * s.factorDimension(f) }
            offsets.append(o)
        }
        var lambda = Matrix(rows: q, cols: q)
        var x: [[Double]] = [], y: [Double] = [], n: [Double] = [], zf: [[Double]] = []
        for (k, site) in sites.enumerated() {
            for f in 0..<s.factorCount {
                let t = s.factorMatrix(f, theta: theta), r = t.rows
                for l in 0..<site.levelCounts[f] { for j in 0..<r { for i in 0..<r { lambda[offsets[k][f] + l * r + i, offsets[k][f] + l * r + j] = t[i, j] } } }
            }
            for i in 0..<site.rows {
                x.append(Array(site.x[(i * site.p)..<((i + 1) * site.p)])); y.append(site.y[i]); n.append(site.n[i])
                var row = [Double](repeating: 0, count: q)
                for f in 0..<s.factorCount {
                    let r = s.factorDimension(f)
                    for a in 0..<r { row[offsets[k][f] + site.levels[f][i] * r + a] = site.z[f][i * r + a] }
                }
                zf.append(row)
            }
        }
        return DenseGLMM(family: sites[0].family, x: x, y: y, n: n, zfull: zf, lambda: lambda)
    }

    func testSummedSiteLaplaceEqualsDenseImplementation() throws {
        var rng = SeededGenerator(seed: 2024)
        let cases: [(GLMFamily, CovarianceStructure, Int?, [Int])] = [
            (GLMFamily(.binomial, .logit), CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]), 0, [1]),
            (GLMFamily(.binomial, .probit), CovarianceStructure(terms: [.init(dimension: 2, factor: 0)]), 0, [1]),
            (GLMFamily(.poisson, .log), CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]), 1, [6, 1]),
            (GLMFamily(.binomial, .cloglog), CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1)]), 1, [5, 1]),
        ]
        for (family, structure, sf, levels) in cases {
            let sites = randomSites(&rng, family: family, structure: structure, siteFactor: sf, levelsPerSite: levels,
                                    sites: 3, rowsPerSite: 25, p: 2)
            let theta = structure.initialTheta.enumerated().map { i, t in t == 1 ? 0.6 + 0.1 * Double(i) : 0.2 }
            let beta = [-0.3, 0.4]
            let split = try sites.reduce(0.0) { $0 + (try GLMMSite($1).objective(theta: theta, beta: beta).value) }
            let pooled = try dense(sites, theta: theta).laplace(beta: beta)
            XCTAssertEqual(split, pooled, accuracy: 1e-10 * abs(pooled), "\(family)")
        }
    }

    func testQuadratureWithOnePointIsLaplaceAndConverges() throws {
        var rng = SeededGenerator(seed: 5)
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0)])
        let sites = randomSites(&rng, family: GLMFamily(.binomial, .logit), structure: structure, siteFactor: nil,
                                levelsPerSite: [8], sites: 2, rowsPerSite: 40, p: 2)
        for s in sites.map(GLMMSite.init) {
            let laplace = try s.objective(theta: [0.8], beta: [0.1, -0.2]).value
            XCTAssertEqual(try s.objective(theta: [0.8], beta: [0.1, -0.2], nAGQ: 1).value, laplace, accuracy: 1e-12)
            // more points converge: 15 and 25 agree closely, and differ from Laplace
            let q15 = try s.objective(theta: [0.8], beta: [0.1, -0.2], nAGQ: 15).value
            let q25 = try s.objective(theta: [0.8], beta: [0.1, -0.2], nAGQ: 25).value
            XCTAssertEqual(q15, q25, accuracy: 1e-8)
            XCTAssertGreaterThan(abs(q15 - laplace), 1e-6)
        }
    }

    func testGaussHermiteRuleIntegratesPolynomialsExactly() {
        for n in [1, 2, 5, 9, 25] {
            let rule = GaussHermiteRule(points: n)
            XCTAssertEqual(rule.weights.reduce(0, +), 1, accuracy: 1e-13)
            // E[Z^(2k)] = (2k−1)!! is integrated exactly for 2k ≤ 2n − 1
            var doubleFactorial = 1.0
            for k in 1..<n where 2 * k <= 2 * n - 1 {
                doubleFactorial *= Double(2 * k - 1)
                let moment = zip(rule.nodes, rule.weights).reduce(0) { $0 + $1.1 * pow($1.0, Double(2 * k)) }
                XCTAssertEqual(moment, doubleFactorial, accuracy: 1e-9 * doubleFactorial, "n=\(n) k=\(k)")
            }
        }
    }

    func testReturnedDerivativesMatchFiniteDifferencesOfTheObjective() throws {
        var rng = SeededGenerator(seed: 77)
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0)])
        let data = randomSites(&rng, family: GLMFamily(.binomial, .logit), structure: structure, siteFactor: 0,
                               levelsPerSite: [1], sites: 1, rowsPerSite: 60, p: 3)[0]
        let site = GLMMSite(data)
        let theta = [0.7], beta = [0.2, -0.5, 0.3]
        let jet = try site.evaluate(theta: theta, beta: beta, order: 2)
        let params = theta + beta
        // independent check: 5-point stencil with a different step
        for k in 0..<params.count {
            let h = 1e-3
            func f(_ d: Double) throws -> Double {
                var q = params; q[k] += d
                return try site.objective(theta: [q[0]], beta: Array(q[1...])).value
            }
            let g = (try -f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
            XCTAssertEqual(jet.gradient[k], g, accuracy: 1e-5 * max(1, abs(g)))
            let h2 = (try -f(2 * h) + 16 * f(h) - 30 * f(0) + 16 * f(-h) - f(-2 * h)) / (12 * h * h)
            XCTAssertEqual(jet.hessian[k * params.count + k], h2, accuracy: 1e-3 * max(1, abs(h2)))
        }
    }
}

extension GLMMSiteTests {
    func testExactGradientMatchesFiniteDifferences() throws {
        var rng = SeededGenerator(seed: 31)
        let helper = self
        let cases: [(GLMFamily, CovarianceStructure, Int?, [Int])] = [
            (GLMFamily(.binomial, .logit), CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]), 0, [1]),
            (GLMFamily(.binomial, .probit), CovarianceStructure(terms: [.init(dimension: 2, factor: 0)]), 0, [1]),
            (GLMFamily(.poisson, .log), CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]), 1, [6, 1]),
            (GLMFamily(.binomial, .cloglog), CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1)]), 1, [5, 1]),
            (GLMFamily(.binomial, .logit), CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 1, factor: 1)]), 1, [7, 1]),
        ]
        for (family, structure, sf, levels) in cases {
            let data = helper.randomSites(&rng, family: family, structure: structure, siteFactor: sf, levelsPerSite: levels,
                                          sites: 1, rowsPerSite: 50, p: 2)[0]
            let site = GLMMSite(data)
            let theta = structure.initialTheta.enumerated().map { i, t in t == 1 ? 0.5 + 0.15 * Double(i) : 0.25 }
            let beta = [-0.2, 0.5]
            let exact = try site.laplaceValueAndGradient(theta: theta, beta: beta)
            let params = theta + beta
            for k in 0..<params.count {
                let h = 1e-5
                func f(_ d: Double) throws -> Double {
                    var q = params; q[k] += d
                    return try site.objective(theta: Array(q[0..<theta.count]), beta: Array(q[theta.count...])).value
                }
                let fd = (try -f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
                XCTAssertEqual(exact.gradient[k], fd, accuracy: 2e-8 * max(1, abs(fd)), "\(family) parameter \(k)")
            }
        }
    }
}

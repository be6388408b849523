import XCTest
@testable import Math

/// The exact Hessians (Laplace and adaptive Gauss–Hermite) against central
/// differences of the exact gradient, entry by entry: every link, binomial
/// trials and Poisson prior weights, offsets, scalar and vector terms, nested within-site factors (up to three levels), θ
/// generic, near 0, mixed and at 0.
///
/// Tolerance: |H_ij − FD_ij| ≤ 1e-6 · max(|FD_ij|, 1e-3·√(|H_ii H_jj|)): relative
/// to the entry, floored at a thousandth of the geometric mean of the two
/// diagonal curvatures (an off-diagonal entry that is zero by symmetry, e.g.
/// the θ–β entries at θ → 0, has no relative error of its own). The
/// differences are five-point stencils with step 1e-3·max(1, |p|).
final class GLMMExactDerivativeTests: XCTestCase {
    enum Kind: String, CaseIterable {
        case siteScalar, siteVector, patientsAndSite, patientVectorAndSite, threeLevels, wardVectorsAndSite, groupsOnly
        var structure: CovarianceStructure {
            switch self {
            case .siteScalar: return CovarianceStructure(terms: [.init(dimension: 1, factor: 0)])
            case .siteVector: return CovarianceStructure(terms: [.init(dimension: 2, factor: 0)])
            case .patientsAndSite: return CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)])
            case .patientVectorAndSite: return CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 1, factor: 1)])
            case .threeLevels:
                return CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1), .init(dimension: 1, factor: 2)])
            case .wardVectorsAndSite:
                // patients in wards with a random slope per ward: vector blocks in the tail
                return CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1), .init(dimension: 1, factor: 2)])
            case .groupsOnly: return CovarianceStructure(terms: [.init(dimension: 1, factor: 0)])
            }
        }
        var siteFactor: Int? {
            switch self {
            case .siteScalar, .siteVector: return 0
            case .patientsAndSite, .patientVectorAndSite: return 1
            case .threeLevels, .wardVectorsAndSite: return 2
            case .groupsOnly: return nil
            }
        }
    }

    /// One site's rows: factor 0 has `groups` levels (episodes, patients),
    /// factor 1 (three levels) nests them as level / (groups / 4).
    static func site(_ rng: inout SeededGenerator, family: GLMFamily, kind: Kind, rows: Int, groups: Int, p: Int) -> GLMMSiteData {
        let s = kind.structure
        var x: [Double] = [], y: [Double] = [], n: [Double] = []
        var levels = [[Int]](repeating: [], count: s.factorCount)
        var z = [[Double]](repeating: [], count: s.factorCount)
        let per = max(groups / 4, 1)
        for i in 0..<rows {
            x.append(1); for _ in 1..<p { x.append(Double.random(in: -1...1, using: &rng)) }
            // binomial: 1–3 trials per row; Poisson: prior weights (log-likelihood multipliers) 0.5–2.5
            let trials = family.distribution == .binomial ? Double(Int.random(in: 1...3, using: &rng)) : Double.random(in: 0.5...2.5, using: &rng)
            n.append(trials)
            let g = i % groups
            for f in 0..<s.factorCount {
                let level: Int
                if f == kind.siteFactor { level = 0 } else if f == 0 { level = g } else { level = g / per }
                levels[f].append(level)
                let r = s.factorDimension(f)
                z[f].append(1); for _ in 1..<max(r, 1) { z[f].append(Double.random(in: -1...1, using: &rng)) }
            }
            let eta = -0.3 + 0.5 * x[i * p + 1] + 0.4 * Double(g % 3 - 1)
            y.append(GLMMResponseDraw.draw(family, eta: eta, trials: trials, &rng))
        }
        let counts = (0..<s.factorCount).map { Set(levels[$0]).count }
        return GLMMSiteData(family: family, structure: s, siteFactor: kind.siteFactor, p: p, x: x, y: y, n: n,
                            offset: (0..<rows).map { _ in Double.random(in: -0.2...0.2, using: &rng) },
                            levels: levels, levelCounts: counts, z: z)
    }

    static let families = [GLMFamily(.binomial, .logit), GLMFamily(.binomial, .probit), GLMFamily(.binomial, .cloglog),
                           GLMFamily(.poisson, .log)]

    /// θ generic, near 0 on every diagonal, with only the first diagonal near 0, and at 0 (the bound).
    static func thetas(_ s: CovarianceStructure) -> [[Double]] {
        let initial = s.initialTheta
        let generic = initial.enumerated().map { i, t in t == 1 ? 0.6 + 0.15 * Double(i) : 0.25 }
        let small = initial.map { $0 == 1 ? 1e-3 : 1e-4 }
        var mixed = generic
        if let k = initial.firstIndex(of: 1) { mixed[k] = 2e-3 }
        return [generic, small, mixed, initial.map { _ in 0 }]
    }

    /// Largest scaled error of the Hessian against 5-point differences of the gradient.
    func worstHessianError(_ site: GLMMSite, theta: [Double], beta: [Double], nAGQ: Int, label: String, step: Double = 3e-4) throws -> Double {
        let nt = theta.count, params = theta + beta, np = params.count
        let jet = try site.evaluate(theta: theta, beta: beta, order: 2, nAGQ: nAGQ)
        let hess = jet.hessian
        var worst = 0.0
        for k in 0..<np {
            let h = step * max(1, abs(params[k]))
            func g(_ d: Double) throws -> [Double] {
                var q = params; q[k] += d
                return try site.evaluate(theta: Array(q[0..<nt]), beta: Array(q[nt...]), order: 1, nAGQ: nAGQ).gradient
            }
            let g2 = try g(2 * h), g1 = try g(h), m1 = try g(-h), m2 = try g(-2 * h)
            for i in 0..<np {
                let fd = (-g2[i] + 8 * g1[i] - 8 * m1[i] + m2[i]) / (12 * h)
                let floor = 1e-3 * (abs(hess[i * np + i] * hess[k * np + k])).squareRoot()
                let e = abs(hess[i * np + k] - fd) / max(abs(fd), floor, 1e-300)
                worst = max(worst, e)
                XCTAssertLessThanOrEqual(e, 1e-6, "\(label) H[\(i),\(k)] exact \(hess[i * np + k]) differences \(fd)")
            }
        }
        return worst
    }

    func testLaplaceHessianMatchesDifferencesOfTheExactGradient() throws {
        var rng = SeededGenerator(seed: 4242)
        var worst = 0.0
        for family in Self.families {
            for kind in Kind.allCases {
                let data = Self.site(&rng, family: family, kind: kind, rows: 60, groups: 12, p: 3)
                let site = GLMMSite(data)
                site.modeTolerance = 1e-15   // modes to rounding: the differences then carry no PIRLS noise
                for theta in Self.thetas(kind.structure) {
                    let beta = [-0.2, 0.4, -0.1]
                    let e = try worstHessianError(site, theta: theta, beta: beta, nAGQ: 1, label: "\(family) \(kind) θ=\(theta)")
                    worst = max(worst, e)
                }
            }
        }
        print("Laplace: worst scaled Hessian error against differences of the exact gradient \(worst)")
    }

    func testQuadratureHessianMatchesDifferencesOfTheExactGradient() throws {
        var rng = SeededGenerator(seed: 99)
        var worst = 0.0
        for family in Self.families {
            for kind in [Kind.siteScalar, .groupsOnly] {
                let data = Self.site(&rng, family: family, kind: kind, rows: 80, groups: 16, p: 2)
                let site = GLMMSite(data)
                site.modeTolerance = 1e-15
                for nAGQ in [2, 7, 12] {
                    for theta in Self.thetas(kind.structure) {
                        let e = try worstHessianError(site, theta: theta, beta: [0.3, -0.5], nAGQ: nAGQ,
                                                      label: "AGQ \(nAGQ) \(family) \(kind) θ=\(theta)")
                        worst = max(worst, e)
                    }
                }
            }
        }
        print("AGQ: worst scaled Hessian error against differences of the exact gradient \(worst)")
    }

    /// The exact gradients (Laplace and AGQ) against 5-point differences of
    /// the objective, and the Laplace one against the adjoint gradient.
    func testExactGradientsMatchDifferencesOfTheObjective() throws {
        var rng = SeededGenerator(seed: 7)
        var worst = 0.0
        for family in Self.families {
            for kind in Kind.allCases {
                let data = Self.site(&rng, family: family, kind: kind, rows: 70, groups: 10, p: 2)
                let site = GLMMSite(data)
                let theta = Self.thetas(kind.structure)[0], beta = [0.1, -0.3]
                let params = theta + beta, nt = theta.count
                for nAGQ in kind.structure.terms.count == 1 && kind.structure.terms[0].dimension == 1 ? [1, 9] : [1] {
                    let jet = try site.evaluate(theta: theta, beta: beta, order: 2, nAGQ: nAGQ)
                    XCTAssertEqual(jet.value, try site.objective(theta: theta, beta: beta, nAGQ: nAGQ).value)
                    if nAGQ == 1 {
                        let adjoint = try site.laplaceValueAndGradient(theta: theta, beta: beta).gradient
                        for k in 0..<params.count {
                            XCTAssertEqual(jet.gradient[k], adjoint[k], accuracy: 1e-8 * max(1, abs(adjoint[k])), "\(family) \(kind) adjoint \(k)")
                        }
                    }
                    for k in 0..<params.count {
                        let h = 1e-4 * max(1, abs(params[k]))
                        func f(_ d: Double) throws -> Double {
                            var q = params; q[k] += d
                            return try site.objective(theta: Array(q[0..<nt]), beta: Array(q[nt...]), nAGQ: nAGQ).value
                        }
                        let fd = (try -f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
                        let e = abs(jet.gradient[k] - fd) / max(1, abs(fd))
                        worst = max(worst, e)
                        XCTAssertLessThanOrEqual(e, 1e-7, "\(family) \(kind) nAGQ \(nAGQ) gradient \(k): \(jet.gradient[k]) vs \(fd)")
                    }
                }
            }
        }
        print("gradients: worst error against differences of the objective \(worst)")
    }

    /// The closed-form η-derivatives of each row against differences.
    func testRowEtaDerivativesMatchDifferences() {
        for family in Self.families {
            for (y, n) in [(0.0, 1.0), (1.0, 1.0), (2.0, 3.0), (4.0, 1.0)] where family.distribution == .poisson || y <= n {
                for eta in [-2.5, -0.7, 0.0, 0.4, 1.8] {
                    let d = family.etaDerivatives(y: y, n: n, eta: eta)
                    let h = 1e-4
                    func at(_ e: Double) -> RowEtaDerivatives { family.etaDerivatives(y: y, n: n, eta: e) }
                    func diff(_ f: (RowEtaDerivatives) -> Double) -> Double {
                        (-f(at(eta + 2 * h)) + 8 * f(at(eta + h)) - 8 * f(at(eta - h)) + f(at(eta - 2 * h))) / (12 * h)
                    }
                    let label = "\(family) y=\(y) n=\(n) η=\(eta)"
                    XCTAssertEqual(d.d1, diff(\.dev), accuracy: 1e-8 * max(1, abs(d.d1)), label)
                    XCTAssertEqual(d.d2, diff(\.d1), accuracy: 1e-8 * max(1, abs(d.d2)), label)
                    XCTAssertEqual(d.d3, diff(\.d2), accuracy: 1e-8 * max(1, abs(d.d3)), label)
                    XCTAssertEqual(d.w1, diff(\.w), accuracy: 1e-8 * max(1, abs(d.w1)), label)
                    XCTAssertEqual(d.w2, diff(\.w1), accuracy: 1e-8 * max(1, abs(d.w2)), label)
                }
            }
        }
    }
}

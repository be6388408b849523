import XCTest
@testable import Math

/// A GLMM site whose within-site factors are nested, fitted in the
/// first-factor layout (largest factor per level, the rest dense) and in the
/// nested chain (every within-site factor level by level): the same
/// objective, exact gradient and Hessian in (θ, β), conditional modes and
/// site effects. Binomial and Poisson; two and three nested within-site
/// levels; a vector term on the middle level.
///
/// Tolerance: 1e-10 relative to each entry, floored at 1e-10 of the largest
/// entry of the same quantity (entries that are zero by symmetry have no
/// relative error of their own). Both layouts do the same arithmetic in a
/// different order, so the differences are rounding.
final class NestedGLMMChainTests: XCTestCase {
    enum Shape: CaseIterable {
        case episodesPatients, episodesPatientsWards, episodesPatientVectors
        /// Factors: 0 episodes, 1 patients, (2 wards), last the site.
        var structure: CovarianceStructure {
            switch self {
            case .episodesPatients:
                return CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1), .init(dimension: 1, factor: 2)])
            case .episodesPatientsWards:
                return CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1),
                                                   .init(dimension: 1, factor: 2), .init(dimension: 1, factor: 3)])
            case .episodesPatientVectors:
                return CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1), .init(dimension: 1, factor: 2)])
            }
        }
        var theta: [Double] {
            switch self {
            case .episodesPatients: return [0.7, 0.5, 0.3]
            case .episodesPatientsWards: return [0.6, 0.5, 0.4, 0.3]
            case .episodesPatientVectors: return [0.7, 0.6, 0.2, 0.4, 0.3]
            }
        }
    }

    /// Rows of one site: 40 patients in 4 wards, 1–3 episodes each, 1–4 rows per episode.
    static func site(_ rng: inout SeededGenerator, family: GLMFamily, shape: Shape, chain: Bool) -> GLMMSiteData {
        let s = shape.structure, nf = s.factorCount, siteFactor = nf - 1
        var x: [Double] = [], y: [Double] = [], n: [Double] = [], offset: [Double] = []
        var levels = [[Int]](repeating: [], count: nf), z = [[Double]](repeating: [], count: nf)
        var episode = 0
        for patient in 0..<40 {
            let ward = patient % 4, pe = Double.random(in: -0.6...0.6, using: &rng)
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let ee = Double.random(in: -0.5...0.5, using: &rng)
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let x1 = Double.random(in: -1...1, using: &rng)
                    x += [1, x1]
                    let trials = family.distribution == .binomial ? Double(Int.random(in: 1...3, using: &rng)) : 1
                    n.append(trials)
                    offset.append(Double.random(in: -0.2...0.2, using: &rng))
                    let codes = shape == .episodesPatientsWards ? [episode, patient, ward, 0] : [episode, patient, 0]
                    for f in 0..<nf {
                        levels[f].append(codes[f])
                        z[f].append(1)
                        if s.factorDimension(f) == 2 { z[f].append(x1) }
                    }
                    let eta = -0.2 + 0.5 * x1 + pe + ee
                    y.append(GLMMResponseDraw.draw(family, eta: eta, trials: trials, &rng))
                }
                episode += 1
            }
        }
        let counts = (0..<nf).map { Set(levels[$0]).count }
        let order = chain ? NestedChain.order(structure: s, levelCounts: counts, siteFactor: siteFactor, levels: levels) : nil
        if chain { XCTAssertNotNil(order) }
        return GLMMSiteData(family: family, structure: s, siteFactor: siteFactor, p: 2, x: x, y: y, n: n, offset: offset,
                            levels: levels, levelCounts: counts, z: z, chain: order)
    }

    func assertClose(_ a: [Double], _ b: [Double], _ label: String, file: StaticString = #filePath, line: UInt = #line) -> Double {
        XCTAssertEqual(a.count, b.count, label, file: file, line: line)
        let scale = zip(a, b).reduce(0) { max($0, abs($1.0), abs($1.1)) }
        var worst = 0.0
        for (i, (u, v)) in zip(a, b).enumerated() {
            let e = abs(u - v) / max(abs(u), 1e-10 * scale, 1e-300)
            worst = max(worst, e)
            XCTAssertLessThanOrEqual(e, 1e-10, "\(label)[\(i)]: \(u) vs \(v)", file: file, line: line)
        }
        return worst
    }

    func testChainAgreesWithTheFirstFactorLayout() throws {
        var worst = 0.0
        for family in [GLMFamily(.binomial, .logit), GLMFamily(.poisson, .log), GLMFamily(.binomial, .probit)] {
            for shape in Shape.allCases {
                var r1 = SeededGenerator(seed: 7), r2 = SeededGenerator(seed: 7)
                let dense = GLMMSite(Self.site(&r1, family: family, shape: shape, chain: false))
                let chained = GLMMSite(Self.site(&r2, family: family, shape: shape, chain: true))
                XCTAssertNotNil(chained.chainLayout)
                XCTAssertNil(dense.chainLayout)
                XCTAssertEqual(dense.dimension, chained.dimension)
                for s in [dense, chained] { s.modeTolerance = 1e-14 }
                let label = "\(family) \(shape)"
                let theta = shape.theta, beta = [-0.1, 0.4]
                let a = try dense.evaluate(theta: theta, beta: beta, order: 2), b = try chained.evaluate(theta: theta, beta: beta, order: 2)
                worst = max(worst, assertClose([a.value], [b.value], "\(label) value"))
                worst = max(worst, assertClose(a.gradient, b.gradient, "\(label) gradient"))
                worst = max(worst, assertClose(a.hessian, b.hessian, "\(label) Hessian"))
                // Modes per factor (the layouts order u differently), and the site's effects.
                let ma = try dense.objective(theta: theta, beta: beta).modes, mb = try chained.objective(theta: theta, beta: beta).modes
                for (f, (ea, eb)) in zip(dense.effects(ma, theta: theta), chained.effects(mb, theta: theta)).enumerated() {
                    worst = max(worst, assertClose(ea, eb, "\(label) effects of factor \(f)"))
                }
                let sa = try XCTUnwrap(try dense.siteEffects(theta: theta, beta: beta)), sb = try XCTUnwrap(try chained.siteEffects(theta: theta, beta: beta))
                worst = max(worst, assertClose(sa.effects, sb.effects, "\(label) site effects"))
                worst = max(worst, assertClose(sa.conditionalCovariance.data, sb.conditionalCovariance.data, "\(label) site covariance"))
            }
        }
        print("nested GLMM chain against the first-factor layout: worst relative difference \(worst)")
    }
}

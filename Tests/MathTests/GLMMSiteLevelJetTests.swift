import XCTest
@testable import Math

/// The site-level sums' jet (GLMMSiteLevelJet.swift) against the general
/// per-row jet pass it replaces for sites with only site-level effects:
/// value, gradient, Hessian and the modes' slopes, slot by slot, for the
/// canonical links, scalar and vector terms, θ generic, small and at 0.
/// A second factor (one level here, not the site's) takes the per-level
/// layout, so such a site keeps the general pass. Both are exact; they differ only in the order of
/// their sums, so the tolerance is 1e-10 relative (to max(1, |entry|)).
final class GLMMSiteLevelJetTests: XCTestCase {
    static let canonical = [GLMFamily(.binomial, .logit), GLMFamily(.poisson, .log)]

    /// `(1 | site)`, `(1 + x | site)` (site-level sums), and `(1 + x | site) + (1 | clinic)` with one clinic here (general pass).
    static let structures = [
        (CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]), true),
        (CovarianceStructure(terms: [.init(dimension: 2, factor: 0)]), true),
        (CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 1, factor: 1)]), false),
    ]

    static func site(_ rng: inout SeededGenerator, family: GLMFamily, structure s: CovarianceStructure, rows: Int, p: Int) -> GLMMSiteData {
        var x: [Double] = [], y: [Double] = [], n: [Double] = []
        var z = [[Double]](repeating: [], count: s.factorCount)
        for i in 0..<rows {
            x.append(1); for _ in 1..<p { x.append(Double.random(in: -1...1, using: &rng)) }
            let trials = family.distribution == .binomial ? Double(Int.random(in: 1...3, using: &rng)) : Double.random(in: 0.5...2.5, using: &rng)
            n.append(trials)
            for f in 0..<s.factorCount {
                // the clinic's z is not 1: a covariate-scaled effect
                z[f].append(f == 0 ? 1 : Double.random(in: 0.5...1.5, using: &rng))
                for _ in 1..<s.factorDimension(f) { z[f].append(Double.random(in: -1...1, using: &rng)) }
            }
            let eta = -0.3 + 0.5 * x[i * p + 1]
            y.append(GLMMResponseDraw.draw(family, eta: eta, trials: trials, &rng))
        }
        return GLMMSiteData(family: family, structure: s, siteFactor: 0, p: p, x: x, y: y, n: n,
                            offset: (0..<rows).map { _ in Double.random(in: -0.2...0.2, using: &rng) },
                            levels: (0..<s.factorCount).map { _ in [Int](repeating: 0, count: rows) },
                            levelCounts: [Int](repeating: 1, count: s.factorCount), z: z)
    }

    func testSiteLevelSumsGiveTheGeneralPassJet() throws {
        var rng = SeededGenerator(seed: 2026)
        var worst = 0.0, checked = 0
        for family in Self.canonical {
            for (s, siteLevel) in Self.structures {
                let site = GLMMSite(Self.site(&rng, family: family, structure: s, rows: 90, p: 3))
                XCTAssertEqual(site.usesSiteLevelJet(nAGQ: 1), siteLevel)
                XCTAssertFalse(site.usesSiteLevelJet(nAGQ: 2))
                for theta in GLMMExactDerivativeTests.thetas(s) {
                    let beta = [-0.2, 0.4, -0.1]
                    let m = try site.modes(theta: theta, beta: beta, start: nil)
                    let value = try site.objectiveValue(theta: theta, modes: m, nAGQ: 1)
                    for order in [1, 2] {
                        var fastSlopes: [Double] = [], generalSlopes: [Double] = []
                        let fast = try site.exactJet(theta: theta, beta: beta, modes: m, order: order, nAGQ: 1, value: value,
                                                     modeSlopes: { fastSlopes = $0 })
                        let general = try site.exactJet(theta: theta, beta: beta, modes: m, order: order, nAGQ: 1, value: value,
                                                        modeSlopes: { generalSlopes = $0 }, siteLevelSums: false)
                        let label = "\(family) \(s.terms.map(\.dimension)) θ=\(theta) order \(order)"
                        XCTAssertEqual(fast.storage.count, general.storage.count, label)
                        for (k, (a, b)) in zip(fast.storage, general.storage).enumerated() {
                            let e = abs(a - b) / max(1, abs(b))
                            worst = max(worst, e); checked += 1
                            XCTAssertLessThanOrEqual(e, 1e-10, "\(label) slot \(k): sums \(a), per-row pass \(b)")
                        }
                        XCTAssertEqual(fastSlopes.count, generalSlopes.count, label)
                        for (a, b) in zip(fastSlopes, generalSlopes) {
                            XCTAssertLessThanOrEqual(abs(a - b) / max(1, abs(b)), 1e-10, "\(label) mode slope")
                        }
                    }
                }
            }
        }
        print("site-level sums: worst relative difference from the per-row jet pass \(worst) over \(checked) slots")
    }
}

/// PIRLS keeps one set of per-row arrays and lets each trial point write
/// over it (GLMMSite.modes): whatever the trials rejected on the way, the
/// modes' rows are those of a fresh pass at the modes' u, to the bit.
final class PIRLSOneRowSetTests: XCTestCase {
    func testModesRowsAreThoseOfAFreshPassAtTheirModes() throws {
        var rng = SeededGenerator(seed: 77)
        var starts = 0
        for family in GLMMSiteLevelJetTests.canonical {
            for (s, _) in GLMMSiteLevelJetTests.structures {
                let site = GLMMSite(GLMMSiteLevelJetTests.site(&rng, family: family, structure: s, rows: 120, p: 3))
                let q = site.dimension
                // From 0, and from far away so that full steps overshoot and are halved.
                for start in [nil, [Double](repeating: 8, count: q), [Double](repeating: -12, count: q)] {
                    for theta in GLMMExactDerivativeTests.thetas(s) {
                        let beta = [-0.2, 0.4, -0.1]
                        let m = try site.modes(theta: theta, beta: beta, start: start)
                        let fixed = GLMFamily.linearPredictor(x: site.data.x, p: site.data.p, beta: beta, offset: site.data.offset)
                        var fresh = PIRLSRows(rows: site.data.rows, tailDimension: 0)
                        site.rowPass(m.u, theta: theta, fixed: fixed, tailOffsets: nil, into: &fresh)
                        let label = "\(family) \(s.terms.map(\.dimension)) θ=\(theta) start \(start?.first ?? 0)"
                        XCTAssertEqual(m.eta.map(\.bitPattern), fresh.eta.map(\.bitPattern), label)
                        XCTAssertEqual(m.weights.map(\.bitPattern), fresh.weights.map(\.bitPattern), label)
                        XCTAssertEqual(m.rows.mu.map(\.bitPattern), fresh.mu.map(\.bitPattern), label)
                        XCTAssertEqual(m.rows.muEta.map(\.bitPattern), fresh.muEta.map(\.bitPattern), label)
                        XCTAssertEqual(m.rows.deviance.map(\.bitPattern), fresh.deviance.map(\.bitPattern), label)
                        XCTAssertEqual(m.penalizedDeviance, fresh.total + m.u.reduce(0) { $0 + $1 * $1 }, label)
                        starts += 1
                    }
                }
            }
        }
        XCTAssertGreaterThan(starts, 20)
    }
}

import XCTest
@testable import Math

/// A reproducible generator (SplitMix64) so random designs are the same on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

/// A random site: rows with fixed effects, response, and factor levels with
/// random-effects values, plus a straightforward dense implementation of the
/// site's contribution to compare the blocked one against.
struct RandomSite {
    var structure: CovarianceStructure
    var siteFactor: Int?
    var levelCounts: [Int]
    var w: [[Double]] = []          // per row: x..., y
    var levels: [[Int]] = []        // per row: level per factor
    var z: [[[Double]]] = []        // per row, per factor: r_f values

    init(structure: CovarianceStructure, siteFactor: Int?, levelCounts: [Int], rows: Int, p: Int,
         nested: Bool, rng: inout SeededGenerator) {
        self.structure = structure; self.siteFactor = siteFactor; self.levelCounts = levelCounts
        for i in 0..<rows {
            var row = [1.0]
            for _ in 1..<p { row.append(Double.random(in: -2...2, using: &rng)) }
            row.append(Double.random(in: -5...5, using: &rng))
            w.append(row)
            var lv: [Int] = []
            for f in 0..<structure.factorCount {
                if f == siteFactor { lv.append(0) }
                else if nested && f > 0 && lv.count > 0 && levelCounts[f] < levelCounts[0] {
                    // factor f nested in factor 0: level determined by factor 0's level
                    lv.append(lv[0] % levelCounts[f])
                } else {
                    lv.append(i < levelCounts[f] ? i : Int.random(in: 0..<levelCounts[f], using: &rng))
                }
            }
            levels.append(lv)
            var zr: [[Double]] = []
            for f in 0..<structure.factorCount {
                let r = structure.factorDimension(f)
                var v = [1.0]
                for _ in 1..<max(r, 1) { v.append(Double.random(in: -1...1, using: &rng)) }
                zr.append(Array(v.prefix(r)))
            }
            z.append(zr)
        }
    }

    var blocks: SiteBlocks {
        var b = SiteBlocksBuilder(structure: structure, width: w[0].count, levelCounts: levelCounts, siteFactor: siteFactor)
        for i in 0..<w.count { b.add(w: w[i], levels: levels[i], z: z[i]) }
        return b.finish()
    }

    /// Dense (S, ℓ) at θ.
    func dense(theta: [Double]) throws -> (Matrix, Double) {
        let nf = structure.factorCount
        var offsets: [Int] = [], q = 0
        for f in 0..<nf { offsets.append(q); q += levelCounts[f] * structure.factorDimension(f) }
        let n = w.count, width = w[0].count
        var zm = Matrix(rows: n, cols: q)
        for i in 0..<n { for f in 0..<nf {
            let r = structure.factorDimension(f)
            for a in 0..<r { zm[i, offsets[f] + levels[i][f] * r + a] = z[i][f][a] }
        } }
        var lambda = Matrix(rows: q, cols: q)
        for f in 0..<nf {
            let t = structure.factorMatrix(f, theta: theta)
            let r = t.rows
            for l in 0..<levelCounts[f] { for j in 0..<r { for i in 0..<r { lambda[offsets[f] + l * r + i, offsets[f] + l * r + j] = t[i, j] } } }
        }
        var wm = Matrix(rows: n, cols: width)
        for i in 0..<n { for j in 0..<width { wm[i, j] = w[i][j] } }
        let zl = Dense.multiply(zm, lambda)
        var b = Dense.multiply(Dense.transpose(zl), zl)
        for i in 0..<q { b[i, i] += 1 }
        let l = try Dense.cholesky(b)
        var logdet = 0.0
        for i in 0..<q { logdet += 2 * log(l[i, i]) }
        let c = Dense.multiply(Dense.transpose(zl), wm)
        var s = Dense.multiply(Dense.transpose(wm), wm)
        for j in 0..<width {
            let rj = Dense.solveLower(l, (0..<q).map { c[$0, j] })
            for k in 0..<width {
                let rk = Dense.solveLower(l, (0..<q).map { c[$0, k] })
                s[j, k] -= zip(rj, rk).reduce(0) { $0 + $1.0 * $1.1 }
            }
        }
        return (s, logdet)
    }
}

final class SiteContributionTests: XCTestCase {
    /// Model shapes: (terms, site factor, level counts, nested)
    func designs() -> [(CovarianceStructure, Int?, [Int], Bool)] {
        [
            // (1 | site)
            (CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]), 0, [1], false),
            // (1 + x | site)
            (CovarianceStructure(terms: [.init(dimension: 2, factor: 0)]), 0, [1], false),
            // (1 | patient) + (1 | site)
            (CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]), 1, [17, 1], false),
            // (1 + x | patient) + (1 | ward) + (1 + x | site), wards nested in patients' numbering
            (CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 1, factor: 1), .init(dimension: 2, factor: 2)]), 2, [23, 4, 1], true),
            // (1 | g) + (0 + x | g) + (1 | h) crossed within site, no site term
            (CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]), nil, [11, 5], false),
        ]
    }

    func randomTheta(_ s: CovarianceStructure, _ rng: inout SeededGenerator) -> [Double] {
        zip(s.initialTheta, s.lowerBounds).map { init0, lb in
            lb == 0 ? Double.random(in: 0.2...1.5, using: &rng) : Double.random(in: -0.5...0.5, using: &rng)
        }
    }

    func testBlockedContributionEqualsDenseImplementation() throws {
        var rng = SeededGenerator(seed: 42)
        for (structure, sf, counts, nested) in designs() {
            for p in [1, 3] {
                let site = RandomSite(structure: structure, siteFactor: sf, levelCounts: counts, rows: 80, p: p, nested: nested, rng: &rng)
                let theta = randomTheta(structure, &rng)
                let blocked = try LMMSite.evaluate(site.blocks, structure: structure, theta: theta, order: 0)
                let (s, ld) = try site.dense(theta: theta)
                XCTAssertEqual(blocked.logDet.value, ld, accuracy: 1e-10 * max(1, abs(ld)))
                let bs = blocked.schur.valueMatrix
                for k in 0..<s.data.count {
                    XCTAssertEqual(bs.data[k], s.data[k], accuracy: 1e-10 * max(1, abs(s.data[k])), "design \(counts) p=\(p) entry \(k)")
                }
            }
        }
    }

    func testDerivativesMatchFiniteDifferences() throws {
        var rng = SeededGenerator(seed: 7)
        for (structure, sf, counts, nested) in designs() {
            let site = RandomSite(structure: structure, siteFactor: sf, levelCounts: counts, rows: 60, p: 2, nested: nested, rng: &rng)
            let blocks = site.blocks
            let theta = randomTheta(structure, &rng)
            let m = theta.count
            let jet = try LMMSite.evaluate(blocks, structure: structure, theta: theta, order: 2)
            let h = 1e-5
            for i in 0..<m {
                var tp = theta, tm = theta
                tp[i] += h; tm[i] -= h
                let fp = try LMMSite.evaluate(blocks, structure: structure, theta: tp, order: 1)
                let fm = try LMMSite.evaluate(blocks, structure: structure, theta: tm, order: 1)
                // first derivative of ℓ and of every Schur entry
                let dl = (fp.logDet.value - fm.logDet.value) / (2 * h)
                XCTAssertEqual(jet.logDet.gradient[i], dl, accuracy: 1e-6 * max(1, abs(dl)))
                let d1 = jet.schur.firstDerivative(i)
                let vp = fp.schur.valueMatrix, vm = fm.schur.valueMatrix
                for k in 0..<d1.data.count {
                    let fd = (vp.data[k] - vm.data[k]) / (2 * h)
                    XCTAssertEqual(d1.data[k], fd, accuracy: 1e-6 * max(1, abs(fd)))
                }
                // second derivatives from differences of exact first derivatives
                for j in 0..<m {
                    let fd2 = (fp.logDet.gradient[j] - fm.logDet.gradient[j]) / (2 * h)
                    XCTAssertEqual(jet.logDet.hessian[i * m + j], fd2, accuracy: 1e-5 * max(1, abs(fd2)))
                    let d2 = jet.schur.secondDerivative(i, j)
                    let gp = fp.schur.firstDerivative(j), gm = fm.schur.firstDerivative(j)
                    for k in 0..<d2.data.count {
                        let fd = (gp.data[k] - gm.data[k]) / (2 * h)
                        XCTAssertEqual(d2.data[k], fd, accuracy: 1e-5 * max(1, abs(fd)))
                    }
                }
            }
        }
    }

    func testSumOverSitesEqualsOneSiteWithAllRows() throws {
        // Site-grouped factor: blocks of several sites summed vs one site each; within-site factor:
        // the pooled criterion is the sum of the sites' parts.
        var rng = SeededGenerator(seed: 99)
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 2, factor: 1)])
        let sites = (0..<4).map { _ in RandomSite(structure: structure, siteFactor: 1, levelCounts: [9, 1], rows: 40, p: 2, nested: false, rng: &rng) }
        let theta = [0.7, 1.1, -0.3, 0.4]
        let parts = try sites.map { try LMMSite.evaluate($0.blocks, structure: structure, theta: theta, order: 2) }
        let totals = LMMTotals(summing: parts)
        XCTAssertEqual(totals.rows, 160)
        var ld = 0.0
        for s in sites { ld += try s.dense(theta: theta).1 }
        XCTAssertEqual(totals.logDet.value, ld, accuracy: 1e-10 * abs(ld))
        // the profiled criterion's derivatives match finite differences
        let crit = try ProfiledCriterion.evaluate(totals, method: .reml)
        let h = 1e-5
        for i in 0..<theta.count {
            var tp = theta, tm = theta
            tp[i] += h; tm[i] -= h
            let fp = try ProfiledCriterion.evaluate(LMMTotals(summing: sites.map { try LMMSite.evaluate($0.blocks, structure: structure, theta: tp, order: 0) }), method: .reml)
            let fm = try ProfiledCriterion.evaluate(LMMTotals(summing: sites.map { try LMMSite.evaluate($0.blocks, structure: structure, theta: tm, order: 0) }), method: .reml)
            let fd = (fp.value - fm.value) / (2 * h)
            XCTAssertEqual(crit.gradient[i], fd, accuracy: 1e-6 * max(1, abs(fd)))
        }

        // The one-site case: all 160 rows at one site, the site becoming an
        // ordinary 4-level factor and the patients numbered apart (site k's
        // patient l is level 9k + l). Z is then block diagonal over the
        // former sites, so its Schur complement and log-determinant (with
        // their θ-derivatives) are exactly the sums of the sites' parts; only
        // the order of the additions differs.
        var pooled = RandomSite(structure: structure, siteFactor: nil, levelCounts: [36, 4], rows: 0, p: 2,
                                nested: false, rng: &rng)
        for (k, s) in sites.enumerated() {
            pooled.w += s.w
            pooled.levels += s.levels.map { [9 * k + $0[0], k] }
            pooled.z += s.z
        }
        XCTAssertEqual(pooled.w.count, 160)
        XCTAssertEqual(Set(pooled.levels.map { $0[0] }).count, 36, "every patient of every site occurs")
        let one = try LMMSite.evaluate(pooled.blocks, structure: structure, theta: theta, order: 2)
        XCTAssertEqual(one.rows, totals.rows)
        XCTAssertEqual(one.schur.space, totals.schur.space)
        XCTAssertEqual([one.schur.rows, one.schur.cols], [totals.schur.rows, totals.schur.cols])
        // Tolerance 1e-10 relative, floored at the largest entry of the same
        // part (value, gradient or Hessian) of the matrix: both sides add up
        // the same 160 rows' products in another order, so each differs from
        // the exact sum by a few hundred ulps of the summands at most
        // (160 · 2.2e-16 ≈ 4e-14 relative to the largest term), and an entry
        // that is small by cancellation carries the absolute error of the
        // large terms it was summed from.
        let width = one.schur.space.width
        func kind(_ k: Int) -> String { k == 0 ? "value" : (k <= theta.count ? "gradient" : "Hessian") }
        var worst = 0.0
        for part in Set((0..<width).map(kind)) {
            let slots = (0..<width).filter { kind($0) == part }
            let cells = one.schur.rows * one.schur.cols
            let indices = (0..<cells).flatMap { c in slots.map { c * width + $0 } }
            let scale = indices.map { abs(totals.schur.storage[$0]) }.max()!
            for k in indices {
                let a = one.schur.storage[k], b = totals.schur.storage[k]
                let e = abs(a - b) / max(abs(b), scale)
                worst = max(worst, e)
                XCTAssertLessThanOrEqual(e, 1e-10, "Schur \(part) storage[\(k)]: one site \(a), sum over sites \(b)")
            }
        }
        for k in 0..<width {
            let a = one.logDet.storage[k], b = totals.logDet.storage[k]
            let scale = (0..<width).filter { kind($0) == kind(k) }.map { abs(totals.logDet.storage[$0]) }.max()!
            let e = abs(a - b) / max(abs(b), scale)
            worst = max(worst, e)
            XCTAssertLessThanOrEqual(e, 1e-10, "log-determinant \(kind(k)) [\(k)]: one site \(a), sum over sites \(b)")
        }
        XCTAssertEqual(one.logDet.value, ld, accuracy: 1e-10 * abs(ld), "the dense log-determinant of the pooled rows")
        // And so the profiled criteria (REML and ML) with their derivatives.
        for method in [EstimationMethod.reml, .ml] {
            let split = try ProfiledCriterion.evaluate(totals, method: method)
            let single = try ProfiledCriterion.evaluate(LMMTotals(summing: [one]), method: method)
            XCTAssertEqual(single.value, split.value, accuracy: 1e-10 * abs(split.value), "\(method) criterion")
            let gscale = split.gradient.map(abs).max()!, hscale = split.hessian.map(abs).max()!
            for (a, b) in zip(single.gradient, split.gradient) { XCTAssertEqual(a, b, accuracy: 1e-10 * max(abs(b), gscale), "\(method) gradient") }
            for (a, b) in zip(single.hessian, split.hessian) { XCTAssertEqual(a, b, accuracy: 1e-10 * max(abs(b), hscale), "\(method) Hessian") }
        }
        print("sum over 4 sites vs one site with all 160 rows: worst scaled difference \(worst)")
    }
}

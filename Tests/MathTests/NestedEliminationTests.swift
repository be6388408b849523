import XCTest
@testable import Math

/// NestedElimination (nested factors eliminated level by level) against the
/// dense layout (largest factor by levels, every other factor in the dense
/// tail) on random nested designs: value, gradient and Hessian jets of the
/// Schur complement and of log|L|² agree to 1e-12 relative to the largest
/// entry of each jet slot (rounding only: the two orders sum the same terms).
final class NestedEliminationTests: XCTestCase {
    /// A random nested design: `sizes` levels per parent, finest last
    /// (e.g. [patients, episodes per patient, visits per episode] with
    /// visits the rows), each chain factor with its term dimension.
    struct Design {
        var structure: CovarianceStructure
        var siteFactor: Int?
        var levelCounts: [Int]
        var w: [[Double]]
        var levels: [[Int]]
        var z: [[[Double]]]
    }

    /// `factorOf[k]`: the structure's factor index of nesting depth k
    /// (0 = outermost within-site factor); the site factor, if any, is the last index.
    static func design(dims: [Int], factorOf: [Int], site: Int?, siteDim: Int, p: Int, roots: Int, seed: UInt64) -> Design {
        var rng = SeededGenerator(seed: seed)
        let nf = dims.count + (site == nil ? 0 : 1)
        var terms: [CovarianceStructure.Term] = []
        var dimOf = [Int](repeating: 0, count: nf)
        for (k, f) in factorOf.enumerated() { dimOf[f] = dims[k] }
        if let s = site { dimOf[s] = siteDim }
        for f in 0..<nf { terms.append(.init(dimension: dimOf[f], factor: f)) }
        let structure = CovarianceStructure(terms: terms)
        var counts = [Int](repeating: 0, count: nf)
        if let s = site { counts[s] = 1 }
        var w = [[Double]](repeating: [], count: p + 1)
        var levels = [[Int]](repeating: [], count: nf)
        var z = (0..<nf).map { [[Double]](repeating: [], count: dimOf[$0]) }
        // Depth-first: each level of depth k has 1–3 children at depth k+1; leaves get 1–3 rows.
        func grow(_ k: Int, _ path: [Int]) {
            let f = factorOf[k]
            let l = counts[f]; counts[f] += 1
            let here = path + [l]
            if k + 1 < dims.count {
                for _ in 0..<Int.random(in: 1...3, using: &rng) { grow(k + 1, here) }
                return
            }
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                w[0].append(1)
                for j in 1..<p { w[j].append(Double.random(in: -2...2, using: &rng)) }
                w[p].append(Double.random(in: -5...5, using: &rng))
                for (d, lv) in here.enumerated() { levels[factorOf[d]].append(lv) }
                if let s = site { levels[s].append(0) }
                for f in 0..<nf {
                    z[f][0].append(1)
                    for a in 1..<max(dimOf[f], 1) { z[f][a].append(Double.random(in: -1...1, using: &rng)) }
                }
            }
        }
        for _ in 0..<roots { grow(0, []) }
        return Design(structure: structure, siteFactor: site, levelCounts: counts, w: w, levels: levels, z: z)
    }

    func dense(_ d: Design) -> SiteBlocks {
        var b = SiteBlocksBuilder(structure: d.structure, width: d.w.count, levelCounts: d.levelCounts, siteFactor: d.siteFactor)
        b.addColumns(w: d.w, levels: d.levels, z: d.z)
        return b.finish()
    }

    func nested(_ d: Design) throws -> SiteBlocks {
        let chain = try XCTUnwrap(NestedChain.order(structure: d.structure, levelCounts: d.levelCounts,
                                                   siteFactor: d.siteFactor, levels: d.levels))
        return SiteBlocks.nested(structure: d.structure, width: d.w.count, levelCounts: d.levelCounts,
                                 siteFactor: d.siteFactor, chain: chain, w: d.w, levels: d.levels, z: d.z)
    }

    func randomTheta(_ s: CovarianceStructure, _ seed: UInt64) -> [Double] {
        var rng = SeededGenerator(seed: seed)
        return s.lowerBounds.map { lb in lb == 0 ? Double.random(in: 0.2...1.5, using: &rng) : Double.random(in: -0.5...0.5, using: &rng) }
    }

    /// Every jet slot (value, each first and second derivative) compared
    /// relative to that slot's largest entry, so small derivatives are held
    /// to the same relative accuracy as the values.
    static func assertClose(_ a: [Double], _ b: [Double], width: Int, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        var worst = 0.0
        for q in 0..<width {
            let slot = stride(from: q, to: b.count, by: width)
            let scale = slot.map { abs(b[$0]) }.max() ?? 0
            guard scale > 0 else { for k in slot { XCTAssertEqual(a[k], 0, "\(what) slot \(q)", file: file, line: line) }; continue }
            for k in slot { worst = max(worst, abs(a[k] - b[k]) / scale) }
        }
        print("\(what): largest difference \(worst) of the slot's largest entry")
        XCTAssertLessThanOrEqual(worst, 1e-12, "\(what): largest difference \(worst) of the slot's largest entry", file: file, line: line)
    }

    func check(_ d: Design, _ what: String) throws {
        let db = dense(d), nb = try nested(d)
        XCTAssertNotNil(nb.nested)
        XCTAssertNil(nb.first)
        for seed in [UInt64(1), 2] {
            let theta = randomTheta(d.structure, seed)
            for order in [0, 2] {
                let a = try LMMSite.evaluate(nb, structure: d.structure, theta: theta, order: order)
                let b = try LMMSite.evaluate(db, structure: d.structure, theta: theta, order: order)
                Self.assertClose(a.schur.storage, b.schur.storage, width: a.schur.space.width, "\(what) Schur complement, order \(order)")
                Self.assertClose(a.logDet.storage, b.logDet.storage, width: a.logDet.space.width, "\(what) log|L|², order \(order)")
                XCTAssertEqual(a.rows, b.rows)
            }
        }
    }

    func testTwoNestedLevelsScalar() throws {
        // (1 | site/patient/episode) without the site term, patients' factor listed second.
        try check(Self.design(dims: [1, 1], factorOf: [1, 0], site: nil, siteDim: 0, p: 2, roots: 25, seed: 11), "2 levels scalar")
        try check(Self.design(dims: [1, 1], factorOf: [0, 1], site: 2, siteDim: 1, p: 1, roots: 30, seed: 12), "2 levels + site scalar")
    }

    func testTwoNestedLevelsVector() throws {
        try check(Self.design(dims: [2, 2], factorOf: [0, 1], site: 2, siteDim: 2, p: 3, roots: 20, seed: 13), "2 levels vector")
        try check(Self.design(dims: [2, 1], factorOf: [1, 0], site: nil, siteDim: 0, p: 2, roots: 20, seed: 14), "2 levels mixed")
    }

    func testThreeNestedLevelsScalar() throws {
        try check(Self.design(dims: [1, 1, 1], factorOf: [0, 1, 2], site: 3, siteDim: 1, p: 2, roots: 15, seed: 15), "3 levels + site scalar")
        try check(Self.design(dims: [1, 1, 1], factorOf: [2, 0, 1], site: nil, siteDim: 0, p: 1, roots: 15, seed: 16), "3 levels scalar")
    }

    func testThreeNestedLevelsVector() throws {
        try check(Self.design(dims: [2, 1, 2], factorOf: [0, 1, 2], site: 3, siteDim: 2, p: 3, roots: 10, seed: 17), "3 levels vector")
        try check(Self.design(dims: [1, 2, 2], factorOf: [1, 2, 0], site: 3, siteDim: 1, p: 2, roots: 10, seed: 18), "3 levels vector, reordered")
    }

    /// Crossed within-site factors are not a chain: the site keeps the dense layout (or refuses).
    func testCrossedFactorsAreNotAChain() {
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)])
        // Level 0 of factor 0 meets levels 0 and 1 of factor 1.
        let levels = [[0, 0, 1, 2], [0, 1, 1, 0]]
        XCTAssertNil(NestedChain.order(structure: structure, levelCounts: [3, 2], siteFactor: nil, levels: levels))
        XCTAssertEqual(NestedChain.order(structure: structure, levelCounts: [3, 2], siteFactor: nil, levels: [[0, 1, 1, 2], [0, 1, 1, 0]]), [0, 1])
    }
}

import XCTest
@testable import Math

/// Crossed factors beside within-site terms (wards in hospitals), level by
/// level: each site's Schur complement is A_k − V_kV_kᵀ (CrossedLowRank),
/// and eliminating the crossed levels one by one with the sites' own
/// effects as identity-block columns (CrossedLevelElimination, `virtual`)
/// gives the dense path's totals (value, gradient, Hessian entry by entry),
/// modes and covariance.
final class CrossedLowRankTests: XCTestCase {
    typealias Generator = CrossedLevelEliminationTests.Generator

    struct Case {
        var name: String
        /// Local factors: 0 = ward (within site), 1 = site; then the crossed ones.
        var structure: CovarianceStructure
        var local: CovarianceStructure
        var localTheta: [Int]
        var crossed: [(factor: Int, levels: Int)]
        var wardSlope: Bool
        var theta: [Double]
    }

    static let cases: [Case] = [
        Case(name: "(1 | site/ward) + (1 | surgeon)",
             structure: CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1), .init(dimension: 1, factor: 2)]),
             local: CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]), localTheta: [0, 1],
             crossed: [(2, 80)], wardSlope: false, theta: [0.6, 0.9, 1.2]),
        Case(name: "(1 + x | site:ward) + (1 | site) + (1 + x | surgeon) + (1 | year)",
             structure: CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 1, factor: 1),
                                                    .init(dimension: 2, factor: 2), .init(dimension: 1, factor: 3)]),
             local: CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 1, factor: 1)]), localTheta: [0, 1, 2, 3],
             crossed: [(2, 40), (3, 6)], wardSlope: true, theta: [0.5, 0.2, 0.3, 0.8, 1.1, -0.3, 0.4, 0.7]),
    ]

    /// Sites with 2-6 wards each and a few levels of each crossed factor;
    /// rows: [crossed z columns, 1, x, y]; A_k is the blocks' ww.
    func sites(_ c: Case, sites: Int, seed: UInt64) -> (blocks: [SiteBlocks], layout: CrossedLayout) {
        var g = Generator(state: seed)
        var present: [[[Int]]] = [], blocks: [SiteBlocks] = []
        let dims = c.crossed.map { c.structure.factorDimension($0.factor) }
        for _ in 0..<sites {
            let levels: [[Int]] = c.crossed.map { f in
                let k = max(1, min(f.levels, 2 + Int(g.next() * Double(min(8, f.levels)))))
                var s = Set<Int>()
                while s.count < k { s.insert(Int(g.next() * Double(f.levels))) }
                return s.sorted()
            }
            present.append(levels)
            let lead = zip(levels, dims).reduce(0) { $0 + $1.0.count * $1.1 }, width = lead + 3
            let wards = 2 + Int(g.next() * 5)
            var builder = SiteBlocksBuilder(structure: c.local, width: width, levelCounts: [wards, 1], siteFactor: 1)
            for i in 0..<(50 + Int(g.next() * 50)) {
                let x = g.next() * 2 - 1
                var w = [Double](repeating: 0, count: width)
                var o = 0
                for (f, lv) in levels.enumerated() {
                    let at = Int(g.next() * Double(lv.count))
                    let z = dims[f] == 1 ? [1.0] : [1.0, x]
                    for a in 0..<dims[f] { w[o + at * dims[f] + a] = z[a] }
                    o += lv.count * dims[f]
                }
                w[lead] = 1; w[lead + 1] = x; w[lead + 2] = 1 + 0.5 * x + g.next() * 3
                builder.add(w: w, levels: [i % wards, 0], z: [c.wardSlope ? [1, x] : [1], [1]])
            }
            blocks.append(builder.finish())
        }
        return (blocks, CrossedLayout(structure: c.structure, crossed: c.crossed, presentLevels: present, localTheta: c.localTheta))
    }

    /// A_k alone: the sums without the site's own effects.
    static func crossedSums(_ b: SiteBlocks) -> SiteBlocks {
        SiteBlocks(width: b.width, rows: b.rows, first: nil, siteFactor: nil, tail: [], tailDimension: 0, tt: [], tw: [], ww: b.ww)
    }

    func testSameTotalsAndModesAsTheDenseElimination() throws {
        for c in Self.cases {
            let (blocks, layout) = sites(c, sites: 10, seed: 29)
            let localTheta = c.localTheta.map { c.theta[$0] }
            let widths = try blocks.map { try XCTUnwrap(LMMSite.lowRank($0, structure: c.local, theta: localTheta, order: 0)).factor.rows }
            let sums = try XCTUnwrap(CrossedLevelElimination.sums(crossedSums: blocks.map(Self.crossedSums), virtualWidths: widths, layout: layout,
                                                                  structure: c.structure, localStructure: c.local))
            for order in [0, 2] {
                let parts = try blocks.map { try LMMSite.evaluate($0, structure: c.local, theta: localTheta, order: order) }
                let low = try blocks.map { try XCTUnwrap(LMMSite.lowRank($0, structure: c.local, theta: localTheta, order: order)) }
                // The site's own identity: A_k − V_kV_kᵀ is its Schur complement.
                for (p, v) in zip(parts, low) {
                    let s = v.schur(sums: blocks[parts.firstIndex(of: p)!].ww)
                    let scale = p.schur.storage.map(abs).max()!
                    for (a, b) in zip(s.schur.storage, p.schur.storage) { XCTAssertEqual(a, b, accuracy: 1e-12 * scale, "\(c.name): A − VVᵀ") }
                    XCTAssertEqual(s.logDet.storage, p.logDet.storage)
                }
                let dense = try CrossedElimination.combine(parts, layout: layout, structure: c.structure, theta: c.theta, order: order)
                let level = try CrossedLevelElimination.combine(sums, virtual: low, layout: layout, structure: c.structure,
                                                                localStructure: c.local, theta: c.theta, order: order)
                XCTAssertEqual(level.totals.rows, dense.totals.rows)
                let scale = dense.totals.schur.storage.map(abs).max()!
                for (a, b) in zip(level.totals.schur.storage, dense.totals.schur.storage) {
                    XCTAssertEqual(a, b, accuracy: 1e-10 * scale, "\(c.name) order \(order): Schur complement")
                }
                for (a, b) in zip(level.totals.logDet.storage, dense.totals.logDet.storage) {
                    XCTAssertEqual(a, b, accuracy: 1e-10 * max(1, abs(dense.totals.logDet.value)), "\(c.name) order \(order): log-determinant")
                }
                if order == 0 {
                    let beta = [1.9, 0.45]
                    let d = CrossedElimination.modes(dense, layout: layout, structure: c.structure, theta: c.theta, beta: beta)
                    let l = CrossedLevelElimination.modes(level, layout: layout, structure: c.structure, theta: c.theta, beta: beta)
                    for (a, b) in zip(l.effects, d.effects) { XCTAssertEqual(a, b, accuracy: 1e-10, "\(c.name): modes") }
                    for (a, b) in zip(l.covariance.data, d.covariance.data) { XCTAssertEqual(a, b, accuracy: 1e-11, "\(c.name): covariance") }
                }
            }
        }
    }
}

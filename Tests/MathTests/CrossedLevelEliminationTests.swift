import XCTest
@testable import Math

/// The level-by-level elimination of the largest crossed factor
/// (CrossedLevelElimination) against the dense one (CrossedElimination, the
/// sites' own effects eliminated first): the same pooled totals, value,
/// gradient and Hessian, and the same conditional modes and covariance, on
/// simulated sites where every crossed level occurs at a few of them.
final class CrossedLevelEliminationTests: XCTestCase {
    /// A deterministic generator (SplitMix64), so the sums never change.
    struct Generator {
        var state: UInt64
        mutating func next() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
        }
    }

    struct Case {
        var name: String
        /// The whole model: site-grouped terms first (factor 0), then the crossed factors.
        var structure: CovarianceStructure
        var local: CovarianceStructure
        var localTheta: [Int]
        /// Crossed factors: (factor index, levels, r).
        var crossed: [(factor: Int, levels: Int)]
        var theta: [Double]
    }

    /// Sites' θ-free sums: each site has a few levels of every crossed factor;
    /// rows carry [crossed z columns at the site's levels, 1, x, y].
    func sites(_ c: Case, sites: Int, seed: UInt64) -> (blocks: [SiteBlocks], layout: CrossedLayout) {
        var g = Generator(state: seed)
        var present: [[[Int]]] = []
        var blocks: [SiteBlocks] = []
        let localDim = c.local.factorCount > 0 ? c.local.factorDimension(0) : 0
        for _ in 0..<sites {
            // Levels at this site: a random few of each crossed factor (ascending).
            let levels: [[Int]] = c.crossed.map { f in
                let k = max(1, min(f.levels, 2 + Int(g.next() * Double(min(6, f.levels)))))
                var s = Set<Int>()
                while s.count < k { s.insert(Int(g.next() * Double(f.levels))) }
                return s.sorted()
            }
            present.append(levels)
            let dims = c.crossed.map { c.structure.factorDimension($0.factor) }
            let lead = zip(levels, dims).reduce(0) { $0 + $1.0.count * $1.1 }
            let width = lead + 3
            var builder = SiteBlocksBuilder(structure: c.local, width: width, levelCounts: c.local.factorCount > 0 ? [1] : [],
                                            siteFactor: c.local.factorCount > 0 ? 0 : nil)
            for _ in 0..<(40 + Int(g.next() * 40)) {
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
                builder.add(w: w, levels: c.local.factorCount > 0 ? [0] : [], z: c.local.factorCount > 0 ? [localDim == 1 ? [1] : [1, x]] : [])
            }
            blocks.append(builder.finish())
        }
        let layout = CrossedLayout(structure: c.structure, crossed: c.crossed, presentLevels: present, localTheta: c.localTheta)
        return (blocks, layout)
    }

    static let cases: [Case] = [
        Case(name: "(1 | site) + (1 | surgeon)",
             structure: CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]),
             local: CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]), localTheta: [0],
             crossed: [(1, 60)], theta: [0.7, 1.3]),
        Case(name: "(1 + x | site) + (1 + x | surgeon)",
             structure: CovarianceStructure(terms: [.init(dimension: 2, factor: 0), .init(dimension: 2, factor: 1)]),
             local: CovarianceStructure(terms: [.init(dimension: 2, factor: 0)]), localTheta: [0, 1, 2],
             crossed: [(1, 40)], theta: [0.9, -0.2, 0.4, 1.1, 0.3, 0.5]),
        Case(name: "(1 | site) + (1 | year) + (1 | surgeon)",
             structure: CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1), .init(dimension: 1, factor: 2)]),
             local: CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]), localTheta: [0],
             crossed: [(1, 8), (2, 50)], theta: [0.6, 0.4, 1.2]),
        Case(name: "(1 | surgeon) alone",
             structure: CovarianceStructure(terms: [.init(dimension: 1, factor: 0)]),
             local: CovarianceStructure(terms: []), localTheta: [],
             crossed: [(0, 30)], theta: [0.8]),
    ]

    func testSameTotalsAndModesAsTheDenseElimination() throws {
        for c in Self.cases {
            let (blocks, layout) = sites(c, sites: 12, seed: 19)
            XCTAssertTrue(CrossedLevelElimination.applies(blocks, layout: layout), c.name)
            let localTheta = c.localTheta.map { c.theta[$0] }
            for order in [0, 2] {
                let parts = try blocks.map { try LMMSite.evaluate($0, structure: c.local, theta: localTheta, order: order) }
                let dense = try CrossedElimination.combine(parts, layout: layout, structure: c.structure, theta: c.theta, order: order)
                let level = try XCTUnwrap(CrossedLevelElimination.combine(blocks, layout: layout, structure: c.structure,
                                                                          localStructure: c.local, theta: c.theta, order: order))
                XCTAssertEqual(level.totals.rows, dense.totals.rows)
                // Every jet entry (value, gradient, Hessian) of Schur complement and log-determinant.
                let scale = dense.totals.schur.storage.map(abs).max()!
                for (a, b) in zip(level.totals.schur.storage, dense.totals.schur.storage) {
                    XCTAssertEqual(a, b, accuracy: 1e-11 * scale, "\(c.name) order \(order): Schur complement")
                }
                for (a, b) in zip(level.totals.logDet.storage, dense.totals.logDet.storage) {
                    XCTAssertEqual(a, b, accuracy: 1e-11 * max(1, abs(dense.totals.logDet.value)), "\(c.name) order \(order): log-determinant")
                }
                if order == 0 {
                    let beta = [1.9, 0.45]
                    let d = CrossedElimination.modes(dense, layout: layout, structure: c.structure, theta: c.theta, beta: beta)
                    let l = CrossedLevelElimination.modes(level, layout: layout, structure: c.structure, theta: c.theta, beta: beta)
                    for (a, b) in zip(l.effects, d.effects) { XCTAssertEqual(a, b, accuracy: 1e-11, "\(c.name): modes") }
                    for (a, b) in zip(l.covariance.data, d.covariance.data) { XCTAssertEqual(a, b, accuracy: 1e-12, "\(c.name): covariance") }
                }
            }
        }
    }

    /// The cost rule takes the level path for many levels at few sites each, the dense one for a few levels everywhere.
    func testCostRuleChoosesByLevelForManyLevels() {
        let many = sites(Self.cases[0], sites: 12, seed: 3)
        XCTAssertTrue(CrossedLevelElimination.cheaper(many.blocks, layout: many.layout, structure: Self.cases[0].structure))
        var few = Self.cases[0]
        few.crossed = [(1, 3)]
        let f = sites(few, sites: 12, seed: 3)
        XCTAssertFalse(CrossedLevelElimination.cheaper(f.blocks, layout: f.layout, structure: few.structure))
    }
}

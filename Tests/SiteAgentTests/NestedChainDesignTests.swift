import XCTest
import Foundation
import Protocol
import Math
@testable import SiteAgent

/// Which layout a site's LMM blocks take when the factors within the site
/// have more than 2,000 random effects besides the largest: nested factors
/// are held level by level; crossed ones are refused with a message that says
/// why and what to do.
final class NestedChainDesignTests: XCTestCase {
    static let intercept = DesignColumn(name: "(Intercept)", expr: .number(1))

    /// `y ~ 1 + (1 | site:a) + (1 | site:b) + (1 | site)` on rows with these codes of a and b.
    func design(a: [Double], b: [Double], family: Family = .gaussian) throws -> SiteDesign {
        let n = a.count
        let table = DataTable(columns: [.init(name: "a", data: .numeric(a.map { $0 })), .init(name: "b", data: .numeric(b.map { $0 })),
                                        .init(name: "y", data: .numeric((0..<n).map { Double(($0 * 37) % 11) / (family == .poisson ? 1 : 3) }))], rowCount: n)
        let spec = ModelSpec(formula: "test model", family: family, link: family == .poisson ? .log : .identity, response: .value(.variable("y")), fixed: [Self.intercept],
                             terms: [RandomTerm(name: "a:site", grouping: .withinSite(["a"]), columns: [Self.intercept]),
                                     RandomTerm(name: "b:site", grouping: .withinSite(["b"]), columns: [Self.intercept]),
                                     RandomTerm(name: "site", grouping: .site, columns: [Self.intercept])])
        return try SiteDesign(table: table, spec: spec, dataset: "main")
    }

    func testNestedFactorsBeyondTheDenseCapAreHeldLevelByLevel() throws {
        // 4,400 rows: a has 4,400 levels, each in one of b's 2,200 levels.
        let a = (0..<4400).map(Double.init), b = a.map { Double(Int($0) / 2) }
        let blocks = try XCTUnwrap(try design(a: a, b: b).blocks)
        XCTAssertEqual(blocks.nested?.factors.map(\.levels), [4400, 2200])
        XCTAssertEqual(blocks.tailDimension, 1)
        // Within the cap the dense layout is kept (those fits are unchanged).
        let small = try XCTUnwrap(try design(a: Array(a[0..<400]), b: Array(b[0..<400])).blocks)
        XCTAssertNil(small.nested)
        XCTAssertEqual(small.tailDimension, 201)
    }

    func testCrossedFactorsBeyondTheDenseCapAreRefused() {
        // a has 2,200 levels and b 2,199; they cross (a's level 0 meets b's 0 and 7).
        let a = (0..<4400).map { Double($0 % 2200) }, b = (0..<4400).map { Double(($0 * 7) % 2199) }
        XCTAssertThrowsError(try design(a: a, b: b)) { e in
            let m = "\(e)"
            XCTAssertTrue(m.contains("not nested in one another"), m)
            XCTAssertTrue(m.contains("at most 2000"), m)
            XCTAssertTrue(m.contains("Nest the within-site factors"), m)
        }
    }

    func testGLMMWithNestedFactorsIsHeldLevelByLevelAtAnySize() throws {
        let a = (0..<4400).map(Double.init), b = a.map { Double(Int($0) / 2) }
        let glmm = try XCTUnwrap(try design(a: a, b: b, family: .poisson).glmm)
        XCTAssertEqual(glmm.data.chain, [0, 1])
        XCTAssertEqual(glmm.chainLayout?.factors.map(\.levels), [4400, 2200])
        XCTAssertEqual(glmm.dimension, 4400 + 2200 + 1)
        // The cost counts the chain's levels, not a dense tail of 2,201 (about 1e13 multiply-adds):
        // far below the default budget (1e10).
        let cost = RequestCost.glmmEvaluate(glmm.data, order: 2, nAGQ: 1).work
        XCTAssertLessThan(cost, 1e9, "\(cost)")
        var dense = glmm.data
        dense.chain = nil
        XCTAssertGreaterThan(RequestCost.glmmEvaluate(dense, order: 2, nAGQ: 1).work, 1e10)
        // Within the cap a GLMM site takes the chain too (its layout never leaves the site); an LMM keeps the dense tail.
        let small = try XCTUnwrap(try design(a: Array(a[0..<400]), b: Array(b[0..<400]), family: .poisson).glmm)
        XCTAssertEqual(small.data.chain, [0, 1])
        XCTAssertEqual(small.chainLayout?.factors.map(\.levels), [400, 200])
    }
}

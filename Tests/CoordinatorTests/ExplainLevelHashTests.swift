import XCTest
@testable import Coordinator
import Protocol

/// `fedmix explain` tells a reviewer which grouping variables' codes the
/// describe round hashes, and that site-qualified factors need no hashes.
final class ExplainLevelHashTests: XCTestCase {
    let variables: [String: VariableInfo] = [
        "y": VariableInfo(name: "y", kind: .numeric), "x": VariableInfo(name: "x", kind: .numeric),
        "ward": VariableInfo(name: "ward", kind: .text, levels: nil), "bed": VariableInfo(name: "bed", kind: .numeric, levels: nil),
        "site": VariableInfo(name: "site", kind: .text, levels: ["A", "B"]),
    ]

    func text(_ formula: String) throws -> String {
        Explain.text(spec: try Formula.resolve(Formula.parse(formula), variables: variables, family: .gaussian, link: .identity), sites: 3)
    }

    func testGroupingVariablesToBeHashedAreNamed() throws {
        let t = try text("y ~ x + (1 | site) + (1 | ward) + (1 | ward:bed)")
        XCTAssertTrue(t.contains("and for the grouping variables ward, bed: a 64-bit keyed hash of each distinct"), t)
        XCTAssertTrue(t.contains("check that no code recurs at another site"), t)
        XCTAssertFalse(try text("y ~ x + (1 | site) + (1 | site:ward)").contains("keyed hash"), "site-qualified factors are not hashed")
    }
}

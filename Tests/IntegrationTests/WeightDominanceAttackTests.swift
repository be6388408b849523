import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent

/// A coordinator chooses the β of every GLM step and GLMM evaluation. A β
/// steep in one column makes the fitted probabilities a step at a threshold
/// of its choosing: the working weights then sit on the row nearest it, and
/// the answer's sums (or, moving the threshold, their differences) describe
/// that row. The agent refuses such a β (max_row_share over the working
/// weights); honest points are answered. The crossed GLMM's round is
/// checked in CrossedGLMMTests.testCraftedCrossedRoundsAreRefused.
final class WeightDominanceAttackTests: XCTestCase {
    func ask(_ service: SiteService, _ r: Request) -> Reply { service.handle(r) }

    func assertRefused(_ reply: Reply, file: StaticString = #filePath, line: UInt = #line) {
        guard case .error(let e) = reply else { return XCTFail("the crafted β was answered: \(reply.typeName)", file: file, line: line) }
        XCTAssertEqual(e.code, .disclosureRefused, file: file, line: line)
        XCTAssertTrue(e.message.contains("one row would carry more than 50% of the working weights"), e.message, file: file, line: line)
        XCTAssertTrue(e.message.contains("rule max_row_share, dominance"), e.message, file: file, line: line)
    }

    func testSteepBetaIsRefusedForGLMMEvaluationsAndGLMSteps() throws {
        let file = try MarginalAttackTests.data()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let federation = inProcessFederation(files: [file, file.deletingLastPathComponent().appendingPathComponent("b.csv")])
        let descriptions = try Analysis.describe(federation, dataset: "data")
        let service = SiteService(site: "a", datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: "site",
                                  policy: MarginalAttackTests.shareOnly)
        // The GLMM `y ~ x + (1 | site)` and the flat GLM `y ~ x`, binomial.
        for formula in ["y ~ x + (1 | site)", "y ~ x"] {
            let spec = try Analysis.model(formula: formula, descriptions: descriptions, options: FitOptions(family: .binomial))
            guard case .prepared = ask(service, .prepare(PrepareRequest(session: formula, dataset: "data", model: spec))) else { return XCTFail(formula) }
            let theta = spec.isFlat ? [] : [0.5]
            let honest = ask(service, .evaluate(EvaluateRequest(session: formula, theta: theta, order: spec.isFlat ? 0 : 2, beta: [-0.7, 0.05])))
            XCTAssertTrue(honest.typeName == (spec.isFlat ? "glm_step" : "glmm_contribution"), "\(formula): the honest β was refused: \(honest)")
            // The step at x = 2.03, between rows at x = 2.0 and 2.1.
            assertRefused(ask(service, .evaluate(EvaluateRequest(session: formula, theta: theta, order: spec.isFlat ? 0 : 2, beta: MarginalAttackTests.steep))))
        }
    }
}

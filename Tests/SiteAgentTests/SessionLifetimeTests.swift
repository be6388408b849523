import XCTest
import Foundation
import Protocol
@testable import SiteAgent

/// A session's prepared data is freed when the fit is finalized, not kept
/// for the session timeout: 1,000 consecutive fits must not grow an agent
/// (`fedmix bench-network --soak`). A request after finalize finds no
/// session, which the coordinator answers by preparing again.
final class SessionLifetimeTests: XCTestCase {
    func testFinalizeEndsTheSession() throws {
        var groups: [String?] = [], ys: [Double?] = []
        for i in 0..<40 {
            groups.append("w\(i % 4)")
            let y: Double = Double((i * 37) % 11) + 0.25 * Double(i)
            ys.append(y)
        }
        let columns: [DataTable.Column] = [.init(name: "g", data: .text(groups)), .init(name: "y", data: .numeric(ys))]
        let table = DataTable(columns: columns, rowCount: 40)
        let service = SiteService(site: "a", datasets: ["d": .table(table)], siteColumn: nil, policy: .off)
        let one = DesignColumn(name: "(Intercept)", expr: .number(1))
        let spec = ModelSpec(formula: "y ~ 1 + (1 | g)", response: .value(.variable("y")), fixed: [one],
                             terms: [RandomTerm(name: "g", grouping: .withinSite(["g"]), columns: [one])])
        guard case .prepared = service.handle(.prepare(PrepareRequest(session: "s1", dataset: "d", model: spec))) else { return XCTFail("not prepared") }
        guard case .contribution = service.handle(.evaluate(EvaluateRequest(session: "s1", theta: [1], order: 0))) else { return XCTFail("no contribution") }
        guard case .finalized = service.handle(.finalize(FinalizeRequest(session: "s1", theta: [1], beta: [5], sigma: 1))) else { return XCTFail("not finalized") }
        guard case .error(let e) = service.handle(.evaluate(EvaluateRequest(session: "s1", theta: [1], order: 0))) else {
            return XCTFail("the session outlived its finalize")
        }
        XCTAssertEqual(e.code, "unknown_session")
        // Preparing again under the same id works (what a resuming coordinator does).
        guard case .prepared = service.handle(.prepare(PrepareRequest(session: "s1", dataset: "d", model: spec))) else { return XCTFail("not prepared again") }
    }
}

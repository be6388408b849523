import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent

/// A coordinator chooses the β and θ of a finalize with `marginal`. A β
/// steep in one column turns the population-averaged mean into a step and
/// its derivative into a spike on the row nearest the step: the sums then
/// describe that row. The agent refuses sums one row dominates
/// (max_row_share), in-process and over loopback mutual TLS; honest
/// marginal effects are unchanged under the rule.
final class MarginalAttackTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("marginal-attack")
    override class func tearDown() { pki.remove() }

    static var shareOnly: DisclosurePolicy { var p = DisclosurePolicy.off; p.maxRowShare = 0.5; return p }

    /// Two sites a and b of 40 rows with distinct x (0.1 apart) and a 0/1 outcome; returns a's file.
    static func data() throws -> URL {
        func lines(_ site: String) -> String {
            (["site,x,y"] + (0..<40).map { "\(site),\(Double($0) / 10),\(($0 * 7) % 3 == 0 ? 1 : 0)" }).joined(separator: "\n") + "\n"
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("marginal-attack-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("a.csv")
        try lines("a").write(to: url, atomically: true, encoding: .utf8)
        try lines("b").write(to: dir.appendingPathComponent("b.csv"), atomically: true, encoding: .utf8)
        return url
    }

    static func spec(_ file: URL) throws -> ModelSpec {
        var options = FitOptions(family: .binomial)
        options.marginal = true
        let federation = inProcessFederation(files: [file, file.deletingLastPathComponent().appendingPathComponent("b.csv")])
        return try Analysis.model(formula: "y ~ x + (1 | site)", descriptions: Analysis.describe(federation, dataset: "data"), options: options)
    }

    /// The crafted requests set θ = 0 (no site effect to find by PIRLS at a β so far from the data).
    static func finalize(_ session: String, beta: [Double]) -> Request {
        .finalize(FinalizeRequest(session: session, theta: [beta == steep ? 0 : 0.5], beta: beta, sigma: 1, marginal: MarginalRequest(points: 15, discrete: [false, false])))
    }

    /// β = (−100·2.03, 100): the step at x = 2.03, 0.03 from the row at
    /// x = 2.0 and 0.07 from the next; m′ of that row outweighs the rest.
    static let steep = [-100 * 2.03, 100.0]

    func testSteepBetaIsRefused() throws {
        let file = try Self.data()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let spec = try Self.spec(file)
        let service = SiteService(site: "a", datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: "site", policy: Self.shareOnly)
        for (session, beta) in [("honest", [-0.7, 0.05]), ("crafted", Self.steep)] {
            guard case .prepared = service.handle(.prepare(PrepareRequest(session: session, dataset: "data", model: spec))) else { return XCTFail() }
            let reply = service.handle(Self.finalize(session, beta: beta))
            if session == "honest" {
                guard case .finalized(let f) = reply else { return XCTFail("the honest finalize was refused: \(reply)") }
                XCTAssertNotNil(f.marginal)
            } else {
                guard case .error(let e) = reply else { return XCTFail("the crafted finalize was answered") }
                XCTAssertEqual(e.code, .disclosureRefused)
                XCTAssertTrue(e.message.contains("one row would carry more than 50% of a marginal sum at this site"), e.message)
                XCTAssertTrue(e.message.contains("rule max_row_share, dominance"), e.message)
            }
        }
    }

    func testSteepBetaIsRefusedOverTLS() throws {
        let file = try Self.data()
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let spec = try Self.spec(file)
        let service = SiteService(site: "a", datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: "site", policy: Self.shareOnly)
        let agent = try LoopbackAgent(service: service, pki: Self.pki)
        defer { agent.stop() }
        let client = try RawProtocolClient(agent: agent, identity: Self.pki.coordinator)
        defer { client.close() }
        try client.send(.prepare(PrepareRequest(session: "s", dataset: "data", model: spec)), id: 1)
        guard case .prepared? = try client.reply()?.reply else { return XCTFail("prepare was not answered") }
        if let e = try client.expectError(after: LineCodec.encode(Self.finalize("s", beta: Self.steep), id: 2))?.error {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("rule max_row_share, dominance"), e.message)
        }
    }

    /// The contraception fit with --marginal over its 57 sites of at least
    /// 10 rows (min_rows' default; a site of 2 rows is refused anyway): the
    /// same answer with the rule on as off, bit for bit.
    func testHonestMarginalEffectsPassTheRule() throws {
        let files = try Fixtures.siteFiles("contraception").filter { try CSVReader.read(path: $0.path).rowCount >= 10 }
        XCTAssertEqual(files.count, 57)
        var options = FitOptions(family: .binomial)
        options.marginal = true
        let formula = "use01 ~ age + I(age^2) + urban + livch + (1 | site)"
        let off = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options)
        let on = try Analysis.fit(inProcessFederation(files: files, policy: Self.shareOnly), dataset: "data", formula: formula, options: options)
        let a = try XCTUnwrap(off.marginal), b = try XCTUnwrap(on.marginal)
        XCTAssertEqual(a.predicted.estimate, b.predicted.estimate)
        XCTAssertEqual(a.effects.map(\.estimate), b.effects.map(\.estimate))
        XCTAssertEqual(a.effects.map(\.stdError), b.effects.map(\.stdError))
    }
}

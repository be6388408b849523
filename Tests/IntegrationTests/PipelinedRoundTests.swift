import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent

/// Issue 19 (per-round latency): over TLS a round is pipelined, one thread
/// sending every site's request and then reading the answers in site order.
/// The fit must be the one a thread per site gives, bit for bit, and a site
/// that stays silent must still fail at its deadline, the notices naming it
/// alone (not the sites whose answers wait unread behind it).
final class PipelinedRoundTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("pipelined")
    override class func tearDown() { pki.remove() }

    /// A channel that forwards calls and does not pipeline: a federation
    /// holding one runs its rounds on a thread per site, as before.
    final class Unpipelined: SiteChannel, @unchecked Sendable {
        let inner: SiteChannel
        init(_ inner: SiteChannel) { self.inner = inner }
        var site: String { inner.site }
        func call(_ request: Request) throws -> Reply { try inner.call(request, round: nil) }
        func call(_ request: Request, round: Int?) throws -> Reply { try inner.call(request, round: round) }
        var bytesSent: Int { inner.bytesSent }
        var bytesReceived: Int { inner.bytesReceived }
        func close() {}
    }

    /// cbpp (binomial GLMM, Laplace) and sleepstudy (LMM) through the same
    /// agents: pipelined and one thread per site give the same fit to the
    /// bit (tolerance 0), with the same rounds and the same bytes.
    func testPipelinedFitsEqualAThreadPerSiteBitForBit() throws {
        for (name, fit, options) in [("cbpp", "laplace", FitOptions(family: .binomial)), ("sleepstudy", "reml", FitOptions(method: .reml))] {
            let files = try Fixtures.siteFiles(name)
            let formula = try Fixtures.fit(name, fit)["formula"] as! String
            let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            defer { agents.forEach { $0.stop() } }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close() }
            XCTAssertTrue(federation.channels.allSatisfy(\.pipelines), "TLS channels pipeline small answers")
            // Connections of its own, so that request ids (and so bytes) start alike.
            let second = try tlsFederation(agents, pki: Self.pki)
            defer { second.close() }
            let threaded = Federation(channels: second.channels.map(Unpipelined.init))

            let pipelined = try Analysis.fit(federation, dataset: "data", formula: formula, options: options)
            let perSite = try Analysis.fit(threaded, dataset: "data", formula: formula, options: options)

            assertSameFit(pipelined, perSite, tol: 0, "\(name) pipelined against a thread per site")
            XCTAssertEqual(pipelined.objective.bitPattern, perSite.objective.bitPattern, name)
            XCTAssertEqual(pipelined.rounds, perSite.rounds, name)
            XCTAssertEqual(pipelined.evaluations, perSite.evaluations, name)
            // Session ids are random but of one length: the same bytes either way.
            XCTAssertEqual(federation.bytesSent, second.bytesSent, "\(name) bytes sent per site")
            XCTAssertEqual(federation.bytesReceived, second.bytesReceived, "\(name) bytes received per site")
            print("\(name): pipelined = one thread per site, \(pipelined.rounds) rounds, objective \(pipelined.objective)")
        }
    }

    /// The first site in site order stalls: the pipelined round reads it
    /// first and waits; the others' answers arrive meanwhile. The round
    /// fails at that site's deadline naming it alone, the notices name it
    /// alone, and the next round (the proxy passing again) reconnects.
    func testASilentFirstSiteFailsAtItsDeadlineAndTheNoticesNameOnlyIt() throws {
        var network = NetworkPolicy()
        network.roundTimeout = 2
        let sites = try ShapedSites(pki: Self.pki, network: network)
        defer { sites.stop() }
        let federation = try sites.file.connect()
        defer { federation.close() }
        XCTAssertEqual(federation.sites, ["central", "north", "south"])
        XCTAssertEqual(try federation.round({ _ in .ping }) { reply, _ in reply }.count, 3)

        let captured = CapturedLines()
        federation.reporter = captured.reporter
        federation.outstandingReportSeconds = 0.5
        sites.proxy("central").mode = .stall
        let started = Date()
        let error = thrownError({ try federation.round({ _ in .ping }) { reply, _ in reply } }, "the round must fail")
        let elapsed = Date().timeIntervalSince(started)
        let failure = try XCTUnwrap(error as? SiteFailure, "one site failed, as itself: \(String(describing: error))")
        XCTAssertEqual(failure.site, "central")
        XCTAssertEqual(failure.code, "timeout")
        XCTAssertTrue(failure.message.hasSuffix("within 2 s (round timeout)"), failure.message)
        XCTAssertGreaterThanOrEqual(elapsed, 2, "not before the deadline")
        XCTAssertLessThan(elapsed, 6, "within 3× the deadline")
        let waiting = captured.all.filter { $0.contains("waiting for") }
        XCTAssertFalse(waiting.isEmpty, "the long round said whom it waits for: \(captured.all)")
        XCTAssertTrue(waiting.allSatisfy { $0.contains("waiting for central (") }, "only the silent site: \(waiting)")
        let times = federation.lastRoundSeconds
        XCTAssertEqual(times.count, 3)

        sites.proxy("central").mode = .pass
        XCTAssertEqual(try federation.round({ _ in .ping }) { reply, _ in reply }.count, 3, "the next round reconnects to central")
        XCTAssertTrue(federation.channels[0].recoveries.contains { $0.contains("reconnected") }, "\(federation.channels[0].recoveries)")
        print("silent first site: \(failure) after \(String(format: "%.2f", elapsed)) s; notices: \(waiting)")
    }
}

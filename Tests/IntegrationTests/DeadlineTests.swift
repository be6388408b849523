import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// Issue part 3: a silent site, a site trickling its answer and a site that
/// never completes a handshake each fail the fit within their deadline,
/// naming the site and what it was doing; a long round says on standard
/// error which sites it is still waiting for.
final class DeadlineTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("deadlines")
    override class func tearDown() { pki.remove() }
    static let formula = "Reaction ~ Days + (Days | Subject)"

    /// The fit through `sites`, with `north`'s relay switched to `mode` once it has answered prepare.
    func fitShaping(_ sites: ShapedSites, _ mode: ShapingProxy.Mode, captured: CapturedLines? = nil) throws -> (Error?, Double) {
        let connected = try sites.file.connect()
        let proxy = sites.proxy("north")
        let federation = Federation(channels: connected.channels.map { c in
            c.site == "north" ? RoundHookedChannel(c) { request, _ in if case .prepare = request { proxy.mode = mode } } : c
        })
        defer { federation.close() }
        if let captured { federation.reporter = captured.reporter; federation.outstandingReportSeconds = 0.5 }
        let started = Date()
        let error = thrownError({ try Analysis.fit(federation, dataset: "data", formula: Self.formula) }, "the fit must fail")
        return (error, Date().timeIntervalSince(started))
    }

    func testSilentSiteFailsTheFitAtTheRoundDeadlineNamingIt() throws {
        var network = NetworkPolicy()
        network.roundTimeout = 2
        let sites = try ShapedSites(pki: Self.pki, network: network)
        defer { sites.stop() }
        let captured = CapturedLines()
        let (error, elapsed) = try fitShaping(sites, .stall, captured: captured)
        let failure = try XCTUnwrap(error as? SiteFailure, "\(String(describing: error))")
        XCTAssertEqual(failure.site, "north")
        XCTAssertEqual(failure.code, "timeout")
        XCTAssertTrue(failure.description.hasPrefix("site \"north\": no answer to evaluate (round "), failure.description)
        XCTAssertTrue(failure.description.hasSuffix(") within 2 s (round timeout)"), failure.description)
        XCTAssertLessThan(elapsed, 6, "within 3× the deadline")
        XCTAssertGreaterThanOrEqual(elapsed, 2, "not before the deadline")
        let waiting = captured.all.filter { $0.contains("waiting for north (") }
        XCTAssertFalse(waiting.isEmpty, "the long round said whom it waits for: \(captured.all)")
        // (Progress lines may name the slowest site of an earlier round: the prepare's, which carried the first evaluation.)
        XCTAssertTrue(waiting.allSatisfy { !$0.contains("central") && !$0.contains("south") }, "only the outstanding site: \(captured.all)")
        print("silent site: \(failure) after \(String(format: "%.2f", elapsed)) s; notices: \(waiting.first ?? "")")
    }

    func testTricklingSiteFailsAtTheDeadline() throws {
        var network = NetworkPolicy()
        network.roundTimeout = 2
        let sites = try ShapedSites(pki: Self.pki, network: network)
        defer { sites.stop() }
        let (error, elapsed) = try fitShaping(sites, .trickle)
        let failure = try XCTUnwrap(error as? SiteFailure, "\(String(describing: error))")
        XCTAssertEqual(failure.site, "north")
        // Bytes arrive, but a TLS record is never completed: nothing to decrypt, so no answer.
        XCTAssertTrue(failure.message.contains("evaluate (round ") && failure.message.contains("2 s"), failure.message)
        XCTAssertEqual(failure.code, "timeout")
        XCTAssertLessThan(elapsed, 6, "within 3× the deadline")
        print("trickling site (deadline): \(failure) after \(String(format: "%.2f", elapsed)) s")
    }

    /// After a round timeout the late answer is never mistaken for the next
    /// one: the channel drops that connection, and the next fit on the same
    /// federation reconnects and succeeds.
    func testAfterARoundTimeoutTheSameFederationFitsAgain() throws {
        var network = NetworkPolicy()
        network.roundTimeout = 1
        let sites = try ShapedSites(pki: Self.pki, network: network)
        defer { sites.stop() }
        let federation = try sites.file.connect()
        defer { federation.close() }
        let clean = try Analysis.fit(federation, dataset: "data", formula: Self.formula)
        sites.proxy("north").mode = .stall
        let error = thrownError({ try Analysis.fit(federation, dataset: "data", formula: Self.formula) })
        XCTAssertEqual((error as? SiteFailure)?.code, "timeout", "\(String(describing: error))")
        sites.proxy("north").mode = .pass
        let again = try Analysis.fit(federation, dataset: "data", formula: Self.formula)
        assertSameFit(again, clean, tol: 0, "after a timed-out fit")
        XCTAssertTrue(again.messages.contains { $0.hasPrefix("site north: describe (round ") && $0.contains("reconnected") }, "\(again.messages)")
    }

    /// A port that accepts TCP but never speaks TLS: the connect deadline.
    func testHandshakeThatNeverCompletesFailsAtTheConnectDeadline() throws {
        let listener = try ValidationBeforeConnectingTests.Listener()
        var network = NetworkPolicy()
        network.connectTimeout = 1
        let started = Date()
        let error = thrownError({
            try TLSChannel(site: "north", host: "127.0.0.1", port: listener.port, context: TLSContext.client(identity: Self.pki.coordinator),
                           serverName: "agent-north", policy: network)
        })
        let elapsed = Date().timeIntervalSince(started)
        let failure = try XCTUnwrap(error as? SiteFailure, "\(String(describing: error))")
        XCTAssertEqual(failure.site, "north")
        XCTAssertTrue(failure.message.hasPrefix("cannot connect to 127.0.0.1:\(listener.port): "), failure.message)
        XCTAssertLessThan(elapsed, 3)
        print("handshake never completes: \(failure) after \(String(format: "%.2f", elapsed)) s")
    }
}

/// The sites file's timing keys, and their misuse.
final class SitesFileNetworkKeysTests: XCTestCase {
    func load(_ extra: [String: Any]) throws -> SitesFile {
        var json: [String: Any] = [
            "tls": ["certificate": "c.pem", "key": "k.pem", "ca": "ca.pem"],
            "sites": [["name": "north", "address": "127.0.0.1:7443"]],
        ]
        for (k, v) in extra { json[k] = v }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sites-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return try SitesFile.load(path: path)
    }

    func testTimingKeysAreReadAndCheckedWithDefaultsOtherwise() throws {
        XCTAssertEqual(try load([:]).network, NetworkPolicy())
        XCTAssertEqual(NetworkPolicy().roundTimeout, 120)
        XCTAssertEqual(NetworkPolicy().connectTimeout, 10)
        XCTAssertEqual(NetworkPolicy().reconnectBudget, 30)
        let n = try load(["connect_timeout": 3, "round_timeout": 600, "reconnect_budget": 0, "min_bytes_per_second": 100]).network
        XCTAssertEqual([n.connectTimeout, n.roundTimeout, n.reconnectBudget, n.minimumBytesPerSecond], [3, 600, 0, 100])
        for (key, value, message) in [("round_timeout", 0 as Any, "\"round_timeout\" must be a positive number of seconds"),
                                      ("connect_timeout", "10" as Any, "\"connect_timeout\" must be a positive number of seconds"),
                                      ("reconnect_budget", -1 as Any, "\"reconnect_budget\" must be a non-negative number of seconds"),
                                      ("round_timout", 5 as Any, "unknown key \"round_timout\"")] {
            XCTAssertThrowsError(try load([key: value])) { e in XCTAssertTrue("\(e)".contains(message), "\(e)") }
        }
    }
}

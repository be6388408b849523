import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// Criterion 4: an agent refuses what it must, with a specific error, and
/// keeps serving. Each test opens a good coordinator connection first,
/// provokes one refusal, then requires a describe to complete both on that
/// earlier connection and on a new one.
final class RefusalTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("refusals")
    static let maxLine = 4096
    var pki: TestPKI { Self.pki }

    override class func tearDown() { pki.remove() }

    /// The site "central" of sleepstudy (60 rows) behind an agent with a
    /// 4096-byte line limit that trusts only the coordinator "coordinator".
    private func makeAgent(allowedVariables: [String]? = nil) throws -> LoopbackAgent {
        let file = try Fixtures.siteFiles("sleepstudy")[0]
        let agent = try LoopbackAgent(file: file, pki: pki, policy: DisclosurePolicy(), allowedVariables: allowedVariables,
                                      maxLineBytes: Self.maxLine)
        addTeardownBlock { agent.stop() }
        return agent
    }

    /// A coordinator connected before the refusal (it must keep working).
    /// One describe round trip first, so that the agent has audited the
    /// coordinator's hello (the audit count is compared around refusals).
    private func goodCoordinator(_ agent: LoopbackAgent) throws -> Federation {
        let f = try tlsFederation([agent], pki: pki)
        addTeardownBlock { f.close() }
        XCTAssertEqual(try Analysis.describe(f, dataset: "data").first?.rows, 60)
        return f
    }

    /// A describe completes on `earlier` and on a new connection.
    private func assertStillServes(_ agent: LoopbackAgent, _ earlier: Federation,
                                   file: StaticString = #filePath, line: UInt = #line) {
        do {
            let fresh = try tlsFederation([agent], pki: pki)
            defer { fresh.close() }
            for (label, federation) in [("earlier connection", earlier), ("new connection", fresh)] {
                let d = try Analysis.describe(federation, dataset: "data")
                XCTAssertEqual(d.map(\.site), ["central"], label, file: file, line: line)
                XCTAssertEqual(d.first?.rows, 60, label, file: file, line: line)
                XCTAssertEqual(Set(d.first?.variables.map(\.name) ?? []),
                               agent.service.allowedVariables ?? ["Reaction", "Days", "Subject", "site"], label, file: file, line: line)
            }
        } catch {
            XCTFail("the agent no longer serves a good coordinator: \(error)", file: file, line: line)
        }
    }

    /// Connects as `identity` with the real coordinator channel; returns why it failed.
    private func refusedChannel(_ agent: LoopbackAgent, as identity: TLSIdentity) -> SiteFailure? {
        let error = thrownError({
            try TLSChannel(site: agent.site, host: "127.0.0.1", port: agent.port,
                           context: TLSContext.client(identity: identity), serverName: agent.serverName, timeout: 5)
        }, "the agent accepted a coordinator it must refuse")
        guard let f = error as? SiteFailure else { XCTFail("expected a SiteFailure, got \(String(describing: error))"); return nil }
        XCTAssertEqual(f.site, agent.site)
        return f
    }

    /// The TLS-level error a bare client sees when the agent refuses it.
    private func refusedConnection(_ agent: LoopbackAgent, as identity: TLSIdentity) -> TLSError? {
        let error = thrownError({ () throws -> String? in
            let c = try TLSConnection.connect(host: "127.0.0.1", port: agent.port, context: try TLSContext.client(identity: identity),
                                              serverName: agent.serverName, timeout: 5, ioTimeout: 5)
            defer { c.close() }
            return try c.readLine()
        }, "the agent accepted a client it must refuse")
        return error as? TLSError
    }

    // MARK: - Refused during the TLS handshake

    func testClientCertificateFromAnotherCAIsRefused() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let audited = agent.audit.count
        let foreign = try pki.issue("coordinator", foreign: true)
        XCTAssertEqual(refusedConnection(agent, as: foreign), .rejectedByPeer(alertCode: 48, alert: "tlsv1 alert unknown ca"))
        let f = refusedChannel(agent, as: foreign)
        XCTAssertTrue(f?.message.contains("TLS alert 48: tlsv1 alert unknown ca") == true, f?.message ?? "")
        XCTAssertEqual(agent.audit.count, audited, "not one protocol line may pass to or from a refused peer")
        assertStillServes(agent, earlier)
    }

    func testExpiredClientCertificateIsRefused() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let audited = agent.audit.count
        let expired = try pki.issue("coordinator", days: -1, notBeforeOffsetDays: -10)
        XCTAssertEqual(refusedConnection(agent, as: expired), .rejectedByPeer(alertCode: 45, alert: "sslv3 alert certificate expired"))
        let f = refusedChannel(agent, as: expired)
        XCTAssertTrue(f?.message.contains("TLS alert 45: sslv3 alert certificate expired") == true, f?.message ?? "")
        XCTAssertEqual(agent.audit.count, audited)
        assertStillServes(agent, earlier)
    }

    func testCoordinatorNameNotInAllowedCoordinatorsIsRefused() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let audited = agent.audit.count
        // Valid, issued by the deployment CA, but not an allowed coordinator.
        let intruder = try pki.issue("intruder")
        XCTAssertEqual(refusedConnection(agent, as: intruder), .rejectedByPeer(alertCode: 40, alert: "sslv3 alert handshake failure"))
        let f = refusedChannel(agent, as: intruder)
        XCTAssertTrue(f?.message.contains("TLS alert 40") == true, f?.message ?? "")
        XCTAssertEqual(agent.audit.count, audited)
        assertStillServes(agent, earlier)
    }

    func testPlaintextClientIsRefused() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let audited = agent.audit.count
        // A client that speaks the line protocol without TLS.
        let answer = try plaintextExchange(port: agent.port, send: try LineCodec.encode(Hello(role: "coordinator", site: nil, software: "plain")) + "\n")
        print("plaintext client received \(answer.bytes.count) bytes: \(answer.bytes), then \(answer.closed ? "a close" : "nothing")")
        XCTAssertTrue(answer.closed, "the agent must close a plaintext connection")
        XCTAssertFalse(answer.bytes.contains(UInt8(ascii: "{")), "no protocol line may be sent in clear: \(answer.bytes)")
        // At most a TLS alert record (content type 21) comes back.
        if let first = answer.bytes.first { XCTAssertEqual(first, 21, "only a TLS alert may come back: \(answer.bytes)") }
        XCTAssertEqual(agent.audit.count, audited)
        assertStillServes(agent, earlier)
    }

    // MARK: - Refused at the protocol level (raw lines after a proper hello)

    func testLineOverTheLimitGetsAFatalErrorAndTheConnectionIsClosed() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator)
        defer { client.close() }
        XCTAssertEqual(client.agentHello.maxLineBytes, Self.maxLine, "the agent announces its limit")
        let line = "{\"dataset\":\"" + String(repeating: "x", count: 5000) + "\",\"id\":1,\"type\":\"describe\"}"
        let e = try client.expectError(after: line)
        XCTAssertEqual(e?.error.code, "line_too_long")
        XCTAssertEqual(e?.error.fatal, true)
        XCTAssertEqual(e?.id, 0)
        XCTAssertTrue(e?.error.message.contains("\(Self.maxLine) bytes") == true, e?.error.message ?? "")
        XCTAssertTrue(client.agentClosed(), "the agent closes the connection after a line over its limit")
        assertStillServes(agent, earlier)
    }

    /// KNOWN BUG (fails): a line far over the limit (8 MB against 4096). The
    /// agent answers line_too_long and closes while the client is still
    /// writing, so the client's write fails with a reset; the answer is
    /// still readable, but TLSConnection.pendingAlert() consumed its first
    /// byte ("{") looking for an alert, and the line no longer decodes.
    func testLineFarOverTheLimitStillGetsItsErrorAnswer() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator)
        defer { client.close() }
        let line = "{\"dataset\":\"" + String(repeating: "x", count: 8 << 20) + "\",\"id\":1,\"type\":\"describe\"}"
        do { try client.send(line) } catch {
            // Expected: the agent stopped reading at its limit and closed.
            XCTAssertEqual(error as? TLSError, .connectionReset)
        }
        do {
            let r = try client.reply()
            guard case .error(let e)? = r?.reply else { return XCTFail("expected the agent's error answer, got \(String(describing: r))") }
            XCTAssertEqual(e.code, "line_too_long")
            XCTAssertTrue(e.fatal)
        } catch {
            XCTFail("the agent's answer must arrive intact: \(error)")
        }
        assertStillServes(agent, earlier)
    }

    /// KNOWN GAP (fails): the real coordinator sending a request over the
    /// agent's line limit reports "connection lost: … reset" instead of the
    /// agent's reason, because TLSChannel.call does not read the answer
    /// already sent once its write fails.
    func testCoordinatorLearnsWhyItsOversizedRequestWasRefused() throws {
        let agent = try makeAgent()
        let federation = try goodCoordinator(agent)
        let error = thrownError({ try Analysis.describe(federation, dataset: String(repeating: "d", count: 8 << 20)) })
        guard let f = error as? SiteFailure else { return XCTFail("expected a SiteFailure, got \(String(describing: error))") }
        XCTAssertEqual(f.site, "central")
        XCTAssertEqual(f.code, "line_too_long", "the coordinator should report the agent's reason: \(f)")
        XCTAssertTrue(f.message.contains("limit of \(Self.maxLine) bytes"), f.message)
        assertStillServes(agent, try goodCoordinator(agent))
    }

    func testInvalidJSONGetsAnErrorAndTheConnectionStaysUsable() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator)
        defer { client.close() }
        let e = try client.expectError(after: "{\"id\":7,\"type\":\"describe\",\"dataset\":\"secret-dataset-name")
        XCTAssertEqual(e?.error.code, "invalid_json")
        XCTAssertEqual(e?.error.fatal, false)
        XCTAssertEqual(e?.id, 0, "the id of an unreadable line is unknown")
        XCTAssertFalse(e?.error.message.contains("secret-dataset-name") ?? true, "the error must not echo the line")
        try assertSameConnectionServes(client, id: 8)
        assertStillServes(agent, earlier)
    }

    func testUnknownMessageTypeGetsAnError() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator)
        defer { client.close() }
        let e = try client.expectError(after: "{\"id\":9,\"type\":\"export_rows\",\"dataset\":\"data\"}")
        XCTAssertEqual(e?.error.code, "unknown_type")
        XCTAssertEqual(e?.error.fatal, false)
        XCTAssertEqual(e?.id, 9)
        XCTAssertEqual(e?.error.message, "unknown message type (11 characters); expected describe, prepare, evaluate, finalize, ping or batch")
        try assertSameConnectionServes(client, id: 10)
        assertStillServes(agent, earlier)
    }

    func testFieldOfTheWrongTypeGetsAnErrorNamingTheField() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator)
        defer { client.close() }
        let e = try client.expectError(after: "{\"id\":11,\"order\":2,\"session\":\"s1\",\"theta\":\"0.8125\",\"type\":\"evaluate\"}")
        XCTAssertEqual(e?.error.code, "wrong_field_type")
        XCTAssertEqual(e?.error.fatal, false)
        XCTAssertEqual(e?.id, 11)
        XCTAssertEqual(e?.error.message, "field \"theta\" has the wrong type: expected an array")
        try assertSameConnectionServes(client, id: 12)
        assertStillServes(agent, earlier)
    }

    func testVariableNotOnTheAllowlistIsRefusedWithoutDataValues() throws {
        let allowed = ["Days", "Subject", "site"]
        let agent = try makeAgent(allowedVariables: allowed)
        let earlier = try goodCoordinator(agent)
        // The agent does not even describe the variable...
        let described = try Analysis.describe(earlier, dataset: "data")
        XCTAssertEqual(Set(described[0].variables.map(\.name)), Set(allowed))
        // ...so the real coordinator stops before asking for it,
        let formula = "Reaction ~ Days + (Days | Subject)"
        let coordinatorError = thrownError({ try Analysis.fit(earlier, dataset: "data", formula: formula) })
        XCTAssertTrue("\(coordinatorError.map { "\($0)" } ?? "")".contains("\"Reaction\""), "\(String(describing: coordinatorError))")
        // and a coordinator that asks anyway (model resolved elsewhere) is refused by the site.
        let unrestricted = inProcessFederation(files: [try Fixtures.siteFiles("sleepstudy")[0]])
        let spec = try Analysis.resolve(formula: formula, descriptions: try Analysis.describe(unrestricted, dataset: "data"))
        let refusal = thrownError({ try FitDriver.fit(earlier, dataset: "data", spec: spec) }, "the site must refuse Reaction")
        guard let f = refusal as? SiteFailure else { return XCTFail("expected a SiteFailure, got \(String(describing: refusal))") }
        XCTAssertEqual(f.site, "central")
        XCTAssertEqual(f.code, "disclosure_refused")
        XCTAssertTrue(f.message.contains("variable \"Reaction\""), f.message)
        XCTAssertTrue(f.message.contains("allowed_variables"), "the refusal names the rule: \(f.message)")
        // No data value of the site's rows appears in the refusal.
        let csv = try String(contentsOf: try Fixtures.siteFiles("sleepstudy")[0], encoding: .utf8)
        let values = Set(csv.split(whereSeparator: { $0 == "\n" || $0 == "," }).dropFirst(4)
            .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"\r")) }.filter { $0.count >= 2 })
        XCTAssertGreaterThan(values.count, 50)
        for v in values { XCTAssertFalse(f.message.contains(v), "the refusal leaks the value \(v): \(f.message)") }
        XCTAssertNil(f.message.rangeOfCharacter(from: .decimalDigits), "no numbers at all in this refusal: \(f.message)")
        // Nothing was prepared: the agent sent no aggregate.
        XCTAssertNil(agent.audit.types(.sent)["prepared"])
        assertStillServes(agent, earlier)
    }

    func testProtocolVersionMismatchGetsAnErrorAndAClose() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator, helloVersion: protocolVersion + 1)
        defer { client.close() }
        XCTAssertEqual(client.agentHello.protocolVersion, protocolVersion)
        let r = try client.reply()
        guard case .error(let e)? = r?.reply else { return XCTFail("expected an error answer, got \(String(describing: r))") }
        XCTAssertEqual(e.code, "version_mismatch")
        XCTAssertTrue(e.fatal)
        XCTAssertEqual(r?.id, 0)
        XCTAssertEqual(e.message, ProtocolError.versionMismatch(ours: protocolVersion, theirs: protocolVersion + 1).description)
        XCTAssertTrue(client.agentClosed(), "the agent closes the connection after a version mismatch")
        assertStillServes(agent, earlier)
    }

    func testRequestBeforeTheHelloGetsAFatalErrorAndAClose() throws {
        let agent = try makeAgent()
        let earlier = try goodCoordinator(agent)
        let describedBefore = agent.audit.types(.sent)["described"]
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator, helloVersion: nil)
        defer { client.close() }
        let e = try client.expectError(after: try LineCodec.encode(.describe(DescribeRequest(dataset: "data")), id: 1))
        XCTAssertEqual(e?.error.code, "expected_hello")
        XCTAssertEqual(e?.error.fatal, true)
        XCTAssertTrue(client.agentClosed())
        XCTAssertEqual(agent.audit.types(.sent)["described"], describedBefore, "nothing described before the hello")
        assertStillServes(agent, earlier)
    }

    // MARK: - Helpers

    /// After a non-fatal error the same connection answers a describe.
    private func assertSameConnectionServes(_ client: RawProtocolClient, id: Int,
                                            file: StaticString = #filePath, line: UInt = #line) throws {
        try client.send(.describe(DescribeRequest(dataset: "data")), id: id)
        let r = try client.reply()
        XCTAssertEqual(r?.id, id, file: file, line: line)
        guard case .described(let d)? = r?.reply else { return XCTFail("expected described, got \(String(describing: r))", file: file, line: line) }
        XCTAssertEqual(d.rows, 60, file: file, line: line)
    }

    /// Sends `text` over plain TCP and reads until the peer closes (or 5 s pass).
    private func plaintextExchange(port: Int, send text: String) throws -> (bytes: [UInt8], closed: Bool) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw TLSError.connectFailed(host: "127.0.0.1", port: port, reason: String(cString: strerror(errno))) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(text.utf8)
        XCTAssertEqual(Glibc.write(fd, bytes, bytes.count), bytes.count)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n > 0 { received += buffer[0..<n]; continue }
            // 0: orderly close; ECONNRESET: closed with unread input. Both are a close.
            return (received, n == 0 || errno == ECONNRESET)
        }
    }
}

import Dispatch
import Foundation
import Synchronization
import XCTest
@testable import Protocol
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// Certificates for the TLS tests, made once in a temporary directory: the
/// deployment CA, a second ("other") CA, and certificates issued from them.
final class TLSFixtures: Sendable {
    let root: String
    let caPath: String
    let server: TLSIdentity      // CN server.fedmix
    let siteA: TLSIdentity       // allowed client
    let siteB: TLSIdentity       // valid, but not in the allowed list
    let expiredA: TLSIdentity    // site-a, expired yesterday
    let foreignA: TLSIdentity    // site-a, issued by the other CA
    let rotatedServer: TLSIdentity

    init() throws {
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("fedmix-tls-tests-\(UUID().uuidString)").path
        self.root = root
        let ca = root + "/ca", other = root + "/other-ca"
        try Certificates.createAuthority(directory: ca)
        try Certificates.createAuthority(directory: other, commonName: "Someone else's CA")
        caPath = ca + "/ca.pem"
        func issue(_ name: String, _ dir: String, from: String = ca, days: Int = 30, offset: Int = 0) throws -> TLSIdentity {
            try Certificates.issue(caDirectory: from, name: name, outDirectory: root + "/" + dir,
                                   days: days, notBeforeOffsetDays: offset)
            return TLSIdentity(directory: root + "/" + dir, caPath: ca + "/ca.pem")
        }
        server = try issue("server.fedmix", "server")
        siteA = try issue("site-a", "site-a")
        siteB = try issue("site-b", "site-b")
        expiredA = try issue("site-a", "expired-a", days: -1, offset: -10)
        foreignA = try issue("site-a", "foreign-a", from: other)
        rotatedServer = try issue("server.fedmix", "server-rotated")
    }
}

/// A TLS echo server on 127.0.0.1 (ephemeral port) run by one thread:
/// accept, then echo "echo: <line>" for each line read (maxBytes 1024)
/// until EOF or an error. Every outcome is recorded as an event.
final class EchoServer: @unchecked Sendable {
    enum Event: Equatable, Sendable {
        case accepted(peerNames: [String], fingerprint: String, protocolVersion: String)
        case handshakeFailed(TLSError)
        case readFailed(TLSError)
        case peerClosed(linesEchoed: Int)
    }

    let listener: TLSListener
    private let events = Mutex<[Event]>([])
    private let signal = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(context: TLSContext, ioTimeout: Double = 10, maxBytes: Int = 1024) throws {
        listener = try TLSListener(host: "127.0.0.1", port: 0, context: context,
                                   handshakeTimeout: 5, ioTimeout: ioTimeout)
        let thread = Thread { [self] in self.run(maxBytes: maxBytes) }
        thread.start()
    }

    private func record(_ event: Event) {
        events.withLock { $0.append(event) }
        signal.signal()
    }

    private func run(maxBytes: Int) {
        defer { finished.signal() }
        while true {
            let connection: TLSConnection
            do {
                connection = try listener.accept()
            } catch TLSError.closed {
                return
            } catch let error as TLSError {
                record(.handshakeFailed(error))
                continue
            } catch {
                record(.handshakeFailed(.handshakeFailed("non-TLS error \(error)")))
                continue
            }
            record(.accepted(peerNames: connection.peerNames, fingerprint: connection.peerFingerprintSHA256,
                             protocolVersion: connection.protocolVersion))
            var echoed = 0
            do {
                while let line = try connection.readLine(maxBytes: maxBytes) {
                    try connection.writeLine("echo: " + line)
                    echoed += 1
                }
                record(.peerClosed(linesEchoed: echoed))
            } catch let error as TLSError {
                record(.readFailed(error))
            } catch {
                record(.readFailed(.io(.read, "\(error)")))
            }
            connection.close()
        }
    }

    /// The next event, waiting up to `timeout` seconds.
    func next(timeout: Double = 10) -> Event? {
        guard signal.wait(timeout: .now() + timeout) == .success else { return nil }
        return events.withLock { $0.removeFirst() }
    }

    /// Closes the listener and waits for the server thread to end.
    func stop() -> Bool {
        listener.close()
        return finished.wait(timeout: .now() + 5) == .success
    }
}

final class TLSTests: XCTestCase {
    static let fixtures: TLSFixtures = try! TLSFixtures()
    var f: TLSFixtures { Self.fixtures }

    override class func setUp() {
        ignoreSIGPIPE()
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: fixtures.root)
    }

    private func serverContext(allowed: [String] = ["site-a"]) throws -> TLSContext {
        try TLSContext.server(identity: f.server, allowedPeerNames: allowed)
    }

    private func connect(_ server: EchoServer, as identity: TLSIdentity, serverName: String = "server.fedmix") throws -> TLSConnection {
        try TLSConnection.connect(host: "127.0.0.1", port: server.listener.port,
                                  context: try TLSContext.client(identity: identity),
                                  serverName: serverName, timeout: 5)
    }

    /// A full echo round trip with site-a: proves the server still serves.
    private func assertServes(_ server: EchoServer, file: StaticString = #filePath, line: UInt = #line) throws {
        let client = try connect(server, as: f.siteA)
        guard case .accepted(let names, _, _)? = server.next() else {
            return XCTFail("the server did not accept a good client", file: file, line: line)
        }
        XCTAssertEqual(names, ["site-a"], file: file, line: line)
        try client.writeLine("still there?")
        XCTAssertEqual(try client.readLine(maxBytes: 1024), "echo: still there?", file: file, line: line)
        client.close()
        XCTAssertEqual(server.next(), .peerClosed(linesEchoed: 1), file: file, line: line)
    }

    /// The error of the client's first read after the server refused it.
    private func clientReadError(_ client: TLSConnection) -> TLSError? {
        do {
            try client.writeLine("hello")
            _ = try client.readLine(maxBytes: 1024)
            return nil
        } catch {
            return error as? TLSError
        }
    }

    // MARK: - Working connections

    func testMutualTLSEchoOverLoopback() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        XCTAssertGreaterThan(server.listener.port, 0)

        let client = try connect(server, as: f.siteA)
        XCTAssertEqual(client.protocolVersion, "TLSv1.3")
        XCTAssertEqual(client.peerNames, ["server.fedmix"])
        XCTAssertEqual(client.peerSubject, "CN=server.fedmix")
        let serverInfo = try Certificates.inspect(certificatePath: f.server.certificatePath)
        XCTAssertEqual(client.peerFingerprintSHA256, serverInfo.fingerprintSHA256)

        let siteAInfo = try Certificates.inspect(certificatePath: f.siteA.certificatePath)
        XCTAssertEqual(server.next(), .accepted(peerNames: ["site-a"], fingerprint: siteAInfo.fingerprintSHA256,
                                                protocolVersion: "TLSv1.3"))

        let messages = ["{\"type\":\"hello\"}", "", "näive ✓ UTF-8", String(repeating: "x", count: 1000)]
        for m in messages {
            try client.writeLine(m)
            XCTAssertEqual(try client.readLine(maxBytes: 2048), "echo: " + m)
        }
        let sent = messages.reduce(0) { $0 + $1.utf8.count + 1 }
        XCTAssertEqual(client.bytesWritten, sent)
        XCTAssertEqual(client.bytesRead, sent + messages.count * 6)

        XCTAssertThrowsError(try client.writeLine("two\nmessages")) { error in
            XCTAssertEqual(error as? TLSError, .newlineInLine)
        }
        client.close()
        XCTAssertEqual(server.next(), .peerClosed(linesEchoed: messages.count))
        XCTAssertThrowsError(try client.readLine(maxBytes: 10)) { XCTAssertEqual($0 as? TLSError, .closed) }
    }

    func testCleanEOFAndSeveralLinesInOneRecord() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteA)
        _ = server.next()
        try client.writeRaw(Array("one\ntwo\nthree\n".utf8))
        XCTAssertEqual(try client.readLine(maxBytes: 100), "echo: one")
        XCTAssertEqual(try client.readLine(maxBytes: 100), "echo: two")
        XCTAssertEqual(try client.readLine(maxBytes: 100), "echo: three")
        client.close()
        XCTAssertEqual(server.next(), .peerClosed(linesEchoed: 3))
    }

    func testServerSeesCloseNotifyAsNil() throws {
        // The client reads until the server closes cleanly.
        let context = try serverContext()
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: context)
        defer { listener.close() }
        let done = DispatchSemaphore(value: 0)
        Thread {
            if let c = try? listener.accept() {
                try? c.writeLine("bye")
                c.close()
            }
            done.signal()
        }.start()
        let client = try TLSConnection.connect(host: "127.0.0.1", port: listener.port,
                                               context: try TLSContext.client(identity: f.siteA),
                                               serverName: "server.fedmix", timeout: 5)
        XCTAssertEqual(try client.readLine(maxBytes: 100), "bye")
        XCTAssertNil(try client.readLine(maxBytes: 100))
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
    }

    func testEmptyAllowListAcceptsAnyCertificateFromTheCA() throws {
        let server = try EchoServer(context: try serverContext(allowed: []))
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteB)
        guard case .accepted(let names, _, _)? = server.next() else { return XCTFail("not accepted") }
        XCTAssertEqual(names, ["site-b"])
        client.close()
        _ = server.next()
    }

    func testTLS12ClientIsServed() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let client = try TLSConnection.connect(host: "127.0.0.1", port: server.listener.port,
                                               context: try TLSContext.client(identity: f.siteA, maximumVersion: TLS1_2_VERSION),
                                               serverName: "server.fedmix", timeout: 5)
        XCTAssertEqual(client.protocolVersion, "TLSv1.2")
        guard case .accepted(_, _, let version)? = server.next() else { return XCTFail("not accepted") }
        XCTAssertEqual(version, "TLSv1.2")
        try client.writeLine("old but fine")
        XCTAssertEqual(try client.readLine(), "echo: old but fine")
        client.close()
        XCTAssertEqual(server.next(), .peerClosed(linesEchoed: 1))
    }

    func testTLS12ClientWithNameNotAllowedFailsInConnect() throws {
        // With TLS 1.2 the server verifies the client before its Finished, so
        // the refusal reaches the client inside connect().
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        XCTAssertThrowsError(try TLSConnection.connect(host: "127.0.0.1", port: server.listener.port,
                                                       context: try TLSContext.client(identity: f.siteB, maximumVersion: TLS1_2_VERSION),
                                                       serverName: "server.fedmix", timeout: 5)) { error in
            guard case .rejectedByPeer(let code, _)? = error as? TLSError else { return XCTFail("\(error)") }
            XCTAssertEqual(code, 40)
        }
        XCTAssertEqual(server.next(), .handshakeFailed(.peerNameNotAllowed(names: ["site-b"], allowed: ["site-a"])))
        try assertServes(server)
    }

    func testTLS11ClientIsRefused() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        XCTAssertThrowsError(try TLSConnection.connect(host: "127.0.0.1", port: server.listener.port,
                                                       context: try TLSContext.client(identity: f.siteA, maximumVersion: TLS1_1_VERSION),
                                                       serverName: "server.fedmix", timeout: 5)) { error in
            XCTAssertEqual(error as? TLSError, .rejectedByPeer(alertCode: 70, alert: "tlsv1 alert protocol version"))
        }
        guard case .handshakeFailed(.handshakeFailed(let detail))? = server.next() else { return XCTFail("no refusal") }
        XCTAssertTrue(detail.contains("unsupported protocol"), detail)
        try assertServes(server)
    }

    // MARK: - Refused connections (the server keeps serving after each)

    func testClientCertificateFromAnotherCAIsRefused() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let identity = TLSIdentity(certificatePath: f.foreignA.certificatePath, keyPath: f.foreignA.keyPath,
                                   caPath: f.caPath)
        let client = try connect(server, as: identity)
        let event = server.next()
        XCTAssertEqual(event, .handshakeFailed(.unknownCA(subject: "CN=site-a", reason: "unable to get local issuer certificate")))
        if case .handshakeFailed(let e)? = event {
            XCTAssertTrue(e.description.hasPrefix("certificate verify failed: unable to get local issuer certificate — the peer's certificate (CN=site-a) was not issued by this deployment's CA"), e.description)
        }
        XCTAssertEqual(clientReadError(client), .rejectedByPeer(alertCode: 48, alert: "tlsv1 alert unknown ca"))
        try assertServes(server)
    }

    func testExpiredClientCertificateIsRefused() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.expiredA)
        XCTAssertEqual(server.next(), .handshakeFailed(.certificateExpired(subject: "CN=site-a")))
        XCTAssertEqual(clientReadError(client), .rejectedByPeer(alertCode: 45, alert: "sslv3 alert certificate expired"))
        try assertServes(server)
    }

    func testRefusedClientLearnsWhyEvenWhenItsWriteFails() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.expiredA)
        XCTAssertEqual(server.next(), .handshakeFailed(.certificateExpired(subject: "CN=site-a")))
        // The first write reaches the closed server, which answers with RST;
        // the second fails, and the alert the server sent is reported.
        try? client.writeLine("one")
        Thread.sleep(forTimeInterval: 0.1)
        XCTAssertThrowsError(try client.writeLine("two")) { error in
            XCTAssertEqual(error as? TLSError, .rejectedByPeer(alertCode: 45, alert: "sslv3 alert certificate expired"))
        }
        XCTAssertThrowsError(try client.readLine()) { error in
            XCTAssertEqual(error as? TLSError, .rejectedByPeer(alertCode: 45, alert: "sslv3 alert certificate expired"))
        }
        try assertServes(server)
    }

    func testClientNameNotInAllowedPeerNamesIsRefused() throws {
        let server = try EchoServer(context: try serverContext(allowed: ["site-a", "site-c"]))
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteB)
        let event = server.next()
        XCTAssertEqual(event, .handshakeFailed(.peerNameNotAllowed(names: ["site-b"], allowed: ["site-a", "site-c"])))
        if case .handshakeFailed(let e)? = event {
            XCTAssertTrue(e.description.contains("site-b"), e.description)
            XCTAssertTrue(e.description.contains("[site-a, site-c]"), e.description)
        }
        guard case .rejectedByPeer(let code, _)? = clientReadError(client) else { return XCTFail("client not refused") }
        XCTAssertEqual(code, 40, "handshake_failure")
        try assertServes(server)
    }

    func testAllowedNamesCompareCaseInsensitively() throws {
        let server = try EchoServer(context: try serverContext(allowed: ["SITE-A"]))
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteA)
        guard case .accepted? = server.next() else { return XCTFail("not accepted") }
        client.close()
        _ = server.next()
    }

    func testPlaintextClientIsRefused() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let fd = try rawConnect(port: server.listener.port)
        defer { close(fd) }
        let hello = Array("hello\n".utf8)
        XCTAssertEqual(write(fd, hello, hello.count), hello.count)
        let event = server.next()
        XCTAssertEqual(event, .handshakeFailed(.notTLS(reason: "wrong version number")))
        if case .handshakeFailed(let e)? = event {
            XCTAssertTrue(e.description.hasPrefix("the peer did not speak TLS"), e.description)
        }
        try assertServes(server)
    }

    func testClientWithoutCertificateIsRefused() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        // A TLS client that presents no certificate, made with OpenSSL directly.
        let fd = try rawConnect(port: server.listener.port)
        defer { close(fd) }
        XCTAssertTrue(RawTLSClient.handshakeWithoutCertificate(fd: fd, caPath: f.caPath))
        XCTAssertEqual(server.next(), .handshakeFailed(.noPeerCertificate))
        try assertServes(server)
    }

    func testLineOverTheLimitFailsBeforeAnyNewline() throws {
        let server = try EchoServer(context: try serverContext(), maxBytes: 1024)
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteA)
        guard case .accepted? = server.next() else { return XCTFail("not accepted") }
        // 5000 bytes and no newline; the client then waits.
        try client.writeRaw([UInt8](repeating: UInt8(ascii: "x"), count: 5000))
        XCTAssertEqual(server.next(timeout: 5), .readFailed(.lineTooLong(limit: 1024)))
        // The server closed the connection: the client sees a clean end.
        XCTAssertNil(try client.readLine(maxBytes: 1024))
        try assertServes(server)
    }

    func testInvalidUTF8IsRejected() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteA)
        _ = server.next()
        try client.writeRaw([0x61, 0xff, 0xfe, 0x0a])
        XCTAssertEqual(server.next(), .readFailed(.invalidUTF8))
        client.close()
        try assertServes(server)
    }

    func testServerNameMismatchIsRefusedByTheClient() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        XCTAssertThrowsError(try connect(server, as: f.siteA, serverName: "coordinator.fedmix")) { error in
            XCTAssertEqual(error as? TLSError, .hostnameMismatch(expected: "coordinator.fedmix", presented: ["server.fedmix"]))
            XCTAssertTrue("\(error)".contains("hostname mismatch"))
        }
        guard case .handshakeFailed(.rejectedByPeer)? = server.next() else { return XCTFail("server saw no refusal") }
        try assertServes(server)
    }

    func testClientRejectsServerFromAnotherCA() throws {
        // The server uses a certificate from the other CA; the client trusts only ours.
        let foreignServer = TLSIdentity(certificatePath: f.foreignA.certificatePath, keyPath: f.foreignA.keyPath,
                                        caPath: f.caPath)
        let server = try EchoServer(context: try TLSContext.server(identity: foreignServer, allowedPeerNames: []))
        defer { XCTAssertTrue(server.stop()) }
        XCTAssertThrowsError(try connect(server, as: f.siteA, serverName: "site-a")) { error in
            XCTAssertEqual(error as? TLSError, .unknownCA(subject: "CN=site-a", reason: "unable to get local issuer certificate"))
        }
        _ = server.next()
    }

    func testServerReadTimeout() throws {
        let server = try EchoServer(context: try serverContext(), ioTimeout: 0.5)
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteA)
        _ = server.next()
        let start = Date()
        XCTAssertEqual(server.next(timeout: 5), .readFailed(.timeout(.read)))
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
        client.close()
        try assertServes(server)
    }

    func testClientReadTimeoutIsRetryable() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let client = try connect(server, as: f.siteA)
        _ = server.next()
        client.readTimeout = 0.3
        XCTAssertThrowsError(try client.readLine(maxBytes: 100)) { XCTAssertEqual($0 as? TLSError, .timeout(.read)) }
        try client.writeLine("late")
        XCTAssertEqual(try client.readLine(maxBytes: 100), "echo: late", "the connection survives a read timeout")
        client.close()
    }

    func testHandshakeTimeoutForSilentClient() throws {
        let context = try serverContext()
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: context, handshakeTimeout: 0.5)
        defer { listener.close() }
        let fd = try rawConnect(port: listener.port)
        defer { close(fd) }
        let start = Date()
        XCTAssertThrowsError(try listener.accept()) { XCTAssertEqual($0 as? TLSError, .timeout(.handshake)) }
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
    }

    // MARK: - Listener and client errors

    func testCloseUnblocksAccept() throws {
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: try serverContext())
        let result = Mutex<TLSError?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            do { _ = try listener.accept() } catch { result.withLock { $0 = error as? TLSError } }
            done.signal()
        }.start()
        Thread.sleep(forTimeInterval: 0.2)
        listener.close()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(result.withLock { $0 }, .closed)
        XCTAssertThrowsError(try listener.accept()) { XCTAssertEqual($0 as? TLSError, .closed) }
    }

    func testConnectionRefused() throws {
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: try serverContext())
        let port = listener.port
        listener.close()
        XCTAssertThrowsError(try TLSConnection.connect(host: "127.0.0.1", port: port,
                                                       context: try TLSContext.client(identity: f.siteA),
                                                       serverName: "server.fedmix", timeout: 5)) { error in
            XCTAssertEqual(error as? TLSError, .connectionRefused(host: "127.0.0.1", port: port))
        }
    }

    func testReplaceContextRotatesCertificateForNewConnections() throws {
        let server = try EchoServer(context: try serverContext())
        defer { XCTAssertTrue(server.stop()) }
        let old = try Certificates.inspect(certificatePath: f.server.certificatePath).fingerprintSHA256
        let new = try Certificates.inspect(certificatePath: f.rotatedServer.certificatePath).fingerprintSHA256

        let first = try connect(server, as: f.siteA)
        _ = server.next()
        XCTAssertEqual(first.peerFingerprintSHA256, old)

        server.listener.replaceContext(try TLSContext.server(identity: f.rotatedServer, allowedPeerNames: ["site-a"]))
        XCTAssertEqual(server.listener.context.certificateFingerprintSHA256, new)
        // The established connection keeps working.
        try first.writeLine("before rotation")
        XCTAssertEqual(try first.readLine(maxBytes: 100), "echo: before rotation")
        first.close()
        _ = server.next()

        let second = try connect(server, as: f.siteA)
        XCTAssertEqual(second.peerFingerprintSHA256, new)
        _ = server.next()
        second.close()
        _ = server.next()
    }

    func testContextLoadingErrorsNameTheFile() throws {
        let missing = TLSIdentity(certificatePath: f.root + "/nope.pem", keyPath: f.siteA.keyPath, caPath: f.caPath)
        XCTAssertThrowsError(try TLSContext.client(identity: missing)) { error in
            XCTAssertEqual(error as? TLSError, .fileMissing(role: "certificate", path: f.root + "/nope.pem"))
            XCTAssertTrue("\(error)".contains(f.root + "/nope.pem"))
        }

        let garbage = f.root + "/garbage.pem"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: garbage))
        let notPEM = TLSIdentity(certificatePath: f.siteA.certificatePath, keyPath: f.siteA.keyPath, caPath: garbage)
        XCTAssertThrowsError(try TLSContext.server(identity: notPEM)) { error in
            XCTAssertEqual(error as? TLSError, .notPEM(role: "CA certificate", path: garbage))
        }

        let mismatch = TLSIdentity(certificatePath: f.siteA.certificatePath, keyPath: f.siteB.keyPath, caPath: f.caPath)
        XCTAssertThrowsError(try TLSContext.client(identity: mismatch)) { error in
            XCTAssertEqual(error as? TLSError, .keyMismatch(certificatePath: f.siteA.certificatePath, keyPath: f.siteB.keyPath))
            XCTAssertTrue("\(error)".contains("does not match"))
        }

        let swapped = TLSIdentity(certificatePath: f.siteA.keyPath, keyPath: f.siteA.certificatePath, caPath: f.caPath)
        XCTAssertThrowsError(try TLSContext.client(identity: swapped)) { error in
            guard case .invalidPEM(let role, let path, let reason)? = error as? TLSError else { return XCTFail("\(error)") }
            XCTAssertEqual(role, "certificate")
            XCTAssertEqual(path, f.siteA.keyPath)
            XCTAssertTrue(reason.contains("PRIVATE KEY"), reason)
        }

        let leafAsCA = TLSIdentity(certificatePath: f.siteA.certificatePath, keyPath: f.siteA.keyPath,
                                   caPath: f.siteB.certificatePath)
        XCTAssertThrowsError(try TLSContext.client(identity: leafAsCA)) { error in
            guard case .invalidPEM(let role, _, let reason)? = error as? TLSError else { return XCTFail("\(error)") }
            XCTAssertEqual(role, "CA certificate")
            XCTAssertTrue(reason.contains("not a CA certificate"), reason)
        }

        XCTAssertThrowsError(try TLSListener(host: "127.0.0.1", port: 0, context: try TLSContext.client(identity: f.siteA))) { error in
            guard case .configuration? = error as? TLSError else { return XCTFail("\(error)") }
        }
    }

    // MARK: - Helpers

    private func rawConnect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 {
            close(fd)
            throw TLSError.connectFailed(host: "127.0.0.1", port: port, reason: String(cString: strerror(errno)))
        }
        return fd
    }
}

/// A bare OpenSSL client, to play a peer the fedmix API cannot make.
enum RawTLSClient {
    /// Handshakes on `fd` without a client certificate, then reads once.
    /// True when the server then refused the connection (with TLS 1.3 the
    /// refusal arrives after the client's side of the handshake is done).
    static func handshakeWithoutCertificate(fd: Int32, caPath: String) -> Bool {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { return false }
        defer { SSL_CTX_free(ctx) }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        guard let ssl = SSL_new(ctx) else { return false }
        defer { SSL_free(ssl) }
        SSL_set_fd(ssl, fd)
        ERR_clear_error()
        guard SSL_connect(ssl) == 1 else { ERR_clear_error(); return true }
        var byte: UInt8 = 0
        var got = 0
        let rc = SSL_read_ex(ssl, &byte, 1, &got)
        ERR_clear_error()
        return rc != 1
    }
}

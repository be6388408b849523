import Foundation
import XCTest
import ExecutableSupport
import Coordinator
import Protocol
#if canImport(Glibc)
import Glibc
#endif

/// Issue part 1, through the built `fedmix`: every argument and the formula
/// are checked before any connection is opened. The sites file points at a
/// loopback socket that listens but never accepts; after a refused command
/// line nothing is queued on it (no connection was attempted), while a valid
/// command line does reach it.
final class ValidationBeforeConnectingTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("validate")
    override class func tearDown() { pki.remove() }

    /// A listening socket that never accepts, and whether anyone connected to it.
    final class Listener {
        let fd: Int32
        let port: Int
        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = 0
            a.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard ok == 0, listen(fd, 16) == 0 else { throw AgentProcessError("cannot listen") }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
            self.fd = fd
            port = Int(UInt16(bigEndian: a.sin_port))
        }
        /// Takes one queued connection, if any (non-blocking); true if there was one.
        func connectionWasQueued() -> Bool {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 0) > 0 else { return false }
            let c = accept(fd, nil, nil)
            if c >= 0 { Glibc.close(c) }
            return c >= 0
        }
        deinit { Glibc.close(fd) }
    }

    func sitesFile(port: Int) throws -> String {
        let json: [String: Any] = [
            "tls": ["certificate": "coordinator/cert.pem", "key": "coordinator/key.pem", "ca": "ca/ca.pem"],
            "sites": [["name": "north", "address": "127.0.0.1:\(port)", "server_name": "agent-north"]],
        ]
        let path = Self.pki.root + "/sites-\(UUID().uuidString.prefix(6)).json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testBadArgumentsAndFormulasAreRefusedBeforeAnyConnection() throws {
        let fedmix = try Executables.fedmix()
        let listener = try Listener()
        let sites = try sitesFile(port: listener.port)
        let base = ["--sites", sites, "--dataset", "data"]
        let cases: [([String], String)] = [
            (["fit"] + base + ["--formula", "Reaction ~ Days + (Days | Subject"], "--formula: formula error at position"),
            (["fit"] + base + ["--formula", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", "--family", "binomial", "--nagq", "5"],
             "--nagq 5 needs a single scalar random-effects term such as (1 | site)"),
            (["fit"] + base + ["--formula", "y ~ x + (1 | site)", "--filter", "x >= "], "--filter: "),
            (["fit"] + base + ["--formula", "y ~ x + (1 | site)", "--missing-indicator", "lab=0"], "--missing-indicator lab: the formula does not use lab"),
            (["explain"] + base + ["--formula", "y ~ x + (1 | site"], "--formula: formula error at position"),
            (["sensitivity"] + base + ["--formula", "y ~ ~ x", "--missing-indicator", "x=0"], "--formula: formula error at position"),
            (["fit"] + base + ["--formula", "y ~ x + (1 | site)", "--nagq", "0"], "--nagq must be a whole number from 1 to 25"),
        ]
        for (args, message) in cases {
            let r = try Executables.run(fedmix, args)
            XCTAssertEqual(r.status, 2, "a usage error, not a connection failure: \(r)")
            XCTAssertTrue(r.err.contains(message), "expected \"\(message)\": \(r)")
            XCTAssertFalse(r.err.contains("connect"), "\(r)")
            XCTAssertFalse(listener.connectionWasQueued(), "no connection may be opened for \(args)")
        }
    }
}

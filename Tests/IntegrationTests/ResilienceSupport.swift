// Test pieces for the resilience tests: a TCP relay that can stall or
// trickle the agent's bytes, and fits through it.

import Foundation
import Synchronization
import XCTest
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// A TCP relay on 127.0.0.1 to 127.0.0.1:targetPort. TLS passes through
/// untouched; the agent-to-coordinator direction can be switched to
/// `.stall` (bytes held back) or `.trickle` (one byte every
/// `trickleInterval`), and `cut()` drops every relayed connection at the TCP
/// level, with no TLS close_notify, as a crash, a firewall or a cable would.
final class ShapingProxy: @unchecked Sendable {
    enum Mode: Sendable { case pass, stall, trickle }
    let port: Int
    private let listenFD: Int32
    private let targetPort: Int
    private let open = Mutex<Set<Int32>>([])
    private let modeState = Mutex(Mode.pass)
    let trickleInterval: Double
    private let stopped = Mutex(false)

    var mode: Mode {
        get { modeState.withLock { $0 } }
        set { modeState.withLock { $0 = newValue } }
    }

    init(targetPort: Int, trickleInterval: Double = 0.2) throws {
        self.targetPort = targetPort
        self.trickleInterval = trickleInterval
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, bound == 0, listen(fd, 64) == 0 else { throw TLSError.listenFailed(host: "127.0.0.1", port: 0, reason: "bind") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        listenFD = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return a
    }

    private func acceptLoop() {
        while true {
            let client = accept(listenFD, nil, nil)
            if client < 0 { if errno == EINTR { continue }; break }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = Self.loopback(port: targetPort)
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if server < 0 || rc != 0 { Glibc.close(client); if server >= 0 { Glibc.close(server) }; continue }
            open.withLock { $0.formUnion([client, server]) }
            let remaining = Mutex(2)
            let finish: @Sendable () -> Void = { [self] in
                if remaining.withLock({ $0 -= 1; return $0 }) == 0 {
                    open.withLock { $0.subtract([client, server]) }
                    Glibc.close(client); Glibc.close(server)
                }
            }
            Thread { [self] in pump(from: client, to: server, shaped: false); finish() }.start()
            Thread { [self] in pump(from: server, to: client, shaped: true); finish() }.start()
        }
        Glibc.close(listenFD)
    }

    private func pump(from: Int32, to: Int32, shaped: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        outer: while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(from, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var offset = 0
            while offset < n {
                var chunk = n - offset
                if shaped {
                    switch mode {
                    case .pass: break
                    case .stall:
                        if stopped.withLock({ $0 }) { break outer }
                        usleep(50_000); continue
                    case .trickle:
                        if stopped.withLock({ $0 }) { break outer }
                        usleep(UInt32(trickleInterval * 1e6)); chunk = 1
                    }
                }
                let w = buffer.withUnsafeBytes { Glibc.write(to, $0.baseAddress! + offset, chunk) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { break outer }
                offset += w
            }
        }
        _ = shutdown(to, Int32(SHUT_WR))
    }

    /// Drops every relayed connection now (no TLS close_notify).
    func cut() { open.withLock { fds in for fd in fds { _ = shutdown(fd, Int32(SHUT_RDWR)) } } }

    func stop() {
        stopped.withLock { $0 = true }
        mode = .pass
        _ = shutdown(listenFD, Int32(SHUT_RDWR))
        cut()
    }
}

/// Agents for the sleepstudy sites, each behind a ShapingProxy, and a
/// sites file reaching them through the proxies.
final class ShapedSites {
    let agents: [LoopbackAgent]
    let proxies: [ShapingProxy]
    let file: SitesFile

    init(pki: TestPKI, network: NetworkPolicy, case name: String = "sleepstudy") throws {
        agents = try Fixtures.siteFiles(name).map { try LoopbackAgent(file: $0, pki: pki) }
        proxies = try agents.map { try ShapingProxy(targetPort: $0.port) }
        let sites = zip(agents, proxies).map { a, p in SitesFile.Site(name: a.site, host: "127.0.0.1", port: p.port, serverName: a.serverName) }
        file = SitesFile(identity: pki.coordinator, sites: sites, network: network)
    }

    func proxy(_ site: String) -> ShapingProxy { proxies[agents.firstIndex { $0.site == site }!] }
    func agent(_ site: String) -> LoopbackAgent { agents.first { $0.site == site }! }

    func stop() {
        proxies.forEach { $0.stop() }
        agents.forEach { $0.stop() }
    }
}

/// A channel that forwards to another (round numbers included) and runs
/// `after` once each call returned.
final class RoundHookedChannel: SiteChannel, @unchecked Sendable {
    let inner: SiteChannel
    let after: (Request, Reply) -> Void
    init(_ inner: SiteChannel, after: @escaping (Request, Reply) -> Void) { self.inner = inner; self.after = after }
    var site: String { inner.site }
    func call(_ request: Request) throws -> Reply { try call(request, round: nil) }
    func call(_ request: Request, round: Int?) throws -> Reply {
        let r = try inner.call(request, round: round)
        after(request, r)
        return r
    }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    var receipts: [Receipt] { inner.receipts }
    var recoveries: [String] { inner.recoveries }
    func close() { inner.close() }
}

/// Lines a ProgressReporter wrote.
final class CapturedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var reporter: ProgressReporter { ProgressReporter(enabled: true) { [self] s in lines.withLock { $0.append(s) } } }
}

// Shared pieces for the tests that run site agents over real mutual TLS:
// a throwaway PKI, agents on loopback (port 0) with a recording audit sink,
// a raw protocol client for sending malformed lines, and a strict comparison
// of two fits.

import Foundation
import Synchronization
import XCTest
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Certificates

/// A deployment CA (and a second, unrelated CA) in a fresh temporary
/// directory, with the coordinator's certificate (CN "coordinator").
final class TestPKI: Sendable {
    let root: String
    let caDirectory: String
    let otherCADirectory: String
    /// The deployment CA certificate every party trusts.
    var caPath: String { caDirectory + "/ca.pem" }
    let coordinator: TLSIdentity
    private let serial = Mutex(0)

    init(_ tag: String) throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("fedmix-\(tag)-\(getpid())-\(UUID().uuidString.prefix(8))").path
        caDirectory = root + "/ca"
        otherCADirectory = root + "/other-ca"
        try Certificates.createAuthority(directory: caDirectory, commonName: "fedmix test CA", days: 2)
        try Certificates.createAuthority(directory: otherCADirectory, commonName: "Someone else's CA", days: 2)
        try Certificates.issue(caDirectory: caDirectory, name: "coordinator", outDirectory: root + "/coordinator", days: 2)
        coordinator = TLSIdentity(directory: root + "/coordinator", caPath: caDirectory + "/ca.pem")
    }

    /// A new certificate for `name` in its own folder. `foreign`: issued by
    /// the other CA (the identity still trusts the deployment CA).
    /// `days: -1, notBeforeOffsetDays: -10` makes an expired certificate.
    func issue(_ name: String, days: Int = 2, notBeforeOffsetDays: Int = 0, foreign: Bool = false) throws -> TLSIdentity {
        let n = serial.withLock { $0 += 1; return $0 }
        let dir = root + "/\(n)-\(name)"
        try Certificates.issue(caDirectory: foreign ? otherCADirectory : caDirectory, name: name, outDirectory: dir,
                               days: days, notBeforeOffsetDays: notBeforeOffsetDays)
        return TLSIdentity(directory: dir, caPath: caPath)
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

// MARK: - Audit

/// Records every line an agent reads and writes (the agent's audit hook),
/// and can run a test action on each one (throwing makes the agent drop the
/// connection, as a failing audit log must).
final class RecordingAudit: AuditSink {
    struct Entry: Sendable {
        var direction: AuditDirection
        var peer: String
        var line: String
        /// The message's "type" field, if the line is a JSON object with one.
        var type: String? {
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else { return nil }
            return o["type"] as? String
        }
    }
    typealias Action = @Sendable (AuditDirection, String) throws -> Void
    private let entries = Mutex<[Entry]>([])
    private let action = Mutex<Action?>(nil)

    func record(direction: AuditDirection, peer: PeerIdentity, line: String) throws {
        entries.withLock { $0.append(Entry(direction: direction, peer: peer.subject, line: line)) }
        if let a = action.withLock({ $0 }) { try a(direction, line) }
    }

    func onRecord(_ a: Action?) { action.withLock { $0 = a } }
    var all: [Entry] { entries.withLock { $0 } }
    var count: Int { entries.withLock { $0.count } }

    /// How many lines of each type arrived (received) or left (sent).
    func types(_ direction: AuditDirection) -> [String: Int] {
        var out: [String: Int] = [:]
        for e in all where e.direction == direction { out[e.type ?? "(not a message)", default: 0] += 1 }
        return out
    }
    /// Bytes on the wire for the recorded lines of one direction (newlines included).
    func bytes(_ direction: AuditDirection) -> Int {
        all.filter { $0.direction == direction }.reduce(0) { $0 + $1.line.utf8.count + 1 }
    }
}

// MARK: - Agents on loopback

/// One `AgentServer` on 127.0.0.1 with an ephemeral port, its own
/// certificate (CN agent-SITE) and a recording audit sink.
final class LoopbackAgent: Sendable {
    let site: String
    let serverName: String
    let service: SiteService
    let server: AgentServer
    let audit = RecordingAudit()
    var port: Int { server.port }

    init(service: SiteService, pki: TestPKI, allowedCoordinators: [String] = ["coordinator"],
         maxLineBytes: Int = ProtocolLimits.maxLineBytes) throws {
        site = service.site
        serverName = "agent-" + service.site
        self.service = service
        let identity = try pki.issue(serverName)
        let context = try TLSContext.server(identity: identity, allowedPeerNames: allowedCoordinators)
        server = try AgentServer(service: service, host: "127.0.0.1", port: 0, context: context,
                                 maxLineBytes: maxLineBytes, audit: audit,
                                 log: AgentLog(enabled: ProcessInfo.processInfo.environment["FEDMIX_AGENT_LOG"] != nil),
                                 ioTimeout: 30)
        server.start()
    }

    /// An agent serving one CSV file as dataset "data"; the site is the file's stem.
    convenience init(file: URL, pki: TestPKI, policy: DisclosurePolicy = .off, allowedVariables: [String]? = nil,
                     maxLineBytes: Int = ProtocolLimits.maxLineBytes) throws {
        let site = file.deletingPathExtension().lastPathComponent
        try self.init(service: SiteService(site: site, datasets: ["data": .csv(path: file.path, types: [:])],
                                           policy: policy, allowedVariables: allowedVariables),
                      pki: pki, maxLineBytes: maxLineBytes)
    }

    var sitesFileEntry: SitesFile.Site { .init(name: site, host: "127.0.0.1", port: port, serverName: serverName) }

    func stop() { server.stop() }
}

/// A federation of TLS channels to `agents`, connected as `identity`
/// (default: the PKI's coordinator).
func tlsFederation(_ agents: [LoopbackAgent], pki: TestPKI, identity: TLSIdentity? = nil) throws -> Federation {
    try SitesFile(identity: identity ?? pki.coordinator, sites: agents.map(\.sitesFileEntry)).connect(timeout: 10)
}

/// One CSV file per site in a new temporary folder ("s0.csv", …): the
/// header, then `rows(site)`'s lines. The rows are generated in site order.
func writeSiteCSVs(_ prefix: String, header: String, sites: Int, rows: (Int) throws -> [String]) throws -> [URL] {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return try (0..<sites).map { s in
        let url = dir.appendingPathComponent("s\(s).csv")
        try (header + "\n" + rows(s).joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }
}

/// Runs `body` with loopback agents serving `files` (one site each, dataset
/// "data", certificates from a throwaway PKI named `pki`) and a federation
/// connected to them; everything is stopped and removed afterwards.
func withLoopbackAgents<T>(_ files: [URL], pki name: String, _ body: ([LoopbackAgent], Federation) throws -> T) throws -> T {
    let pki = try TestPKI(name)
    defer { pki.remove() }
    let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
    defer { agents.forEach { $0.stop() } }
    let federation = try tlsFederation(agents, pki: pki)
    defer { federation.close() }
    return try body(agents, federation)
}

// MARK: - Speaking the protocol by hand

/// A coordinator that speaks the line protocol itself over a mutual-TLS
/// connection, to send lines the real coordinator never would.
final class RawProtocolClient {
    let connection: TLSConnection
    let agentHello: Hello

    /// Connects, reads the agent's hello and (unless `helloVersion` is nil)
    /// answers with a coordinator hello of that protocol version.
    init(port: Int, identity: TLSIdentity, serverName: String, helloVersion: Int? = protocolVersion) throws {
        connection = try TLSConnection.connect(host: "127.0.0.1", port: port, context: try TLSContext.client(identity: identity),
                                               serverName: serverName, timeout: 5, ioTimeout: 10)
        guard let line = try connection.readLine(maxBytes: ProtocolLimits.maxLineBytes) else {
            throw TLSError.unexpectedEOF
        }
        agentHello = try LineCodec.decodeHello(line)
        if let v = helloVersion {
            var hello = Hello(role: "coordinator", site: nil, software: "raw-test-client")
            hello.protocolVersion = v
            try connection.writeLine(LineCodec.encode(hello))
        }
    }

    convenience init(agent: LoopbackAgent, identity: TLSIdentity, helloVersion: Int? = protocolVersion) throws {
        try self.init(port: agent.port, identity: identity, serverName: agent.serverName, helloVersion: helloVersion)
    }

    func send(_ line: String) throws { try connection.writeLine(line) }
    func send(_ request: Request, id: Int) throws { try connection.writeLine(LineCodec.encode(request, id: id)) }

    /// The next answer; nil when the agent closed the connection cleanly.
    func reply() throws -> (id: Int, reply: Reply)? {
        guard let line = try connection.readLine(maxBytes: ProtocolLimits.maxLineBytes) else { return nil }
        return try LineCodec.decodeReply(line)
    }

    /// Sends a line and returns the agent's error answer (fails the test for anything else).
    func expectError(after line: String, file: StaticString = #filePath, line l: UInt = #line) throws -> (id: Int, error: ErrorReply)? {
        try send(line)
        guard let r = try reply() else { XCTFail("the agent closed the connection without an answer", file: file, line: l); return nil }
        guard case .error(let e) = r.reply else { XCTFail("expected an error answer, got \(r.reply.typeName)", file: file, line: l); return nil }
        return (r.id, e)
    }

    /// True when the agent has closed the connection: the next read ends
    /// (cleanly or not) instead of timing out.
    func agentClosed(timeout: Double = 5) -> Bool {
        connection.readTimeout = timeout
        do { return try connection.readLine(maxBytes: ProtocolLimits.maxLineBytes) == nil } catch TLSError.timeout { return false } catch {
            return true
        }
    }

    func close() { connection.close() }
}

// MARK: - Comparing fits

/// Asserts two fits of the same model agree to `tol` relative in everything
/// a fit reports (criterion, θ, fixed effects and SEs, variance components,
/// σ, log-likelihood, site effects, conditional SDs, own effects, site
/// coefficients) and exactly in counts. Returns the largest relative difference.
@discardableResult
func assertSameFit(_ a: FitResult, _ b: FitResult, tol: Double = 1e-10, _ label: String,
                   file: StaticString = #filePath, line: UInt = #line) -> Double {
    var worst = 0.0
    func check(_ x: Double, _ y: Double, _ what: String, floor: Double = 1e-8) {
        let e = x == y ? 0 : abs(x - y) / max(abs(y), floor)
        worst = max(worst, e)
        XCTAssertLessThanOrEqual(e, tol, "\(label) \(what): \(x) vs \(y)", file: file, line: line)
    }
    func checkMap(_ x: [String: Double], _ y: [String: Double], _ what: String, floor: Double = 1e-8) {
        XCTAssertEqual(Set(x.keys), Set(y.keys), "\(label) \(what) names", file: file, line: line)
        for (k, v) in y { check(x[k] ?? .nan, v, "\(what) \(k)", floor: floor) }
    }
    check(a.objective, b.objective, "criterion")
    XCTAssertEqual(a.theta.count, b.theta.count, "\(label) θ length", file: file, line: line)
    for (k, (x, y)) in zip(a.theta, b.theta).enumerated() { check(x, y, "θ[\(k)]") }
    XCTAssertEqual(a.fixedEffects.map(\.name), b.fixedEffects.map(\.name), "\(label) fixed-effect names", file: file, line: line)
    for (x, y) in zip(a.fixedEffects, b.fixedEffects) {
        check(x.estimate, y.estimate, "\(x.name) estimate", floor: y.stdError)
        check(x.stdError, y.stdError, "\(x.name) SE")
    }
    XCTAssertEqual(a.varianceComponents.count, b.varianceComponents.count, "\(label) variance components", file: file, line: line)
    for (x, y) in zip(a.varianceComponents, b.varianceComponents) {
        XCTAssertEqual([x.group, x.var1 ?? "", x.var2 ?? ""], [y.group, y.var1 ?? "", y.var2 ?? ""], file: file, line: line)
        check(x.vcov, y.vcov, "vcov \(x.group) \(x.var1 ?? "") \(x.var2 ?? "")")
        check(x.sdcor, y.sdcor, "sdcor \(x.group) \(x.var1 ?? "") \(x.var2 ?? "")")
    }
    check(a.sigma, b.sigma, "sigma")
    check(a.loglik, b.loglik, "logLik")
    XCTAssertEqual(a.nObs, b.nObs, "\(label) n_obs", file: file, line: line)
    XCTAssertEqual(a.nGroups, b.nGroups, "\(label) n_groups", file: file, line: line)
    XCTAssertEqual(a.converged, b.converged, "\(label) converged", file: file, line: line)
    XCTAssertEqual(a.singular, b.singular, "\(label) singular", file: file, line: line)
    XCTAssertEqual(a.sites.map(\.site), b.sites.map(\.site), "\(label) sites", file: file, line: line)
    // Site effects near zero: relative to the effect's standard deviation.
    let sd = Dictionary(a.varianceComponents.filter { $0.group == "site" && $0.var2 == nil }.map { ($0.var1 ?? "", $0.sdcor) },
                        uniquingKeysWith: { x, _ in x })
    for (x, y) in zip(a.sites, b.sites) {
        XCTAssertEqual([x.nRows, x.nUsed], [y.nRows, y.nUsed], "\(label) site \(x.site) rows", file: file, line: line)
        XCTAssertEqual(x.missing, y.missing, "\(label) site \(x.site) missing", file: file, line: line)
        let floor = max(sd.values.max() ?? 1e-8, 1e-8)
        checkMap(x.effects, y.effects, "site \(x.site) effect", floor: floor)
        checkMap(x.condSD, y.condSD, "site \(x.site) cond sd")
        checkMap(x.ownEffects, y.ownEffects, "site \(x.site) own effect", floor: floor)
        checkMap(x.coefficients, y.coefficients, "site \(x.site) coefficient")
    }
    return worst
}

/// The error `body` throws, or nil (failing the test) when it returns.
func thrownError<T>(_ body: () throws -> T, _ message: String = "expected an error",
                    file: StaticString = #filePath, line: UInt = #line) -> Error? {
    do { _ = try body(); XCTFail(message, file: file, line: line); return nil } catch { return error }
}

// A wire that can be cut, stalled or made to trickle: ShapingProxy (ResilienceSupport.swift).

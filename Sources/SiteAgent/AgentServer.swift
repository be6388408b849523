// The agent's network side: a mutual-TLS listener, one thread per
// connection, the hello exchange, then one answer per request line. Every
// line in and out passes the audit hook before anything is sent, and nothing
// a peer sends can stop the server: bad lines get error answers.

import Foundation
import Protocol
import Synchronization

/// Receives every message the agent reads and writes, before the answer goes out.
public protocol AuditSink: Sendable {
    func record(direction: AuditDirection, peer: PeerIdentity, line: String) throws
}
public enum AuditDirection: String, Sendable { case received, sent }

/// Structured log lines on standard error: one JSON object per event.
public struct AgentLog: Sendable {
    public var enabled = true
    public init(enabled: Bool = true) { self.enabled = enabled }
    public func event(_ name: String, _ fields: [String: String] = [:]) {
        guard enabled else { return }
        var f = fields
        f["event"] = name
        f["time"] = ISO8601DateFormatter().string(from: Date())
        let body = f.keys.sorted().map { "\"\($0)\":\(jsonString(f[$0]!))" }.joined(separator: ",")
        FileHandle.standardError.write(Data(("{" + body + "}\n").utf8))
    }
    func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

public final class AgentServer: Sendable {
    public let service: SiteService
    public let maxLineBytes: Int
    public let log: AgentLog
    private let listener: TLSListener
    private let audit: AuditSink?
    private let connections = Mutex(0)
    /// Most connections served at once.
    public static let maxConnections = 128

    public init(service: SiteService, host: String, port: Int, context: TLSContext,
                maxLineBytes: Int = defaultMaxLineBytes, audit: AuditSink? = nil, log: AgentLog = AgentLog(),
                ioTimeout: Double = 300) throws {
        self.service = service
        self.maxLineBytes = maxLineBytes
        self.audit = audit
        self.log = log
        listener = try TLSListener(host: host, port: port, context: context, ioTimeout: ioTimeout)
    }

    /// The server a configuration describes. Without an `audit` sink, the
    /// audit log named by `audit_log` is opened (created, or verified: a log
    /// whose hash chain is broken stops the agent from starting), and the
    /// sessions of the last 24 hours are read back from it for
    /// max_sessions_per_day.
    public convenience init(config: AgentConfig, audit: AuditSink? = nil, log: AgentLog = AgentLog()) throws {
        let context = try TLSContext.server(identity: TLSIdentity(certificatePath: config.tls.certificate, keyPath: config.tls.key,
                                                                  caPath: config.tls.ca),
                                            allowedPeerNames: config.tls.allowedCoordinators)
        let service = SiteService(config: config)
        var sink = audit
        if sink == nil, let path = config.auditLog {
            let auditLog = try AuditLog.open(path: path, retentionDays: config.auditRetentionDays)
            service.seedSessionStarts(try auditLog.sessionStarts(since: Date().addingTimeInterval(-SessionBudget.window)))
            try service.persistSubsetHistory(at: path + ".subsets")
            sink = auditLog
        }
        try self.init(service: service, host: config.host, port: config.port, context: context,
                      maxLineBytes: config.maxLineBytes, audit: sink, log: log)
    }

    /// The audit log lines are written to, when it is the SQLite audit log.
    public var auditLog: AuditLog? { audit as? AuditLog }

    /// The bound port (useful with port 0).
    public var port: Int { listener.port }

    /// Replaces certificates and trusted coordinators for new connections.
    public func replaceContext(_ c: TLSContext) { listener.replaceContext(c) }

    /// Accepts connections until `stop()`; each is served on its own thread.
    public func serve() {
        log.event("listening", ["site": service.site, "port": String(port)])
        while true {
            let incoming: TLSIncomingConnection
            do { incoming = try listener.acceptIncoming() } catch TLSError.closed { break } catch {
                log.event("accept_failed", ["error": "\(error)"])
                if case TLSError.closed = error { break }
                Thread.sleep(forTimeInterval: 0.05)
                continue
            }
            // A bound on connections (authenticated or not) keeps a flood of
            // TCP clients from exhausting threads and file descriptors.
            let admitted = connections.withLock { n -> Bool in
                guard n < Self.maxConnections else { return false }
                n += 1
                return true
            }
            guard admitted else {
                log.event("connection_refused", ["peer_address": incoming.peerAddress, "reason": "too many connections (\(Self.maxConnections))"])
                incoming.close()
                continue
            }
            let thread = Thread { [self] in
                self.serve(incoming)
                self.connections.withLock { $0 -= 1 }
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
        log.event("stopped", ["site": service.site])
    }

    /// Starts `serve()` on a background thread.
    public func start() {
        let t = Thread { [self] in self.serve() }
        t.start()
    }

    public func stop() { listener.close() }

    private func serve(_ incoming: TLSIncomingConnection) {
        let conn: TLSConnection
        do { conn = try incoming.handshake() } catch {
            log.event("connection_refused", ["peer_address": incoming.peerAddress, "reason": "\(error)"])
            return
        }
        defer { conn.close() }
        let peer = PeerIdentity(subject: conn.peerSubject, fingerprint: conn.peerFingerprintSHA256)
        log.event("connection", ["peer": conn.peerSubject, "peer_address": conn.peerAddress, "tls": conn.protocolVersion])
        do {
            try send(Hello(role: "agent", site: service.site, software: fedmixAgentVersion, maxLineBytes: maxLineBytes), conn, peer)
            guard let first = try conn.readLine(maxBytes: maxLineBytes) else { return }
            try audit?.record(direction: .received, peer: peer, line: first)
            let hello: Hello
            do { hello = try LineCodec.decodeHello(first) } catch {
                try sendError(ErrorReply(code: "expected_hello", fatal: true, message: "the first line must be the coordinator's hello: \(error)"), id: 0, conn, peer)
                return
            }
            guard hello.protocolVersion == protocolVersion else {
                let e = ProtocolError.versionMismatch(ours: protocolVersion, theirs: hello.protocolVersion)
                try sendError(ErrorReply(code: e.code, fatal: true, message: e.description), id: 0, conn, peer)
                log.event("version_mismatch", ["peer": conn.peerSubject, "theirs": String(hello.protocolVersion)])
                return
            }
            while true {
                let line: String
                do {
                    guard let l = try conn.readLine(maxBytes: maxLineBytes) else { break }
                    line = l
                } catch TLSError.lineTooLong(let limit) {
                    try sendError(ErrorReply(code: "line_too_long", fatal: true,
                        message: "a line exceeded this agent's limit of \(limit) bytes; the connection is closed"), id: 0, conn, peer)
                    log.event("line_too_long", ["peer": conn.peerSubject])
                    break
                } catch TLSError.invalidUTF8 {
                    try sendError(ErrorReply(code: "invalid_utf8", fatal: true, message: "a line was not valid UTF-8; the connection is closed"), id: 0, conn, peer)
                    break
                }
                try audit?.record(direction: .received, peer: peer, line: line)
                let answer = service.handle(line: line, peer: peer)
                try audit?.record(direction: .sent, peer: peer, line: answer)
                try conn.writeLine(answer)
            }
        } catch {
            log.event("connection_error", ["peer": conn.peerSubject, "error": "\(error)"])
        }
        log.event("connection_closed", ["peer": conn.peerSubject, "bytes_read": String(conn.bytesRead), "bytes_written": String(conn.bytesWritten)])
    }

    private func send(_ hello: Hello, _ conn: TLSConnection, _ peer: PeerIdentity) throws {
        let line = try LineCodec.encode(hello)
        try audit?.record(direction: .sent, peer: peer, line: line)
        try conn.writeLine(line)
    }

    private func sendError(_ e: ErrorReply, id: Int, _ conn: TLSConnection, _ peer: PeerIdentity) throws {
        let line = try LineCodec.encode(Reply.error(e), id: id)
        try audit?.record(direction: .sent, peer: peer, line: line)
        try conn.writeLine(line)
    }
}

/// The agent's software version (reported in its hello and by --version).
public let fedmixAgentVersion = "0.1.0"

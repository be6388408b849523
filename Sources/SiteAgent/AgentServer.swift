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
    /// Records a line about to be sent and returns the chain head after it
    /// (for the answer's receipt); nil when the sink keeps no hash chain.
    func recordSent(peer: PeerIdentity, line: String) throws -> AuditHead?
    /// Records a short note about a peer's line that is not stored in full
    /// (longer than the entry limit, or not UTF-8): its length and digest.
    func recordNote(peer: PeerIdentity, text: String) throws
}
public enum AuditDirection: String, Sendable { case received, sent }

extension AuditSink {
    public func recordSent(peer: PeerIdentity, line: String) throws -> AuditHead? {
        try record(direction: .sent, peer: peer, line: line)
        return nil
    }
    public func recordNote(peer: PeerIdentity, text: String) throws {}
}

/// The audit chain's head after an entry: its sequence number and hash.
public struct AuditHead: Sendable, Equatable {
    public var seq: Int
    public var hash: String
    public init(seq: Int, hash: String) { self.seq = seq; self.hash = hash }
}

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

/// The agent's server: admits connections, authenticates them, answers
/// requests, logs every line and signs a receipt for every answer.
///
/// Admission (why: anyone who can reach the port can open connections):
/// connections still in the TLS handshake have a budget of their own
/// (`limits.max_pending_handshakes`) and a short deadline
/// (`limits.handshake_timeout_seconds`); when the budget is full the oldest
/// pending handshake is dropped, so a flood of silent sockets ages out
/// instead of filling the server. Authenticated connections are capped per
/// certificate fingerprint and in total, so one analyst's connections
/// cannot keep another analyst out.
public final class AgentServer: Sendable {
    public let service: SiteService
    public let maxLineBytes: Int
    public let log: AgentLog
    public let limits: AgentLimits
    private let listener: TLSListener
    private let audit: AuditSink?
    private let admission = Mutex(Admission())
    /// Connections being served, so that stopping can end them before the
    /// last log line ("stopped" is the last event of a run).
    private let live = Mutex<[ObjectIdentifier: TLSConnection]>([:])

    private struct Admission {
        var nextID = 0
        /// Connections in the handshake, oldest first.
        var pending: [(id: Int, connection: TLSIncomingConnection)] = []
        /// Handshake threads still running (pending, or dropped and winding down).
        var handshakeThreads = 0
        var perCertificate: [String: Int] = [:]
        var authenticated = 0
        var droppedPending = 0
    }

    /// What the server is holding now (for tests and operators).
    public struct AdmissionCounts: Sendable, Equatable {
        public var pendingHandshakes: Int
        public var handshakeThreads: Int
        public var authenticated: Int
        /// Pending handshakes dropped to make room since the start.
        public var droppedPending: Int
    }
    public var admissionCounts: AdmissionCounts {
        admission.withLock { AdmissionCounts(pendingHandshakes: $0.pending.count, handshakeThreads: $0.handshakeThreads,
                                             authenticated: $0.authenticated, droppedPending: $0.droppedPending) }
    }

    public init(service: SiteService, host: String, port: Int, context: TLSContext,
                maxLineBytes: Int = ProtocolLimits.maxLineBytes, audit: AuditSink? = nil, log: AgentLog = AgentLog(),
                ioTimeout: Double = 300, limits: AgentLimits = AgentLimits()) throws {
        self.service = service
        self.maxLineBytes = maxLineBytes
        self.audit = audit
        self.log = log
        self.limits = limits
        listener = try TLSListener(host: host, port: port, context: context,
                                   handshakeTimeout: limits.handshakeTimeoutSeconds, ioTimeout: ioTimeout, backlog: 512)
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
        let service = SiteService(config: config, log: log)
        var sink = audit
        if sink == nil, let path = config.auditLog {
            let auditLog = try AuditLog.open(path: path, retentionDays: config.auditRetentionDays,
                                             maxEntryBytes: config.limits.maxAuditEntryBytes)
            service.seedSessionStarts(try auditLog.sessionStarts(since: Date().addingTimeInterval(-SessionBudget.window)))
            try service.persistSubsetHistory(at: path + ".subsets")
            sink = auditLog
        }
        try self.init(service: service, host: config.host, port: config.port, context: context,
                      maxLineBytes: config.maxLineBytes, audit: sink, log: log, limits: config.limits)
    }

    /// The audit log lines are written to, when it is the SQLite audit log.
    public var auditLog: AuditLog? { audit as? AuditLog }

    /// The bound port (useful with port 0).
    public var port: Int { listener.port }

    /// Replaces certificates and trusted coordinators for new connections.
    public func replaceContext(_ c: TLSContext) { listener.replaceContext(c) }

    /// Accepts connections until `stop()`; each handshake, and each
    /// authenticated connection, runs on its own thread.
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
            // Threads winding down after a drop end within 50 ms: wait for
            // them (up to 200 ms) rather than refuse the newcomer, who may be
            // the analyst the flood is trying to keep out.
            var waited = 0.0
            while waited < 0.2, admission.withLock({ $0.handshakeThreads >= 2 * limits.maxPendingHandshakes }) {
                Thread.sleep(forTimeInterval: 0.005)
                waited += 0.005
            }
            let (id, victim, refused) = admission.withLock { a -> (Int, TLSIncomingConnection?, Bool) in
                if a.handshakeThreads >= 2 * limits.maxPendingHandshakes { return (0, nil, true) }
                var victim: TLSIncomingConnection? = nil
                if a.pending.count >= limits.maxPendingHandshakes {
                    victim = a.pending.removeFirst().connection
                    a.droppedPending += 1
                }
                a.nextID += 1
                a.pending.append((a.nextID, incoming))
                a.handshakeThreads += 1
                return (a.nextID, victim, false)
            }
            if refused {
                log.event("connection_refused", ["peer_address": incoming.peerAddress,
                                                 "reason": "too many connections in the TLS handshake (limits.max_pending_handshakes \(limits.maxPendingHandshakes))"])
                incoming.close()
                continue
            }
            if let victim {
                victim.abort()
                log.event("connection_dropped", ["peer_address": victim.peerAddress,
                                                 "reason": "the oldest pending TLS handshake, dropped for a new connection (limits.max_pending_handshakes \(limits.maxPendingHandshakes))"])
            }
            let thread = Thread { [self] in self.handshakeThenServe(incoming, id: id) }
            thread.stackSize = 1 << 22
            thread.start()
        }
        // Let the connections still served finish (a second), then end the
        // idle ones, so that "stopped" is the run's last event.
        func drain(_ seconds: Double) {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline && live.withLock({ !$0.isEmpty }) { usleep(5_000) }
        }
        drain(1)
        for c in live.withLock({ Array($0.values) }) { c.interrupt() }
        drain(1)
        log.event("stopped", ["site": service.site])
    }

    /// Starts `serve()` on a background thread.
    public func start() {
        let t = Thread { [self] in self.serve() }
        t.start()
    }

    public func stop() { listener.close() }

    private func handshakeThenServe(_ incoming: TLSIncomingConnection, id: Int) {
        let result = Result { try incoming.handshake(timeout: limits.handshakeTimeoutSeconds) }
        admission.withLock { a in
            a.pending.removeAll { $0.id == id }
            a.handshakeThreads -= 1
        }
        let conn: TLSConnection
        switch result {
        case .success(let c): conn = c
        case .failure(let error):
            if case TLSError.closed = error { return }   // dropped for a newer connection; logged then
            log.event("connection_refused", ["peer_address": incoming.peerAddress, "reason": "\(error)"])
            return
        }
        let fingerprint = conn.peerFingerprintSHA256
        let refusal: String? = admission.withLock { a in
            if a.authenticated >= limits.maxConnections {
                return "the agent serves at most \(limits.maxConnections) connections at once (limits.max_connections); try again later"
            }
            if a.perCertificate[fingerprint, default: 0] >= limits.maxConnectionsPerCertificate {
                return "this certificate already has \(limits.maxConnectionsPerCertificate) connections open to the agent (limits.max_connections_per_certificate); close some, or wait for them to end"
            }
            a.authenticated += 1
            a.perCertificate[fingerprint, default: 0] += 1
            return nil
        }
        if let refusal {
            // Not in the audit log: the line carries nothing from the data,
            // and a flood of refusals must not fill the log.
            log.event("connection_refused", ["peer": conn.peerSubject, "peer_address": conn.peerAddress, "reason": refusal])
            if let line = try? LineCodec.encode(Reply.error(ErrorReply(code: .tooManyConnections, fatal: true, message: refusal)), id: 0) {
                try? conn.writeLine(line)
            }
            conn.close()
            return
        }
        serve(conn)
        admission.withLock { a in
            a.authenticated -= 1
            a.perCertificate[fingerprint, default: 1] -= 1
            if a.perCertificate[fingerprint] == 0 { a.perCertificate[fingerprint] = nil }
        }
    }

    private func serve(_ conn: TLSConnection) {
        live.withLock { $0[ObjectIdentifier(conn)] = conn }
        defer { conn.close(); live.withLock { $0[ObjectIdentifier(conn)] = nil } }
        let peer = PeerIdentity(subject: conn.peerSubject, fingerprint: conn.peerFingerprintSHA256)
        log.event("connection", ["peer": conn.peerSubject, "peer_address": conn.peerAddress, "tls": conn.protocolVersion])
        do {
            try send(Hello(role: "agent", site: service.site, software: fedmixAgentVersion, maxLineBytes: maxLineBytes), conn, peer)
            guard let first = try readRequest(conn, peer) else { return }
            try audit?.record(direction: .received, peer: peer, line: first)
            let hello: Hello
            do { hello = try LineCodec.decodeHello(first) } catch {
                try sendLine(try LineCodec.encode(Reply.error(ErrorReply(code: .expectedHello, fatal: true,
                    message: "the first line must be the coordinator's hello")), id: 0), conn, peer)
                return
            }
            guard hello.protocolVersion == protocolVersion else {
                let e = ProtocolError.versionMismatch(ours: protocolVersion, theirs: hello.protocolVersion)
                try sendError(ErrorReply(code: e.code, fatal: true, message: e.description), id: 0, conn, peer)
                log.event("version_mismatch", ["peer": conn.peerSubject, "theirs": String(hello.protocolVersion)])
                return
            }
            while true {
                guard let line = try readRequest(conn, peer) else { break }
                // Nothing longer than the audit entry limit is processed: it
                // could not be logged in full. Its length and digest are.
                if line.utf8.count > limits.maxAuditEntryBytes {
                    try audit?.recordNote(peer: peer, text: Self.note("request_not_recorded", bytes: line.utf8.count + 1,
                        sha256: SHA256Digest.hex(Array(line.utf8)), reason: "longer than limits.max_audit_entry_bytes"))
                    try sendError(ErrorReply(code: .lineTooLong, fatal: false,
                        message: "a request of \(line.utf8.count) bytes exceeds the \(limits.maxAuditEntryBytes) bytes this agent logs in full (limits.max_audit_entry_bytes); it was not processed"), id: 0, conn, peer)
                    continue
                }
                let read = LineCodec.readRequest(line)
                if case .success(.batch(let batch)) = read.request {
                    guard try answer(batch, line: line, conn, peer) else { break }
                    continue
                }
                try audit?.record(direction: .received, peer: peer, line: line)
                // Requests queued before the peer left are not worked on.
                if conn.peerHasClosed {
                    log.event("request_abandoned", ["peer": conn.peerSubject, "reason": "the peer closed the connection before this request was answered; it was not processed"])
                    break
                }
                guard var answer = answerUnlessPeerLeft(read, peer: peer, conn: conn) else {
                    log.event("request_abandoned", ["peer": conn.peerSubject, "reason": "the peer closed the connection while its request was being answered; the answer was not computed further, logged or sent"])
                    break
                }
                answer = try withinAnswerLimit(answer, to: line)
                try sendLine(answer, conn, peer)
            }
        } catch {
            log.event("connection_error", ["peer": conn.peerSubject, "error": "\(error)"])
        }
        log.event("connection_closed", ["peer": conn.peerSubject, "bytes_read": String(conn.bytesRead), "bytes_written": String(conn.bytesWritten)])
    }

    /// An answer, or the error saying it is over the site's answer limit.
    private func withinAnswerLimit(_ answer: String, to line: String) throws -> String {
        let limit = min(limits.maxAnswerBytes, limits.maxAuditEntryBytes)
        guard answer.utf8.count > limit else { return answer }
        return try LineCodec.encode(Reply.error(ErrorReply(code: .answerTooLarge, fatal: false,
            message: "the answer would be \(answer.utf8.count) bytes; this site sends at most \(limit) (limits.max_answer_bytes). Use fewer columns or covariance parameters, or a lower derivative order")), id: LineCodec.peekID(line) ?? 0)
    }

    /// Answers a batch (BatchAnswering.swift): a note for the batch line,
    /// then each sub-request exactly as if it had arrived alone, logged as
    /// its own received and sent entries, its answer with its own receipt;
    /// the batched line (the sub-answers as sent) is noted, not stored twice.
    /// False when the peer left mid-batch.
    private func answer(_ batch: BatchRequest, line: String, _ conn: TLSConnection, _ peer: PeerIdentity) throws -> Bool {
        try audit?.recordNote(peer: peer, text: Self.note("batch_received", bytes: line.utf8.count + 1, sha256: SHA256Digest.hex(Array(line.utf8)),
                                                          reason: "\(batch.requests.count) requests, each logged as its own entry"))
        let answers = try SiteService.answerBatch(batch.requests, maxBytes: service.batchAnswerBudget) { sub -> String? in
            try audit?.record(direction: .received, peer: peer, line: sub)
            if conn.peerHasClosed { return nil }
            guard let answer = answerUnlessPeerLeft(LineCodec.readRequest(sub), peer: peer, conn: conn) else { return nil }
            return try receipted(try withinAnswerLimit(answer, to: sub), peer, conn.context)
        }
        guard let answers else {
            log.event("request_abandoned", ["peer": conn.peerSubject, "reason": "the peer closed the connection during a batch; its remaining requests were not processed"])
            return false
        }
        let out = try LineCodec.encode(Reply.batched(BatchReply(answers: answers)), id: LineCodec.peekID(line) ?? 0)
        try audit?.recordNote(peer: peer, text: Self.note("batch_sent", bytes: out.utf8.count + 1, sha256: SHA256Digest.hex(Array(out.utf8)),
                                                          reason: "\(answers.count) answers, each logged as its own entry"))
        try conn.writeLine(out)
        return true
    }

    /// The next request line; nil when the peer closed. A line that is too
    /// long or not UTF-8 is logged as its length and digest (never its
    /// text), answered with a fatal error, and ends the connection (nil).
    private func readRequest(_ conn: TLSConnection, _ peer: PeerIdentity) throws -> String? {
        do { return try conn.readLine(maxBytes: maxLineBytes) }
        catch TLSError.lineTooLong(let limit) {
            let seen = conn.rejectedLine
            try audit?.recordNote(peer: peer, text: Self.note("request_not_recorded", bytes: seen?.bytes ?? limit + 1,
                sha256: seen?.sha256 ?? "", reason: "longer than max_line_bytes (\(limit)); bytes and digest cover what was read before the agent stopped reading"))
            try sendError(ErrorReply(code: .lineTooLong, fatal: true,
                message: "a line exceeded this agent's limit of \(limit) bytes; the connection is closed"), id: 0, conn, peer)
            log.event("line_too_long", ["peer": conn.peerSubject])
            return nil
        } catch TLSError.invalidUTF8 {
            let seen = conn.rejectedLine
            try audit?.recordNote(peer: peer, text: Self.note("request_not_recorded", bytes: seen?.bytes ?? 0,
                sha256: seen?.sha256 ?? "", reason: "not valid UTF-8"))
            try sendError(ErrorReply(code: .invalidUTF8, fatal: true, message: "a line was not valid UTF-8; the connection is closed"), id: 0, conn, peer)
            return nil
        }
    }

    static func note(_ type: String, bytes: Int, sha256: String, reason: String) -> String {
        let e = JSONEncoder(); e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = ["type": type, "sha256": sha256, "reason": reason]
        var text = String(decoding: (try? e.encode(body)) ?? Data("{}".utf8), as: UTF8.self)
        text.removeLast()
        return text + ",\"bytes\":\(bytes)}"
    }

    /// Answers a request line (read once) on the connection's own thread;
    /// nil when the peer has closed by the time the work would start or its
    /// answer be encoded (then nothing more is computed, logged or sent).
    /// Those two checks are the only points the service can stop at, so a
    /// second thread watching the connection meanwhile would learn nothing
    /// sooner; it cost two thread wake-ups per request.
    private func answerUnlessPeerLeft(_ read: (id: Int?, request: Result<Request, any Error>), peer: PeerIdentity, conn: TLSConnection) -> String? {
        service.handle(read: read, peer: peer, isCancelled: { conn.peerHasClosed })
    }

    private func send(_ hello: Hello, _ conn: TLSConnection, _ peer: PeerIdentity) throws {
        let line = try LineCodec.encode(hello)
        try audit?.record(direction: .sent, peer: peer, line: line)
        try conn.writeLine(line)
    }

    private func sendError(_ e: ErrorReply, id: Int, _ conn: TLSConnection, _ peer: PeerIdentity) throws {
        try sendLine(try LineCodec.encode(Reply.error(e), id: id), conn, peer)
    }

    /// Logs an answer line, then sends it with its receipt: the chain head
    /// after the answer's entry, signed with the key of the certificate
    /// this connection presented (so the coordinator can check it against
    /// the peer certificate it verified, even after a rotation).
    private func sendLine(_ line: String, _ conn: TLSConnection, _ peer: PeerIdentity) throws {
        try conn.writeLine(try receipted(line, peer, conn.context))
    }

    /// Logs an answer line and returns it with its receipt (as sent alone or in a batch).
    private func receipted(_ line: String, _ peer: PeerIdentity, _ context: TLSContext) throws -> String {
        guard let head = try audit?.recordSent(peer: peer, line: line) else { return line }
        let receipt = try Receipt.sign(site: service.site, seq: head.seq, hash: head.hash, context: context)
        return try receipt.appended(to: line)
    }
}

/// The agent's software version (reported in its hello and by --version).
public let fedmixAgentVersion = "0.1.0"

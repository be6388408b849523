// A channel to a site agent over mutual TLS: connect, exchange hellos (the
// agent speaks first), then one request line and one answer line at a time.

import Foundation
import Protocol
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How long the coordinator waits for sites, and how it treats slow ones.
/// From the sites file (`connect_timeout`, `round_timeout`,
/// `reconnect_budget`, `min_bytes_per_second`) or the command line; the
/// defaults suit hospital networks: a round may take minutes at a large site,
/// a handshake never should.
public struct NetworkPolicy: Sendable, Equatable {
    /// Seconds for TCP connect, TLS handshake and the agent's hello.
    public var connectTimeout: Double = 10
    /// Seconds a site may take to answer one request (computing included).
    public var roundTimeout: Double = 120
    /// Seconds a site may stay unreachable (connection dropped, agent
    /// restarting) before the fit fails; 0 disables reconnecting.
    public var reconnectBudget: Double = 30
    /// Once an answer has started to arrive, it must keep arriving at this
    /// average rate (bytes per second, after `rateGraceSeconds`): an agent
    /// or a link trickling a large answer fails instead of holding the fit.
    /// Progress is seen per TLS record (up to 16 KiB): a peer trickling the
    /// bytes of one record is caught by the round deadline instead.
    public var minimumBytesPerSecond: Double = 1024
    public var rateGraceSeconds: Double = 3
    public init() {}
}

public final class TLSChannel: SiteChannel, Sendable {
    public let site: String
    public var agentSoftware: String { link.withLock { $0.agentSoftware } }
    /// The current connection, under a lock of its own: the watchdog lowers
    /// its read timeout from its own thread while a call reads.
    private let link: Mutex<Link>
    private struct Link {
        var connection: TLSConnection
        var agentSoftware: String
        /// Bytes of connections replaced by reconnecting.
        var previousBytes = (sent: 0, received: 0)
    }
    private var connection: TLSConnection { link.withLock { $0.connection } }
    /// Held for the whole of a call (request, answer, reconnects): one call
    /// at a time. A lock, not a Mutex, so that a pipelined call can hold it
    /// from `start` to `finish`.
    private let calling = NSLock()
    private func serialized<T>(_ body: () throws -> T) rethrows -> T {
        calling.lock()
        defer { calling.unlock() }
        return try body()
    }
    /// What calls keep between them; changed only while `calling` is held.
    private let memory = Mutex(Memory())
    private struct Memory {
        var nextID = 0
        /// Prepare requests answered on this channel, by session, with their answers (to re-prepare after an agent restart).
        var prepared: [String: (request: PrepareRequest, reply: Reply)] = [:]
        /// What the channel did to keep a fit going (reconnects, re-prepares), for the result's messages.
        var events: [String] = []
        var kept: [Receipt] = []
        /// Bytes of the last answer read (see `pipelines`).
        var lastAnswerBytes = 0
    }
    private let maxLineBytes: Int
    private let endpoint: (host: String, port: Int, context: TLSContext, serverName: String)
    public let policy: NetworkPolicy

    /// Connects to the agent of `site` at host:port, verifying its certificate
    /// for `serverName`, and checks that the agent says it is that site.
    public init(site: String, host: String, port: Int, context: TLSContext, serverName: String,
                timeout: Double? = nil, maxLineBytes: Int = ProtocolLimits.maxLineBytes, policy: NetworkPolicy = NetworkPolicy()) throws {
        self.site = site
        self.maxLineBytes = maxLineBytes
        var policy = policy
        if let timeout { policy.connectTimeout = timeout }
        self.policy = policy
        endpoint = (host, port, context, serverName)
        let (connection, agentSoftware) = try Self.open(site: site, host: host, port: port, context: context, serverName: serverName,
                                                        timeout: policy.connectTimeout, maxLineBytes: maxLineBytes)
        link = Mutex(Link(connection: connection, agentSoftware: agentSoftware))
    }

    /// TCP connect, TLS handshake and the hello exchange, all within `timeout` seconds.
    private static func open(site: String, host: String, port: Int, context: TLSContext, serverName: String,
                             timeout: Double, maxLineBytes: Int) throws -> (TLSConnection, String) {
        let started = monotonicNow()
        let connection: TLSConnection
        do {
            connection = try TLSConnection.connect(host: host, port: port, context: context, serverName: serverName,
                                                   timeout: timeout, ioTimeout: timeout)
        } catch {
            // Refused, reset, unreachable or slow: worth retrying while reconnecting. A certificate problem is not.
            throw SiteFailure(site: site, message: "cannot connect to \(host):\(port): \(error)", code: isTransient(error) ? "connect_failed" : "tls_refused")
        }
        do {
            connection.readTimeout = max(0.001, timeout - (monotonicNow() - started))
            let line: String?
            do { line = try connection.readLine(maxBytes: maxLineBytes) } catch TLSError.timeout(.read) {
                throw SiteFailure(site: site, message: "connected to \(host):\(port) but the agent sent no hello within \(seconds(timeout)) (--connect-timeout)", code: .connectFailed)
            }
            guard let line else {
                throw SiteFailure(site: site, message: "the agent closed the connection before its hello", code: .connectFailed)
            }
            let hello: Hello
            if let h = try? LineCodec.decodeHello(line) { hello = h }
            else if case .error(let e)? = try? LineCodec.decodeReply(line).reply {
                throw SiteFailure(site: site, message: "the agent refused the connection: \(e.message)", code: e.code)
            } else { throw SiteFailure(site: site, message: "the agent's first line is not a hello") }
            guard hello.protocolVersion == protocolVersion else {
                throw SiteFailure(site: site, message: ProtocolError.versionMismatch(ours: protocolVersion, theirs: hello.protocolVersion).description)
            }
            guard hello.site == site else {
                throw SiteFailure(site: site, message: "the agent at \(host):\(port) says it is site \"\(TerminalText.clean(String((hello.site ?? "?").prefix(200))))\"; check the sites file")
            }
            try connection.writeLine(LineCodec.encode(Hello(role: "coordinator", site: nil, software: fedmixVersion)))
            return (connection, TerminalText.clean(String(hello.software.prefix(200))))
        } catch let f as SiteFailure { connection.close(); throw f } catch {
            connection.close()
            throw SiteFailure(site: site, message: "hello failed: \(error)", code: .connectFailed)
        }
    }

    public func call(_ request: Request) throws -> Reply { try call(request, round: nil) }

    /// Sends a request and returns its answer, surviving a dropped
    /// connection and a restarted agent: the connection is re-established
    /// (bounded exponential backoff, within `policy.reconnectBudget` seconds
    /// of the outage), a session the agent no longer knows is prepared again
    /// with the same id and model (the agent's prepare is idempotent, and it
    /// must answer exactly as before), and the request in flight is sent
    /// again (an evaluation at the same parameters gives the same bits), so a
    /// fit that survives a fault ends with the result it would have had.
    public func call(_ request: Request, round: Int?) throws -> Reply {
        try serialized { try serializedCall(request, round: round) }
    }

    /// True while the site's last answer was small (at most
    /// `pipelinedAnswerBytes`). A pipelined round reads answers in site
    /// order, so an answer larger than the sockets' buffers would hold its
    /// agent in its write until the sites before it have answered; rounds
    /// with such answers are few and long, and keep a thread per site.
    public var pipelines: Bool { memory.withLock { $0.lastAnswerBytes } <= Self.pipelinedAnswerBytes }
    /// Half the receive buffer Linux gives a TCP socket by default
    /// (tcp_rmem, 128 KiB): such an answer fits in this side's socket.
    static let pipelinedAnswerBytes = 64 << 10

    /// Sends `request` and returns without reading its answer, holding the
    /// channel until `finish`; a failure to send is kept for `finish`, which
    /// handles it as `call` would (reconnecting, resending).
    public func start(_ request: Request, round: Int?) -> PendingCall {
        calling.lock()
        return PendingCall(request: request, round: round, sent: Result { try transmit(request, round: round) })
    }

    /// Bytes wait on the connection of a started call (its answer, a sent
    /// request having been answered before it was started).
    public func answerArriving(_ pending: PendingCall) -> Bool {
        link.withLock { $0.connection.hasInputWaiting }
    }

    /// Reads the answer to a started call (see `call(_:round:)`), and lets the channel go.
    public func finish(_ pending: PendingCall) throws -> Reply {
        defer { calling.unlock() }
        return try serializedCall(pending.request, round: pending.round, first: pending.sent)
    }

    /// A batch over this connection (BatchMessages.swift): the same
    /// reconnecting as a single call; each sub-answer's receipt is checked
    /// and kept under its own session, and a sub-request whose session the
    /// agent lost (a restart) is answered again as `call` would, alone.
    public func call(batch requests: [Request], round: Int?) throws -> [Reply] {
        try serialized {
            var replies = try reconnecting(what: "batch of \(requests.count)\(round.map { " (round \($0))" } ?? "")") {
                try exchange(batch: requests, round: round)
            }
            for k in requests.indices {
                if case .error(let e) = replies[k], e.code == .unknownSession, let session = requests[k].session,
                   memory.withLock({ $0.prepared[session] }) != nil, requests[k].typeName != "prepare" {
                    replies[k] = try serializedCall(requests[k], round: round)
                } else if case .prepare(let p) = requests[k], case .prepared = replies[k] {
                    memory.withLock { $0.prepared[p.session] = (p, replies[k]) }
                }
            }
            return replies
        }
    }

    /// One batch line and its answer; the deadline is the round timeout per sub-request.
    private func exchange(batch requests: [Request], round: Int?) throws -> [Reply] {
        let ids = memory.withLock { m in (0...requests.count).map { _ in m.nextID += 1; return m.nextID } }
        let lines = try zip(requests, ids.dropFirst()).map { try LineCodec.encode($0, id: $1) }
        let reply = try exchange(.batch(BatchRequest(requests: lines)), round: round, id: ids[0],
                                 timeout: policy.roundTimeout * Double(requests.count))
        return try zip(batchAnswers(reply, ids: Array(ids.dropFirst())), requests).map { answer, request in
            try keepReceipt(of: answer.line, for: request)
            return answer.reply
        }
    }

    /// Runs `body`, reconnecting (within the reconnect budget) and running it
    /// again when the connection is lost.
    private func reconnecting<T>(what: String, _ body: () throws -> T) throws -> T {
        var outageStarted: Double? = nil
        var resends = 0
        while true {
            do { return try body() } catch let f as SiteFailure where f.code == .connectionLost && policy.reconnectBudget > 0 && resends < 20 {
                let start = outageStarted ?? monotonicNow()
                outageStarted = start
                try reconnect(until: start + policy.reconnectBudget, cause: f, what: what)
                resends += 1
            }
        }
    }

    /// A call under the channel's lock; `first`, when given, is the
    /// outcome of sending the request already (`start`), whose answer is
    /// read in place of a first exchange.
    private func serializedCall(_ request: Request, round: Int?, first: Result<(id: Int, started: Double), any Error>? = nil) throws -> Reply {
        var outageStarted: Double? = nil
        var resends = 0
        var first = first
        while true {
            do {
                var reply: Reply
                if let sent = first {
                    first = nil
                    let (id, started) = try sent.get()
                    reply = try receive(request, round: round, id: id, started: started)
                } else {
                    reply = try exchange(request, round: round)
                }
                if case .error(let e) = reply, e.code == .unknownSession, let session = request.session,
                   let original = memory.withLock({ $0.prepared[session] }), request.typeName != "prepare" {
                    // The agent restarted and lost the session: prepare it again, then resend.
                    let again = try exchange(.prepare(original.request), round: round)
                    guard again == original.reply else {
                        if case .error = again { return again }
                        throw SiteFailure(site: site, message: "the agent restarted and answered prepare differently for the same model (its data or rules changed mid-fit); fit again", code: .changedAfterRestart)
                    }
                    record("\(request.typeName)\(round.map { " (round \($0))" } ?? ""): the agent had lost session \(session.prefix(8)); prepared it again")
                    reply = try exchange(request, round: round)
                }
                if case .prepare(let p) = request, case .prepared = reply { memory.withLock { $0.prepared[p.session] = (p, reply) } }
                return reply
            } catch let f as SiteFailure where f.code == .connectionLost && policy.reconnectBudget > 0 && resends < 20 {
                let start = outageStarted ?? monotonicNow()
                outageStarted = start
                try reconnect(until: start + policy.reconnectBudget, cause: f, what: Self.what(request, round))
                resends += 1
            }
        }
    }

    /// What the channel did to keep a fit going (reconnects, re-prepares), for the result's messages.
    public var recoveries: [String] { serialized { memory.withLock { $0.events } } }
    private func record(_ event: String) { memory.withLock { $0.events.append(event) } }

    /// Opens a new connection in place of a lost one, retrying with
    /// exponential backoff (0.1 s doubling to 5 s) until `deadline`.
    private func reconnect(until deadline: Double, cause: SiteFailure, what: String) throws {
        var delay = 0.1, attempts = 0
        var last: SiteFailure = cause
        while true {
            let remaining = deadline - monotonicNow()
            if remaining <= 0 {
                throw SiteFailure(site: site, message: "\(cause.message) during \(what); could not reconnect within the reconnect budget of \(seconds(policy.reconnectBudget)) (\(attempts) attempts; last: \(last.message)). Check that the agent runs and is reachable, or leave the site out with --exclude-sites \(site)",
                                  code: .connectionLost)
            }
            attempts += 1
            do {
                let (c, software) = try Self.open(site: site, host: endpoint.host, port: endpoint.port, context: endpoint.context,
                                                  serverName: endpoint.serverName, timeout: min(policy.connectTimeout, max(remaining, 0.5)),
                                                  maxLineBytes: maxLineBytes)
                link.withLock { l in
                    l.previousBytes.sent += l.connection.bytesWritten
                    l.previousBytes.received += l.connection.bytesRead
                    l.connection.close()
                    l.connection = c
                    l.agentSoftware = software
                }
                record("\(what): \(cause.message.hasPrefix("connection lost") ? cause.message : "connection lost: " + cause.message); reconnected after \(attempts) attempt\(attempts == 1 ? "" : "s")")
                return
            } catch let f as SiteFailure where f.code == .connectFailed || f.code == .tooManyConnections {
                last = f
                usleep(UInt32(max(0, min(delay, deadline - monotonicNow())) * 1e6))
                delay = min(delay * 2, 5)
            }
        }
    }

    /// "evaluate (round 7)".
    private static func what(_ request: Request, _ round: Int?) -> String {
        request.typeName + (round.map { " (round \($0))" } ?? "")
    }

    /// One request and its answer on the current connection, within the
    /// round deadline and the minimum transfer rate.
    private func exchange(_ request: Request, round: Int?, id given: Int? = nil, timeout: Double? = nil) throws -> Reply {
        let (id, started) = try transmit(request, round: round, id: given, timeout: timeout)
        return try receive(request, round: round, id: id, started: started, timeout: timeout)
    }

    /// Sends one request line on the current connection; its id and when it went out.
    private func transmit(_ request: Request, round: Int?, id given: Int? = nil, timeout: Double? = nil) throws -> (id: Int, started: Double) {
        let id = given ?? memory.withLock { $0.nextID += 1; return $0.nextID }
        let timeout = timeout ?? policy.roundTimeout
        let connection = self.connection
        let started = monotonicNow()
        try transportFailures(of: request, round: round) {
            connection.writeTimeout = max(0.001, timeout)
            do { try connection.writeLine(LineCodec.encode(request, id: id)) } catch let e as TLSError {
                // The agent may have refused the request (e.g. its line limit) and
                // closed: its fatal error answer says why, so prefer it.
                setReadTimeout(1)
                if let line = try? connection.readLine(maxBytes: maxLineBytes),
                   case .error(let reply)? = try? LineCodec.decodeReply(line).reply {
                    throw SiteFailure(site: site, message: reply.message, code: reply.code)
                }
                throw e
            }
        }
        return (id, started)
    }

    /// Reads and checks the answer to request `id`, sent at `started`, within
    /// `timeout` seconds of then (the round timeout unless given).
    private func receive(_ request: Request, round: Int?, id: Int, started: Double, timeout: Double? = nil) throws -> Reply {
        let deadline = started + (timeout ?? policy.roundTimeout)
        return try transportFailures(of: request, round: round) {
            let line = try readAnswer(started: started, deadline: deadline, what: Self.what(request, round))
            guard let line else {
                throw SiteFailure(site: site, message: "the agent closed the connection (the site disappeared mid-fit)", code: .connectionLost)
            }
            memory.withLock { $0.lastAnswerBytes = line.utf8.count }
            let (rid, reply) = try LineCodec.decodeReply(line)
            try keepReceipt(of: line, for: request)
            if case .error(let e) = reply, e.fatal { return reply }
            guard rid == id else { throw SiteFailure(site: site, message: "answered request \(rid) instead of \(id)") }
            return reply
        }
    }

    /// A transport error as the site's failure (lost, timed out).
    private func transportFailures<T>(of request: Request, round: Int?, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let f as SiteFailure { throw f } catch let e as TLSError {
            if case .timeout = e { throw SiteFailure(site: site, message: "the agent stopped taking data while sent \(Self.what(request, round)): \(e)", code: .timeout) }
            throw SiteFailure(site: site, message: "connection lost: \(e)", code: isTransient(e) ? "connection_lost" : "transport_error")
        }
    }

    /// Reads one answer line. The socket wait is cut into slices of at most
    /// a second (the timeout is set only when it changes: one system call
    /// less per exchange), and the watchdog interrupts a read that keeps receiving
    /// bytes, so that between slices the deadline and the transfer rate are
    /// checked even against a peer that sends a byte now and then; a partly
    /// read line stays buffered across slices.
    private func readAnswer(started: Double, deadline: Double, what: String) throws -> String? {
        let connection = self.connection
        let before = connection.bytesRead
        var firstByteAt: Double? = nil
        let ticket = DeadlineWatchdog.shared.watch(every: 1) { [weak self] in self?.interruptRead() }
        defer { DeadlineWatchdog.shared.unwatch(ticket) }
        while true {
            // Read first: an answer already here counts even if it is read
            // late (a pipelined round reads its sites' answers in order).
            setReadTimeout(max(0.001, min(1, deadline - monotonicNow())))
            do { return try connection.readLine(maxBytes: maxLineBytes) } catch TLSError.timeout(.read) {}
            let now = monotonicNow()
            let received = connection.bytesRead - before
            if received > 0 && firstByteAt == nil { firstByteAt = now }
            if now >= deadline {
                // The answer may still come: this connection cannot carry another request. A later call reconnects.
                abandonConnection()
                throw SiteFailure(site: site, message: received == 0
                    ? "no answer to \(what) within \(seconds(policy.roundTimeout)) (round timeout)"
                    : "answer to \(what) incomplete after \(seconds(policy.roundTimeout)) (\(received) bytes received; round timeout)",
                    code: .timeout)
            }
            if let first = firstByteAt, now - first >= policy.rateGraceSeconds,
               Double(received) / (now - first) < policy.minimumBytesPerSecond {
                abandonConnection()
                throw SiteFailure(site: site, message: "its answer to \(what) arrives at \(String(format: "%.0f", Double(received) / (now - first))) bytes/s (\(received) bytes in \(seconds(now - first))), below the minimum of \(String(format: "%.0f", policy.minimumBytesPerSecond)) bytes/s; the agent or the link is stalling",
                                  code: .timeout)
            }
        }
    }

    /// Closes a connection whose answer is overdue, so that a late answer
    /// is never taken for the answer to the next request.
    private func abandonConnection() {
        link.withLock { $0.connection.close() }   // its byte counts stay until a reconnect replaces it
    }

    private func setReadTimeout(_ t: Double) {
        link.withLock { $0.connection.readTimeout = t }
    }

    /// Called by the watchdog: the next socket wait ends at once, so the
    /// reading thread gets control back and checks its deadline and rate.
    private func interruptRead() {
        link.withLock { l in if l.connection.isOpen { l.connection.readTimeout = 0.001 } }
    }

    /// Checks the receipt an answer carries against the certificate the
    /// agent presented in this connection's handshake, and keeps it. An
    /// agent without an audit log sends none. A receipt that does not
    /// verify is a failure of the site: its log could not be held to it.
    private func keepReceipt(of line: String, for request: Request) throws {
        let connection = self.connection
        guard let receipt = Receipt.carried(by: line) else { return }
        guard receipt.site == site, receipt.certificate == connection.peerFingerprintSHA256,
              connection.verifyPeerSignature(receipt.signatureBytes, over: receipt.signedBytes) else {
            throw SiteFailure(site: site, message: "the agent's receipt for its audit entry \(receipt.seq) does not verify against its TLS certificate; the site's audit log cannot be checked against this answer")
        }
        memory.withLock { $0.kept.append(receipt) }
        if let session = request.session { ReceiptLedger.shared.add(receipt, site: site, session: session) }
    }

    /// Every verified receipt this channel received, in order.
    public var receipts: [Receipt] { serialized { memory.withLock { $0.kept } } }

    public var bytesSent: Int { serialized { link.withLock { $0.connection.bytesWritten + $0.previousBytes.sent } } }
    public var bytesReceived: Int { serialized { link.withLock { $0.connection.bytesRead + $0.previousBytes.received } } }
    public func close() {
        link.withLock { $0.connection.close() }
    }
}

/// A transport failure that a new connection may cure (as opposed to a
/// certificate refused, a line too long, or text that is not UTF-8).
func isTransient(_ error: Error) -> Bool {
    guard let t = error as? TLSError else { return false }
    switch t {
    case .connectionRefused, .connectFailed, .timeout, .connectionReset, .unexpectedEOF, .closed, .io, .hostNotFound: return true
    default: return false
    }
}

/// "120 s", "2.5 s".
func seconds(_ s: Double) -> String {
    s == s.rounded() && s < 1e9 ? "\(Int(s)) s" : String(format: "%.3g s", s)
}

func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// One thread for every channel's periodic interruptions: a call registers
/// an action to run every few seconds while it waits, and unregisters it
/// when it returns. Cheaper than a timer thread per call, and bounded.
final class DeadlineWatchdog: Sendable {
    static let shared = DeadlineWatchdog()
    private struct Entry { var next: Double; var every: Double; var action: @Sendable () -> Void }
    private let state = Mutex<(entries: [Int: Entry], nextTicket: Int, running: Bool)>(([:], 0, false))

    func watch(every: Double, _ action: @escaping @Sendable () -> Void) -> Int {
        let (ticket, start) = state.withLock { s -> (Int, Bool) in
            s.nextTicket += 1
            s.entries[s.nextTicket] = Entry(next: monotonicNow() + every, every: every, action: action)
            let start = !s.running
            s.running = true
            return (s.nextTicket, start)
        }
        if start {
            let t = Thread { [self] in loop() }
            t.name = "fedmix-watchdog"
            t.start()
        }
        return ticket
    }

    func unwatch(_ ticket: Int) { state.withLock { _ = $0.entries.removeValue(forKey: ticket) } }

    private func loop() {
        while true {
            usleep(100_000)
            let now = monotonicNow()
            let due: [@Sendable () -> Void] = state.withLock { s in
                var out: [@Sendable () -> Void] = []
                for (k, var e) in s.entries where e.next <= now {
                    out.append(e.action)
                    e.next = now + e.every
                    s.entries[k] = e
                }
                return out
            }
            for a in due { a() }
        }
    }
}

/// The coordinator's sites file: its TLS identity and the sites to reach.
public struct SitesFile: Sendable, Equatable {
    public struct Site: Sendable, Equatable {
        public var name: String
        public var host: String
        public var port: Int
        /// Name on the agent's certificate (default: the host).
        public var serverName: String
        public init(name: String, host: String, port: Int, serverName: String) {
            self.name = name; self.host = host; self.port = port; self.serverName = serverName
        }
    }
    public var identity: TLSIdentity
    public var sites: [Site]
    /// Sites listed but left out of every analysis (`exclude_sites` in the
    /// file, or `excluding(_:reason:)` for --exclude-sites): they are not
    /// contacted, and every result names them with the reason.
    public var exclusions: [SiteExclusion] = []
    /// Deadlines and reconnecting (`connect_timeout`, `round_timeout`,
    /// `reconnect_budget`, `min_bytes_per_second` in the file).
    public var network = NetworkPolicy()

    public init(identity: TLSIdentity, sites: [Site], exclusions: [SiteExclusion] = [], network: NetworkPolicy = NetworkPolicy()) {
        self.identity = identity; self.sites = sites; self.exclusions = exclusions; self.network = network
    }

    /// The same file with `names` left out too. Every name must be a listed
    /// site, and at least one site must remain.
    public func excluding(_ names: [String], reason: String) throws -> SitesFile {
        var copy = self
        for n in names {
            guard sites.contains(where: { $0.name == n }) else {
                throw SettingError("\(.excludeSites): no site \"\(n)\" in the sites file (sites: \(sites.map(\.name).joined(separator: ", ")))")
            }
            if !copy.exclusions.contains(where: { $0.site == n }) { copy.exclusions.append(SiteExclusion(site: n, reason: reason)) }
        }
        guard copy.sites.contains(where: { s in !copy.exclusions.contains { $0.site == s.name } }) else {
            throw SettingError("every site of the sites file would be excluded; nothing would be fitted")
        }
        return copy
    }

    public static func load(path: String) throws -> SitesFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SettingError("\(path): cannot read the sites file")
        }
        func fail(_ m: String) -> SettingError { SettingError("\(path): \(m)") }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw fail("not a JSON object") }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : base.appendingPathComponent(p).standardizedFileURL.path }
        guard let tls = root["tls"] as? [String: String], let cert = tls["certificate"], let key = tls["key"], let ca = tls["ca"] else {
            throw fail("\"tls\" must be an object with \"certificate\", \"key\" and \"ca\" paths")
        }
        let timingKeys = ["connect_timeout", "round_timeout", "reconnect_budget", "min_bytes_per_second"]
        if let unknown = root.keys.sorted().first(where: { !(["tls", "sites", "exclude_sites"] + timingKeys).contains($0) }) { throw fail("unknown key \"\(unknown)\"") }
        var network = NetworkPolicy()
        for key in timingKeys {
            guard let v = root[key] else { continue }
            guard let x = (v as? NSNumber)?.doubleValue, x.isFinite, key == "reconnect_budget" ? x >= 0 : x > 0 else {
                throw fail("\"\(key)\" must be a \(key == "reconnect_budget" ? "non-negative" : "positive") number of \(key == "min_bytes_per_second" ? "bytes per second" : "seconds")")
            }
            switch key {
            case "connect_timeout": network.connectTimeout = x
            case "round_timeout": network.roundTimeout = x
            case "reconnect_budget": network.reconnectBudget = x
            default: network.minimumBytesPerSecond = x
            }
        }
        guard let list = root["sites"] as? [[String: Any]], !list.isEmpty else { throw fail("\"sites\" must be a non-empty array") }
        var sites: [Site] = []
        for (i, s) in list.enumerated() {
            guard let name = s["name"] as? String, let address = s["address"] as? String else {
                throw fail("sites[\(i)] needs \"name\" and \"address\" (HOST:PORT)")
            }
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw fail("sites[\(i)].address must be HOST:PORT")
            }
            var host = String(address[..<colon])
            if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
            if sites.contains(where: { $0.name == name }) { throw fail("site \"\(name)\" is listed twice") }
            sites.append(Site(name: name, host: host, port: port, serverName: (s["server_name"] as? String) ?? host))
        }
        var file = SitesFile(identity: TLSIdentity(certificatePath: resolve(cert), keyPath: resolve(key), caPath: resolve(ca)), sites: sites,
                             network: network)
        if let ex = root["exclude_sites"] {
            // ["name", ...] or [{"site": "name", "reason": "why"}, ...]
            guard let list = ex as? [Any] else { throw fail("\"exclude_sites\" must be an array of site names or {\"site\", \"reason\"} objects") }
            for (i, item) in list.enumerated() {
                let name: String, reason: String
                if let n = item as? String { name = n; reason = "excluded in the sites file" }
                else if let o = item as? [String: Any], let n = o["site"] as? String, Set(o.keys).isSubset(of: ["site", "reason"]) {
                    name = n; reason = "excluded in the sites file: " + ((o["reason"] as? String) ?? "no reason given")
                } else { throw fail("exclude_sites[\(i)] must be a site name or {\"site\": NAME, \"reason\": TEXT}") }
                do { file = try file.excluding([name], reason: reason) } catch let e as SettingError { throw fail(e.worded { $0 == .excludeSites ? "exclude_sites" : $0.rawValue }) }
            }
        }
        return file
    }

    /// Connects to every site in parallel. `timeout` overrides the connect timeout of `network`.
    public func connect(timeout: Double? = nil) throws -> Federation {
        var policy = self.network
        if let timeout { policy.connectTimeout = timeout }
        let network = policy
        let context = try TLSContext.client(identity: identity)
        let sites = self.sites.filter { s in !exclusions.contains { $0.site == s.name } }
        let all = FanOutPool.results(sites.count, width: Federation.maxFanOutThreads, name: "fedmix-connect") { i -> SiteChannel in
            let s = sites[i]
            return try TLSChannel(site: s.name, host: s.host, port: s.port, context: context, serverName: s.serverName, policy: network)
        }
        var channels: [SiteChannel] = []
        for r in all {
            switch r {
            case .success(let c): channels.append(c)
            case .failure(let e):
                for c in channels { c.close() }
                for case .success(let c) in all { c.close() }
                throw e
            }
        }
        return Federation(channels: channels, exclusions: exclusions)
    }
}

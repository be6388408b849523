// How the coordinator talks to one site. Over TLS in production; in-process
// in tests, where requests and answers still go through the exact protocol
// lines, so both paths exercise the same encoding.

import Foundation
import Protocol
import Synchronization

/// A request/answer connection to one site.
public protocol SiteChannel: AnyObject, Sendable {
    /// The site's name (from its hello).
    var site: String { get }
    /// Sends one request and waits for its answer.
    func call(_ request: Request) throws -> Reply
    /// The same, knowing which round of the federation it belongs to (for
    /// messages such as "no answer to evaluate (round 7) within 120 s").
    func call(_ request: Request, round: Int?) throws -> Reply
    /// Application bytes sent and received so far.
    var bytesSent: Int { get }
    var bytesReceived: Int { get }
    func close()
    /// The agent's signed audit receipts received so far (none in-process).
    var receipts: [Receipt] { get }
    /// What the channel did to keep going (reconnects, sessions prepared
    /// again after an agent restart), oldest first; a fit reports them.
    var recoveries: [String] { get }
    /// Sends several describe/prepare/evaluate/finalize requests as one batch line
    /// and returns their answers in order (BatchMessages.swift).
    func call(batch requests: [Request], round: Int?) throws -> [Reply]
    /// Whether `start` sends at once and `finish` reads later (TLSChannel):
    /// then one thread sends a round's requests to every site before reading
    /// any answer (Federation.round), instead of a thread per site waking
    /// for each exchange.
    var pipelines: Bool { get }
    /// Begins `call(request, round:)`: sends the request if the channel
    /// pipelines. Every `start` must be followed by one `finish` of its
    /// result, on the same thread, before any other call on this channel.
    func start(_ request: Request, round: Int?) -> PendingCall
    /// The answer to a started call; the same answer, failures and
    /// recoveries as `call(request, round:)`.
    func finish(_ pending: PendingCall) throws -> Reply
    /// Whether the answer to a started call has begun to arrive (for the
    /// notices of a long round; callable from another thread).
    func answerArriving(_ pending: PendingCall) -> Bool
}

/// A request `SiteChannel.start` began: `sent` is nil when nothing was sent
/// (a channel that does not pipeline: `finish` then makes the whole call).
public struct PendingCall: Sendable {
    public var request: Request
    public var round: Int?
    /// The request's id and when it went out, or why sending it failed
    /// (`finish` handles that failure as a call would).
    public var sent: Result<(id: Int, started: Double), any Error>?
    public init(request: Request, round: Int?, sent: Result<(id: Int, started: Double), any Error>? = nil) {
        self.request = request; self.round = round; self.sent = sent
    }
}

extension SiteChannel {
    public var receipts: [Receipt] { [] }
    public var recoveries: [String] { [] }
    public func call(_ request: Request, round: Int?) throws -> Reply { try call(request) }
    public var pipelines: Bool { false }
    public func start(_ request: Request, round: Int?) -> PendingCall { PendingCall(request: request, round: round) }
    public func finish(_ pending: PendingCall) throws -> Reply { try call(pending.request, round: pending.round) }
    public func answerArriving(_ pending: PendingCall) -> Bool { false }

    /// One batch line through `call`, its sub-requests numbered 1, 2, ….
    public func call(batch requests: [Request], round: Int?) throws -> [Reply] {
        let ids = Array(1...requests.count)
        let lines = try zip(requests, ids).map { try LineCodec.encode($0, id: $1) }
        let reply = try call(.batch(BatchRequest(requests: lines)), round: round)
        return try batchAnswers(reply, ids: ids).map(\.reply)
    }

    /// The sub-answers of a batch's answer, each checked to answer its sub-request.
    func batchAnswers(_ reply: Reply, ids: [Int]) throws -> [(line: String, reply: Reply)] {
        switch reply {
        case .batched(let b):
            guard b.answers.count == ids.count else {
                throw SiteFailure(site: site, message: "answered a batch of \(ids.count) requests with \(b.answers.count) answers")
            }
            return try zip(b.answers, ids).map { line, id in
                let (rid, sub) = try LineCodec.decodeReply(line)
                guard rid == id else { throw SiteFailure(site: site, message: "answered request \(rid) instead of \(id) in a batch") }
                return (line, sub)
            }
        case .error(let e):
            throw SiteFailure(site: site, message: e.message, code: e.code)
        default:
            throw unexpected(reply, site, expected: "batched")
        }
    }

    /// Answers to `requests`, in order, in as few lines as the limits allow:
    /// batches of at most `ProtocolLimits.maxBatchRequests` requests and
    /// `maxBatchLineBytes` (a quarter of the default line limit, so that a
    /// batch line never nears what an agent reads); a sub-request the
    /// agent left for later (`batch_not_answered`) goes in the next line. An
    /// agent that does not know batches (an older version: `unknown_type`)
    /// gets the requests one at a time (`unbatched` true). `exchanges` counts
    /// the lines sent, for the round count.
    public func answers(to requests: [Request], round: Int?) throws -> (replies: [Reply], exchanges: Int, unbatched: Bool) {
        var replies = [Reply?](repeating: nil, count: requests.count)
        var exchanges = 0
        var pending = Array(requests.indices)
        let sizes = try requests.map { try LineCodec.encode($0, id: 0).utf8.count + 16 }
        while !pending.isEmpty {
            var chunk: [Int] = [], bytes = 0
            for k in pending.prefix(ProtocolLimits.maxBatchRequests) {
                if !chunk.isEmpty && bytes + sizes[k] > Self.maxBatchLineBytes { break }
                chunk.append(k); bytes += sizes[k]
            }
            let got: [Reply]
            do { got = try call(batch: chunk.map { requests[$0] }, round: round) } catch let f as SiteFailure where f.code == .unknownType && exchanges == 0 {
                return (try requests.map { try call($0, round: round) }, requests.count, true)
            }
            exchanges += 1
            var later: [Int] = []
            for (k, r) in zip(chunk, got) {
                if case .error(let e) = r, e.code == .batchNotAnswered { later.append(k) } else { replies[k] = r }
            }
            guard later.count < chunk.count else {
                throw SiteFailure(site: site, message: "answered none of a batch's \(chunk.count) requests (batch_not_answered); its answer limit is too small for one answer")
            }
            pending = later + pending.dropFirst(chunk.count)
        }
        return (replies.map { $0! }, exchanges, false)
    }

    /// Longest batch line the coordinator builds (bytes).
    static var maxBatchLineBytes: Int { ProtocolLimits.maxLineBytes / 4 }
}

extension Request {
    /// The fit session a request belongs to, if any.
    public var session: String? {
        switch self {
        case .prepare(let r): return r.session
        case .evaluate(let r): return r.session
        case .finalize(let r): return r.session
        case .describe, .ping, .batch: return nil
        }
    }
}

/// Verified receipts by fit session and site, so that a fit's result can
/// carry the receipts of its own requests (`SiteResult.receipts`).
/// Holds the most recent 256 sessions; a result takes its session's.
public final class ReceiptLedger: Sendable {
    public static let shared = ReceiptLedger()
    private let state = Mutex<(order: [String], sessions: [String: [String: [Receipt]]])>(([], [:]))
    static let maxSessions = 256

    func add(_ receipt: Receipt, site: String, session: String) {
        state.withLock { s in
            if s.sessions[session] == nil {
                s.order.append(session)
                if s.order.count > Self.maxSessions { s.sessions[s.order.removeFirst()] = nil }
            }
            s.sessions[session, default: [:]][site, default: []].append(receipt)
        }
    }

    /// The receipts of `site` for `session`, removed from the ledger (nil if none).
    public func take(session: String, site: String) -> [Receipt]? {
        state.withLock { s in
            let r = s.sessions[session]?[site]
            s.sessions[session]?[site] = nil
            return r
        }
    }
}

/// A failure at or on the way to a named site.
public struct SiteFailure: Error, CustomStringConvertible, Equatable {
    public var site: String
    public var message: String
    public var code: ErrorCode?
    /// The message (often an agent's own words) and the site name are
    /// cleaned of control characters and ANSI escape sequences
    /// (TerminalText), so a site cannot rewrite what the analyst's terminal shows.
    public init(site: String, message: String, code: ErrorCode? = nil) {
        self.site = TerminalText.clean(site); self.message = TerminalText.clean(message)
        self.code = code.map { ErrorCode(rawValue: TerminalText.clean($0.rawValue)) }
    }
    /// Names the site once, whether or not the agent's message already does.
    public var description: String {
        message.hasPrefix("site \"\(site)\"") ? message : "site \"\(site)\": \(message)"
    }
}

/// A channel to a handler in this process, through protocol lines.
public final class InProcessChannel: SiteChannel {
    public let site: String
    private let handler: @Sendable (String) -> String
    private let state = Mutex<(id: Int, sent: Int, received: Int)>((0, 0, 0))

    public init(site: String, handler: @escaping @Sendable (String) -> String) {
        self.site = site; self.handler = handler
    }

    public func call(_ request: Request) throws -> Reply {
        let id = state.withLock { $0.id += 1; return $0.id }
        let line = try LineCodec.encode(request, id: id)
        let answer = handler(line)
        state.withLock { $0.sent += line.utf8.count + 1; $0.received += answer.utf8.count + 1 }
        let (rid, reply) = try LineCodec.decodeReply(answer)
        guard rid == id else { throw SiteFailure(site: site, message: "answered request \(rid) instead of \(id)") }
        return reply
    }

    public var bytesSent: Int { state.withLock { $0.sent } }
    public var bytesReceived: Int { state.withLock { $0.received } }
    public func close() {}
}

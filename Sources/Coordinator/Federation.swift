// Fans each round out to every site at once and gathers the answers in site
// order, so sums over sites never depend on which site answered first.

import Foundation
import Protocol
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class Federation: Sendable {
    public let channels: [SiteChannel]
    /// Sites the analyst left out before connecting (`--exclude-sites`, or
    /// `exclude_sites` in the sites file), with why: a fit records them in
    /// its result, so that no site is ever dropped silently.
    public let exclusions: [SiteExclusion]
    private let counter = Mutex(0)
    /// Set on a lane's federation (`lanes`, RoundBatcher.swift): its rounds
    /// go to the batcher, which sends them with the other lanes' rounds.
    let lane: LaneRoute?

    public init(channels: [SiteChannel], exclusions: [SiteExclusion] = []) {
        self.channels = channels
        self.exclusions = exclusions
        self.lane = nil
    }

    init(channels: [SiteChannel], exclusions: [SiteExclusion], lane: LaneRoute) {
        self.channels = channels
        self.exclusions = exclusions
        self.lane = lane
    }

    /// The same federation over some of its sites (a lane stays a lane).
    public func restricted(to kept: [SiteChannel]) -> Federation {
        guard let lane else { return Federation(channels: kept) }
        let index = kept.map { c in lane.parentIndex[channels.firstIndex { $0 === c }!] }
        return Federation(channels: kept, exclusions: [], lane: LaneRoute(batcher: lane.batcher, key: lane.key, parentIndex: index, group: lane.group))
    }

    deinit { poolState.withLock { $0?.stop() } }

    /// The threads that carry each round's calls: min(sites, 64), started at
    /// the first round and kept until `close()`, so a fit's rounds reuse
    /// them (no thread per site per round) and a 200-site federation holds
    /// 64 threads whatever the number of rounds.
    private let poolState = Mutex<FanOutPool?>(nil)
    public static let maxFanOutThreads = 64
    var pool: FanOutPool {
        poolState.withLock { p in
            if let p { return p }
            let made = FanOutPool(width: min(max(channels.count, 1), Self.maxFanOutThreads), name: "fedmix-fanout")
            p = made
            return made
        }
    }

    /// Where to say which sites a long round is still waiting for (nil: nowhere).
    public var reporter: ProgressReporter? {
        get { reporterState.withLock { $0 } }
        set { reporterState.withLock { $0 = newValue } }
    }
    private let reporterState = Mutex<ProgressReporter?>(nil)
    /// Seconds each site took to answer in the last round (nil: not asked).
    public var lastRoundSeconds: [Double?] { lastTimes.withLock { $0 } }
    private let lastTimes = Mutex<[Double?]>([])
    /// A round that waits longer than this says which sites it waits for, and again as often.
    public var outstandingReportSeconds: Double {
        get { reportEvery.withLock { $0 } }
        set { reportEvery.withLock { $0 = newValue } }
    }
    private let reportEvery = Mutex(3.0)

    public var sites: [String] { channels.map(\.site) }
    /// Rounds run so far (one request to every site involved is one round).
    public var rounds: Int { counter.withLock { $0 } }
    /// Adds rounds sent for lanes (RoundBatcher).
    func countRounds(_ n: Int) { counter.withLock { $0 += n } }

    /// Sends `request(i)` to every site i concurrently and waits for every
    /// answer; returns them in site order. When sites refuse or fail, every
    /// site's answer is still collected and all failures are reported at
    /// once (one `SiteFailure` as itself, several as `SiteFailures`), so the
    /// analyst learns every refusing site and its reason from one run.
    public func round<T: Sendable>(_ request: (Int) -> Request,
                                   _ unwrap: @escaping @Sendable (Reply, String) throws -> T) throws -> [T] {
        let number = counter.withLock { $0 += 1; return $0 }
        let requests = channels.indices.map(request)
        if let lane {
            let replies = lane.batcher.exchange(key: lane.key, Array(zip(lane.parentIndex, requests)))
            let all = replies.enumerated().map { i, reply in
                Result { try Self.settle(try reply.get(), site: self.channels[i].site, unwrap) }
            }
            return try settled(all, requests: requests, number: number)
        }
        let times = Mutex<[Double?]>(Array(repeating: nil, count: channels.count))
        let channels = self.channels
        let started = monotonicNow()
        let every = outstandingReportSeconds
        var nextReport = started + every
        let report: ([Int]) -> Void = { pending in
            guard let reporter = self.reporter, reporter.enabled, monotonicNow() >= nextReport else { return }
            nextReport += every
            let outstanding = pending.map { channels[$0].site }
            guard !outstanding.isEmpty else { return }
            let shown = outstanding.prefix(10).joined(separator: ", ") + (outstanding.count > 10 ? " and \(outstanding.count - 10) more" : "")
            reporter.say("round \(number) (\(requests.first?.typeName ?? "request")): waiting for \(shown) (\(Int(monotonicNow() - started)) s)")
        }
        let answer: @Sendable (Int, () throws -> Reply) throws -> T = { i, reply in
            defer { let took = monotonicNow() - started; times.withLock { $0[i] = took } }
            let site = channels[i].site
            do {
                return try Self.settle(try reply(), site: site, unwrap)
            } catch let f as SiteFailure {
                throw f
            } catch {
                throw SiteFailure(site: site, message: "\(error)")
            }
        }
        let all: [Result<T, any Error>]
        if channels.allSatisfy(\.pipelines) {
            all = pipelined(requests, number: number, tick: min(0.5, every), whileWaiting: report, answer)
        } else {
            all = pool.results(channels.count, tick: min(0.5, every), whileWaiting: report) { i -> T in
                try answer(i) { try channels[i].call(requests[i], round: number) }
            }
        }
        lastTimes.withLock { $0 = times.withLock { $0 } }
        return try settled(all, requests: requests, number: number)
    }

    /// A round on one thread of the pool: every site's request is sent, then
    /// the answers are read in site order (those of later sites wait in their
    /// sockets meanwhile). Over TLS this replaces a thread per site, woken to
    /// send and again to read, by one thread that rarely waits: per round,
    /// not per site, a wake-up on the coordinator's side.
    private func pipelined<T: Sendable>(_ requests: [Request], number: Int, tick: Double, whileWaiting: @escaping ([Int]) -> Void,
                                        _ answer: @escaping @Sendable (Int, () throws -> Reply) throws -> T) -> [Result<T, any Error>] {
        let channels = self.channels
        // The sites not read yet, and their calls once started (for the notices: those whose answer has not begun to arrive).
        let progress = Mutex<(read: Int, pending: [PendingCall])>((0, []))
        let outcome = pool.results(1, tick: tick, whileWaiting: { _ in
            let (read, pending) = progress.withLock { ($0.read, $0.pending) }
            whileWaiting((read..<channels.count).filter { i in i >= pending.count || !channels[i].answerArriving(pending[i]) })
        }) { (_: Int) throws(Never) -> [Result<T, any Error>] in
            let pending = channels.indices.map { channels[$0].start(requests[$0], round: number) }
            progress.withLock { $0.pending = pending }
            return channels.indices.map { i in
                defer { progress.withLock { $0.read = i + 1 } }
                return Result { try answer(i) { try channels[i].finish(pending[i]) } }
            }
        }
        return outcome[0].get()
    }

    /// Answers that came without a round of their own (a prepare's first
    /// evaluation, FitSession), in site order, settled as `round` settles its
    /// answers: every failure at once, a GLMM step too far as itself.
    func settle<T>(_ replies: [Reply], request: Request, _ unwrap: (Reply, String) throws -> T) throws -> [T] {
        let all = zip(replies, channels).map { reply, channel in Result { try Self.settle(reply, site: channel.site, unwrap) } }
        return try settled(all, requests: Array(repeating: request, count: replies.count), number: rounds)
    }

    /// A site's answer as the caller's type; an error answer as the site's failure.
    private static func settle<T>(_ reply: Reply, site: String, _ unwrap: (Reply, String) throws -> T) throws -> T {
        do {
            if case .error(let e) = reply { throw SiteFailure(site: site, message: e.message, code: e.code) }
            return try unwrap(reply, site)
        } catch let f as SiteFailure { throw f } catch { throw SiteFailure(site: site, message: "\(error)") }
    }

    /// The answers in site order, or every failure at once (see `round`).
    private func settled<T>(_ all: [Result<T, any Error>], requests: [Request], number: Int) throws -> [T] {
        var failures: [SiteFailure] = []
        for r in all { if case .failure(let e) = r { failures.append(e as? SiteFailure ?? SiteFailure(site: "?", message: "\(e)")) } }
        if !failures.isEmpty {
            // A GLMM trial step too far is the optimizer's to handle (it steps back), not a refusal.
            if let step = failures.first(where: { $0.code == .glmmFailed }) { throw step }
            if failures.count == 1 { throw failures[0] }
            throw SiteFailures(failures: failures, request: requests.first?.typeName ?? "request", round: number)
        }
        return all.map { try! $0.get() }
    }

    /// The verified audit receipts each site's agent sent over this
    /// federation so far (describe and ping included), in site order.
    public var receipts: [[Receipt]] { channels.map(\.receipts) }

    public var bytesSent: [Int] { channels.map(\.bytesSent) }
    public var bytesReceived: [Int] { channels.map(\.bytesReceived) }

    /// Runs after the channels close (e.g. to stop local agents).
    public var onClose: (@Sendable () -> Void)? {
        get { closeHook.withLock { $0 } }
        set { closeHook.withLock { $0 = newValue } }
    }
    private let closeHook = Mutex<(@Sendable () -> Void)?>(nil)

    public func close() {
        poolState.withLock { $0?.stop(); $0 = nil }
        channels.forEach { $0.close() }
        closeHook.withLock { hook in hook?(); hook = nil }
    }
}

/// An answer of the wrong kind.
func unexpected(_ reply: Reply, _ site: String, expected: String) -> SiteFailure {
    SiteFailure(site: site, message: "answered \(reply.typeName) where \(expected) was expected")
}

/// A site left out of an analysis before it started, and why.
public struct SiteExclusion: Codable, Sendable, Equatable {
    public var site: String
    public var reason: String
    public init(site: String, reason: String) { self.site = site; self.reason = reason }
}

/// Several sites refused or failed in the same round: every one of them,
/// in site order, with its reason, and how to proceed without them.
public struct SiteFailures: Error, CustomStringConvertible {
    public var failures: [SiteFailure]
    /// The request the sites were answering ("prepare", "evaluate", ...).
    public var request: String
    public var round: Int
    public init(failures: [SiteFailure], request: String, round: Int) {
        self.failures = failures; self.request = request; self.round = round
    }
    public var sites: [String] { failures.map(\.site) }
    public var description: String {
        var out = "\(failures.count) sites refused or failed \(request) (round \(round)):"
        for f in failures { out += "\n  " + f.description }
        if failures.allSatisfy({ $0.message.contains("max_sessions_per_day") }) {
            // A daily quota: neither the model nor the data is at fault.
            out += "\nThese sites allow only so many sessions per certificate in 24 hours: wait, or ask them to raise max_sessions_per_day; --exclude-sites \(sites.joined(separator: ",")) goes on without them"
        } else {
            out += "\nFix the model or the sites' data, or leave these sites out with --exclude-sites \(sites.joined(separator: ","))"
        }
        return out
    }
}

/// Progress and waiting notices on standard error, for a person watching a
/// terminal: never on standard output (which may carry JSON), never when
/// quiet, and by default only when standard error is a terminal
/// (FEDMIX_PROGRESS=1 forces them, e.g. for a log file).
public final class ProgressReporter: Sendable {
    public let enabled: Bool
    /// One line at a time, never two interleaved.
    private let writing = Mutex(())
    private let write: @Sendable (String) -> Void

    public init(enabled: Bool, write: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) }) {
        self.enabled = enabled
        self.write = write
    }

    /// Enabled when standard error is a terminal or FEDMIX_PROGRESS=1, unless `quiet`.
    public static func standardError(quiet: Bool) -> ProgressReporter {
        let forced = ProcessInfo.processInfo.environment["FEDMIX_PROGRESS"] == "1"
        return ProgressReporter(enabled: !quiet && (forced || isatty(2) == 1))
    }

    /// One line, "fedmix: TEXT", with control characters removed.
    public func say(_ text: String) {
        guard enabled else { return }
        writing.withLock { _ in write("fedmix: " + TerminalText.clean(text) + "\n") }
    }
}

// Batched rounds for analyses that run side by side (the M completed
// datasets of a multiple imputation): each analysis runs the unchanged fit
// code on a thread of its own (a "lane") with a federation whose rounds go
// to one RoundBatcher. The batcher waits until every lane still running has
// submitted its next round, then sends each site ONE batch line with every
// lane's request for it (Protocol/BatchMessages.swift) and hands each lane
// its own answers. The site answers each sub-request exactly as if it had
// come alone, so every lane's answers, and so its result, are bit for bit
// those of running the analyses one after another; only the number of
// rounds on the wire changes (about one analysis's instead of M times it).

import Foundation
import Protocol
import Synchronization

/// Where a lane's rounds go: its batcher, its place in the batch order, and
/// for each of its channels that channel's index in the sending federation.
struct LaneRoute: Sendable {
    let batcher: RoundBatcher
    /// Position of the lane (nested lanes extend their parent's key); a
    /// batch lists the lanes' sub-requests in key order, so the order the
    /// site answers them in never depends on thread scheduling.
    let key: [Int]
    let parentIndex: [Int]
    /// The lanes forked together with this one from a lane (nil at the top).
    let group: LaneGroup?
}

/// Lanes forked from one lane: the forking lane's place among the active
/// lanes passes to them and back to it when the last of them ends.
final class LaneGroup: Sendable {
    private let remaining: Mutex<Int>
    init(_ count: Int) { remaining = Mutex(count) }
    /// True for the last lane of the group to end.
    func end() -> Bool { remaining.withLock { $0 -= 1; return $0 == 0 } }
}

final class RoundBatcher: Sendable {
    /// The federation that sends (never a lane).
    let federation: Federation
    private let state: Mutex<State>
    private struct State {
        /// Lanes running (not ended, not waiting for lanes forked from them).
        var active: Int
        var waiting: [Waiter] = []
        /// Sites that answered one request at a time (they do not know batches).
        var unbatched: Set<String> = []
    }

    /// A lane's round waiting for the batch it goes out in.
    final class Waiter: Sendable {
        let key: [Int]
        let requests: [(channel: Int, request: Request)]
        let answers = Mutex<[Result<Reply, SiteFailure>]>([])
        let done = DispatchSemaphore(value: 0)
        init(key: [Int], requests: [(channel: Int, request: Request)]) { self.key = key; self.requests = requests }
    }

    init(federation: Federation, lanes: Int) {
        self.federation = federation
        state = Mutex(State(active: lanes))
    }

    /// Sites that did not take batch lines (older agents), sorted.
    var unbatchedSites: [String] { state.withLock { $0.unbatched.sorted() } }

    /// Submits a lane's round and waits for its answers, in the order of `requests`.
    func exchange(key: [Int], _ requests: [(channel: Int, request: Request)]) -> [Result<Reply, SiteFailure>] {
        let waiter = Waiter(key: key, requests: requests)
        let ready = state.withLock { s -> [Waiter]? in
            s.waiting.append(waiter)
            return Self.takeIfReady(&s)
        }
        if let ready { send(ready) }
        waiter.done.wait()
        return waiter.answers.withLock { $0 }
    }

    /// `count` lanes forked from a running lane take its place among the active lanes.
    func fork(_ count: Int) -> LaneGroup {
        state.withLock { $0.active += count - 1 }
        return LaneGroup(count)
    }

    /// A lane ended: the rounds of the lanes still running need not wait for it.
    func end(_ lane: LaneRoute) {
        // The last of a forked group hands the place back to the lane that forked it.
        if let group = lane.group, group.end() { return }
        let ready = state.withLock { s -> [Waiter]? in
            s.active -= 1
            return Self.takeIfReady(&s)
        }
        if let ready { send(ready) }
    }

    private static func takeIfReady(_ s: inout State) -> [Waiter]? {
        guard !s.waiting.isEmpty, s.waiting.count >= s.active else { return nil }
        defer { s.waiting = [] }
        return s.waiting
    }

    /// One round on the wire: per site, the lanes' requests in key order in
    /// batch lines; every lane gets its own answers (or its site's failure).
    private func send(_ waiters: [Waiter]) {
        let ordered = waiters.sorted { $0.key.lexicographicallyPrecedes($1.key) }
        var perChannel: [Int: [(waiter: Int, slot: Int)]] = [:]
        for (w, waiter) in ordered.enumerated() {
            for (slot, r) in waiter.requests.enumerated() { perChannel[r.channel, default: []].append((w, slot)) }
        }
        let channels = perChannel.keys.sorted()
        let outcome = federation.batchRound(channels.map { c in perChannel[c]!.map { ordered[$0.waiter].requests[$0.slot].request } },
                                            on: channels)
        var answers = ordered.map { [Result<Reply, SiteFailure>?](repeating: nil, count: $0.requests.count) }
        for (j, c) in channels.enumerated() {
            switch outcome.results[j] {
            case .success(let replies):
                for (place, reply) in zip(perChannel[c]!, replies) { answers[place.waiter][place.slot] = .success(reply) }
            case .failure(let f):
                for place in perChannel[c]! { answers[place.waiter][place.slot] = .failure(f) }
            }
        }
        if !outcome.unbatched.isEmpty { state.withLock { $0.unbatched.formUnion(outcome.unbatched) } }
        for (waiter, a) in zip(ordered, answers) {
            waiter.answers.withLock { $0 = a.map { $0! } }
            waiter.done.signal()
        }
    }
}

extension Federation {
    /// Runs `body(k, lane)` for k in 0..<count, each on a thread of its own
    /// with a lane federation whose rounds share rounds on the wire with the
    /// other lanes' (RoundBatcher). Called from a lane, the new lanes join
    /// that lane's batcher (a δ grid of imputations batches all its fits).
    /// Returns each lane's outcome and rounds (as if it ran alone) at its
    /// index; a failing lane ends and the others go on. Also returns the
    /// sites that took no batches. Called from a lane, that lane's rounds
    /// grow by the most rounds one new lane took (they ran in step).
    public func lanes<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int, Federation) throws -> T)
        -> (results: [Result<(value: T, rounds: Int), any Error>], unbatchedSites: [String]) {
        guard count > 0 else { return ([], []) }
        let batcher: RoundBatcher, key: [Int], parentIndex: [Int], group: LaneGroup?
        if let lane {
            batcher = lane.batcher; key = lane.key; parentIndex = lane.parentIndex; group = batcher.fork(count)
        } else {
            batcher = RoundBatcher(federation: self, lanes: count); key = []; parentIndex = Array(channels.indices); group = nil
        }
        let channels = self.channels, exclusions = self.exclusions
        let results = FanOutPool.results(count, width: count, name: "fedmix-lane", stackSize: 4 << 20) { (k: Int) throws -> (value: T, rounds: Int) in
            let route = LaneRoute(batcher: batcher, key: key + [k], parentIndex: parentIndex, group: group)
            defer { batcher.end(route) }
            let federation = Federation(channels: channels, exclusions: exclusions, lane: route)
            return (try body(k, federation), federation.rounds)
        }
        if lane != nil { countRounds(results.map { (try? $0.get().rounds) ?? 0 }.max() ?? 0) }
        return (results, batcher.unbatchedSites)
    }

    /// One round on the wire for the batcher: to each channel in `on`, its
    /// requests in batch lines (SiteChannel.answers). Counts as many rounds
    /// as the most lines one site needed (one, unless a site had more than
    /// ProtocolLimits.maxBatchRequests requests or answers too large to share a line).
    func batchRound(_ requests: [[Request]], on channelIndices: [Int])
        -> (results: [Result<[Reply], SiteFailure>], unbatched: [String]) {
        let number = rounds + 1
        let channels = self.channels
        let outcomes = pool.results(channelIndices.count) {
            (j: Int) throws(SiteFailure) -> (replies: [Reply], exchanges: Int, unbatched: Bool) in
            let channel = channels[channelIndices[j]]
            do { return try channel.answers(to: requests[j], round: number) }
            catch let f as SiteFailure { throw f }
            catch { throw SiteFailure(site: channel.site, message: "\(error)") }
        }
        let exchanges = outcomes.map { (try? $0.get().exchanges) ?? 1 }.max() ?? 1
        countRounds(exchanges)
        return (outcomes.map { $0.map(\.replies) },
                zip(channelIndices, outcomes).compactMap { c, o in (try? o.get().unbatched) == true ? channels[c].site : nil })
    }
}

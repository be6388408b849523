// The one way fedmix runs work for many sites at once: indexed jobs on a
// bounded set of threads of their own, results gathered in index order, so
// that a sum over sites never depends on which site answered first.

import Foundation
import Synchronization

/// A fixed set of threads that runs indexed jobs and returns their results
/// in index order. For blocking work (network calls, one per site) that must
/// not occupy Dispatch's global pool, whose width (the core count) would
/// serialize a 50-site round. A pool may serve many calls (a federation
/// reuses one for every round of a fit); `stop()` ends its threads once the
/// queued jobs are done. Do not call it from one of its own jobs: a job
/// waiting for jobs queued behind it could wait for ever.
public final class FanOutPool: Sendable {
    public let width: Int
    private struct Queue {
        var jobs: [@Sendable () -> Void] = []
        var head = 0
        var stopping = false
    }
    private let queue = Mutex(Queue())
    /// One signal per queued job, and one per thread at `stop()`.
    private let wake = DispatchSemaphore(value: 0)
    /// One signal per thread that has ended.
    private let ended = DispatchSemaphore(value: 0)

    /// Pool threads alive in this process (all pools), for benchmarks and tests.
    public static var liveThreads: Int { live.withLock { $0 } }
    private static let live = Mutex(0)

    /// Starts `width` threads (at least one) named NAME-0, NAME-1, ...;
    /// `stackSize` nil keeps the system's default.
    public init(width: Int, name: String, stackSize: Int? = 512 << 10) {
        self.width = max(1, width)
        for k in 0..<self.width {
            let t = Thread { [self] in
                Self.live.withLock { $0 += 1 }
                work()
                Self.live.withLock { $0 -= 1 }
                ended.signal()
            }
            t.name = "\(name)-\(k)"
            if let stackSize { t.stackSize = stackSize }
            t.start()
        }
    }

    /// Runs `body(0)` … `body(count - 1)`, at most `width` at once (started
    /// in index order), waits for all of them and returns each outcome at
    /// its index. While waiting, `whileWaiting` is called on this thread
    /// every `tick` seconds with the indices not yet finished (for progress
    /// notices). After `stop()` the jobs run here, one after another.
    public func results<T: Sendable, E: Error>(_ count: Int, tick: Double = 0.5,
                                               whileWaiting: ((_ pending: [Int]) -> Void)? = nil,
                                               _ body: @escaping @Sendable (Int) throws(E) -> T) -> [Result<T, E>] {
        guard count > 0 else { return [] }
        let slots = Mutex<(results: [Result<T, E>?], remaining: Int)>((Array(repeating: nil, count: count), count))
        let done = DispatchSemaphore(value: 0)
        let jobs: [@Sendable () -> Void] = (0..<count).map { i in
            {
                let r: Result<T, E>
                do throws(E) { r = .success(try body(i)) } catch { r = .failure(error) }
                let last = slots.withLock { s in
                    s.results[i] = r
                    s.remaining -= 1
                    return s.remaining == 0
                }
                if last { done.signal() }
            }
        }
        let accepted = queue.withLock { q in
            guard !q.stopping else { return false }
            q.jobs.append(contentsOf: jobs)
            return true
        }
        if accepted {
            for _ in jobs { wake.signal() }
            if let whileWaiting {
                while done.wait(timeout: .now() + max(tick, 0.001)) == .timedOut {
                    whileWaiting(slots.withLock { s in s.results.indices.filter { s.results[$0] == nil } })
                }
            } else {
                done.wait()
            }
        } else {
            for job in jobs { job() }
        }
        return slots.withLock { $0.results.map { $0! } }
    }

    /// The results of `body(0)` … `body(count - 1)` in index order; when
    /// jobs fail, all of them still run to the end and the error of the
    /// lowest failing index is thrown, whatever the order they failed in.
    public func map<T: Sendable, E: Error>(_ count: Int, _ body: @escaping @Sendable (Int) throws(E) -> T) throws(E) -> [T] {
        try Self.firstFailure(results(count, body))
    }

    /// Lets the queued jobs finish, then ends the threads (without waiting for them).
    public func stop() {
        let first = queue.withLock { q in
            defer { q.stopping = true }
            return !q.stopping
        }
        if first { for _ in 0..<width { wake.signal() } }
    }

    /// `stop()`, then waits until every thread of the pool has ended.
    public func stopAndWait() {
        stop()
        for _ in 0..<width { ended.wait() }
        for _ in 0..<width { ended.signal() }   // a second call returns too
    }

    private func work() {
        while true {
            wake.wait()
            let job: (@Sendable () -> Void)? = queue.withLock { q in
                guard q.head < q.jobs.count else { return nil }   // only when stopping
                let job = q.jobs[q.head]
                q.head += 1
                if q.head > 1024 && q.head * 2 > q.jobs.count { q.jobs.removeFirst(q.head); q.head = 0 }
                return job
            }
            guard let job else { return }
            job()
        }
    }

    /// One call on a pool of its own of min(count, width) threads, ended
    /// before this returns: results in index order; see `results(_:tick:whileWaiting:_:)`.
    public static func results<T: Sendable, E: Error>(_ count: Int, width: Int, name: String, stackSize: Int? = 512 << 10,
                                                      _ body: @escaping @Sendable (Int) throws(E) -> T) -> [Result<T, E>] {
        guard count > 0 else { return [] }
        let pool = FanOutPool(width: min(count, width), name: name, stackSize: stackSize)
        defer { pool.stopAndWait() }
        return pool.results(count, body)
    }

    /// One call on a pool of its own; throws the error of the lowest failing index.
    public static func map<T: Sendable, E: Error>(_ count: Int, width: Int, name: String, stackSize: Int? = 512 << 10,
                                                  _ body: @escaping @Sendable (Int) throws(E) -> T) throws(E) -> [T] {
        try firstFailure(results(count, width: width, name: name, stackSize: stackSize, body))
    }

    /// The values in index order, or the error of the lowest failing index.
    private static func firstFailure<T, E: Error>(_ results: [Result<T, E>]) throws(E) -> [T] {
        var values: [T] = []
        values.reserveCapacity(results.count)
        for r in results { values.append(try r.get()) }
        return values
    }
}

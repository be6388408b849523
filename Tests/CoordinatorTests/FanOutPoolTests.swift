import Foundation
import XCTest
import Synchronization
import Coordinator
#if canImport(Glibc)
import Glibc
#endif

/// The one fan-out helper: results in index order whatever the order jobs
/// finish in, the lowest failing index's error, never more than `width` jobs at once.
final class FanOutPoolTests: XCTestCase {
    struct Failed: Error, Equatable { var index: Int }

    func testResultsAreInIndexOrderWhenJobsFinishInReverse() {
        let count = 8
        // Job i waits for job i + 1 to finish: the last index finishes first.
        let finished = (0..<count).map { _ in DispatchSemaphore(value: 0) }
        let order = Mutex<[Int]>([])
        let values = FanOutPool.map(count, width: count, name: "test-order") { i -> Int in
            if i + 1 < count { _ = finished[i + 1].wait(timeout: .now() + 10) }
            order.withLock { $0.append(i) }
            finished[i].signal()
            return i * i
        }
        XCTAssertEqual(order.withLock { $0 }, Array((0..<count).reversed()), "the jobs did finish in reverse")
        XCTAssertEqual(values, (0..<count).map { $0 * $0 })
    }

    func testTheLowestFailingIndexIsThrownAfterEveryJobRan() {
        let count = 10
        let sevenFailed = DispatchSemaphore(value: 0)
        let ran = Mutex(Set<Int>())
        let body: @Sendable (Int) throws(Failed) -> Int = { (i: Int) throws(Failed) -> Int in
            ran.withLock { _ = $0.insert(i) }
            if i == 7 { sevenFailed.signal(); throw Failed(index: 7) }
            if i == 3 { _ = sevenFailed.wait(timeout: .now() + 10); throw Failed(index: 3) }
            return i
        }
        XCTAssertThrowsError(try FanOutPool.map(count, width: count, name: "test-error", body)) { e in
            XCTAssertEqual(e as? Failed, Failed(index: 3), "index 3 failed after index 7, and is the error thrown")
        }
        XCTAssertEqual(ran.withLock { $0 }, Set(0..<count), "a failure cancels no other job")
        let outcomes = FanOutPool.results(count, width: 4, name: "test-error", body)
        XCTAssertEqual(outcomes.compactMap { if case .failure(let f) = $0 { f.index } else { nil } }, [3, 7])
        XCTAssertEqual(outcomes.compactMap { try? $0.get() }, [0, 1, 2, 4, 5, 6, 8, 9])
    }

    func testNeverMoreThanWidthJobsAtOnceOnWidthThreads() {
        let width = 3, count = 40
        let state = Mutex((now: 0, peak: 0, threads: Set<UInt>()))
        let full = DispatchSemaphore(value: 0)
        let pool = FanOutPool(width: width, name: "test-bound")
        for _ in 0..<2 {   // the same threads serve a second call
            state.withLock { $0.peak = 0 }
            let values = pool.results(count) { i -> Int in
                let now = state.withLock { s in
                    s.now += 1
                    s.peak = max(s.peak, s.now)
                    s.threads.insert(UInt(pthread_self()))
                    return s.now
                }
                // The first `width` jobs hold their threads until all `width` run at once.
                if i < width {
                    if now == width { for _ in 1..<width { full.signal() } } else { _ = full.wait(timeout: .now() + 10) }
                }
                state.withLock { $0.now -= 1 }
                return i
            }
            XCTAssertEqual(values.map { $0.get() }, Array(0..<count))
            XCTAssertEqual(state.withLock { $0.peak }, width, "width jobs at once, no more")
        }
        XCTAssertEqual(state.withLock { $0.threads.count }, width, "both calls ran on the pool's \(width) threads")
        let before = FanOutPool.liveThreads
        pool.stopAndWait()
        XCTAssertEqual(FanOutPool.liveThreads, before - width, "stopAndWait returns after the threads ended")
        XCTAssertEqual(pool.results(3) { $0 + 1 }.map { $0.get() }, [1, 2, 3], "a stopped pool runs jobs on the caller's thread")
    }

    func testProgressCallbackSeesTheJobsStillRunning() {
        let release = DispatchSemaphore(value: 0)
        let pool = FanOutPool(width: 4, name: "test-progress")
        defer { pool.stopAndWait() }
        var seen: [[Int]] = []
        let values = pool.results(4, tick: 0.01, whileWaiting: { pending in
            seen.append(pending)
            if seen.count == 1 { release.signal() }
        }) { i -> Int in
            if i == 2 { _ = release.wait(timeout: .now() + 10) }
            return i
        }
        XCTAssertEqual(values.map { $0.get() }, [0, 1, 2, 3])
        XCTAssertTrue(seen.first?.contains(2) == true, "job 2 was pending while the caller waited: \(seen)")
    }
}

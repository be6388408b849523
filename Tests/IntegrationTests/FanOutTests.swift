import Foundation
import XCTest
import Synchronization
import Coordinator
import Protocol

/// Issue part 7: a federation's rounds run on a fixed pool of at most 64
/// threads, reused from round to round, however many sites there are.
final class FanOutTests: XCTestCase {
    func testRoundsOverManySitesUseABoundedReusedPool() throws {
        let sites = 150
        let inFlight = Mutex((now: 0, peak: 0))
        let channels: [SiteChannel] = (0..<sites).map { k in
            InProcessChannel(site: "s\(k)") { line in
                inFlight.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                usleep(20_000)
                inFlight.withLock { $0.now -= 1 }
                let id = (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["id"] as? Int ?? 0
                return (try? LineCodec.encode(Reply.pong, id: id)) ?? ""
            }
        }
        let before = FanOutPool.liveThreads
        let federation = Federation(channels: channels)
        var during: [Int] = []
        for _ in 0..<5 {
            let answers = try federation.round({ _ in .ping }) { reply, _ in reply }
            XCTAssertEqual(answers.count, sites)
            during.append(FanOutPool.liveThreads - before)
        }
        XCTAssertEqual(Set(during), [Federation.maxFanOutThreads], "one pool of 64 threads, the same for every round: \(during)")
        XCTAssertEqual(inFlight.withLock { $0.peak }, Federation.maxFanOutThreads, "64 calls at once, no more")
        federation.close()
        let deadline = Date().addingTimeInterval(5)
        while FanOutPool.liveThreads > before && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(FanOutPool.liveThreads, before, "close() ends the pool's threads")
    }
}

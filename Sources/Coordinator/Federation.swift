// Fans each round out to every site at once and gathers the answers in site
// order, so sums over sites never depend on which site answered first.

import Foundation
import Protocol
import Synchronization

public final class Federation: @unchecked Sendable {
    public let channels: [SiteChannel]
    private let counter = Mutex(0)

    public init(channels: [SiteChannel]) { self.channels = channels }

    public var sites: [String] { channels.map(\.site) }
    /// Rounds run so far (one request to every site involved is one round).
    public var rounds: Int { counter.withLock { $0 } }

    /// Sends `request(i)` to every site i concurrently; returns the answers in
    /// site order, or throws the first failure in site order (naming the site).
    public func round<T: Sendable>(_ request: (Int) -> Request,
                                   _ unwrap: @escaping @Sendable (Reply, String) throws -> T) throws -> [T] {
        counter.withLock { $0 += 1 }
        let requests = channels.indices.map(request)
        let results = Mutex<[Result<T, Error>?]>(Array(repeating: nil, count: channels.count))
        let channels = self.channels
        // One thread per site: the calls block on the network, so the global
        // pool's width (the core count) would serialize a 50-site round.
        let group = DispatchGroup()
        for i in channels.indices {
            group.enter()
            let thread = Thread {
            let site = channels[i].site
            let r: Result<T, Error>
            do {
                let reply = try channels[i].call(requests[i])
                if case .error(let e) = reply {
                    r = .failure(SiteFailure(site: site, message: e.message, code: e.code))
                } else {
                    r = .success(try unwrap(reply, site))
                }
            } catch let f as SiteFailure {
                r = .failure(f)
            } catch {
                r = .failure(SiteFailure(site: site, message: "\(error)"))
            }
            results.withLock { $0[i] = r }
            group.leave()
            }
            thread.start()
        }
        group.wait()
        return try results.withLock { $0 }.map { try $0!.get() }
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
        channels.forEach { $0.close() }
        closeHook.withLock { hook in hook?(); hook = nil }
    }
}

/// An answer of the wrong kind.
func unexpected(_ reply: Reply, _ site: String, expected: String) -> SiteFailure {
    SiteFailure(site: site, message: "answered \(reply.typeName) where \(expected) was expected")
}

// The thread that works on a connection's requests while the connection's
// own thread watches whether the peer is still there (AgentServer, the
// cancellation of a request whose coordinator left). One per connection,
// started with its first request and reused: a thread per request was
// created, and its 4 MB stack mapped, thousands of times in a fit with
// hundreds of sites.

import Dispatch
import Foundation
import Synchronization

final class RequestWorker: Sendable {
    private struct State {
        var job: (@Sendable () -> Void)? = nil
        var stopped = false
        var started = false
    }
    private let state = Mutex(State())
    private let ready = DispatchSemaphore(value: 0)

    /// Runs `job` on the worker thread (one job at a time: the caller waits
    /// for it to finish before handing over the next).
    func run(_ job: @escaping @Sendable () -> Void) {
        let start = state.withLock { s -> Bool in
            s.job = job
            defer { s.started = true }
            return !s.started
        }
        if start {
            let worker = Thread { [self] in loop() }
            worker.stackSize = 1 << 22
            worker.start()
        }
        ready.signal()
    }

    /// Lets the thread end once its current job, if any, is done.
    func stop() {
        state.withLock { $0.stopped = true }
        ready.signal()
    }

    private func loop() {
        while true {
            ready.wait()
            let (job, stopped) = state.withLock { s in
                defer { s.job = nil }
                return (s.job, s.stopped)
            }
            job?()
            if stopped { return }
        }
    }
}

// Process signals (SIGTERM, SIGINT, SIGHUP) turned into calls on a thread of
// our own, with no moment at which a signal is lost.
//
// A Dispatch signal source registers itself some time after resume(), on
// Dispatch's own thread; the disposition meanwhile had to be SIG_IGN, so a
// SIGTERM sent just after the agent said "listening" was dropped and the agent
// ran on (1 in 50 starts on an idle machine, more under load). Here the handler
// is installed with sigaction before `handle` returns: from then on every
// delivery writes the signal's number to a pipe, and one thread reads the pipe
// and runs the handlers. The handler does nothing but write(2), which is
// async-signal-safe; SA_RESTART keeps interrupted reads and writes going.

import Foundation
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The pipe's write end, read by the C signal handler. A constant initial
/// value, so no lazy initialization runs inside the handler.
nonisolated(unsafe) private var signalPipeWriteEnd: Int32 = -1

public enum SignalWatcher {
    private struct State {
        var readEnd: Int32 = -1
        var handlers: [Int32: @Sendable () -> Void] = [:]
    }
    private static let state = Mutex(State())

    /// Runs `handler` on the watcher's thread each time `signal` arrives,
    /// from the moment this returns until the process ends (a later call for
    /// the same signal replaces the handler).
    public static func handle(_ signal: Int32, _ handler: @escaping @Sendable () -> Void) {
        state.withLock { s in
            if s.readEnd < 0 {
                var ends: [Int32] = [-1, -1]
                guard pipe(&ends) == 0 else {
                    fatalError("fedmix-agent: cannot create the signal pipe: \(String(cString: strerror(errno)))")
                }
                for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
                s.readEnd = ends[0]
                signalPipeWriteEnd = ends[1]
                let readEnd = ends[0]
                let thread = Thread { readSignals(from: readEnd) }
                thread.name = "fedmix-signals"
                thread.start()
            }
            s.handlers[signal] = handler
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                let saved = errno
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWriteEnd, &byte, 1)
                errno = saved
            }
            action.sa_flags = SA_RESTART
            sigemptyset(&action.sa_mask)
            guard sigaction(signal, &action, nil) == 0 else {
                fatalError("fedmix-agent: cannot handle signal \(signal): \(String(cString: strerror(errno)))")
            }
        }
    }

    private static func readSignals(from fd: Int32) {
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            guard n == 1 else { return }
            let handler = state.withLock { $0.handlers[Int32(byte)] }
            handler?()
        }
    }
}

import COpenSSL
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A listening TCP socket that hands out mutually authenticated TLS
/// connections.
///
/// Why: a site agent serves the coordinator over mutual TLS. A failed or
/// hostile handshake must not stop the server, `close()` must be able to stop
/// a thread blocked in `accept()`, and certificates must be rotatable without
/// a restart (`replaceContext(_:)`).
public final class TLSListener: Sendable {
    /// The bound address as given.
    public let host: String
    /// The bound port (the ephemeral one chosen when 0 was asked for).
    public let port: Int
    /// Seconds a client has to complete the handshake, as a whole.
    public let handshakeTimeout: Double
    /// Initial read/write timeout of accepted connections.
    public let ioTimeout: Double

    private struct State {
        var fd: Int32
        var wakeRead: Int32
        var wakeWrite: Int32
        var closed = false
        var activeAccepts = 0
    }
    private let state: Mutex<State>
    private let current: Mutex<TLSContext>

    /// Binds and listens on host:port ("0.0.0.0", "::", "127.0.0.1", a host
    /// name; port 0 for an ephemeral port) with a server context.
    public init(host: String, port: Int, context: TLSContext,
                handshakeTimeout: Double = 10, ioTimeout: Double = 60, backlog: Int32 = 128) throws {
        guard context.role == .server else {
            throw TLSError.configuration("TLSListener needs a server context (TLSContext.server)")
        }
        guard (0...65535).contains(port) else {
            throw TLSError.listenFailed(host: host, port: port, reason: "port out of range")
        }
        ignoreSIGPIPE()
        let addresses = try Socket.resolve(host: host, port: port, passive: true)
        var lastReason = "no usable address"
        var bound: Int32 = -1
        for (family, address) in addresses {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastReason = Socket.errorText(errno); continue }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let rc = address.withUnsafeBytes {
                bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if rc == 0 && listen(fd, backlog) == 0 {
                bound = fd
                break
            }
            lastReason = Socket.errorText(errno)
            _ = Glibc.close(fd)
        }
        guard bound >= 0 else { throw TLSError.listenFailed(host: host, port: port, reason: lastReason) }

        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let actualPort: Int = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Int in
                guard getsockname(bound, sa, &length) == 0 else { return port }
                if Int32(sa.pointee.sa_family) == AF_INET6 {
                    return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
                }
                return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        }

        // A pipe whose read end becomes readable on close(): wakes accept().
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else {
            let why = Socket.errorText(errno)
            _ = Glibc.close(bound)
            throw TLSError.listenFailed(host: host, port: port, reason: "pipe: \(why)")
        }
        for p in pipeFDs {
            _ = fcntl(p, F_SETFD, FD_CLOEXEC)
            Socket.setBlocking(p, false)
        }
        self.host = host
        self.port = actualPort
        self.handshakeTimeout = handshakeTimeout
        self.ioTimeout = ioTimeout
        self.state = Mutex(State(fd: bound, wakeRead: pipeFDs[0], wakeWrite: pipeFDs[1]))
        self.current = Mutex(context)
    }

    deinit { close() }

    /// The context new connections are made with.
    public var context: TLSContext { current.withLock { $0 } }

    /// Swaps the server context (e.g. after certificate rotation). Connections
    /// accepted afterwards use `newContext`; established ones keep theirs.
    /// Build the new context first: `TLSContext.server` checks the new files.
    public func replaceContext(_ newContext: TLSContext) {
        precondition(newContext.role == .server, "replaceContext needs a server context")
        current.withLock { $0 = newContext }
    }

    /// Waits for a client and completes the TLS handshake (bounded by
    /// `handshakeTimeout`). A failed handshake throws its specific TLSError
    /// and the listener stays usable: call accept() again. Throws `.closed`
    /// once `close()` was called.
    ///
    /// The handshake runs on the calling thread, so one slow client delays the
    /// next accept by up to `handshakeTimeout`. Servers that must not be
    /// delayed use `acceptIncoming()` and run `handshake()` on a thread per
    /// connection.
    public func accept() throws -> TLSConnection {
        try acceptIncoming().handshake()
    }

    /// Waits for a TCP connection without doing the TLS handshake yet.
    public func acceptIncoming() throws -> TLSIncomingConnection {
        let (fd, wake) = try state.withLock { s throws(TLSError) -> (Int32, Int32) in
            if s.closed { throw TLSError.closed }
            s.activeAccepts += 1
            return (s.fd, s.wakeRead)
        }
        defer {
            state.withLock { s in
                s.activeAccepts -= 1
                if s.closed && s.activeAccepts == 0 { Self.closeDescriptors(&s) }
            }
        }
        while true {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
            let rc = poll(&fds, 2, -1)
            if rc < 0 {
                if errno == EINTR { continue }
                throw TLSError.acceptFailed(reason: "poll: \(Socket.errorText(errno))")
            }
            if fds[1].revents != 0 || state.withLock({ $0.closed }) { throw TLSError.closed }
            if fds[0].revents == 0 { continue }

            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.accept(fd, $0, &length)
                }
            }
            if client < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED, EPROTO:
                    continue // the client went away between poll and accept
                default:
                    throw TLSError.acceptFailed(reason: Socket.errorText(errno))
                }
            }
            let address = withUnsafePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { Socket.describe($0, length: length) }
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            Socket.setBlocking(client, false)
            Socket.setNoDelay(client)
            return TLSIncomingConnection(fd: client, peerAddress: address, context: context,
                                         handshakeTimeout: handshakeTimeout, ioTimeout: ioTimeout)
        }
    }

    /// Stops listening. Threads blocked in accept() wake up and throw
    /// `.closed`. Established connections are not affected. Idempotent.
    public func close() {
        state.withLock { s in
            if s.closed { return }
            s.closed = true
            var byte: UInt8 = 1
            _ = write(s.wakeWrite, &byte, 1)
            if s.activeAccepts == 0 { Self.closeDescriptors(&s) }
        }
    }

    private static func closeDescriptors(_ s: inout State) {
        for fd in [s.fd, s.wakeRead, s.wakeWrite] where fd >= 0 { _ = Glibc.close(fd) }
        s.fd = -1
        s.wakeRead = -1
        s.wakeWrite = -1
    }
}

/// A TCP connection accepted by a `TLSListener` whose TLS handshake has not
/// run yet.
///
/// Why: the handshake can take up to the handshake timeout; a server can run
/// it on a thread of the connection's own so that slow or hostile clients do
/// not delay others. The peer address is known before the handshake, for
/// logging refused connections.
public final class TLSIncomingConnection: Sendable {
    /// The client's address, "host:port".
    public let peerAddress: String
    /// The server context captured when the connection was accepted.
    public let context: TLSContext
    /// The socket until the handshake takes it or `close()` closes it (-1 then).
    private let fd: Mutex<Int32>
    private let handshakeTimeout: Double
    private let ioTimeout: Double
    private let abortFlag = Atomic<Bool>(false)

    init(fd: Int32, peerAddress: String, context: TLSContext, handshakeTimeout: Double, ioTimeout: Double) {
        self.fd = Mutex(fd)
        self.peerAddress = peerAddress
        self.context = context
        self.handshakeTimeout = handshakeTimeout
        self.ioTimeout = ioTimeout
    }

    deinit { close() }

    /// Runs the server handshake (once). Throws the specific TLSError when it
    /// fails; the socket is closed then.
    /// `timeout` overrides the listener's handshake timeout.
    public func handshake(timeout: Double? = nil) throws -> TLSConnection {
        let owned = fd.withLock { fd in defer { fd = -1 }; return fd }
        guard owned >= 0 else { throw TLSError.closed }
        return try TLSConnection.accept(fd: owned, context: context, peerAddress: peerAddress,
                                        handshakeTimeout: timeout ?? handshakeTimeout, ioTimeout: ioTimeout,
                                        aborted: { [self] in self.abortFlag.load(ordering: .relaxed) })
    }

    /// Ends a handshake running on another thread within 50 ms: it throws
    /// `.closed` and closes the socket. Why: a server whose budget for
    /// unauthenticated connections is full drops the oldest pending
    /// handshake to make room, so that a flood of silent TCP clients cannot
    /// keep a real client out. Safe from any thread; no effect after the
    /// handshake finished.
    public func abort() { abortFlag.store(true, ordering: .relaxed) }

    /// Drops the connection without a handshake.
    public func close() {
        fd.withLock { fd in
            if fd >= 0 { _ = Glibc.close(fd) }
            fd = -1
        }
    }
}

// Small POSIX socket helpers for the TLS transport: name resolution,
// non-blocking connect with a deadline, poll, socket timeouts.
import COpenSSL
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

enum Socket {
    static func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Seconds on a monotonic clock.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Resolves host:port for TCP. `passive` for a listening address.
    static func resolve(host: String, port: Int, passive: Bool) throws -> [(family: Int32, address: [UInt8])] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            let why = rc == EAI_SYSTEM ? errorText(errno) : String(cString: gai_strerror(rc))
            throw TLSError.hostNotFound(host: host, reason: why)
        }
        defer { freeaddrinfo(first) }
        var out: [(Int32, [UInt8])] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            if let addr = ai.pointee.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: addr, count: Int(ai.pointee.ai_addrlen)))
                out.append((ai.pointee.ai_family, bytes))
            }
            cursor = ai.pointee.ai_next
        }
        return out
    }

    /// Waits until `fd` is ready for `events` or `deadline` passes.
    /// Returns false on timeout.
    /// `aborted` is checked at least every 50 ms (false is returned once it
    /// says true), so another thread can end the wait early.
    static func wait(_ fd: Int32, events: Int16, deadline: Double, aborted: (() -> Bool)? = nil) throws -> Bool {
        while true {
            let remaining = deadline - now()
            if remaining <= 0 { return false }
            if let aborted, aborted() { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let slice = aborted == nil ? remaining : min(remaining, 0.05)
            let ms = Int32(min(slice * 1000, Double(Int32.max)).rounded(.up))
            let rc = poll(&p, 1, ms)
            if rc > 0 { return true }
            if rc == 0 { continue }
            if errno == EINTR { continue }
            throw TLSError.io(.handshake, "poll: \(errorText(errno))")
        }
    }

    /// A connected, still non-blocking TCP socket to host:port.
    static func connect(host: String, port: Int, deadline: Double) throws -> Int32 {
        let addresses = try resolve(host: host, port: port, passive: false)
        var lastError: TLSError = .connectFailed(host: host, port: port, reason: "no usable address")
        for (family, address) in addresses {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = .connectFailed(host: host, port: port, reason: errorText(errno)); continue }
            var rc = address.withUnsafeBytes {
                Glibc.connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            var code: Int32 = rc == 0 ? 0 : errno
            if rc != 0 && (code == EINPROGRESS || code == EINTR) {
                guard try wait(fd, events: Int16(POLLOUT), deadline: deadline) else {
                    _ = Glibc.close(fd)
                    throw TLSError.timeout(.connect)
                }
                var len = socklen_t(MemoryLayout<Int32>.size)
                rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &len)
                if rc != 0 { code = errno }
            }
            if code == 0 {
                setNoDelay(fd)
                return fd
            }
            _ = Glibc.close(fd)
            switch code {
            case ECONNREFUSED: lastError = .connectionRefused(host: host, port: port)
            case ETIMEDOUT: lastError = .timeout(.connect)
            default: lastError = .connectFailed(host: host, port: port, reason: errorText(code))
            }
        }
        throw lastError
    }

    /// Reads and drops whatever input is already queued, without waiting.
    /// Closing a socket with unread input makes the kernel send RST instead
    /// of FIN, and a peer that receives RST may lose the TLS alert sent just
    /// before, which explains why it was refused.
    static func discardPendingInput(_ fd: Int32) {
        var scratch = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<16 {
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { return }
        }
    }

    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func setBlocking(_ fd: Int32, _ blocking: Bool) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { return }
        _ = fcntl(fd, F_SETFL, blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK)
    }

    /// Sets SO_RCVTIMEO or SO_SNDTIMEO; `seconds <= 0` means no timeout.
    static func setTimeout(_ fd: Int32, option: Int32, seconds: Double) {
        var tv = timeval()
        if seconds > 0 {
            let whole = seconds.rounded(.down)
            tv.tv_sec = Int(min(whole, 1e9))
            tv.tv_usec = Int((seconds - whole) * 1e6)
            if tv.tv_sec == 0 && tv.tv_usec == 0 { tv.tv_usec = 1 }
        }
        _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// "host:port" of a socket address ("[::1]:443" for IPv6).
    static func describe(_ storage: UnsafePointer<sockaddr>, length: socklen_t) -> String {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        guard getnameinfo(storage, length, &host, socklen_t(host.count), &service, socklen_t(service.count),
                          NI_NUMERICHOST | NI_NUMERICSERV) == 0 else { return "?" }
        let h = stringFromCBuffer(host), s = stringFromCBuffer(service)
        return h.contains(":") ? "[\(h)]:\(s)" : "\(h):\(s)"
    }
}

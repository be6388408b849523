import COpenSSL
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// One established, mutually authenticated TLS connection carrying
/// newline-delimited UTF-8 messages (JSON lines).
///
/// Why: the protocol between coordinator and sites is lines of JSON; this
/// class frames them safely — a line limit enforced while reading, so a peer
/// cannot make this side buffer without bound; strict UTF-8; timeouts so a
/// silent peer cannot hold a thread forever — and exposes who the peer is.
///
/// Use from one thread at a time (one thread per connection). Blocking calls;
/// do not call from Swift concurrency's cooperative pool.
// @unchecked: wraps an SSL*; its owner (an agent's connection thread, a TLSChannel call under
// the channel's lock) reads and writes from one thread at a time; others only interrupt() it
// (shutdown(2) of the socket) or, through TLSChannel's link lock, change its timeouts or close it.
public final class TLSConnection: @unchecked Sendable {
    /// RFC 2253 subject of the peer's certificate ("CN=site-a").
    public let peerSubject: String
    /// The peer certificate's subjectAltName DNS names (its commonName when
    /// it has no DNS names).
    public let peerNames: [String]
    /// SHA-256 of the peer certificate's DER encoding, lowercase hex.
    public let peerFingerprintSHA256: String
    /// Negotiated protocol, e.g. "TLSv1.3".
    public let protocolVersion: String
    /// The peer's address, "host:port".
    public let peerAddress: String
    /// Application bytes read and written so far (newlines included).
    public private(set) var bytesRead = 0
    public private(set) var bytesWritten = 0

    /// Seconds a read may wait for data (SO_RCVTIMEO); <= 0: no limit.
    /// Setting the value it has makes no system call (callers set it per exchange).
    public var readTimeout: Double {
        didSet { if fd >= 0 && readTimeout != oldValue { Socket.setTimeout(fd, option: SO_RCVTIMEO, seconds: readTimeout) } }
    }
    /// Seconds a write may wait for the peer to take data (SO_SNDTIMEO); likewise.
    public var writeTimeout: Double {
        didSet { if fd >= 0 && writeTimeout != oldValue { Socket.setTimeout(fd, option: SO_SNDTIMEO, seconds: writeTimeout) } }
    }

    /// The context the connection was made with (kept alive with it).
    public let context: TLSContext
    private var ssl: OpaquePointer?
    private var fd: Int32
    /// Set after an error that leaves the TLS state unusable: no
    /// close_notify is sent then (OpenSSL forbids SSL_shutdown after it).
    private var fatal = false
    /// A read error that poisons further reads (line framing lost).
    private var readFailure: TLSError?
    private var writeFailure: TLSError?
    private var receivedCloseNotify = false
    /// The last line `readLine` refused (too long, or not UTF-8): the bytes
    /// it had read of it and their SHA-256, so a server can log a digest
    /// instead of the text.
    public private(set) var rejectedLine: (bytes: Int, sha256: String)?

    // Read buffer: bytes [start, buffer.count) are unconsumed; of those, the
    // first `scanned` are known to hold no newline.
    private var buffer: [UInt8] = []
    private var start = 0
    private var scanned = 0
    private var chunk = [UInt8](repeating: 0, count: 16384)

    private init(context: TLSContext, ssl: OpaquePointer, fd: Int32, peerAddress: String,
                 readTimeout: Double, writeTimeout: Double) throws {
        self.context = context
        self.ssl = ssl
        self.fd = fd
        self.peerAddress = peerAddress
        self.readTimeout = readTimeout
        self.writeTimeout = writeTimeout
        // Both unreachable with SSL_VERIFY_PEER; refuse rather than trust.
        guard let cert = SSL_get1_peer_certificate(ssl) else { throw TLSError.noPeerCertificate }
        let verify = Int32(SSL_get_verify_result(ssl))
        guard verify == X509_V_OK else {
            X509_free(cert)
            throw TLSError.peerCertificateRejected(subject: "", reason: String(cString: X509_verify_cert_error_string(Int(verify))))
        }
        defer { X509_free(cert) }
        peerSubject = X509Fields.subject(cert)
        peerNames = X509Fields.identityNames(cert)
        peerFingerprintSHA256 = X509Fields.fingerprintSHA256(cert)
        protocolVersion = String(cString: SSL_get_version(ssl))
        Socket.setBlocking(fd, true)
        Socket.setTimeout(fd, option: SO_RCVTIMEO, seconds: readTimeout)
        Socket.setTimeout(fd, option: SO_SNDTIMEO, seconds: writeTimeout)
    }

    deinit { close() }

    /// Connects to host:port and completes a mutually authenticated
    /// handshake, checking that the server's certificate is for `serverName`
    /// (a DNS name, or an IP address literal matched against IP SANs).
    /// `timeout` bounds connect plus handshake; `ioTimeout` is the initial
    /// `readTimeout` and `writeTimeout`.
    public static func connect(host: String, port: Int, context: TLSContext, serverName: String,
                               timeout: Double = 30, ioTimeout: Double = 60) throws -> TLSConnection {
        guard context.role == .client else {
            throw TLSError.configuration("TLSConnection.connect needs a client context (TLSContext.client)")
        }
        guard !serverName.isEmpty else { throw TLSError.configuration("serverName must not be empty") }
        let deadline = Socket.now() + timeout
        let fd = try Socket.connect(host: host, port: port, deadline: deadline)
        let state = VerifyState(allowedNames: [])
        let ssl = try makeSSL(context, fd: fd, state: state)
        do {
            try withExtendedLifetime(state) {
                let param = SSL_get0_param(ssl)
                OpenSSLErrors.clear()
                if isIPAddressLiteral(serverName) {
                    guard X509_VERIFY_PARAM_set1_ip_asc(param, serverName) == 1 else {
                        throw TLSError.configuration("cannot check IP address \(serverName): \(OpenSSLErrors.drainSummary())")
                    }
                } else {
                    // SNI only for names (RFC 6066 forbids IP literals).
                    X509_VERIFY_PARAM_set_hostflags(param, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                    guard X509_VERIFY_PARAM_set1_host(param, serverName, 0) == 1,
                          fedmix_SSL_set_tlsext_host_name(ssl, serverName) == 1 else {
                        throw TLSError.configuration("cannot check host name \(serverName): \(OpenSSLErrors.drainSummary())")
                    }
                }
                try handshake(ssl: ssl, fd: fd, isServer: false, deadline: deadline,
                              state: state, expectedName: serverName, allowed: [])
            }
            SSL_set_ex_data(ssl, 0, nil)
            return try TLSConnection(context: context, ssl: ssl, fd: fd, peerAddress: "\(host):\(port)",
                                     readTimeout: ioTimeout, writeTimeout: ioTimeout)
        } catch {
            SSL_free(ssl)
            _ = Glibc.close(fd)
            throw error
        }
    }

    /// An SSL object on `fd`; `fd` is closed if it cannot be made.
    private static func makeSSL(_ context: TLSContext, fd: Int32, state: VerifyState) throws -> OpaquePointer {
        do { return try context.makeSSL(fd: fd, state: state) } catch {
            _ = Glibc.close(fd)
            throw error
        }
    }

    /// Server side: the handshake on an accepted socket (see TLSListener).
    /// Takes ownership of `fd`: it is closed if the handshake fails.
    static func accept(fd: Int32, context: TLSContext, peerAddress: String,
                       handshakeTimeout: Double, ioTimeout: Double,
                       aborted: @escaping () -> Bool = { false }) throws -> TLSConnection {
        let state = VerifyState(allowedNames: context.allowedLowercased)
        let ssl = try makeSSL(context, fd: fd, state: state)
        let connection: TLSConnection
        do {
            try withExtendedLifetime(state) {
                try handshake(ssl: ssl, fd: fd, isServer: true, deadline: Socket.now() + handshakeTimeout,
                              state: state, expectedName: "", allowed: context.allowedPeerNames, aborted: aborted)
            }
            SSL_set_ex_data(ssl, 0, nil)
            connection = try TLSConnection(context: context, ssl: ssl, fd: fd, peerAddress: peerAddress,
                                           readTimeout: ioTimeout, writeTimeout: ioTimeout)
        } catch {
            SSL_free(ssl)
            Socket.discardPendingInput(fd)
            _ = Glibc.close(fd)
            throw error
        }
        // Defence in depth: the verify callback already enforced this.
        let allowed = context.allowedLowercased
        if !allowed.isEmpty, !connection.peerNames.map(asciiLowercased).contains(where: { allowed.contains($0) }) {
            connection.close()
            throw TLSError.peerNameNotAllowed(names: connection.peerNames, allowed: context.allowedPeerNames)
        }
        return connection
    }

    /// Drives SSL_accept / SSL_connect on a non-blocking socket until done,
    /// the deadline passes (slow peers cannot stall it byte by byte), or it
    /// fails; failures are classified into specific TLSErrors.
    private static func handshake(ssl: OpaquePointer, fd: Int32, isServer: Bool, deadline: Double,
                                  state: VerifyState, expectedName: String, allowed: [String],
                                  aborted: @escaping () -> Bool = { false }) throws {
        while true {
            if aborted() { throw TLSError.closed }
            OpenSSLErrors.clear()
            errno = 0
            let rc = isServer ? SSL_accept(ssl) : SSL_connect(ssl)
            if rc == 1 { return }
            let savedErrno = errno
            let kind = SSL_get_error(ssl, rc)
            switch kind {
            case SSL_ERROR_WANT_READ:
                guard try Socket.wait(fd, events: Int16(POLLIN), deadline: deadline, aborted: aborted) else {
                    throw aborted() ? TLSError.closed : TLSError.timeout(.handshake)
                }
            case SSL_ERROR_WANT_WRITE:
                guard try Socket.wait(fd, events: Int16(POLLOUT), deadline: deadline, aborted: aborted) else {
                    throw aborted() ? TLSError.closed : TLSError.timeout(.handshake)
                }
            default:
                let entries = OpenSSLErrors.drain()
                throw classifyHandshakeFailure(ssl: ssl, kind: kind, errnoValue: savedErrno, entries: entries,
                                               state: state, expectedName: expectedName, allowed: allowed)
            }
        }
    }

    static func classifyHandshakeFailure(ssl: OpaquePointer, kind: Int32, errnoValue: Int32,
                                         entries: [OpenSSLErrorEntry], state: VerifyState,
                                         expectedName: String, allowed: [String]) -> TLSError {
        let verify = Int32(SSL_get_verify_result(ssl))
        if verify != X509_V_OK {
            let subject = state.leafSubject
            switch verify {
            case X509_V_ERR_APPLICATION_VERIFICATION where state.nameRejected:
                return .peerNameNotAllowed(names: state.leafNames, allowed: allowed)
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
                 X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
                 X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
                return .unknownCA(subject: subject, reason: String(cString: X509_verify_cert_error_string(Int(verify))))
            case X509_V_ERR_CERT_HAS_EXPIRED:
                return .certificateExpired(subject: subject)
            case X509_V_ERR_CERT_NOT_YET_VALID:
                return .certificateNotYetValid(subject: subject)
            case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
                return .hostnameMismatch(expected: expectedName, presented: state.leafNames)
            default:
                return .peerCertificateRejected(subject: subject, reason: String(cString: X509_verify_cert_error_string(Int(verify))))
            }
        }
        return classifyIOFailure(kind: kind, errnoValue: errnoValue, entries: entries, operation: .handshake)
    }

    /// Failures other than certificate verification (both during and after
    /// the handshake).
    static func classifyIOFailure(kind: Int32, errnoValue: Int32, entries: [OpenSSLErrorEntry],
                                  operation: TLSError.Operation) -> TLSError {
        let sslReasons = entries.filter { $0.library == ERR_LIB_SSL }.map(\.reason)
        if sslReasons.contains(SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) { return .noPeerCertificate }
        if let alert = entries.first(where: { $0.alertCode != nil }) {
            return .rejectedByPeer(alertCode: alert.alertCode!, alert: alert.text)
        }
        let notTLS: [Int32] = [SSL_R_WRONG_VERSION_NUMBER, SSL_R_HTTP_REQUEST, SSL_R_HTTPS_PROXY_REQUEST,
                               SSL_R_UNKNOWN_PROTOCOL, SSL_R_PACKET_LENGTH_TOO_LONG]
        if let e = entries.first(where: { $0.library == ERR_LIB_SSL && notTLS.contains($0.reason) }) {
            return .notTLS(reason: e.text)
        }
        if sslReasons.contains(SSL_R_UNEXPECTED_EOF_WHILE_READING) { return .unexpectedEOF }
        if kind == SSL_ERROR_SYSCALL {
            switch errnoValue {
            case ECONNRESET, EPIPE: return .connectionReset
            case EAGAIN, EWOULDBLOCK: return .timeout(operation)
            case 0: return .unexpectedEOF
            default: return .io(operation, Socket.errorText(errnoValue))
            }
        }
        if kind == SSL_ERROR_ZERO_RETURN { return .unexpectedEOF }
        let detail = OpenSSLErrors.summary(entries, fallback: "SSL error \(kind)")
        return operation == .handshake ? .handshakeFailed(detail) : .io(operation, detail)
    }

    // MARK: Lines

    /// Reads one line and returns it without its "\n"; nil when the peer
    /// closed cleanly (close_notify) between lines.
    ///
    /// Throws `.lineTooLong(limit:)` as soon as more than `maxBytes` bytes
    /// arrive without a newline (at most `maxBytes + 1` bytes of a line are
    /// ever buffered), `.invalidUTF8`, `.timeout(.read)` when no data comes
    /// within `readTimeout` (retrying is allowed), `.unexpectedEOF` when the
    /// peer vanishes mid-line or without close_notify. After `.lineTooLong`
    /// or a transport error every further read throws the same error.
    public func readLine(maxBytes: Int = 1 << 20) throws -> String? {
        precondition(maxBytes > 0, "maxBytes must be positive")
        if let readFailure { throw readFailure }
        guard ssl != nil else { throw TLSError.closed }
        while true {
            let end = buffer.count
            if let newline = buffer[(start + scanned)..<end].firstIndex(of: 0x0A) {
                let length = newline - start
                if length > maxBytes {
                    rejectedLine = (length + 1, SHA256Digest.hex(Array(buffer[start...newline])))
                    throw failRead(.lineTooLong(limit: maxBytes))
                }
                let line = String(validating: buffer[start..<newline], as: UTF8.self)
                if line == nil { rejectedLine = (length + 1, SHA256Digest.hex(Array(buffer[start...newline]))) }
                start = newline + 1
                scanned = 0
                compactBuffer()
                guard let line else { throw TLSError.invalidUTF8 }
                return line
            }
            scanned = end - start
            if scanned > maxBytes {
                rejectedLine = (scanned, SHA256Digest.hex(Array(buffer[start..<end])))
                throw failRead(.lineTooLong(limit: maxBytes))
            }
            if receivedCloseNotify {
                if scanned == 0 { return nil }
                throw failRead(.unexpectedEOF)
            }
            // Never ask for more than could still complete a legal line.
            let want = min(chunk.count, maxBytes + 1 - scanned)
            let n = try readSome(max: want)
            if n == 0 { receivedCloseNotify = true }
        }
    }

    /// Sends `line` followed by "\n". The text must not contain a newline.
    public func writeLine(_ line: String) throws {
        var bytes = Array(line.utf8)
        if bytes.contains(0x0A) { throw TLSError.newlineInLine }
        bytes.append(0x0A)
        try writeRaw(bytes)
    }

    /// Sends bytes as they are (no framing). Internal: for tests that need to
    /// send malformed data.
    func writeRaw(_ bytes: [UInt8]) throws {
        if let writeFailure { throw writeFailure }
        guard let ssl else { throw TLSError.closed }
        var offset = 0
        while offset < bytes.count {
            var written = 0
            OpenSSLErrors.clear()
            errno = 0
            let rc = bytes.withUnsafeBytes { raw in
                SSL_write_ex(ssl, raw.baseAddress! + offset, raw.count - offset, &written)
            }
            if rc == 1 {
                offset += written
                bytesWritten += written
                continue
            }
            let savedErrno = errno
            let kind = SSL_get_error(ssl, rc)
            let entries = OpenSSLErrors.drain()
            let error: TLSError
            if (kind == SSL_ERROR_WANT_WRITE || kind == SSL_ERROR_WANT_READ)
                && (savedErrno == EAGAIN || savedErrno == EWOULDBLOCK) {
                error = .timeout(.write)
            } else {
                error = Self.classifyIOFailure(kind: kind, errnoValue: savedErrno, entries: entries, operation: .write)
            }
            // A partly written record cannot be resumed with other data.
            fatal = fatal || kind == SSL_ERROR_SSL || kind == SSL_ERROR_SYSCALL
            // A peer that refused this side (e.g. its certificate, after a
            // TLS 1.3 handshake that looked complete here) sent an alert
            // before closing; report that instead of the bare reset.
            let reported = (error == .connectionReset || error == .unexpectedEOF) ? (pendingAlert() ?? error) : error
            writeFailure = reported
            throw reported
        }
    }

    /// One SSL_read of up to `max` bytes appended to the buffer; 0 at
    /// close_notify.
    private func readSome(max: Int) throws -> Int {
        guard let ssl else { throw TLSError.closed }
        var got = 0
        OpenSSLErrors.clear()
        errno = 0
        let rc = chunk.withUnsafeMutableBytes { SSL_read_ex(ssl, $0.baseAddress, max, &got) }
        if rc == 1 {
            buffer.append(contentsOf: chunk[0..<got])
            bytesRead += got
            return got
        }
        let savedErrno = errno
        let kind = SSL_get_error(ssl, rc)
        let entries = OpenSSLErrors.drain()
        switch kind {
        case SSL_ERROR_ZERO_RETURN:
            return 0
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            // SO_RCVTIMEO expired (EAGAIN). The TLS state is intact: a later
            // call may retry.
            throw TLSError.timeout(.read)
        default:
            fatal = fatal || kind == SSL_ERROR_SSL || kind == SSL_ERROR_SYSCALL
            throw failRead(Self.classifyIOFailure(kind: kind, errnoValue: savedErrno, entries: entries, operation: .read))
        }
    }

    /// A fatal alert already received from the peer, read without waiting.
    private func pendingAlert() -> TLSError? {
        guard let ssl, fd >= 0 else { return nil }
        Socket.setBlocking(fd, false)
        defer { Socket.setBlocking(fd, true) }
        var got = 0
        OpenSSLErrors.clear()
        let rc = chunk.withUnsafeMutableBytes { SSL_read_ex(ssl, $0.baseAddress, 1, &got) }
        let entries = OpenSSLErrors.drain()
        if rc == 1 && got > 0 {
            // Ordinary data (e.g. the peer's error answer): keep it for the next read.
            buffer.append(contentsOf: chunk[0..<got])
            bytesRead += got
            return nil
        }
        guard rc != 1, let alert = entries.first(where: { $0.alertCode != nil }) else { return nil }
        let error = TLSError.rejectedByPeer(alertCode: alert.alertCode!, alert: alert.text)
        readFailure = error
        return error
    }

    private func failRead(_ error: TLSError) -> TLSError {
        readFailure = error
        return error
    }

    private func compactBuffer() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 4096 && start * 2 >= buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }

    /// Sends close_notify (unless the connection already failed) and closes
    /// the socket. Idempotent. Does not wait for the peer's close_notify.
    public func close() {
        guard let ssl else { return }
        if !fatal {
            OpenSSLErrors.clear()
            _ = SSL_shutdown(ssl)
            OpenSSLErrors.clear()
        }
        SSL_free(ssl)
        self.ssl = nil
        _ = Glibc.close(fd)
        fd = -1
    }

    /// Makes a read blocked on this connection in another thread return
    /// (end of stream) by shutting the socket down; the reading thread then
    /// closes it as usual. For a server that is stopping.
    public func interrupt() {
        let socket = fd
        if socket >= 0 { _ = Glibc.shutdown(socket, Int32(SHUT_RDWR)) }
    }

    /// True until `close()`.
    public var isOpen: Bool { ssl != nil }

    /// Whether the peer has closed its side or the connection failed, seen
    /// without reading (poll with POLLRDHUP). Safe to call from another
    /// thread while this one is busy computing an answer: a server uses it
    /// to stop work nobody will receive. Data already queued (pipelined
    /// requests) does not count as closed.
    public var peerHasClosed: Bool {
        let descriptor = fd
        guard descriptor >= 0 else { return true }
        let rdhup: Int16 = 0x2000 // POLLRDHUP (Linux; not exported without _GNU_SOURCE)
        var p = pollfd(fd: descriptor, events: rdhup, revents: 0)
        let rc = poll(&p, 1, 0)
        guard rc > 0 else { return false }
        return p.revents & (rdhup | Int16(POLLHUP) | Int16(POLLERR) | Int16(POLLNVAL)) != 0
    }

    /// Whether bytes wait in the socket, seen without reading (poll): safe to
    /// call from another thread while this one waits for something else.
    public var hasInputWaiting: Bool {
        let descriptor = fd
        guard descriptor >= 0 else { return false }
        var p = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) > 0 && p.revents & Int16(POLLIN) != 0
    }

    /// Runs `body` with the SSL handle (nil once closed).
    func withSSL<T>(_ body: (OpaquePointer?) -> T) -> T { body(ssl) }
}

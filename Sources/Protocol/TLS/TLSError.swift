import COpenSSL

/// Everything that can go wrong in the TLS transport, one case per cause.
///
/// Why: a hospital's IT staff read these messages when a site cannot join.
/// Each case says what happened and what to do about it, and tests can assert
/// the exact cause (unknown CA, expired certificate, name not allowed, ...)
/// instead of matching OpenSSL's text.
public enum TLSError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The stage a timeout or an I/O failure happened in.
    public enum Operation: String, Sendable {
        case connect, handshake, read, write
    }

    // MARK: Loading certificates and keys

    /// A configured file does not exist. `role` is "certificate",
    /// "private key" or "CA certificate".
    case fileMissing(role: String, path: String)
    /// The file exists but cannot be read (permissions, a directory, ...).
    case fileUnreadable(role: String, path: String, reason: String)
    /// The file is not PEM text at all (no "-----BEGIN" line).
    case notPEM(role: String, path: String)
    /// The file is PEM but OpenSSL cannot use it (wrong block, corrupt,
    /// encrypted key).
    case invalidPEM(role: String, path: String, reason: String)
    /// The private key is not the key of the certificate.
    case keyMismatch(certificatePath: String, keyPath: String)
    /// Wrong use of the API or an OpenSSL set-up failure.
    case configuration(String)

    // MARK: Connecting and listening

    case hostNotFound(host: String, reason: String)
    case connectionRefused(host: String, port: Int)
    case connectFailed(host: String, port: Int, reason: String)
    case listenFailed(host: String, port: Int, reason: String)
    case acceptFailed(reason: String)
    /// The peer reset the connection (or it broke: EPIPE).
    case connectionReset
    case timeout(Operation)

    // MARK: Handshake: this side rejected the peer

    /// The peer's certificate does not chain to this deployment's CA.
    /// `reason` is OpenSSL's verify text.
    case unknownCA(subject: String, reason: String)
    case certificateExpired(subject: String)
    case certificateNotYetValid(subject: String)
    /// The server's certificate is not for the name the client asked for.
    case hostnameMismatch(expected: String, presented: [String])
    /// A client connected without presenting a certificate.
    case noPeerCertificate
    /// The client's certificate is valid but its name is not allowed here.
    case peerNameNotAllowed(names: [String], allowed: [String])
    /// Any other certificate verification failure (OpenSSL's verify text).
    case peerCertificateRejected(subject: String, reason: String)

    // MARK: Handshake: the peer rejected this side, or is not a TLS peer

    /// The peer sent a fatal TLS alert (its number and OpenSSL's text).
    case rejectedByPeer(alertCode: Int, alert: String)
    /// The bytes received were not TLS (a plaintext client, an HTTP client,
    /// a plaintext server).
    case notTLS(reason: String)
    /// Any other handshake failure (OpenSSL's error queue).
    case handshakeFailed(String)

    // MARK: Reading and writing lines

    /// More than `limit` bytes arrived without a newline.
    case lineTooLong(limit: Int)
    /// A line was not valid UTF-8.
    case invalidUTF8
    /// `writeLine` was given text containing "\n", which would split it into
    /// two protocol messages.
    case newlineInLine
    /// The peer closed the connection without TLS close_notify, or in the
    /// middle of a line.
    case unexpectedEOF
    /// The connection or listener was closed by this side.
    case closed
    /// Another I/O failure while reading or writing.
    case io(Operation, String)

    public var description: String {
        switch self {
        case .fileMissing(let role, let path):
            return "\(role) file \(path) does not exist — check the path in the configuration, or create the file with the fedmix certificate tooling"
        case .fileUnreadable(let role, let path, let reason):
            return "\(role) file \(path) cannot be read: \(reason) — check the path and that this user may read it"
        case .notPEM(let role, let path):
            return "\(role) file \(path) is not PEM (no \"-----BEGIN\" line) — give the PEM file, not DER or another format"
        case .invalidPEM(let role, let path, let reason):
            return "\(role) file \(path) cannot be used: \(reason)"
        case .keyMismatch(let certificatePath, let keyPath):
            return "private key \(keyPath) does not match certificate \(certificatePath) — the two files come from different issues; use the key.pem written together with that cert.pem"
        case .configuration(let detail):
            return "TLS configuration error: \(detail)"

        case .hostNotFound(let host, let reason):
            return "cannot resolve host \(host): \(reason) — check the host name and DNS"
        case .connectionRefused(let host, let port):
            return "connection to \(host):\(port) refused — nothing is listening there; check that the peer is running and the port is right"
        case .connectFailed(let host, let port, let reason):
            return "cannot connect to \(host):\(port): \(reason) — check the address, routing and firewalls"
        case .listenFailed(let host, let port, let reason):
            return "cannot listen on \(host):\(port): \(reason) — choose a free port or an address of this machine"
        case .acceptFailed(let reason):
            return "accepting a connection failed: \(reason)"
        case .connectionReset:
            return "the connection was reset by the peer — it closed or crashed; retry, and check the peer's log"
        case .timeout(let op):
            switch op {
            case .connect: return "timed out connecting — the peer did not answer; check the address and firewalls"
            case .handshake: return "timed out during the TLS handshake — the peer connected but did not complete TLS (is it a fedmix peer?)"
            case .read: return "timed out waiting for data from the peer"
            case .write: return "timed out sending data to the peer (it is not reading)"
            }

        case .unknownCA(let subject, let reason):
            return "certificate verify failed: \(reason) — the peer's certificate\(Self.named(subject)) was not issued by this deployment's CA; issue it a certificate from this deployment's CA, or check caPath"
        case .certificateExpired(let subject):
            return "certificate verify failed: certificate has expired — the peer's certificate\(Self.named(subject)) is past its notAfter date; issue the peer a new certificate"
        case .certificateNotYetValid(let subject):
            return "certificate verify failed: certificate is not yet valid — the peer's certificate\(Self.named(subject)) starts in the future; check both machines' clocks"
        case .hostnameMismatch(let expected, let presented):
            let got = presented.isEmpty ? "no names" : presented.joined(separator: ", ")
            return "certificate verify failed: hostname mismatch — expected a certificate for \(expected) but the server presented one for \(got); connect with the name in the server's certificate, or reissue it"
        case .noPeerCertificate:
            return "the peer presented no client certificate — configure the client with a certificate issued by this deployment's CA"
        case .peerNameNotAllowed(let names, let allowed):
            let got = names.isEmpty ? "(no names)" : names.joined(separator: ", ")
            return "peer name not allowed: the client's certificate is for \(got), which is not in the allowed list [\(allowed.joined(separator: ", "))] — add the name to the allowed peers if this client should connect"
        case .peerCertificateRejected(let subject, let reason):
            return "certificate verify failed: \(reason) — the peer's certificate\(Self.named(subject)) was rejected"

        case .rejectedByPeer(let code, let alert):
            return "the peer rejected the connection (TLS alert \(code): \(alert)) — \(Self.advice(forAlert: code))"
        case .notTLS(let reason):
            return "the peer did not speak TLS (\(reason)) — a plaintext or non-fedmix program is on the other end"
        case .handshakeFailed(let detail):
            return "TLS handshake failed: \(detail)"

        case .lineTooLong(let limit):
            return "a line longer than \(limit) bytes arrived — the peer sent an oversized or malformed message; the connection should be closed"
        case .invalidUTF8:
            return "a line was not valid UTF-8 — the peer sent malformed data"
        case .newlineInLine:
            return "the text to send contains a newline, which would split the message — encode it (JSON escapes newlines)"
        case .unexpectedEOF:
            return "the peer closed the connection unexpectedly (without TLS close_notify, or in the middle of a line) — it may have crashed or rejected this side"
        case .closed:
            return "the connection is closed"
        case .io(let op, let detail):
            return "\(op.rawValue) failed: \(detail)"
        }
    }

    private static func named(_ subject: String) -> String {
        subject.isEmpty ? "" : " (\(subject))"
    }

    /// What to do about a fatal alert the peer sent (RFC 8446 §6).
    static func advice(forAlert code: Int) -> String {
        switch code {
        case 48: // unknown_ca
            return "the peer does not trust this side's certificate: it was not issued by the peer's CA; use a certificate from the deployment's CA"
        case 45: // certificate_expired
            return "the peer says this side's certificate has expired; issue a new one"
        case 116: // certificate_required
            return "the peer requires a client certificate; configure one"
        case 42, 43, 46: // bad_certificate, unsupported_certificate, certificate_unknown
            return "the peer rejected this side's certificate; check it with the fedmix certificate tooling"
        case 44: // certificate_revoked
            return "the peer says this side's certificate was revoked"
        case 40: // handshake_failure
            return "the peer refused the handshake; for a fedmix server this usually means this certificate's name is not in its allowed peers"
        case 70: // protocol_version
            return "no TLS version in common; fedmix requires TLS 1.2 or later"
        case 112: // unrecognized_name
            return "the peer does not serve the requested server name"
        default:
            return "see the peer's log for the reason"
        }
    }
}

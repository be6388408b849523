import COpenSSL
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The PEM files one party of a deployment uses: its certificate, its private
/// key and the deployment CA's certificate.
///
/// Why: every fedmix connection is mutual TLS inside one private PKI; a party
/// is configured by exactly these three files, nothing from the system trust
/// store.
public struct TLSIdentity: Sendable, Equatable {
    /// This party's certificate (PEM; may be followed by intermediate CAs).
    public var certificatePath: String
    /// This party's unencrypted private key (PEM), mode 0600.
    public var keyPath: String
    /// The deployment CA certificate(s) (PEM): the only trusted issuers.
    public var caPath: String

    public init(certificatePath: String, keyPath: String, caPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.caPath = caPath
    }

    /// The layout the certificate tooling writes: DIR/cert.pem, DIR/key.pem,
    /// with the CA certificate at `caPath`.
    public init(directory: String, caPath: String) {
        self.init(certificatePath: directory + "/cert.pem", keyPath: directory + "/key.pem", caPath: caPath)
    }
}

/// Ignores SIGPIPE for the whole process. Call once at start-up.
///
/// Why: OpenSSL writes to sockets with write(2), so writing to a peer that has
/// gone away raises SIGPIPE, whose default action kills the process (exit
/// 141) — one site disconnecting would kill the coordinator. With SIGPIPE
/// ignored, the write fails with EPIPE and surfaces as
/// `TLSError.connectionReset`. Creating a `TLSContext` also calls this, so a
/// forgotten call cannot crash the process; calling it again is harmless.
public func ignoreSIGPIPE() {
    initializeOpenSSL()
    _ = SIGPIPEIgnored.once
}

private enum SIGPIPEIgnored {
    static let once: Bool = {
        signal(SIGPIPE, SIG_IGN)
        return true
    }()
}

/// One configured OpenSSL `SSL_CTX`: this party's certificate and key, the
/// CA it trusts and the verification rules. Immutable once made.
///
/// Why: loading and checking certificates happens once (with precise errors),
/// and the context is then shared by all connections and threads; each
/// connection gets its own `SSL`. Certificate rotation makes a new context and
/// hands it to `TLSListener.replaceContext(_:)`.
// @unchecked: the SSL_CTX is configured in init and never changed after; OpenSSL allows one to be shared across threads.
public final class TLSContext: @unchecked Sendable {
    /// Whether the context accepts (server) or makes (client) connections.
    public enum Role: Sendable { case server, client }

    public let role: Role
    public let identity: TLSIdentity
    /// Client names a server accepts (empty: any certificate from the CA).
    public let allowedPeerNames: [String]
    /// SHA-256 fingerprint of this party's own certificate.
    public let certificateFingerprintSHA256: String

    /// The SSL_CTX; reference-counted by OpenSSL, freed in deinit.
    let ctx: OpaquePointer
    let allowedLowercased: [String]

    private init(role: Role, identity: TLSIdentity, allowedPeerNames: [String],
                 ctx: OpaquePointer, fingerprint: String) {
        self.role = role
        self.identity = identity
        self.allowedPeerNames = allowedPeerNames
        self.allowedLowercased = allowedPeerNames.map(asciiLowercased)
        self.ctx = ctx
        self.certificateFingerprintSHA256 = fingerprint
    }

    deinit { SSL_CTX_free(ctx) }

    /// A server context: TLS 1.2 or later (1.3 preferred), requires a client
    /// certificate issued by the CA in `identity.caPath` and, when
    /// `allowedPeerNames` is not empty, one whose subjectAltName DNS names
    /// (or commonName, if it has no DNS names) include one of them (compared
    /// case-insensitively, no wildcards). Other clients fail the handshake:
    /// `TLSListener.accept()` throws `TLSError.peerNameNotAllowed` and the
    /// client gets a handshake_failure alert.
    public static func server(identity: TLSIdentity, allowedPeerNames: [String] = []) throws -> TLSContext {
        for name in allowedPeerNames where name.isEmpty || name.contains(where: { $0 == "," || $0.isWhitespace }) {
            throw TLSError.configuration("allowed peer name \"\(name)\" is not a valid certificate name")
        }
        return try make(role: .server, identity: identity, allowedPeerNames: allowedPeerNames)
    }

    /// A client context: presents `identity`'s certificate and trusts only
    /// the CA in `identity.caPath`. The server's name is checked per
    /// connection (`TLSConnection.connect(serverName:)`).
    public static func client(identity: TLSIdentity) throws -> TLSContext {
        try make(role: .client, identity: identity, allowedPeerNames: [])
    }

    /// A client limited to an older TLS version (TLS1_2_VERSION, ...): for
    /// tests of version negotiation only.
    static func client(identity: TLSIdentity, maximumVersion: Int32) throws -> TLSContext {
        try make(role: .client, identity: identity, allowedPeerNames: [], maximumVersion: maximumVersion)
    }

    private static func make(role: Role, identity: TLSIdentity, allowedPeerNames: [String],
                             maximumVersion: Int32? = nil) throws -> TLSContext {
        ignoreSIGPIPE()
        OpenSSLErrors.clear()
        guard let ctx = SSL_CTX_new(role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw TLSError.configuration("SSL_CTX_new failed: \(OpenSSLErrors.drainSummary())")
        }
        do {
            guard fedmix_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else {
                throw TLSError.configuration("cannot require TLS 1.2: \(OpenSSLErrors.drainSummary())")
            }
            if let maximumVersion {
                // Lets tests play an old client: below TLS 1.2 also needs a
                // lower security level.
                SSL_CTX_set_security_level(ctx, 0)
                _ = fedmix_SSL_CTX_set_min_proto_version(ctx, 0)
                guard fedmix_SSL_CTX_set_max_proto_version(ctx, maximumVersion) == 1 else {
                    throw TLSError.configuration("cannot limit the TLS version: \(OpenSSLErrors.drainSummary())")
                }
            }
            fedmix_SSL_CTX_harden(ctx)
            // TLS 1.2 only: forward-secret AEAD suites. (TLS 1.3 suites are all AEAD.)
            let ciphers = maximumVersion == nil ? "ECDHE+AESGCM:ECDHE+CHACHA20" : "ALL:@SECLEVEL=0"
            guard SSL_CTX_set_cipher_list(ctx, ciphers) == 1 else {
                throw TLSError.configuration("cannot set cipher list: \(OpenSSLErrors.drainSummary())")
            }
            let fingerprint = try loadIdentity(ctx, identity)
            try loadCA(ctx, identity.caPath)
            var mode = SSL_VERIFY_PEER
            if role == .server { mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT }
            SSL_CTX_set_verify(ctx, mode, fedmixVerifyCallback)
            SSL_CTX_set_verify_depth(ctx, 4)
            return TLSContext(role: role, identity: identity, allowedPeerNames: allowedPeerNames,
                              ctx: ctx, fingerprint: fingerprint)
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
    }

    /// Loads certificate (+ chain) and key after checking each file, and
    /// returns the certificate's fingerprint.
    private static func loadIdentity(_ ctx: OpaquePointer, _ identity: TLSIdentity) throws -> String {
        let certRole = "certificate", keyRole = "private key"
        let certBytes = try readPEM(identity.certificatePath, role: certRole, label: "CERTIFICATE")
        let keyBytes = try readPEM(identity.keyPath, role: keyRole, label: "PRIVATE KEY")

        OpenSSLErrors.clear()
        let certs = PEMFile.certificates(certBytes)
        defer { certs.forEach { X509_free($0) } }
        guard let leaf = certs.first else {
            throw TLSError.invalidPEM(role: certRole, path: identity.certificatePath,
                                      reason: "no readable certificate: \(OpenSSLErrors.drainSummary())")
        }
        OpenSSLErrors.clear()
        guard let key = PEMFile.privateKey(keyBytes) else {
            throw TLSError.invalidPEM(role: keyRole, path: identity.keyPath,
                                      reason: "not a readable unencrypted private key (\(OpenSSLErrors.drainSummary())); encrypted keys are not supported")
        }
        defer { EVP_PKEY_free(key) }
        OpenSSLErrors.clear()
        guard X509_check_private_key(leaf, key) == 1 else {
            OpenSSLErrors.clear()
            throw TLSError.keyMismatch(certificatePath: identity.certificatePath, keyPath: identity.keyPath)
        }
        guard SSL_CTX_use_certificate(ctx, leaf) == 1 else {
            throw TLSError.invalidPEM(role: certRole, path: identity.certificatePath,
                                      reason: OpenSSLErrors.drainSummary())
        }
        for extra in certs.dropFirst() where fedmix_SSL_CTX_add1_chain_cert(ctx, extra) != 1 {
            throw TLSError.invalidPEM(role: certRole, path: identity.certificatePath,
                                      reason: "cannot add chain certificate: \(OpenSSLErrors.drainSummary())")
        }
        guard SSL_CTX_use_PrivateKey(ctx, key) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            OpenSSLErrors.clear()
            throw TLSError.keyMismatch(certificatePath: identity.certificatePath, keyPath: identity.keyPath)
        }
        return X509Fields.fingerprintSHA256(leaf)
    }

    /// Trusts the certificates in `path` and nothing else (no system store).
    private static func loadCA(_ ctx: OpaquePointer, _ path: String) throws {
        let role = "CA certificate"
        let bytes = try readPEM(path, role: role, label: "CERTIFICATE")
        let certs = PEMFile.certificates(bytes)
        defer { certs.forEach { X509_free($0) } }
        if certs.isEmpty {
            throw TLSError.invalidPEM(role: role, path: path, reason: "no readable certificate: \(OpenSSLErrors.drainSummary())")
        }
        for cert in certs where X509_check_ca(cert) == 0 {
            OpenSSLErrors.clear()
            throw TLSError.invalidPEM(role: role, path: path,
                                      reason: "\(X509Fields.subject(cert)) is not a CA certificate (basicConstraints CA:FALSE) — give the deployment CA's ca.pem, not a site certificate")
        }
        OpenSSLErrors.clear()
        guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else {
            throw TLSError.invalidPEM(role: role, path: path, reason: OpenSSLErrors.drainSummary())
        }
    }

    private static func readPEM(_ path: String, role: String, label: String) throws -> [UInt8] {
        switch PEMFile.read(path, labelSuffix: label) {
        case .success(let bytes): return bytes
        case .failure(.missing): throw TLSError.fileMissing(role: role, path: path)
        case .failure(.unreadable(let why)): throw TLSError.fileUnreadable(role: role, path: path, reason: why)
        case .failure(.notPEM): throw TLSError.notPEM(role: role, path: path)
        case .failure(.wrongBlock(let found)):
            throw TLSError.invalidPEM(role: role, path: path,
                                      reason: "holds \(found.joined(separator: ", ")) but no \(label) — is this the right file?")
        }
    }

    /// A new SSL for one connection on `fd`, with its verification state.
    func makeSSL(fd: Int32, state: VerifyState) throws -> OpaquePointer {
        OpenSSLErrors.clear()
        guard let ssl = SSL_new(ctx) else {
            throw TLSError.configuration("SSL_new failed: \(OpenSSLErrors.drainSummary())")
        }
        guard SSL_set_fd(ssl, fd) == 1 else {
            SSL_free(ssl)
            throw TLSError.configuration("SSL_set_fd failed: \(OpenSSLErrors.drainSummary())")
        }
        // Index 0 is OpenSSL's reserved application-data slot. The pointer is
        // unretained: the caller keeps `state` alive for the handshake and
        // clears the slot afterwards.
        SSL_set_ex_data(ssl, 0, Unmanaged.passUnretained(state).toOpaque())
        return ssl
    }
}

/// What the verify callback saw and decided during one handshake.
final class VerifyState {
    /// Lowercased allowed client names (server; empty = any).
    let allowedNames: [String]
    var leafSubject = ""
    var leafNames: [String] = []
    var nameRejected = false

    init(allowedNames: [String]) { self.allowedNames = allowedNames }
}

/// OpenSSL's per-certificate verification callback (a C function pointer, so
/// it cannot capture: it finds the connection's `VerifyState` through the
/// SSL's application-data slot). It records the leaf certificate's subject
/// and names (for error messages) and enforces the server's allowed names.
private func fedmixVerifyCallback(_ preverifyOK: Int32, _ store: OpaquePointer?) -> Int32 {
    guard let store, X509_STORE_CTX_get_error_depth(store) == 0,
          let cert = X509_STORE_CTX_get_current_cert(store),
          let sslRaw = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
          let stateRaw = SSL_get_ex_data(OpaquePointer(sslRaw), 0) else { return preverifyOK }
    let state = Unmanaged<VerifyState>.fromOpaque(stateRaw).takeUnretainedValue()
    let names = X509Fields.identityNames(cert)
    state.leafSubject = X509Fields.subject(cert)
    state.leafNames = names
    if preverifyOK == 1 && !state.allowedNames.isEmpty {
        let lowered = names.map(asciiLowercased)
        if !lowered.contains(where: { state.allowedNames.contains($0) }) {
            state.nameRejected = true
            X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
            return 0
        }
    }
    return preverifyOK
}

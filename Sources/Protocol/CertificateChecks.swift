// Read-only checks of an agent's TLS files and listen address for
// `fedmix-agent check`: every certificate in a CA file, whether a certificate
// chains to the trusted CA(s) the way a coordinator will verify it, and
// whether an address can be bound. Nothing here changes a file or keeps a
// socket open.
import COpenSSL
import Foundation
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Whether a certificate was issued by the trusted CA(s).
public enum ChainVerification: Sendable, Equatable {
    /// It chains to a trusted CA; `issuer` is the subject of the CA it chains to.
    case trusted(issuer: String)
    /// It does not; `reason` is OpenSSL's verify text ("unable to get local issuer certificate").
    case untrusted(reason: String)
}

extension Certificates {
    /// Every certificate in a PEM file (a CA file may hold several: the old
    /// and the new CA while one replaces the other), in file order.
    public static func inspectAll(path: String) throws -> [CertificateInfo] {
        let bytes = try readPEM(path, role: "certificate", label: "CERTIFICATE", hint: " — is this the right file?")
        OpenSSLErrors.clear()
        let certs = PEMFile.certificates(bytes)
        defer { certs.forEach { X509_free($0) } }
        if certs.isEmpty {
            throw CertificateError.invalidPEM(role: "certificate", path: path, reason: OpenSSLErrors.drainSummary())
        }
        return try certs.map { cert in
            let alt = X509Fields.altNames(cert)
            guard let notBefore = X509Fields.date(X509_get0_notBefore(cert)),
                  let notAfter = X509Fields.date(X509_get0_notAfter(cert)) else {
                throw CertificateError.invalidPEM(role: "certificate", path: path, reason: "unreadable validity dates")
            }
            return CertificateInfo(subject: X509Fields.subject(cert), commonName: X509Fields.commonName(cert),
                                   issuer: X509Fields.issuer(cert), dnsNames: alt.dns, ipAddresses: alt.ip,
                                   notBefore: notBefore, notAfter: notAfter,
                                   fingerprintSHA256: X509Fields.fingerprintSHA256(cert),
                                   serialNumber: X509Fields.serialHex(cert), isCA: X509_check_ca(cert) != 0)
        }
    }

    /// Verifies the first certificate in `certificatePath` (with any
    /// intermediates that follow it in the same file) against the CA
    /// certificates in `caPath` only — as a coordinator verifies an agent
    /// (purpose "ssl_server", depth 4) — but ignoring validity dates, which
    /// callers check separately. File problems throw `CertificateError`.
    public static func verifyChain(certificatePath: String, caPath: String) throws -> ChainVerification {
        let certBytes = try readPEM(certificatePath, role: "certificate", label: "CERTIFICATE", hint: " — is this the right file?")
        let caBytes = try readPEM(caPath, role: "CA certificate", label: "CERTIFICATE", hint: " — is this the right file?")
        OpenSSLErrors.clear()
        let certs = PEMFile.certificates(certBytes)
        defer { certs.forEach { X509_free($0) } }
        guard let leaf = certs.first else {
            throw CertificateError.invalidPEM(role: "certificate", path: certificatePath, reason: OpenSSLErrors.drainSummary())
        }
        let cas = PEMFile.certificates(caBytes)
        defer { cas.forEach { X509_free($0) } }
        if cas.isEmpty {
            throw CertificateError.invalidPEM(role: "CA certificate", path: caPath, reason: OpenSSLErrors.drainSummary())
        }
        guard let store = X509_STORE_new() else { throw CertificateError.openSSL(operation: "make a certificate store", reason: OpenSSLErrors.drainSummary()) }
        defer { X509_STORE_free(store) }
        for ca in cas where X509_STORE_add_cert(store, ca) != 1 {
            throw CertificateError.openSSL(operation: "trust \(X509Fields.subject(ca))", reason: OpenSSLErrors.drainSummary())
        }
        guard let untrusted = OPENSSL_sk_new_null() else {
            throw CertificateError.openSSL(operation: "make a certificate list", reason: OpenSSLErrors.drainSummary())
        }
        defer { OPENSSL_sk_free(untrusted) }
        for extra in certs.dropFirst() { _ = OPENSSL_sk_push(untrusted, UnsafeRawPointer(extra)) }
        guard let ctx = X509_STORE_CTX_new() else {
            throw CertificateError.openSSL(operation: "make a verification context", reason: OpenSSLErrors.drainSummary())
        }
        defer { X509_STORE_CTX_free(ctx) }
        guard X509_STORE_CTX_init(ctx, store, leaf, untrusted) == 1,
              X509_STORE_CTX_set_default(ctx, "ssl_server") == 1 else {
            throw CertificateError.openSSL(operation: "set up verification", reason: OpenSSLErrors.drainSummary())
        }
        if let param = X509_STORE_CTX_get0_param(ctx) {
            X509_VERIFY_PARAM_set_depth(param, 4)
            _ = X509_VERIFY_PARAM_set_flags(param, UInt(X509_V_FLAG_NO_CHECK_TIME))
        }
        let ok = X509_verify_cert(ctx) == 1
        let error = X509_STORE_CTX_get_error(ctx)
        OpenSSLErrors.clear()
        if ok {
            var issuer = X509Fields.issuer(leaf)
            if let chain = X509_STORE_CTX_get0_chain(ctx) {
                let n = OPENSSL_sk_num(chain)
                if n > 0, let top = OPENSSL_sk_value(chain, n - 1) { issuer = X509Fields.subject(OpaquePointer(top)) }
            }
            return .trusted(issuer: issuer)
        }
        return .untrusted(reason: String(cString: X509_verify_cert_error_string(Int(error))))
    }
}

/// Whether a listen address can be bound, tried the way `TLSListener` binds
/// (SO_REUSEADDR, every resolved address in turn) and released at once.
public enum ListenProbe {
    public enum Outcome: Sendable, Equatable {
        /// Bound (and closed again) on `port` (the ephemeral one when 0 was asked for).
        case bindable(port: Int)
        /// bind(2) or listen(2) failed with `errno` (EADDRINUSE, EACCES, EADDRNOTAVAIL, ...).
        case failed(errno: Int32, reason: String)
        /// The host name does not resolve.
        case unresolvable(reason: String)
    }

    public static func tryBind(host: String, port: Int) -> Outcome {
        guard (0...65535).contains(port) else { return .failed(errno: EINVAL, reason: "port out of range") }
        let addresses: [(family: Int32, address: [UInt8])]
        do { addresses = try Socket.resolve(host: host, port: port, passive: true) } catch TLSError.hostNotFound(_, let reason) {
            return .unresolvable(reason: reason)
        } catch { return .unresolvable(reason: "\(error)") }
        var last: (Int32, String) = (EADDRNOTAVAIL, "no usable address")
        for (family, address) in addresses {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { last = (errno, Socket.errorText(errno)); continue }
            defer { _ = Glibc.close(fd) }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let rc = address.withUnsafeBytes {
                bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if rc == 0 && listen(fd, 1) == 0 {
                var storage = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let bound: Int = withUnsafeMutablePointer(to: &storage) { ptr in
                    ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Int in
                        guard getsockname(fd, sa, &length) == 0 else { return port }
                        if Int32(sa.pointee.sa_family) == AF_INET6 {
                            return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
                        }
                        return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
                    }
                }
                return .bindable(port: bound)
            }
            last = (errno, Socket.errorText(errno))
        }
        return .failed(errno: last.0, reason: last.1)
    }
}

import COpenSSL
import Foundation
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// What `Certificates.inspect` reports about a certificate.
///
/// Why: `fedmix-agent check` shows operators which name a certificate is
/// for, when it expires and its fingerprint (to compare with the peer's log)
/// without an `openssl` command.
public struct CertificateInfo: Sendable, Equatable {
    /// RFC 2253 subject ("CN=site-a").
    public let subject: String
    public let commonName: String?
    /// RFC 2253 issuer.
    public let issuer: String
    /// subjectAltName DNS names.
    public let dnsNames: [String]
    /// subjectAltName IP addresses, in text form.
    public let ipAddresses: [String]
    public let notBefore: Date
    public let notAfter: Date
    /// SHA-256 of the DER encoding, lowercase hex (as `TLSConnection.peerFingerprintSHA256`).
    public let fingerprintSHA256: String
    /// Serial number, lowercase hex.
    public let serialNumber: String
    /// True for a CA certificate (basicConstraints CA:TRUE).
    public let isCA: Bool

    /// True when `date` lies within [notBefore, notAfter].
    public func isValid(at date: Date = Date()) -> Bool {
        date >= notBefore && date <= notAfter
    }
}

/// Why certificate tooling failed, with the file and what to do.
///
/// Why: operators at hospitals run these commands; the message must say which
/// file is wrong and how, not print an OpenSSL error code.
public enum CertificateError: Error, CustomStringConvertible, Equatable, Sendable {
    case fileMissing(role: String, path: String)
    case fileUnreadable(role: String, path: String, reason: String)
    case notPEM(role: String, path: String)
    case invalidPEM(role: String, path: String, reason: String)
    case keyMismatch(certificatePath: String, keyPath: String)
    /// The file is a leaf certificate where a CA was expected.
    case notCA(path: String)
    case invalidName(String, reason: String)
    case invalidValidity(String)
    /// Refused to overwrite an existing CA key.
    case alreadyExists(path: String)
    case writeFailed(path: String, reason: String)
    case openSSL(operation: String, reason: String)

    public var description: String {
        switch self {
        case .fileMissing(let role, let path):
            return "\(role) file \(path) does not exist — check the directory (create a CA with createAuthority first)"
        case .fileUnreadable(let role, let path, let reason):
            return "\(role) file \(path) cannot be read: \(reason)"
        case .notPEM(let role, let path):
            return "\(role) file \(path) is not PEM (no \"-----BEGIN\" line)"
        case .invalidPEM(let role, let path, let reason):
            return "\(role) file \(path) cannot be used: \(reason)"
        case .keyMismatch(let certificatePath, let keyPath):
            return "private key \(keyPath) does not match certificate \(certificatePath) — the files come from different runs"
        case .notCA(let path):
            return "\(path) is not a CA certificate — give the directory made by createAuthority"
        case .invalidName(let name, let reason):
            return "invalid certificate name \"\(name)\": \(reason)"
        case .invalidValidity(let reason):
            return "invalid validity period: \(reason)"
        case .alreadyExists(let path):
            return "\(path) already exists — refusing to replace a CA key (every certificate it issued would stop working); remove it yourself or choose another directory"
        case .writeFailed(let path, let reason):
            return "cannot write \(path): \(reason)"
        case .openSSL(let operation, let reason):
            return "OpenSSL failed to \(operation): \(reason)"
        }
    }
}

/// Makes and inspects the deployment's certificates in-process with
/// OpenSSL's EVP and X509 APIs: P-256 keys, SHA-256 signatures.
///
/// Why: a deployment is one private CA plus one certificate per party; sites
/// must be able to make and check these with the fedmix binary alone (no
/// `openssl` command, no configuration files to get wrong).
public enum Certificates {
    /// Clock-skew allowance: every notBefore is set this many seconds earlier.
    static let backdateSeconds = 3600

    /// Creates a CA: DIR/ca.pem (mode 0644) and DIR/ca.key (mode 0600),
    /// creating DIR (mode 0700) if needed. Refuses to replace an existing
    /// ca.key unless `overwrite` is true. Valid from now for `days` days.
    public static func createAuthority(directory: String, commonName: String = "fedmix CA",
                                       days: Int = 3650, overwrite: Bool = false) throws {
        guard !commonName.isEmpty, commonName.utf8.count <= 64 else {
            throw CertificateError.invalidName(commonName, reason: "a common name has 1 to 64 bytes")
        }
        guard days > 0, days <= 100 * 366 else {
            throw CertificateError.invalidValidity("a CA must be valid for 1 to 36600 days (got \(days))")
        }
        let keyPath = directory + "/ca.key", certPath = directory + "/ca.pem"
        try makeDirectory(directory)
        if !overwrite && FileManager.default.fileExists(atPath: keyPath) {
            throw CertificateError.alreadyExists(path: keyPath)
        }

        let key = try generateKey()
        defer { EVP_PKEY_free(key) }
        let cert = try newCertificate(commonName: commonName, publicKey: key,
                                      notBeforeSeconds: -backdateSeconds, notAfterSeconds: days * 86400)
        defer { X509_free(cert) }
        try setIssuer(cert, issuer: cert)
        try addExtensions(cert, issuer: cert, [
            (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
            (NID_key_usage, "critical,keyCertSign,cRLSign"),
            (NID_subject_key_identifier, "hash"),
            (NID_authority_key_identifier, "keyid:always"),
        ])
        try sign(cert, with: key)
        try write(privateKey: key, to: keyPath)
        try write(certificate: cert, to: certPath)
    }

    /// Issues a certificate for `name` from the CA in `caDirectory`: writes
    /// OUT/cert.pem (0644) and OUT/key.pem (0600) with a fresh key, creating
    /// OUT (0700) if needed and replacing earlier files atomically (each
    /// file; a reader may briefly see a new key with the old certificate,
    /// which `TLSContext` reports as `.keyMismatch`: retry).
    ///
    /// The certificate has CN=name, subjectAltName DNS:name (plus IP:name
    /// when `name` is an IP address), basicConstraints CA:FALSE, keyUsage
    /// digitalSignature, extendedKeyUsage serverAuth+clientAuth and a random
    /// 127-bit serial. It is valid from now + `notBeforeOffsetDays` days
    /// (minus one hour for clock skew) until now + `days` days; negative values
    /// make certificates for tests, e.g. `days: -1, notBeforeOffsetDays: -10`
    /// is already expired.
    public static func issue(caDirectory: String, name: String, outDirectory: String,
                             days: Int = 825, notBeforeOffsetDays: Int = 0) throws {
        try validate(name: name)
        guard abs(days) <= 100 * 366, abs(notBeforeOffsetDays) <= 100 * 366 else {
            throw CertificateError.invalidValidity("days and notBeforeOffsetDays must be within ±36600")
        }
        guard days > notBeforeOffsetDays else {
            throw CertificateError.invalidValidity("the certificate would end (now + \(days) days) before it starts (now + \(notBeforeOffsetDays) days)")
        }
        let (caCert, caKey) = try loadAuthority(caDirectory)
        defer { X509_free(caCert); EVP_PKEY_free(caKey) }

        let key = try generateKey()
        defer { EVP_PKEY_free(key) }
        let cert = try newCertificate(commonName: name, publicKey: key,
                                      notBeforeSeconds: notBeforeOffsetDays * 86400 - backdateSeconds,
                                      notAfterSeconds: days * 86400)
        defer { X509_free(cert) }
        try setIssuer(cert, issuer: caCert)
        let altNames = isIPAddressLiteral(name) ? "DNS:\(name),IP:\(name)" : "DNS:\(name)"
        try addExtensions(cert, issuer: caCert, [
            (NID_basic_constraints, "critical,CA:FALSE"),
            (NID_key_usage, "critical,digitalSignature"),
            (NID_ext_key_usage, "serverAuth,clientAuth"),
            (NID_subject_alt_name, altNames),
            (NID_subject_key_identifier, "hash"),
            (NID_authority_key_identifier, "keyid:always"),
        ])
        try sign(cert, with: caKey)
        try makeDirectory(outDirectory)
        try write(privateKey: key, to: outDirectory + "/key.pem")
        try write(certificate: cert, to: outDirectory + "/cert.pem")
    }

    /// Reads the first certificate in a PEM file and reports its names,
    /// validity and fingerprint.
    public static func inspect(certificatePath: String) throws -> CertificateInfo {
        let bytes = try readPEM(certificatePath, role: "certificate", label: "CERTIFICATE")
        let certs = PEMFile.certificates(bytes)
        defer { certs.forEach { X509_free($0) } }
        guard let cert = certs.first else {
            throw CertificateError.invalidPEM(role: "certificate", path: certificatePath,
                                              reason: OpenSSLErrors.drainSummary())
        }
        let alt = X509Fields.altNames(cert)
        guard let notBefore = X509Fields.date(X509_get0_notBefore(cert)),
              let notAfter = X509Fields.date(X509_get0_notAfter(cert)) else {
            throw CertificateError.invalidPEM(role: "certificate", path: certificatePath, reason: "unreadable validity dates")
        }
        return CertificateInfo(subject: X509Fields.subject(cert),
                               commonName: X509Fields.commonName(cert),
                               issuer: X509Fields.issuer(cert),
                               dnsNames: alt.dns, ipAddresses: alt.ip,
                               notBefore: notBefore, notAfter: notAfter,
                               fingerprintSHA256: X509Fields.fingerprintSHA256(cert),
                               serialNumber: X509Fields.serialHex(cert),
                               isCA: X509_check_ca(cert) != 0)
    }

    // MARK: - Building blocks

    /// Names become CN and DNS SAN; keep them to host-name characters (or an
    /// IP literal) so they cannot inject extra subjectAltName entries.
    static func validate(name: String) throws {
        if name.isEmpty || name.utf8.count > 64 {
            throw CertificateError.invalidName(name, reason: "must have 1 to 64 characters")
        }
        if isIPAddressLiteral(name) { return }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
        if let bad = name.first(where: { !allowed.contains($0) }) {
            throw CertificateError.invalidName(name, reason: "character \"\(bad)\" is not allowed (use letters, digits, '-', '.', '_')")
        }
        if name.hasPrefix(".") || name.hasSuffix(".") || name.contains("..") {
            throw CertificateError.invalidName(name, reason: "empty label")
        }
    }

    private static func generateKey() throws -> OpaquePointer {
        OpenSSLErrors.clear()
        guard let key = fedmix_EVP_EC_gen_P256() else {
            throw CertificateError.openSSL(operation: "generate a P-256 key", reason: OpenSSLErrors.drainSummary())
        }
        return key
    }

    /// A v3 certificate with a random serial, subject CN, public key and
    /// validity [now + notBeforeSeconds, now + notAfterSeconds].
    private static func newCertificate(commonName: String, publicKey: OpaquePointer,
                                       notBeforeSeconds: Int, notAfterSeconds: Int) throws -> OpaquePointer {
        OpenSSLErrors.clear()
        guard let cert = X509_new() else {
            throw CertificateError.openSSL(operation: "allocate a certificate", reason: OpenSSLErrors.drainSummary())
        }
        do {
            guard X509_set_version(cert, 2) == 1 else { throw failure("set the version") }
            var serial = [UInt8](repeating: 0, count: 16)
            guard RAND_bytes(&serial, Int32(serial.count)) == 1 else { throw failure("generate a serial number") }
            serial[0] = (serial[0] & 0x7f) | 0x40  // positive, full length
            guard let bn = BN_bin2bn(serial, Int32(serial.count), nil) else { throw failure("build the serial") }
            defer { BN_free(bn) }
            guard BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nil else { throw failure("set the serial") }

            guard X509_gmtime_adj(X509_getm_notBefore(cert), notBeforeSeconds) != nil,
                  X509_gmtime_adj(X509_getm_notAfter(cert), notAfterSeconds) != nil else {
                throw failure("set the validity dates")
            }
            guard let subject = X509_get_subject_name(cert),
                  X509_NAME_add_entry_by_txt(subject, "CN", fedmix_MBSTRING_UTF8(), commonName, -1, -1, 0) == 1 else {
                throw failure("set the subject name")
            }
            guard X509_set_pubkey(cert, publicKey) == 1 else { throw failure("set the public key") }
            return cert
        } catch {
            X509_free(cert)
            throw error
        }
    }

    private static func setIssuer(_ cert: OpaquePointer, issuer: OpaquePointer) throws {
        guard X509_set_issuer_name(cert, X509_get_subject_name(issuer)) == 1 else { throw failure("set the issuer name") }
    }

    private static func addExtensions(_ cert: OpaquePointer, issuer: OpaquePointer, _ extensions: [(Int32, String)]) throws {
        for (nid, value) in extensions where fedmix_X509_add_ext(cert, issuer, nid, value) != 1 {
            throw failure("add extension \(String(cString: OBJ_nid2sn(nid))) = \(value)")
        }
    }

    private static func sign(_ cert: OpaquePointer, with key: OpaquePointer) throws {
        guard X509_sign(cert, key, EVP_sha256()) > 0 else { throw failure("sign the certificate") }
    }

    private static func failure(_ operation: String) -> CertificateError {
        .openSSL(operation: operation, reason: OpenSSLErrors.drainSummary())
    }

    /// The CA certificate and key from DIR/ca.pem and DIR/ca.key, checked to
    /// belong together and to be a CA.
    private static func loadAuthority(_ directory: String) throws -> (OpaquePointer, OpaquePointer) {
        let certPath = directory + "/ca.pem", keyPath = directory + "/ca.key"
        let certBytes = try readPEM(certPath, role: "CA certificate", label: "CERTIFICATE")
        let keyBytes = try readPEM(keyPath, role: "CA private key", label: "PRIVATE KEY")
        OpenSSLErrors.clear()
        var certs = PEMFile.certificates(certBytes)
        guard !certs.isEmpty else {
            throw CertificateError.invalidPEM(role: "CA certificate", path: certPath, reason: OpenSSLErrors.drainSummary())
        }
        let cert = certs.removeFirst()
        certs.forEach { X509_free($0) }
        guard let key = PEMFile.privateKey(keyBytes) else {
            X509_free(cert)
            throw CertificateError.invalidPEM(role: "CA private key", path: keyPath,
                                              reason: "not a readable unencrypted private key (\(OpenSSLErrors.drainSummary()))")
        }
        guard X509_check_private_key(cert, key) == 1 else {
            OpenSSLErrors.clear()
            X509_free(cert); EVP_PKEY_free(key)
            throw CertificateError.keyMismatch(certificatePath: certPath, keyPath: keyPath)
        }
        guard X509_check_ca(cert) != 0 else {
            X509_free(cert); EVP_PKEY_free(key)
            throw CertificateError.notCA(path: certPath)
        }
        return (cert, key)
    }

    /// The DER bytes of the file's `label` block; `hint` ends the message
    /// when the file holds other blocks.
    static func readPEM(_ path: String, role: String, label: String, hint: String = "") throws -> [UInt8] {
        switch PEMFile.read(path, labelSuffix: label) {
        case .success(let bytes): return bytes
        case .failure(.missing): throw CertificateError.fileMissing(role: role, path: path)
        case .failure(.unreadable(let why)): throw CertificateError.fileUnreadable(role: role, path: path, reason: why)
        case .failure(.notPEM): throw CertificateError.notPEM(role: role, path: path)
        case .failure(.wrongBlock(let found)):
            throw CertificateError.invalidPEM(role: role, path: path,
                                              reason: "holds \(found.joined(separator: ", ")) but no \(label)\(hint)")
        }
    }

    // MARK: - Files

    private static func makeDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return }
            throw CertificateError.writeFailed(path: path, reason: "exists and is not a directory")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw CertificateError.writeFailed(path: path, reason: "\(error.localizedDescription)")
        }
    }

    private static func write(privateKey key: OpaquePointer, to path: String) throws {
        guard let pem = PEMFile.pem(privateKey: key) else { throw failure("encode the private key") }
        try writeAtomically(pem, to: path, mode: 0o600)
    }

    private static func write(certificate cert: OpaquePointer, to path: String) throws {
        guard let pem = PEMFile.pem(certificate: cert) else { throw failure("encode the certificate") }
        try writeAtomically(pem, to: path, mode: 0o644)
    }

    /// Writes a temporary file with `mode` (never wider, whatever the umask),
    /// syncs it and renames it over `path`.
    static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        var suffix = [UInt8](repeating: 0, count: 6)
        _ = RAND_bytes(&suffix, Int32(suffix.count))
        let temporary = path + ".tmp-" + hexString(suffix)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw CertificateError.writeFailed(path: path, reason: Socket.errorText(errno)) }
        var ok = fchmod(fd, mode) == 0
        var offset = 0
        while ok && offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { ok = false; break }
            offset += n
        }
        let savedErrno = errno
        ok = ok && fsync(fd) == 0
        _ = Glibc.close(fd)
        guard ok, rename(temporary, path) == 0 else {
            let why = Socket.errorText(errno != 0 ? errno : savedErrno)
            unlink(temporary)
            throw CertificateError.writeFailed(path: path, reason: why)
        }
    }
}

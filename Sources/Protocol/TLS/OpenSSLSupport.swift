// Internal helpers over OpenSSL: the thread-local error queue, reading PEM
// files with precise errors, and reading names, dates and fingerprints out of
// X509 certificates. Shared by the TLS transport and the certificate tooling.
import COpenSSL
import Foundation
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// One entry of OpenSSL's thread-local error queue.
struct OpenSSLErrorEntry: Sendable {
    let code: UInt
    let library: Int32
    let reason: Int32
    /// OpenSSL's reason text, e.g. "wrong version number".
    let text: String
    /// Extra text attached by the failing function, if any.
    let data: String?

    /// The TLS alert the peer sent, when this entry records one.
    var alertCode: Int? {
        guard library == ERR_LIB_SSL else { return nil }
        let offset = Int32(SSL_AD_REASON_OFFSET)
        guard reason >= offset && reason < offset + 256 else { return nil }
        return Int(reason - offset)
    }

    var summary: String {
        if let data, !data.isEmpty { return "\(text) (\(data))" }
        return text
    }
}

enum OpenSSLErrors {
    /// Empties the queue; call before each SSL call so that what is read
    /// afterwards belongs to that call.
    static func clear() { ERR_clear_error() }

    /// Removes and returns every entry of the queue, oldest first.
    static func drain() -> [OpenSSLErrorEntry] {
        var entries: [OpenSSLErrorEntry] = []
        while true {
            var file: UnsafePointer<CChar>? = nil
            var line: Int32 = 0
            var function: UnsafePointer<CChar>? = nil
            var data: UnsafePointer<CChar>? = nil
            var flags: Int32 = 0
            let code = ERR_get_error_all(&file, &line, &function, &data, &flags)
            if code == 0 { break }
            let text = ERR_reason_error_string(code).map { String(cString: $0) } ?? "OpenSSL error 0x\(String(code, radix: 16))"
            var extra: String? = nil
            if flags & ERR_TXT_STRING != 0, let data { extra = String(cString: data) }
            entries.append(OpenSSLErrorEntry(code: code,
                                             library: fedmix_ERR_GET_LIB(code),
                                             reason: fedmix_ERR_GET_REASON(code),
                                             text: text, data: extra))
        }
        return entries
    }

    /// Drains the queue into one line for an error message.
    static func drainSummary(fallback: String = "no details from OpenSSL") -> String {
        summary(drain(), fallback: fallback)
    }

    static func summary(_ entries: [OpenSSLErrorEntry], fallback: String = "no details from OpenSSL") -> String {
        if entries.isEmpty { return fallback }
        var seen: [String] = []
        for e in entries where !seen.contains(e.summary) { seen.append(e.summary) }
        return seen.joined(separator: "; ")
    }
}

// MARK: - PEM files

/// Why a PEM file could not be used, before OpenSSL parses it.
enum PEMFileProblem: Error {
    case missing
    case unreadable(String)
    case notPEM
    /// PEM, but without the expected block (e.g. a key where a certificate
    /// belongs); carries the block labels found.
    case wrongBlock(found: [String])
}

enum PEMFile {
    /// Certificate and key files are a few kilobytes; refuse anything larger
    /// than this so that a wrong path (a device, a log) cannot exhaust memory.
    static let maximumSize = 1 << 20

    /// Reads `path` and checks that it holds a PEM block whose label ends in
    /// `labelSuffix` ("CERTIFICATE", "PRIVATE KEY").
    static func read(_ path: String, labelSuffix: String) -> Result<[UInt8], PEMFileProblem> {
        let bytes: [UInt8]
        switch readSmallFile(path) {
        case .failure(let p): return .failure(p)
        case .success(let b): bytes = b
        }
        let labels = pemLabels(bytes)
        if labels.isEmpty { return .failure(.notPEM) }
        if !labels.contains(where: { $0.hasSuffix(labelSuffix) }) { return .failure(.wrongBlock(found: labels)) }
        return .success(bytes)
    }

    static func readSmallFile(_ path: String) -> Result<[UInt8], PEMFileProblem> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT || e == ENOTDIR { return .failure(.missing) }
            return .failure(.unreadable(String(cString: strerror(e))))
        }
        defer { _ = Glibc.close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            return .failure(.unreadable("it is a directory"))
        }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.unreadable(String(cString: strerror(errno))))
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
            if out.count > maximumSize { return .failure(.unreadable("larger than \(maximumSize) bytes; not a certificate or key file")) }
        }
        return .success(out)
    }

    /// Labels of the "-----BEGIN label-----" lines in `bytes`.
    static func pemLabels(_ bytes: [UInt8]) -> [String] {
        let text = String(decoding: bytes, as: UTF8.self)
        var labels: [String] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let l = line.trimmingCharacters(in: .whitespaces)
            if l.hasPrefix("-----BEGIN "), l.hasSuffix("-----"), l.count > 16 {
                labels.append(String(l.dropFirst(11).dropLast(5)))
            }
        }
        return labels
    }

    /// Runs `body` with a read-only memory BIO over `bytes`.
    static func withMemoryBIO<T>(_ bytes: [UInt8], _ body: (OpaquePointer) throws -> T) rethrows -> T? {
        try bytes.withUnsafeBytes { raw -> T? in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return try body(bio)
        }
    }

    /// Every certificate in PEM `bytes`, in file order (each owned by the
    /// caller: X509_free them). Empty when none parse; the queue explains.
    static func certificates(_ bytes: [UInt8]) -> [OpaquePointer] {
        let certs: [OpaquePointer]? = withMemoryBIO(bytes) { bio in
            var out: [OpaquePointer] = []
            while let x = fedmix_PEM_read_X509(bio) { out.append(x) }
            return out
        }
        // Reading stops with a harmless "no start line" at the end of input.
        if let certs, !certs.isEmpty { ERR_clear_error() }
        return certs ?? []
    }

    /// The first private key in PEM `bytes` (caller frees), nil if none parse.
    static func privateKey(_ bytes: [UInt8]) -> OpaquePointer? {
        withMemoryBIO(bytes) { bio in fedmix_PEM_read_private_key(bio) } ?? nil
    }

    /// PEM text of a certificate.
    static func pem(certificate: OpaquePointer) -> [UInt8]? {
        withMemoryOutput { PEM_write_bio_X509($0, certificate) == 1 }
    }

    /// Unencrypted PKCS#8 PEM text of a private key.
    static func pem(privateKey: OpaquePointer) -> [UInt8]? {
        withMemoryOutput { PEM_write_bio_PrivateKey($0, privateKey, nil, nil, 0, nil, nil) == 1 }
    }

    /// Runs `write` against a fresh memory BIO and returns what it wrote.
    static func withMemoryOutput(_ write: (OpaquePointer) -> Bool) -> [UInt8]? {
        guard let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        guard write(bio) else { return nil }
        var data: UnsafeMutablePointer<CChar>? = nil
        let n = fedmix_BIO_get_mem_data(bio, &data)
        guard n >= 0, let data else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: n))
    }
}

// MARK: - Certificate fields

enum X509Fields {
    /// The subject as an RFC 2253 string ("CN=site-a").
    static func subject(_ cert: OpaquePointer) -> String {
        name(X509_get_subject_name(cert))
    }

    static func issuer(_ cert: OpaquePointer) -> String {
        name(X509_get_issuer_name(cert))
    }

    static func name(_ name: OpaquePointer?) -> String {
        guard let name else { return "" }
        let bytes = PEMFile.withMemoryOutput { fedmix_X509_NAME_print_rfc2253($0, name) >= 0 }
        return bytes.map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// The subject's commonName, if there is one.
    static func commonName(_ cert: OpaquePointer) -> String? {
        guard let subject = X509_get_subject_name(cert) else { return nil }
        let index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1)
        guard index >= 0, let entry = X509_NAME_get_entry(subject, index),
              let value = X509_NAME_ENTRY_get_data(entry) else { return nil }
        var utf8: UnsafeMutablePointer<UInt8>? = nil
        let n = ASN1_STRING_to_UTF8(&utf8, value)
        guard n >= 0, let utf8 else { return nil }
        defer { fedmix_OPENSSL_free(utf8) }
        return String(decoding: UnsafeBufferPointer(start: utf8, count: Int(n)), as: UTF8.self)
    }

    /// subjectAltName DNS names and IP addresses (IPs in text form).
    static func altNames(_ cert: OpaquePointer) -> (dns: [String], ip: [String]) {
        guard let raw = X509_get_ext_d2i(cert, NID_subject_alt_name, nil, nil) else { return ([], []) }
        let names = OpaquePointer(raw)
        defer { GENERAL_NAMES_free(names) }
        var dns: [String] = []
        var ips: [String] = []
        for i in 0..<fedmix_GENERAL_NAMES_count(names) {
            guard let gn = fedmix_GENERAL_NAMES_at(names, i),
                  let str = fedmix_GENERAL_NAME_string(gn) else { continue }
            let length = Int(ASN1_STRING_length(str))
            guard let data = ASN1_STRING_get0_data(str), length >= 0 else { continue }
            let bytes = Array(UnsafeBufferPointer(start: data, count: length))
            switch fedmix_GENERAL_NAME_type(gn) {
            case GEN_DNS:
                dns.append(String(decoding: bytes, as: UTF8.self))
            case GEN_IPADD:
                if let text = ipText(bytes) { ips.append(text) }
            default:
                break
            }
        }
        return (dns, ips)
    }

    /// The names a peer is known by: its subjectAltName DNS names, or its
    /// commonName when it has no DNS names (as OpenSSL's host check does).
    static func identityNames(_ cert: OpaquePointer) -> [String] {
        let dns = altNames(cert).dns
        if !dns.isEmpty { return dns }
        return commonName(cert).map { [$0] } ?? []
    }

    /// SHA-256 of the DER encoding, lowercase hex without separators.
    static func fingerprintSHA256(_ cert: OpaquePointer) -> String {
        var md = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(cert, SHA256Digest.algorithm ?? EVP_sha256(), &md, &length) == 1 else { return "" }
        return hexString(md.prefix(Int(length)))
    }

    static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }

    static func serialHex(_ cert: OpaquePointer) -> String {
        guard let serial = X509_get0_serialNumber(cert),
              let bn = ASN1_INTEGER_to_BN(serial, nil) else { return "" }
        defer { BN_free(bn) }
        guard let hex = BN_bn2hex(bn) else { return "" }
        defer { fedmix_OPENSSL_free(hex) }
        return String(cString: hex).lowercased()
    }

    static func ipText(_ bytes: [UInt8]) -> String? {
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return nil
        }
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &out, socklen_t(out.count)) }
        guard ok != nil else { return nil }
        return stringFromCBuffer(out)
    }
}

/// True when `text` is an IPv4 or IPv6 address literal.
func isIPAddressLiteral(_ text: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
}

/// Lowercases ASCII letters only (DNS names compare case-insensitively).
func asciiLowercased(_ s: String) -> String {
    String(decoding: s.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
}

/// The NUL-terminated text in a C character buffer.
func stringFromCBuffer(_ buffer: [CChar]) -> String {
    let end = buffer.firstIndex(of: 0) ?? buffer.count
    return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Initializes OpenSSL without its exit-time cleanup.
///
/// Why: by default OpenSSL frees its global state in an `atexit` handler.
/// The executables end with `exit()` on the main thread while agent,
/// connection and fan-out threads may still be inside OpenSSL (a handshake,
/// a read, a signature), and a cleanup under their feet crashes the process
/// (signal 11 in libcrypto) after its work is done. The operating system
/// frees the memory at exit anyway. Must run before any other OpenSSL call to
/// take effect, so the executables call it first; TLSContext calls it too.
public func initializeOpenSSL() {
    _ = OpenSSLInitialized.once
}

private enum OpenSSLInitialized {
    static let once: Bool = {
        OPENSSL_init_ssl(UInt64(OPENSSL_INIT_NO_ATEXIT) | UInt64(OPENSSL_INIT_LOAD_SSL_STRINGS) | UInt64(OPENSSL_INIT_LOAD_CRYPTO_STRINGS), nil) == 1
    }()
}

import COpenSSL

/// SHA-256 through OpenSSL's EVP interface.
///
/// Why: the audit log chains entries by hash and certificates are identified
/// by fingerprint; both must use the same vetted implementation that TLS uses,
/// not a hand-written one.
public enum SHA256Digest {
    /// SHA-256 fetched from the default provider once. Why: EVP_sha256()
    /// makes OpenSSL 3 look the implementation up again, under a lock, on
    /// every call, and the audit chain hashes every line an agent logs.
    nonisolated(unsafe) static let algorithm: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)

    /// The 32-byte SHA-256 digest of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBytes { input in
            digest.withUnsafeMutableBufferPointer { output in
                EVP_Digest(input.baseAddress, input.count, output.baseAddress, &length, algorithm ?? EVP_sha256(), nil)
            }
        }
        // EVP_Digest with the built-in SHA-256 only fails when memory runs out.
        precondition(ok == 1 && length == 32, "EVP_Digest(SHA-256) failed")
        return Array(digest.prefix(Int(length)))
    }

    /// The SHA-256 digest of a string's UTF-8 bytes.
    public static func hash(_ string: String) -> [UInt8] {
        hash(Array(string.utf8))
    }

    /// The SHA-256 digest of `bytes` as 64 lowercase hexadecimal digits.
    public static func hex(_ bytes: [UInt8]) -> String {
        hexString(hash(bytes))
    }

    /// The SHA-256 digest of a string's UTF-8 bytes as lowercase hex.
    public static func hex(_ string: String) -> String {
        hex(Array(string.utf8))
    }
}

/// Lowercase hexadecimal of raw bytes (no separators).
func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.underestimatedCount * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

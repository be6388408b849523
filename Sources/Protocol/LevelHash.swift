// Keyed hashes of grouping-variable codes, so that the coordinator can tell
// whether a factor's codes recur at several sites (the factor then crosses
// the sites) without the codes themselves leaving the sites in the clear.
// docs/PRIVACY.md ("Level hashes") says what they reveal and why.

import COpenSSL

/// HMAC-SHA256 of one variable's level codes under a salt the coordinator
/// draws afresh for every request, truncated to `hexDigits` hex digits.
///
/// Why keyed and salted: a plain hash of a short code (a ward number, a
/// school number) is reversed by hashing every candidate once and for all;
/// a per-request salt makes each list usable only within that request, so
/// lists from two requests (or two coordinators) cannot be matched with
/// each other. Why the variable's name is hashed too: the same code in two
/// variables (ward 7, school 7) gives unrelated hashes, so no list links two
/// variables. Why 64 bits: across a million codes in all sites the chance
/// that two different codes share a hash is about 3·10⁻⁸; a collision would
/// only refuse a fit (never change one), and a shorter hash would not make a
/// guessed code any harder to confirm (see PRIVACY.md).
public final class LevelHasher {
    /// Domain separation: hashes of this scheme never equal other HMACs under the same key.
    public static let domain = "fedmix-level-hash-1"
    /// Hex digits kept of each HMAC (64 bits).
    public static let hexDigits = 16
    /// Accepted salt lengths, in hex digits (16 to 64 random bytes).
    public static let saltHexDigits = 32...128

    private let context: OpaquePointer
    private let prefix: [UInt8]

    /// A hasher for the codes of `variable` under `salt` (hex). Throws when
    /// the salt is not 32 to 128 hex digits.
    public init(salt: String, variable: String) throws {
        guard let key = Self.bytes(hex: salt), Self.saltHexDigits.contains(salt.utf8.count) else {
            throw ProtocolError.invalidMessage("a level-hash salt must be \(Self.saltHexDigits.lowerBound) to \(Self.saltHexDigits.upperBound) hexadecimal digits")
        }
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else { fatalError("OpenSSL has no HMAC") }
        defer { EVP_MAC_free(mac) }
        guard let ctx = EVP_MAC_CTX_new(mac) else { fatalError("EVP_MAC_CTX_new failed (out of memory)") }
        let ok: Int32 = "digest".withCString { name in
            "SHA256".withCString { digest in
                var params = [OSSL_PARAM_construct_utf8_string(name, UnsafeMutablePointer(mutating: digest), 0),
                              OSSL_PARAM_construct_end()]
                return key.withUnsafeBufferPointer { k in EVP_MAC_init(ctx, k.baseAddress, k.count, &params) }
            }
        }
        precondition(ok == 1, "EVP_MAC_init(HMAC-SHA256) failed")
        context = ctx
        prefix = Self.netstring(Self.domain) + Self.netstring(variable)
    }

    deinit { EVP_MAC_CTX_free(context) }

    /// The hash of one code (a text level, or a number as R prints it), as lowercase hex.
    public func hash(_ code: String) -> String {
        let message = prefix + Self.netstring(code)
        var out = [UInt8](repeating: 0, count: 32)
        var length = 0
        // A NULL key re-initialises with the key set in `init`.
        let ok = EVP_MAC_init(context, nil, 0, nil) == 1
            && message.withUnsafeBufferPointer { EVP_MAC_update(context, $0.baseAddress, $0.count) } == 1
            && out.withUnsafeMutableBufferPointer { EVP_MAC_final(context, $0.baseAddress, &length, 32) } == 1
        precondition(ok && length == 32, "HMAC-SHA256 failed")
        return String(hexString(out).prefix(Self.hexDigits))
    }

    /// Hashes of a set of codes, sorted and without repeats (so that their
    /// order says nothing about the order of the rows).
    public func hashes(_ codes: some Sequence<String>) -> [String] {
        Array(Set(codes.map(hash))).sorted()
    }

    /// Whether a string is one hash as `hash` writes it.
    public static func isHash(_ s: String) -> Bool {
        s.utf8.count == hexDigits && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// A fresh random salt (32 bytes, as 64 hex digits).
    public static func randomSalt() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        precondition(RAND_bytes(&bytes, Int32(bytes.count)) == 1, "RAND_bytes failed")
        return hexString(bytes)
    }

    static func netstring(_ s: String) -> [UInt8] {
        Array("\(s.utf8.count):".utf8) + Array(s.utf8) + [UInt8(ascii: ",")]
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        for k in stride(from: 0, to: digits.count, by: 2) {
            guard let hi = value(digits[k]), let lo = value(digits[k + 1]) else { return nil }
            out.append(hi << 4 | lo)
        }
        return out
    }
}

// Signatures with the TLS identities' keys, for audit receipts: an agent
// signs the head of its audit chain after each answer with the private key
// of the certificate it presents in the handshake, and the coordinator checks
// the signature against that same certificate (the TLS peer certificate).
// Why the TLS key: it is the one key an agent already has and that the
// coordinator already trusts through the deployment CA; no second key to
// issue, rotate or protect.

import COpenSSL
import Foundation

/// A signature failure, saying what to check.
public struct SignatureError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum Signatures {
    /// The digest to use with a key: SHA-256 for EC and RSA keys; none for
    /// Ed25519/Ed448, which hash internally.
    static func digest(for key: OpaquePointer) -> OpaquePointer? {
        let id = EVP_PKEY_get_base_id(key)
        return (id == NID_ED25519 || id == NID_ED448) ? nil : (SHA256Digest.algorithm ?? EVP_sha256())
    }

    /// Signs `message` with `key` (an EVP_PKEY): ECDSA with SHA-256 for the
    /// P-256 keys fedmix issues (DER-encoded signature).
    static func sign(_ message: [UInt8], key: OpaquePointer) throws -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw SignatureError("cannot allocate a signing context") }
        defer { EVP_MD_CTX_free(md) }
        OpenSSLErrors.clear()
        guard EVP_DigestSignInit(md, nil, digest(for: key), nil, key) == 1 else {
            throw SignatureError("cannot sign with this key: \(OpenSSLErrors.drainSummary())")
        }
        var length = 0
        guard message.withUnsafeBufferPointer({ EVP_DigestSign(md, nil, &length, $0.baseAddress, $0.count) }) == 1 else {
            throw SignatureError("cannot size the signature: \(OpenSSLErrors.drainSummary())")
        }
        var signature = [UInt8](repeating: 0, count: length)
        let rc = signature.withUnsafeMutableBufferPointer { s in
            message.withUnsafeBufferPointer { EVP_DigestSign(md, s.baseAddress, &length, $0.baseAddress, $0.count) }
        }
        guard rc == 1 else { throw SignatureError("signing failed: \(OpenSSLErrors.drainSummary())") }
        return Array(signature[0..<length])
    }

    /// Whether `signature` over `message` verifies with `publicKey` (an EVP_PKEY).
    static func verify(_ signature: [UInt8], over message: [UInt8], publicKey: OpaquePointer) -> Bool {
        guard let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(md); OpenSSLErrors.clear() }
        guard EVP_DigestVerifyInit(md, nil, digest(for: publicKey), nil, publicKey) == 1 else { return false }
        return signature.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { EVP_DigestVerify(md, s.baseAddress, s.count, $0.baseAddress, $0.count) }
        } == 1
    }

    /// Checks a signature against the certificate in a PEM file (the first
    /// certificate in it). Returns the certificate's SHA-256 fingerprint and
    /// whether the signature verifies; throws when the file cannot be read.
    public static func verify(_ signature: [UInt8], over message: [UInt8],
                              certificatePath: String) throws -> (fingerprint: String, valid: Bool) {
        let bytes: [UInt8]
        switch PEMFile.read(certificatePath, labelSuffix: "CERTIFICATE") {
        case .success(let b): bytes = b
        case .failure: throw SignatureError("\(certificatePath): not a readable PEM certificate")
        }
        let certs = PEMFile.certificates(bytes)
        defer { certs.forEach { X509_free($0) } }
        guard let leaf = certs.first, let key = X509_get0_pubkey(leaf) else {
            throw SignatureError("\(certificatePath): no readable certificate")
        }
        return (X509Fields.fingerprintSHA256(leaf), verify(signature, over: message, publicKey: key))
    }
}

extension TLSContext {
    /// Signs `message` with this party's private key (the key of the
    /// certificate it presents in handshakes).
    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        guard let key = SSL_CTX_get0_privatekey(ctx) else { throw SignatureError("the TLS context has no private key") }
        return try Signatures.sign(message, key: key)
    }
}

extension TLSConnection {
    /// Whether `signature` over `message` was made with the key of the
    /// certificate the peer presented in this connection's handshake.
    public func verifyPeerSignature(_ signature: [UInt8], over message: [UInt8]) -> Bool {
        withSSL { ssl in
            guard let ssl, let cert = SSL_get0_peer_certificate(ssl), let key = X509_get0_pubkey(cert) else { return false }
            return Signatures.verify(signature, over: message, publicKey: key)
        }
    }
}

extension Receipt {
    /// `line` (one JSON object) with `"receipt": self` added as its last
    /// key. The rest of the line is unchanged, byte for byte, so the line
    /// without the receipt is the one in the audit log.
    public func appended(to line: String) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let receipt = String(decoding: try e.encode(self), as: UTF8.self)
        guard line.hasSuffix("}") else { throw SignatureError("an answer line must be a JSON object") }
        let body = line.dropLast()
        let separator = body.hasSuffix("{") ? "" : ","
        return body + separator + "\"receipt\":" + receipt + "}"
    }

    /// The receipt an answer line carries as its last key, if any. Reads
    /// only the end of the line (answers can be megabytes).
    public static func carried(by line: String) -> Receipt? {
        var line = line
        return line.withUTF8 { all -> Receipt? in
            // The last 4 KiB, scanned backwards without copying.
            let tail = UnsafeBufferPointer(rebasing: all[max(0, all.count - 4096)...])
            let key: StaticString = "\"receipt\":{"
            let k = key.utf8CodeUnitCount
            // A receipt is an object closing the line: the line ends "}}".
            guard tail.count > k, tail[tail.count - 1] == UInt8(ascii: "}"), tail[tail.count - 2] == UInt8(ascii: "}") else { return nil }
            return key.withUTF8Buffer { key -> Receipt? in
                var i = tail.count - k
                while i >= 0 {
                    if tail[i] == key[0], memcmp(tail.baseAddress! + i, key.baseAddress!, k) == 0 {
                        let object = Data(UnsafeBufferPointer(rebasing: tail[(i + k - 1)..<(tail.count - 1)]))
                        return try? JSONDecoder().decode(Receipt.self, from: object)
                    }
                    i -= 1
                }
                return nil
            }
        }
    }

    /// Signs the chain head (`seq`, `hash`) of `site` with `context`'s key.
    public static func sign(site: String, seq: Int, hash: String, context: TLSContext) throws -> Receipt {
        let signature = try context.sign(signedBytes(site: site, seq: seq, hash: hash))
        return Receipt(site: site, seq: seq, hash: hash, certificate: context.certificateFingerprintSHA256,
                       signature: Data(signature).base64EncodedString())
    }

    /// The signature's bytes (empty when it is not base64).
    public var signatureBytes: [UInt8] { Data(base64Encoded: signature).map { Array($0) } ?? [] }
}

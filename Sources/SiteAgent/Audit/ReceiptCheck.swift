// Checking an audit log against the receipts a coordinator kept: every
// answer carried the chain head after it (sequence number and hash), signed
// with the agent's TLS key. A log whose entries were edited or deleted and
// whose chain was then recomputed still passes `verify`, but its hash at a
// receipt's sequence number is no longer the one the agent signed.

import Foundation
import Protocol

/// One receipt that does not match the log, and why.
public struct ReceiptFailure: Sendable, Equatable, CustomStringConvertible {
    public var receipt: Receipt
    public var reason: String
    public var description: String { "receipt for entry \(receipt.seq): \(reason)" }
}

/// What `AuditLog.checkReceipts` found.
public struct ReceiptCheckResult: Sendable, Equatable {
    /// Receipts of this site whose entry and signature both match.
    public var matched = 0
    /// Receipts that do not match the log (edited, deleted, or a bad signature).
    public var failures: [ReceiptFailure] = []
    /// Receipts that cannot be checked: their entry was pruned by recorded
    /// retention, or they belong to another site.
    public var unchecked: [ReceiptFailure] = []
    public var ok: Bool { failures.isEmpty }

    public var summary: String {
        var lines: [String] = []
        if failures.isEmpty {
            lines.append("receipts: \(matched) match the log")
        } else {
            lines.append("receipts: FAILED: \(failures.count) of \(matched + failures.count) do not match the log")
            lines += failures.map { "  " + $0.description }
        }
        if !unchecked.isEmpty {
            lines.append("not checked: \(unchecked.count)")
            lines += unchecked.prefix(10).map { "  " + $0.description }
        }
        return lines.joined(separator: "\n")
    }
}

extension AuditLog {
    /// Checks `receipts` against this log: for each receipt of `site`, the
    /// entry with its sequence number must exist and have the signed hash,
    /// and the signature must verify with one of `certificatePaths` (the
    /// agent's certificate, and earlier ones after a rotation; matched by
    /// the receipt's fingerprint). Receipts whose entries were removed by a
    /// recorded pruning are listed as unchecked, not as failures.
    public func checkReceipts(_ receipts: [Receipt], site: String, certificatePaths: [String]) throws -> ReceiptCheckResult {
        var result = ReceiptCheckResult()
        let verification = try verify()
        let prunedThrough = verification.prunedThrough ?? 0
        let hashes = try entryHashes(receipts.filter { $0.site == site && $0.seq > prunedThrough }.map(\.seq))
        for r in receipts {
            guard r.site == site else {
                result.unchecked.append(ReceiptFailure(receipt: r, reason: "it is site \"\(r.site)\"'s, not this agent's (\"\(site)\")"))
                continue
            }
            if r.seq <= prunedThrough {
                result.unchecked.append(ReceiptFailure(receipt: r, reason: "the entry was removed by a recorded retention pruning"))
                continue
            }
            guard let hash = hashes[r.seq] else {
                result.failures.append(ReceiptFailure(receipt: r, reason: "the log has no entry \(r.seq): it was deleted (or the log was replaced)"))
                continue
            }
            guard hash == r.hash else {
                result.failures.append(ReceiptFailure(receipt: r, reason: "the log's entry \(r.seq) has hash \(hash.prefix(16))…, the agent signed \(r.hash.prefix(16))…: the entry, or one before it, was changed and the chain recomputed"))
                continue
            }
            var verified: Bool? = nil
            for path in certificatePaths {
                let check = try Signatures.verify(r.signatureBytes, over: r.signedBytes, certificatePath: path)
                if check.fingerprint == r.certificate { verified = check.valid; break }
            }
            switch verified {
            case true?: result.matched += 1
            case false?:
                result.failures.append(ReceiptFailure(receipt: r, reason: "the signature does not verify with the agent's certificate (\(r.certificate.prefix(16))…): the receipt was forged or altered"))
            case nil:
                result.failures.append(ReceiptFailure(receipt: r, reason: "it was signed by certificate \(r.certificate), which is not among the certificates given; pass the certificate the agent used then"))
            }
        }
        return result
    }

    /// The receipts of `site` in a fit result's JSON (`fedmix fit --format
    /// json`): `sites[].receipts` where `sites[].site` is `site`. Accepts
    /// one result or an array of results.
    public static func receipts(fromFitJSON data: Data, site: String) throws -> [Receipt] {
        struct Site: Decodable { var site: String; var receipts: [Receipt]? }
        struct Fit: Decodable { var sites: [Site] }
        let fits: [Fit]
        if let one = try? JSONDecoder().decode(Fit.self, from: data) { fits = [one] }
        else if let many = try? JSONDecoder().decode([Fit].self, from: data) { fits = many }
        else { throw AuditStoreError(path: "receipts", message: "not a fit result in JSON (expected an object with \"sites\", as fedmix fit --format json writes)") }
        return fits.flatMap { $0.sites.filter { $0.site == site }.flatMap { $0.receipts ?? [] } }
    }
}

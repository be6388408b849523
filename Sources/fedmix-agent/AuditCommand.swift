import Foundation
import CommandKit
import SiteAgent
import Protocol

/// `fedmix-agent audit list|show ID|verify|export|prune`: reading (and
/// verifying) the agent's audit log. Reading commands open the log without
/// writing to it and work while the agent runs.
enum AuditCommand {
    static let config = Option<String>("config", value: "FILE", help: "the agent's configuration: the log is its audit_log")
    static let log = Option<String>("log", value: "FILE", help: "the audit log itself (instead of --config)")
    static let since = Option<Date>("since", value: "TIME", help: "only entries from TIME on: a date or date-time, UTC unless it says otherwise (\(AuditEntry.timeForms)), or a span back from now (\(AuditEntry.relativeForms))",
                                    ValueParser { text in
                                        guard let d = AuditEntry.parseSince(text) else {
                                            throw InvalidValue("is not a time: give a date or date-time (e.g. 2026-03-01 or 2026-03-01T09:30:00Z) or a span back from now (e.g. 24h or 7d)")
                                        }
                                        return d
                                    })
    static let line = Flag("line", help: "print the message exactly as on the wire, nothing else")
    static let days = Option<Int>("days", value: "N", help: "prune entries older than N days (default: the configuration's audit_retention_days)",
                                  .integer(in: 1...Int.max))
    static let receipts = Option<String>("receipts", value: "FIT.json", help: "also check the signed receipts in a fit result (fedmix fit --format json): each must match this log's chain", repeatable: true)
    static let certificate = Option<String>("certificate", value: "PEM", help: "with --receipts: another certificate this agent signed with (e.g. before a rotation)", repeatable: true)
    static let requiredConfig = Option<String>("config", value: "FILE", help: "the agent's configuration: the log is its audit_log", required: true)
    static let entry = Positional("ID", help: "the entry's sequence number (the SEQ column of audit list)",
                                  missing: "give one entry number: fedmix-agent audit show ID --config FILE")

    static let group = CommandGroup(
        "audit", abstract: "Reads and verifies the audit log (reading commands work while the agent runs).",
        discussion: "TIME is a date or date-time, UTC unless it says otherwise (\(AuditEntry.timeForms)), or a span back from now: \(AuditEntry.relativeForms) (minutes, hours, days, weeks).",
        namesItselfInErrors: true,
        commands: [
            Command("list", abstract: "One line per entry: sequence, time, direction, peer, session, bytes, message type.",
                    synopsis: "[--since TIME] (--config FILE | --log FILE)", options: [config, log, since], run: list),
            Command("show", abstract: "The full entry, its message as indented JSON (--line: the message exactly as on the wire).",
                    synopsis: "ID [--line] (--config FILE | --log FILE)", arguments: [entry], options: [config, log, line], run: show),
            Command("verify", abstract: "Checks the hash chain, and with --receipts a fit's signed receipts (a log rewritten and re-chained fails them); exit status 0 when intact, 1 naming what is not.",
                    synopsis: "(--config FILE | --log FILE) [--receipts FIT.json [--certificate PEM]...]", options: [config, log, receipts, certificate], run: verify),
            Command("export", abstract: "Every entry as one JSON object per line (re-verifiable: see docs/PRIVACY.md).",
                    synopsis: "[--since TIME] (--config FILE | --log FILE)", options: [config, log, since], run: export),
            Command("prune", abstract: "Applies the retention now (audit_retention_days, or N days); the pruning is itself logged.",
                    synopsis: "[--days N] --config FILE", options: [requiredConfig, days],
                    notHere: ["log": "prune writes to the log, so it takes the agent's --config (its audit_log and audit_retention_days)"], run: prune),
        ])

    /// The log named by --log, or by the configuration's audit_log.
    static func logPath(_ a: ParsedArguments) throws -> String {
        let path = a.value(log), configPath = a.value(config)
        if let path {
            guard configPath == nil else { throw ArgumentError("give --config FILE or --log FILE, not both") }
            return path
        }
        guard let c = configPath else { throw ArgumentError("give --config FILE (the agent's configuration) or --log FILE") }
        let config = try AgentConfig.load(path: c)
        guard let p = config.auditLog else { throw ArgumentError("\(c) has no \"audit_log\": this agent keeps no audit log") }
        return p
    }

    static func list(_ a: ParsedArguments) throws -> Int32 {
        let from = a.value(since)
        let log = try AuditLog.openForReading(path: try logPath(a))
        defer { log.close() }
        print(["SEQ", "TIME", "DIRECTION", "PEER", "SESSION", "BYTES", "TYPE"].joined(separator: "\t"))
        try log.forEach(since: from) { e in
            print([String(e.seq), e.time, e.direction, e.peerSubject.isEmpty ? "-" : e.peerSubject, e.session ?? "-",
                   String(e.bytes), typeLabel(e)].joined(separator: "\t"))
        }
        return 0
    }

    /// The message type, with the code of an error answer.
    static func typeLabel(_ e: AuditEntry) -> String {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(e.line.utf8))) as? [String: Any] else { return "(not a JSON object)" }
        let type = o["type"] as? String ?? "(no type)"
        if type == "error", let code = o["code"] as? String { return "error (\(code))" }
        return type
    }

    static func show(_ a: ParsedArguments) throws -> Int32 {
        let id = a.positional(entry)!
        guard let seq = Int(id) else { throw ArgumentError("ID must be an entry number (the SEQ column of audit list), got \"\(id)\"") }
        let lineOnly = a.flag(line)
        let log = try AuditLog.openForReading(path: try logPath(a))
        defer { log.close() }
        guard let e = try log.entry(seq) else {
            FileHandle.standardError.write(Data("fedmix-agent audit: there is no entry \(seq) in \(log.path)\n".utf8))
            return 1
        }
        if lineOnly { print(e.line); return 0 }
        let intact = e.computedHash == e.hash
        print("""
            entry        \(e.seq)
            time         \(e.time)
            direction    \(e.direction)
            peer         \(e.peerSubject.isEmpty ? "-" : e.peerSubject)
            fingerprint  \(e.peerFingerprint.isEmpty ? "-" : e.peerFingerprint)
            session      \(e.session ?? "-")
            bytes        \(e.bytes)
            type         \(typeLabel(e))
            prev_hash    \(e.previousHash)
            hash         \(e.hash) (\(intact ? "matches the entry's content" : "DOES NOT MATCH the entry's content: it was edited"))
            message:
            """)
        print(prettyJSON(e.line))
        return 0
    }

    static func verify(_ a: ParsedArguments) throws -> Int32 {
        let fits = a.values(receipts), extra = a.values(certificate)
        if !extra.isEmpty && fits.isEmpty { throw ArgumentError("--certificate applies with --receipts FIT.json") }
        // Receipts name the site and were signed with the agent's key: the configuration says which.
        if !fits.isEmpty && a.value(config) == nil {
            throw ArgumentError("--receipts needs --config FILE (the agent's site name and certificate), not --log")
        }
        let log = try AuditLog.openForReading(path: try logPath(a))
        defer { log.close() }
        let v = try log.verify()
        for w in v.warnings { print("warning: \(w)") }
        print("\(log.path): \(v.summary)")
        var status: Int32 = 0
        if let p = v.problem {
            print("first bad entry: \(p.seq) (\(p.kind.rawValue)); see it with fedmix-agent audit show \(p.seq) --log \(log.path)")
            status = 1
        }
        guard !fits.isEmpty, let configPath = a.value(config) else { return status }
        let agent = try AgentConfig.load(path: configPath)
        for fit in fits {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: fit)) } catch {
                throw ArgumentError("\(fit): cannot read the fit result (\(error.localizedDescription))")
            }
            let signed = try AuditLog.receipts(fromFitJSON: data, site: agent.site)
            let r = try log.checkReceipts(signed, site: agent.site, certificatePaths: [agent.tls.certificate] + extra)
            print("\(fit): \(r.summary)")
            if !r.ok { status = 1 }
        }
        return status
    }

    static func export(_ a: ParsedArguments) throws -> Int32 {
        let from = a.value(since)
        let log = try AuditLog.openForReading(path: try logPath(a))
        defer { log.close() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let out = FileHandle.standardOutput
        try log.forEach(since: from) { e in
            var data = try encoder.encode(e)
            data.append(0x0A)
            out.write(data)
        }
        return 0
    }

    static func prune(_ a: ParsedArguments) throws -> Int32 {
        let c = try a.require(requiredConfig)
        let given = a.value(days)
        let config = try AgentConfig.load(path: c)
        guard let path = config.auditLog else { throw ArgumentError("\(c) has no \"audit_log\"") }
        guard let days = given ?? config.auditRetentionDays else {
            throw ArgumentError("\(c) sets no \"audit_retention_days\"; give --days N")
        }
        let log = try AuditLog.open(path: path)
        defer { log.close() }
        if let note = try log.prune(before: Date().addingTimeInterval(-Double(days) * 86400), retentionDays: days) {
            print("pruned: \(note.line)\nrecorded as entry \(note.seq)")
        } else {
            print("nothing older than \(days) days")
        }
        return 0
    }
}

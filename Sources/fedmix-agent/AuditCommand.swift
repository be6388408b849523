import Foundation
import SiteAgent
import Protocol

/// `fedmix-agent audit list|show ID|verify|export|prune`: reading (and
/// verifying) the agent's audit log. Reading commands open the log without
/// writing to it and work while the agent runs.
enum AuditCommand {
    static let usage = """
    Usage:
      fedmix-agent audit list   [--since TIME] (--config FILE | --log FILE)
          one line per entry: sequence, time, direction, peer, session, bytes, message type
      fedmix-agent audit show ID [--line] (--config FILE | --log FILE)
          the full entry, its message as indented JSON (--line: the message exactly as on the wire)
      fedmix-agent audit verify (--config FILE | --log FILE)
          checks the hash chain; exit status 0 when intact, 1 naming the first entry edited, deleted or reordered
      fedmix-agent audit export [--since TIME] (--config FILE | --log FILE)
          every entry as one JSON object per line (re-verifiable: see docs/PRIVACY.md)
      fedmix-agent audit prune [--days N] --config FILE
          applies the retention now (audit_retention_days, or N days); the pruning is itself logged
    TIME is UTC unless it says otherwise: 2026-03-01, 2026-03-01T09:30, 2026-03-01T09:30:00+01:00
    """

    struct Options {
        var positionals: [String] = []
        var values: [String: String] = [:]
        var flags: Set<String> = []
    }

    static func parse(_ args: [String], options: Set<String>, flags: Set<String>) throws -> Options {
        var o = Options()
        var i = 0
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") {
                var name = String(a.dropFirst(2)), value: String? = nil
                if let eq = name.firstIndex(of: "=") { value = String(name[name.index(after: eq)...]); name = String(name[..<eq]) }
                if options.contains(name) {
                    if value == nil {
                        guard i + 1 < args.count else { throw UsageError("option --\(name) needs a value") }
                        i += 1; value = args[i]
                    }
                    o.values[name] = value
                } else if flags.contains(name), value == nil {
                    o.flags.insert(name)
                } else {
                    throw UsageError("unknown option \(a) for this command\n\(usage)")
                }
            } else {
                o.positionals.append(a)
            }
            i += 1
        }
        return o
    }

    struct UsageError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    static func run(_ args: [String]) -> Int32 {
        guard let sub = args.first, !["help", "--help", "-h"].contains(sub) else { print(usage); return args.isEmpty ? 2 : 0 }
        do {
            let rest = Array(args.dropFirst())
            switch sub {
            case "list": return try list(rest)
            case "show": return try show(rest)
            case "verify": return try verify(rest)
            case "export": return try export(rest)
            case "prune": return try prune(rest)
            default: throw UsageError("unknown audit command \"\(sub)\"\n\(usage)")
            }
        } catch let e as UsageError {
            FileHandle.standardError.write(Data("fedmix-agent audit: \(e.description)\n".utf8))
            return 2
        } catch {
            FileHandle.standardError.write(Data("fedmix-agent audit: error: \(error)\n".utf8))
            return 1
        }
    }

    /// The log named by --log, or by the configuration's audit_log.
    static func logPath(_ o: Options) throws -> String {
        if let p = o.values["log"] { return p }
        guard let c = o.values["config"] else { throw UsageError("give --config FILE (the agent's configuration) or --log FILE") }
        let config = try AgentConfig.load(path: c)
        guard let p = config.auditLog else { throw UsageError("\(c) has no \"audit_log\": this agent keeps no audit log") }
        return p
    }

    static func since(_ o: Options) throws -> Date? {
        guard let t = o.values["since"] else { return nil }
        guard let d = AuditEntry.parseTime(t) else { throw UsageError("--since \(t): not a time (e.g. 2026-03-01 or 2026-03-01T09:30:00Z)") }
        return d
    }

    static func list(_ args: [String]) throws -> Int32 {
        let o = try parse(args, options: ["config", "log", "since"], flags: [])
        let log = try AuditLog.openForReading(path: try logPath(o))
        defer { log.close() }
        print(["SEQ", "TIME", "DIRECTION", "PEER", "SESSION", "BYTES", "TYPE"].joined(separator: "\t"))
        try log.forEach(since: try since(o)) { e in
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

    static func show(_ args: [String]) throws -> Int32 {
        let o = try parse(args, options: ["config", "log"], flags: ["line"])
        guard o.positionals.count == 1, let seq = Int(o.positionals[0]) else { throw UsageError("give one entry number: fedmix-agent audit show ID --config FILE") }
        let log = try AuditLog.openForReading(path: try logPath(o))
        defer { log.close() }
        guard let e = try log.entry(seq) else {
            FileHandle.standardError.write(Data("fedmix-agent audit: there is no entry \(seq) in \(log.path)\n".utf8))
            return 1
        }
        if o.flags.contains("line") { print(e.line); return 0 }
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

    static func verify(_ args: [String]) throws -> Int32 {
        let o = try parse(args, options: ["config", "log"], flags: [])
        let log = try AuditLog.openForReading(path: try logPath(o))
        defer { log.close() }
        let v = try log.verify()
        for w in v.warnings { print("warning: \(w)") }
        print("\(log.path): \(v.summary)")
        if let p = v.problem {
            print("first bad entry: \(p.seq) (\(p.kind.rawValue)); see it with fedmix-agent audit show \(p.seq) --log \(log.path)")
            return 1
        }
        return 0
    }

    static func export(_ args: [String]) throws -> Int32 {
        let o = try parse(args, options: ["config", "log", "since"], flags: [])
        let log = try AuditLog.openForReading(path: try logPath(o))
        defer { log.close() }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let out = FileHandle.standardOutput
        try log.forEach(since: try since(o)) { e in
            var data = try encoder.encode(e)
            data.append(0x0A)
            out.write(data)
        }
        return 0
    }

    static func prune(_ args: [String]) throws -> Int32 {
        let o = try parse(args, options: ["config", "days"], flags: [])
        guard let c = o.values["config"] else { throw UsageError("give --config FILE") }
        let config = try AgentConfig.load(path: c)
        guard let path = config.auditLog else { throw UsageError("\(c) has no \"audit_log\"") }
        let days: Int
        if let d = o.values["days"] {
            guard let n = Int(d), n >= 1 else { throw UsageError("--days must be a whole number of at least 1") }
            days = n
        } else {
            guard let n = config.auditRetentionDays else { throw UsageError("\(c) sets no \"audit_retention_days\"; give --days N") }
            days = n
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

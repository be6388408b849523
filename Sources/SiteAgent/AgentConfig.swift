// The agent's configuration file (JSON), decided by the hospital: where to
// listen, which certificates to present and trust, which datasets and
// variables may be used, the disclosure thresholds and the audit log.
// Unknown keys are errors, so a typo never silently weakens a rule.

import Foundation
import Protocol

public struct AgentConfig: Sendable, Equatable {
    public struct TLS: Sendable, Equatable {
        public var certificate: String
        public var key: String
        public var ca: String
        /// Certificate names of the coordinators allowed to connect (empty: any the CA signed).
        public var allowedCoordinators: [String]
    }
    public enum Dataset: Sendable, Equatable {
        case csv(path: String, types: [String: ColumnType])
        case sqliteTable(path: String, table: String, types: [String: ColumnType])
        case sqliteQuery(path: String, query: String, types: [String: ColumnType])
    }

    public var site: String
    public var host: String
    public var port: Int
    public var tls: TLS
    public var datasets: [String: Dataset]
    public var siteColumn: String?
    /// Variables that may be used; nil means all.
    public var allowedVariables: [String]?
    public var deniedVariables: [String]
    public var auditLog: String?
    /// Audit entries older than this many days are pruned, each pruning
    /// recorded in the log itself (nil: entries are kept for ever).
    public var auditRetentionDays: Int? = nil
    public var disclosure: DisclosurePolicy
    public var sessionTimeoutSeconds: Double
    public var maxLineBytes: Int
    /// Connection admission and per-request budgets (`limits`).
    public var limits = AgentLimits()
    /// The file this was read from (relative paths are resolved against its folder).
    public var path: String?

    /// Reads and validates a configuration file.
    public static func load(path: String) throws -> AgentConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(path: path, message: "cannot read the file (does it exist, and may this user read it?)")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var c = try parse(data, path: path, baseDirectory: base)
        c.path = path
        return c
    }

    /// Parses configuration JSON; relative paths are resolved against `baseDirectory`.
    public static func parse(_ data: Data, path: String = "config", baseDirectory: String) throws -> AgentConfig {
        let any: Any
        do { any = try JSONSerialization.jsonObject(with: data) } catch {
            throw ConfigError(path: path, message: "not valid JSON (\(error.localizedDescription))")
        }
        guard let root = any as? [String: Any] else { throw ConfigError(path: path, message: "the top level must be a JSON object") }
        let r = Reader(path: path, base: baseDirectory)
        try r.allowOnly(root, ["site", "listen", "tls", "datasets", "site_column", "allowed_variables",
                               "denied_variables", "audit_log", "audit_retention_days", "disclosure", "session_timeout_seconds", "max_line_bytes", "limits"], at: "")
        let site = try r.string(root, "site", at: "")
        let listen = try r.string(root, "listen", at: "")
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw ConfigError(path: path, message: "\"listen\" must be HOST:PORT, e.g. \"0.0.0.0:7443\"")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let tlsObj = root["tls"] as? [String: Any] else { throw ConfigError(path: path, message: "\"tls\" must be an object with certificate, key, ca") }
        try r.allowOnly(tlsObj, ["certificate", "key", "ca", "allowed_coordinators"], at: "tls.")
        let tls = TLS(certificate: r.resolve(try r.string(tlsObj, "certificate", at: "tls.")),
                      key: r.resolve(try r.string(tlsObj, "key", at: "tls.")),
                      ca: r.resolve(try r.string(tlsObj, "ca", at: "tls.")),
                      allowedCoordinators: try r.stringArray(tlsObj, "allowed_coordinators", at: "tls.") ?? [])
        guard let ds = root["datasets"] as? [String: Any], !ds.isEmpty else {
            throw ConfigError(path: path, message: "\"datasets\" must be an object naming at least one dataset")
        }
        var datasets: [String: Dataset] = [:]
        for (name, value) in ds {
            guard let d = value as? [String: Any] else { throw ConfigError(path: path, message: "datasets.\(name) must be an object") }
            let at = "datasets.\(name)."
            try r.allowOnly(d, ["csv", "sqlite", "table", "query", "types"], at: at)
            var types: [String: ColumnType] = [:]
            if let t = d["types"] {
                guard let tm = t as? [String: String] else { throw ConfigError(path: path, message: "\(at)types must map column names to \"numeric\" or \"text\"") }
                for (col, kind) in tm {
                    guard let k = ColumnType(rawValue: kind) else {
                        throw ConfigError(path: path, message: "\(at)types.\(col) must be \"numeric\" or \"text\"")
                    }
                    types[col] = k
                }
            }
            if let csv = d["csv"] {
                guard let p = csv as? String, d["sqlite"] == nil, d["table"] == nil, d["query"] == nil else {
                    throw ConfigError(path: path, message: "\(at)csv must be a path, and a CSV dataset has no sqlite, table or query")
                }
                datasets[name] = .csv(path: r.resolve(p), types: types)
            } else if let db = d["sqlite"] as? String {
                if let t = d["table"] as? String, d["query"] == nil { datasets[name] = .sqliteTable(path: r.resolve(db), table: t, types: types) }
                else if let q = d["query"] as? String, d["table"] == nil { datasets[name] = .sqliteQuery(path: r.resolve(db), query: q, types: types) }
                else { throw ConfigError(path: path, message: "\(at) a sqlite dataset needs exactly one of \"table\" or \"query\"") }
            } else {
                throw ConfigError(path: path, message: "\(at) needs \"csv\": PATH or \"sqlite\": PATH with \"table\" or \"query\"")
            }
        }
        var policy = DisclosurePolicy()
        if let d = root["disclosure"] {
            guard let dobj = d as? [String: Any] else { throw ConfigError(path: path, message: "\"disclosure\" must be an object") }
            try r.allowOnly(dobj, ["min_rows", "min_cell", "max_params_per_row", "max_rounds_per_session",
                                   "max_sessions_per_day", "max_listed_levels", "max_row_share"], at: "disclosure.")
            if let v = try r.int(dobj, "min_rows", at: "disclosure.") { policy.minRows = v }
            if let v = try r.int(dobj, "min_cell", at: "disclosure.") { policy.minCell = v }
            if let v = try r.number(dobj, "max_params_per_row", at: "disclosure.") { policy.maxParametersPerRow = v }
            if let v = try r.int(dobj, "max_rounds_per_session", at: "disclosure.") { policy.maxRoundsPerSession = v }
            if let v = try r.int(dobj, "max_sessions_per_day", at: "disclosure.") { policy.maxSessionsPerDay = v }
            if let v = try r.int(dobj, "max_listed_levels", at: "disclosure.") { policy.maxListedLevels = v }
            if let v = try r.number(dobj, "max_row_share", at: "disclosure.") {
                guard v > 0 && v <= 1 else { throw ConfigError(path: path, message: "\"disclosure.max_row_share\" must be a share between 0 and 1 (e.g. 0.5)") }
                policy.maxRowShare = v
            }
        }
        let retention = try r.int(root, "audit_retention_days", at: "")
        if let days = retention {
            guard days >= 1 else { throw ConfigError(path: path, message: "\"audit_retention_days\" must be at least 1 (leave it out to keep every entry)") }
            guard root["audit_log"] != nil else { throw ConfigError(path: path, message: "\"audit_retention_days\" needs \"audit_log\"") }
        }
        var limits = AgentLimits()
        if let l = root["limits"] {
            guard let lobj = l as? [String: Any] else { throw ConfigError(path: path, message: "\"limits\" must be an object") }
            try r.allowOnly(lobj, Set(AgentLimits.keys), at: "limits.")
            func positive(_ k: String) throws -> Double? {
                guard let v = try r.number(lobj, k, at: "limits.") else { return nil }
                guard v > 0 else { throw ConfigError(path: path, message: "\"limits.\(k)\" must be greater than 0") }
                return v
            }
            func count(_ k: String) throws -> Int? {
                guard let v = try r.int(lobj, k, at: "limits.") else { return nil }
                guard v > 0 else { throw ConfigError(path: path, message: "\"limits.\(k)\" must be at least 1") }
                return v
            }
            if let v = try count("max_pending_handshakes") { limits.maxPendingHandshakes = v }
            if let v = try positive("handshake_timeout_seconds") { limits.handshakeTimeoutSeconds = v }
            if let v = try count("max_connections_per_certificate") { limits.maxConnectionsPerCertificate = v }
            if let v = try count("max_connections") { limits.maxConnections = v }
            if let v = try positive("max_work_per_request") { limits.maxWorkPerRequest = v }
            if let v = try count("max_answer_bytes") { limits.maxAnswerBytes = v }
            if let v = try count("max_audit_entry_bytes") { limits.maxAuditEntryBytes = v }
            if let problem = limits.problem { throw ConfigError(path: path, message: problem) }
        }
        let siteColumn: String?
        if root.keys.contains("site_column") {
            if root["site_column"] is NSNull { siteColumn = nil } else { siteColumn = try r.string(root, "site_column", at: "") }
        } else { siteColumn = "site" }
        return AgentConfig(
            site: site, host: host, port: port, tls: tls, datasets: datasets, siteColumn: siteColumn,
            allowedVariables: try r.stringArray(root, "allowed_variables", at: ""),
            deniedVariables: try r.stringArray(root, "denied_variables", at: "") ?? [],
            auditLog: try root["audit_log"].map { _ in r.resolve(try r.string(root, "audit_log", at: "")) },
            auditRetentionDays: retention,
            disclosure: policy,
            sessionTimeoutSeconds: try r.number(root, "session_timeout_seconds", at: "") ?? 3600,
            maxLineBytes: try r.int(root, "max_line_bytes", at: "") ?? ProtocolLimits.maxLineBytes, limits: limits, path: nil)
    }

    /// The datasets as the site service reads them.
    public var dataSources: [String: DatasetSource] {
        datasets.mapValues {
            switch $0 {
            case .csv(let p, let t): return .csv(path: p, types: t)
            case .sqliteTable(let p, let n, let t): return .sqliteTable(path: p, table: n, types: t)
            case .sqliteQuery(let p, let q, let t): return .sqliteQuery(path: p, query: q, types: t)
            }
        }
    }

    private struct Reader {
        let path: String
        let base: String
        func allowOnly(_ o: [String: Any], _ keys: Set<String>, at: String) throws {
            if let unknown = o.keys.sorted().first(where: { !keys.contains($0) }) {
                throw ConfigError(path: path, message: "unknown key \"\(at)\(unknown)\" (allowed here: \(keys.sorted().joined(separator: ", ")))")
            }
        }
        func string(_ o: [String: Any], _ k: String, at: String) throws -> String {
            guard let v = o[k] else { throw ConfigError(path: path, message: "\"\(at)\(k)\" is required") }
            guard let s = v as? String, !s.isEmpty else { throw ConfigError(path: path, message: "\"\(at)\(k)\" must be a non-empty string") }
            return s
        }
        func stringArray(_ o: [String: Any], _ k: String, at: String) throws -> [String]? {
            guard let v = o[k] else { return nil }
            guard let a = v as? [String] else { throw ConfigError(path: path, message: "\"\(at)\(k)\" must be an array of strings") }
            return a
        }
        func int(_ o: [String: Any], _ k: String, at: String) throws -> Int? {
            guard let v = o[k] else { return nil }
            guard let n = v as? NSNumber, !Self.isJSONBoolean(v), n.doubleValue == n.doubleValue.rounded(), n.intValue >= 0 else {
                throw ConfigError(path: path, message: "\"\(at)\(k)\" must be a non-negative integer")
            }
            return n.intValue
        }
        func number(_ o: [String: Any], _ k: String, at: String) throws -> Double? {
            guard let v = o[k] else { return nil }
            guard let n = v as? NSNumber, !Self.isJSONBoolean(v), n.doubleValue >= 0 else {
                throw ConfigError(path: path, message: "\"\(at)\(k)\" must be a non-negative number")
            }
            return n.doubleValue
        }
        /// JSON true/false (on Linux, 0 and 1 also pass `is Bool`; the class tells them apart).
        static func isJSONBoolean(_ v: Any) -> Bool {
            String(describing: type(of: v as AnyObject)).contains("Boolean")
        }
        func resolve(_ p: String) -> String {
            p.hasPrefix("/") ? p : URL(fileURLWithPath: base).appendingPathComponent(p).standardizedFileURL.path
        }
    }
}

/// What the agent admits from the network and how much one request may cost
/// it, set under `limits` in the configuration (deploy/README.md).
///
/// Why: anyone who can reach the port can open TCP connections, and anyone
/// with a certificate can send requests whose answers take minutes and
/// gigabytes. Unauthenticated connections get a small budget of their own
/// with a short handshake deadline, authenticated ones a cap per certificate
/// and in total, and every request's cost is computed and checked before the
/// work starts.
public struct AgentLimits: Sendable, Equatable {
    /// Connections still in the TLS handshake at once; when full, the
    /// oldest pending handshake is dropped to admit a new one.
    public var maxPendingHandshakes = 32
    /// Seconds a client has to complete the TLS handshake.
    public var handshakeTimeoutSeconds = 5.0
    /// Authenticated connections one certificate (SHA-256 fingerprint) may hold at once.
    public var maxConnectionsPerCertificate = 8
    /// Authenticated connections at once, over all certificates.
    public var maxConnections = 64
    /// Largest estimated work of one request, in units of one
    /// multiply-add (jet arithmetic counted per number of its width); see RequestCost.
    public var maxWorkPerRequest = 1e10
    /// Largest answer one request may produce (estimated before the work,
    /// checked again on the encoded line). 16 MiB is the longest line a
    /// coordinator reads by default.
    public var maxAnswerBytes = ProtocolLimits.maxLineBytes
    /// Longest line the audit log stores in full; a longer request is
    /// logged as its length and SHA-256 and refused, a longer answer is
    /// not sent. Hard limit: 512 MiB (SQLite stores at most 1e9 bytes).
    public var maxAuditEntryBytes = 32 * 1024 * 1024

    public init() {}

    /// The configuration keys under `limits`.
    public static let keys = ["max_pending_handshakes", "handshake_timeout_seconds", "max_connections_per_certificate",
                              "max_connections", "max_work_per_request", "max_answer_bytes", "max_audit_entry_bytes"]
    /// Largest `max_audit_entry_bytes` accepted.
    public static let auditEntryHardLimit = 512 * 1024 * 1024

    /// What is wrong with these values, if anything.
    public var problem: String? {
        if maxAuditEntryBytes > Self.auditEntryHardLimit {
            return "\"limits.max_audit_entry_bytes\" must be at most \(Self.auditEntryHardLimit) (512 MiB)"
        }
        if maxAnswerBytes > maxAuditEntryBytes {
            return "\"limits.max_answer_bytes\" (\(maxAnswerBytes)) must not exceed \"limits.max_audit_entry_bytes\" (\(maxAuditEntryBytes)): every answer is logged in full"
        }
        if maxConnectionsPerCertificate > maxConnections {
            return "\"limits.max_connections_per_certificate\" must not exceed \"limits.max_connections\""
        }
        return nil
    }
}

/// A problem in the agent's configuration file.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

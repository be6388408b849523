// `fedmix-agent check`: everything an agent needs before it can serve,
// checked without serving — the configuration, the CA, the certificate (its
// names, its dates, its issuer, its key), the allowed coordinators, every
// dataset, the audit log's directory and the listen address. Each check gives
// one result with what was found and, when something is wrong, what to do.
// Nothing here changes a configured file or keeps a port.

import Foundation
import Protocol
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The outcome of one check of `fedmix-agent check`.
public struct AgentCheckResult: Sendable, Equatable {
    public enum Status: String, Sendable {
        /// Fine.
        case ok
        /// Works now, but needs attention (a certificate expiring soon, a wide key mode).
        case warn
        /// The agent cannot serve correctly: `check` exits non-zero.
        case fail
        /// Not checked because an earlier check failed (its line says why).
        case skip
    }
    /// Stable name of the check: "config", "ca", "certificate", "expiry",
    /// "chain", "key", "allowed_coordinators", "dataset NAME", "variables",
    /// "audit_log", "listen".
    public var check: String
    public var status: Status
    /// What was found.
    public var detail: String
    /// What to do (for warnings and failures).
    public var fix: String?

    public init(check: String, status: Status, detail: String, fix: String? = nil) {
        self.check = check; self.status = status; self.detail = detail; self.fix = fix
    }

    /// The result as one line: `ok   certificate: …`, `FAIL key: … — fix: …`.
    public var line: String {
        let tag: String
        switch status {
        case .ok: tag = "ok  "
        case .warn: tag = "warn"
        case .fail: tag = "FAIL"
        case .skip: tag = "skip"
        }
        var s = "\(tag) \(check): \(detail)"
        if let fix, status == .fail || status == .warn { s += " — fix: \(fix)" }
        return s
    }
}

/// All results of one `fedmix-agent check`.
public struct AgentCheckReport: Sendable {
    public var configPath: String
    public var results: [AgentCheckResult]

    public var failures: [AgentCheckResult] { results.filter { $0.status == .fail } }
    public var warnings: [AgentCheckResult] { results.filter { $0.status == .warn } }
    public var passed: Bool { failures.isEmpty }
    /// The process exit status: 0 when nothing failed (warnings allowed), 1 otherwise.
    public var exitCode: Int32 { passed ? 0 : 1 }
    /// The result of the named check, if it ran.
    public func result(_ check: String) -> AgentCheckResult? { results.first { $0.check == check } }

    public var summary: String {
        let ok = results.filter { $0.status == .ok }.count
        var s = "\(ok) ok, \(warnings.count) warning\(warnings.count == 1 ? "" : "s"), \(failures.count) failed"
        let skipped = results.filter { $0.status == .skip }.count
        if skipped > 0 { s += ", \(skipped) skipped" }
        return s
    }
}

public enum AgentCheck {
    public struct Options: Sendable {
        /// The time certificates are checked at.
        public var now: Date
        /// A certificate (or CA) expiring within this many days is a warning.
        public var expiryWarningDays: Int
        /// The agent is running (a health check): its listen address being in
        /// use is expected, so the listen check passes without binding.
        public var agentRunning: Bool
        public init(now: Date = Date(), expiryWarningDays: Int = 30, agentRunning: Bool = false) {
            self.now = now; self.expiryWarningDays = expiryWarningDays; self.agentRunning = agentRunning
        }
    }

    /// Loads the configuration file and runs every check on it.
    public static func run(configPath: String, options: Options = Options()) -> AgentCheckReport {
        let config: AgentConfig
        do { config = try AgentConfig.load(path: configPath) } catch let e as ConfigError {
            let fix = FileManager.default.fileExists(atPath: configPath)
                ? "correct \(configPath) (every key is described in deploy/README.md)"
                : "give the path of the agent's configuration file with --config FILE"
            return AgentCheckReport(configPath: configPath, results: [
                AgentCheckResult(check: "config", status: .fail, detail: e.description, fix: fix)])
        } catch {
            return AgentCheckReport(configPath: configPath, results: [
                AgentCheckResult(check: "config", status: .fail, detail: "\(configPath): \(error)",
                                 fix: "correct \(configPath)")])
        }
        return AgentCheckReport(configPath: configPath, results: run(config: config, options: options))
    }

    /// Runs every check on a loaded configuration (the first result is "config: ok").
    public static func run(config: AgentConfig, options: Options = Options()) -> [AgentCheckResult] {
        var results: [AgentCheckResult] = []
        let where_ = config.path ?? "configuration"
        results.append(AgentCheckResult(check: "config", status: .ok,
            detail: "\(where_): site \"\(config.site)\", listen \(listenText(config)), \(config.datasets.count) dataset\(config.datasets.count == 1 ? "" : "s")"))

        let ca = checkCA(config, options)
        results.append(ca)
        let (certificate, expiry, info) = checkCertificate(config, options)
        results.append(certificate)
        results.append(expiry)
        results.append(checkChain(config, certificateLoaded: info != nil, caLoaded: ca.status != .fail))
        results.append(checkKey(config, certificateLoaded: info != nil, caLoaded: ca.status != .fail))
        results.append(checkAllowedCoordinators(config, agentNames: info.map(identityNames) ?? []))
        let (datasetResults, columns) = checkDatasets(config)
        results += datasetResults
        if let columns { results.append(checkVariables(config, columns: columns)) }
        results.append(checkAuditLog(config))
        results.append(checkListen(config, options))
        return results
    }

    // MARK: - TLS

    static func checkCA(_ config: AgentConfig, _ options: Options) -> AgentCheckResult {
        let path = config.tls.ca
        let cas: [CertificateInfo]
        do { cas = try Certificates.inspectAll(path: path) } catch {
            return AgentCheckResult(check: "ca", status: .fail, detail: "\(describe(error, role: "CA certificate"))",
                fix: "set tls.ca to the deployment CA's ca.pem (the CA holder gives it out; it is public)")
        }
        if let leaf = cas.first(where: { !$0.isCA }) {
            return AgentCheckResult(check: "ca", status: .fail,
                detail: "\(path) holds \(leaf.subject), which is not a CA certificate (basicConstraints CA:FALSE)",
                fix: "set tls.ca to the deployment CA's ca.pem, not a site or coordinator certificate")
        }
        var expired: [String] = [], soon: [String] = [], listed: [String] = []
        for c in cas {
            let days = daysLeft(c, options.now)
            listed.append("\(c.subject) until \(day(c.notAfter))")
            if options.now > c.notAfter { expired.append("\(c.subject) expired on \(day(c.notAfter))") }
            else if options.now < c.notBefore { expired.append("\(c.subject) is not valid before \(day(c.notBefore)) (check the clock)") }
            else if days < options.expiryWarningDays { soon.append("\(c.subject) expires in \(days) day\(days == 1 ? "" : "s") (\(day(c.notAfter)))") }
        }
        let trusts = "\(path): trusts \(listed.joined(separator: "; "))"
        if !expired.isEmpty && expired.count == cas.count {
            return AgentCheckResult(check: "ca", status: .fail, detail: "\(path): \(expired.joined(separator: "; "))",
                fix: "the deployment needs a new CA: the CA holder creates it (fedmix certs init), reissues every certificate and hands out the new ca.pem")
        }
        if !expired.isEmpty || !soon.isEmpty {
            return AgentCheckResult(check: "ca", status: .warn, detail: "\(trusts); \((expired + soon).joined(separator: "; "))",
                fix: "ask the CA holder for the replacement CA; put old and new ca.pem in one file during the change-over, then remove the old one and reload (deploy/README.md, Rotate)")
        }
        return AgentCheckResult(check: "ca", status: .ok, detail: trusts)
    }

    /// The "certificate" and "expiry" results, and the certificate when it could be read.
    static func checkCertificate(_ config: AgentConfig, _ options: Options)
        -> (AgentCheckResult, AgentCheckResult, CertificateInfo?) {
        let path = config.tls.certificate
        let info: CertificateInfo
        do { info = try Certificates.inspect(certificatePath: path) } catch {
            return (AgentCheckResult(check: "certificate", status: .fail, detail: describe(error, role: "certificate"),
                        fix: "set tls.certificate to this agent's cert.pem; the CA holder issues it with: fedmix certs issue --ca CA_DIR --name HOST_NAME --out DIR"),
                    AgentCheckResult(check: "expiry", status: .skip, detail: "not checked: the certificate could not be read"),
                    nil)
        }
        let certificate: AgentCheckResult
        let names = identityNames(info)
        if info.isCA {
            certificate = AgentCheckResult(check: "certificate", status: .fail,
                detail: "\(path) is a CA certificate (\(info.subject)), not this agent's certificate",
                fix: "set tls.certificate to the agent's cert.pem (tls.ca takes the CA's ca.pem)")
        } else if names.isEmpty {
            certificate = AgentCheckResult(check: "certificate", status: .fail,
                detail: "\(path) (\(info.subject)) has no DNS name and no common name, so no coordinator can verify it",
                fix: "reissue it with the agent's host name: fedmix certs issue --ca CA_DIR --name HOST_NAME --out DIR")
        } else {
            let ips = info.ipAddresses.isEmpty ? "" : ", IP \(info.ipAddresses.joined(separator: ", "))"
            certificate = AgentCheckResult(check: "certificate", status: .ok,
                detail: "\(path): \(info.subject), names \(names.joined(separator: ", "))\(ips) (coordinators' sites files must use one as the address host or server_name); issuer \(info.issuer); SHA-256 \(info.fingerprintSHA256)")
        }
        let days = daysLeft(info, options.now)
        let expiry: AgentCheckResult
        let renew = "the CA holder issues a new certificate (fedmix certs issue); replace cert.pem and key.pem and reload the agent (systemctl reload fedmix-agent, or kill -HUP)"
        if options.now > info.notAfter {
            expiry = AgentCheckResult(check: "expiry", status: .fail,
                detail: "the certificate expired on \(day(info.notAfter)); coordinators will refuse it", fix: renew)
        } else if options.now < info.notBefore {
            expiry = AgentCheckResult(check: "expiry", status: .fail,
                detail: "the certificate is not valid before \(day(info.notBefore))",
                fix: "check this machine's clock (timedatectl); if the clock is right, wait or reissue the certificate")
        } else if days < options.expiryWarningDays {
            expiry = AgentCheckResult(check: "expiry", status: .warn,
                detail: "the certificate expires in \(days) day\(days == 1 ? "" : "s") (\(day(info.notAfter)))",
                fix: "rotate it before then: " + renew)
        } else {
            expiry = AgentCheckResult(check: "expiry", status: .ok,
                detail: "valid until \(day(info.notAfter)) (\(days) days)")
        }
        return (certificate, expiry, info)
    }

    static func checkChain(_ config: AgentConfig, certificateLoaded: Bool, caLoaded: Bool) -> AgentCheckResult {
        guard certificateLoaded, caLoaded else {
            return AgentCheckResult(check: "chain", status: .skip, detail: "not checked: the certificate or the CA could not be used (see above)")
        }
        do {
            switch try Certificates.verifyChain(certificatePath: config.tls.certificate, caPath: config.tls.ca) {
            case .trusted(let issuer):
                return AgentCheckResult(check: "chain", status: .ok, detail: "the certificate was issued by \(issuer) (in \(config.tls.ca))")
            case .untrusted(let reason):
                return AgentCheckResult(check: "chain", status: .fail,
                    detail: "verifying \(config.tls.certificate) against the CA in \(config.tls.ca) (as a coordinator will) failed: \(reason)",
                    fix: "use a certificate issued by the deployment CA (fedmix certs issue --ca CA_DIR ...), or set tls.ca to the CA that issued it")
            }
        } catch {
            return AgentCheckResult(check: "chain", status: .fail, detail: "\(error)", fix: "check tls.certificate and tls.ca")
        }
    }

    static func checkKey(_ config: AgentConfig, certificateLoaded: Bool, caLoaded: Bool) -> AgentCheckResult {
        let identity = TLSIdentity(certificatePath: config.tls.certificate, keyPath: config.tls.key, caPath: config.tls.ca)
        do {
            _ = try TLSContext.server(identity: identity)
        } catch let e as TLSError {
            switch e {
            case .keyMismatch(let certificatePath, let keyPath):
                return AgentCheckResult(check: "key", status: .fail,
                    detail: "private key \(keyPath) does not match certificate \(certificatePath)",
                    fix: "set tls.key to the key.pem written together with this cert.pem (fedmix certs issue writes both; when rotating, replace both before reloading)")
            case .fileMissing(let role, _), .fileUnreadable(let role, _, _), .notPEM(let role, _), .invalidPEM(let role, _, _):
                if role == "private key" {
                    return AgentCheckResult(check: "key", status: .fail, detail: e.description,
                        fix: "set tls.key to this agent's key.pem (unencrypted PEM, mode 0600, readable by the agent's user)")
                }
                if !certificateLoaded || !caLoaded {
                    return AgentCheckResult(check: "key", status: .skip, detail: "not checked: the certificate or the CA could not be used (see above)")
                }
                return AgentCheckResult(check: "key", status: .fail, detail: e.description, fix: "check tls.certificate and tls.ca")
            default:
                return AgentCheckResult(check: "key", status: .fail, detail: e.description, fix: "check tls.certificate, tls.key and tls.ca")
            }
        } catch {
            return AgentCheckResult(check: "key", status: .fail, detail: "\(error)", fix: "check tls.certificate, tls.key and tls.ca")
        }
        var st = stat()
        if stat(config.tls.key, &st) == 0, st.st_mode & 0o077 != 0 {
            return AgentCheckResult(check: "key", status: .warn,
                detail: "\(config.tls.key) matches the certificate but other users may read it (mode \(String(st.st_mode & 0o777, radix: 8)))",
                fix: "chmod 600 \(config.tls.key) (owned by the agent's user)")
        }
        return AgentCheckResult(check: "key", status: .ok, detail: "\(config.tls.key) matches the certificate and is private to its owner")
    }

    static func checkAllowedCoordinators(_ config: AgentConfig, agentNames: [String]) -> AgentCheckResult {
        let names = config.tls.allowedCoordinators
        if let bad = names.first(where: { $0.isEmpty || $0.contains(where: { $0 == "," || $0.isWhitespace }) }) {
            return AgentCheckResult(check: "allowed_coordinators", status: .fail,
                detail: "\"\(bad)\" is not a certificate name",
                fix: "list the coordinators' certificate names (as given to fedmix certs issue --name), e.g. [\"coordinator\"]")
        }
        if names.isEmpty {
            return AgentCheckResult(check: "allowed_coordinators", status: .warn,
                detail: "empty: any certificate the CA issued may connect, including other sites' agents",
                fix: "list the coordinators' certificate names in tls.allowed_coordinators, e.g. [\"coordinator\"]")
        }
        let own = Set(agentNames.map { $0.lowercased() })
        if let clash = names.first(where: { own.contains($0.lowercased()) }) {
            return AgentCheckResult(check: "allowed_coordinators", status: .warn,
                detail: "\"\(clash)\" is this agent's own certificate name",
                fix: "list only the coordinators' certificate names in tls.allowed_coordinators")
        }
        return AgentCheckResult(check: "allowed_coordinators", status: .ok,
                                detail: "only \(names.joined(separator: ", ")) may connect (certificates from the CA with these names)")
    }

    // MARK: - Data

    /// One result per dataset, and every column name when all datasets loaded.
    static func checkDatasets(_ config: AgentConfig) -> ([AgentCheckResult], Set<String>?) {
        let service = SiteService(config: config)
        var results: [AgentCheckResult] = []
        var columns = Set<String>()
        var allLoaded = true
        for name in config.datasets.keys.sorted() {
            let check = "dataset \(name)"
            let source = sourceText(config.datasets[name]!)
            do {
                let table = try service.loadForCheck(name)
                columns.formUnion(table.columnNames)
                let numeric = table.columns.filter(\.isNumeric).count
                let text = "\(source): \(table.rowCount) rows, \(table.columns.count) columns (\(numeric) numeric, \(table.columns.count - numeric) text), all readable"
                if table.rowCount < config.disclosure.minRows {
                    results.append(AgentCheckResult(check: check, status: .warn,
                        detail: text + "; fewer rows than disclosure.min_rows (\(config.disclosure.minRows)), so every fit will be refused",
                        fix: "check that this is the right data, or lower disclosure.min_rows if the data protection officer agrees"))
                } else {
                    results.append(AgentCheckResult(check: check, status: .ok, detail: text))
                }
                for c in table.mostlyNumericTextColumns {
                    results.append(AgentCheckResult(check: "\(check) column \(c.name)", status: .warn,
                        detail: "\(source): column \"\(c.name)\" is mostly numbers, but \(c.count) cell(s) are not (the first in data row \(c.firstRow + 1), line \(c.firstRow + 2) of a CSV file with a header), so the whole column is read as text: models cannot use it as a number",
                        fix: "correct those cells (a number such as 3.5, or empty / NA for a missing value) or declare the column's type in datasets.\(name).types"))
                }
            } catch let e as DataSourceError {
                allLoaded = false
                results.append(AgentCheckResult(check: check, status: .fail, detail: e.description, fix: fix(for: e, dataset: name)))
            } catch let e as ModelFrameError {
                allLoaded = false
                let fix: String
                if case .siteColumnMismatch(let column, _, _) = e {
                    fix = "give this site's rows only, or set site_column to the column naming the site (null if there is none; now \"\(column)\")"
                } else { fix = "correct the dataset" }
                results.append(AgentCheckResult(check: check, status: .fail,
                    detail: "\(source): " + e.description(minCell: config.disclosure.minCell), fix: fix))
            } catch {
                allLoaded = false
                results.append(AgentCheckResult(check: check, status: .fail, detail: "\(source): \(error)",
                                                fix: "check datasets.\(name) in the configuration"))
            }
        }
        return (results, allLoaded ? columns : nil)
    }

    static func fix(for e: DataSourceError, dataset: String) -> String {
        switch e {
        case .fileNotFound:
            return "correct the path in datasets.\(dataset) (relative paths are resolved against the configuration file's folder)"
        case .unreadable:
            return "let the agent's user read the file and its folders (e.g. chgrp fedmix FILE; chmod g+r FILE); under systemd, data under /home is hidden (ProtectHome=)"
        case .emptyFile, .emptyColumnName, .duplicateColumnName, .wrongFieldCount, .unterminatedQuote,
             .quoteInUnquotedField, .textAfterClosingQuote, .invalidUTF8:
            return "correct the CSV export at the line named (one header row, the same number of fields on every line, UTF-8)"
        case .notNumeric, .sqliteNotNumeric:
            return "correct the value, or declare the column \"text\" in datasets.\(dataset).types"
        case .unknownColumn, .sqliteUnknownColumn:
            return "remove the column from datasets.\(dataset).types or correct its name"
        case .sqliteOpenFailed:
            return "give the path of an SQLite database file readable by the agent's user"
        case .noSuchTable:
            return "correct datasets.\(dataset).table (sqlite3 FILE .tables lists them)"
        case .sqlite, .notSingleStatement, .notReadOnly, .noResultColumns, .badResultColumnName:
            return "correct datasets.\(dataset).query: one read-only SELECT with distinct, named result columns"
        case .blobColumn:
            return "leave the BLOB column out of datasets.\(dataset).query"
        case .sqliteInvalidUTF8:
            return "store the text as UTF-8, or leave the column out of the query"
        }
    }

    static func checkVariables(_ config: AgentConfig, columns: Set<String>) -> AgentCheckResult {
        var unknown: [String] = []
        for v in (config.allowedVariables ?? []) + config.deniedVariables where !columns.contains(v) && !unknown.contains(v) {
            unknown.append(v)
        }
        if !unknown.isEmpty {
            return AgentCheckResult(check: "variables", status: .warn,
                detail: "allowed_variables/denied_variables name \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")), which no dataset has",
                fix: "check the spelling against the datasets' column names")
        }
        let allowed = config.allowedVariables.map { "\($0.count) allowed" } ?? "all columns allowed"
        return AgentCheckResult(check: "variables", status: .ok,
                                detail: "\(allowed), \(config.deniedVariables.count) denied; every name is a column")
    }

    // MARK: - Files and network

    static func checkAuditLog(_ config: AgentConfig) -> AgentCheckResult {
        guard let path = config.auditLog else {
            return AgentCheckResult(check: "audit_log", status: .warn, detail: "no audit_log is configured: requests are not recorded",
                                    fix: "set \"audit_log\": \"/var/lib/fedmix/audit.db\" (a folder the agent's user may write)")
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var st = stat()
        if stat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR {
                return AgentCheckResult(check: "audit_log", status: .fail, detail: "\(path) is a directory",
                                        fix: "set audit_log to a file path inside it, e.g. \(path)/audit.log")
            }
            let fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
            if fd < 0 { return auditFailure(errno, path: path, directory: directory) }
            _ = Glibc.close(fd)
            // The very check serve makes before it adds to the log (AuditLog.checkBeforeServing):
            // a log serve refuses fails here, so an ExecStartPre check stops a restart loop.
            do {
                guard let v = try AuditLog.checkBeforeServing(path: path) else {
                    return AgentCheckResult(check: "audit_log", status: .ok, detail: "\(path) is an empty database: the agent will start a new log in it")
                }
                let warnings = v.warnings.isEmpty ? "" : "; " + v.warnings.joined(separator: "; ")
                if !v.warnings.isEmpty {
                    return AgentCheckResult(check: "audit_log", status: .warn, detail: "\(path): \(v.summary)\(warnings)",
                        fix: "find out who changed the database (the agent never removes its triggers); the agent restores them when it starts")
                }
                return AgentCheckResult(check: "audit_log", status: .ok, detail: "\(path): \(v.summary), and it can be appended to")
            } catch let e as AuditStoreError {
                return AgentCheckResult(check: "audit_log", status: .fail, detail: "\(e.path): \(e.message)",
                    fix: e.fix ?? "point audit_log at the agent's own audit database (a new path starts a new log)")
            } catch {
                return AgentCheckResult(check: "audit_log", status: .fail, detail: "\(path) cannot be read as an audit log: \(error)",
                                        fix: "point audit_log at the agent's own audit database (a new path starts a new log)")
            }
        }
        // Create it (as the agent would on first use) and remove it again.
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        if fd < 0 { return auditFailure(errno, path: path, directory: directory) }
        _ = Glibc.close(fd)
        unlink(path)
        return AgentCheckResult(check: "audit_log", status: .ok, detail: "\(path) can be created in \(directory)")
    }

    static func auditFailure(_ code: Int32, path: String, directory: String) -> AgentCheckResult {
        let why = String(cString: strerror(code))
        let fix: String
        switch code {
        case ENOENT where FileManager.default.fileExists(atPath: directory):
            fix = "\(directory) does not take new files (a special file system?): put audit_log in a folder such as /var/lib/fedmix"
        case ENOENT:
            fix = "create the folder: install -d -o fedmix -g fedmix -m 0750 \(directory)"
        case EACCES, EPERM:
            fix = "let the agent's user write \(directory) (chown fedmix \(directory)); under systemd also list it in ReadWritePaths="
        case EROFS:
            fix = "\(directory) is read-only for this process: under systemd add it to ReadWritePaths= (ProtectSystem=strict makes the rest read-only); in a container mount a writable volume there"
        case ENOTDIR:
            fix = "a part of \(directory) is a file, not a folder: correct audit_log"
        default:
            fix = "correct audit_log, or the folder's permissions"
        }
        return AgentCheckResult(check: "audit_log", status: .fail, detail: "cannot open \(path) for appending: \(why)", fix: fix)
    }

    static func checkListen(_ config: AgentConfig, _ options: Options) -> AgentCheckResult {
        let address = listenText(config)
        switch ListenProbe.tryBind(host: config.host, port: config.port) {
        case .bindable(let port):
            let chosen = config.port == 0 ? " (port 0: the system picks one, here \(port))" : ""
            return AgentCheckResult(check: "listen", status: .ok, detail: "\(address) can be bound\(chosen); released again")
        case .failed(let code, let reason) where code == EADDRINUSE:
            if options.agentRunning {
                return AgentCheckResult(check: "listen", status: .ok, detail: "\(address) is in use, as expected while the agent runs (--running)")
            }
            return AgentCheckResult(check: "listen", status: .fail, detail: "cannot bind \(address): \(reason)",
                fix: "another process holds port \(config.port) (ss -ltnp 'sport = :\(config.port)' shows which); if it is this agent, run the check with --running, otherwise choose another port")
        case .failed(let code, let reason) where code == EACCES || code == EPERM:
            return AgentCheckResult(check: "listen", status: .fail, detail: "cannot bind \(address): \(reason)",
                fix: "ports below 1024 need privileges the agent should not have: listen on 7443 (and open that port in the firewall)")
        case .failed(let code, let reason) where code == EADDRNOTAVAIL:
            return AgentCheckResult(check: "listen", status: .fail, detail: "cannot bind \(address): \(reason)",
                fix: "\(config.host) is not an address of this machine: use 0.0.0.0 (all IPv4 addresses), :: or one of its addresses (ip -br addr)")
        case .failed(_, let reason):
            return AgentCheckResult(check: "listen", status: .fail, detail: "cannot bind \(address): \(reason)",
                                    fix: "correct \"listen\" (HOST:PORT)")
        case .unresolvable(let reason):
            return AgentCheckResult(check: "listen", status: .fail, detail: "cannot resolve \(config.host): \(reason)",
                                    fix: "use an IP address in \"listen\", e.g. \"0.0.0.0:\(config.port)\"")
        }
    }

    // MARK: - Helpers

    static func listenText(_ c: AgentConfig) -> String {
        c.host.contains(":") ? "[\(c.host)]:\(c.port)" : "\(c.host):\(c.port)"
    }

    static func sourceText(_ d: AgentConfig.Dataset) -> String {
        switch d {
        case .csv(let p, _): return "csv \(p)"
        case .sqliteTable(let p, let t, _): return "sqlite \(p) table \(t)"
        case .sqliteQuery(let p, _, _): return "sqlite \(p) query"
        }
    }

    /// The names a coordinator can verify: DNS names, or the common name when there are none.
    static func identityNames(_ info: CertificateInfo) -> [String] {
        if !info.dnsNames.isEmpty { return info.dnsNames }
        return info.commonName.map { [$0] } ?? []
    }

    /// Whole days until notAfter (negative once expired).
    static func daysLeft(_ info: CertificateInfo, _ now: Date) -> Int {
        Int((info.notAfter.timeIntervalSince(now) / 86400).rounded(.down))
    }

    static func day(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
        return f.string(from: d)
    }

    static func describe(_ error: Error, role: String) -> String {
        if let e = error as? CertificateError {
            switch e {
            case .fileMissing(_, let path): return "\(role) file \(path) does not exist"
            case .fileUnreadable(_, let path, let reason): return "\(role) file \(path) cannot be read: \(reason)"
            case .notPEM(_, let path): return "\(role) file \(path) is not PEM (no \"-----BEGIN\" line): give the PEM file, not DER"
            default: return e.description
            }
        }
        return "\(error)"
    }
}

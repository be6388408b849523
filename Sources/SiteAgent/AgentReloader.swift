// Certificate rotation without downtime: on SIGHUP the agent reads its
// configuration file again and swaps the listener's TLS context for one made
// from the new certificate, key, CA file and allowed coordinators.
// Connections already open keep the context they were accepted with, so a
// fit in flight finishes; new connections are verified against the new
// files. A reload that fails (unreadable configuration, a key that does not
// match, an expired certificate) keeps the old context and logs why.

import Dispatch
import Foundation
import Protocol
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

public final class AgentReloader: Sendable {
    /// What one reload did.
    public enum Outcome: Sendable, Equatable {
        /// The new context is in use. `restartNeeded` names changed settings
        /// that only a restart applies (datasets, listen, disclosure, ...).
        case reloaded(certificateFingerprint: String, allowedCoordinators: [String], restartNeeded: [String])
        /// Nothing changed; `reason` says what was wrong with the new files.
        case failed(reason: String)
    }

    public let configPath: String
    private let server: AgentServer
    /// The configuration the running context was made from.
    private let current: Mutex<AgentConfig>

    /// `config` is what the server runs with; reloads read `configPath`
    /// (default: the file `config` was loaded from).
    public init(server: AgentServer, config: AgentConfig, configPath: String? = nil) {
        self.server = server
        self.configPath = URL(fileURLWithPath: configPath ?? config.path ?? "agent.json").standardizedFileURL.path
        self.current = Mutex(config)
    }

    /// Reads the configuration file again and, if its TLS files make a good
    /// server context, swaps it in. Never throws: a failure keeps the old
    /// context. Reloads are serialized.
    @discardableResult
    public func reload(now: Date = Date()) -> Outcome {
        let outcome: Outcome = current.withLock { running in
            let config: AgentConfig
            do { config = try AgentConfig.load(path: configPath) } catch {
                return .failed(reason: "configuration: \(error)")
            }
            let identity = TLSIdentity(certificatePath: config.tls.certificate, keyPath: config.tls.key, caPath: config.tls.ca)
            let context: TLSContext
            let info: CertificateInfo
            do {
                context = try TLSContext.server(identity: identity, allowedPeerNames: config.tls.allowedCoordinators)
                info = try Certificates.inspect(certificatePath: config.tls.certificate)
            } catch {
                return .failed(reason: "\(error)")
            }
            if now > info.notAfter {
                return .failed(reason: "the new certificate \(config.tls.certificate) (\(info.subject)) expired on \(AgentCheck.day(info.notAfter))")
            }
            if now < info.notBefore {
                return .failed(reason: "the new certificate \(config.tls.certificate) (\(info.subject)) is not valid before \(AgentCheck.day(info.notBefore)); check the clock")
            }
            server.replaceContext(context)
            let restart = Self.restartNeeded(running, config)
            var applied = running
            applied.tls = config.tls
            running = applied
            return .reloaded(certificateFingerprint: context.certificateFingerprintSHA256,
                             allowedCoordinators: config.tls.allowedCoordinators, restartNeeded: restart)
        }
        switch outcome {
        case .reloaded(let fingerprint, let allowed, let restart):
            var fields = ["config": configPath, "certificate_sha256": fingerprint,
                          "allowed_coordinators": allowed.isEmpty ? "(any the CA issued)" : allowed.joined(separator: ",")]
            if !restart.isEmpty { fields["restart_needed_for"] = restart.joined(separator: ",") }
            server.log.event("reloaded", fields)
        case .failed(let reason):
            server.log.event("reload_failed", ["config": configPath, "reason": reason, "kept": "the previous certificate, key, CA and allowed coordinators"])
        }
        return outcome
    }

    /// Settings that differ between two configurations but are not applied by a reload.
    static func restartNeeded(_ a: AgentConfig, _ b: AgentConfig) -> [String] {
        var out: [String] = []
        if a.site != b.site { out.append("site") }
        if a.host != b.host || a.port != b.port { out.append("listen") }
        if a.datasets != b.datasets { out.append("datasets") }
        if a.siteColumn != b.siteColumn { out.append("site_column") }
        if a.allowedVariables != b.allowedVariables { out.append("allowed_variables") }
        if a.deniedVariables != b.deniedVariables { out.append("denied_variables") }
        if a.auditLog != b.auditLog { out.append("audit_log") }
        if a.disclosure != b.disclosure { out.append("disclosure") }
        if a.sessionTimeoutSeconds != b.sessionTimeoutSeconds { out.append("session_timeout_seconds") }
        if a.maxLineBytes != b.maxLineBytes { out.append("max_line_bytes") }
        if a.limits != b.limits { out.append("limits") }
        return out
    }

    /// Reloads on every SIGHUP from now until the process ends.
    public func reloadOnSIGHUP() {
        SignalWatcher.handle(SIGHUP) { [self] in
            server.log.event("signal", ["signal": "HUP"])
            reload()
        }
    }
}

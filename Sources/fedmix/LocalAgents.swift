import Foundation
import Coordinator
import Protocol
import SiteAgent

/// Real site agents on loopback: a throwaway CA, one certificate per agent
/// and one for the coordinator, mutual TLS. Used by `fedmix local`, `demo`
/// and `bench`; closing the federation stops the agents and removes the
/// certificates (and audit logs).
final class LocalAgents {
    /// The agents' sites file (throwaway certificates).
    private var sitesFile: SitesFile!
    private var cleanUpHook: (@Sendable () -> Void)?
    private var connected: Federation?
    /// The federation over the agents (connected by init unless `startOnly`).
    var federation: Federation { connected! }
    /// Where start-up time went (seconds, wall): making the CA and every
    /// certificate, starting the agents (TLS contexts, listening sockets),
    /// and connecting (TCP and mutual-TLS handshakes, all sites at once).
    private(set) var startup = (certificates: 0.0, agents: 0.0, connections: 0.0)

    /// One agent per CSV file; the site is the file's stem.
    convenience init(files: [URL], policy: DisclosurePolicy = .off) throws {
        try self.init(services: files.map { url in
            SiteService(site: url.deletingPathExtension().lastPathComponent,
                        datasets: ["data": .csv(path: url.path, types: [:])], policy: policy)
        })
    }

    /// One agent per service. `auditDirectory`: each agent records every line
    /// in an audit log there.
    /// `startOnly`: start the agents but do not connect (call `connect()`).
    init(services: [SiteService], auditDirectory: String? = nil, startOnly: Bool = false) throws {
        let directory = NSTemporaryDirectory() + "fedmix-local-\(getpid())-\(UUID().uuidString.prefix(8))"
        let ca = directory + "/ca"
        var servers: [AgentServer] = []
        @Sendable func cleanUp(_ servers: [AgentServer]) {
            servers.forEach { $0.stop(); $0.auditLog?.close() }
            if let a = auditDirectory { try? FileManager.default.removeItem(atPath: a) }
            try? FileManager.default.removeItem(atPath: directory)
        }
        do {
            var clock = monotonicSeconds()
            func lap() -> Double { let t = monotonicSeconds(); defer { clock = t }; return t - clock }
            try Certificates.createAuthority(directory: ca, commonName: "fedmix local CA (throwaway)", days: 1)
            try Certificates.issue(caDirectory: ca, name: "coordinator", outDirectory: directory + "/coordinator", days: 1)
            if let a = auditDirectory { try FileManager.default.createDirectory(atPath: a, withIntermediateDirectories: true) }
            // The agents' certificates on every core (each is a key, a signature and two files).
            _ = try FanOutPool.map(services.count, width: ProcessInfo.processInfo.activeProcessorCount, name: "certificates") { i in
                try Certificates.issue(caDirectory: ca, name: "agent-\(i)", outDirectory: directory + "/agent-\(i)", days: 1)
            }
            startup.certificates += lap()
            var sites: [SitesFile.Site] = []
            for (i, service) in services.enumerated() {
                let name = "agent-\(i)"
                let context = try TLSContext.server(identity: TLSIdentity(directory: directory + "/" + name, caPath: ca + "/ca.pem"),
                                                    allowedPeerNames: ["coordinator"])
                let audit: AuditLog? = try auditDirectory.map { try AuditLog.open(path: $0 + "/\(name).db") }
                let server = try AgentServer(service: service, host: "127.0.0.1", port: 0, context: context, audit: audit,
                                             log: AgentLog(enabled: ProcessInfo.processInfo.environment["FEDMIX_AGENT_LOG"] != nil))
                server.start()
                servers.append(server)
                sites.append(.init(name: service.site, host: "127.0.0.1", port: server.port, serverName: name))
                startup.agents += lap()
            }
            sitesFile = SitesFile(identity: TLSIdentity(directory: directory + "/coordinator", caPath: ca + "/ca.pem"), sites: sites)
            let running = servers
            cleanUpHook = { cleanUp(running) }
            if !startOnly {
                let f = try sitesFile.connect()
                f.onClose = cleanUpHook
                connected = f
                startup.connections = lap()
            }
        } catch {
            cleanUp(servers)
            throw error
        }
    }

    /// Writes a sites file for the agents (absolute certificate paths), so
    /// that another process can reach them.
    func writeSitesFile(to path: String) throws {
        let json: [String: Any] = [
            "tls": ["certificate": sitesFile.identity.certificatePath, "key": sitesFile.identity.keyPath, "ca": sitesFile.identity.caPath],
            "sites": sitesFile.sites.map { ["name": $0.name, "address": "\($0.host):\($0.port)", "server_name": $0.serverName] },
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
    }

    /// Stops the agents and removes their certificates (when `connect()` was never called).
    func stop() { cleanUpHook?(); cleanUpHook = nil }

    /// Connects to the agents; closing the federation stops them.
    func connect() throws -> Federation {
        do {
            let f = try sitesFile.connect()
            f.onClose = cleanUpHook
            connected = f
            return f
        } catch {
            cleanUpHook?()
            throw error
        }
    }
}

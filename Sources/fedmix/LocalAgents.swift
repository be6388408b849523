import Foundation
import Coordinator
import Protocol
import SiteAgent

/// Real site agents on loopback for local files: a throwaway CA, one
/// certificate per agent and one for the coordinator, mutual TLS.
final class LocalAgents {
    let directory: String
    let servers: [AgentServer]
    let federation: Federation

    init(files: [URL], policy: DisclosurePolicy = .off) throws {
        directory = NSTemporaryDirectory() + "fedmix-local-\(getpid())-\(UUID().uuidString.prefix(8))"
        let ca = directory + "/ca"
        try Certificates.createAuthority(directory: ca, commonName: "fedmix local CA (throwaway)", days: 1)
        try Certificates.issue(caDirectory: ca, name: "coordinator", outDirectory: directory + "/coordinator", days: 1)
        var servers: [AgentServer] = []
        var sites: [SitesFile.Site] = []
        for (i, url) in files.enumerated() {
            let name = "agent-\(i)"
            try Certificates.issue(caDirectory: ca, name: name, outDirectory: directory + "/" + name, days: 1)
            let site = url.deletingPathExtension().lastPathComponent
            let context = try TLSContext.server(identity: TLSIdentity(directory: directory + "/" + name, caPath: ca + "/ca.pem"),
                                                allowedPeerNames: ["coordinator"])
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: policy)
            let server = try AgentServer(service: service, host: "127.0.0.1", port: 0, context: context,
                                         log: AgentLog(enabled: ProcessInfo.processInfo.environment["FEDMIX_AGENT_LOG"] != nil))
            server.start()
            servers.append(server)
            sites.append(.init(name: site, host: "127.0.0.1", port: server.port, serverName: name))
        }
        self.servers = servers
        let sitesFile = SitesFile(identity: TLSIdentity(directory: directory + "/coordinator", caPath: ca + "/ca.pem"), sites: sites)
        let fed: Federation
        do { fed = try sitesFile.connect() } catch { servers.forEach { $0.stop() }; throw error }
        let dir = directory
        let running = servers
        federation = fed
        federation.onClose = {
            running.forEach { $0.stop() }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

import Foundation
import Dispatch
import SiteAgent
import Protocol

/// `fedmix-agent`: the site agent's command line.
enum AgentCommand {
    static let usage = """
    fedmix-agent \(fedmixAgentVersion): answers a fedmix coordinator with aggregates of this site's data

    Usage:
      fedmix-agent serve --config FILE     run the agent (SIGTERM stops it cleanly; SIGHUP reloads its certificates)
      fedmix-agent check --config FILE [--running]   check the configuration, certificates, data, audit log and port
      fedmix-agent audit list|show ID|verify|export|prune --config FILE
                                           read and verify the audit log (fedmix-agent audit help)
      fedmix-agent --version
    """

    static func run(_ args: [String]) -> Int32 {
        guard let command = args.first else { print(usage); return 0 }
        do {
            switch command {
            case "--version", "version": print("fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion))"); return 0
            case "help", "--help", "-h": print(usage); return 0
            case "serve": return try serve(Array(args.dropFirst()))
            case "check": return try CheckCommand.run(Array(args.dropFirst()))
            case "audit": return AuditCommand.run(Array(args.dropFirst()))
            default:
                FileHandle.standardError.write(Data("fedmix-agent: unknown command \"\(command)\"\n\(usage)\n".utf8))
                return 2
            }
        } catch {
            FileHandle.standardError.write(Data("fedmix-agent: error: \(error)\n".utf8))
            return 1
        }
    }

    static func configPath(_ args: [String]) throws -> String {
        guard let i = args.firstIndex(of: "--config"), i + 1 < args.count else {
            throw ConfigError(path: "(command line)", message: "--config FILE is required")
        }
        return args[i + 1]
    }

    static func serve(_ args: [String]) throws -> Int32 {
        let config = try AgentConfig.load(path: try configPath(args))
        let server = try AgentServer(config: config)
        AgentReloader(server: server, config: config).reloadOnSIGHUP()
        // SIGTERM / SIGINT: stop accepting, let the accept loop end.
        signal(SIGTERM, SIG_IGN); signal(SIGINT, SIG_IGN)
        let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { server.log.event("signal", ["signal": sig == SIGTERM ? "TERM" : "INT"]); server.stop() }
            s.resume()
            return s
        }
        if let log = server.auditLog {
            server.log.event("audit_log", ["path": log.path, "entries": String(log.count),
                                           "retention_days": config.auditRetentionDays.map(String.init) ?? "none"])
        } else {
            server.log.event("audit_log_disabled", ["warning": "no \"audit_log\" in the configuration: messages are not recorded"])
        }
        FileHandle.standardOutput.write(Data("fedmix-agent: site \(config.site) listening on \(config.host):\(server.port)\n".utf8))
        // Keeps the signal sources alive while serving (`_ = sources` after
        // serve() let optimized builds release them early: SIGTERM was lost).
        withExtendedLifetime(sources) { server.serve() }
        server.auditLog?.close()
        return 0
    }
}

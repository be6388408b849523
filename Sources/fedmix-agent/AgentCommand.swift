import Foundation
import Dispatch
import CommandKit
import SiteAgent
import Protocol

/// `fedmix-agent`: the site agent's command line. The usage, each command's
/// --help and the usage errors are generated from the declarations (CommandKit).
enum AgentCommand {
    static let config = Option<String>("config", value: "FILE", help: "the agent's configuration (JSON; see deploy/README.md)", required: true)

    static let program = Program(
        name: "fedmix-agent",
        title: "fedmix-agent \(fedmixAgentVersion): answers a fedmix coordinator with aggregates of this site's data",
        version: "fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion))",
        entries: [
            .command(Command("serve", abstract: "Runs the agent (SIGTERM stops it cleanly; SIGHUP reloads its certificates).",
                             options: [config], run: serve)),
            .command(CheckCommand.command),
            .group(AuditCommand.group),
        ])

    static func run(_ args: [String]) -> Int32 { program.run(args) }

    static func serve(_ a: ParsedArguments) throws -> Int32 {
        let config = try AgentConfig.load(path: try a.require(config))
        let server = try AgentServer(config: config)
        AgentReloader(server: server, config: config).reloadOnSIGHUP()
        // SIGTERM / SIGINT: stop accepting, let the accept loop end. Handled
        // from here on, before the "listening" line below.
        for sig in [SIGTERM, SIGINT] {
            SignalWatcher.handle(sig) { server.log.event("signal", ["signal": sig == SIGTERM ? "TERM" : "INT"]); server.stop() }
        }
        if let log = server.auditLog {
            server.log.event("audit_log", ["path": log.path, "entries": String(log.count),
                                           "retention_days": config.auditRetentionDays.map(String.init) ?? "none"])
        } else {
            server.log.event("audit_log_disabled", ["warning": "no \"audit_log\" in the configuration: messages are not recorded"])
        }
        // With the other logs, on stderr (journald keeps both; stdout stays empty).
        FileHandle.standardError.write(Data("fedmix-agent: site \(config.site) listening on \(config.host):\(server.port)\n".utf8))
        server.serve()
        server.auditLog?.close()
        return 0
    }
}

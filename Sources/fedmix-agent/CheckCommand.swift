import Foundation
import CommandKit
import SiteAgent
import Protocol

/// `fedmix-agent check --config FILE [--running]`: one line per check, a
/// fix for each failure, exit status 1 when anything failed.
enum CheckCommand {
    static let running = Flag("running", help: "the agent is running: its listen address in use passes (health checks)")
    static let warnDays = Option<Int>("warn-days", value: "N", help: "warn when a certificate expires within N days (default 30)",
                                      .integer(in: 0...Int.max))

    static let command = Command(
        "check", abstract: "Checks the configuration, certificates, data, audit log and port.",
        discussion: "Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a usage error.",
        options: [AgentCommand.config, running, warnDays], run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let config = try a.require(AgentCommand.config)
        var options = AgentCheck.Options()
        options.agentRunning = a.flag(running)
        options.expiryWarningDays = a.value(warnDays, default: options.expiryWarningDays)
        print("fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion)): checking \(config)")
        let report = AgentCheck.run(configPath: config, options: options)
        for r in report.results { print(r.line) }
        print(report.passed ? "check passed: \(report.summary)" : "check FAILED: \(report.summary)")
        return report.exitCode
    }
}

import Foundation
import SiteAgent
import Protocol

/// `fedmix-agent check --config FILE [--running]`: one line per check, a
/// fix for each failure, exit status 1 when anything failed.
enum CheckCommand {
    static let usage = "fedmix-agent check --config FILE [--running] [--warn-days N]"

    static func run(_ args: [String]) throws -> Int32 {
        var options = AgentCheck.Options()
        var config: String?
        var i = 0
        while i < args.count {
            switch args[i] {
            case "--config" where i + 1 < args.count: config = args[i + 1]; i += 1
            case "--running": options.agentRunning = true
            case "--help", "-h":
                print("""
                Usage: \(usage)
                  --running       the agent is running: its listen address in use passes (health checks)
                  --warn-days N   warn when a certificate expires within N days (default 30)
                Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a usage error.
                """)
                return 0
            case "--warn-days" where i + 1 < args.count:
                guard let n = Int(args[i + 1]), n >= 0 else { return usageError("--warn-days takes a number of days") }
                options.expiryWarningDays = n; i += 1
            default: return usageError("unexpected argument \"\(args[i])\"")
            }
            i += 1
        }
        guard let config else { return usageError("--config FILE is required") }
        print("fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion)): checking \(config)")
        let report = AgentCheck.run(configPath: config, options: options)
        for r in report.results { print(r.line) }
        print(report.passed ? "check passed: \(report.summary)" : "check FAILED: \(report.summary)")
        return report.exitCode
    }

    static func usageError(_ message: String) -> Int32 {
        FileHandle.standardError.write(Data("fedmix-agent check: \(message)\nUsage: \(usage)\n".utf8))
        return 2
    }
}

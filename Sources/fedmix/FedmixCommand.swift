import Foundation
import CommandKit
import Coordinator
import Protocol

/// `fedmix`: the coordinator's command line. Every command and option is
/// declared in its command's file; the usage below, each command's --help
/// and the usage errors are generated from those declarations (CommandKit).
enum FedmixCommand {
    static let program = Program(
        name: "fedmix",
        title: "fedmix \(fedmixVersion): federated mixed-effects models (lme4 formulas) over hospitals' site agents",
        version: "fedmix \(fedmixVersion) (protocol \(protocolVersion))",
        entries: [
            .command(DemoCommand.command),
            .command(LocalCommand.command),
            .command(RemoteCommands.fitCommand),
            .command(ExplainCommand.command),
            .command(RemoteCommands.describeCommand),
            .command(SensitivityCommand.command),
            .command(CompareCommand.command),
            .command(GEECommand.command),
            .command(SimulateCommand.command),
            .group(CertsCommand.group),
            .command(BenchCommand.command),
            .command(BenchNetworkCommand.command),
            .command(BenchImputationCommand.command),
        ])

    static func run(_ args: [String]) -> Int32 { program.run(args) }
}

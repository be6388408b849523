import Foundation
import SiteAgent
import Protocol

exit(AgentCommand.run(Array(CommandLine.arguments.dropFirst())))

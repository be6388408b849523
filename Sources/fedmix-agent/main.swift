import Foundation
import SiteAgent
import Protocol

initializeOpenSSL()
exit(AgentCommand.run(Array(CommandLine.arguments.dropFirst())))

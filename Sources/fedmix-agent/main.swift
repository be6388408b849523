import Foundation
import SiteAgent
import Protocol

initializeOpenSSL()
tuneAllocatorForSiteWork()
exit(AgentCommand.run(Array(CommandLine.arguments.dropFirst())))

import Foundation
import Coordinator
import Protocol
import SiteAgent

initializeOpenSSL()
tuneAllocatorForSiteWork()
exit(FedmixCommand.run(Array(CommandLine.arguments.dropFirst())))

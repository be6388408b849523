import Foundation
import Coordinator
import Protocol

initializeOpenSSL()
exit(FedmixCommand.run(Array(CommandLine.arguments.dropFirst())))

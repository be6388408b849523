import Foundation
import Coordinator

exit(FedmixCommand.run(Array(CommandLine.arguments.dropFirst())))

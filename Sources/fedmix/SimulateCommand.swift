import Foundation
import Coordinator

/// `fedmix simulate registry|trauma --out DIR`: writes a simulated
/// multi-site dataset, one CSV per hospital.
enum SimulateCommand {
    static func run(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: ["out", "scale", "seed"], flags: [])
        guard let kind = a.positionals.first else { throw UsageError("fedmix simulate trauma|hypertension --out DIR [--scale X] [--seed N]") }
        let out = try a.require("out")
        let scale = Double(a.value("scale") ?? "1") ?? 1
        let seed = UInt64(a.value("seed") ?? "7") ?? 7
        let files: [URL]
        switch kind {
        case "trauma": files = try TraumaRegistrySimulator.write(to: out, scale: scale, seed: seed)
        case "hypertension": files = try RegistrySimulator.writeDemo(to: out)
        default: throw UsageError("unknown dataset \"\(kind)\"; use trauma (site-structured missing lactate) or hypertension (the demo)")
        }
        print("wrote \(files.count) site files to \(out)")
        return 0
    }
}

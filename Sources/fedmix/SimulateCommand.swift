import Foundation
import CommandKit
import Coordinator

/// `fedmix simulate trauma|hypertension|imputation --out DIR`: writes a simulated
/// multi-site dataset, one CSV per hospital.
enum SimulateCommand {
    enum Kind: String, CaseIterable, Sendable { case trauma, hypertension, imputation }
    static let kind = Positional("DATASET", help: "trauma (site-structured missing lactate), hypertension (the demo's registry) or imputation (missing lactate, known truth)",
                                 missing: "fedmix simulate trauma|hypertension|imputation --out DIR [--scale X] [--seed N]")
    static let out = Option<String>("out", value: "DIR", help: "the folder for the CSV files (one per hospital)", required: true)
    static let scale = Option<Double>("scale", value: "X", help: "multiplies every hospital's number of patients (default 1)", .number(positive: true))
    static let seed = Option<UInt64>("seed", value: "N", help: "the random seed (default: trauma 7, hypertension 2026, the demo's data)", .unsigned)

    static let command = Command(
        "simulate", abstract: "Writes a simulated multi-site registry (trauma: site-structured missing lactate).",
        arguments: [kind], options: [out, scale, seed], run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let name = a.positional(kind)!
        guard let which = Kind(rawValue: name) else {
            throw ArgumentError("unknown dataset \"\(name)\"; use trauma (site-structured missing lactate), hypertension (the demo) or imputation (missing lactate with known truth)")
        }
        let dir = try a.require(out)
        let scale = a.value(scale, default: 1)
        let files: [URL]
        switch which {
        case .trauma:
            files = try TraumaRegistrySimulator.write(to: dir, scale: scale, seed: a.value(seed, default: 7))
        case .imputation:
            try a.refuse([SimulateCommand.scale], "with imputation (its hospitals have fixed sizes)")
            files = try ImputationSimulator.write(to: dir, seed: a.value(seed, default: 16))
        case .hypertension:
            let seed = a.value(seed, default: 2026)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            files = try RegistrySimulator.demoSites.enumerated().map { i, s in
                let url = URL(fileURLWithPath: dir).appendingPathComponent("\(s.name).csv")
                let patients = max(1, Int((Double(s.patients) * scale).rounded()))
                try RegistrySimulator.siteCSV(site: s.name, index: i, patients: patients, seed: seed)
                    .write(to: url, atomically: true, encoding: .utf8)
                return url
            }
        }
        print("wrote \(files.count) site files to \(dir)")
        return 0
    }
}

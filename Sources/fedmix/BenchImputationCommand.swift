// `fedmix bench-imputation`: bias and 95% interval coverage of the analysis
// model's coefficients under complete case, the missing-indicator method and
// fedmix multiple imputation, over replications of a simulated multi-site
// registry whose lactate is missing at random by hospital, severity and
// outcome (ImputationSimulator; the truth is known). A benchmark, not a
// test: it takes minutes, and its figures are reported in BENCHMARKS.md.

import Foundation
import CommandKit
import Coordinator
import Protocol
import SiteAgent

enum BenchImputationCommand {
    static let replications = Option<Int>("replications", value: "R", help: "simulated registries (default 200)", .integer(in: 1...100_000))
    static let imputations = Option<Int>("m", value: "M", help: "completed datasets per replication (default 20)", .integer(in: 2...1000))
    static let seed = Option<UInt64>("seed", value: "S", help: "the first replication's seed (default 1); replication r uses S + r", .unsigned)

    static let command = Command(
        "bench-imputation", abstract: "Coverage simulation: complete case, missing indicator and multiple imputation on a registry with known truth.",
        discussion: """
        Each replication simulates the registry of ImputationSimulator (8 hospitals, 1480 patients;
        lactate missing at random by hospital, injury severity and death), fits
        \(ImputationSimulator.analysisFormula) (binomial) by complete case, by the missing-indicator
        method (lactate filled with 2) and by multiple imputation with
        \(ImputationSimulator.imputationFormula), over in-process agents, and reports each method's bias,
        empirical SE, mean SE and 95% interval coverage of the true coefficients.
        """,
        options: [replications, imputations, seed],
        run: run)

    struct Tally {
        var estimates: [Double] = []
        var ses: [Double] = []
        var covered = 0
    }

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let r = a.value(replications, default: 200), m = a.value(imputations, default: 20), first = a.value(seed, default: 1)
        let methods = ["complete case", "missing indicator", "multiple imputation"]
        let terms = ["age", "iss", "lactate"]
        var tallies = [[Tally]](repeating: [Tally](repeating: Tally(), count: terms.count), count: methods.count)
        let started = Date()
        let directory = NSTemporaryDirectory() + "fedmix-bench-imputation-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var failures = 0
        for k in 0..<r {
            let files = try ImputationSimulator.write(to: directory, seed: first &+ UInt64(k))
            let federation = LocalFederation.inProcess(files.map(LocalFederation.service))
            defer { federation.close() }
            let options = FitOptions(family: .binomial)
            do {
                let cc = try Analysis.fit(federation, dataset: "data", formula: ImputationSimulator.analysisFormula, options: options)
                let mi = try Analysis.fit(federation, dataset: "data", formula: ImputationSimulator.analysisFormula, options: options,
                                          missingData: MissingDataStrategy(indicators: ["lactate": 2]))
                let descriptions = try Analysis.describe(federation, dataset: "data")
                let imputed = try MultipleImputation.fit(federation, dataset: "data", formula: ImputationSimulator.analysisFormula,
                                                         descriptions: descriptions, options: options,
                                                         settings: ImputationSettings(models: [ImputationSimulator.imputationFormula], m: m,
                                                                                      seed: first &+ UInt64(k)))
                for (i, result) in [cc, mi, imputed].enumerated() {
                    for (j, t) in terms.enumerated() {
                        let f = result.fixedEffects.first { $0.name == t }!
                        tallies[i][j].estimates.append(f.estimate)
                        tallies[i][j].ses.append(f.stdError)
                        if f.ciLower <= ImputationSimulator.truth[t]! && ImputationSimulator.truth[t]! <= f.ciUpper { tallies[i][j].covered += 1 }
                    }
                }
            } catch {
                failures += 1
                FileHandle.standardError.write("replication \(k + 1): \(error)\n")
            }
            if (k + 1) % 10 == 0 {
                FileHandle.standardError.write("\(k + 1)/\(r) replications, \(String(format: "%.0f", Date().timeIntervalSince(started))) s\n")
            }
        }
        print("fedmix bench-imputation: \(r) replications (\(failures) failed), M = \(m), seeds \(first)…\(first &+ UInt64(r - 1)), \(String(format: "%.0f", Date().timeIntervalSince(started))) s")
        print("analysis: \(ImputationSimulator.analysisFormula) (binomial); imputation: \(ImputationSimulator.imputationFormula)\n")
        var rows: [[String]] = [["method", "term", "truth", "bias", "rel. bias", "emp. SE", "mean SE", "coverage"]]
        for (i, method) in methods.enumerated() {
            for (j, t) in terms.enumerated() {
                let x = tallies[i][j], n = Double(x.estimates.count)
                guard n > 0 else { continue }
                let truth = ImputationSimulator.truth[t]!
                let mean = x.estimates.reduce(0, +) / n
                let sd = (x.estimates.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / max(1, n - 1)).squareRoot()
                rows.append([method, t, String(format: "%.3f", truth), String(format: "%+.4f", mean - truth),
                             String(format: "%+.1f%%", 100 * (mean - truth) / truth), String(format: "%.4f", sd),
                             String(format: "%.4f", x.ses.reduce(0, +) / n), String(format: "%.3f", Double(x.covered) / n)])
            }
        }
        print(Report.table(rows, rightAlign: true, leftFirst: true))
        return 0
    }
}

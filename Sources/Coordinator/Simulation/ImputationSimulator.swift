// A multi-site trauma registry for multiple imputation, with known truth:
// lactate depends on age, injury severity and the hospital; death depends on
// all three and on lactate (a logistic model with a hospital random
// intercept: the analysis model, correctly specified). Lactate is missing at
// random given what is observed: it is measured routinely at some hospitals
// and rarely at others, more often in severe injuries and in patients who
// died, and the severity gradient is steeper among survivors. Complete-case
// analysis is then biased and the missing-indicator method more so.
// Used by `fedmix simulate imputation`, `fedmix bench imputation` and the
// imputation tests.

import Foundation

public enum ImputationSimulator {
    public struct Site: Sendable {
        public var name: String
        public var patients: Int
        /// Probability that lactate is measured for a surviving patient of average severity.
        public var measured: Double
    }

    public static let sites: [Site] = [
        .init(name: "st-olaf", patients: 150, measured: 0.85),
        .init(name: "kingsbridge", patients: 260, measured: 0.75),
        .init(name: "moorfield", patients: 180, measured: 0.35),
        .init(name: "ashworth", patients: 120, measured: 0.25),
        .init(name: "riverbend", patients: 300, measured: 0.70),
        .init(name: "hollins", patients: 150, measured: 0.50),
        .init(name: "greystone", patients: 110, measured: 0.80),
        .init(name: "lowmoor", patients: 210, measured: 0.30),
    ]

    public static let header = ["patient_id", "site", "age", "iss", "lactate", "died"]
    /// The analysis model and its true coefficients.
    public static let analysisFormula = "died ~ age + iss + lactate + (1 | site)"
    public static let truth: [String: Double] = ["(Intercept)": -3.0 - 0.03 * 50 - 0.08 * 15 - 0.6 * 2, "age": 0.03, "iss": 0.08, "lactate": 0.6]
    public static let imputationFormula = "lactate ~ age + iss + died + (1 | site)"

    /// One site's rows as CSV text.
    public static func siteCSV(_ s: Site, index: Int, seed: UInt64) -> String {
        var rng = SeededRandom(seed: seed &* 0x9E3779B97F4A7C15 &+ UInt64(index + 1) &* 104_729)
        let lactateEffect = 0.5 * rng.normal()
        let deathEffect = 0.5 * rng.normal()
        var out = header.joined(separator: ",") + "\n"
        for p in 0..<s.patients {
            let age = (50 + 18 * rng.normal()).rounded()
            let iss = min(max((15 + 9 * rng.normal()).rounded(), 1), 75)
            let lactate = 2 + 0.06 * (iss - 15) + 0.01 * (age - 50) + lactateEffect + 0.8 * rng.normal()
            let eta = -3.0 + 0.03 * (age - 50) + 0.08 * (iss - 15) + 0.6 * (lactate - 2) + deathEffect
            let died = rng.uniform() < 1 / (1 + exp(-eta)) ? 1.0 : 0.0
            let logit = log(s.measured / (1 - s.measured)) + 0.10 * (iss - 15) * (1 - died) + 1.5 * died
            let measured = rng.uniform() < 1 / (1 + exp(-logit))
            let lac = measured ? String(format: "%.2f", lactate) : "NA"
            out += "\(s.name)-\(p + 1),\(s.name),\(Int(age)),\(Int(iss)),\(lac),\(Int(died))\n"
        }
        return out
    }

    /// Writes one CSV per hospital into `directory`.
    @discardableResult
    public static func write(to directory: String, seed: UInt64 = 16) throws -> [URL] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try sites.enumerated().map { i, s in
            let url = URL(fileURLWithPath: directory).appendingPathComponent("\(s.name).csv")
            try siteCSV(s, index: i, seed: seed).write(to: url, atomically: true, encoding: .utf8)
            return url
        }
    }
}

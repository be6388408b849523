// A simulated multi-site trauma registry with site-structured missingness:
// lactate is measured routinely at some hospitals and rarely at others, and
// more often in severely injured patients (missing at random given site and
// injury severity). Used by `fedmix simulate`, the missing-data tests and
// benchmarks: complete-case analysis visibly shifts who is represented.

import Foundation

public enum TraumaRegistrySimulator {
    public struct Site: Sendable {
        public var name: String
        public var patients: Int
        /// Probability that lactate is measured for a patient of average severity.
        public var lactateMeasured: Double
        /// Probability that age is not recorded.
        public var ageMissing: Double
    }

    public static let sites: [Site] = [
        .init(name: "st-olaf", patients: 120, lactateMeasured: 0.95, ageMissing: 0.0),
        .init(name: "kingsbridge", patients: 260, lactateMeasured: 0.90, ageMissing: 0.01),
        .init(name: "moorfield", patients: 180, lactateMeasured: 0.35, ageMissing: 0.02),
        .init(name: "ashworth", patients: 90, lactateMeasured: 0.15, ageMissing: 0.0),
        .init(name: "riverbend", patients: 340, lactateMeasured: 0.80, ageMissing: 0.03),
        .init(name: "hollins", patients: 150, lactateMeasured: 0.55, ageMissing: 0.0),
        .init(name: "greystone", patients: 60, lactateMeasured: 0.97, ageMissing: 0.05),
        .init(name: "lowmoor", patients: 210, lactateMeasured: 0.25, ageMissing: 0.01),
    ]

    public static let header = ["patient_id", "site", "age", "sex", "iss", "lactate", "died"]

    /// One site's rows as CSV; `scale` multiplies the number of patients.
    public static func siteCSV(_ s: Site, index: Int, scale: Double = 1, seed: UInt64 = 7) -> String {
        var rng = SeededRandom(seed: seed &+ UInt64(index + 1) &* 104_729)
        let siteEffect = 0.45 * rng.normal()
        let n = max(1, Int((Double(s.patients) * scale).rounded()))
        var out = header.joined(separator: ",") + "\n"
        for p in 0..<n {
            let age = min(max((48 + 19 * rng.normal()).rounded(), 16), 99)
            let sex = rng.uniform() < 0.68 ? "M" : "F"
            let iss = min(max((14 + 10 * rng.normal()).rounded(), 1), 75)
            let lactate = max(0.4, 1.6 + 0.07 * (iss - 14) + 0.9 * rng.normal())
            let eta = -3.1 + 0.035 * (age - 48) + 0.085 * (iss - 14) + 0.32 * (lactate - 2) + (sex == "M" ? 0.1 : 0) + siteEffect
            let died = rng.uniform() < 1 / (1 + exp(-eta)) ? 1 : 0
            // measured more often in severe injuries
            let logitMeasured = log(s.lactateMeasured / (1 - s.lactateMeasured)) + 0.06 * (iss - 14)
            let measured = rng.uniform() < 1 / (1 + exp(-logitMeasured))
            let ageRecorded = rng.uniform() >= s.ageMissing
            let lac = measured ? String(format: "%.1f", lactate) : "NA"
            out += "\(s.name)-\(p + 1),\(s.name),\(ageRecorded ? String(Int(age)) : ""),\(sex),\(Int(iss)),\(lac),\(died)\n"
        }
        return out
    }

    /// Writes one CSV per hospital into `directory`.
    @discardableResult
    public static func write(to directory: String, scale: Double = 1, seed: UInt64 = 7) throws -> [URL] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try sites.enumerated().map { i, s in
            let url = URL(fileURLWithPath: directory).appendingPathComponent("\(s.name).csv")
            try siteCSV(s, index: i, scale: scale, seed: seed).write(to: url, atomically: true, encoding: .utf8)
            return url
        }
    }
}

// A simulated multi-site hypertension registry: the demo's bundled data and
// the benchmarks' generator. Small and large hospitals, a true between-site
// spread, so partial pooling is visible: small sites' estimates shrink most.

import Foundation

/// A reproducible generator (SplitMix64) with normal draws.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    private var spare: Double? = nil
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    /// A standard normal draw (Box–Muller).
    public mutating func normal() -> Double {
        if let s = spare { spare = nil; return s }
        var u = uniform()
        while u <= 0 { u = uniform() }
        let v = uniform()
        let r = (-2 * Foundation.log(u)).squareRoot()
        spare = r * Foundation.sin(2 * .pi * v)
        return r * Foundation.cos(2 * .pi * v)
    }
}

public enum RegistrySimulator {
    /// Hospitals of the demo registry and their number of patients.
    public static let demoSites: [(name: String, patients: Int)] = [
        ("st-brigid", 14), ("lakeside", 22), ("northgate", 31), ("valley-general", 45),
        ("riverside", 68), ("mercy", 95), ("eastfield", 130), ("harbour", 180),
        ("university", 260), ("metropolitan", 420),
    ]

    /// The demo's model.
    public static let demoFormula = "sbp_12wk ~ baseline_sbp + age + sex + treatment + (1 | site)"

    /// Header of the registry's CSV files.
    public static let header = ["patient_id", "site", "age", "sex", "baseline_sbp", "treatment", "sbp_12wk"]

    /// One site's rows as CSV text. The site's true effect on 12-week
    /// systolic pressure is drawn once per site (SD 6 mmHg; residual SD 11).
    public static func siteCSV(site: String, index: Int, patients: Int, seed: UInt64 = 2026) -> String {
        var rng = SeededRandom(seed: seed &+ UInt64(index) &* 7919)
        let siteEffect = 6.0 * rng.normal()
        var out = header.joined(separator: ",") + "\n"
        out.reserveCapacity(patients * 48)
        for p in 0..<patients {
            let age = (62 + 11 * rng.normal()).rounded()
            let sex = rng.uniform() < 0.48 ? "F" : "M"
            let baseline = (158 + 14 * rng.normal()).rounded()
            let treatment = rng.uniform() < 0.5 ? "standard" : "intensive"
            let mean = 45 + 0.62 * baseline + 0.18 * age + (sex == "M" ? 2.5 : 0)
                + (treatment == "intensive" ? -9.5 : 0) + siteEffect
            let y = ((mean + 11 * rng.normal()) * 10).rounded() / 10
            out += "\(site)-\(p + 1),\(site),\(Int(age)),\(sex),\(Int(baseline)),\(treatment),\(y)\n"
        }
        return out
    }

    /// Writes the demo registry, one CSV per hospital, into `directory`.
    @discardableResult
    public static func writeDemo(to directory: String) throws -> [URL] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try demoSites.enumerated().map { i, s in
            let url = URL(fileURLWithPath: directory).appendingPathComponent("\(s.name).csv")
            try siteCSV(site: s.name, index: i, patients: s.patients).write(to: url, atomically: true, encoding: .utf8)
            return url
        }
    }
}

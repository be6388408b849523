// The nested-glmm bench's rows as CSV (site, patient, episode, x, died), for
// nested-glmm-bench-optimum.R: `fedmix bench` writes them only to a temporary
// file for glmer. A verbatim copy of SeededRandom (RegistrySimulator.swift)
// and NestedVisitsData.rows/csv (BenchNested.swift, binary: true); check a
// copy against the bench with `fedmix local OUT.csv --split-by site --formula
// 'died ~ x + (1 | site/patient/episode)' --family binomial`: seed 20260101,
// 20,000 patients give the bench's −2 log L 240606.564538 on 239,824 rows.
//   swiftc -O Tests/Fixtures/tools/nested-glmm-bench-rows.swift -o /tmp/rows && /tmp/rows 20260101 20000 OUT.csv
import Foundation
struct SeededRandom {
    private var state: UInt64
    private var spare: Double? = nil
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    mutating func normal() -> Double {
        if let s = spare { spare = nil; return s }
        var u = uniform()
        while u <= 0 { u = uniform() }
        let v = uniform()
        let r = (-2 * Foundation.log(u)).squareRoot()
        spare = r * Foundation.sin(2 * .pi * v)
        return r * Foundation.cos(2 * .pi * v)
    }
}
struct Row { var site: Int; var patient: Int; var episode: Int; var x: Double; var y: Double }
let sites = 3
func rows(seed: UInt64, patients patientsPerSite: Int, binary: Bool) -> [Row] {
    var rng = SeededRandom(seed: seed)
    var out: [Row] = []
    for s in 1...sites {
        let us = 0.8 * rng.normal()
        for p in 1...patientsPerSite {
            let up = rng.normal()
            for e in 1...(1 + Int(rng.uniform() * 3)) {
                let ue = 0.6 * rng.normal()
                for _ in 0..<(1 + Int(rng.uniform() * 3)) {
                    let x = rng.normal()
                    let y = binary ? (rng.uniform() < 1 / (1 + exp(1 - 0.5 * x - us - up - ue)) ? 1.0 : 0.0)
                                   : 2 + 0.5 * x + us + up + ue + 0.7 * rng.normal()
                    out.append(Row(site: s, patient: p, episode: e, x: x, y: y))
                }
            }
        }
    }
    return out
}
let a = CommandLine.arguments
let seed = UInt64(a[1])!, patients = Int(a[2])!
let csv = "site,patient,episode,x,died\n" + rows(seed: seed, patients: patients, binary: true).map { "\($0.site),\($0.patient),\($0.episode),\($0.x),\($0.y)" }.joined(separator: "\n") + "\n"
_ = FileManager.default.createFile(atPath: a[3], contents: Data(csv.utf8))

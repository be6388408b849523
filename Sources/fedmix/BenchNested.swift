// The nested case of `fedmix bench`: visits in episodes in patients, 20,000
// patients at each of 3 sites (about 80,000 visits a site). The two factors
// nested in the site have 20,000 and about 40,000 levels there, beyond the
// dense tail's 2,000 random effects: the sites hold them level by level and
// eliminate them in O(levels) (NestedChain, NestedElimination). nested-glmm
// has the same design with a binary outcome, `died`: the GLMM's sites hold
// the same chain (BlockedFactor's chain solve, NestedElimination on jets).

import Foundation
import Coordinator
import SiteAgent

enum NestedVisitsData {
    static let formula = "y ~ x + (1 | site/patient/episode)"
    static let glmmFormula = "died ~ x + (1 | site/patient/episode)"
    static let sites = 3
    static let patientsPerSite = 20_000

    struct Row { var site: Int; var patient: Int; var episode: Int; var x: Double; var y: Double }

    /// Per site: patients with 1–3 episodes of 1–3 visits; y = 2 + 0.5 x +
    /// site (SD 0.8) + patient (SD 1) + episode (SD 0.6) + N(0, 0.7²), or
    /// (`binary`) died ~ Bernoulli(logit⁻¹(−1 + 0.5 x + the same effects)).
    /// Patient and episode codes are local (1, 2, …), as `site/patient/episode` reads them.
    static func rows(seed: UInt64, patients patientsPerSite: Int = patientsPerSite, binary: Bool = false) -> [Row] {
        var rng = SeededRandom(seed: seed)
        var out: [Row] = []
        out.reserveCapacity(sites * patientsPerSite * 4)
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

    /// One table per site (columns patient, episode, x, and y or died).
    static func load(seed: UInt64, patients: Int = patientsPerSite, binary: Bool = false) -> [(site: String, table: DataTable)] {
        var bySite: [Int: [Row]] = [:]
        for r in rows(seed: seed, patients: patients, binary: binary) { bySite[r.site, default: []].append(r) }
        return bySite.keys.sorted().map { s in
            let rs = bySite[s]!
            func column(_ name: String, _ f: (Row) -> Double) -> DataTable.Column { .init(name: name, data: .numeric(rs.map { Optional(f($0)) })) }
            return ("site-\(s)", DataTable(columns: [column("patient") { Double($0.patient) }, column("episode") { Double($0.episode) },
                                                     column("x", \.x), column(binary ? "died" : "y", \.y)], rowCount: rs.count))
        }
    }

    /// The rows as CSV (site, patient, episode, x, y or died), for lme4.
    static func csv(seed: UInt64, patients: Int = patientsPerSite, binary: Bool = false) -> String {
        "site,patient,episode,x,\(binary ? "died" : "y")\n" + rows(seed: seed, patients: patients, binary: binary).map { "\($0.site),\($0.patient),\($0.episode),\($0.x),\($0.y)" }.joined(separator: "\n") + "\n"
    }
}

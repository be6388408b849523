// The crossed GLMM case of `fedmix bench`: the surgeons of BenchSurgeons
// (2,000 who operate at 2–4 of 20 hospitals, about 300 at each) with a
// binary outcome, `died ~ age + (1 | site) + (1 | surgeon)` (Laplace). The
// sites answer in the level form and the coordinator eliminates the
// surgeons level by level (Math/CrossedGLMMLevelSystem).

import Foundation
import Coordinator
import SiteAgent

enum SurgeonsGLMMData {
    static let formula = "died ~ age + (1 | site) + (1 | surgeon)"
    static let hospitals = 20
    static let surgeons = 2_000
    static let rowsPerCell = 8

    struct Row { var site: Int; var surgeon: Int; var age: Double; var died: Int }

    /// logit P(died) = −1.3 + 0.5 age + hospital (SD 0.5) + surgeon (SD 0.4);
    /// each of `surgeons` (--surgeons) at 2–4 distinct hospitals with 8 rows at each (min_cell holds).
    static func rows(seed: UInt64, surgeons: Int = surgeons) -> [Row] {
        var rng = SeededRandom(seed: seed)
        let hospital = (0..<hospitals).map { _ in 0.5 * rng.normal() }
        var out: [Row] = []
        for s in 0..<surgeons {
            let us = 0.4 * rng.normal()
            for h in SurgeonsData.hospitalsOfASurgeon(&rng) {
                for _ in 0..<rowsPerCell {
                    let age = (1000 * rng.normal()).rounded() / 1000
                    let eta = -1.3 + 0.5 * age + hospital[h] + us
                    out.append(Row(site: h, surgeon: s, age: age, died: rng.uniform() < 1 / (1 + exp(-eta)) ? 1 : 0))
                }
            }
        }
        return out
    }

    /// One table per hospital (columns surgeon, age, died); surgeon codes are shared.
    static func load(seed: UInt64, surgeons: Int = surgeons) -> [(site: String, table: DataTable)] {
        var bySite: [Int: [Row]] = [:]
        for r in rows(seed: seed, surgeons: surgeons) { bySite[r.site, default: []].append(r) }
        return bySite.keys.sorted().map { h in
            let rs = bySite[h]!
            return (String(format: "H%02d", h + 1), DataTable(columns: [
                .init(name: "surgeon", data: .text(rs.map { Optional(String(format: "S%04d", $0.surgeon)) })),
                .init(name: "age", data: .numeric(rs.map { Optional($0.age) })),
                .init(name: "died", data: .numeric(rs.map { Optional(Double($0.died)) })),
            ], rowCount: rs.count))
        }
    }

    /// The rows as CSV (site, surgeon, age, died), for glmer.
    static func csv(seed: UInt64, surgeons: Int = surgeons) -> String {
        "site,surgeon,age,died\n" + rows(seed: seed, surgeons: surgeons).map { String(format: "H%02d,S%04d,", $0.site + 1, $0.surgeon) + "\($0.age),\($0.died)" }.joined(separator: "\n") + "\n"
    }
}

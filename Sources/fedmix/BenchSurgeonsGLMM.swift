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

    struct Row { var site: Int; var surgeon: Int; var age: Double; var died: Int; var ward = 0 }

    /// logit P(died) = −1.3 + 0.5 age + hospital (SD 0.5) + surgeon (SD 0.4)
    /// (+ the row's ward effect, when `ward` gives each row at a hospital its
    /// ward and that ward's effect: surgeon-wards-glmm); each of `surgeons`
    /// (--surgeons) at 2–4 distinct hospitals with 8 rows at each (min_cell holds).
    static func rows(seed: UInt64, surgeons: Int = surgeons, ward: ((_ hospital: Int) -> (ward: Int, effect: Double))? = nil) -> [Row] {
        var rng = SeededRandom(seed: seed)
        let hospital = (0..<hospitals).map { _ in 0.5 * rng.normal() }
        var out: [Row] = []
        for s in 0..<surgeons {
            let us = 0.4 * rng.normal()
            for h in SurgeonsData.hospitalsOfASurgeon(&rng) {
                for _ in 0..<rowsPerCell {
                    let age = (1000 * rng.normal()).rounded() / 1000
                    var eta = -1.3 + 0.5 * age + hospital[h] + us
                    let w = ward?(h)
                    if let w { eta += w.effect }
                    out.append(Row(site: h, surgeon: s, age: age, died: rng.uniform() < 1 / (1 + exp(-eta)) ? 1 : 0, ward: w?.ward ?? 0))
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

/// The crossed GLMM with within-site terms, `fedmix bench --models
/// surgeon-wards-glmm`: the surgeons-glmm rows (same ages and hospitals) with
/// 10–20 wards per hospital, `died ~ age + (1 | site/ward) + (1 | surgeon)`.
/// Each hospital's own effects are its wards' and its own; the sites answer
/// in the level form when every ward has min_cell rows (GLMMCrossedLevelForm).
enum SurgeonWardsGLMMData {
    static let formula = "died ~ age + (1 | site/ward) + (1 | surgeon)"

    /// From a stream of their own, each hospital's ward count and each
    /// ward's effect (SD 0.4, on the logit scale); a hospital's rows go to
    /// its wards in turn, so every ward has about the same number of rows
    /// (≥ min_cell from ~100 surgeons on).
    static func rows(seed: UInt64, surgeons: Int = SurgeonsGLMMData.surgeons) -> [SurgeonsGLMMData.Row] {
        var rng = SeededRandom(seed: seed &+ 0x5741_5244)
        let wardsPerHospital = SurgeonWardsData.wardsPerHospital, span = wardsPerHospital.count
        let wards = (0..<SurgeonsGLMMData.hospitals).map { _ in wardsPerHospital.lowerBound + min(span - 1, Int(rng.uniform() * Double(span))) }
        let effect = wards.map { (0..<$0).map { _ in 0.4 * rng.normal() } }
        var next = [Int](repeating: 0, count: SurgeonsGLMMData.hospitals)
        return SurgeonsGLMMData.rows(seed: seed, surgeons: surgeons) { h in
            let w = next[h] % wards[h]
            next[h] += 1
            return (w, effect[h][w])
        }
    }

    /// One table per hospital (columns surgeon, ward, age, died).
    static func load(seed: UInt64, surgeons: Int = SurgeonsGLMMData.surgeons) -> [(site: String, table: DataTable)] {
        var bySite: [Int: [SurgeonsGLMMData.Row]] = [:]
        for r in rows(seed: seed, surgeons: surgeons) { bySite[r.site, default: []].append(r) }
        return bySite.keys.sorted().map { h in
            let rs = bySite[h]!
            return (String(format: "H%02d", h + 1), DataTable(columns: [
                .init(name: "surgeon", data: .text(rs.map { Optional(String(format: "S%04d", $0.surgeon)) })),
                .init(name: "ward", data: .text(rs.map { Optional(String(format: "W%02d", $0.ward + 1)) })),
                .init(name: "age", data: .numeric(rs.map { Optional($0.age) })),
                .init(name: "died", data: .numeric(rs.map { Optional(Double($0.died)) })),
            ], rowCount: rs.count))
        }
    }

    /// The rows as CSV (site, surgeon, ward, age, died), for glmer.
    static func csv(seed: UInt64, surgeons: Int = SurgeonsGLMMData.surgeons) -> String {
        "site,surgeon,ward,age,died\n" + rows(seed: seed, surgeons: surgeons).map {
            String(format: "H%02d,S%04d,W%02d,", $0.site + 1, $0.surgeon, $0.ward + 1) + "\($0.age),\($0.died)"
        }.joined(separator: "\n") + "\n"
    }
}

// The crossed case of `fedmix bench`: 2,000 surgeons who operate at 2–4 of
// 20 hospitals, `y ~ x + (1 | site) + (1 | surgeon)`. The surgeon factor is
// crossed with the sites; the coordinator eliminates its effects level by
// level (Math/CrossedLevelElimination), as lme4 orders its sparse factor.

import Foundation
import Coordinator
import SiteAgent

enum SurgeonsData {
    static let formula = "y ~ x + (1 | site) + (1 | surgeon)"
    static let hospitals = 20
    static let surgeons = 2_000
    static let rowsPerCell = 6

    struct Row { var site: Int; var surgeon: Int; var x: Double; var y: Double }

    /// y = 1 + 0.6 x + hospital (SD 0.7) + surgeon (SD 0.5) + N(0, 1); each
    /// surgeon at 2–4 distinct hospitals with 6 rows at each (min_cell holds).
    static func rows(seed: UInt64) -> [Row] {
        var rng = SeededRandom(seed: seed)
        let hospital = (0..<hospitals).map { _ in 0.7 * rng.normal() }
        var out: [Row] = []
        for s in 0..<surgeons {
            let us = 0.5 * rng.normal()
            var at: [Int] = []
            let count = 2 + Int(rng.uniform() * 3)
            while at.count < count {
                let h = Int(rng.uniform() * Double(hospitals))
                if !at.contains(h) { at.append(h) }
            }
            for h in at {
                for _ in 0..<rowsPerCell {
                    let x = rng.normal()
                    out.append(Row(site: h, surgeon: s, x: x, y: 1 + 0.6 * x + hospital[h] + us + rng.normal()))
                }
            }
        }
        return out
    }

    /// One table per hospital (columns surgeon, x, y); surgeon codes are shared.
    static func load(seed: UInt64) -> [(site: String, table: DataTable)] {
        var bySite: [Int: [Row]] = [:]
        for r in rows(seed: seed) { bySite[r.site, default: []].append(r) }
        return bySite.keys.sorted().map { h in
            let rs = bySite[h]!
            return (String(format: "H%02d", h + 1), DataTable(columns: [
                .init(name: "surgeon", data: .text(rs.map { Optional(String(format: "S%04d", $0.surgeon)) })),
                .init(name: "x", data: .numeric(rs.map { Optional($0.x) })),
                .init(name: "y", data: .numeric(rs.map { Optional($0.y) })),
            ], rowCount: rs.count))
        }
    }

    /// The rows as CSV (site, surgeon, x, y), for lme4.
    static func csv(seed: UInt64) -> String {
        "site,surgeon,x,y\n" + rows(seed: seed).map { String(format: "H%02d,S%04d,", $0.site + 1, $0.surgeon) + "\($0.x),\($0.y)" }.joined(separator: "\n") + "\n"
    }
}

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
    /// The 2–4 distinct hospitals a surgeon operates at, in the order drawn
    /// (the surgeons-glmm rows draw theirs the same way).
    static func hospitalsOfASurgeon(_ rng: inout SeededRandom) -> [Int] {
        var at: [Int] = []
        let count = 2 + Int(rng.uniform() * 3)
        while at.count < count {
            let h = Int(rng.uniform() * Double(hospitals))
            if !at.contains(h) { at.append(h) }
        }
        return at
    }

    static func rows(seed: UInt64) -> [Row] {
        var rng = SeededRandom(seed: seed)
        let hospital = (0..<hospitals).map { _ in 0.7 * rng.normal() }
        var out: [Row] = []
        for s in 0..<surgeons {
            let us = 0.5 * rng.normal()
            for h in hospitalsOfASurgeon(&rng) {
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

/// The crossed case with within-site terms, `fedmix bench --models
/// surgeon-wards`: the surgeons' rows with 10–20 wards per hospital,
/// `y ~ x + (1 | site/ward) + (1 | surgeon)`. The sites' sums then depend on
/// θ (every evaluation is a round); the coordinator still eliminates the
/// surgeons level by level, with each hospital's own effects (its wards and
/// itself) as columns whose couplings the site sends per θ (Math/CrossedLowRank.swift).
enum SurgeonWardsData {
    static let formula = "y ~ x + (1 | site/ward) + (1 | surgeon)"
    static let wardsPerHospital = 10...20

    struct Row { var base: SurgeonsData.Row; var ward: Int }

    /// The surgeons' rows unchanged, then from a stream of their own each
    /// hospital's ward count, each ward's effect (SD 0.4, added to y) and
    /// each row's ward (at random among its hospital's).
    static func rows(seed: UInt64) -> [Row] {
        let base = SurgeonsData.rows(seed: seed)
        var rng = SeededRandom(seed: seed &+ 0x5741_5244)
        let span = wardsPerHospital.count
        let wards = (0..<SurgeonsData.hospitals).map { _ in wardsPerHospital.lowerBound + min(span - 1, Int(rng.uniform() * Double(span))) }
        let effect = wards.map { (0..<$0).map { _ in 0.4 * rng.normal() } }
        return base.map { r in
            let w = min(wards[r.site] - 1, Int(rng.uniform() * Double(wards[r.site])))
            var b = r
            b.y += effect[r.site][w]
            return Row(base: b, ward: w)
        }
    }

    /// One table per hospital (columns surgeon, ward, x, y).
    static func load(seed: UInt64) -> [(site: String, table: DataTable)] {
        var bySite: [Int: [Row]] = [:]
        for r in rows(seed: seed) { bySite[r.base.site, default: []].append(r) }
        return bySite.keys.sorted().map { h in
            let rs = bySite[h]!
            return (String(format: "H%02d", h + 1), DataTable(columns: [
                .init(name: "surgeon", data: .text(rs.map { Optional(String(format: "S%04d", $0.base.surgeon)) })),
                .init(name: "ward", data: .text(rs.map { Optional(String(format: "W%02d", $0.ward + 1)) })),
                .init(name: "x", data: .numeric(rs.map { Optional($0.base.x) })),
                .init(name: "y", data: .numeric(rs.map { Optional($0.base.y) })),
            ], rowCount: rs.count))
        }
    }

    /// The rows as CSV (site, surgeon, ward, x, y), for lme4.
    static func csv(seed: UInt64) -> String {
        "site,surgeon,ward,x,y\n" + rows(seed: seed).map {
            String(format: "H%02d,S%04d,W%02d,", $0.base.site + 1, $0.base.surgeon, $0.ward + 1) + "\($0.base.x),\($0.base.y)"
        }.joined(separator: "\n") + "\n"
    }
}

// The within-site LMM case of `fedmix bench`: mlmRev's egsingle (maths
// scores of 1,721 children over up to six years in 60 Chicago schools), one
// school per site, children nested in their school, with a random intercept
// and year slope at both levels: the growth model lme4 needs 128 criterion
// evaluations for. Small and latency-bound, so its figures show start-up
// (certificates, agents, handshakes) and per-round costs, not row passes.

import Foundation
import Coordinator
import SiteAgent

enum EgsingleData {
    static let formula = "math ~ year + (1 + year | site) + (1 + year | site:child)"
    static let lme4Formula = "math ~ year + (1 + year | schoolid) + (1 + year | schoolid:childid)"

    struct Row { var school: Int; var child: Int; var year: Double; var math: Double }

    /// One table per school (columns child, year, math; a child's code is unique
    /// within its school, as `site:child` needs), the rows themselves (for lme4) and where they came from.
    static func load(seed: UInt64) -> (tables: [(site: String, table: DataTable)], rows: [Row], source: String) {
        let rows: [Row], source: String
        if let r = fromR() { rows = r; source = "mlmRev::egsingle" } else { rows = simulated(seed: seed); source = "simulated like mlmRev::egsingle" }
        var bySchool: [Int: [Row]] = [:]
        for r in rows { bySchool[r.school, default: []].append(r) }
        let tables = bySchool.keys.sorted().map { school -> (site: String, table: DataTable) in
            let rs = bySchool[school]!
            func column(_ name: String, _ f: (Row) -> Double) -> DataTable.Column {
                .init(name: name, data: .numeric(rs.map { Optional(f($0)) }))
            }
            return (String(format: "school-%02d", school),
                    DataTable(columns: [column("child") { Double($0.child) }, column("year", \.year), column("math", \.math)],
                              rowCount: rs.count))
        }
        return (tables, rows, source)
    }

    /// The data set through `Rscript` (nil when R or mlmRev is missing);
    /// schools and children numbered 1, 2, … in the data's level order.
    static func fromR() -> [Row]? {
        let file = NSTemporaryDirectory() + "/fedmix-egsingle-\(getpid()).csv"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let script = "data(egsingle, package = 'mlmRev'); e <- egsingle; "
            + "write.csv(data.frame(school = as.integer(e$schoolid), child = as.integer(e$childid), year = e$year, math = e$math), "
            + "'\(file)', row.names = FALSE)"
        guard Lme4Timing.rscript(["-e", script]) != nil, let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        var out: [Row] = []
        for line in text.split(separator: "\n").dropFirst() {
            let v = line.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))) }
            guard v.count == 4 else { return nil }
            out.append(Row(school: Int(v[0]), child: Int(v[1]), year: v[2], math: v[3]))
        }
        return out.count == 7230 ? out : nil
    }

    /// 60 schools × about 29 children × about 4.2 years, from the growth
    /// model's published fit: math = −0.78 + 0.76 year + school (SD 0.41
    /// intercept, 0.10 slope) + child (SD 0.80 intercept, 0.12 slope) + N(0, 0.55²).
    static func simulated(seed: UInt64) -> [Row] {
        var rng = SeededRandom(seed: seed)
        var out: [Row] = []
        var child = 0
        for school in 1...60 {
            let a = 0.41 * rng.normal(), b = 0.10 * rng.normal()
            for _ in 0..<(20 + Int(rng.uniform() * 19)) {
                child += 1
                let c = 0.80 * rng.normal(), d = 0.12 * rng.normal()
                let first = -2.5 + Double(Int(rng.uniform() * 3))
                for k in 0..<(3 + Int(rng.uniform() * 3)) {
                    let year = first + Double(k)
                    let math = -0.78 + 0.76 * year + a + b * year + c + d * year + 0.55 * rng.normal()
                    out.append(Row(school: school, child: child, year: year, math: math))
                }
            }
        }
        return out
    }
}

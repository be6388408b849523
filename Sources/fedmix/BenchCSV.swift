// How fast an agent reads its CSV export: the bench's site tables are
// written as CSV files (as a hospital would export them) and read back with
// the agents' own reader (CSVReader), one file after another on one thread,
// so the rate in MB/s is what one agent's start-up or first request pays.

import Foundation
import SiteAgent

struct CSVIngest: Codable, CustomStringConvertible {
    var files: Int
    var bytes: Int
    var rows: Int
    /// Reading and parsing every file (wall).
    var seconds: Double
    var readCPUSeconds: Double
    /// Writing them (not part of the rate).
    var writeSeconds: Double

    var megabytesPerSecond: Double { Double(bytes) / 1e6 / seconds }

    var description: String {
        String(format: "%.1f MB in %d files (%@ rows) read by the agents' reader in %@: %.0f MB/s, %.2fM rows/s (one thread; writing them took %@)",
               Double(bytes) / 1e6, files, BenchCommand.group(rows), BenchCommand.secs(seconds), megabytesPerSecond,
               Double(rows) / seconds / 1e6, BenchCommand.secs(writeSeconds))
    }

    /// Writes `tables` to a temporary folder, reads them back, removes them.
    static func measure(_ tables: [(site: String, table: DataTable)]) throws -> CSVIngest {
        let directory = NSTemporaryDirectory() + "fedmix-bench-csv-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let w0 = monotonicSeconds()
        var paths: [String] = [], bytes = 0
        for (i, t) in tables.enumerated() {
            let path = directory + "/site-\(i).csv"
            let data = Data(text(t.table).utf8)
            try data.write(to: URL(fileURLWithPath: path))
            paths.append(path); bytes += data.count
        }
        let t0 = monotonicSeconds(), c0 = cpuSeconds()
        var rows = 0
        for path in paths { rows += try CSVReader.read(path: path).rowCount }
        let t1 = monotonicSeconds(), c1 = cpuSeconds()
        let expected = tables.reduce(0) { $0 + $1.table.rowCount }
        guard rows == expected else { throw BenchError("the CSV reader read \(rows) rows of the \(expected) written") }
        return CSVIngest(files: paths.count, bytes: bytes, rows: rows, seconds: t1 - t0, readCPUSeconds: c1 - c0, writeSeconds: t0 - w0)
    }

    /// A numeric table as CSV: a header, then shortest round-trip decimals (NA when missing).
    static func text(_ t: DataTable) -> String {
        let columns: [[Double?]] = t.columns.map { c in
            if case .numeric(let v) = c.data { return Array(v) }
            return [Double?](repeating: nil, count: t.rowCount)
        }
        var out = t.columnNames.joined(separator: ",") + "\n"
        out.reserveCapacity(t.rowCount * 16 * max(columns.count, 1))
        for i in 0..<t.rowCount {
            for (k, c) in columns.enumerated() {
                if k > 0 { out += "," }
                out += c[i].map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int($0)) : String($0) } ?? "NA"
            }
            out += "\n"
        }
        return out
    }
}

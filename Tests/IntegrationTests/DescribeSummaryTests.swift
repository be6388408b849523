import Foundation
import XCTest
import Coordinator
import SiteAgent
import Protocol

/// `describe`'s numeric summaries through the coordinator: the pooled mean
/// and SD combined from the sites' n, mean and SD equal those of the pooled
/// rows (read from the CSV files here), and the text labels its columns.
final class DescribeSummaryTests: XCTestCase {
    /// Each numeric column of the CSV files, all files' values together.
    static func numericColumns(_ files: [URL]) throws -> [String: [Double]] {
        var out: [String: [Double]] = [:], text = Set<String>()
        for f in files {
            let lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
            let header = lines[0].split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"\r")) }
            for line in lines.dropFirst() where !line.isEmpty {
                let cells = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                for (name, cell) in zip(header, cells) {
                    let c = cell.trimmingCharacters(in: CharacterSet(charactersIn: "\r"))
                    if c.isEmpty || c == "NA" { continue }
                    if !c.hasPrefix("\""), let x = Double(c) { out[name, default: []].append(x) } else { text.insert(name) }
                }
            }
        }
        for t in text { out[t] = nil }
        return out
    }

    func describe(_ name: String, policy: DisclosurePolicy = DisclosurePolicy()) throws -> [SiteDescription] {
        let channels: [SiteChannel] = try Fixtures.siteFiles(name).map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: policy)
            return InProcessChannel(site: site) { service.handle(line: $0) }
        }
        return try Analysis.describe(Federation(channels: channels), dataset: "data", numericSummaries: true)
    }

    func testPooledMomentsEqualThePooledRows() throws {
        var compared: [String] = []
        for name in ["sleepstudy", "exam", "dyestuff"] {
            var policy = DisclosurePolicy(); policy.minRows = 2; policy.minCell = 1
            let d = try describe(name, policy: policy)
            let columns = try Self.numericColumns(try Fixtures.siteFiles(name))
            XCTAssertFalse(columns.isEmpty, name)
            for (variable, values) in columns.sorted(by: { $0.key < $1.key }) {
                guard d.allSatisfy({ $0.variables.contains { $0.name == variable && $0.mean != nil } }) else { continue }
                let p = try XCTUnwrap(DescribeReport.pooledMoments(variable, d), "\(name) \(variable)")
                let n = Double(values.count)
                let mean = values.reduce(0, +) / n
                var ss = 0.0
                for x in values { ss += (x - mean) * (x - mean) }
                compared.append("\(name).\(variable)")
                XCTAssertEqual(p.n, values.count, "\(name) \(variable)")
                XCTAssertEqual(p.mean, mean, accuracy: 1e-12 * max(1, abs(mean)), "\(name) \(variable)")
                XCTAssertEqual(p.sd, (ss / (n - 1)).squareRoot(), accuracy: 1e-12 * max(1, abs(mean)), "\(name) \(variable)")
            }
        }
        XCTAssertTrue(["sleepstudy.Reaction", "sleepstudy.Days", "dyestuff.Yield"].allSatisfy(compared.contains), "\(compared)")
        XCTAssertGreaterThanOrEqual(compared.count, 6, "\(compared)")
        // sleepstudy's Reaction: R's mean(sleepstudy$Reaction), sd(...) (the CSVs hold 4 decimals)
        let s = try XCTUnwrap(DescribeReport.pooledMoments("Reaction", try describe("sleepstudy")))
        XCTAssertEqual(s.n, 180)
        XCTAssertEqual(s.mean, 298.50789166666664, accuracy: 1e-4)
        XCTAssertEqual(s.sd, 56.32876440094681, accuracy: 1e-4)
    }

    func testTextLabelsItsColumnsAndSaysWhatIsOmitted() throws {
        var d = try describe("sleepstudy")
        let text = DescribeReport.text(d)
        let lines = text.split(separator: "\n").map(String.init)
        let header = try XCTUnwrap(lines.first { $0.hasPrefix("site") })
        XCTAssertEqual(header.split(separator: " ").map(String.init), ["site", "variable", "type", "n", "missing", "mean", "sd", "levels"])
        XCTAssertTrue(lines.contains { $0.hasPrefix("pooled") && $0.contains("Reaction") && $0.contains("298.51") && $0.contains("56.329") }, text)

        // One site without moments (too few values): its row says why and the pooled row has none.
        let k = try XCTUnwrap(d[1].variables.firstIndex { $0.name == "Reaction" })
        d[1].variables[k].mean = nil; d[1].variables[k].sd = nil; d[1].variables[k].momentsWithheld = "min_rows"
        XCTAssertNil(DescribeReport.pooledMoments("Reaction", d))
        let partial = DescribeReport.text(d)
        XCTAssertTrue(partial.contains("n<min_rows"), partial)
        XCTAssertTrue(partial.contains("pooled mean and sd only when every site sent its moments"), partial)
        // An older agent: no n, no moments; the table still prints.
        d[2].variables[k].nonMissing = nil; d[2].variables[k].mean = nil; d[2].variables[k].sd = nil
        XCTAssertTrue(DescribeReport.text(d).contains("not sent"))
    }

    /// The describe before a fit does not ask for summaries, and a reply that
    /// carries them anyway has them dropped.
    func testSummariesOnlyWhenAsked() throws {
        let url = try Fixtures.siteFiles("sleepstudy")[0]
        let service = SiteService(site: "a", datasets: ["data": .csv(path: url.path, types: [:])], siteColumn: nil)
        let plain = try Analysis.describe(Federation(channels: [InProcessChannel(site: "a") { service.handle(line: $0) }]), dataset: "data")
        XCTAssertTrue(plain[0].variables.allSatisfy { $0.mean == nil && $0.nonMissing == nil })
        let pushy = InProcessChannel(site: "a") { line in
            service.handle(line: line.replacingOccurrences(of: #""dataset":"data""#, with: #""dataset":"data","numeric_summaries":true"#))
        }
        let dropped = try Analysis.describe(Federation(channels: [pushy]), dataset: "data")
        XCTAssertTrue(dropped[0].variables.allSatisfy { $0.mean == nil && $0.nonMissing == nil })
    }
}

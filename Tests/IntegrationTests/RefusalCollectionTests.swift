import Foundation
import XCTest
import ExecutableSupport
import Coordinator
import Protocol
import SiteAgent

/// Issue part 2: when several sites refuse in a round, every refusal is
/// reported (site and reason), and the analyst can proceed without named
/// sites; the result records which sites were left out and why.
final class RefusalCollectionTests: XCTestCase {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-refusals-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A site file with `rows` rows of site, y, x.
    func site(_ dir: URL, _ name: String, index: Int, rows: Int) throws -> URL {
        var lines = ["site,y,x"]
        for r in 0..<rows { lines.append("\(name),\(10 + 0.5 * Double(r) + Double(index) + sin(Double(r * 7 + index * 3))),\(r + 1)") }
        let url = dir.appendingPathComponent("\(name).csv")
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// A, B large and relaxed; S1, S2 too small for the default disclosure rules.
    func channels(_ dir: URL) throws -> [SiteChannel] {
        let specs: [(String, Int, DisclosurePolicy)] = [("A", 20, .off), ("S1", 4, DisclosurePolicy()), ("B", 20, .off), ("S2", 5, DisclosurePolicy())]
        return try specs.enumerated().map { i, s in
            let url = try site(dir, s.0, index: i, rows: s.1)
            let service = SiteService(site: s.0, datasets: ["data": .csv(path: url.path, types: [:])], policy: s.2)
            return InProcessChannel(site: s.0) { service.handle(line: $0) }
        }
    }

    func testEverySiteThatRefusesIsReportedWithItsReason() throws {
        let all = try channels(try temporaryDirectory())
        let error = thrownError({ try Analysis.fit(Federation(channels: all), dataset: "data", formula: "y ~ x + (1 | site)") })
        let failures = try XCTUnwrap(error as? SiteFailures, "expected every refusal, got \(String(describing: error))")
        XCTAssertEqual(failures.sites, ["S1", "S2"], "both refusing sites, in site order")
        for f in failures.failures {
            XCTAssertEqual(f.code, "disclosure_refused", f.description)
            XCTAssertTrue(f.message.contains("min_rows"), f.message)
        }
        let text = failures.description
        XCTAssertTrue(text.hasPrefix("2 sites refused or failed "), text)
        XCTAssertTrue(text.contains("\n  site \"S1\": ") && text.contains("\n  site \"S2\": "), text)
        XCTAssertTrue(text.hasSuffix("leave these sites out with --exclude-sites S1,S2"), text)
        print("all refusals: \(text)")
    }

    /// Sites lacking different model variables: every site with every variable it lacks, in one error.
    func testEverySiteLackingModelVariablesIsNamed() throws {
        let dir = try temporaryDirectory()
        let a = try site(dir, "A", index: 0, rows: 20), b = try site(dir, "B", index: 1, rows: 20)
        func extend(_ url: URL, _ header: String, _ value: (Int) -> String) throws {
            let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
            let out = [lines[0] + "," + header] + lines.dropFirst().enumerated().map { $1 + "," + value($0) }
            try (out.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        }
        let c = try site(dir, "C", index: 2, rows: 20)
        try extend(a, "age,bmi", { "\(40 + $0 % 7),\(20 + $0 % 5)" })
        try extend(b, "age", { "\(40 + $0 % 9)" })
        try extend(c, "bmi", { "\(21 + $0 % 4)" })
        let error = thrownError({ try Analysis.fit(inProcessFederation(files: [a, b, c]), dataset: "data", formula: "y ~ x + age + bmi + (1 | site)") })
        let text = "\(try XCTUnwrap(error))"
        XCTAssertTrue(text.hasPrefix("model variables are missing at 2 sites:\n  site \"B\": bmi\n  site \"C\": age\n"), text)
        XCTAssertTrue(text.hasSuffix("(or be left out of the fit: --exclude-sites B,C)"), text)
    }

    func testExcludedSitesAreRecordedInTheResultTextAndJSON() throws {
        let all = try channels(try temporaryDirectory())
        let reason = "excluded by the analyst (--exclude-sites)"
        let federation = Federation(channels: all.filter { !$0.site.hasPrefix("S") },
                                    exclusions: [SiteExclusion(site: "S1", reason: reason), SiteExclusion(site: "S2", reason: reason)])
        let r = try Analysis.fit(federation, dataset: "data", formula: "y ~ x + (1 | site)")
        XCTAssertEqual(r.nSites, 2)
        XCTAssertEqual(r.excludedSites, ["S1", "S2"])
        XCTAssertEqual(r.exclusions.map(\.site), ["S1", "S2"])
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try r.json().utf8)) as? [String: Any])
        XCTAssertEqual(json["excluded_sites"] as? [String], ["S1", "S2"])
        XCTAssertEqual(json["exclusions"] as? [[String: String]], [["site": "S1", "reason": reason], ["site": "S2", "reason": reason]])
        let text = Report.text(r)
        XCTAssertTrue(text.contains("site S1 left out: \(reason)"), text)
        XCTAssertTrue(text.contains("site S2 left out: \(reason)"), text)
    }

    /// `exclude_sites` in the sites file: the site is never contacted (its
    /// address has nothing listening) and the federation carries the reason.
    func testSitesFileExclusionsAreNotContacted() throws {
        let pki = try TestPKI("exclude")
        defer { pki.remove() }
        let files = try Fixtures.siteFiles("sleepstudy")
        let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        var sites: [[String: Any]] = agents.map { ["name": $0.site, "address": "127.0.0.1:\($0.port)", "server_name": $0.serverName] }
        sites.append(["name": "ghost", "address": "127.0.0.1:1"])
        let json: [String: Any] = [
            "tls": ["certificate": "coordinator/cert.pem", "key": "coordinator/key.pem", "ca": "ca/ca.pem"],
            "sites": sites,
            "exclude_sites": [["site": "ghost", "reason": "closed for maintenance"]],
        ]
        let path = pki.root + "/sites.json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        let file = try SitesFile.load(path: path)
        XCTAssertEqual(file.exclusions, [SiteExclusion(site: "ghost", reason: "excluded in the sites file: closed for maintenance")])
        let federation = try file.connect(timeout: 5)
        defer { federation.close() }
        XCTAssertEqual(federation.sites, ["central", "north", "south"])
        let r = try Analysis.fit(federation, dataset: "data", formula: "Reaction ~ Days + (1 | site)")
        XCTAssertEqual(r.excludedSites, ["ghost"])
        XCTAssertThrowsError(try file.excluding(["nowhere"], reason: "x")) { e in
            XCTAssertTrue("\(e)".contains("no site \"nowhere\" in the sites file"), "\(e)")
        }
        XCTAssertThrowsError(try file.excluding(["central", "north", "south"], reason: "x")) { e in
            XCTAssertTrue("\(e)".contains("every site of the sites file would be excluded"), "\(e)")
        }
    }
}

/// --exclude-sites through the built executable (ExecutableTests.table).
extension ExecutableTests {
    func localExcludeSites() throws {
        let files = try data().files
        let fit = try jsonFit(["local"] + files + ["--formula", Self.sleepstudy, "--exclude-sites", "south"])
        XCTAssertEqual(fit["n_sites"] as? Int, 2)
        XCTAssertEqual(fit["excluded_sites"] as? [String], ["south"])
        XCTAssertEqual(fit["exclusions"] as? [[String: String]], [["site": "south", "reason": "excluded by the analyst (--exclude-sites)"]])
        let text = try fedmix(["local"] + files + ["--formula", Self.sleepstudy, "--exclude-sites", "south", "--in-process"]).out
        XCTAssertTrue(text.contains("site south left out: excluded by the analyst (--exclude-sites)"), text)
        try fedmixUsageError(["local"] + files + ["--formula", Self.sleepstudy, "--exclude-sites", "west"], "--exclude-sites: no site \"west\" among the files")
        try fedmixUsageError(["local"] + files + ["--formula", Self.sleepstudy, "--exclude-sites", "central,north,south"], "every site would be excluded")
    }

    func fitExcludeSites() throws {
        let fit = try jsonFit(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--exclude-sites", "north"])
        XCTAssertEqual(fit["n_sites"] as? Int, 2)
        XCTAssertEqual(fit["excluded_sites"] as? [String], ["north"])
        try fedmixUsageError(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--exclude-sites", "west"], "--exclude-sites: no site \"west\" in the sites file")
    }

    func explainExcludeSites() throws {
        let out = try fedmix(["explain"] + (try remote) + ["--formula", Self.sleepstudy, "--exclude-sites", "north"]).out
        XCTAssertTrue(out.contains("Sites     2;"), out)
        XCTAssertTrue(out.contains("Site north is left out (excluded by the analyst (--exclude-sites)); it is sent nothing"), out)
    }

    func sensitivityExcludeSites() throws {
        let r = try fedmix(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--format", "json",
                                                                   "--exclude-sites", "central", "--in-process"])
        let analyses = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        for a in analyses { XCTAssertEqual((a["result"] as? [String: Any])?["excluded_sites"] as? [String], ["central"]) }
    }
}

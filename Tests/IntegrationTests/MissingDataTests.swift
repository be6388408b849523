import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// Site-structured missingness (the simulated trauma registry): per-site
/// counts are exact, and each missing-data analysis equals the fit of the
/// correspondingly filtered pooled rows at one site.
final class MissingDataTests: XCTestCase {
    var directory: URL!
    var files: [URL] = []

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-missing-\(UUID().uuidString)")
        files = try TraumaRegistrySimulator.write(to: directory.path, scale: 0.5)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// All rows of the kept sites in one CSV (the "pooled rows").
    func pooled(keeping sites: [String]? = nil) throws -> URL {
        var text = TraumaRegistrySimulator.header.joined(separator: ",") + "\n"
        for f in files where sites?.contains(f.deletingPathExtension().lastPathComponent) ?? true {
            text += try String(contentsOf: f, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: true).dropFirst()
                .joined(separator: "\n") + "\n"
        }
        let url = directory.appendingPathComponent("pooled-\(UUID().uuidString.prefix(6)).csv")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func assertSameFit(_ a: FitResult, _ b: FitResult, tolerance: Double, _ label: String) {
        XCTAssertEqual(a.nObs, b.nObs, label)
        XCTAssertLessThanOrEqual(relativeError(a.objective, b.objective), 1e-10, "\(label) objective")
        XCTAssertEqual(a.fixedEffects.map(\.name), b.fixedEffects.map(\.name), label)
        for (x, y) in zip(a.fixedEffects, b.fixedEffects) {
            XCTAssertLessThanOrEqual(abs(x.estimate - y.estimate) / max(abs(y.estimate), y.stdError), tolerance, "\(label) \(x.name)")
            // SEs come from differences of the exact gradient
            XCTAssertLessThanOrEqual(relativeError(x.stdError, y.stdError), 1e-6, "\(label) \(x.name) SE")
        }
        for (x, y) in zip(a.theta, b.theta) { XCTAssertLessThanOrEqual(abs(x - y), tolerance * max(1, abs(y)), "\(label) theta") }
    }

    func testPerSiteCountsAreExact() throws {
        var policy = DisclosurePolicy()        // default min_cell (5): small counts suppressed
        policy.minRows = 1; policy.maxParametersPerRow = .infinity
        let fed = inProcessFederation(files: files, policy: policy)
        // Several sites have fewer than 5 deaths among their complete rows: min_cell refuses the binary outcome there.
        let refused = thrownError({ try Analysis.fit(fed, dataset: "data", formula: "died ~ age + iss + lactate + (1 | site)",
                                                     options: FitOptions(family: .binomial)) })
        XCTAssertTrue("\(refused.map { "\($0)" } ?? "")".contains("each class of a binary outcome must have at least 5 rows"), "\(String(describing: refused))")
        let r = try Analysis.fit(fed, dataset: "data", formula: "iss ~ age + lactate + (1 | site)")
        for f in files {
            let table = try CSVReader.read(path: f.path)
            let site = r.sites.first { $0.site == f.deletingPathExtension().lastPathComponent }!
            XCTAssertEqual(site.nRows, table.rowCount)
            var complete = 0
            for i in 0..<table.rowCount where !["iss", "age", "lactate"].contains(where: { table.column(named: $0)!.isMissing(i) }) { complete += 1 }
            XCTAssertEqual(site.nUsed, complete)
            for v in ["age", "lactate"] {
                let n = (0..<table.rowCount).filter { table.column(named: v)!.isMissing($0) }.count
                if n == 0 || n >= 5 { XCTAssertEqual(site.missing[v], .exact(n), "\(site.site) \(v)") }
                else { XCTAssertEqual(site.missing[v], .suppressed("<5"), "\(site.site) \(v): small counts are suppressed") }
            }
            XCTAssertEqual(site.droppedShare, 1 - Double(complete) / Double(table.rowCount), accuracy: 1e-12)
        }
        let text = Report.missingTable(r)
        print(text)
        XCTAssertTrue(text.contains("ashworth"))
        XCTAssertTrue(r.messages.contains { $0.contains("complete-case analysis drops more than 20%") })
    }

    /// Complete-case GLMM, the missingness model and the exclusion refit each
    /// equal the one-site fit of the filtered pooled rows.
    func testAnalysesEqualFitsOfFilteredPooledRows() throws {
        let cases: [(formula: String, strategy: MissingDataStrategy)] = [
            ("died ~ age + iss + lactate + (1 | site)", MissingDataStrategy()),
            ("missing(lactate) ~ age + iss + (1 | site)", MissingDataStrategy()),
            ("died ~ age + iss + lactate + (1 | site)", MissingDataStrategy(excludeAbove: ["lactate": 0.5])),
            ("died ~ age + iss + lactate + (1 | site)", MissingDataStrategy(indicators: ["lactate": 2])),
        ]
        for c in cases {
            let fed = inProcessFederation(files: files)
            let descriptions = try Analysis.describe(fed, dataset: "data")
            let split = try Analysis.fit(fed, dataset: "data", formula: c.formula, descriptions: descriptions,
                                         options: FitOptions(family: .binomial), missingData: c.strategy)
            let kept = files.map { $0.deletingPathExtension().lastPathComponent }.filter { !split.excludedSites.contains($0) }
            // the same resolved model, with the site as a column of the pooled rows
            let keptDescriptions = descriptions.filter { kept.contains($0.site) }
            var spec = try Analysis.resolve(formula: c.formula, descriptions: keptDescriptions, family: .binomial)
            spec = try c.strategy.apply(to: spec, variables: try VariableCatalog(keptDescriptions).variables(Set(c.strategy.indicators.keys)))
            let one = inProcessFederation(files: [try pooled(keeping: kept)], siteColumn: nil)
            let pooledFit = try FitDriver.fit(one, dataset: "data", spec: spec.groupingSiteByColumn("site"),
                                            options: FitOptions(family: .binomial))
            assertSameFit(split, pooledFit, tolerance: 1e-8, "\(c.formula) [\(c.strategy.label)]")
            if !c.strategy.excludeAbove.isEmpty { XCTAssertEqual(split.excludedSites.sorted(), ["ashworth", "lowmoor", "moorfield"]) }
        }
    }
}

import XCTest
import Foundation
import Protocol
@testable import SiteAgent

/// Row subsets are the unit of protection: the complete cases a model uses,
/// the rows where a 0/1 column is 1, and a filter's rows may not differ by a
/// few rows from a subset answered before, under any dataset name over the
/// same file, and across a restart of the agent.
final class SubsetHistoryTests: XCTestCase {
    static let intercept = DesignColumn(name: "(Intercept)", expr: .number(1))
    static let wardIntercept = RandomTerm(name: "ward", grouping: .withinSite(["ward"]), columns: [intercept])

    private var directory: URL!
    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-subsets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// 60 rows over 4 wards; `w` is missing in 2 rows, `v` in 30; `flag` is 1 in 20 rows, `flag2` in the same 20 and 2 more.
    private func csv() throws -> URL {
        var text = "ward,y,x,w,v,flag,flag2\n"
        for i in 0..<60 {
            let w = i == 7 || i == 41 ? "NA" : String(Double(i % 9) + 0.5)
            let v = i % 2 == 0 ? "NA" : String(Double(i % 5))
            text += "w\(i % 4),\(Double((i * 37) % 11) + 0.25 * Double(i)),\(Double(i % 13)),\(w),\(v),\(i < 20 ? 1 : 0),\(i < 22 ? 1 : 0)\n"
        }
        let url = directory.appendingPathComponent("site.csv")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    private func service(_ file: URL, names: [String] = ["main"]) -> SiteService {
        var datasets: [String: DatasetSource] = [:]
        for n in names { datasets[n] = .csv(path: file.path, types: [:]) }
        return SiteService(site: "A", datasets: datasets, siteColumn: nil, policy: DisclosurePolicy())
    }

    private func spec(_ columns: [String]) -> ModelSpec {
        ModelSpec(formula: "test", response: .value(.variable("y")),
                  fixed: [Self.intercept] + columns.map { DesignColumn(name: $0, expr: .variable($0)) }, terms: [Self.wardIntercept])
    }

    private func prepare(_ s: SiteService, _ spec: ModelSpec, dataset: String = "main") -> Reply {
        s.handle(.prepare(PrepareRequest(session: UUID().uuidString, dataset: dataset, model: spec)))
    }

    private func refusal(_ r: Reply, file: StaticString = #filePath, line: UInt = #line) -> String {
        guard case .error(let e) = r else { XCTFail("expected a refusal, got \(r.typeName)", file: file, line: line); return "" }
        XCTAssertEqual(e.code, "disclosure_refused", e.message, file: file, line: line)
        XCTAssertTrue(e.message.contains("(rule min_rows, differencing)"), e.message, file: file, line: line)
        return e.message
    }

    private func prepared(_ r: Reply, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        guard case .prepared = r else { return XCTFail("\(label): expected prepared, got \(r)", file: file, line: line) }
    }

    /// Adding a variable missing in 2 rows would let the two answers be
    /// subtracted: refused; one missing in 30 rows is a different population.
    func testCompleteCasesThatDifferByAFewRowsAreRefused() throws {
        let s = service(try csv())
        prepared(prepare(s, spec(["x"])), "all 60 rows")
        let m = refusal(prepare(s, spec(["x", "w"])))
        XCTAssertTrue(m.contains("--missing-indicator"), m)
        prepared(prepare(s, spec(["x", "v"])), "30 rows fewer")
        prepared(prepare(s, spec(["x"])), "the same rows again")
    }

    /// Two 0/1 columns whose ones differ by 2 rows.
    func testIndicatorsThatDifferByAFewRowsAreRefused() throws {
        let s = service(try csv())
        prepared(prepare(s, spec(["x", "flag"])), "flag")
        let m = refusal(prepare(s, spec(["x", "flag2"])))
        XCTAssertTrue(m.contains("flag2"), m)
    }

    /// A second dataset name over the same file shares the history.
    func testAnotherDatasetNameOverTheSameFileSharesTheHistory() throws {
        let s = service(try csv(), names: ["main", "copy"])
        prepared(prepare(s, spec(["x"]), dataset: "main"), "main")
        _ = refusal(prepare(s, spec(["x", "w"]), dataset: "copy"))
    }

    /// The history survives a restart when it is persisted.
    func testHistorySurvivesARestart() throws {
        let file = try csv()
        let store = directory.appendingPathComponent("audit.db.subsets").path
        let first = service(file)
        try first.persistSubsetHistory(at: store)
        prepared(prepare(first, spec(["x"])), "before the restart")
        let restarted = service(file)
        try restarted.persistSubsetHistory(at: store)
        _ = refusal(prepare(restarted, spec(["x", "w"])))
        let notPersisted = service(file)
        prepared(prepare(notPersisted, spec(["x", "w"])), "a site without the history (control)")
    }
}

import XCTest
import Foundation
@testable import SiteAgent

/// The agent's configuration file: a good file reads as written, and every
/// mistake a hospital can make is refused with a message that names the key
/// and says what is expected.
final class AgentConfigTests: XCTestCase {

    static let base = "/srv/fedmix/agent"

    /// A complete, valid configuration as a JSON object (mutated by tests).
    static func goodObject() -> [String: Any] {
        [
            "site": "St-Olav",
            "listen": "0.0.0.0:7443",
            "tls": ["certificate": "certs/agent.pem", "key": "certs/agent.key", "ca": "/etc/fedmix/ca.pem",
                    "allowed_coordinators": ["coordinator.example.org"]],
            "datasets": [
                "registry": ["csv": "data/registry.csv", "types": ["ward": "text", "age": "numeric"]],
                "labs": ["sqlite": "../db/labs.sqlite", "table": "results"],
                "visits": ["sqlite": "/var/lib/ehr.sqlite", "query": "SELECT * FROM visits WHERE year >= 2020"],
            ],
            "site_column": "hospital",
            "allowed_variables": ["sbp", "age", "sex", "ward", "hospital"],
            "denied_variables": ["patient_name"],
            "audit_log": "logs/audit.jsonl",
            "disclosure": ["min_rows": 25, "min_cell": 10, "max_params_per_row": 0.2, "max_rounds_per_session": 50,
                           "max_sessions_per_day": 20, "max_listed_levels": 30],
            "session_timeout_seconds": 900.5,
            "max_line_bytes": 4_000_000,
        ]
    }

    static func json(_ object: Any) -> Data {
        try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }

    func parse(_ object: Any) throws -> AgentConfig {
        try AgentConfig.parse(Self.json(object), path: "agent.json", baseDirectory: Self.base)
    }

    /// Parses `object`, expecting a ConfigError; returns its message.
    func configError(_ object: Any, file: StaticString = #filePath, line: UInt = #line) -> String {
        configError(data: Self.json(object), file: file, line: line)
    }

    func configError(data: Data, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let c = try AgentConfig.parse(data, path: "agent.json", baseDirectory: Self.base)
            XCTFail("accepted a bad configuration: \(c)", file: file, line: line)
        } catch let e as ConfigError {
            XCTAssertEqual(e.path, "agent.json", file: file, line: line)
            XCTAssertEqual(e.description, "agent.json: \(e.message)", file: file, line: line)
            return e.message
        } catch {
            XCTFail("expected a ConfigError, got \(type(of: error)): \(error)", file: file, line: line)
        }
        return ""
    }

    func with(_ change: (inout [String: Any]) -> Void) -> [String: Any] {
        var o = Self.goodObject()
        change(&o)
        return o
    }

    func withDataset(_ name: String, _ value: Any) -> [String: Any] {
        with { $0["datasets"] = [name: value] }
    }

    func withDisclosure(_ key: String, _ value: Any) -> [String: Any] {
        with { $0["disclosure"] = [key: value] }
    }

    // MARK: A good configuration

    func testGoodConfigurationReadsAsWritten() throws {
        let c = try parse(Self.goodObject())
        XCTAssertEqual(c.site, "St-Olav")
        XCTAssertEqual(c.host, "0.0.0.0")
        XCTAssertEqual(c.port, 7443)
        XCTAssertEqual(c.tls.certificate, "/srv/fedmix/agent/certs/agent.pem")
        XCTAssertEqual(c.tls.key, "/srv/fedmix/agent/certs/agent.key")
        XCTAssertEqual(c.tls.ca, "/etc/fedmix/ca.pem")
        XCTAssertEqual(c.tls.allowedCoordinators, ["coordinator.example.org"])
        XCTAssertEqual(c.datasets["registry"], .csv(path: "/srv/fedmix/agent/data/registry.csv", types: ["ward": .text, "age": .numeric]))
        XCTAssertEqual(c.datasets["labs"], .sqliteTable(path: "/srv/fedmix/db/labs.sqlite", table: "results", types: [:]))
        XCTAssertEqual(c.datasets["visits"], .sqliteQuery(path: "/var/lib/ehr.sqlite", query: "SELECT * FROM visits WHERE year >= 2020", types: [:]))
        XCTAssertEqual(c.datasets.count, 3)
        XCTAssertEqual(c.siteColumn, "hospital")
        XCTAssertEqual(c.allowedVariables, ["sbp", "age", "sex", "ward", "hospital"])
        XCTAssertEqual(c.deniedVariables, ["patient_name"])
        XCTAssertEqual(c.auditLog, "/srv/fedmix/agent/logs/audit.jsonl")
        XCTAssertEqual(c.disclosure.minRows, 25)
        XCTAssertEqual(c.disclosure.minCell, 10)
        XCTAssertEqual(c.disclosure.maxParametersPerRow, 0.2)
        XCTAssertEqual(c.disclosure.maxRoundsPerSession, 50)
        XCTAssertEqual(c.disclosure.maxSessionsPerDay, 20)
        XCTAssertEqual(c.disclosure.maxListedLevels, 30)
        XCTAssertEqual(c.sessionTimeoutSeconds, 900.5)
        XCTAssertEqual(c.maxLineBytes, 4_000_000)
        XCTAssertNil(c.path)

        // The service built from it carries the rules.
        let service = SiteService(config: c)
        XCTAssertEqual(service.site, "St-Olav")
        XCTAssertEqual(service.siteColumn, "hospital")
        XCTAssertEqual(service.policy, c.disclosure)
        XCTAssertTrue(service.mayUse("sbp"))
        XCTAssertFalse(service.mayUse("patient_name"))
        XCTAssertFalse(service.mayUse("income"), "not on the allowlist")
    }

    func testMinimalConfigurationTakesTheDefaults() throws {
        let c = try parse([
            "site": "A", "listen": "[::1]:9000",
            "tls": ["certificate": "a.pem", "key": "a.key", "ca": "ca.pem"],
            "datasets": ["main": ["csv": "a.csv"]],
        ])
        XCTAssertEqual(c.host, "::1", "brackets around an IPv6 address are removed")
        XCTAssertEqual(c.port, 9000)
        XCTAssertEqual(c.siteColumn, "site")
        XCTAssertNil(c.allowedVariables, "no allowlist: every variable")
        XCTAssertEqual(c.deniedVariables, [])
        XCTAssertNil(c.auditLog)
        XCTAssertEqual(c.tls.allowedCoordinators, [])
        XCTAssertEqual(c.disclosure, DisclosurePolicy())
        XCTAssertEqual(c.sessionTimeoutSeconds, 3600)
        XCTAssertEqual(c.maxLineBytes, 16 * 1024 * 1024)
    }

    // MARK: Audit retention

    func testAuditRetentionDays() throws {
        XCTAssertNil(try parse(Self.goodObject()).auditRetentionDays, "no retention: entries are kept")
        XCTAssertEqual(try parse(with { $0["audit_retention_days"] = 365 }).auditRetentionDays, 365)
        XCTAssertEqual(configError(with { $0["audit_retention_days"] = 0 }),
                       "\"audit_retention_days\" must be at least 1 (leave it out to keep every entry)")
        XCTAssertEqual(configError(with { $0["audit_retention_days"] = 1.5 }), "\"audit_retention_days\" must be a non-negative integer")
        XCTAssertEqual(configError(with { $0["audit_retention_days"] = "90" }), "\"audit_retention_days\" must be a non-negative integer")
        XCTAssertEqual(configError(with { $0["audit_retention_days"] = 90; $0["audit_log"] = nil }), "\"audit_retention_days\" needs \"audit_log\"")
    }

    func testSiteColumnNullMeansNoSiteColumn() throws {
        let c = try parse(with { $0["site_column"] = NSNull() })
        XCTAssertNil(c.siteColumn)
    }

    // MARK: Relative paths

    func testRelativePathsAreResolvedAgainstTheConfigurationsFolder() throws {
        let c = try parse(Self.goodObject())
        // Relative: against the folder; ".." is resolved; absolute: unchanged.
        XCTAssertEqual(c.tls.certificate, "/srv/fedmix/agent/certs/agent.pem")
        XCTAssertEqual(c.datasets["labs"], .sqliteTable(path: "/srv/fedmix/db/labs.sqlite", table: "results", types: [:]))
        XCTAssertEqual(c.tls.ca, "/etc/fedmix/ca.pem")
        XCTAssertEqual(c.auditLog, "/srv/fedmix/agent/logs/audit.jsonl")
    }

    func testLoadResolvesPathsAgainstTheFilesFolderNotTheWorkingDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("etc"), withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("etc/agent.json")
        try Self.json([
            "site": "A", "listen": "127.0.0.1:7443",
            "tls": ["certificate": "agent.pem", "key": "./keys/agent.key", "ca": "../ca/ca.pem"],
            "datasets": ["main": ["csv": "../data/a.csv"]],
            "audit_log": "audit.jsonl",
        ]).write(to: file)
        let c = try AgentConfig.load(path: file.path)
        let etc = dir.appendingPathComponent("etc").standardizedFileURL.path
        let root = dir.standardizedFileURL.path
        XCTAssertEqual(c.path, file.path)
        XCTAssertEqual(c.tls.certificate, etc + "/agent.pem")
        XCTAssertEqual(c.tls.key, etc + "/keys/agent.key")
        XCTAssertEqual(c.tls.ca, root + "/ca/ca.pem")
        XCTAssertEqual(c.datasets["main"], .csv(path: root + "/data/a.csv", types: [:]))
        XCTAssertEqual(c.auditLog, etc + "/audit.jsonl")
        XCTAssertEqual(c.dataSources.count, 1)
    }

    func testLoadOfAMissingFileSaysSo() {
        let path = "/nonexistent-\(UUID().uuidString)/agent.json"
        XCTAssertThrowsError(try AgentConfig.load(path: path)) { error in
            guard let e = error as? ConfigError else { return XCTFail("\(type(of: error)): \(error)") }
            XCTAssertEqual(e.path, path)
            XCTAssertTrue(e.message.contains("cannot read the file"), e.message)
            XCTAssertTrue(e.message.contains("does it exist"), e.message)
        }
    }

    // MARK: Unknown keys

    func testUnknownTopLevelKeyIsNamedWithTheAllowedKeys() {
        let m = configError(with { $0["min_rows"] = 5 })
        XCTAssertTrue(m.hasPrefix("unknown key \"min_rows\""), m)
        XCTAssertTrue(m.contains("allowed here: allowed_variables, audit_log, audit_retention_days, datasets, denied_variables, disclosure, limits, listen, max_line_bytes, "
                                 + "session_timeout_seconds, site, site_column, tls"), m)
    }

    func testUnknownNestedKeyIsNamedWithItsPath() {
        let m = configError(with { $0["disclosure"] = ["min_rowz": 10] })
        XCTAssertTrue(m.hasPrefix("unknown key \"disclosure.min_rowz\""), m)
        XCTAssertTrue(m.contains("min_rows"), "the message lists the key meant: \(m)")
        XCTAssertTrue(m.contains("allowed here: max_listed_levels, max_params_per_row, max_rounds_per_session, max_row_share, max_sessions_per_day, min_cell, min_rows"), m)

        let t = configError(with { $0["tls"] = ["certificate": "a", "key": "b", "ca": "c", "allowed_coordinator": ["x"]] })
        XCTAssertTrue(t.hasPrefix("unknown key \"tls.allowed_coordinator\""), t)
        XCTAssertTrue(t.contains("allowed_coordinators"), t)

        let d = configError(withDataset("main", ["sqlite": "x.db", "tabel": "t"]))
        XCTAssertTrue(d.hasPrefix("unknown key \"datasets.main.tabel\""), d)
        XCTAssertTrue(d.contains("csv, query, sqlite, table, types"), d)
    }

    // MARK: Wrong types

    func testWrongTypesNameTheKeyAndTheExpectedType() {
        XCTAssertEqual(configError(with { $0["site"] = 5 }), "\"site\" must be a non-empty string")
        XCTAssertEqual(configError(with { $0["site"] = "" }), "\"site\" must be a non-empty string")
        XCTAssertEqual(configError(with { $0["listen"] = 7443 }), "\"listen\" must be a non-empty string")
        XCTAssertEqual(configError(with { $0["tls"] = "certs/" }), "\"tls\" must be an object with certificate, key, ca")
        XCTAssertEqual(configError(with { $0["tls"] = ["certificate": ["a"], "key": "b", "ca": "c"] }),
                       "\"tls.certificate\" must be a non-empty string")
        XCTAssertEqual(configError(with { $0["tls"] = ["certificate": "a", "key": "b", "ca": "c", "allowed_coordinators": "x"] }),
                       "\"tls.allowed_coordinators\" must be an array of strings")
        XCTAssertEqual(configError(with { $0["allowed_variables"] = "age" }), "\"allowed_variables\" must be an array of strings")
        XCTAssertEqual(configError(with { $0["denied_variables"] = [1, 2] }), "\"denied_variables\" must be an array of strings")
        XCTAssertEqual(configError(with { $0["site_column"] = 3 }), "\"site_column\" must be a non-empty string")
        XCTAssertEqual(configError(with { $0["audit_log"] = true }), "\"audit_log\" must be a non-empty string")
        XCTAssertEqual(configError(with { $0["session_timeout_seconds"] = "1h" }), "\"session_timeout_seconds\" must be a non-negative number")
        XCTAssertEqual(configError(with { $0["max_line_bytes"] = 1.5 }), "\"max_line_bytes\" must be a non-negative integer")
        XCTAssertEqual(configError(with { $0["disclosure"] = [10] }), "\"disclosure\" must be an object")
        XCTAssertEqual(configError(with { $0["datasets"] = ["main": "a.csv"] }), "datasets.main must be an object")
    }

    func testDisclosureThresholdsMustBeNonNegativeIntegers() {
        for bad: Any in ["10", 10.5, -1, true, NSNull()] {
            XCTAssertEqual(configError(withDisclosure("min_rows", bad)), "\"disclosure.min_rows\" must be a non-negative integer", "\(bad)")
        }
        XCTAssertEqual(configError(withDisclosure("min_cell", "5")), "\"disclosure.min_cell\" must be a non-negative integer")
        XCTAssertEqual(configError(withDisclosure("max_params_per_row", "0.33")), "\"disclosure.max_params_per_row\" must be a non-negative number")
        XCTAssertEqual(configError(withDisclosure("max_params_per_row", -0.5)), "\"disclosure.max_params_per_row\" must be a non-negative number")
        XCTAssertEqual(configError(withDisclosure("max_rounds_per_session", [200])), "\"disclosure.max_rounds_per_session\" must be a non-negative integer")
    }

    func testColumnTypesMustBeNumericOrText() {
        let m = configError(withDataset("main", ["csv": "a.csv", "types": ["ward": "string"]]))
        XCTAssertEqual(m, "datasets.main.types.ward must be \"numeric\" or \"text\"")
        let m2 = configError(withDataset("main", ["csv": "a.csv", "types": ["ward", "text"]]))
        XCTAssertEqual(m2, "datasets.main.types must map column names to \"numeric\" or \"text\"")
    }

    func testNotJSONOrNotAnObjectIsRefused() {
        let m = configError(data: Data("{\"site\": \"A\",".utf8))
        XCTAssertTrue(m.hasPrefix("not valid JSON"), m)
        XCTAssertEqual(configError(data: Data("[1, 2]".utf8)), "the top level must be a JSON object")
    }

    // MARK: Missing required keys

    func testMissingRequiredKeysAreNamed() {
        XCTAssertEqual(configError(with { $0["site"] = nil }), "\"site\" is required")
        XCTAssertEqual(configError(with { $0["listen"] = nil }), "\"listen\" is required")
        XCTAssertEqual(configError(with { $0["tls"] = nil }), "\"tls\" must be an object with certificate, key, ca")
        XCTAssertEqual(configError(with { $0["tls"] = ["certificate": "a", "ca": "c"] }), "\"tls.key\" is required")
        XCTAssertEqual(configError(with { $0["tls"] = ["certificate": "a", "key": "b"] }), "\"tls.ca\" is required")
        XCTAssertEqual(configError(with { $0["datasets"] = nil }), "\"datasets\" must be an object naming at least one dataset")
        XCTAssertEqual(configError(with { $0["datasets"] = [String: Any]() }), "\"datasets\" must be an object naming at least one dataset")
        let none = configError(withDataset("main", ["types": ["x": "text"]]))
        XCTAssertTrue(none.contains("datasets.main"), none)
        XCTAssertTrue(none.contains("needs \"csv\": PATH or \"sqlite\": PATH with \"table\" or \"query\""), none)
    }

    // MARK: Listen address

    func testBadListenAddressesAreRefusedWithAnExample() {
        for bad in ["localhost", "0.0.0.0:", "0.0.0.0:https", "0.0.0.0:65536", "0.0.0.0:-1", "[::1]"] {
            XCTAssertEqual(configError(with { $0["listen"] = bad }), "\"listen\" must be HOST:PORT, e.g. \"0.0.0.0:7443\"", bad)
        }
    }

    // MARK: Datasets

    func testSQLiteDatasetWithBothTableAndQueryIsRefused() {
        let m = configError(withDataset("labs", ["sqlite": "labs.db", "table": "results", "query": "SELECT * FROM results"]))
        XCTAssertTrue(m.contains("datasets.labs"), m)
        XCTAssertTrue(m.contains("needs exactly one of \"table\" or \"query\""), m)
    }

    func testSQLiteDatasetWithNeitherTableNorQueryIsRefused() {
        let m = configError(withDataset("labs", ["sqlite": "labs.db"]))
        XCTAssertTrue(m.contains("datasets.labs"), m)
        XCTAssertTrue(m.contains("needs exactly one of \"table\" or \"query\""), m)
    }

    func testCSVDatasetWithSQLiteKeysIsRefused() {
        for extra: [String: Any] in [["table": "t"], ["query": "SELECT 1"], ["sqlite": "x.db"]] {
            var d: [String: Any] = ["csv": "a.csv"]
            d.merge(extra) { a, _ in a }
            let m = configError(withDataset("main", d))
            XCTAssertEqual(m, "datasets.main.csv must be a path, and a CSV dataset has no sqlite, table or query", "\(extra)")
        }
        XCTAssertEqual(configError(withDataset("main", ["csv": 3])),
                       "datasets.main.csv must be a path, and a CSV dataset has no sqlite, table or query")
    }
}

// MARK: - Known bugs (these tests fail until the production code is fixed)

extension AgentConfigTests {
    /// 0 and 1 are numbers a hospital writes: min_cell 1 turns suppression
    /// off, max_params_per_row 1 allows one parameter per row, a session
    /// timeout of 1 second. JSON true/false must stay refused.
    func testThresholdsOfZeroAndOneAreAccepted() {
        let cases: [(String, Any, (AgentConfig) -> Double)] = [
            ("min_rows", 1, { Double($0.disclosure.minRows) }),
            ("min_cell", 1, { Double($0.disclosure.minCell) }),
            ("min_cell", 0, { Double($0.disclosure.minCell) }),
            ("max_params_per_row", 1, { $0.disclosure.maxParametersPerRow }),
            ("max_rounds_per_session", 1, { Double($0.disclosure.maxRoundsPerSession) }),
            ("max_sessions_per_day", 1, { Double($0.disclosure.maxSessionsPerDay) }),
            ("max_listed_levels", 0, { Double($0.disclosure.maxListedLevels) }),
        ]
        for (key, value, read) in cases {
            do {
                let c = try parse(withDisclosure(key, value))
                XCTAssertEqual(read(c), Double("\(value)"), "disclosure.\(key)")
            } catch {
                XCTFail("disclosure.\(key) = \(value) refused: \(error)")
            }
        }
        do {
            let c = try parse(with { $0["session_timeout_seconds"] = 1; $0["max_line_bytes"] = 1 })
            XCTAssertEqual(c.sessionTimeoutSeconds, 1)
            XCTAssertEqual(c.maxLineBytes, 1)
        } catch {
            XCTFail("session_timeout_seconds = 1 / max_line_bytes = 1 refused: \(error)")
        }
        XCTAssertEqual(configError(withDisclosure("min_cell", true)), "\"disclosure.min_cell\" must be a non-negative integer")
    }
}

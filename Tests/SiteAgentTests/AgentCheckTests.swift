import XCTest
import Foundation
import CSQLite
import Protocol
import ExecutableSupport
@testable import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// `fedmix-agent check`: a good configuration passes with one ok line per
/// check; each class of failure (configuration, CA, certificate, expiry,
/// chain, key, allowed coordinators, dataset, audit log, listen address)
/// gives its own FAIL line with a fix and a non-zero exit status, and the
/// other checks still run.
final class AgentCheckTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("fedmix-check-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try Certificates.createAuthority(directory: dir + "/ca", commonName: "check test CA", days: 400)
        try Certificates.createAuthority(directory: dir + "/other-ca", commonName: "Someone else's CA", days: 400)
        try Certificates.issue(caDirectory: dir + "/ca", name: "agent.hospital-a.example", outDirectory: dir + "/agent", days: 200)
        var csv = "patient,site,age,sbp,ward\n"
        for i in 1...12 { csv += "p\(i),hospital-a,\(40 + i),\(120 + i),w\(i % 3)\n" }
        try csv.write(toFile: dir + "/registry.csv", atomically: true, encoding: .utf8)
        try makeDatabase(dir + "/labs.db", "CREATE TABLE results (site TEXT, age REAL, crp REAL);" +
            (1...12).map { "INSERT INTO results VALUES ('hospital-a', \(30 + $0), \(Double($0) / 2));" }.joined())
        try FileManager.default.createDirectory(atPath: dir + "/audit", withIntermediateDirectories: true)
    }

    override func tearDown() {
        _ = chmod(dir + "/audit", 0o755)
        try? FileManager.default.removeItem(atPath: dir)
    }

    // MARK: - Helpers

    /// A complete, valid configuration (paths relative to the file).
    func goodConfig() -> [String: Any] {
        [
            "site": "hospital-a",
            "listen": "127.0.0.1:0",
            "tls": ["certificate": "agent/cert.pem", "key": "agent/key.pem", "ca": "ca/ca.pem",
                    "allowed_coordinators": ["coordinator"]],
            "datasets": ["registry": ["csv": "registry.csv", "types": ["ward": "text"]],
                         "labs": ["sqlite": "labs.db", "table": "results"]],
            "allowed_variables": ["site", "age", "sbp", "ward", "crp"],
            "audit_log": "audit/audit.log",
            "disclosure": ["min_rows": 10],
        ]
    }

    /// Writes `object` as DIR/NAME and returns its path.
    func write(_ object: Any, name: String = "agent.json") throws -> String {
        let path = dir + "/" + name
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        return path
    }

    func check(_ object: Any, _ options: AgentCheck.Options = AgentCheck.Options()) throws -> AgentCheckReport {
        AgentCheck.run(configPath: try write(object), options: options)
    }

    /// `config` with `body` applied to its "tls" object.
    func withTLS(_ body: (inout [String: Any]) -> Void) -> [String: Any] {
        var c = goodConfig()
        var tls = c["tls"] as! [String: Any]
        body(&tls)
        c["tls"] = tls
        return c
    }

    /// Asserts the report failed (exit 1) on exactly the checks `failing`,
    /// each with a FAIL line holding `contains` and a fix; returns the first failure.
    @discardableResult
    func assertFails(_ report: AgentCheckReport, _ failing: [String], contains: String, fix: String? = nil,
                     file: StaticString = #filePath, line: UInt = #line) -> AgentCheckResult? {
        XCTAssertFalse(report.passed, file: file, line: line)
        XCTAssertEqual(report.exitCode, 1, file: file, line: line)
        XCTAssertEqual(report.failures.map(\.check), failing, report.results.map(\.line).joined(separator: "\n"), file: file, line: line)
        guard let first = report.failures.first else { return nil }
        XCTAssertTrue(first.line.hasPrefix("FAIL \(first.check): "), first.line, file: file, line: line)
        XCTAssertTrue(first.detail.contains(contains), "\"\(first.detail)\" lacks \"\(contains)\"", file: file, line: line)
        XCTAssertNotNil(first.fix, file: file, line: line)
        XCTAssertTrue(first.line.contains(" — fix: "), first.line, file: file, line: line)
        if let fix { XCTAssertTrue(first.fix?.contains(fix) ?? false, "fix \"\(first.fix ?? "")\" lacks \"\(fix)\"", file: file, line: line) }
        for r in report.results where r.status == .fail {
            XCTAssertNotNil(r.fix, "\(r.line) has no fix", file: file, line: line)
        }
        return first
    }

    func status(_ report: AgentCheckReport, _ check: String) -> AgentCheckResult.Status? { report.result(check)?.status }

    // MARK: - A good configuration

    func testGoodConfigurationPassesEveryCheck() throws {
        let report = try check(goodConfig())
        let lines = report.results.map(\.line).joined(separator: "\n")
        XCTAssertEqual(report.results.map(\.check),
                       ["config", "ca", "certificate", "expiry", "chain", "key", "allowed_coordinators",
                        "dataset labs", "dataset registry", "variables", "audit_log", "listen"], lines)
        XCTAssertTrue(report.results.allSatisfy { $0.status == .ok }, lines)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.exitCode, 0)
        XCTAssertTrue(report.results.allSatisfy { $0.line.hasPrefix("ok   \($0.check): ") && !$0.line.contains("fix:") }, lines)
        XCTAssertEqual(report.summary, "12 ok, 0 warnings, 0 failed")

        let certificate = try XCTUnwrap(report.result("certificate")).detail
        XCTAssertTrue(certificate.contains("names agent.hospital-a.example"), certificate)
        let info = try Certificates.inspect(certificatePath: dir + "/agent/cert.pem")
        XCTAssertTrue(certificate.contains(info.fingerprintSHA256), certificate)
        XCTAssertTrue(try XCTUnwrap(report.result("expiry")).detail.contains("(199 days)"), lines)
        XCTAssertTrue(try XCTUnwrap(report.result("chain")).detail.contains("issued by CN=check test CA"), lines)
        XCTAssertTrue(try XCTUnwrap(report.result("dataset registry")).detail.hasSuffix("registry.csv: 12 rows, 5 columns (2 numeric, 3 text), all readable"), lines)
        XCTAssertTrue(try XCTUnwrap(report.result("dataset labs")).detail.contains("12 rows, 3 columns"), lines)
        XCTAssertTrue(try XCTUnwrap(report.result("audit_log")).detail.hasSuffix("audit/audit.log can be created in \(dir)/audit"), lines)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/audit/audit.log"), "the check leaves no audit file behind")
        XCTAssertTrue(try XCTUnwrap(report.result("listen")).detail.hasPrefix("127.0.0.1:0 can be bound"), lines)
    }

    // MARK: - Configuration

    func testConfigurationErrorsStopAtTheConfigLine() throws {
        var unknown = goodConfig(); unknown["disclosur"] = ["min_rows": 5]
        assertFails(try check(unknown), ["config"], contains: "unknown key \"disclosur\"", fix: "deploy/README.md")

        var wrongType = goodConfig(); wrongType["disclosure"] = ["min_rows": "ten"]
        assertFails(try check(wrongType), ["config"], contains: "\"disclosure.min_rows\" must be a non-negative integer")

        var missing = goodConfig(); missing["site"] = nil
        assertFails(try check(missing), ["config"], contains: "\"site\" is required")

        let absent = AgentCheck.run(configPath: dir + "/nowhere.json")
        assertFails(absent, ["config"], contains: "cannot read the file", fix: "--config FILE")
        XCTAssertEqual(absent.results.count, 1)

        try "{\"site\": ".write(toFile: dir + "/broken.json", atomically: true, encoding: .utf8)
        assertFails(AgentCheck.run(configPath: dir + "/broken.json"), ["config"], contains: "not valid JSON")
    }

    // MARK: - Certificates

    func testMissingCertificateKeyAndCAFiles() throws {
        let noCert = try check(withTLS { $0["certificate"] = "agent/missing.pem" })
        assertFails(noCert, ["certificate"], contains: "certificate file \(dir)/agent/missing.pem does not exist", fix: "fedmix certs issue")
        XCTAssertEqual(status(noCert, "expiry"), .skip)
        XCTAssertEqual(status(noCert, "chain"), .skip)
        XCTAssertEqual(status(noCert, "key"), .skip)
        XCTAssertEqual(status(noCert, "dataset registry"), .ok, "the other checks still run")
        XCTAssertEqual(status(noCert, "listen"), .ok)

        assertFails(try check(withTLS { $0["key"] = "agent/missing-key.pem" }), ["key"],
                    contains: "private key file \(dir)/agent/missing-key.pem does not exist")

        let noCA = try check(withTLS { $0["ca"] = "ca/missing.pem" })
        assertFails(noCA, ["ca"], contains: "CA certificate file \(dir)/ca/missing.pem does not exist", fix: "tls.ca")
        XCTAssertEqual(status(noCA, "chain"), .skip)
        XCTAssertEqual(status(noCA, "key"), .skip)

        try "not a certificate\n".write(toFile: dir + "/agent/garbage.pem", atomically: true, encoding: .utf8)
        assertFails(try check(withTLS { $0["certificate"] = "agent/garbage.pem" }), ["certificate"], contains: "is not PEM")
    }

    func testCertificateThatIsACAAndCAFileThatIsALeaf() throws {
        let caAsCert = try check(withTLS { $0["certificate"] = "ca/ca.pem" })
        let first = assertFails(caAsCert, ["certificate", "chain", "key"], contains: "is a CA certificate (CN=check test CA), not this agent's certificate")
        XCTAssertEqual(first?.fix, "set tls.certificate to the agent's cert.pem (tls.ca takes the CA's ca.pem)")
        // A CA certificate may not serve TLS (keyUsage keyCertSign, cRLSign).
        XCTAssertTrue(try XCTUnwrap(caAsCert.result("chain")).detail.hasSuffix("failed: unsuitable certificate purpose"))

        assertFails(try check(withTLS { $0["ca"] = "agent/cert.pem" }), ["ca"],
                    contains: "holds CN=agent.hospital-a.example, which is not a CA certificate", fix: "not a site or coordinator certificate")
    }

    func testExpiredCertificateFailsAndOneExpiringSoonWarns() throws {
        try Certificates.issue(caDirectory: dir + "/ca", name: "agent.hospital-a.example", outDirectory: dir + "/expired",
                               days: -1, notBeforeOffsetDays: -30)
        let expired = try check(withTLS { $0["certificate"] = "expired/cert.pem"; $0["key"] = "expired/key.pem" })
        assertFails(expired, ["expiry"], contains: "the certificate expired on", fix: "kill -HUP")
        XCTAssertEqual(status(expired, "chain"), .ok, "the chain check ignores dates")

        try Certificates.issue(caDirectory: dir + "/ca", name: "agent.hospital-a.example", outDirectory: dir + "/soon", days: 10)
        let soon = try check(withTLS { $0["certificate"] = "soon/cert.pem"; $0["key"] = "soon/key.pem" })
        XCTAssertTrue(soon.passed, "a warning is not a failure")
        XCTAssertEqual(soon.exitCode, 0)
        let warning = try XCTUnwrap(soon.result("expiry"))
        XCTAssertEqual(warning.status, .warn)
        XCTAssertTrue(warning.line.hasPrefix("warn expiry: the certificate expires in 9 days ("), warning.line)
        XCTAssertTrue(warning.line.contains(" — fix: rotate it before then"), warning.line)
        XCTAssertEqual(soon.summary, "11 ok, 1 warning, 0 failed")

        // The threshold is an option: 5 days' warning lets it pass silently.
        let relaxed = try check(withTLS { $0["certificate"] = "soon/cert.pem"; $0["key"] = "soon/key.pem" },
                                AgentCheck.Options(expiryWarningDays: 5))
        XCTAssertEqual(status(relaxed, "expiry"), .ok)

        // Checked at a later date, the good certificate has expired.
        let later = try check(goodConfig(), AgentCheck.Options(now: Date().addingTimeInterval(300 * 86400)))
        assertFails(later, ["expiry"], contains: "expired on")
        XCTAssertEqual(status(later, "ca"), .ok)
    }

    func testCertificateFromAnotherCAFailsTheChain() throws {
        try Certificates.issue(caDirectory: dir + "/other-ca", name: "agent.hospital-a.example", outDirectory: dir + "/foreign", days: 200)
        let report = try check(withTLS { $0["certificate"] = "foreign/cert.pem"; $0["key"] = "foreign/key.pem" })
        assertFails(report, ["chain"], contains: "against the CA in \(dir)/ca/ca.pem (as a coordinator will) failed: unable to get local issuer certificate",
                    fix: "fedmix certs issue --ca")
        XCTAssertEqual(status(report, "key"), .ok)

        // The old and the new CA in one file (a CA change-over): trusted.
        let both = try String(contentsOfFile: dir + "/ca/ca.pem", encoding: .utf8) + String(contentsOfFile: dir + "/other-ca/ca.pem", encoding: .utf8)
        try both.write(toFile: dir + "/both.pem", atomically: true, encoding: .utf8)
        let changeOver = try check(withTLS { $0["certificate"] = "foreign/cert.pem"; $0["key"] = "foreign/key.pem"; $0["ca"] = "both.pem" })
        XCTAssertTrue(changeOver.passed, changeOver.results.map(\.line).joined(separator: "\n"))
        XCTAssertTrue(try XCTUnwrap(changeOver.result("chain")).detail.contains("issued by CN=Someone else's CA"))
        XCTAssertTrue(try XCTUnwrap(changeOver.result("ca")).detail.contains("trusts CN=check test CA until"))
        XCTAssertTrue(try XCTUnwrap(changeOver.result("ca")).detail.contains("; CN=Someone else's CA until"))
    }

    func testKeyOfAnotherCertificateFailsTheKeyCheck() throws {
        try Certificates.issue(caDirectory: dir + "/ca", name: "agent.hospital-a.example", outDirectory: dir + "/second", days: 200)
        let report = try check(withTLS { $0["key"] = "second/key.pem" })
        let failure = assertFails(report, ["key"], contains: "private key \(dir)/second/key.pem does not match certificate \(dir)/agent/cert.pem",
                                  fix: "the key.pem written together with this cert.pem")
        XCTAssertTrue(failure?.line.hasPrefix("FAIL key: private key ") ?? false)

        // A key other users may read: a warning with the chmod to run.
        XCTAssertEqual(chmod(dir + "/agent/key.pem", 0o644), 0)
        let wide = try check(goodConfig())
        XCTAssertTrue(wide.passed)
        XCTAssertEqual(status(wide, "key"), .warn)
        XCTAssertEqual(wide.result("key")?.fix, "chmod 600 \(dir)/agent/key.pem (owned by the agent's user)")
    }

    func testAllowedCoordinators() throws {
        assertFails(try check(withTLS { $0["allowed_coordinators"] = ["coordinator", "two words"] }), ["allowed_coordinators"],
                    contains: "\"two words\" is not a certificate name")
        let empty = try check(withTLS { $0["allowed_coordinators"] = [String]() })
        XCTAssertTrue(empty.passed)
        XCTAssertEqual(status(empty, "allowed_coordinators"), .warn)
        XCTAssertTrue(try XCTUnwrap(empty.result("allowed_coordinators")).line.contains("any certificate the CA issued may connect"))
        let own = try check(withTLS { $0["allowed_coordinators"] = ["Agent.Hospital-A.example"] })
        XCTAssertEqual(status(own, "allowed_coordinators"), .warn)
    }

    // MARK: - Data

    func testDatasetsThatCannotBeRead() throws {
        var missing = goodConfig()
        missing["datasets"] = ["registry": ["csv": "nowhere.csv"]]
        assertFails(try check(missing), ["dataset registry"], contains: "\(dir)/nowhere.csv: file not found", fix: "datasets.registry")
        XCTAssertNil(try check(missing).result("variables"), "variables are checked once every dataset reads")

        try "a,b\n1,2\n3\n".write(toFile: dir + "/ragged.csv", atomically: true, encoding: .utf8)
        var ragged = goodConfig()
        ragged["datasets"] = ["registry": ["csv": "registry.csv"], "ragged": ["csv": "ragged.csv"]]
        let r = try check(ragged)
        assertFails(r, ["dataset ragged"], contains: "ragged.csv, line 3: 1 field, the header has 2", fix: "correct the CSV export")
        XCTAssertEqual(status(r, "dataset registry"), .ok)

        var notNumeric = goodConfig()
        notNumeric["datasets"] = ["registry": ["csv": "registry.csv", "types": ["ward": "numeric"]]]
        assertFails(try check(notNumeric), ["dataset registry"], contains: "column \"ward\" is declared numeric", fix: "declare the column \"text\"")

        var noTable = goodConfig()
        noTable["datasets"] = ["labs": ["sqlite": "labs.db", "table": "result"]]
        assertFails(try check(noTable), ["dataset labs"], contains: "no table or view named \"result\"", fix: ".tables")

        var writes = goodConfig()
        writes["datasets"] = ["labs": ["sqlite": "labs.db", "query": "DELETE FROM results"]]
        assertFails(try check(writes), ["dataset labs"], contains: "only read-only queries are allowed")

        var foreignRows = goodConfig()
        foreignRows["site"] = "hospital-b"
        assertFails(try check(foreignRows), ["dataset labs", "dataset registry"],
                    contains: "have a value in column \"site\" other than this site's name \"hospital-b\"", fix: "set site_column")
    }

    func testUnknownVariableNamesAndTooFewRowsWarn() throws {
        var c = goodConfig()
        c["allowed_variables"] = ["age", "sbpp"]
        c["denied_variables"] = ["name"]
        c["disclosure"] = ["min_rows": 20]
        let report = try check(c)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.warnings.map(\.check), ["dataset labs", "dataset registry", "variables"])
        XCTAssertTrue(try XCTUnwrap(report.result("variables")).detail.contains("\"sbpp\", \"name\", which no dataset has"))
        XCTAssertTrue(try XCTUnwrap(report.result("dataset registry")).detail.contains("fewer rows than disclosure.min_rows (20)"))
    }

    // MARK: - Audit log and listen address

    func testAuditLogThatCannotBeWritten() throws {
        var noFolder = goodConfig(); noFolder["audit_log"] = "logs/audit.log"
        assertFails(try check(noFolder), ["audit_log"], contains: "cannot open \(dir)/logs/audit.log for appending: No such file or directory",
                    fix: "install -d -o fedmix -g fedmix -m 0750 \(dir)/logs")

        var underAFile = goodConfig(); underAFile["audit_log"] = "registry.csv/audit.log"
        assertFails(try check(underAFile), ["audit_log"], contains: "Not a directory", fix: "is a file, not a folder")

        var aFolder = goodConfig(); aFolder["audit_log"] = "audit"
        assertFails(try check(aFolder), ["audit_log"], contains: "\(dir)/audit is a directory")

        // A file that is not an audit database fails (serve would refuse it), and is left as it was.
        try "{\"line\":1}\n".write(toFile: dir + "/audit/audit.log", atomically: true, encoding: .utf8)
        assertFails(try check(goodConfig()), ["audit_log"], contains: "cannot be read as an audit log", fix: "a new path starts a new log")
        XCTAssertEqual(try String(contentsOfFile: dir + "/audit/audit.log", encoding: .utf8), "{\"line\":1}\n")
        // An existing log is verified, as serve will verify it.
        try FileManager.default.removeItem(atPath: dir + "/audit/audit.log")
        try AuditLog.open(path: dir + "/audit/audit.log").close()
        let existing = try check(goodConfig())
        XCTAssertEqual(status(existing, "audit_log"), .ok)
        XCTAssertTrue(existing.result("audit_log")?.detail.contains("verified") ?? false, existing.result("audit_log")?.detail ?? "")

        var none = goodConfig(); none["audit_log"] = nil
        XCTAssertEqual(status(try check(none), "audit_log"), .warn)

        // A folder the agent's user may not write (root may write anywhere).
        try FileManager.default.removeItem(atPath: dir + "/audit/audit.log")
        XCTAssertEqual(chmod(dir + "/audit", 0o555), 0)
        if geteuid() != 0 {
            assertFails(try check(goodConfig()), ["audit_log"], contains: "Permission denied", fix: "ReadWritePaths=")
        } else {
            try assertAuditFolderNotWritableAsAnotherUser()
        }
    }

    /// As root: the real binary run as user "nobody" (setpriv), owning
    /// everything but the audit folder, fails the audit_log check alone.
    func assertAuditFolderNotWritableAsAnotherUser() throws {
        let setpriv = "/usr/bin/setpriv"
        guard FileManager.default.isExecutableFile(atPath: setpriv) else { throw XCTSkip("no setpriv to drop root") }
        let binary = try Executables.agent()
        let config = try write(goodConfig())
        let nobody: UInt32 = 65534
        for path in try FileManager.default.subpathsOfDirectory(atPath: dir).map({ dir + "/" + $0 }) + [dir]
            where !path.hasSuffix("/audit") {
            XCTAssertEqual(chown(path, nobody, nobody), 0, path)
        }
        XCTAssertEqual(chmod(dir, 0o755), 0)
        let result = try run(URL(fileURLWithPath: setpriv),
                             ["--reuid", "\(nobody)", "--regid", "\(nobody)", "--clear-groups", binary.path, "check", "--config", config])
        XCTAssertEqual(result.status, 1, result.output)
        let failLines = result.output.split(separator: "\n").filter { $0.hasPrefix("FAIL ") }
        XCTAssertEqual(failLines.count, 1, result.output)
        XCTAssertTrue(failLines.first?.hasPrefix("FAIL audit_log: cannot open \(dir)/audit/audit.log for appending: Permission denied — fix: ") ?? false, result.output)
        XCTAssertTrue(failLines.first?.hasSuffix("under systemd also list it in ReadWritePaths=") ?? false, result.output)
    }

    func testListenAddressInUseOrNotOfThisMachine() throws {
        let context = try TLSContext.server(identity: TLSIdentity(directory: dir + "/agent", caPath: dir + "/ca/ca.pem"))
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: context)
        defer { listener.close() }
        var taken = goodConfig(); taken["listen"] = "127.0.0.1:\(listener.port)"
        assertFails(try check(taken), ["listen"], contains: "cannot bind 127.0.0.1:\(listener.port): Address already in use",
                    fix: "ss -ltnp 'sport = :\(listener.port)'")
        // As a health check of the running agent, the port in use is expected.
        let running = try check(taken, AgentCheck.Options(agentRunning: true))
        XCTAssertTrue(running.passed)
        XCTAssertTrue(try XCTUnwrap(running.result("listen")).detail.contains("in use, as expected while the agent runs"))

        var foreign = goodConfig(); foreign["listen"] = "192.0.2.7:7443"   // TEST-NET-1: never this machine's
        assertFails(try check(foreign), ["listen"], contains: "Cannot assign requested address", fix: "not an address of this machine")
    }

    // MARK: - The executable

    /// The real `fedmix-agent check`: exit 0 and ok lines for the good
    /// configuration; exit 1 with a FAIL line and its fix for a mismatched key.
    func testExecutableExitStatus() throws {
        let binary = try Executables.agent()
        let good = try run(binary, ["check", "--config", try write(goodConfig())])
        XCTAssertEqual(good.status, 0, good.output)
        XCTAssertTrue(good.output.hasPrefix("fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion)): checking "), good.output)
        XCTAssertTrue(good.output.contains("\nok   key: "), good.output)
        XCTAssertTrue(good.output.hasSuffix("check passed: 12 ok, 0 warnings, 0 failed\n"), good.output)

        try Certificates.issue(caDirectory: dir + "/ca", name: "agent.hospital-a.example", outDirectory: dir + "/second", days: 200)
        let bad = try run(binary, ["check", "--config", try write(withTLS { $0["key"] = "second/key.pem" }, name: "bad.json")])
        XCTAssertEqual(bad.status, 1, bad.output)
        let failLines = bad.output.split(separator: "\n").filter { $0.hasPrefix("FAIL ") }
        XCTAssertEqual(failLines.count, 1, bad.output)
        XCTAssertTrue(failLines.first?.hasPrefix("FAIL key: private key \(dir)/second/key.pem does not match") ?? false, bad.output)
        XCTAssertTrue(failLines.first?.contains(" — fix: ") ?? false, bad.output)
        XCTAssertTrue(bad.output.hasSuffix("check FAILED: 11 ok, 0 warnings, 1 failed\n"), bad.output)

        let usage = try run(binary, ["check"])
        XCTAssertEqual(usage.status, 2, usage.output)
        let version = try run(binary, ["--version"])
        XCTAssertEqual(version.output, "fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion))\n")
    }

    func run(_ binary: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = dir + "/run-\(UUID().uuidString.prefix(6)).out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle(forWritingAtPath: out)
        try process.run()
        process.waitUntilExit()
        return (process.terminationStatus, try String(contentsOfFile: out, encoding: .utf8))
    }

    func makeDatabase(_ path: String, _ sql: String) throws {
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK else {
            throw XCTSkip("cannot create an SQLite database")
        }
        defer { sqlite3_close_v2(db) }
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &message) != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "?"
            sqlite3_free(message)
            XCTFail("SQLite: \(text)")
        }
    }
}

/// deploy/agent.json, the example the runbook documents key by key.
final class DeployExampleTests: XCTestCase {
    func testDeployExampleConfiguration() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/agent.json")
        let data = try Data(contentsOf: url)
        let config = try AgentConfig.parse(data, path: url.path, baseDirectory: "/etc/fedmix")
        XCTAssertEqual(config.site, "hospital-a")
        XCTAssertEqual(config.port, 7443)
        XCTAssertEqual(config.tls.allowedCoordinators, ["coordinator"])
        XCTAssertEqual(config.auditLog, "/var/lib/fedmix/audit.db")
        XCTAssertEqual(config.auditRetentionDays, 3650)
        XCTAssertEqual(config.datasets.count, 3)

        // Every key the parser accepts appears in the example (and so in the README's table).
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["site", "listen", "tls", "datasets", "site_column", "allowed_variables",
                                          "denied_variables", "audit_log", "audit_retention_days", "disclosure", "session_timeout_seconds", "max_line_bytes", "limits"])
        XCTAssertEqual(Set((object["limits"] as? [String: Any] ?? [:]).keys), Set(AgentLimits.keys))
        XCTAssertEqual(Set((object["tls"] as? [String: Any] ?? [:]).keys), ["certificate", "key", "ca", "allowed_coordinators"])
        XCTAssertEqual(Set((object["disclosure"] as? [String: Any] ?? [:]).keys),
                       ["min_rows", "min_cell", "max_params_per_row", "max_rounds_per_session", "max_sessions_per_day", "max_listed_levels",
                        "max_row_share"])
        let datasetKeys = (object["datasets"] as? [String: [String: Any]] ?? [:]).values.reduce(into: Set<String>()) { $0.formUnion($1.keys) }
        XCTAssertEqual(datasetKeys, ["csv", "sqlite", "table", "query", "types"])

        let readme = try String(contentsOf: url.deletingLastPathComponent().appendingPathComponent("README.md"), encoding: .utf8)
        for key in ["site", "listen", "tls.certificate", "tls.key", "tls.ca", "tls.allowed_coordinators", "datasets.NAME.csv",
                    "datasets.NAME.sqlite", "datasets.NAME.table", "datasets.NAME.query", "datasets.NAME.types", "site_column",
                    "allowed_variables", "denied_variables", "audit_log", "audit_retention_days", "disclosure.min_rows", "disclosure.min_cell",
                    "disclosure.max_params_per_row", "disclosure.max_rounds_per_session", "disclosure.max_sessions_per_day",
                    "disclosure.max_listed_levels", "session_timeout_seconds", "max_line_bytes"] + AgentLimits.keys.map({ "limits." + $0 }) {
            XCTAssertTrue(readme.contains("| `\(key)` |"), "deploy/README.md has no row for \(key)")
        }
    }
}

import Foundation
import XCTest
import ExecutableSupport
import Synchronization
import CSQLite
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// The audit trail with the real `fedmix-agent` executable: an agent
/// killed (SIGKILL) in the middle of a fit leaves a log that verifies and
/// holds every message the coordinator got; `fedmix-agent audit` lists,
/// shows, exports and verifies it; a log edited with SQLite stops the agent
/// from starting and `audit verify` names the entry.
final class AuditTrailTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("audit-trail")
    var pki: TestPKI { Self.pki }
    override class func tearDown() { pki.remove() }

    struct Agent {
        let process: AgentProcess
        let configPath: String
        let logPath: String
    }

    /// Writes an agent configuration with an audit log and starts `fedmix-agent serve` on it.
    func startAgent(csv: URL, disclosure: [String: Any] = ["min_rows": 10, "min_cell": 5]) throws -> Agent {
        let site = csv.deletingPathExtension().lastPathComponent
        let name = "agent-" + site
        let identity = try pki.issue(name)
        let tag = UUID().uuidString.prefix(6)
        let logPath = pki.root + "/\(name)-\(tag)-audit.db"
        let config: [String: Any] = [
            "site": site, "listen": "127.0.0.1:0",
            "tls": ["certificate": identity.certificatePath, "key": identity.keyPath, "ca": pki.caPath,
                    "allowed_coordinators": ["coordinator"]],
            "datasets": ["data": ["csv": csv.path]],
            "audit_log": logPath,
            "disclosure": disclosure,
        ]
        let configPath = pki.root + "/\(name)-\(tag).json"
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: configPath))
        let process = try AgentProcess(binary: try Executables.agent(), configPath: configPath, site: site,
                                       serverName: name, logDirectory: pki.root)
        addTeardownBlock { process.kill() }
        return Agent(process: process, configPath: configPath, logPath: logPath)
    }

    /// A killed agent stays dead in these tests: give up reconnecting after a second.
    static let briefReconnects: NetworkPolicy = { var n = NetworkPolicy(); n.reconnectBudget = 1; return n }()

    func federation(_ agents: [Agent]) throws -> Federation {
        try SitesFile(identity: pki.coordinator, sites: agents.map {
            .init(name: $0.process.site, host: "127.0.0.1", port: $0.process.port, serverName: $0.process.serverName)
        }, network: Self.briefReconnects).connect(timeout: 10)
    }

    /// Runs `fedmix-agent ARGS`; returns (status, stdout, stderr).
    func agentCommand(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = try Executables.agent()
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// Every answer a coordinator's channel received, in order.
    final class RecordingChannel: SiteChannel, @unchecked Sendable {
        let inner: SiteChannel
        let replies = Mutex<[Reply]>([])
        /// A pause before each request, as a wide-area network would add.
        let latency: Double
        init(_ inner: SiteChannel, latency: Double = 0) { self.inner = inner; self.latency = latency }
        var site: String { inner.site }
        func call(_ request: Request) throws -> Reply {
            if latency > 0 { Thread.sleep(forTimeInterval: latency) }
            let r = try inner.call(request)
            replies.withLock { $0.append(r) }
            return r
        }
        var bytesSent: Int { inner.bytesSent }
        var bytesReceived: Int { inner.bytesReceived }
        func close() { inner.close() }
    }

    // MARK: SIGKILL mid-fit

    /// The agent of "north" is killed with SIGKILL at an arbitrary moment of
    /// a fit: as soon as its log holds 13 entries, the 13th being a request
    /// it is then answering (computing, logging or sending the answer). The
    /// log verifies afterwards, and holds, in order, every answer the
    /// coordinator received from it, each written before it was sent.
    func testAgentKilledMidFitLeavesALogThatVerifiesAndHoldsEverythingSent() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        let agents = try files.map { try startAgent(csv: $0) }
        let victim = agents[1]
        XCTAssertEqual(victim.process.site, "north")
        let connected = try federation(agents)
        let recorders = connected.channels.map { RecordingChannel($0, latency: 0.02) }
        let fed = Federation(channels: recorders)
        defer { fed.close() }

        // Watch the victim's log from another connection (WAL: readers never block the agent).
        let killedAt = Mutex<Int?>(nil)
        let stop = Mutex(false)
        defer { stop.withLock { $0 = true } }
        let watcher = Thread {
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, !stop.withLock({ $0 }) {
                if let log = try? AuditLog.openForReading(path: victim.logPath) {
                    let n = log.count
                    log.close()
                    if n >= 13 {
                        Glibc.kill(victim.process.process.processIdentifier, SIGKILL)
                        killedAt.withLock { $0 = n }
                        return
                    }
                }
                usleep(500)
            }
        }
        watcher.start()
        let error = thrownError({ try Analysis.fit(fed, dataset: "data", formula: "Reaction ~ Days + (Days | Subject)") },
                                "the fit must fail when an agent is killed")
        XCTAssertTrue(victim.process.waitForExit(timeout: 10))
        XCTAssertEqual(victim.process.process.terminationReason, .uncaughtSignal, "killed, not exited")
        let failure = try XCTUnwrap(error as? SiteFailure, "\(String(describing: error))")
        XCTAssertEqual(failure.site, "north")
        let seen = try XCTUnwrap(killedAt.withLock { $0 })

        let log = try AuditLog.openForReading(path: victim.logPath)
        defer { log.close() }
        let v = try log.verify()
        XCTAssertTrue(v.ok, "the log of a killed agent verifies: \(v.summary)")
        let entries = try log.entries()
        XCTAssertGreaterThanOrEqual(entries.count, seen)
        print("agent killed (SIGKILL) with \(seen) entries seen; its log: \(v.summary); last entry \(entries.last?.direction ?? "-") "
              + "\(entries.last?.messageType ?? "-"); the coordinator received \(recorders[1].replies.withLock { $0.count }) answers from it")
        // Everything the coordinator received from north is in the log, in order, as sent.
        let received = recorders[1].replies.withLock { $0 }
        XCTAssertGreaterThan(received.count, 2, "killed after prepare and some evaluations")
        let sent = entries.filter { $0.direction == "sent" }
        XCTAssertEqual(sent.first?.messageType, "hello")
        let logged = try sent.dropFirst().map { try LineCodec.decodeReply($0.line).reply }
        XCTAssertGreaterThanOrEqual(logged.count, received.count)
        XCTAssertEqual(Array(logged.prefix(received.count)), received, "every answer the coordinator got was logged first")
        // And each answer follows the request it answers.
        for (i, e) in entries.enumerated() where e.direction == "sent" && i > 0 && e.messageType != "hello" {
            XCTAssertEqual(entries[i - 1].direction, "received", "entry \(e.seq) answers entry \(entries[i - 1].seq)")
            XCTAssertEqual(entries[i - 1].messageID, e.messageID)
        }
        // The agent restarts on the same log and goes on appending to it.
        let restarted = try AgentProcess(binary: try Executables.agent(), configPath: victim.configPath, site: "north",
                                         serverName: victim.process.serverName, logDirectory: pki.root)
        addTeardownBlock { restarted.kill() }
        try restarted.assertStopsOnSIGTERM()
        for a in agents where a.process !== victim.process { try a.process.assertStopsOnSIGTERM() }
    }

    // MARK: The audit command, and a tampered log

    func testAuditCommandsAndATamperedLogThatStopsTheAgent() throws {
        let csv = try Fixtures.siteFiles("sleepstudy")[0]
        let agent = try startAgent(csv: csv)
        // One site: the grouping factor must have several levels there (a one-level factor is refused).
        let fed = try federation([agent])
        let fit = try Analysis.fit(fed, dataset: "data", formula: "Reaction ~ Days + (1 | Subject)")
        XCTAssertTrue(fit.converged)
        // A refusal is logged too: a filter leaving out one row.
        var options = FitOptions()
        options.filter = "Days != 3 | Reaction > 0"
        _ = thrownError({ try Analysis.fit(fed, dataset: "data", formula: "Reaction ~ Days + (1 | Subject)", options: options) })
        fed.close()
        try agent.process.assertStopsOnSIGTERM()

        // list: one line per entry with its type.
        let list = try agentCommand(["audit", "list", "--config", agent.configPath])
        XCTAssertEqual(list.status, 0, list.err)
        let rows = list.out.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        XCTAssertEqual(rows.first, ["SEQ", "TIME", "DIRECTION", "PEER", "SESSION", "BYTES", "TYPE"])
        let types = rows.dropFirst().map { $0.last ?? "" }
        XCTAssertEqual(Array(types.prefix(4)), ["hello", "hello", "describe", "described"])
        XCTAssertTrue(types.contains("prepared") && types.contains("finalized"), "\(types)")
        XCTAssertTrue(types.contains("error (disclosure_refused)"), "\(types)")
        XCTAssertTrue(rows.dropFirst().allSatisfy { $0.count == 7 && $0[3] == "CN=coordinator" }, list.out)
        let n = rows.count - 1

        // export: JSON lines that re-hash to the chain.
        let export = try agentCommand(["audit", "export", "--config", agent.configPath])
        XCTAssertEqual(export.status, 0, export.err)
        let exported = try export.out.split(separator: "\n").map { try JSONDecoder().decode(AuditEntry.self, from: Data($0.utf8)) }
        XCTAssertEqual(exported.count, n)
        var previous = AuditEntry.genesisHash
        for e in exported {
            XCTAssertEqual(e.previousHash, previous)
            XCTAssertEqual(e.computedHash, e.hash)
            previous = e.hash
        }
        let since = try agentCommand(["audit", "export", "--since", "2100-01-01", "--config", agent.configPath])
        XCTAssertEqual(since.out, "", "nothing after 2100")

        // show: the full entry, its message indented.
        let prepared = try XCTUnwrap(exported.first { $0.messageType == "prepared" })
        let show = try agentCommand(["audit", "show", String(prepared.seq), "--config", agent.configPath])
        XCTAssertEqual(show.status, 0, show.err)
        XCTAssertTrue(show.out.contains("session      \(prepared.session ?? "?")"), show.out)
        XCTAssertTrue(show.out.contains("(matches the entry's content)"), show.out)
        XCTAssertTrue(show.out.contains("\n  \"type\": \"prepared\""), show.out)
        let raw = try agentCommand(["audit", "show", String(prepared.seq), "--line", "--config", agent.configPath])
        XCTAssertEqual(raw.out, prepared.line + "\n")

        // verify: intact.
        let ok = try agentCommand(["audit", "verify", "--config", agent.configPath])
        XCTAssertEqual(ok.status, 0, ok.out + ok.err)
        XCTAssertTrue(ok.out.contains("verified: \(n) entries, 1…\(n), hash chain intact"), ok.out)

        // Someone edits the answer of entry `prepared.seq` with SQLite directly.
        let db = try SQLiteEditor(path: agent.logPath)
        try db.run("DROP TRIGGER audit_entries_no_update")
        try db.run("UPDATE audit_entries SET line = replace(line, '\"used\":60', '\"used\":59') WHERE seq = \(prepared.seq)")
        db.close()
        let bad = try agentCommand(["audit", "verify", "--config", agent.configPath])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.out.contains("FAILED: entry \(prepared.seq) was edited"), bad.out)
        XCTAssertTrue(bad.out.contains("first bad entry: \(prepared.seq) (edited)"), bad.out)
        // check says so (an ExecStartPre check fails instead of a restart loop), and the agent will not start on it.
        // Both name the log, the entry and what to do, in the same words.
        let reason = "the audit log does not verify: entry \(prepared.seq) was edited: its content no longer matches its hash (first bad entry \(prepared.seq), edited)"
        let checked = try agentCommand(["check", "--config", agent.configPath])
        XCTAssertEqual(checked.status, 1, checked.out)
        let failLine = try XCTUnwrap(checked.out.split(separator: "\n").first { $0.hasPrefix("FAIL audit_log: ") }, checked.out)
        XCTAssertTrue(failLine.contains("\(agent.logPath): \(reason)"), String(failLine))
        XCTAssertTrue(failLine.contains("The agent will not add to a broken audit trail"), String(failLine))
        XCTAssertTrue(failLine.contains("fix: inspect it with `fedmix-agent audit verify --log \(agent.logPath)`"), String(failLine))
        XCTAssertTrue(checked.out.contains("check FAILED"), checked.out)
        let serve = try agentCommand(["serve", "--config", agent.configPath])
        XCTAssertEqual(serve.status, 1)
        XCTAssertTrue(serve.err.contains("audit log \(agent.logPath): \(reason)"), serve.err)
        XCTAssertTrue(serve.err.contains("What to do: inspect it with `fedmix-agent audit verify --log \(agent.logPath)`"), serve.err)
        XCTAssertTrue(serve.err.contains("audit show \(prepared.seq) --log \(agent.logPath)"), serve.err)
        XCTAssertFalse(serve.err.contains("listening"), serve.err)
    }
}

/// Direct SQL on a file, as anyone with write access to it could run.
final class SQLiteEditor {
    private var db: OpaquePointer?
    init(path: String) throws {
        guard sqlite3_open(path, &db) == SQLITE_OK else { throw AgentProcessError("cannot open \(path)") }
    }
    func run(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &message) != SQLITE_OK {
            defer { sqlite3_free(message) }
            throw AgentProcessError(message.map { String(cString: $0) } ?? "sqlite error")
        }
    }
    func close() { sqlite3_close(db); db = nil }
}

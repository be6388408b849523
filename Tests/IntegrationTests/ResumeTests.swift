import Foundation
import XCTest
import Synchronization
import ExecutableSupport
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// Issue part 4: a connection dropped mid-round and an agent killed (-9)
/// and restarted mid-fit are survived; the fit ends bit-identical to the
/// fault-free fit, and says what happened. (Deadline failures: DeadlineTests;
/// a site that stays away: FederationTLSTests, AgentProcessTests.)
final class ResumeTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("resume")
    override class func tearDown() { pki.remove() }
    static let formula = "Reaction ~ Days + (Days | Subject)"

    /// The TCP connection to "north" is cut (no close_notify) while north
    /// computes its answer to the third evaluate: the coordinator reconnects
    /// through the relay, sends the evaluate again, and the fit is the same
    /// to the last bit.
    func testConnectionCutMidRoundResumesBitIdentically() throws {
        let sites = try ShapedSites(pki: Self.pki, network: NetworkPolicy())
        defer { sites.stop() }
        let federation = try sites.file.connect()
        defer { federation.close() }
        let clean = try Analysis.fit(federation, dataset: "data", formula: Self.formula)

        let north = sites.agent("north"), proxy = sites.proxy("north")
        let evaluates = Mutex(0)
        north.audit.onRecord { direction, line in
            guard direction == .received, line.contains("\"type\":\"evaluate\"") else { return }
            if evaluates.withLock({ $0 += 1; return $0 }) == 3 { proxy.cut() }
        }
        let before = north.audit.types(.received)["evaluate"] ?? 0
        let faulty = try Analysis.fit(federation, dataset: "data", formula: Self.formula)
        assertSameFit(faulty, clean, tol: 0, "after a cut connection")
        XCTAssertEqual(faulty.evaluations, clean.evaluations)
        XCTAssertEqual(faulty.rounds, clean.rounds, "the resent request is part of its round")
        // The first evaluation rides with the prepare; the cut one came twice.
        XCTAssertEqual((north.audit.types(.received)["evaluate"] ?? 0) - before, clean.evaluations - 1 + 1, "north received the cut evaluate twice")
        let notes = faulty.messages.filter { $0.hasPrefix("site north: ") }
        XCTAssertEqual(notes.count, 1, "\(faulty.messages)")
        XCTAssertTrue(notes.first?.contains("connection lost") == true && notes.first?.contains("reconnected after") == true, "\(notes)")
        print("cut mid-round: \(notes.first ?? "")")
    }

    /// The same for a GLMM (cbpp, binomial, Laplace): every round sends
    /// (θ, β), and the resent evaluation gives the same bits.
    func testGLMMConnectionCutMidRoundResumesBitIdentically() throws {
        let sites = try ShapedSites(pki: Self.pki, network: NetworkPolicy(), case: "cbpp")
        defer { sites.stop() }
        let federation = try sites.file.connect()
        defer { federation.close() }
        let formula = "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)"
        let options = FitOptions(family: .binomial)
        let clean = try Analysis.fit(federation, dataset: "data", formula: formula, options: options)
        let victim = sites.agents[2], proxy = sites.proxies[2]
        let evaluates = Mutex(0)
        victim.audit.onRecord { direction, line in
            guard direction == .received, line.contains("\"type\":\"evaluate\"") else { return }
            if evaluates.withLock({ $0 += 1; return $0 }) == 4 { proxy.cut() }
        }
        let faulty = try Analysis.fit(federation, dataset: "data", formula: formula, options: options)
        assertSameFit(faulty, clean, tol: 0, "GLMM after a cut connection")
        XCTAssertTrue(faulty.messages.contains { $0.hasPrefix("site \(victim.site): evaluate (round ") && $0.contains("reconnected") }, "\(faulty.messages)")
    }

    /// A `fedmix-agent` process with an audit log, listening on `port` (0: any).
    static func startAgent(_ csv: URL, identity: TLSIdentity, log: String, port: Int) throws -> AgentProcess {
        let site = csv.deletingPathExtension().lastPathComponent
        let config: [String: Any] = [
            "site": site, "listen": "127.0.0.1:\(port)",
            "tls": ["certificate": identity.certificatePath, "key": identity.keyPath, "ca": Self.pki.caPath,
                    "allowed_coordinators": ["coordinator"]],
            "datasets": ["data": ["csv": csv.path]],
            "audit_log": log,
            "disclosure": ["min_rows": 10, "min_cell": 5, "max_params_per_row": 0.33],
        ]
        let path = Self.pki.root + "/agent-\(site)-\(UUID().uuidString.prefix(6)).json"
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
        return try AgentProcess(binary: try Executables.agent(), configPath: path, site: site, serverName: "agent-" + site,
                                logDirectory: Self.pki.root)
    }

    /// Acceptance: north's agent process is killed with SIGKILL after its
    /// second evaluate and started again 2 s later on the same port. The
    /// coordinator reconnects, finds the session gone (`unknown_session`),
    /// prepares it again under the same id and resends; the fit is
    /// bit-identical to the fault-free one, and north's audit log shows
    /// both prepares of the session.
    func testAgentKilledAndRestartedMidFitResumesBitIdentically() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        var agents: [AgentProcess] = [], logs: [String] = [], identities: [TLSIdentity] = []
        for f in files {
            let site = f.deletingPathExtension().lastPathComponent
            let identity = try Self.pki.issue("agent-" + site)
            let log = Self.pki.root + "/\(site)-\(UUID().uuidString.prefix(6))-audit.db"
            let agent = try Self.startAgent(f, identity: identity, log: log, port: 0)
            addTeardownBlock { agent.kill() }
            agents.append(agent)
            logs.append(log); identities.append(identity)
        }
        let file = SitesFile(identity: Self.pki.coordinator,
                             sites: agents.map { .init(name: $0.site, host: "127.0.0.1", port: $0.port, serverName: $0.serverName) })
        let connected = try file.connect()
        let clean = try Analysis.fit(connected, dataset: "data", formula: Self.formula)

        let victim = agents[1]
        XCTAssertEqual(victim.site, "north")
        let (northFile, northIdentity, northLog) = (files[1], identities[1], logs[1])
        let evaluates = Mutex(0)
        let restarted = Mutex<Result<AgentProcess, Error>?>(nil)
        let killedAt = Mutex<Date?>(nil)
        let federation = Federation(channels: connected.channels.map { c in
            c.site == "north" ? RoundHookedChannel(c) { request, _ in
                guard case .evaluate = request, evaluates.withLock({ $0 += 1; return $0 }) == 2 else { return }
                victim.kill()
                killedAt.withLock { $0 = Date() }
                Thread {
                    usleep(2_000_000)
                    restarted.withLock { $0 = Result { try Self.startAgent(northFile, identity: northIdentity, log: northLog, port: victim.port) } }
                }.start()
            } : c
        })
        defer { federation.close() }
        let started = Date()
        let faulty = try Analysis.fit(federation, dataset: "data", formula: Self.formula)
        let elapsed = Date().timeIntervalSince(started)
        let again = try XCTUnwrap(restarted.withLock { $0 }).get()
        addTeardownBlock { again.kill() }
        XCTAssertEqual(again.port, victim.port, "restarted on the same port")
        XCTAssertEqual(victim.process.terminationReason, .uncaughtSignal, "killed, not exited")
        assertSameFit(faulty, clean, tol: 0, "after an agent restart")
        XCTAssertEqual(faulty.evaluations, clean.evaluations)
        let notes = faulty.messages.filter { $0.hasPrefix("site north: ") }
        XCTAssertTrue(notes.contains { $0.contains("reconnected after") }, "\(faulty.messages)")
        XCTAssertTrue(notes.contains { $0.contains("prepared it again") }, "\(faulty.messages)")

        // North's log (the same file, continued by the restarted agent): the session prepared twice.
        let log = try AuditLog.openForReading(path: logs[1])
        defer { log.close() }
        XCTAssertTrue(try log.verify().ok, "the log verifies across the kill")
        let received = try log.entries().filter { $0.direction == "received" }
        let prepares = received.filter { $0.messageType == "prepare" }
        let sessions = Dictionary(grouping: prepares.compactMap(\.session), by: { $0 }).mapValues(\.count)
        XCTAssertEqual(sessions.values.sorted(), [1, 2], "the clean fit's session once, the resumed one twice: \(sessions)")
        let resumed = try XCTUnwrap(sessions.first { $0.value == 2 }?.key)
        XCTAssertTrue(received.contains { $0.session == resumed && $0.messageType == "evaluate" })
        print("agent killed and restarted: fit resumed in \(String(format: "%.2f", elapsed)) s; \(notes.joined(separator: "; "))")
        for a in agents where a !== victim { try a.assertStopsOnSIGTERM() }
        try again.assertStopsOnSIGTERM()
    }
}

// What an unauthenticated network and a certificate holder can do to an
// agent, measured through real agents over TLS on loopback: floods of TCP
// sockets and of authenticated connections, a request built to be
// expensive, abandoned work, inputs built to fill the audit log, errors
// that could leak paths or SQL, and a site administrator rewriting the log
// (receipts). Timings are printed; the only timed assertion is the
// acceptance bound for refusing the expensive request (100 ms).

import Foundation
import Synchronization
import XCTest
import Coordinator
import Math
import Protocol
@testable import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

final class NetworkThreatTests: XCTestCase {
    var pki: TestPKI!
    var dir: URL!

    override func setUpWithError() throws {
        pki = try TestPKI("threats")
        dir = URL(fileURLWithPath: pki.root).appendingPathComponent("data")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { pki.remove() }

    /// An agent for one site on loopback with explicit limits.
    final class Agent: @unchecked Sendable {
        let server: AgentServer
        let serverName: String
        let site: String
        let identity: TLSIdentity
        init(service: SiteService, pki: TestPKI, limits: AgentLimits = AgentLimits(), audit: AuditSink? = nil,
             allowed: [String] = ["coordinator", "attacker"], maxLineBytes: Int = ProtocolLimits.maxLineBytes) throws {
            site = service.site
            serverName = "agent-" + site
            identity = try pki.issue(serverName)
            let context = try TLSContext.server(identity: identity, allowedPeerNames: allowed)
            server = try AgentServer(service: service, host: "127.0.0.1", port: 0, context: context, maxLineBytes: maxLineBytes,
                                     audit: audit, log: AgentLog(enabled: ProcessInfo.processInfo.environment["FEDMIX_AGENT_LOG"] != nil),
                                     ioTimeout: 30, limits: limits)
            server.start()
        }
        func federation(_ identity: TLSIdentity) throws -> Federation {
            try SitesFile(identity: identity, sites: [.init(name: site, host: "127.0.0.1", port: server.port, serverName: serverName)])
                .connect(timeout: 10)
        }
        func stop() { server.stop() }
    }

    func sleepstudyService(_ site: String = "central", limits: AgentLimits = AgentLimits()) -> SiteService {
        let file = Fixtures.root.appendingPathComponent("sleepstudy/sites/central.csv")
        return SiteService(site: site, datasets: ["data": .csv(path: file.path, types: ["Subject": .text])], siteColumn: nil,
                           policy: .off, limits: limits, log: AgentLog(enabled: false))
    }

    static let formula = "Reaction ~ Days + (Days | Subject)"

    /// One fit (hello, describe, prepare, evaluations, finalize) on a new connection; its seconds.
    func timedFit(_ agent: Agent) throws -> Double {
        let t0 = Date()
        let fed = try agent.federation(pki.coordinator)
        defer { fed.close() }
        let r = try Analysis.fit(fed, dataset: "data", formula: Self.formula)
        XCTAssertEqual(r.nObs, 60)
        return Date().timeIntervalSince(t0)
    }

    static func raiseFileLimit(to want: rlim_t) {
        var l = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l) == 0, l.rlim_cur < want else { return }
        l.rlim_cur = min(want, l.rlim_max)
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l)
    }

    static func plainSocket(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port)).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); return -1 }
        return fd
    }

    static func summary(_ times: [Double]) -> String {
        let s = times.sorted()
        return String(format: "median %.3f s, max %.3f s, total %.2f s", s[s.count / 2], s.last!, times.reduce(0, +))
    }

    // MARK: 1. Connection admission

    func testFloodsFromTheNetworkAndFromOneCertificateDoNotDenyAnotherCertificate() throws {
        Self.raiseFileLimit(to: 4096)
        let agent = try Agent(service: sleepstudyService(), pki: pki)
        defer { agent.stop() }
        let baseline = try (0..<3).map { _ in try timedFit(agent) }
        print("admission: 3 fits without a flood: \(Self.summary(baseline))")

        // (a) 500 plain TCP sockets held open (they never start TLS).
        let t0 = Date()
        let sockets = (0..<500).map { _ in Self.plainSocket(port: agent.server.port) }
        defer { sockets.filter { $0 >= 0 }.forEach { _ = close($0) } }
        XCTAssertEqual(sockets.filter { $0 >= 0 }.count, 500, "500 TCP connections to the agent")
        print(String(format: "admission: 500 plain TCP sockets opened in %.2f s", Date().timeIntervalSince(t0)))
        var times: [Double] = []
        for _ in 0..<20 { times.append(try timedFit(agent)) }
        let counts = agent.server.admissionCounts
        print("admission: 20 of 20 fits from another certificate succeeded while 500 plain sockets were held: \(Self.summary(times)); "
              + "pending handshakes \(counts.pendingHandshakes), dropped oldest \(counts.droppedPending)")
        XCTAssertLessThanOrEqual(counts.pendingHandshakes, agent.server.limits.maxPendingHandshakes)
        XCTAssertGreaterThan(counts.droppedPending, 0, "the flood outran the pending budget and its oldest handshakes were dropped")
    }

    func testOneCertificateHoldingSlowConnectionsDoesNotDenyAnother() throws {
        Self.raiseFileLimit(to: 4096)
        let agent = try Agent(service: sleepstudyService(), pki: pki)
        defer { agent.stop() }
        let attacker = try pki.issue("attacker")
        let context = try TLSContext.client(identity: attacker)

        // (b) 128 TLS connections from one certificate, opened 16 at a time,
        // that then send nothing (not even their hello).
        let t0 = Date()
        let held = Mutex<[TLSConnection]>([])
        let refused = Atomic<Int>(0), admitted = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            for _ in 0..<8 {
                guard let c = try? TLSConnection.connect(host: "127.0.0.1", port: agent.server.port, context: context,
                                                         serverName: agent.serverName, timeout: 10, ioTimeout: 5) else { continue }
                // The agent's first line: its hello, or a refusal.
                if let line = try? c.readLine(), (try? LineCodec.decodeHello(line)) != nil {
                    admitted.add(1, ordering: .relaxed)
                } else {
                    refused.add(1, ordering: .relaxed)
                }
                held.withLock { $0.append(c) }
            }
        }
        defer { held.withLock { $0.forEach { $0.close() } } }
        print(String(format: "admission: 128 connections from one certificate in %.2f s: %d admitted, %d refused (limits.max_connections_per_certificate %d)",
                     Date().timeIntervalSince(t0), admitted.load(ordering: .relaxed), refused.load(ordering: .relaxed),
                     agent.server.limits.maxConnectionsPerCertificate))
        XCTAssertEqual(admitted.load(ordering: .relaxed), agent.server.limits.maxConnectionsPerCertificate)
        XCTAssertEqual(admitted.load(ordering: .relaxed) + refused.load(ordering: .relaxed), 128)

        var times: [Double] = []
        for _ in 0..<20 { times.append(try timedFit(agent)) }
        print("admission: 20 of 20 fits from another certificate succeeded while one certificate held 128 connections: \(Self.summary(times))")
    }

    // MARK: 2. Cost before work

    /// 3000 rows; x1…x79 numeric, g with 100 groups; the model of the
    /// measured attack: 80 fixed-effects columns, 55 θ values, order 2.
    func wideData() throws -> URL {
        var rng = SystemRandomNumberGenerator()
        var text = (1...79).map { "x\($0)" }.joined(separator: ",") + ",g,y\n"
        for i in 0..<3000 {
            text += (1...79).map { _ in String(Double.random(in: -1...1, using: &rng)) }.joined(separator: ",")
            text += ",g\(i % 100),\(Double.random(in: 0...10, using: &rng))\n"
        }
        let file = dir.appendingPathComponent("wide.csv")
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    static func residentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }

    func testTheExpensiveEvaluateIsRefusedBeforeAnyWork() throws {
        let file = try wideData()
        let service = SiteService(site: "wide", datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: nil,
                                  policy: .off, log: AgentLog(enabled: false))
        let audit = RecordingAudit()
        let agent = try Agent(service: service, pki: pki, audit: audit)
        defer { agent.stop() }
        let fed = try agent.federation(pki.coordinator)
        defer { fed.close() }
        let descriptions = try Analysis.describe(fed, dataset: "data")
        let formula = "y ~ " + (1...79).map { "x\($0)" }.joined(separator: " + ") + " + (1 + " + (1...9).map { "x\($0)" }.joined(separator: " + ") + " | g)"
        let spec = try Analysis.resolve(formula: formula, descriptions: descriptions)
        XCTAssertEqual(spec.fixedCount, 80)
        XCTAssertEqual(spec.thetaCount, 55)
        let channel = fed.channels[0]
        guard case .prepared = try channel.call(.prepare(PrepareRequest(session: "wide-1", dataset: "data", model: spec))) else {
            return XCTFail("prepare should be answered")
        }
        let request = EvaluateRequest(session: "wide-1", theta: spec.covarianceStructure.initialTheta, order: 2)
        print("cost: request line of \(try LineCodec.encode(.evaluate(request), id: 9).utf8.count) bytes")
        let sentBefore = audit.bytes(.sent)
        let rss0 = Self.residentBytes()
        let t0 = Date()
        let reply = try channel.call(.evaluate(request))
        let elapsed = Date().timeIntervalSince(t0)
        let rss1 = Self.residentBytes()
        guard case .error(let e) = reply else { return XCTFail("the evaluation must be refused, got \(reply.typeName)") }
        print(String(format: "cost: refused in %.1f ms; resident memory %.1f MB before, %.1f MB after; audit bytes for the answer %d: %@",
                     elapsed * 1000, Double(rss0) / 1e6, Double(rss1) / 1e6, audit.bytes(.sent) - sentBefore, e.message))
        XCTAssertEqual(e.code, "invalid_request")
        XCTAssertTrue(e.message.contains("limits.max_answer_bytes"), e.message)
        XCTAssertLessThan(elapsed, 0.1, "acceptance bound: refused in under 100 ms")
        XCTAssertLessThan(rss1 - rss0, 16 << 20, "no allocation for the refused work")
        XCTAssertLessThan(audit.bytes(.sent) - sentBefore, 2000)

        // The same model at order 0 is within the budgets and answered.
        guard case .contribution = try channel.call(.evaluate(EvaluateRequest(session: "wide-1", theta: request.theta, order: 0))) else {
            return XCTFail("an evaluation within the budgets is answered")
        }
    }

    /// The largest estimated cost of any request a fit of `formula` makes
    /// when every row is at one site (`site` a factor within it): prepare,
    /// evaluate at order 2 (nAGQ as given) and finalize.
    /// `sites`: the split files the formula is resolved against (a factor
    /// grouped by site needs more than one site), then fitted on `file`.
    func worstCost(file: URL, sites: [URL], formula: String, family: Family, nAGQ: Int = 1) throws -> RequestCost {
        let service = SiteService(site: "pooled", datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: nil,
                                  policy: .off, log: AgentLog(enabled: false))
        var spec = try Analysis.resolve(formula: formula, descriptions: try Analysis.describe(inProcessFederation(files: sites), dataset: "data"),
                                        family: family)
        if spec.terms.contains(where: { $0.grouping == .site }) { spec = spec.groupingSiteByColumn("site") }
        let table = try service.load("data")
        let prepare = RequestCost.prepare(spec, rows: table.rowCount)
        let evaluate: RequestCost
        var request = EvaluateRequest(session: "w", theta: spec.covarianceStructure.initialTheta, order: 2)
        if family == .gaussian {
            let frame = try SiteDesign(table: table, spec: spec, dataset: "data")
            evaluate = RequestCost.lmmEvaluate(frame.blocks!, structure: spec.covarianceStructure, order: 2)
        } else {
            let frame = try SiteDesign(table: table, spec: spec, dataset: "data")
            evaluate = RequestCost.glmmEvaluate(frame.glmm!.data, order: 2, nAGQ: nAGQ)
            request.beta = [Double](repeating: 0, count: spec.fixedCount)
            request.nAGQ = nAGQ
        }
        _ = service.handle(.prepare(PrepareRequest(session: "w", dataset: "data", model: spec)))
        let t0 = Date()
        let reply = service.handle(.evaluate(request))
        print(String(format: "cost:   measured: %@ in %.3f s (%.3g estimated units per second)", reply.typeName,
                     Date().timeIntervalSince(t0), evaluate.work / Date().timeIntervalSince(t0)))
        return RequestCost(work: max(prepare.work, evaluate.work), answerBytes: max(prepare.answerBytes, evaluate.answerBytes))
    }

    func testLegitimateCasesAreFarBelowTheDefaultBudgets() throws {
        let limits = AgentLimits()
        func reference(_ name: String, _ label: String, _ formula: String, _ family: Family, _ nAGQ: Int) throws -> (String, URL, [URL], String, Family, Int) {
            (label, Fixtures.pooledFile(name), try Fixtures.siteFiles(name), formula, family, nAGQ)
        }
        var cases: [(String, URL, [URL], String, Family, Int)] = [
            try reference("sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)", .gaussian, 1),
            try reference("dyestuff", "dyestuff", "Yield ~ 1 + (1 | site)", .gaussian, 1),
            try reference("exam", "exam", "normexam ~ standLRT + sex + (standLRT | site)", .gaussian, 1),
            try reference("pastes", "pastes", "strength ~ 1 + (1 | site) + (1 | site:cask)", .gaussian, 1),
            try reference("cbpp", "cbpp agq9", "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)", .binomial, 9),
            try reference("contraception", "contraception agq7", "use01 ~ age + I(age^2) + urban + livch + (1 | site)", .binomial, 7),
        ]
        let trauma = try TraumaRegistrySimulator.write(to: dir.appendingPathComponent("trauma").path)
        let largest = try trauma.max { (try $0.resourceValues(forKeys: [.fileSizeKey]).fileSize ?? 0) < (try $1.resourceValues(forKeys: [.fileSizeKey]).fileSize ?? 0) }!
        cases.append(("trauma (largest site)", largest, trauma, "died ~ age + iss + lactate + (1 | site)", .binomial, 1))
        var worst = RequestCost(work: 0, answerBytes: 0)
        for (name, file, sites, formula, family, nAGQ) in cases {
            let c = try worstCost(file: file, sites: sites, formula: formula, family: family, nAGQ: nAGQ)
            print("cost: \(name), all rows at one site, largest request: \(c)")
            worst = RequestCost(work: max(worst.work, c.work), answerBytes: max(worst.answerBytes, c.answerBytes))
        }
        print(String(format: "cost: largest legitimate request %.3g units (budget %.3g, %.0f×), answer %.3g bytes (budget %d, %.0f×)",
                     worst.work, limits.maxWorkPerRequest, limits.maxWorkPerRequest / worst.work,
                     worst.answerBytes, limits.maxAnswerBytes, Double(limits.maxAnswerBytes) / worst.answerBytes))
        XCTAssertLessThan(worst.work * 20, limits.maxWorkPerRequest, "every reference case fits the work budget twenty times over")
        XCTAssertLessThan(worst.answerBytes * 100, Double(limits.maxAnswerBytes))
    }

    // MARK: 2b. Work stops when the connection closes

    func testQueuedRequestsAreNotWorkedOnAfterThePeerLeaves() throws {
        let file = try wideData()
        let service = SiteService(site: "wide", datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: nil,
                                  policy: .off, log: AgentLog(enabled: false))
        let audit = RecordingAudit()
        let agent = try Agent(service: service, pki: pki, audit: audit)
        defer { agent.stop() }
        let fed = try agent.federation(pki.coordinator)
        let spec = try Analysis.resolve(formula: "y ~ x1 + x2 + x3 + (1 + x1 | g)", descriptions: try Analysis.describe(fed, dataset: "data"))
        fed.close()
        let client = try RawProtocolClient(port: agent.server.port, identity: pki.coordinator, serverName: agent.serverName)
        try client.send(.prepare(PrepareRequest(session: "q", dataset: "data", model: spec)), id: 1)
        guard case .prepared? = try client.reply()?.reply else { return XCTFail("prepare") }
        for k in 0..<200 {
            try client.send(.evaluate(EvaluateRequest(session: "q", theta: spec.covarianceStructure.initialTheta, order: 2)), id: 2 + k)
        }
        client.close()
        // The agent serves a connection on one thread and records everything
        // it does for it before letting it go: once no connection is held
        // (the federation's and this one), nothing more will be read or answered.
        let deadline = Date().addingTimeInterval(30)
        while agent.server.admissionCounts.authenticated > 0 && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(agent.server.admissionCounts.authenticated, 0, "the agent let go of the abandoned connection within 30 s")
        let received = audit.all.filter { $0.direction == .received && $0.type == "evaluate" }.count
        let answered = audit.all.filter { $0.direction == .sent && $0.type == "contribution" }.count
        print("abandon: 200 evaluations queued, then the peer closed: \(received) read, \(answered) answered")
        XCTAssertLessThan(answered, 20, "queued work is dropped once the peer has gone")
    }

    // MARK: 3. Bounded lines, nothing echoed

    func testAnUnknownDatasetOfSixteenMebibytesIsNeitherEchoedNorLoggedInFull() throws {
        let logPath = dir.appendingPathComponent("audit.db").path
        var limits = AgentLimits()
        limits.maxAuditEntryBytes = 1 << 20
        limits.maxAnswerBytes = 1 << 20
        let auditLog = try AuditLog.open(path: logPath, maxEntryBytes: limits.maxAuditEntryBytes)
        let agent = try Agent(service: sleepstudyService(limits: limits), pki: pki, limits: limits, audit: auditLog,
                              maxLineBytes: 32 << 20)
        defer { agent.stop() }
        let client = try RawProtocolClient(port: agent.server.port, identity: pki.coordinator, serverName: agent.serverName)
        defer { client.close() }
        let name = String(repeating: "A", count: 16 << 20)
        let t0 = Date()
        let big = try client.expectError(after: try LineCodec.encode(.describe(DescribeRequest(dataset: name)), id: 7))
        let small = try client.expectError(after: try LineCodec.encode(.describe(DescribeRequest(dataset: String(repeating: "B", count: 100_000))), id: 8))
        let elapsed = Date().timeIntervalSince(t0)
        let size = (try FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int ?? 0)
            + (try? FileManager.default.attributesOfItem(atPath: logPath + "-wal")[.size] as? Int ?? 0)!
        print(String(format: "log filling: a 16 MiB and a 100 kB unknown dataset name answered in %.2f s; answers %d and %d bytes; audit log now %d bytes",
                     elapsed, big?.error.message.utf8.count ?? -1, small?.error.message.utf8.count ?? -1, size))
        XCTAssertEqual(big?.error.code, "line_too_long", "longer than max_audit_entry_bytes: refused, not processed")
        XCTAssertEqual(small?.error.code, "unknown_dataset")
        for e in [big, small] { XCTAssertLessThan(e?.error.message.utf8.count ?? .max, 300) }
        XCTAssertFalse(small?.error.message.contains("BBBBBBBBBB") ?? true, "the name is not echoed")
        XCTAssertLessThan(size, 2 << 20, "the audit log holds the 100 kB request, and only a digest of the 16 MiB one")
        let notes = try auditLog.entries().filter { $0.direction == "note" }
        XCTAssertEqual(notes.count, 1)
        XCTAssertTrue(notes.first?.line.contains(SHA256Digest.hex(Array((try LineCodec.encode(.describe(DescribeRequest(dataset: name)), id: 7)).utf8))) ?? false,
                      "the note holds the request's SHA-256: \(notes.first?.line ?? "")")
        XCTAssertTrue(try auditLog.verify().ok)
        try client.send(.ping, id: 9)
        guard case .pong? = try client.reply()?.reply else { return XCTFail("the connection still serves") }
    }

    func testAnAuditEntryCanNeverExceedItsLimit() throws {
        let log = try AuditLog.open(path: dir.appendingPathComponent("bound.db").path, maxEntryBytes: 1 << 20)
        let peer = PeerIdentity(subject: "CN=x", fingerprint: "00")
        XCTAssertThrowsError(try log.record(direction: .received, peer: peer, line: String(repeating: "x", count: (1 << 20) + 1))) {
            XCTAssertTrue("\($0)".contains("limits.max_audit_entry_bytes"), "\($0)")
        }
        try log.record(direction: .received, peer: peer, line: "{\"id\":1,\"type\":\"ping\"}")
        XCTAssertEqual(try log.entries().count, 1)
        // Configured above the hard limit, the log still caps at 512 MiB.
        XCTAssertEqual(try AuditLog.open(path: dir.appendingPathComponent("cap.db").path, maxEntryBytes: Int.max).maxEntryBytes,
                       AgentLimits.auditEntryHardLimit)
    }

    // MARK: 4. No paths, SQL or values in errors sent to a peer

    func testErrorsSentToAPeerHoldNoPathSQLOrValue() throws {
        let secretValue = "secret-cell-4711"
        let good = dir.appendingPathComponent("good.csv")
        try "site,y,x,ward\nsiteA,1,2,w1\nsiteA,2,3,w2\n\(["siteB", "3", "4", secretValue].joined(separator: ","))\n".write(to: good, atomically: true, encoding: .utf8)
        let ragged = dir.appendingPathComponent("ragged.csv")
        try "y,x\n1,2\n3\n".write(to: ragged, atomically: true, encoding: .utf8)
        let notNumeric = dir.appendingPathComponent("notnumeric.csv")
        try "y,x\n1,2\n3,\(secretValue)\n".write(to: notNumeric, atomically: true, encoding: .utf8)
        let db = dir.appendingPathComponent("labs.db").path
        let sqlite = try SQLiteDatabase(path: db, mode: .readWriteCreate)
        try sqlite.execute("CREATE TABLE labs (y REAL, x TEXT); INSERT INTO labs VALUES (1, '\(secretValue)');")
        sqlite.close()
        let service = SiteService(site: "siteA", datasets: [
            "missing": .csv(path: dir.appendingPathComponent("nowhere.csv").path, types: [:]),
            "ragged": .csv(path: ragged.path, types: [:]),
            "notnumeric": .csv(path: notNumeric.path, types: ["x": .numeric]),
            "wrongsite": .csv(path: good.path, types: [:]),
            "badsql": .sqliteQuery(path: db, query: "SELECT y, x FROM labz WHERE x = 'secret'", types: [:]),
            "writes": .sqliteQuery(path: db, query: "DELETE FROM labs", types: [:]),
            "notable": .sqliteTable(path: db, table: "nothere", types: [:]),
            "sqlnumeric": .sqliteTable(path: db, table: "labs", types: ["x": .numeric]),
            "nodb": .sqliteTable(path: dir.appendingPathComponent("none.db").path, table: "labs", types: [:]),
        ], siteColumn: "site", policy: .off, log: AgentLog(enabled: false))
        let agent = try Agent(service: service, pki: pki, audit: RecordingAudit())
        defer { agent.stop() }
        let client = try RawProtocolClient(port: agent.server.port, identity: pki.coordinator, serverName: agent.serverName)
        defer { client.close() }
        var lines = ["missing", "ragged", "notnumeric", "wrongsite", "badsql", "writes", "notable", "sqlnumeric", "nodb",
                     "no-such-dataset-" + secretValue].map { try! LineCodec.encode(.describe(DescribeRequest(dataset: $0)), id: 1) }
        lines += [
            "{\"id\":2,\"type\":\"\(secretValue)\"}",
            "{\"id\":3,\"type\":\"evaluate\",\"session\":\"\(secretValue)\",\"theta\":[1],\"order\":2}",
            "{\"id\":4,\"type\":\"evaluate\",\"session\":\"s\",\"theta\":[\"\(secretValue)\"],\"order\":2}",
            "{\"id\":5,\"type\":\"prepare\",\"session\":\"s\",\"dataset\":\"data\",\"model\":{\"family\":\"\(secretValue)\"}}",
            "{not json \(secretValue)",
        ]
        let forbidden = [dir.path, "/tmp", ".csv", ".db", "SELECT", "DELETE", "FROM", "labz", "nothere", secretValue, "line 3", "row 1"]
        var codes: [String] = []
        for line in lines {
            guard let e = try client.expectError(after: line)?.error else { continue }
            codes.append(e.code.rawValue)
            for f in forbidden { XCTAssertFalse(e.message.contains(f), "\"\(f)\" in the answer to \(line.prefix(80)): \(e.message)") }
        }
        print("errors: \(codes.count) error classes answered without paths, SQL or values: \(codes)")
        XCTAssertEqual(codes.count, lines.count)
        XCTAssertTrue(codes.contains("dataset_error") && codes.contains("unknown_dataset") && codes.contains("unknown_type"), "\(codes)")
    }

    // MARK: 5. Receipts

    func testReceiptsCatchALogRewrittenAndRechained() throws {
        let logPath = dir.appendingPathComponent("receipts.db").path
        let auditLog = try AuditLog.open(path: logPath)
        let agent = try Agent(service: sleepstudyService(), pki: pki, audit: auditLog)
        let fed = try agent.federation(pki.coordinator)
        let result = try Analysis.fit(fed, dataset: "data", formula: Self.formula)
        fed.close()
        agent.stop()
        let receipts = try XCTUnwrap(result.sites.first?.receipts)
        print("receipts: \(receipts.count) for \(result.rounds) rounds; the fit's JSON carries them")
        XCTAssertGreaterThanOrEqual(receipts.count, 3, "prepare, evaluations and finalize")
        let roundTrip = try AuditLog.receipts(fromFitJSON: Data(try result.json().utf8), site: "central")
        XCTAssertEqual(roundTrip, receipts)

        let certificate = agent.identity.certificatePath
        let clean = try auditLog.checkReceipts(receipts, site: "central", certificatePaths: [certificate])
        XCTAssertTrue(clean.ok, clean.summary)
        XCTAssertEqual(clean.matched, receipts.count)

        // A forged receipt: the hash changed, the signature kept.
        var forged = receipts[0]
        forged.hash = String(repeating: "a", count: 64)
        let f = try auditLog.checkReceipts([forged], site: "central", certificatePaths: [certificate])
        XCTAssertEqual(f.failures.count, 1, f.summary)

        // The site administrator deletes the prepare request and re-chains.
        auditLog.close()
        let entries = try AuditLog.openForReading(path: logPath).entries()
        let victim = try XCTUnwrap(entries.first { $0.direction == "received" && $0.messageType == "prepare" })
        let db = try SQLiteDatabase(path: logPath, mode: .readWrite)
        try db.execute("DROP TRIGGER audit_entries_no_update; DROP TRIGGER audit_entries_no_delete;")
        try db.execute("DELETE FROM audit_entries")
        var previous = AuditEntry.genesisHash
        var seq = 0
        for var e in entries where e.seq != victim.seq {
            seq += 1
            e.seq = seq
            e.previousHash = previous
            e.hash = e.computedHash
            previous = e.hash
            let s = try SQLiteDatabase.Statement(db, "INSERT INTO audit_entries VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            try s.bind(1, e.seq); try s.bind(2, e.time); try s.bind(3, e.direction); try s.bind(4, e.peerSubject)
            try s.bind(5, e.peerFingerprint); try s.bind(6, e.session); try s.bind(7, e.bytes); try s.bind(8, e.line)
            try s.bind(9, e.previousHash); try s.bind(10, e.hash)
            _ = try s.step()
        }
        try db.execute("""
            CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries BEGIN SELECT RAISE(ABORT, 'the fedmix audit log is append-only'); END;
            CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries BEGIN SELECT RAISE(ABORT, 'the fedmix audit log is append-only; retention prunes it'); END;
            """)
        db.close()
        let rewritten = try AuditLog.openForReading(path: logPath)
        let reverified = try rewritten.verify()
        XCTAssertTrue(reverified.ok, "the rewritten log verifies on its own: \(reverified.summary)")
        let check = try rewritten.checkReceipts(receipts, site: "central", certificatePaths: [certificate])
        print("receipts: after deleting entry \(victim.seq) and re-chaining, verify passes and \(check.failures.count) of \(receipts.count) receipts fail:\n\(check.summary)")
        XCTAssertFalse(check.ok)
        XCTAssertEqual(check.failures.count, receipts.filter { $0.seq >= victim.seq }.count, "every receipt after the deletion fails")
    }
}

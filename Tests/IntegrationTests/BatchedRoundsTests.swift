import XCTest
import Foundation
@testable import Coordinator
@testable import SiteAgent
import Protocol
import Math

/// Multiple imputation's M chains and analyses share rounds (RoundBatcher,
/// batch lines): the pooled results are bit-identical to running them one
/// after another, in-process and over TLS, for fit, gee and compare; the
/// rounds on the wire stay those of one imputation-model fit plus one
/// analysis; the agent logs each sub-request and sub-answer as its own audit
/// entry, with receipts that verify against its log.
final class BatchedRoundsTests: XCTestCase {
    static let files = MultipleImputationTests.files
    static let analysis = MultipleImputationTests.analysis
    static let imputation = MultipleImputationTests.imputation

    func settings(m: Int, seed: UInt64, batched: Bool, models: [String] = [imputation], iterations: Int = 10) -> ImputationSettings {
        var s = ImputationSettings(models: models, m: m, seed: seed, iterations: iterations)
        s.batched = batched
        return s
    }

    func fit(_ federation: Federation, _ s: ImputationSettings, formula: String = analysis) throws -> FitResult {
        try MultipleImputation.fit(federation, dataset: "data", formula: formula,
                                   descriptions: Analysis.describe(federation, dataset: "data"),
                                   options: FitOptions(family: .binomial), settings: s)
    }

    /// A result's JSON without what batching is meant to change or what
    /// varies from run to run (rounds, bytes, time, receipts).
    static func stable(_ json: String) throws -> String {
        let volatile: Set<String> = ["rounds", "analysis_rounds", "batched", "bytes_sent", "bytes_received", "elapsed_seconds", "receipts"]
        func strip(_ x: Any) -> Any {
            if let d = x as? [String: Any] { return d.filter { !volatile.contains($0.key) }.mapValues(strip) }
            if let a = x as? [Any] { return a.map(strip) }
            return x
        }
        let object = strip(try JSONSerialization.jsonObject(with: Data(json.utf8)))
        return String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    /// fit --impute, M = 5: batched equals one after another, in-process and
    /// over TLS; the analyses take as many rounds on the wire as the longest
    /// one alone, so the whole run stays within one imputation fit plus one
    /// analysis plus a constant.
    func testBatchedFitEqualsSequentialInProcessAndOverTLS() throws {
        let sequential = try fit(inProcessFederation(files: Self.files), settings(m: 5, seed: 42, batched: false))
        let batched = try fit(inProcessFederation(files: Self.files), settings(m: 5, seed: 42, batched: true))
        XCTAssertEqual(try Self.stable(batched.json()), try Self.stable(sequential.json()), "batched and sequential: the same pooled JSON")
        let pki = try TestPKI("batched")
        defer { pki.remove() }
        let agents = try Self.files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let tls = try tlsFederation(agents, pki: pki)
        defer { tls.close() }
        let overTLS = try fit(tls, settings(m: 5, seed: 42, batched: true))
        XCTAssertEqual(try Self.stable(overTLS.json()), try Self.stable(sequential.json()), "batched over TLS and sequential in-process: the same pooled JSON")

        let s = try XCTUnwrap(sequential.imputation), b = try XCTUnwrap(batched.imputation), t = try XCTUnwrap(overTLS.imputation)
        XCTAssertFalse(s.batched); XCTAssertTrue(b.batched); XCTAssertTrue(t.batched)
        XCTAssertEqual(b.roundsPerAnalysis, s.roundsPerAnalysis, "each analysis needs the same rounds either way")
        let imputationRounds = s.rounds - s.analysisRounds
        XCTAssertEqual(b.rounds - b.analysisRounds, imputationRounds, "one variable: one imputation fit, not batched")
        XCTAssertEqual(b.analysisRounds, b.roundsPerAnalysis, "the analyses advance in step: rounds of the longest")
        XCTAssertEqual(t.rounds, b.rounds, "over TLS as in-process")
        XCTAssertLessThanOrEqual(t.rounds, imputationRounds + t.roundsPerAnalysis + 2, "batched rounds ≤ one imputation fit + one analysis + 2")
        XCTAssertGreaterThanOrEqual(s.analysisRounds, 5 * s.roundsPerAnalysis - 5, "one after another: about M analyses' rounds")
        print("fit --impute, M = 5: rounds \(s.rounds) one after another, \(b.rounds) batched (in-process), \(t.rounds) over TLS; \(t.roundsPerAnalysis) per analysis; TLS bytes sent \(overTLS.bytesSent), received \(overTLS.bytesReceived)")

        // Each sub-request and sub-answer is its own audit entry, as without batching.
        for agent in agents {
            let prepares = agent.audit.all.filter { $0.direction == .received && $0.type == "prepare" && $0.line.contains("\"imputations\"") }
            XCTAssertEqual(prepares.count, 5, agent.site)
            XCTAssertEqual(agent.audit.all.filter { $0.direction == .sent && $0.line.contains("\"imputed\"") }.count, 5, agent.site)
            XCTAssertFalse(agent.audit.all.contains { $0.type == "batch" || $0.type == "batched" }, "the envelopes are noted, not stored twice")
        }
    }

    /// Two variables by chained equations: the chains' sweeps are batched too.
    func testBatchedChainedEquationsEqualSequential() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-batch-fcs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = try TraumaRegistrySimulator.write(to: dir.path, scale: 0.5)
        let models = ["lactate ~ age + iss + died + (1 | site)", "age ~ lactate + iss + died + (1 | site)"]
        let formula = "died ~ age + iss + lactate + (1 | site)"
        let a = try fit(inProcessFederation(files: files), settings(m: 3, seed: 5, batched: false, models: models, iterations: 2), formula: formula)
        let b = try fit(inProcessFederation(files: files), settings(m: 3, seed: 5, batched: true, models: models, iterations: 2), formula: formula)
        XCTAssertEqual(try Self.stable(b.json()), try Self.stable(a.json()))
        let (sa, sb) = (try XCTUnwrap(a.imputation), try XCTUnwrap(b.imputation))
        XCTAssertEqual(sb.imputationFits, sa.imputationFits)
        XCTAssertLessThan(sb.rounds * 2, sa.rounds, "3 chains and 3 analyses share rounds")
        print("chained equations (2 variables, 2 sweeps), M = 3: rounds \(sa.rounds) one after another, \(sb.rounds) batched")
    }

    /// gee --impute and compare --impute go through the same batching.
    func testBatchedGEEAndCompareEqualSequential() throws {
        var options = FitOptions(family: .binomial)
        options.cluster = "site"
        options.gee = GEESettings(correlation: .exchangeable, order: nil, smallSample: nil)
        func gee(_ batched: Bool) throws -> GEEResult {
            let f = inProcessFederation(files: Self.files)
            return try GEEResult.imputed(f, dataset: "data", formula: "died ~ age + iss + lactate",
                                         descriptions: Analysis.describe(f, dataset: "data"), options: options,
                                         settings: settings(m: 3, seed: 11, batched: batched))
        }
        let (g1, g2) = (try gee(false), try gee(true))
        XCTAssertEqual(try Self.stable(g2.json()), try Self.stable(g1.json()))
        XCTAssertLessThan(g2.rounds * 2, g1.rounds)
        func compare(_ batched: Bool) throws -> Comparison {
            try ModelComparison.compare(inProcessFederation(files: Self.files), dataset: "data",
                                        formulas: ["died ~ age + iss + (1 | site)", Self.analysis], options: FitOptions(family: .binomial),
                                        imputation: settings(m: 3, seed: 3, batched: batched))
        }
        let (c1, c2) = (try compare(false), try compare(true))
        XCTAssertEqual(try Self.stable(c2.json()), try Self.stable(c1.json()))
        XCTAssertLessThan(c2.rounds * 2, c1.rounds)
        print("gee --impute M = 3: rounds \(g1.rounds) → \(g2.rounds); compare --impute M = 3: \(c1.rounds) → \(c2.rounds)")
    }

    /// A δ grid (sensitivity): every MI run of the grid batched together.
    func testDeltaGridBatchedEqualsSequential() throws {
        func grid(_ batched: Bool) throws -> (results: [FitResult], rounds: Int) {
            let f = inProcessFederation(files: Self.files)
            let descriptions = try Analysis.describe(f, dataset: "data")
            let before = f.rounds
            let all = [0.0, -1, 1].map { d -> ImputationSettings in
                var s = settings(m: 3, seed: 9, batched: batched)
                if d != 0 { s.delta = ["lactate": d] }
                return s
            }
            let results = try MultipleImputation.fits(f, dataset: "data", formula: Self.analysis, descriptions: descriptions,
                                                      options: FitOptions(family: .binomial), settings: all)
            return (results, f.rounds - before)
        }
        let (a, b) = (try grid(false), try grid(true))
        for (x, y) in zip(a.results, b.results) { XCTAssertEqual(try Self.stable(y.json()), try Self.stable(x.json())) }
        XCTAssertLessThanOrEqual(b.rounds, b.results[0].imputation!.rounds + 2, "the whole grid in about one MI run's rounds")
        print("δ grid of 3, M = 3: rounds \(a.rounds) one after another, \(b.rounds) batched")
    }

    /// Over TLS with the SQLite audit log: the log verifies, every receipt
    /// (one per sub-answer) matches its entry, and the batch lines are noted.
    func testAuditLogAndReceiptsOverTLS() throws {
        let pki = try TestPKI("batched-audit")
        defer { pki.remove() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-batch-audit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = Self.files[0]
        let site = file.deletingPathExtension().lastPathComponent
        let log = try AuditLog.open(path: dir.appendingPathComponent("audit.db").path)
        let identity = try pki.issue("agent-" + site)
        let server = try AgentServer(service: SiteService(site: site, datasets: ["data": .csv(path: file.path, types: [:])], policy: .off),
                                     host: "127.0.0.1", port: 0,
                                     context: TLSContext.server(identity: identity, allowedPeerNames: ["coordinator"]),
                                     audit: log, log: AgentLog(enabled: false), ioTimeout: 30)
        server.start()
        defer { server.stop() }
        let federation = try SitesFile(identity: pki.coordinator, sites: [.init(name: site, host: "127.0.0.1", port: server.port, serverName: "agent-" + site)]).connect(timeout: 10)
        defer { federation.close() }
        let result = try MultipleImputation.fit(federation, dataset: "data", formula: "died ~ age + iss + lactate",
                                                descriptions: Analysis.describe(federation, dataset: "data"),
                                                options: FitOptions(family: .binomial),
                                                settings: settings(m: 3, seed: 2, batched: true, models: ["lactate ~ age + iss + died"]))
        XCTAssertTrue(try log.verify().problem == nil, "the chain verifies")
        let entries = try log.entries()
        XCTAssertEqual(entries.filter { $0.direction == "received" && $0.messageType == "prepare" && $0.line.contains("\"imputations\"") }.count, 3)
        XCTAssertGreaterThan(entries.filter { $0.direction == "note" && $0.line.contains("batch_received") }.count, 0)
        XCTAssertEqual(entries.filter { $0.direction == "note" && $0.line.contains("batch_received") }.count,
                       entries.filter { $0.direction == "note" && $0.line.contains("batch_sent") }.count)
        let receipts = federation.receipts[0]
        XCTAssertEqual(receipts.count, entries.filter { $0.direction == "sent" }.count - 1, "one receipt per answer, sub-answers included (not the hello)")
        let check = try log.checkReceipts(receipts, site: site, certificatePaths: [identity.certificatePath])
        XCTAssertTrue(check.ok, check.summary)
        XCTAssertEqual(check.matched, receipts.count)
        XCTAssertFalse(result.sites[0].receipts?.isEmpty ?? true, "the pooled fit carries its first analysis's receipts")
    }

    /// An agent that does not know batches (an older version answers
    /// unknown_type): its requests go one at a time, the result is the same,
    /// and the result says so.
    func testAgentWithoutBatchesGetsRequestsOneAtATime() throws {
        let channels: [SiteChannel] = Self.files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
            return InProcessChannel(site: site) { line in
                guard LineCodec.peekType(line) == "batch" else { return service.handle(line: line) }
                return (try? LineCodec.encode(Reply.error(ErrorReply(code: .unknownType, fatal: false, message: "unknown message type (5 characters)")), id: LineCodec.peekID(line) ?? 0)) ?? "{}"
            }
        }
        let old = try fit(Federation(channels: channels), settings(m: 3, seed: 4, batched: true))
        let sequential = try fit(inProcessFederation(files: Self.files), settings(m: 3, seed: 4, batched: false))
        XCTAssertEqual(old.fixedEffects.map(\.estimate), sequential.fixedEffects.map(\.estimate))
        XCTAssertTrue(old.messages.contains { $0.contains("do not take batched requests") }, "\(old.messages)")
    }

    /// A site whose answer limit holds one answer per line: the rest are
    /// left for later lines (batch_not_answered, never processed) and sent
    /// again; the answers equal those sent alone.
    func testAnswersBeyondTheSiteLimitAreSentAgain() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        let url = files[0]
        let site = url.deletingPathExtension().lastPathComponent
        let spec = try Analysis.model(formula: "Reaction ~ Days + (Days | site)",
                                      descriptions: Analysis.describe(inProcessFederation(files: files), dataset: "data"), options: FitOptions())
        let requests = (0..<12).map { Request.prepare(PrepareRequest(session: "s\($0)", dataset: "data", model: spec)) }
        let alone = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
        let single = requests.map { alone.handle($0) }
        let size = try LineCodec.encode(single[0], id: 1).utf8.count
        var limits = AgentLimits()
        limits.maxAnswerBytes = 5000   // above the prepare's estimated answer (about 4,700 bytes); a batched line holds about 2,500
        XCTAssertLessThan(size * 3, limits.maxAnswerBytes / 2)
        let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off, limits: limits)
        let channel = InProcessChannel(site: site) { service.handle(line: $0) }
        let first = try channel.call(batch: requests, round: nil)
        guard case .error(let e) = first[11] else { return XCTFail("the last answer should wait for a later line") }
        guard case .prepared = first[0] else { return XCTFail("the first answer is always given") }
        XCTAssertEqual(e.code, .batchNotAnswered)
        XCTAssertTrue(e.message.contains("limits.max_answer_bytes"), e.message)
        let (replies, exchanges, unbatched) = try channel.answers(to: requests, round: nil)
        XCTAssertGreaterThan(exchanges, 1); XCTAssertLessThan(exchanges, 12); XCTAssertFalse(unbatched)
        XCTAssertEqual(replies, single, "each answer as if sent alone")
    }
}

/// Rounds, bytes and wall time over TLS on the registry example (the
/// fixtures of `fedmix simulate imputation`), batched and one after
/// another, for M = 5 and 20. Prints the figures; set FEDMIX_MEASURE_BATCH=1
/// to run it (about a minute on the shared machine).
final class BatchedRoundsMeasurement: XCTestCase {
    func testMeasureOverTLS() throws {
        guard ProcessInfo.processInfo.environment["FEDMIX_MEASURE_BATCH"] == "1" else { throw XCTSkip("set FEDMIX_MEASURE_BATCH=1 to measure") }
        let pki = try TestPKI("batched-measure")
        defer { pki.remove() }
        let agents = try BatchedRoundsTests.files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        for m in [5, 20] {
            var pooled: [String] = []
            for batched in [false, true] {
                let tls = try tlsFederation(agents, pki: pki)
                defer { tls.close() }
                let descriptions = try Analysis.describe(tls, dataset: "data")
                let (sent0, received0, rounds0) = (tls.bytesSent.reduce(0, +), tls.bytesReceived.reduce(0, +), tls.rounds)
                var s = ImputationSettings(models: [BatchedRoundsTests.imputation], m: m, seed: 7)
                s.batched = batched
                let started = Date()
                let r = try MultipleImputation.fit(tls, dataset: "data", formula: BatchedRoundsTests.analysis, descriptions: descriptions,
                                                   options: FitOptions(family: .binomial), settings: s)
                let seconds = Date().timeIntervalSince(started)
                pooled.append(try BatchedRoundsTests.stable(r.json()))
                print(String(format: "MI over TLS, M = %d, %@: rounds %d (%d per analysis), bytes sent %d, received %d, wall %.1f s",
                             m, batched ? "batched" : "one after another", tls.rounds - rounds0, r.imputation!.roundsPerAnalysis,
                             tls.bytesSent.reduce(0, +) - sent0, tls.bytesReceived.reduce(0, +) - received0, seconds))
            }
            XCTAssertEqual(pooled[0], pooled[1], "M = \(m): the same pooled JSON")
        }
        // In process with a 20 ms round trip per request (a hospital network), M = 20.
        for batched in [false, true] {
            let f = Federation(channels: inProcessFederation(files: BatchedRoundsTests.files).channels.map { LatencyChannel($0, seconds: 0.02) })
            let descriptions = try Analysis.describe(f, dataset: "data")
            var s = ImputationSettings(models: [BatchedRoundsTests.imputation], m: 20, seed: 7)
            s.batched = batched
            let started = Date()
            let r = try MultipleImputation.fit(f, dataset: "data", formula: BatchedRoundsTests.analysis, descriptions: descriptions,
                                               options: FitOptions(family: .binomial), settings: s)
            print(String(format: "MI in process with 20 ms per round trip, M = 20, %@: rounds %d, wall %.1f s",
                         batched ? "batched" : "one after another", r.rounds, Date().timeIntervalSince(started)))
        }
    }
}

/// A channel that waits `seconds` before each request (a network round trip).
final class LatencyChannel: SiteChannel {
    let inner: SiteChannel
    let seconds: Double
    init(_ inner: SiteChannel, seconds: Double) { self.inner = inner; self.seconds = seconds }
    var site: String { inner.site }
    func call(_ request: Request) throws -> Reply {
        Thread.sleep(forTimeInterval: seconds)
        return try inner.call(request)
    }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    func close() { inner.close() }
}

import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// What a hostile coordinator or agent might send, found in review: each is
/// refused or reported, never a crash and never a disclosure.
final class HostilePeerTests: XCTestCase {
    /// An agent whose finalize answers carry the wrong covariance shape.
    func testMalformedFinalizeAnswerIsASiteFailure() throws {
        let files = try Fixtures.siteFiles("dyestuff")
        let channels: [SiteChannel] = files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
            return InProcessChannel(site: site) { line in
                let answer = service.handle(line: line)
                guard site == "C", answer.contains("\"finalized\"") else { return answer }
                // drop the covariance entries: effects of length 1, covariance of length 0
                return answer.replacingOccurrences(of: #""conditional_covariance":\[[^\]]*\]"#, with: "\"conditional_covariance\":[]",
                                                   options: .regularExpression)
            }
        }
        XCTAssertThrowsError(try Analysis.fit(Federation(channels: channels), dataset: "data", formula: "Yield ~ 1 + (1 | site)")) { e in
            XCTAssertEqual((e as? SiteFailure)?.site, "C")
            // Refused at decode, naming the field (FinalizeReply's validating decoder).
            XCTAssertTrue("\(e)".contains("field \"conditional_covariance\" has 0 values; 1 effects need 1"), "\(e)")
        }
    }

    /// A prepare answer claiming an absurd number of rows.
    func testImplausibleCountsAreASiteFailure() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        let channels: [SiteChannel] = files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
            return InProcessChannel(site: site) { line in
                let answer = service.handle(line: line)
                guard site == "north", answer.contains("\"prepared\"") else { return answer }
                return answer.replacingOccurrences(of: #""used":[0-9]+"#, with: "\"used\":9223372036854775807", options: .regularExpression)
            }
        }
        XCTAssertThrowsError(try Analysis.fit(Federation(channels: channels), dataset: "data", formula: "Reaction ~ Days + (Days | Subject)")) { e in
            XCTAssertEqual((e as? SiteFailure)?.site, "north")
        }
    }

    func table(_ n: Int) -> DataTable {
        DataTable(columns: [
            .init(name: "y", data: .numeric((0..<n).map { Double($0 % 7) + 0.5 })),
            .init(name: "age", data: .numeric((0..<n).map { $0 == 3 ? 95 : Double(30 + $0 % 40) })),
        ], rowCount: n)
    }

    func prepare(_ service: SiteService, _ spec: ModelSpec) -> Reply {
        service.handle(.prepare(PrepareRequest(session: UUID().uuidString, dataset: "d", model: spec)))
    }

    /// A column that singles out one patient with values 0 and 2 (not 0/1),
    /// and weights that do the same, are refused: first by the formula
    /// language (a shifted sqrt, a computed denominator), and, were that
    /// rule off, by min_cell at evaluation.
    func testDisguisedIndicatorsAreRefused() throws {
        for checksExpressions in [true, false] {
            var policy = DisclosurePolicy()
            policy.maxParametersPerRow = .infinity
            policy.checksExpressions = checksExpressions
            let rule = checksExpressions ? "rule expressions" : "min_cell"
            let service = SiteService(site: "A", datasets: ["d": .table(table(60))], siteColumn: nil, policy: policy)
            let one = DesignColumn(name: "(Intercept)", expr: .number(1))
            // ((a^2)^0.5 + a)/a with a = age − 90.5: 0 below, 2 above
            let a: Expr = .binary(.subtract, .variable("age"), .number(90.5))
            let disguised: Expr = .binary(.divide, .binary(.add, .binary(.power, .binary(.power, a, .number(2)), .number(0.5)), a), a)
            let spec = ModelSpec(formula: "y ~ I(...) + (1 | site)", response: .value(.variable("y")),
                                 fixed: [one, DesignColumn(name: "I(...)", expr: disguised)],
                                 terms: [RandomTerm(name: "site", grouping: .site, columns: [one])])
            guard case .error(let e) = prepare(service, spec) else { return XCTFail("a disguised indicator was accepted") }
            XCTAssertEqual(e.code, "disclosure_refused")
            XCTAssertTrue(e.message.contains(rule), e.message)
            XCTAssertFalse(e.message.contains("95"), "no values: \(e.message)")
            // weights exp(y·[age > 90.5]) would reveal that patient's y through Σ log w
            var weighted = ModelSpec(formula: "y ~ 1 + (1 | site)", response: .value(.variable("y")), fixed: [one],
                                     terms: [RandomTerm(name: "site", grouping: .site, columns: [one])])
            weighted.weights = .unary(.exp, .binary(.multiply, .variable("y"), .binary(.multiply, disguised, .number(0.5))))
            guard case .error(let w) = prepare(service, weighted) else { return XCTFail("weights singling out a row were accepted") }
            XCTAssertTrue(w.message.contains("weights") && w.message.contains(rule), w.message)
        }
    }

    /// Within-site factors too many to hold densely: nested ones (episodes in
    /// patients) are held level by level and accepted; two that are not
    /// nested in one another are refused up front, saying why.
    func testOversizedDenseTailIsRefusedUnlessNested() throws {
        let n = 9000
        let t = DataTable(columns: [
            .init(name: "y", data: .numeric((0..<n).map { Double($0 % 5) })),
            .init(name: "patient", data: .numeric((0..<n).map { Double($0 / 3) })),
            .init(name: "episode", data: .numeric((0..<n).map { Double($0) })),
            .init(name: "ward", data: .numeric((0..<n).map { Double(($0 * 7) % 2900) })),
        ], rowCount: n)
        let service = SiteService(site: "A", datasets: ["d": .table(t)], siteColumn: nil, policy: .off)
        let one = DesignColumn(name: "(Intercept)", expr: .number(1))
        let nested = ModelSpec(formula: "y ~ 1 + (1 | site/patient/episode)", response: .value(.variable("y")), fixed: [one],
                               terms: [RandomTerm(name: "episode:patient", grouping: .withinSite(["episode", "patient"]), columns: [one]),
                                       RandomTerm(name: "patient", grouping: .withinSite(["patient"]), columns: [one])])
        if case .error(let e) = prepare(service, nested) { XCTFail("3,000 nested patients were refused: \(e.message)") }
        let crossedInSite = ModelSpec(formula: "y ~ 1 + (1 | site:episode) + (1 | site:patient) + (1 | site:ward)", response: .value(.variable("y")), fixed: [one],
                                      terms: [RandomTerm(name: "episode", grouping: .withinSite(["episode"]), columns: [one]),
                                              RandomTerm(name: "patient", grouping: .withinSite(["patient"]), columns: [one]),
                                              RandomTerm(name: "ward", grouping: .withinSite(["ward"]), columns: [one])])
        guard case .error(let e) = prepare(service, crossedInSite) else { return XCTFail("a 5,900-effect tail of factors not nested in one another was accepted") }
        XCTAssertTrue(e.message.contains("at most 2000") && e.message.contains("not nested"), e.message)
    }

    // MARK: Malformed batches

    /// Batch lines a hostile coordinator might send (empty, too many, nested,
    /// ping inside, an unknown or non-line sub-request): each is
    /// refused as a whole with a clear error naming the sub-request, nothing
    /// in it is processed, and the connection goes on serving.
    static let malformedBatches: [(line: String, says: String)] = {
        let ping = #"{\"id\":2,\"type\":\"ping\"}"#
        let evaluate = #"{\"id\":3,\"type\":\"evaluate\",\"session\":\"x\"}"#
        let many = Array(repeating: "\"" + evaluate + "\"", count: ProtocolLimits.maxBatchRequests + 1).joined(separator: ",")
        let nested = #"{\"id\":2,\"type\":\"batch\",\"requests\":[]}"#
        return [
            (#"{"id":1,"type":"batch","requests":[]}"#, "is empty"),
            (#"{"id":1,"type":"batch","requests":["# + many + "]}", "holds 101 requests; a batch carries at most 100"),
            (#"{"id":1,"type":"batch","requests":[""# + nested + #""]}"#, "requests[0]\" is a batch; batches cannot be nested"),
            (#"{"id":1,"type":"batch","requests":[""# + evaluate + #"",""# + ping + #""]}"#, "requests[1]\" is a request \"ping\"; only describe, prepare, evaluate and finalize may be batched"),
            (#"{"id":1,"type":"batch","requests":["{\"id\":2,\"type\":\"fit_everything\"}"]}"#, "is a request \"fit_everything\"; only describe, prepare"),
            (#"{"id":1,"type":"batch","requests":["not a line"]}"#, "requests[0]\" is not a protocol line"),
            (#"{"id":1,"type":"batch","requests":[7]}"#, "wrong type"),
            (#"{"id":1,"type":"batch"}"#, "\"requests\" is missing"),
        ]
    }()

    func testMalformedBatchesAreRefusedInProcess() throws {
        let files = try Fixtures.siteFiles("sleepstudy")
        let url = files[0]
        let service = SiteService(site: url.deletingPathExtension().lastPathComponent, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
        for (line, says) in Self.malformedBatches {
            let (id, reply) = try LineCodec.decodeReply(service.handle(line: line))
            XCTAssertEqual(id, 1)
            guard case .error(let e) = reply else { XCTFail("accepted: \(line.prefix(120))"); continue }
            XCTAssertFalse(e.fatal)
            XCTAssertTrue(e.message.contains(says), "\(e.message) should say \(says)")
        }
        // One bad sub-request among good ones gets its own error; the others answer.
        let spec = try Analysis.model(formula: "Reaction ~ Days + (1 | site)",
                                      descriptions: Analysis.describe(inProcessFederation(files: files), dataset: "data"), options: FitOptions())
        let good = try LineCodec.encode(.prepare(PrepareRequest(session: "a", dataset: "data", model: spec)), id: 2)
        let bad = try LineCodec.encode(.finalize(FinalizeRequest(session: "nobody", theta: [1], beta: [1, 1], sigma: 1)), id: 3)
        let (_, reply) = try LineCodec.decodeReply(service.handle(line: LineCodec.encode(.batch(BatchRequest(requests: [good, bad])), id: 1)))
        guard case .batched(let b) = reply else { return XCTFail("\(reply)") }
        guard case (2, .prepared) = try LineCodec.decodeReply(b.answers[0]) else { return XCTFail(b.answers[0]) }
        guard case (3, .error(let e)) = try LineCodec.decodeReply(b.answers[1]) else { return XCTFail(b.answers[1]) }
        XCTAssertEqual(e.code, .unknownSession)
    }

    func testMalformedBatchesAreRefusedOverTLS() throws {
        let pki = try TestPKI("hostile-batch")
        defer { pki.remove() }
        let agent = try LoopbackAgent(file: Fixtures.siteFiles("sleepstudy")[0], pki: pki)
        defer { agent.stop() }
        let client = try RawProtocolClient(agent: agent, identity: pki.coordinator)
        defer { client.close() }
        for (line, says) in Self.malformedBatches {
            guard let (_, e) = try client.expectError(after: line) else { return }
            XCTAssertTrue(e.message.contains(says), "\(e.message) should say \(says)")
        }
        try client.send(.ping, id: 9)
        guard case (9, .pong)? = try client.reply() else { return XCTFail("the connection still serves") }
        // A batch longer than the agent's line limit: refused with the limit named, the connection closed, no crash.
        let small = try LoopbackAgent(file: Fixtures.siteFiles("sleepstudy")[0], pki: pki, maxLineBytes: 4096)
        defer { small.stop() }
        let other = try RawProtocolClient(agent: small, identity: pki.coordinator)
        defer { other.close() }
        let evaluate = #"{\"id\":3,\"type\":\"evaluate\",\"session\":\"x\",\"theta\":[1],\"order\":0}"#
        let long = #"{"id":1,"type":"batch","requests":["# + Array(repeating: "\"" + evaluate + "\"", count: 80).joined(separator: ",") + "]}"
        XCTAssertGreaterThan(long.utf8.count, 4096)
        guard let (_, e) = try other.expectError(after: long) else { return }
        XCTAssertTrue(e.fatal && e.message.contains("limit of 4096 bytes"), e.message)
        XCTAssertTrue(other.agentClosed())
        XCTAssertFalse(agent.audit.all.contains { $0.direction == .received && $0.type == "evaluate" },
                       "no sub-request of a refused batch was processed")
    }
}

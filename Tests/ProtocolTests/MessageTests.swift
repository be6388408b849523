import XCTest
import Foundation
import Math
import Protocol

/// Messages of every kind through the line codec: each reads back equal, its
/// numbers bit for bit (signed zeros, subnormals, the largest and smallest
/// magnitudes), under its documented type name; the shapes a peer declares are
/// checked before numbers are used; and a model specification that is not
/// well formed is refused naming the field.
/// A subnormal double (2e-310, written exactly: a decimal literal this small draws a compiler warning).
private let subnormal = 0x0.024d116e1cc56p-1022

final class MessageTests: XCTestCase {
    typealias Numbers = LineCodecTests

    func bits(_ v: [Double]?) -> [UInt64]? { v?.map(\.bitPattern) }

    /// The "type" field of a line.
    func typeField(_ line: String) throws -> String? {
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        return object?["type"] as? String
    }

    // MARK: Every kind of message

    static var everyRequest: [Request] {
        let model = ModelSpec(formula: "y ~ x + (1 | site)", response: .value(.variable("y")),
                              fixed: [DesignColumn(name: "(Intercept)", expr: .number(1)), DesignColumn(name: "x", expr: .variable("x"))],
                              terms: [RandomTerm(name: "site", grouping: .site, columns: [DesignColumn(name: "(Intercept)", expr: .number(1))])])
        return [
            .describe(DescribeRequest(dataset: "registry")),
            .describe(DescribeRequest(dataset: "registry", levelHashes: LevelHashRequest(salt: String(repeating: "ab", count: 16),
                                                                                          variables: ["ward", "patient"]))),
            .prepare(PrepareRequest(session: "s1", dataset: "registry", model: model)),
            .evaluate(EvaluateRequest(session: "s1", theta: [0.5, -0.0, 1e-300], order: 2)),
            .evaluate(EvaluateRequest(session: "s1", theta: [0.8], order: 1, beta: [-1.25, Double.leastNonzeroMagnitude], nAGQ: 9)),
            .evaluate({
                var r = EvaluateRequest(session: "s1", theta: [0.5, 0.25], order: 0)
                r.crossed = [CrossedGLMMPoint(theta: [0.5, 0.25], beta: [-1.25, Double.leastNonzeroMagnitude], effects: [0.1, -0.0, subnormal]),
                             CrossedGLMMPoint(theta: [0.5002, 0.25], beta: [-1.25, 0.5], effects: [0.1, 0.2, 0.3])]
                return r
            }()),
            .finalize(FinalizeRequest(session: "s1", theta: [0.5], beta: [1, 2], sigma: 25.5)),
            .evaluate(EvaluateRequest(session: "s1", theta: [], order: 0, beta: [0.25, -1e-300],
                                      gee: GEEPoint(alpha: -0.0, scale: 1.5, bread: [2, 0.5, 0.5, 1.5 * subnormal]))),
            .finalize(FinalizeRequest(session: "s1", theta: [0.5], beta: [1, 2], sigma: 1, marginal: MarginalRequest(points: 40, discrete: [false, true]))),
            .prepare(PrepareRequest(session: "s2", dataset: "registry", model: crossedModel)),
            .finalize({
                var f = FinalizeRequest(session: "s2", theta: [0.5, 1.25], beta: [1, 2], sigma: 2)
                f.crossedEffects = [0.25, -0.0]
                f.crossedCovariance = [1, 0.5, 0.5, subnormal]
                return f
            }()),
            .ping,
        ]
    }

    /// `y ~ x + (1 | site) + (1 | year)` with year crossed with the sites.
    static var crossedModel: ModelSpec {
        let one = DesignColumn(name: "(Intercept)", expr: .number(1))
        return ModelSpec(formula: "y ~ x + (1 | site) + (1 | year)", response: .value(.variable("y")),
                         fixed: [one, DesignColumn(name: "x", expr: .variable("x"))],
                         terms: [RandomTerm(name: "year", grouping: .crossed("year", levels: ["2011", "2012", "2013"]), columns: [one]),
                                 RandomTerm(name: "site", grouping: .site, columns: [one])])
    }

    static var everyReply: [Reply] {
        let space = JetSpace(parameters: 2, order: 2)
        var objective = ScalarJet(space: space)
        objective.storage = [123.25, -0.5, subnormal, 4, -0.0, 1e300]
        var schur = JetMatrix(rows: 2, cols: 2, space: space)
        schur.storage = (0..<schur.storage.count).map { Double($0) * 0.1 - 1 }
        var logDet = ScalarJet(space: space)
        logDet.storage = [3, 0.25, -0.125, 1, 2, 3]
        let description = SiteDescription(site: "north", dataset: "registry", rows: 120, variables: [
            VariableDescription(name: "ward", type: .text, missing: .below(5), distinct: 3,
                                levels: [.init(level: "a", count: .exact(60)), .init(level: "b", count: .exact(58))], suppressedLevels: 1),
            VariableDescription(name: "age", type: .numeric, missing: .exact(0), distinct: 70, levels: nil),
        ], levelHashes: LevelHashes(salt: String(repeating: "cd", count: 16), variables: ["ward": ["0a1b", "2c3d"]]))
        var summary = SiteSummary(rows: 120, used: 117, missing: ["age": .exact(3)], groups: [3, 1],
                                  patterns: [MissingPattern(missing: [], count: .exact(117)), MissingPattern(missing: ["age"], count: .below(5))],
                                  columnSums: [117, 5012.5])
        summary.logWeightSum = -0.0
        summary.columnSquareSums = [117, 2.5e5]
        return [
            .described(description),
            .prepared(PrepareReply(session: "s1", summary: summary, blocks: nil)),
            .prepared(PrepareReply(session: "s2", summary: { var c = summary; c.crossedLevels = [[0, 2]]; return c }(), blocks: nil)),
            .contribution(ContributionReply(session: "s1", contribution: LMMContribution(schur: schur, logDet: logDet, rows: 117))),
            .glmmContribution(GLMMContributionReply(session: "s1", rows: 117, objective: objective)),
            .glmStep(GLMStepReply(session: "s1", rows: 117, deviance: 93.5, information: [4, 1.5, 1.5, subnormal], working: [-0.25, 7])),
            .glmmCrossed(CrossedGLMMReply(session: "s1", rows: 117, pieces: [
                CrossedGLMMPiece(value: 93.5, gradient: [-0.25, 7], hessian: [4, 1.5, subnormal], logDet: 1e-300)])),
            .finalized(FinalizeReply(session: "s1", effects: [0.5], conditionalCovariance: [0.01], ownEffects: [-0.0],
                                     saturatedDeviance: 12.5)),
            .geeStep(GEEStepReply(session: "s1", sums: {
                var g = GEESums(rows: 117, clusters: 30, information: [4, 1.5, 1.5, subnormal], score: [-0.25, 7], meat: [1, -0.0, -0.0, Double.leastNonzeroMagnitude])
                g.pearsonSquares = 116.5; g.alphaInformation = 240; g.alphaCross = -3.75; g.alphaFitted = 1e-300
                g.meatMD = [1.5, 0.25, 0.25, 2]; g.meatKC = [1.25, 0.125, 0.125, 1.75]
                return g
            }())),
            .finalized({
                var f = FinalizeReply(session: "s1", effects: [0.5], conditionalCovariance: [0.01], saturatedDeviance: 3)
                f.marginal = MarginalReply(GLMMMarginalSums(rows: 117, values: [45.5, -0.0, subnormal], gradients: [1, 2, 3, 4, 5, 6]))
                return f
            }()),
            .pong,
            .error(ErrorReply(code: "disclosure_refused", fatal: true, message: "refused\twith a tab, a \"quote\" and ünïcode")),
        ]
    }

    func testEveryRequestKindRoundTripsUnderItsTypeName() throws {
        var kinds = Set<String>()
        for (id, request) in Self.everyRequest.enumerated() {
            let line = try LineCodec.encode(request, id: 100 + id)
            XCTAssertFalse(line.contains("\n"), line)
            XCTAssertEqual(try typeField(line), request.typeName)
            XCTAssertEqual(LineCodec.peekID(line), 100 + id)
            let (gotID, got) = try LineCodec.decodeRequest(line)
            XCTAssertEqual(gotID, 100 + id)
            XCTAssertEqual(got, request, line)
            // Decoding is the inverse of encoding: the line is reproduced exactly.
            XCTAssertEqual(try LineCodec.encode(got, id: gotID), line)
            kinds.insert(request.typeName)
        }
        XCTAssertEqual(kinds, ["describe", "prepare", "evaluate", "finalize", "ping"])
    }

    /// The agent reads a request line once: what it routes and answers, and
    /// the id it addresses an error to, are decodeRequest's and peekID's.
    func testReadingARequestOnceGivesDecodeAndPeekIDsAnswers() throws {
        for (id, request) in Self.everyRequest.enumerated() {
            let line = try LineCodec.encode(request, id: 7 + id)
            let read = LineCodec.readRequest(line)
            XCTAssertEqual(read.id, 7 + id)
            XCTAssertEqual(try read.request.get(), request, line)
        }
        // A body that does not decode keeps its id (the error answer is addressed to it) ...
        let refused = LineCodec.readRequest(#"{"id":42,"type":"evaluate","session":5}"#)
        XCTAssertEqual(refused.id, 42)
        XCTAssertEqual(refused.id, LineCodec.peekID(#"{"id":42,"type":"evaluate","session":5}"#))
        XCTAssertThrowsError(try refused.request.get())
        // ... an unknown type too; a line that is not JSON has none.
        XCTAssertEqual(LineCodec.readRequest(#"{"id":3,"type":"teleport"}"#).id, 3)
        XCTAssertThrowsError(try LineCodec.readRequest(#"{"id":3,"type":"teleport"}"#).request.get()) { error in
            XCTAssertEqual((error as? ProtocolError)?.code, ProtocolError.unknownType("teleport").code)
        }
        let garbage = LineCodec.readRequest("{\"id\":3,")
        XCTAssertNil(garbage.id)
        XCTAssertThrowsError(try garbage.request.get())
    }

    func testEveryReplyKindRoundTripsUnderItsTypeName() throws {
        var kinds = Set<String>()
        for (id, reply) in Self.everyReply.enumerated() {
            let line = try LineCodec.encode(reply, id: id)
            XCTAssertFalse(line.contains("\n"), line)
            XCTAssertEqual(try typeField(line), reply.typeName)
            let (gotID, got) = try LineCodec.decodeReply(line)
            XCTAssertEqual(gotID, id)
            XCTAssertEqual(got, reply, line)
            XCTAssertEqual(try LineCodec.encode(got, id: gotID), line)
            kinds.insert(reply.typeName)
        }
        XCTAssertEqual(kinds, ["described", "prepared", "contribution", "glmm_contribution", "glm_step", "gee_step", "glmm_crossed", "finalized", "pong", "error"])
    }

    /// A request is not a reply and a reply is not a request.
    func testRequestsAndRepliesAreNotConfused() throws {
        for request in Self.everyRequest {
            XCTAssertThrowsError(try LineCodec.decodeReply(try LineCodec.encode(request, id: 1)), request.typeName)
        }
        for reply in Self.everyReply {
            XCTAssertThrowsError(try LineCodec.decodeRequest(try LineCodec.encode(reply, id: 1)), reply.typeName)
        }
    }

    // MARK: GLMM messages, bit for bit

    func testGLMMEvaluateRequestRoundTripsBitForBit() throws {
        let values = Numbers.numbers(2500, seed: 0x61A7)
        for nAGQ in [1, 7, 25] {
            let sent = EvaluateRequest(session: "g", theta: Array(values[0..<500]), order: 2, beta: Array(values[500...]), nAGQ: nAGQ)
            let line = try LineCodec.encode(.evaluate(sent), id: nAGQ)
            XCTAssertTrue(line.contains("\"nagq\":\(nAGQ)"), "the wire name of nAGQ")
            guard case .evaluate(let got) = try LineCodec.decodeRequest(line).request else { return XCTFail("not an evaluate") }
            XCTAssertEqual(bits(got.theta), bits(sent.theta))
            XCTAssertEqual(bits(got.beta), bits(sent.beta))
            XCTAssertEqual(got.nAGQ, nAGQ)
            XCTAssertEqual(got.order, 2)
        }
        // An LMM evaluate carries neither field.
        let lmm = try LineCodec.encode(.evaluate(EvaluateRequest(session: "l", theta: [1], order: 0)), id: 1)
        XCTAssertFalse(lmm.contains("beta"), lmm)
        XCTAssertFalse(lmm.contains("nagq"), lmm)
        guard case .evaluate(let got) = try LineCodec.decodeRequest(lmm).request else { return XCTFail("not an evaluate") }
        XCTAssertNil(got.beta)
        XCTAssertNil(got.nAGQ)
    }

    func testGLMMContributionRoundTripsBitForBitAtEveryOrder() throws {
        for (order, parameters) in [(0, 3), (1, 3), (2, 3), (2, 40)] {
            var jet = ScalarJet(space: JetSpace(parameters: parameters, order: order))
            jet.storage = Numbers.numbers(jet.storage.count + 40, seed: UInt64(order * 100 + parameters)).suffix(jet.storage.count)
            jet.storage[0] = order == 1 ? -0.0 : .leastNonzeroMagnitude
            let sent = GLMMContributionReply(session: "g", rows: 321, objective: jet)
            XCTAssertEqual([sent.parameters, sent.order], [parameters, order])
            let line = try LineCodec.encode(.glmmContribution(sent), id: 5)
            guard case .glmmContribution(let got) = try LineCodec.decodeReply(line).reply else { return XCTFail("not a glmm_contribution") }
            XCTAssertEqual(got.rows, 321)
            XCTAssertEqual(bits(got.objective), bits(jet.storage), "order \(order)")
            let back = try got.jet()
            XCTAssertEqual(back.space, jet.space)
            XCTAssertEqual(bits(back.storage), bits(jet.storage))
        }
    }

    // MARK: Declared shapes are checked

    func testGLMMContributionWithAWrongShapeIsRefused() throws {
        func reply(parameters: Int, order: Int, count: Int) throws -> GLMMContributionReply {
            let line = "{\"id\":1,\"type\":\"glmm_contribution\",\"session\":\"g\",\"rows\":3,\"parameters\":\(parameters),\"order\":\(order),"
                + "\"objective\":[\((0..<count).map { _ in "0.5" }.joined(separator: ","))]}"
            guard case .glmmContribution(let r) = try LineCodec.decodeReply(line).reply else { throw ProtocolError.unexpected("kind") }
            return r
        }
        // value, 2 first derivatives, 3 second derivatives: 6 numbers.
        XCTAssertEqual(try reply(parameters: 2, order: 2, count: 6).jet().hessian, [0.5, 0.5, 0.5, 0.5])
        XCTAssertThrowsError(try reply(parameters: 2, order: 2, count: 5).jet()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"objective\" has 5 values; its shape needs 6")
        }
        XCTAssertThrowsError(try reply(parameters: 2, order: 3, count: 6).jet()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"order\" is out of range")
        }
        XCTAssertThrowsError(try reply(parameters: -1, order: 0, count: 1).jet()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"parameters\" is out of range")
        }
        XCTAssertThrowsError(try reply(parameters: 1_000_000, order: 2, count: 1).jet()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"parameters\" is out of range")
        }
    }

    func testLMMContributionWithAWrongShapeIsRefused() throws {
        func reply(rows: Int, cols: Int, parameters: Int, order: Int, values: Int, logDet: Int) throws -> ContributionReply {
            func list(_ n: Int) -> String { "[" + (0..<n).map { _ in "1" }.joined(separator: ",") + "]" }
            let line = "{\"id\":1,\"type\":\"contribution\",\"session\":\"s\",\"rows\":10,\"schur\":{\"rows\":\(rows),\"cols\":\(cols),"
                + "\"parameters\":\(parameters),\"order\":\(order),\"values\":\(list(values))},\"log_det\":\(list(logDet))}"
            guard case .contribution(let r) = try LineCodec.decodeReply(line).reply else { throw ProtocolError.unexpected("kind") }
            return r
        }
        // 2×2 entries of width 1 + 1 + 1 = 3 (one parameter, order 2).
        let good = try reply(rows: 2, cols: 2, parameters: 1, order: 2, values: 12, logDet: 3).contribution()
        XCTAssertEqual([good.schur.rows, good.schur.cols, good.rows], [2, 2, 10])
        XCTAssertThrowsError(try reply(rows: 2, cols: 2, parameters: 1, order: 2, values: 11, logDet: 3).contribution()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertTrue("\($0)".contains("11 values"), "\($0)")
        }
        XCTAssertThrowsError(try reply(rows: 2, cols: 2, parameters: 1, order: 2, values: 12, logDet: 2).contribution()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"log_det\" has 2 values; one jet of the schur's shape has 3")
        }
        XCTAssertThrowsError(try reply(rows: 2, cols: 2, parameters: 1, order: 5, values: 12, logDet: 3).contribution()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"schur\" has a shape out of range")
        }
        // A shape whose size overflows is refused, not allocated.
        XCTAssertThrowsError(try reply(rows: 100_000, cols: 100_000, parameters: 1000, order: 2, values: 1, logDet: 1).contribution()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
        }
        XCTAssertThrowsError(try reply(rows: -1, cols: 2, parameters: 1, order: 2, values: 0, logDet: 3).contribution()) {
            XCTAssertEqual(($0 as? ProtocolError)?.code, "invalid_message")
            XCTAssertEqual("\($0)", "invalid message: field \"schur\" has a shape out of range")
        }
    }

    // MARK: The model specification

    /// A prepare line whose model has `expr` as its response.
    func prepare(response expr: String, family: String = "gaussian", grouping: String = "{\"kind\":\"site\"}") -> String {
        "{\"id\":1,\"type\":\"prepare\",\"session\":\"s\",\"dataset\":\"d\",\"model\":{\"formula\":\"y ~ 1\",\"family\":\"\(family)\","
            + "\"link\":\"identity\",\"response\":{\"value\":\(expr)},\"fixed\":[],"
            + "\"terms\":[{\"name\":\"g\",\"grouping\":\(grouping),\"columns\":[]}]}}"
    }

    func decodeError(_ line: String, file: StaticString = #filePath, line l: UInt = #line) -> ProtocolError? {
        do {
            let r = try LineCodec.decodeRequest(line)
            XCTFail("decoded \(r)", file: file, line: l)
            return nil
        } catch {
            guard let e = error as? ProtocolError else { XCTFail("\(type(of: error)): \(error)", file: file, line: l); return nil }
            return e
        }
    }

    func testMalformedModelSpecificationsAreRefusedNamingTheField() throws {
        // Well formed: decodes.
        guard case .prepare(let ok) = try LineCodec.decodeRequest(prepare(response: "{\"fill\":\"x\",\"with\":0.5}")).request else {
            return XCTFail("not a prepare")
        }
        XCTAssertEqual(ok.model.response, .value(.filled("x", with: 0.5)))
        let cases: [(expr: String, family: String, grouping: String, code: String, fragments: [String])] = [
            ("{\"level\":[\"sex\",\"M\",\"F\"]}", "gaussian", "{\"kind\":\"site\"}", "invalid_message",
             ["model.response.value.level", "[variable, level]"]),
            ("{\"op\":\"+\",\"args\":[{\"num\":1}]}", "gaussian", "{\"kind\":\"site\"}", "invalid_message",
             ["model.response.value.args", "two arguments"]),
            ("{\"fill\":\"x\"}", "gaussian", "{\"kind\":\"site\"}", "missing_field", ["model.response.value.with"]),
            ("{\"fn\":\"sin\",\"arg\":{\"var\":\"x\"}}", "gaussian", "{\"kind\":\"site\"}", "invalid_message", ["model.response.value.fn"]),
            ("{\"op\":\"%%\",\"args\":[{\"num\":1},{\"num\":2}]}", "gaussian", "{\"kind\":\"site\"}", "invalid_message", ["model.response.value.op"]),
            ("{}", "gaussian", "{\"kind\":\"site\"}", "invalid_message", ["num, var, level, missing, fill, fn, op"]),
            ("{\"var\":\"y\"}", "gamma", "{\"kind\":\"site\"}", "invalid_message", ["model.family"]),
            ("{\"var\":\"y\"}", "gaussian", "{\"kind\":\"nested\"}", "invalid_message", ["model.terms[0].grouping.kind"]),
            ("{\"var\":\"y\"}", "gaussian", "{\"kind\":\"crossed\",\"variables\":[\"year\"],\"levels\":[\"1\",\"1\"]}", "invalid_message",
             ["model.terms[0].grouping.levels", "distinct levels"]),
            ("{\"var\":3}", "gaussian", "{\"kind\":\"site\"}", "wrong_field_type", ["model.response.value.var", "a string"]),
        ]
        for c in cases {
            guard let e = decodeError(prepare(response: c.expr, family: c.family, grouping: c.grouping)) else { continue }
            XCTAssertEqual(e.code, ErrorCode(rawValue: c.code), "\(c.expr) \(c.family) \(c.grouping): \(e)")
            for fragment in c.fragments {
                XCTAssertTrue(e.description.contains(fragment), "\(c.expr) \(c.family) \(c.grouping): \"\(e)\" does not say \(fragment)")
            }
        }
    }

    func testModelSpecificationLayoutOfTheRandomEffects() throws {
        let one = [DesignColumn(name: "(Intercept)", expr: .number(1))]
        let two = one + [DesignColumn(name: "x", expr: .variable("x"))]
        let spec = ModelSpec(formula: "y ~ x + (1 + x | site) + (1 | site:ward) + (0 + x | site:ward)",
                             response: .value(.variable("y")),
                             fixed: two + [DesignColumn(name: "m", expr: .isMissing("bmi")), DesignColumn(name: "b", expr: .filled("bmi", with: 25))],
                             terms: [RandomTerm(name: "site", grouping: .site, columns: two),
                                     RandomTerm(name: "site:ward", grouping: .withinSite(["ward"]), columns: one),
                                     RandomTerm(name: "site:ward", grouping: .withinSite(["ward"]), columns: [two[1]])],
                             offset: .unary(.log, .variable("exposure")))
        XCTAssertEqual(spec.thetaCount, 3 + 1 + 1)
        XCTAssertEqual(spec.fixedCount, 4)
        XCTAssertEqual(spec.factorGroupings, [.site, .withinSite(["ward"])])
        XCTAssertEqual(spec.siteFactorIndex, 0)
        XCTAssertFalse(spec.allTermsGroupedBySite)
        let structure = spec.covarianceStructure
        XCTAssertEqual(structure.factorCount, 2)
        XCTAssertEqual([structure.factorDimension(0), structure.factorDimension(1)], [2, 2])
        XCTAssertEqual(structure.initialTheta.count, 5)
        // bmi is read only through its missingness: a row missing it is still complete.
        XCTAssertEqual(spec.requiredVariables, ["y", "x", "ward", "exposure"])

        let siteOnly = ModelSpec(formula: "y ~ 1 + (1 | site)", response: .value(.variable("y")), fixed: one,
                                 terms: [RandomTerm(name: "site", grouping: .site, columns: one)])
        XCTAssertTrue(siteOnly.allTermsGroupedBySite)
        let noSite = ModelSpec(formula: "y ~ 1 + (1 | g)", response: .value(.variable("y")), fixed: one,
                               terms: [RandomTerm(name: "g", grouping: .withinSite(["g"]), columns: one)])
        XCTAssertNil(noSite.siteFactorIndex)
        XCTAssertFalse(noSite.allTermsGroupedBySite)
    }

    /// A flat model's messages: the cluster travels in the model, the
    /// finalize answer's scores are checked as they are decoded.
    func testFlatModelMessagesValidate() throws {
        var spec = ModelSpec(formula: "y ~ x", response: .value(.variable("y")),
                             fixed: [DesignColumn(name: "(Intercept)", expr: .number(1))], terms: [])
        spec.cluster = .withinSite(["ward"])
        let line = try LineCodec.encode(.prepare(PrepareRequest(session: "s", dataset: "d", model: spec)), id: 1)
        guard case .prepare(let back) = try LineCodec.decodeRequest(line).request else { return XCTFail(line) }
        XCTAssertEqual(back.model, spec)
        XCTAssertEqual(spec.requiredVariables, ["y", "ward"])
        let reply = FinalizeReply(session: "s", effects: nil, conditionalCovariance: nil)
        var ok = reply; ok.scoreCrossProducts = [1, 2, 2, 5]; ok.clusters = 3
        let encoded = try LineCodec.encode(.finalized(ok), id: 2)
        XCTAssertEqual(try LineCodec.decodeReply(encoded).reply, .finalized(ok))
        for bad in [#""score_cross_products":[1,2,3]"#, #""score_cross_products":[1,2,2,5]"#, #""score_cross_products":[1],"clusters":0"#] {
            XCTAssertThrowsError(try LineCodec.decodeReply("{\"id\":1,\"type\":\"finalized\",\"session\":\"s\",\(bad)}"), bad)
        }
        XCTAssertThrowsError(try LineCodec.decodeReply(#"{"id":1,"type":"glm_step","session":"s","rows":3,"deviance":1,"information":[1,2,3,4],"working":[1,2]}"#))
    }
}

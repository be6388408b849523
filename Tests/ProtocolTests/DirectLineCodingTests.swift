// The direct writer and reader of a fit's round messages (DirectLineCoding.swift)
// against the Codable path they stand in for: the same bytes written, the same
// values read, and every other shape of line left to the Codable path (so its
// values and errors are the ones a peer gets, as before).

import Foundation
import XCTest
@testable import Protocol
import Math

final class DirectLineCodingTests: XCTestCase {
    private var rng = LineCodecTests.SplitMix64(state: 20261130)

    private func foundation<B: Encodable>(_ id: Int, _ type: String, _ body: B) throws -> String {
        String(decoding: try LineCodec.makeEncoder().encode(JSONLineCodecTests.Envelope(id: id, type: type, body: body)), as: UTF8.self)
    }
    private func codable<B: Encodable>(_ id: Int, _ type: String, _ body: B) throws -> String {
        try JSONLineWriter.encode(JSONLineCodecTests.Envelope(id: id, type: type, body: body))
    }

    private func doubles(_ n: Int) -> [Double] {
        (0..<n).map { k in
            switch k % 4 {
            case 0: // any finite magnitude from 1e-154 to 1e154, either sign
                let sign: UInt64 = Bool.random(using: &rng) ? 1 << 63 : 0
                return Double(bitPattern: sign | UInt64.random(in: 0x2000_0000_0000_0000...0x5FFF_FFFF_FFFF_FFFF, using: &rng))
            case 1: return Double.random(in: -1e3...1e3, using: &rng)
            case 2: return [0, -0.0, 1, 1e22, 5e-324, 0.1, 9007199254740993][Int.random(in: 0..<7, using: &rng)]
            default: return Double(Int.random(in: -1000...1000, using: &rng))
            }
        }
    }

    private let sessions = ["s-1", "0123456789abcdef0123456789abcdef", "with \"quote\" \\ / and \u{1}", "é🧪"]

    private func evaluateRequests() -> [EvaluateRequest] {
        var out: [EvaluateRequest] = []
        for k in 0..<64 {
            let theta = doubles(1 + k % 4)
            var r = EvaluateRequest(session: sessions[k % sessions.count], theta: theta, order: k % 3,
                                    beta: k & 1 == 0 ? nil : doubles(1 + k % 5), nAGQ: k & 2 == 0 ? nil : [1, 12, 25][k % 3],
                                    thetas: k & 4 == 0 ? nil : (0..<(1 + k % 3)).map { _ in doubles(theta.count) },
                                    lowRank: k & 8 == 0 ? nil : k % 3 == 0)
            if k & 16 != 0 { r.derivatives = ["beta", "all"][k % 2] }
            if k & 32 != 0 { r.crossedForm = ["level", "dense"][k % 2] }
            out.append(r)
        }
        return out
    }

    private func glmmReplies() -> [GLMMContributionReply] {
        (0..<24).map { k in
            let space = JetSpace(parameters: k % 6, order: k % 3)
            var jet = ScalarJet(space: space)
            jet.storage = doubles(jet.storage.count)
            return GLMMContributionReply(session: sessions[k % sessions.count], rows: k * 1_000_003 % 5_000_000, objective: jet)
        }
    }

    private func contributionReplies() -> [ContributionReply] {
        (0..<16).map { k in
            let space = JetSpace(parameters: 1 + k % 3, order: k % 3)
            func contribution() -> LMMContribution {
                var m = JetMatrix(rows: k % 4, cols: k % 4, space: space)
                m.storage = doubles(m.storage.count)
                var l = ScalarJet(space: space)
                l.storage = doubles(l.storage.count)
                return LMMContribution(schur: m, logDet: l, rows: 40 + k)
            }
            return ContributionReply(session: sessions[k % sessions.count], contributions: (0...(k % 3)).map { _ in contribution() })
        }
    }

    func testTheDirectWriterWritesTheCodablePathsBytes() throws {
        for (k, r) in evaluateRequests().enumerated() {
            let line = try XCTUnwrap(DirectLineWriter.evaluate(r, id: k))
            XCTAssertEqual(line, try codable(k, "evaluate", r))
            XCTAssertEqual(line, try foundation(k, "evaluate", r))
            XCTAssertEqual(try LineCodec.encode(.evaluate(r), id: k), line)
        }
        for (k, r) in glmmReplies().enumerated() {
            let line = try XCTUnwrap(DirectLineWriter.glmmContribution(r, id: -k))
            XCTAssertEqual(line, try codable(-k, "glmm_contribution", r))
            XCTAssertEqual(line, try foundation(-k, "glmm_contribution", r))
        }
        for (k, r) in contributionReplies().enumerated() {
            let line = try XCTUnwrap(DirectLineWriter.contribution(r, id: k * 1_000_000_007))
            XCTAssertEqual(line, try codable(k * 1_000_000_007, "contribution", r))
            XCTAssertEqual(line, try foundation(k * 1_000_000_007, "contribution", r))
        }
    }

    func testWhatTheDirectWriterDoesNotKnowGoesThroughTheCodablePath() throws {
        var r = EvaluateRequest(session: "s", theta: [1], order: 2, beta: [0.5])
        r.gee = GEEPoint(alpha: 0.1, scale: 1)
        XCTAssertNil(DirectLineWriter.evaluate(r, id: 1), "GEE's point is the Codable path's")
        XCTAssertEqual(try LineCodec.encode(.evaluate(r), id: 1), try foundation(1, "evaluate", r))
        r.gee = nil
        r.crossed = []
        XCTAssertNil(DirectLineWriter.evaluate(r, id: 1), "crossed points are the Codable path's")
        XCTAssertEqual(try LineCodec.encode(.evaluate(r), id: 1), try foundation(1, "evaluate", r))
        // A non-finite number is refused with the Codable path's error, naming the field.
        for bad in [Double.nan, .infinity, -.infinity] {
            let request = EvaluateRequest(session: "s", theta: [1, bad], order: 0)
            XCTAssertNil(DirectLineWriter.evaluate(request, id: 1))
            XCTAssertThrowsError(try LineCodec.encode(.evaluate(request), id: 1)) { e in
                XCTAssertTrue("\(e)".contains("theta"), "\(e)")
            }
            let reply = GLMMContributionReply(session: "s", rows: 10, parameters: 1, order: 0, objective: [bad])
            XCTAssertNil(DirectLineWriter.glmmContribution(reply, id: 1))
            XCTAssertThrowsError(try LineCodec.encode(.glmmContribution(reply), id: 1))
        }
    }

    func testTheDirectReaderReadsTheCodablePathsValuesBitForBit() throws {
        for (k, r) in evaluateRequests().enumerated() {
            let line = try foundation(k, "evaluate", r)
            let direct = try XCTUnwrap(DirectLineReader.evaluate(JSONLineDocument(line)), line)
            XCTAssertEqual(direct, r)
            XCTAssertEqual(direct.theta.map(\.bitPattern), r.theta.map(\.bitPattern))
            XCTAssertEqual(direct.beta?.map(\.bitPattern), r.beta?.map(\.bitPattern))
            let (id, request) = try LineCodec.decodeRequest(line)
            XCTAssertEqual(id, k)
            XCTAssertEqual(request, .evaluate(r))
        }
        for (k, r) in glmmReplies().enumerated() {
            let line = try foundation(k, "glmm_contribution", r)
            let direct = try XCTUnwrap(DirectLineReader.glmmContribution(JSONLineDocument(line)), line)
            XCTAssertEqual(direct, r)
            XCTAssertEqual(direct.objective.map(\.bitPattern), r.objective.map(\.bitPattern))
        }
        for (k, r) in contributionReplies().enumerated() {
            let line = try foundation(k, "contribution", r)
            let direct = try XCTUnwrap(DirectLineReader.contribution(JSONLineDocument(line)), line)
            XCTAssertEqual(direct, r)
            XCTAssertEqual(direct.schur.values.map(\.bitPattern), r.schur.values.map(\.bitPattern))
            XCTAssertEqual(try LineCodec.decodeReply(line).reply, .contribution(r))
        }
    }

    /// Every field of each message replaced by values of other kinds, dropped,
    /// duplicated or joined by an unknown field: wherever the direct reader
    /// answers, the Codable path reads the same value; wherever the Codable
    /// path refuses, the direct reader does not answer (so the peer gets the
    /// Codable path's error); and LineCodec answers as the Codable path does.
    func testEveryOtherShapeIsLeftToTheCodablePath() throws {
        let request = evaluateRequests()[63]
        let glmm = glmmReplies()[11]
        let contribution = contributionReplies()[14]
        var checked = 0, directAnswered = 0
        func check<T: Decodable & Equatable>(_ line: String, _ type: T.Type, _ direct: (JSONLineDocument) -> T?,
                                             _ viaLineCodec: (String) throws -> T) throws {
            guard let document = try? JSONLineDocument(line) else { return }
            checked += 1
            let reference = Result { try JSONLineReader.decode(T.self, from: document) }
            let fast = direct(document)
            if let fast {
                directAnswered += 1
                XCTAssertEqual(try reference.get(), fast, line)
            }
            switch (reference, Result { try viaLineCodec(line) }) {
            case (.success(let a), .success(let b)): XCTAssertEqual(a, b, line)
            case (.failure(let a), .failure(let b)):
                XCTAssertEqual("\((a as? DecodingError).map(LineCodec.protocolError) ?? a)", "\(b)", line)
            case (let a, let b): XCTFail("\(line)\nCodable: \(a)\nLineCodec: \(b)")
            }
        }
        let replacements: [Any] = ["text", NSNull(), 1.5, 2.0, -1, 0, 3_000_000_000_000, [1, 2], ["a"], [[1.0]], ["x": 1], true, []]
        func variants(_ line: String) throws -> [String] {
            let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            var out: [String] = []
            func text(_ o: Any) throws -> String {
                String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
            }
            // Not id and type: they are the header's (the last test).
            for key in object.keys.sorted().filter({ $0 != "id" && $0 != "type" }) + ["gee", "crossed", "points", "thetas", "nagq", "unknown"] {
                for value in replacements {
                    var o = object
                    o[key] = value
                    out.append(try text(o))
                }
                var o = object
                o[key] = nil
                out.append(try text(o))
                // A duplicate key: the first one counts, for both readers.
                if let v = object[key] {
                    let body = try text(object).dropFirst()
                    out.append("{\"\(key)\":\"first\"," + body)
                    out.append("{\"\(key)\":\(try text(v))," + body)
                }
                // Inside the Schur matrix.
                if key == "schur", let schur = object[key] as? [String: Any] {
                    for inner in schur.keys.sorted() {
                        for value in replacements {
                            var s = schur
                            s[inner] = value
                            var o = object
                            o[key] = s
                            out.append(try text(o))
                        }
                    }
                }
            }
            return out
        }
        for line in try variants(try foundation(3, "evaluate", request)) {
            try check(line, EvaluateRequest.self, DirectLineReader.evaluate) { line in
                guard case .evaluate(let r) = try LineCodec.decodeRequest(line).request else { throw ProtocolError.unexpected("not evaluate") }
                return r
            }
        }
        for line in try variants(try foundation(3, "glmm_contribution", glmm)) {
            try check(line, GLMMContributionReply.self, DirectLineReader.glmmContribution) { line in
                guard case .glmmContribution(let r) = try LineCodec.decodeReply(line).reply else { throw ProtocolError.unexpected("not glmm") }
                return r
            }
        }
        for line in try variants(try foundation(3, "contribution", contribution)) {
            try check(line, ContributionReply.self, DirectLineReader.contribution) { line in
                guard case .contribution(let r) = try LineCodec.decodeReply(line).reply else { throw ProtocolError.unexpected("not contribution") }
                return r
            }
        }
        XCTAssertGreaterThan(checked, 500)
        XCTAssertGreaterThan(directAnswered, 50, "the direct reader answers the lines it knows")
        XCTAssertLessThan(directAnswered, checked / 2, "and leaves the rest")
    }

    /// A line's id and type, read directly, are what the Codable header reads.
    func testTheHeaderIsReadAsTheCodablePathReadsIt() throws {
        struct Header: Decodable, Equatable { var id: Int?; var type: String }
        let lines = [#"{"id":7,"type":"ping"}"#, #"{"type":"ping"}"#, #"{"id":null,"type":"ping"}"#, #"{"id":7.0,"type":"ping"}"#,
                     #"{"id":1e2,"type":"ping"}"#, #"{"id":7.5,"type":"ping"}"#, #"{"id":"7","type":"ping"}"#, #"{"id":7}"#,
                     #"{"id":7,"type":3}"#, #"{"id":7,"type":null}"#, #"{"id":99999999999999999999,"type":"x"}"#,
                     #"{"id":-3,"type":"a","type":"b"}"#, #"{"id":1,"id":"x","type":"a"}"#, #"[1]"#, #"{"id":-0,"type":"é"}"#]
        for line in lines {
            let document = try JSONLineDocument(line)
            let reference = try? JSONLineReader.decode(Header.self, from: document)
            if let direct = DirectLineReader.header(document) {
                XCTAssertEqual(reference, Header(id: direct.id, type: direct.type), line)
            } else {
                XCTAssertNil(reference, "\(line): the Codable path reads it, so the direct reader should too")
            }
            XCTAssertEqual(LineCodec.peekID(line), reference?.id, line)
        }
    }
}

// JSONLineWriter/JSONLineReader against Foundation's JSONEncoder/JSONDecoder,
// which they replace on the wire: the same bytes written, the same values
// read (doubles bit for bit), the same errors. The whole suite can also run
// with FEDMIX_CODEC_CHECK=1, which makes LineCodec compare both on every
// line any test sends or reads (run it so after any change to these files).

import Foundation
import XCTest
@testable import Protocol
import Math

final class JSONLineCodecTests: XCTestCase {
    private func foundation<T: Encodable>(_ v: T) throws -> String {
        String(decoding: try LineCodec.makeEncoder().encode(v), as: UTF8.self)
    }

    private struct Sample: Codable, Equatable {
        var values: [Double]
        var count: Int
        var name: String
        var flag: Bool
        var optional: Double?
        var nested: [String: [Int]]
        var matrix: [[Double]]
        var small: Float
        var big: UInt64
        var missing: String?
    }

    /// Doubles that stress the shortest form: integral, huge, tiny, denormal, −0.
    private let awkward: [Double] = [0, -0.0, 1, -1, 100, 1e15, 1e16, 1e22, 1e300, 1.7976931348623157e308, Double.leastNonzeroMagnitude,
                                     2.2250738585072014e-308, 1e-5, 1e-7, 0.1, 1.0 / 3, 123456789.123456789, -2.5e-7,
                                     Double.pi * 1e-300, 9007199254740992]

    func testWritesFoundationsBytes() throws {
        var rng = SystemRandomNumberGenerator()
        var doubles = awkward
        for _ in 0..<5_000 {
            let d = Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &rng))
            if d.isFinite { doubles.append(d) }
            doubles.append(Double.random(in: -1e6...1e6, using: &rng))
        }
        let controls = String((0..<0x20).map { Character(UnicodeScalar(UInt8($0))) })
        let names = ["plain", "with \"quotes\" and \\ and /", controls, "é日本\u{2028}\u{7f}", "", "emoji 🧪"]
        for (i, name) in names.enumerated() {
            let s = Sample(values: doubles, count: -i * 123_456_789, name: name, flag: i % 2 == 0, optional: i % 2 == 0 ? nil : 0.5,
                           nested: ["b": [1, 2], "a_b": [], "aB": [3], "a10": [4], "a2": [5], "Z": [6], "é": [7], name: [8]],
                           matrix: [[1.5, 2], [], [-0.0]], small: 0.1, big: UInt64.max, missing: nil)
            let line = try JSONLineWriter.encode(s)
            XCTAssertEqual(line, try foundation(s))
            let back = try JSONLineReader.decode(Sample.self, from: JSONLineDocument(line))
            XCTAssertEqual(back.values.map(\.bitPattern), s.values.map(\.bitPattern), "doubles read back bit for bit")
            XCTAssertEqual(back, s)
        }
    }

    func testAProtocolLineReadsBackBitForBit() throws {
        // A contribution answer with random jets, through LineCodec both ways.
        let space = JetSpace(parameters: 3, order: 2)
        var schur = JetMatrix(rows: 4, cols: 4, space: space)
        schur.storage = schur.storage.map { _ in Double.random(in: -1e3...1e3) * Double.random(in: 0...1) }
        var logDet = ScalarJet(space: space, value: 12.25)
        logDet.storage = logDet.storage.map { _ in Double.random(in: -1...1) }
        let reply = ContributionReply(session: "s-1", contribution: LMMContribution(schur: schur, logDet: logDet, rows: 40))
        let line = try LineCodec.encode(.contribution(reply), id: 7)
        XCTAssertEqual(line, try foundation(Envelope(id: 7, type: "contribution", body: reply)))
        let (id, decoded) = try LineCodec.decodeReply(line)
        XCTAssertEqual(id, 7)
        guard case .contribution(let back) = decoded else { return XCTFail("\(decoded)") }
        XCTAssertEqual(back.schur.values.map(\.bitPattern), schur.storage.map(\.bitPattern))
        XCTAssertEqual(back, reply)
    }

    /// LineCodec's envelope, spelled out for Foundation (the other codec tests use it too).
    struct Envelope<B: Encodable>: Encodable {
        var id: Int, type: String, body: B
        enum K: String, CodingKey { case id, type }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: K.self)
            try c.encode(id, forKey: .id); try c.encode(type, forKey: .type)
            try body.encode(to: encoder)
        }
    }

    /// Valid JSON: the same value or the same protocol error as Foundation.
    /// Invalid JSON (RFC 8259): always "not valid JSON", where Foundation
    /// accepts trailing commas and checks a malformed number or string only
    /// when a field reads it (so it may name the field's type instead).
    func testRefusesWhatFoundationRefusesWithTheSameError() throws {
        struct I: Decodable { var a: Int }
        struct D: Decodable { var a: Double }
        struct S: Decodable { var a: String }
        struct O: Decodable { var a: Int?; var b: [Double]? }
        let valid = [
            #"{"a":3.0}"#, #"{"a":1e2}"#, #"{"a":3.5}"#, #"{"a":99999999999999999999}"#, #"{"a":1,"a":2}"#, #"{"a":-0}"#,
            #"{"a":null}"#, #"{"a":"3"}"#, #"{"a":true}"#, #"{"a":1e400}"#, #"{"a":1E5}"#, #"{"a":[1]}"#, #"{"a":{}}"#, #"{}"#,
            #"{"a":5e-324}"#, #"{"a":"\u00e9\n\/"}"#, #"{"b":[1,null]}"#, #"{"b":[1,"x"]}"#, #"{"a":"\ud83e\uddea"}"#,
            " {\"a\":1} \n", #"{"a":-1e-300}"#, #"{"a":1,"b":[]}"#, #"{"a":"x","b":[0.5,-2e-7]}"#,
        ]
        let invalid = [
            #"{"a":3} x"#, #"{"a":03}"#, #"{"a":+3}"#, #"{"a":1.}"#, #"{"a":.5}"#, #"{"a":"\ud800"}"#, "{\"a\":\"tab\there\"}",
            #"{"a":"\x"}"#, #"{"a":"\"#, #"{"a":1"#, #"{"a":1,}"#, #"{"a" 1}"#, #"{"a":tru}"#, #"{"a":nul}"#, #"{"a":[1,2,]}"#,
            "{\"a\":1}\u{0}", #"{"a":-}"#, #"{"a":1e}"#, #"{"a":1e+}"#, #"{"a":-01}"#, #"{"a":"\u12"}"#,
        ]
        func outcome(_ body: () throws -> Void) -> String {
            do { try body(); return "ok" }
            catch let e as DecodingError { return "\(LineCodec.protocolError(e))" } catch { return "\(error)" }
        }
        func check<T: Decodable>(_ t: T.Type, _ line: String, valid: Bool) {
            let ours = outcome { _ = try JSONLineReader.decode(T.self, from: JSONLineDocument(line)) }
            if valid {
                let reference = outcome { _ = try JSONDecoder().decode(T.self, from: Data(line.utf8)) }
                XCTAssertEqual(ours, reference, "\(T.self) from \(line)")
            } else {
                XCTAssertEqual(ours, "\(ProtocolError.invalidJSON("the line is not a complete JSON object"))", "\(T.self) from \(line)")
            }
        }
        for line in valid {
            check(I.self, line, valid: true); check(D.self, line, valid: true); check(S.self, line, valid: true); check(O.self, line, valid: true)
        }
        for line in invalid {
            check(I.self, line, valid: false); check(D.self, line, valid: false); check(S.self, line, valid: false); check(O.self, line, valid: false)
        }
    }

    /// The writer spells a double itself (JSONLineWriter.writeDouble), not
    /// through `description`: the same bytes on every bit pattern tried.
    func testWriterSpellsEveryDoubleAsDescriptionDoes() {
        var rng = SystemRandomNumberGenerator()
        var doubles = awkward + awkward.map { -$0 } + [Double.greatestFiniteMagnitude, -Double.leastNormalMagnitude, 0.5, 1e21, 1e-4, 123e16]
        for _ in 0..<200_000 {
            let d = Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &rng))
            if d.isFinite { doubles.append(d) }
        }
        for e in -30...30 { doubles.append(Double(sign: .plus, exponent: e, significand: 1)); doubles.append(Double("1e\(e)")!) }
        for d in doubles {
            var out: [UInt8] = []
            JSONLineWriter.writeDouble(d, into: &out)
            var reference = d.description
            if reference.hasSuffix(".0") { reference.removeLast(2) }
            XCTAssertEqual(String(decoding: out, as: UTF8.self), reference, "bits \(d.bitPattern)")
        }
    }

    /// The reader converts a number without strtod when that is exact
    /// (JSONLineDocument.exactDouble): where it answers, strtod's Double bit
    /// for bit; where it does not, strtod is asked. Both kinds occur.
    func testNumbersReadWithoutStrtodAreStrtodsDoubles() {
        var rng = SystemRandomNumberGenerator()
        var texts = ["0", "-0", "0.0", "-0.000", "0e400", "-0E-400", "1", "-1", "1e22", "1e23", "1e-22", "1e-23", "9007199254740992",
                     "9007199254740993", "9007199254740991e-22", "9007199254740993e-5", "4.35e-2", "123.456e-5", "0.1", "0.3",
                     "1.7976931348623157e308", "5e-324", "2.2250738585072014e-308", "1e0005", "1E+5", "12345678901234567890",
                     "0.00000000000000000000000001", "100000000000000000000000", "3.0", "25e-1", "-7.5e+21"]
        for _ in 0..<50_000 {
            let d = Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &rng))
            if d.isFinite { texts.append("\(d)") }
            let r = Double.random(in: -1e4...1e4, using: &rng) * [1, 1e-3, 1e-9, 1e12][Int.random(in: 0..<4, using: &rng)]
            texts.append("\(r)")
            texts.append(String(format: "%.\(Int.random(in: 0...17, using: &rng))g", r))
            texts.append("\(Int.random(in: -99_999...99_999, using: &rng))e\(Int.random(in: -25...25, using: &rng))")
        }
        let (fast, slow) = readAgainstStrtod(texts)
        XCTAssertGreaterThan(fast, 50_000)
        XCTAssertGreaterThan(slow, 10_000)
    }

    /// Reads each text as the reader does without strtod and, where that
    /// answers, asserts strtod's Double bit for bit: (answered, left to strtod).
    private func readAgainstStrtod(_ texts: [String]) -> (fast: Int, refused: Int) {
        var fast = 0, refused = 0
        for t in texts {
            let bytes = Array(t.utf8) + [0]
            let ours = bytes.withUnsafeBufferPointer { JSONLineDocument.exactDouble($0, 0, bytes.count - 1) }
            guard let ours else { refused += 1; continue }
            fast += 1
            XCTAssertEqual(ours.bitPattern, t.withCString { strtod($0, nil) }.bitPattern, t)
        }
        return (fast, refused)
    }

    /// The 64-bit path (JSONLineDocument.extendedDouble) where rounding
    /// twice could bite: decimals of 17 to 19 digits at and within a few
    /// units of the midpoint between two Doubles, and a Double's shortest
    /// form, against strtod bit for bit; it must answer most shortest forms
    /// and leave the midpoints themselves to strtod.
    func testNumbersNearMidpointsAreStrtodsDoubles() {
        #if arch(x86_64) && !os(Windows)
        XCTAssertTrue(JSONLineDocument.float80RoundsToNearest64)
        var rng = LineCodecTests.SplitMix64(state: 19)
        var texts: [String] = []
        var shortest = 0, shortestFast = 0
        for _ in 0..<20_000 {
            let d = Double.random(in: 1...10, using: &rng) * pow(10, Double(Int.random(in: -12...12, using: &rng)))
            let midpoint = (Float80(d) + Float80(d.nextUp)) / 2   // exact: 54 bits
            for digits in [16, 17, 18] {
                let t = String(format: "%.\(digits)Le", midpoint)
                texts.append(t)
                // The same digits, nudged by one in the last place either way.
                let parts = t.split(separator: "e")
                if let mantissa = Decimal(string: String(parts[0])) {
                    let step = pow(Decimal(10), -digits)
                    texts.append("\(mantissa + step)e\(parts[1])")
                    texts.append("\(mantissa - step)e\(parts[1])")
                }
            }
            let bytes = Array("\(d)".utf8) + [0]
            shortest += 1
            if bytes.withUnsafeBufferPointer({ JSONLineDocument.exactDouble($0, 0, bytes.count - 1) }) != nil { shortestFast += 1 }
            texts.append("\(d)")
        }
        let (fast, refused) = readAgainstStrtod(texts)
        XCTAssertGreaterThan(fast, texts.count / 2)
        XCTAssertGreaterThan(refused, 1_000, "exact midpoints (18 digits and more) go to strtod")
        // All but those below about 1e-11, whose 17 digits need 10^-28 or less.
        XCTAssertGreaterThan(Double(shortestFast), 0.95 * Double(shortest), "a Double's shortest form is read without strtod")
        #endif
    }

    func testDeepNestingIsRefusedNotACrash() {
        let line = "{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        XCTAssertThrowsError(try LineCodec.decodeRequest(line)) { error in
            guard case ProtocolError.invalidJSON = error else { return XCTFail("\(error)") }
        }
    }
}

/// What a peer may send: protocol lines mutated byte by byte (replaced,
/// inserted, deleted, truncated) never crash the reader; each is read or
/// refused with a protocol error, and what Foundation reads, this reads to the
/// same value (a refusal only where the mutation made the JSON invalid).
/// Under FEDMIX_CODEC_CHECK=1 every mutated line is also compared with
/// Foundation's reading of it (LineCodec.decode), a differential fuzz.
final class JSONLineFuzzTests: XCTestCase {
    func testMutatedLinesAreReadOrRefusedNeverACrash() throws {
        let space = JetSpace(parameters: 2, order: 2)
        var schur = JetMatrix(rows: 3, cols: 3, space: space)
        schur.storage = schur.storage.indices.map { Double($0) * 0.37 - 2.5e-3 }
        let reply = ContributionReply(session: "s-1", contribution: LMMContribution(schur: schur, logDet: ScalarJet(space: space, value: 3.5), rows: 12))
        // Numbers at the edges of the reader's exact conversion (2^53, 10^±22, −0, out of range).
        let edges = #"{"id":4,"type":"glmm_contribution","session":"s","rows":9,"parameters":1,"order":2,"#
            + #""objective":[9007199254740993,1e22,-0,1e-22,4.5e-23,1e400]}"#
        let seeds = [try LineCodec.encode(.contribution(reply), id: 3), edges,
                     #"{"id":1,"type":"evaluate","session":"abc","theta":[0.5,1e-3],"order":2,"beta":[1,-2.5]}"#,
                     #"{"id":2,"type":"error","code":"wrong_field_type","fatal":false,"message":"a \"quoted\" \\ message é"}"#]
        var state: UInt64 = 0x1234_5678
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let alphabet = Array(#"{}[]",:0123456789.eE+-\"tfnul aé"#.utf8) + [0, 0x1F, 0x7F]
        var read = 0, refused = 0
        for trial in 0..<6_000 {
            var bytes = Array(seeds[trial % seeds.count].utf8)
            for _ in 0..<(1 + Int(next() % 4)) {
                let at = Int(next() % UInt64(bytes.count + 1))
                let b = alphabet[Int(next() % UInt64(alphabet.count))]
                switch next() % 4 {
                case 0 where at < bytes.count: bytes[at] = b
                case 1: bytes.insert(b, at: at)
                case 2 where at < bytes.count: bytes.remove(at: at)
                default: bytes = Array(bytes.prefix(at))
                }
            }
            let line = String(decoding: bytes, as: UTF8.self)
            let ours: Result<(id: Int, reply: Reply), Error> = Result { try LineCodec.decodeReply(line) }
            switch ours {
            case .success(let r):
                read += 1
                // Foundation reads the same line to the same answer.
                if line.utf8.first(where: { $0 != 0x20 && $0 != 0x09 }) == UInt8(ascii: "{"),
                   let h = try? JSONDecoder().decode(FuzzHeader.self, from: Data(line.utf8)) {
                    XCTAssertEqual(h.id, r.id, line)
                }
            case .failure(let e):
                refused += 1
                XCTAssertTrue(e is ProtocolError, "\(type(of: e)): \(e) for \(line)")
            }
            _ = try? LineCodec.decodeRequest(line)
        }
        XCTAssertGreaterThan(read, 100, "some mutations leave a readable line")
        XCTAssertGreaterThan(refused, 1_000, "most mutations are refused")
    }

    private struct FuzzHeader: Decodable { var id: Int? }
}

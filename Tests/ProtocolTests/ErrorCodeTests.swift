import XCTest
import Foundation
@testable import Protocol

/// Error codes are one enum on both sides; the wire keeps the strings, and a
/// code this build does not know survives a round trip unchanged.
final class ErrorCodeTests: XCTestCase {
    func decodeError(_ line: String) throws -> ErrorReply {
        guard case .error(let e) = try LineCodec.decodeReply(line).reply else { throw ProtocolError.unexpected("not an error") }
        return e
    }

    func testEveryKnownCodeRoundTripsAsItsWireString() throws {
        XCTAssertEqual(Set(ErrorCode.known.map(\.rawValue)).count, ErrorCode.known.count, "two codes share a string")
        for code in ErrorCode.known {
            let line = try LineCodec.encode(.error(ErrorReply(code: code, fatal: true, message: "m")), id: 2)
            XCTAssertTrue(line.contains("\"code\":\"\(code.rawValue)\""), line)
            let back = try decodeError(line)
            XCTAssertEqual(back.code, code)
            guard case .other = back.code else { continue }
            XCTFail("\(code) decoded as an unknown code")
        }
    }

    func testWireStringsAreTheOnesPeersAlreadySend() {
        let expected: [(ErrorCode, String)] = [
            (.invalidJSON, "invalid_json"), (.unexpectedMessage, "unexpected_message"), (.invalidUTF8, "invalid_utf8"),
            (.glmmFailed, "glmm_failed"), (.unknownSession, "unknown_session"), (.connectionLost, "connection_lost"),
            (.tooManyConnections, "too_many_connections"), (.internal, "internal"), (.datasetError, "dataset_error"),
            (.disclosureRefused, "disclosure_refused"), (.inconsistentAnswer, "inconsistent_answer"),
        ]
        for (code, raw) in expected {
            XCTAssertEqual(code.rawValue, raw)
            XCTAssertEqual(ErrorCode(rawValue: raw), code)
        }
    }

    func testUnknownCodeFromANewerPeerSurvives() throws {
        let line = "{\"id\":4,\"type\":\"error\",\"code\":\"quota_exceeded_2031\",\"fatal\":false,\"message\":\"later\"}"
        let e = try decodeError(line)
        XCTAssertEqual(e.code, .other("quota_exceeded_2031"))
        XCTAssertEqual(e.code.rawValue, "quota_exceeded_2031")
        XCTAssertEqual(e.description, "later [quota_exceeded_2031]")
        let again = try LineCodec.encode(.error(e), id: 4)
        XCTAssertEqual(try decodeError(again), e)
        XCTAssertTrue(again.contains("\"code\":\"quota_exceeded_2031\""), again)
    }

    func testEqualityGoesByTheWireString() {
        XCTAssertEqual(ErrorCode.other("timeout"), .timeout)
        XCTAssertEqual(Set<ErrorCode>([.other("timeout"), .timeout]).count, 1)
        XCTAssertEqual("line_too_long" as ErrorCode, .lineTooLong)
        XCTAssertNotEqual(ErrorCode.other("Timeout"), .timeout)
    }

    func testProtocolErrorsCarryTheirCode() {
        XCTAssertEqual(ProtocolError.invalidJSON("x").code, .invalidJSON)
        XCTAssertEqual(ProtocolError.unknownReplyType("x").code, .unknownType)
        XCTAssertEqual(ProtocolError.unexpected("x").code, .unexpectedMessage)
    }
}

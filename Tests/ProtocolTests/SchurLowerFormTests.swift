// A Schur complement sent as its lower triangle (WireJetMatrix.form "lower"):
// read back as the full matrix with the upper triangle mirrored, written and
// read the same by the direct and Codable paths, and refused when its form,
// shape or count does not fit.

import Foundation
import XCTest
@testable import Protocol
import Math

final class SchurLowerFormTests: XCTestCase {
    private func matrix(_ n: Int, _ space: JetSpace, seed: UInt64) -> JetMatrix {
        var rng = LineCodecTests.SplitMix64(state: seed)
        var m = JetMatrix(rows: n, cols: n, space: space)
        m.storage = m.storage.map { _ in Double.random(in: -100...100, using: &rng) }
        return m
    }

    func testTheLowerTriangleReadsBackMirrored() throws {
        for (n, space) in [(1, JetSpace(parameters: 1, order: 2)), (3, JetSpace(parameters: 6, order: 2)), (4, JetSpace(parameters: 2, order: 0))] {
            let m = matrix(n, space, seed: UInt64(n))
            let wire = WireJetMatrix(m, lower: true)
            XCTAssertEqual(wire.form, "lower")
            XCTAssertEqual(wire.values.count, n * (n + 1) / 2 * space.width, "only the lower triangle travels")
            let back = try wire.jetMatrix()
            for i in 0..<n { for j in 0..<n {
                let from = i >= j ? m.offset(i, j) : m.offset(j, i)
                XCTAssertEqual(Array(back.storage[back.offset(i, j)..<(back.offset(i, j) + space.width)]).map(\.bitPattern),
                               Array(m.storage[from..<(from + space.width)]).map(\.bitPattern), "(\(i), \(j))")
            } }
            XCTAssertNil(WireJetMatrix(m, lower: false).form)
        }
        // A matrix that is not square goes in full.
        XCTAssertNil(WireJetMatrix(JetMatrix(rows: 2, cols: 3, space: JetSpace(parameters: 1, order: 1)), lower: true).form)
    }

    func testBothPathsWriteAndReadTheSameLine() throws {
        let space = JetSpace(parameters: 6, order: 2)
        var l = ScalarJet(space: space, value: 3)
        l.storage = l.storage.indices.map { Double($0) / 7 }
        let contributions = (0..<3).map { k in LMMContribution(schur: matrix(3, space, seed: 10 + UInt64(k)), logDet: l, rows: 120) }
        for c in [Array(contributions.prefix(1)), contributions] {
            let reply = ContributionReply(session: "s", contributions: c, lower: true)
            let direct = try XCTUnwrap(DirectLineWriter.contribution(reply, id: 4))
            let codable = try JSONLineWriter.encode(JSONLineCodecTests.Envelope(id: 4, type: "contribution", body: reply))
            XCTAssertEqual(direct, codable)
            XCTAssertEqual(direct, String(decoding: try LineCodec.makeEncoder().encode(JSONLineCodecTests.Envelope(id: 4, type: "contribution", body: reply)), as: UTF8.self))
            XCTAssertTrue(direct.contains("\"form\":\"lower\""))
            let read = try XCTUnwrap(DirectLineReader.contribution(JSONLineDocument(direct)))
            XCTAssertEqual(read, reply)
            XCTAssertEqual(try JSONLineReader.decode(ContributionReply.self, from: JSONLineDocument(direct)), reply)
            XCTAssertEqual(try read.contributions().map { $0.schur.storage.map(\.bitPattern) },
                           try reply.contributions().map { $0.schur.storage.map(\.bitPattern) })
            XCTAssertLessThan(direct.utf8.count, try LineCodec.encode(.contribution(ContributionReply(session: "s", contributions: c)), id: 4).utf8.count * 3 / 4)
        }
    }

    func testAFormThatDoesNotFitIsRefusedNamingIt() throws {
        let line = try LineCodec.encode(.contribution(ContributionReply(session: "s", contribution: LMMContribution(
            schur: matrix(3, JetSpace(parameters: 1, order: 1), seed: 3), logDet: ScalarJet(space: JetSpace(parameters: 1, order: 1)), rows: 9), lower: true)), id: 1)
        for (bad, expected) in [(line.replacingOccurrences(of: "\"form\":\"lower\"", with: "\"form\":\"upper\""), "the forms are \"lower\" or none"),
                                (line.replacingOccurrences(of: "\"form\":\"lower\",", with: ""), "its shape needs 18"),
                                (line.replacingOccurrences(of: "\"cols\":3", with: "\"cols\":2"), "not square")] {
            XCTAssertThrowsError(try LineCodec.decodeReply(bad), bad) { e in XCTAssertTrue("\(e)".contains(expected), "\(e)") }
        }
    }
}

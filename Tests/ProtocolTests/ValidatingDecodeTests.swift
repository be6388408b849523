import XCTest
import Foundation
import Math
@testable import Protocol

/// Messages that decode as JSON but whose parts do not fit together are
/// refused at decode, naming the field; the wire keys are snake_case.
final class ValidatingDecodeTests: XCTestCase {
    func reply(_ line: String) throws -> Reply { try LineCodec.decodeReply(line).reply }

    func assertInconsistent(_ line: String, field: String, _ reason: String = "",
                            file: StaticString = #filePath, line l: UInt = #line) {
        do {
            let r = try reply(line)
            XCTFail("decoded \(r.typeName) from an inconsistent line", file: file, line: l)
        } catch let ProtocolError.inconsistent(f, why) {
            XCTAssertEqual(f, field, why, file: file, line: l)
            XCTAssertTrue(reason.isEmpty || why.contains(reason), why, file: file, line: l)
            XCTAssertEqual(ProtocolError.inconsistent(field: f, reason: why).code, .invalidMessage, file: file, line: l)
        } catch {
            XCTFail("expected ProtocolError.inconsistent, got \(error)", file: file, line: l)
        }
    }

    /// A prepare answer around `blocks` (a JSON object).
    func prepared(_ blocks: String, rows: Int = 10, used: Int = 10) -> String {
        "{\"id\":1,\"type\":\"prepared\",\"session\":\"s\",\"summary\":{\"rows\":\(rows),\"used\":\(used),\"missing\":{},\"groups\":[1]},\"blocks\":\(blocks)}"
    }
    /// Consistent blocks of width 2, a one-level tail of dimension 1 and no per-level factor.
    func blocks(width: Int = 2, tail: String = "[{\"factor\":0,\"levels\":1,\"offset\":0}]", tailDimension: Int = 1,
                tt: String = "[3]", tw: String = "[3,1]", ww: String = "[3,1,1,2]", first: String? = nil, siteFactor: Int? = 0) -> String {
        var s = "{\"width\":\(width),\"rows\":3,\"tail\":\(tail),\"tail_dimension\":\(tailDimension),\"tt\":\(tt),\"tw\":\(tw),\"ww\":\(ww)"
        if let first { s += ",\"first\":\(first)" }
        if let siteFactor { s += ",\"site_factor\":\(siteFactor)" }
        return s + "}"
    }

    func testSiteBlocksTravelWithSnakeCaseKeys() throws {
        var b = SiteBlocksBuilder(structure: CovarianceStructure(terms: [.init(dimension: 1, factor: 0), .init(dimension: 1, factor: 1)]),
                                  width: 2, levelCounts: [2, 1], siteFactor: 1)
        for k in 0..<4 { b.add(w: [1, Double(k)], levels: [k % 2, 0], z: [[1], [1]]) }
        let sent = PrepareReply(session: "s", summary: SiteSummary(rows: 4, used: 4, missing: [:], groups: [2, 1]), blocks: b.finish())
        let line = try LineCodec.encode(.prepared(sent), id: 1)
        for key in ["\"site_factor\":", "\"tail_dimension\":", "\"cross_start\":", "\"cross_column\":", "\"cross_values\":"] {
            XCTAssertTrue(line.contains(key), "\(key) in \(line)")
        }
        for camel in ["siteFactor", "tailDimension", "crossStart", "crossColumn", "crossValues"] {
            XCTAssertFalse(line.contains(camel), "\(camel) in \(line)")
        }
        guard case .prepared(let got) = try reply(line) else { return XCTFail() }
        XCTAssertEqual(got, sent)
    }

    /// With crossed factors most of [X y]ᵀ[X y] is exact zeros: it travels as
    /// its nonzero entries (−0 included) and decodes to the same numbers, bit for bit.
    func testMostlyZeroSumsTravelAsEntries() throws {
        let width = 12
        var ww = [Double](repeating: 0, count: width * width)
        for i in 0..<width { ww[i + i * width] = Double(i + 1) / 3 }
        ww[width - 1] = -0.0
        ww[5 + 11 * width] = 1e-300
        let blocks = SiteBlocks(width: width, rows: 9, first: nil, siteFactor: 0, tail: [.init(factor: 0, levels: 1, offset: 0)],
                                tailDimension: 1, tt: [2], tw: [Double](repeating: 0.5, count: width), ww: ww)
        let line = try LineCodec.encode(.prepared(PrepareReply(session: "s", summary: SiteSummary(rows: 9, used: 9, missing: [:], groups: [1]),
                                                               blocks: blocks)), id: 1)
        XCTAssertTrue(line.contains("\"ww_entries\":"), line)
        XCTAssertFalse(line.contains("\"ww\":"), line)
        guard case .prepared(let got) = try reply(line) else { return XCTFail() }
        XCTAssertEqual(got.blocks?.ww.map(\.bitPattern), ww.map(\.bitPattern))
        // Dense sums (no crossed factor) keep the dense form.
        XCTAssertTrue(try LineCodec.encode(.prepared(PrepareReply(session: "s", summary: SiteSummary(rows: 9, used: 9, missing: [:], groups: [1]),
                                                                  blocks: SiteBlocks(width: 2, rows: 3, first: nil, siteFactor: 0,
                                                                                     tail: [.init(factor: 0, levels: 1, offset: 0)], tailDimension: 1,
                                                                                     tt: [3], tw: [3, 1], ww: [3, 1, 1, 2]))), id: 1).contains("\"ww\":[3,1,1,2]"))
    }

    func testEntriesThatDoNotFitAreRefused() {
        func entries(_ e: String) -> String { blocks().replacingOccurrences(of: "\"ww\":[3,1,1,2]", with: "\"ww_entries\":\(e)") }
        XCTAssertEqual(try? reply(prepared(entries("{\"at\":[0,3],\"values\":[3,2]}"))).typeName, "prepared")
        assertInconsistent(prepared(entries("{\"at\":[3,0],\"values\":[2,3]}")), field: "blocks.ww_entries", "ascending")
        assertInconsistent(prepared(entries("{\"at\":[0,4],\"values\":[3,2]}")), field: "blocks.ww_entries", "below width²")
        assertInconsistent(prepared(entries("{\"at\":[0,3],\"values\":[3]}")), field: "blocks.ww_entries", "one value each")
        assertInconsistent(prepared(entries("{\"at\":[0],\"values\":[3]},\"ww\":[3,0,0,0]")), field: "blocks.ww_entries", "send one of them")
    }

    func testConsistentBlocksDecode() throws {
        guard case .prepared(let p) = try reply(prepared(blocks())) else { return XCTFail() }
        XCTAssertEqual(p.blocks?.tailDimension, 1)
        XCTAssertEqual(p.blocks?.siteFactor, 0)
    }

    func testBlocksWhosePartsDoNotFitAreRefused() {
        assertInconsistent(prepared(blocks(ww: "[3,1,1]")), field: "blocks.ww", "width² is 4")
        assertInconsistent(prepared(blocks(tt: "[3,1]")), field: "blocks.tt", "tail_dimension² is 1")
        assertInconsistent(prepared(blocks(tw: "[3]")), field: "blocks.tw")
        assertInconsistent(prepared(blocks(width: 0, tw: "[]", ww: "[]")), field: "blocks.width")
        assertInconsistent(prepared(blocks(siteFactor: -1)), field: "blocks.site_factor")
        assertInconsistent(prepared(blocks(tail: "[{\"factor\":0,\"levels\":2,\"offset\":0}]")), field: "blocks.tail", "does not fit")
        assertInconsistent(prepared(blocks(tail: "[{\"factor\":0,\"levels\":-1,\"offset\":0}]")), field: "blocks.tail")
        // Cross products that point outside the tail.
        let first = "{\"factor\":1,\"levels\":1,\"dimension\":1,\"zz\":[1],\"zw\":[1,1],\"cross_start\":[0,1],\"cross_column\":[5],\"cross_values\":[1]}"
        assertInconsistent(prepared(blocks(first: first)), field: "blocks.first", "cross products")
        let shortZZ = "{\"factor\":1,\"levels\":2,\"dimension\":1,\"zz\":[1],\"zw\":[1,1,1,1],\"cross_start\":[0,0,0],\"cross_column\":[],\"cross_values\":[]}"
        assertInconsistent(prepared(blocks(first: shortZZ)), field: "blocks.first", "wrong length")
    }

    func testTheDenseTailCapIsTheSitesOne() {
        let n = ProtocolLimits.maxTailDimension + 1
        assertInconsistent(prepared(blocks(tailDimension: n)), field: "blocks.tail_dimension", "\(ProtocolLimits.maxTailDimension)")
        XCTAssertEqual(ProtocolLimits.maxTailDimension, 2_000)
        // The coordinator's model check reads the same cap.
        let structure = CovarianceStructure(terms: [.init(dimension: 1, factor: 0)])
        let wide = SiteBlocks(width: 1, rows: 0, first: nil, siteFactor: nil, tail: [.init(factor: 0, levels: n, offset: 0)],
                              tailDimension: n, tt: [], tw: [], ww: [0])
        XCTAssertEqual(wide.inconsistency(structure: structure, width: 1), "tail layout is inconsistent")
    }

    func testSummaryCountsNoSiteCanHaveAreRefused() {
        assertInconsistent(prepared(blocks(), rows: 10, used: 11), field: "summary.used")
        assertInconsistent(prepared(blocks(), rows: -1, used: 0), field: "summary.rows")
        let negativeGroups = "{\"id\":1,\"type\":\"prepared\",\"session\":\"s\",\"summary\":{\"rows\":3,\"used\":3,\"missing\":{},\"groups\":[-2]}}"
        assertInconsistent(negativeGroups, field: "summary.groups")
    }

    func testContributionsWhoseShapeDoesNotFitAreRefused() {
        func contribution(rows: Int = 5, schur: String, logDet: String) -> String {
            "{\"id\":1,\"type\":\"contribution\",\"session\":\"s\",\"rows\":\(rows),\"schur\":\(schur),\"log_det\":\(logDet)}"
        }
        let schur = "{\"rows\":1,\"cols\":1,\"parameters\":1,\"order\":1,\"values\":[1,2]}"
        XCTAssertNoThrow(try reply(contribution(schur: schur, logDet: "[0.5,0.25]")))
        assertInconsistent(contribution(schur: schur, logDet: "[0.5]"), field: "log_det", "has 2")
        assertInconsistent(contribution(rows: -3, schur: schur, logDet: "[0.5,0.25]"), field: "rows")
        assertInconsistent(contribution(schur: "{\"rows\":1,\"cols\":1,\"parameters\":1,\"order\":1,\"values\":[1]}", logDet: "[0,0]"),
                           field: "schur", "its shape needs 2")
        assertInconsistent(contribution(schur: "{\"rows\":1,\"cols\":1,\"parameters\":1,\"order\":3,\"values\":[1,2]}", logDet: "[0,0]"),
                           field: "schur", "out of range")
        let huge = ProtocolLimits.maxJetParameters + 1
        assertInconsistent(contribution(schur: "{\"rows\":0,\"cols\":0,\"parameters\":\(huge),\"order\":0,\"values\":[]}", logDet: "[0]"),
                           field: "schur", "out of range")
    }

    func testGLMMObjectivesWhoseShapeDoesNotFitAreRefused() {
        func objective(parameters: Int = 2, order: Int = 1, values: String) -> String {
            "{\"id\":1,\"type\":\"glmm_contribution\",\"session\":\"s\",\"rows\":4,\"parameters\":\(parameters),\"order\":\(order),\"objective\":\(values)}"
        }
        XCTAssertNoThrow(try reply(objective(values: "[1,2,3]")))
        assertInconsistent(objective(values: "[1,2]"), field: "objective", "its shape needs 3")
        assertInconsistent(objective(order: -1, values: "[1]"), field: "order")
        assertInconsistent(objective(parameters: -1, values: "[1]"), field: "parameters")
    }

    func testFinalizeAnswersWhosePartsDoNotFitAreRefused() {
        func finalized(_ fields: String) -> String { "{\"id\":1,\"type\":\"finalized\",\"session\":\"s\"\(fields)}" }
        XCTAssertNoThrow(try reply(finalized(",\"effects\":[1,2],\"conditional_covariance\":[1,0,0,1],\"own_effects\":[3,4]")))
        XCTAssertNoThrow(try reply(finalized("")))
        assertInconsistent(finalized(",\"effects\":[1,2],\"conditional_covariance\":[1,0,0]"), field: "conditional_covariance", "2 effects need 4")
        assertInconsistent(finalized(",\"conditional_covariance\":[1]"), field: "conditional_covariance", "0 effects need 0")
        assertInconsistent(finalized(",\"effects\":[1],\"conditional_covariance\":[1],\"own_effects\":[1,2]"), field: "own_effects")
    }

    func testModelFamilyAndLinkAreReadByName() {
        let model = { (family: String) in
            "{\"id\":1,\"type\":\"prepare\",\"session\":\"s\",\"dataset\":\"d\",\"model\":{\"formula\":\"y ~ 1\",\"family\":\"\(family)\",\"link\":\"identity\",\"response\":{\"value\":{\"var\":\"y\"}},\"fixed\":[],\"terms\":[]}}"
        }
        XCTAssertNoThrow(try LineCodec.decodeRequest(model("poisson")))
        do {
            _ = try LineCodec.decodeRequest(model("quasi"))
            XCTFail("an unknown family decoded")
        } catch let e as ProtocolError {
            XCTAssertEqual(e.code, .invalidMessage)
            XCTAssertTrue(e.description.contains("model.family"), e.description)
            XCTAssertTrue(e.description.contains("gaussian, binomial, poisson"), e.description)
        } catch { XCTFail("\(error)") }
    }
}

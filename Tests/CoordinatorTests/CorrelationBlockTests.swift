import XCTest
import Foundation
import Coordinator

/// lme4's "Correlation of Fixed Effects" block (print.summary.merMod) and
/// R's abbreviate(), which names its rows and columns. The expected texts and
/// abbreviations were printed by R 4 / lme4 1.1.31 (Tests/Fixtures/tools/vcov-references.R
/// for the blocks; `abbreviate(names, minlength = 6 and 11)` for the names).
final class CorrelationBlockTests: XCTestCase {
    func references() throws -> [String: Any] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/vcov-references.json")
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    /// R's abbreviate() of these names, all at once (collisions are redone longer).
    static let names = ["(Intercept)", "Days", "factor(period)2", "factor(period)3", "factor(period)4", "period2", "standLRT", "sexM", "age", "I(age^2)", "urban1", "livch1", "livch2", "livch3+", "poly(x, 2)1", "poly(x, 2)2", "Days:groupB", "log(dose + 1)", "a b c d e f g h", "treatmentA:timeLate", "treatmentB:timeLate", "xx aa ee", "AGE", "Age_Years", "ns(time, df = 3)1", "ns(time, df = 3)2", "ns(time, df = 3)3", "Intercept", "intercept1", "intercept2", "ab", "abcdefgh", "x.long.name", "x.long.nome", "ei ou", "Xaeiou", "age:sexFemale", "age:sexMale"]
    static let minLength6 = ["(Intr)", "Days", "fct()2", "fct()3", "fct()4", "perid2", "stnLRT", "sexM", "age", "I(g^2)", "urban1", "livch1", "livch2", "lvch3+", "p(,2)1", "p(,2)2", "Dys:gB", "lg(+1)", "abcdefgh", "trtA:L", "trtB:L", "xxaaee", "AGE", "Ag_Yrs", "n(,d=3)1", "n(,d=3)2", "n(,d=3)3", "Intrcp", "intrc1", "intrc2", "ab", "abcdfg", "x.long.nam", "x.long.nom", "ei ou", "Xaeiou", "ag:sxF", "ag:sxM"]
    static let minLength11 = ["(Intercept)", "Days", "factr(prd)2", "factr(prd)3", "factr(prd)4", "period2", "standLRT", "sexM", "age", "I(age^2)", "urban1", "livch1", "livch2", "livch3+", "poly(x, 2)1", "poly(x, 2)2", "Days:groupB", "log(dose+1)", "a b c d e f g h", "trtmntA:tmL", "trtmntB:tmL", "xx aa ee", "AGE", "Age_Years", "ns(tm,d=3)1", "ns(tm,d=3)2", "ns(tm,d=3)3", "Intercept", "intercept1", "intercept2", "ab", "abcdefgh", "x.long.name", "x.long.nome", "ei ou", "Xaeiou", "age:sexFeml", "age:sexMale"]
    /// Sets whose abbreviations collide at first.
    static let sets: [(minLength: Int, names: [String], expected: [String])] = [
        (6, ["x.long.name", "x.long.nome"], ["x.long.nam", "x.long.nom"]),
        (11, ["x.long.name", "x.long.nome"], ["x.long.name", "x.long.nome"]),
        (6, ["treatmentA:timeLate", "treatmentB:timeLate"], ["trtA:L", "trtB:L"]),
        (11, ["treatmentA:timeLate", "treatmentB:timeLate"], ["trtmntA:tmL", "trtmntB:tmL"]),
        (6, ["intercept1", "intercept2", "Intercept"], ["intrc1", "intrc2", "Intrcp"]),
        (11, ["intercept1", "intercept2", "Intercept"], ["intercept1", "intercept2", "Intercept"]),
        (6, ["age:sexFemale", "age:sexMale"], ["ag:sxF", "ag:sxM"]),
        (11, ["age:sexFemale", "age:sexMale"], ["age:sexFeml", "age:sexMale"]),
        (6, ["aaaaaaab", "aaaaaaac", "aaaaaaabx"], ["aaaaab", "aaaaac", "aaaabx"]),
        (11, ["aaaaaaab", "aaaaaaac", "aaaaaaabx"], ["aaaaaaab", "aaaaaaac", "aaaaaaabx"]),
    ]

    func testAbbreviateAsR() {
        XCTAssertEqual(Report.abbreviate(Self.names, minLength: 6), Self.minLength6)
        XCTAssertEqual(Report.abbreviate(Self.names, minLength: 11), Self.minLength11)
        for s in Self.sets { XCTAssertEqual(Report.abbreviate(s.names, minLength: s.minLength), s.expected, "\(s.names)") }
    }

    /// lme4's own vcov gives lme4's printed block, character for character
    /// (trailing blanks included).
    func testBlockFromLme4VcovIsLme4Text() throws {
        let references = try references()
        for key in ["sleepstudy/reml", "cbpp/laplace"] {
            let ref = references[key] as! [String: Any]
            let text = Report.correlationBlock(ref["vcov"] as! [[Double]], names: ref["names"] as! [String])
            XCTAssertEqual(text, "\n" + (ref["correlation_block"] as! String), key)
        }
    }

    func testNoBlockForOneEffectAndANoteAboveTwelve() {
        XCTAssertEqual(Report.correlationBlock([[2.0]], names: ["(Intercept)"]), "")
        let p = 13
        let identity = (0..<p).map { i in (0..<p).map { j in i == j ? 1.0 : 0.0 } }
        let text = Report.correlationBlock(identity, names: (0..<p).map { "x\($0)" })
        XCTAssertTrue(text.hasPrefix("\nCorrelation matrix not shown by default, as p = 13 > 12.\n"), text)
        XCTAssertFalse(text.contains("Correlation of Fixed Effects"))
        // p = 12 is shown; an exact zero prints as lme4's 0.000, never -0.000
        var v = (0..<12).map { i in (0..<12).map { j in i == j ? 1.0 : 0.0 } }
        v[1][0] = -1e-9; v[0][1] = -1e-9
        let shown = Report.correlationBlock(v, names: (0..<12).map { "x\($0)" })
        XCTAssertTrue(shown.hasPrefix("\nCorrelation of Fixed Effects:\n    x0    x1    x2"), shown)
        XCTAssertTrue(shown.contains("\nx1  0.000"), shown)
        XCTAssertFalse(shown.contains("-0.000"), shown)
    }
}

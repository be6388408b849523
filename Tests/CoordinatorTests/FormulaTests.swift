import XCTest
@testable import Coordinator
import Math
import Protocol

final class FormulaTests: XCTestCase {

    // MARK: Helpers

    private func num(_ n: String, _ levels: [String]? = nil) -> VariableInfo {
        VariableInfo(name: n, kind: .numeric, levels: levels)
    }
    private func text(_ n: String, _ levels: [String]?) -> VariableInfo {
        VariableInfo(name: n, kind: .text, levels: levels)
    }
    private func vars(_ list: VariableInfo...) -> [String: VariableInfo] {
        Dictionary(uniqueKeysWithValues: list.map { ($0.name, $0) })
    }
    private func spec(_ f: String, _ v: [String: VariableInfo],
                      family: Family = .gaussian, link: Link = .identity,
                      file: StaticString = #filePath, line: UInt = #line) throws -> ModelSpec {
        do {
            return try Formula.resolve(Formula.parse(f), variables: v, family: family, link: link)
        } catch {
            XCTFail("\(f): \(error)", file: file, line: line)
            throw error
        }
    }
    private func names(_ cols: [DesignColumn]) -> [String] { cols.map(\.name) }
    private func column(_ cols: [DesignColumn], _ name: String) -> Expr? { cols.first { $0.name == name }?.expr }

    /// 0-based character offset of the n-th occurrence of `needle`.
    private func at(_ needle: String, _ haystack: String, _ occurrence: Int = 1) -> Int {
        var from = haystack.startIndex
        var found = haystack.startIndex
        for _ in 0..<occurrence {
            let r = haystack.range(of: needle, range: from..<haystack.endIndex)!
            found = r.lowerBound
            from = haystack.index(after: r.lowerBound)
        }
        return haystack.distance(from: haystack.startIndex, to: found)
    }

    /// Asserts that parsing (and, with variables, resolving) fails with
    /// exactly this message, position and term.
    private func assertFormulaError(_ f: String, _ v: [String: VariableInfo]? = nil,
                                    family: Family = .gaussian,
                                    message: String, position: Int, term: String,
                                    file: StaticString = #filePath, line: UInt = #line) {
        do {
            let parsed = try Formula.parse(f)
            guard let v else { XCTFail("\(f) parsed without error", file: file, line: line); return }
            _ = try Formula.resolve(parsed, variables: v, family: family, link: .identity)
            XCTFail("\(f) resolved without error", file: file, line: line)
        } catch let e as FormulaError {
            XCTAssertEqual(e.message, message, file: file, line: line)
            XCTAssertEqual(e.position, position, "position", file: file, line: line)
            XCTAssertEqual(e.term, term, "term", file: file, line: line)
            XCTAssertEqual(e.formula, f, file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    private let abc = ["a", "b", "c"]
    private let lv123 = ["1", "2", "3"]

    // MARK: Worked examples

    func testSleepstudy() throws {
        let s = try spec("Reaction ~ Days + (Days | Subject)",
                         vars(num("Reaction"), num("Days"), num("Subject")))
        XCTAssertEqual(s.formula, "Reaction ~ Days + (Days | Subject)")
        XCTAssertEqual(s.response, .value(.variable("Reaction")))
        XCTAssertEqual(s.fixed, [DesignColumn(name: "(Intercept)", expr: .number(1)),
                                 DesignColumn(name: "Days", expr: .variable("Days"))])
        XCTAssertEqual(s.terms, [RandomTerm(name: "Subject", grouping: .withinSite(["Subject"]),
                                            columns: [DesignColumn(name: "(Intercept)", expr: .number(1)),
                                                      DesignColumn(name: "Days", expr: .variable("Days"))])])
        XCTAssertEqual(s.family, .gaussian)
        XCTAssertEqual(s.link, .identity)
        XCTAssertNil(s.offset)
        XCTAssertNil(s.weights)
        XCTAssertEqual(s.thetaCount, 3)
    }

    func testContraception() throws {
        let v = vars(num("use01"), num("age"), text("urban", ["N", "Y"]),
                     text("livch", ["0", "1", "2", "3+"]), text("use", ["N", "Y"]))
        let s = try spec("use01 ~ age + I(age^2) + urban + livch + (1 | site)", v,
                         family: .binomial, link: .logit)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "age", "I(age^2)", "urbanY", "livch1", "livch2", "livch3+"])
        XCTAssertEqual(column(s.fixed, "I(age^2)"), .binary(.power, .variable("age"), .number(2)))
        XCTAssertEqual(column(s.fixed, "urbanY"), .indicator("urban", level: "Y"))
        XCTAssertEqual(column(s.fixed, "livch3+"), .indicator("livch", level: "3+"))
        XCTAssertEqual(s.terms, [RandomTerm(name: "site", grouping: .site,
                                            columns: [DesignColumn(name: "(Intercept)", expr: .number(1))])])
        XCTAssertEqual(s.family, .binomial)
        XCTAssertEqual(s.link, .logit)
        XCTAssertEqual(s.response, .value(.variable("use01")))
        XCTAssertEqual(s.requiredVariables, ["use01", "age", "urban", "livch"])

        // A two-level text response is the indicator of its second level.
        let t = try spec("use ~ age + (1 | site)", v, family: .binomial, link: .logit)
        XCTAssertEqual(t.response, .value(.indicator("use", level: "Y")))
    }

    func testCbppCbindAndNumericFactor() throws {
        let v = vars(num("incidence"), num("size"), num("period", ["1", "2", "3", "4"]))
        let s = try spec("cbind(incidence, size - incidence) ~ factor(period) + (1 | site)", v,
                         family: .binomial, link: .logit)
        XCTAssertEqual(s.response, .binomial(successes: .variable("incidence"),
                                             failures: .binary(.subtract, .variable("size"), .variable("incidence"))))
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "factor(period)2", "factor(period)3", "factor(period)4"])
        XCTAssertEqual(column(s.fixed, "factor(period)2"), .indicator("period", level: "2"))
        XCTAssertEqual(column(s.fixed, "factor(period)4"), .indicator("period", level: "4"))
        XCTAssertEqual(s.terms.map(\.grouping), [.site])
    }

    func testHSBCrossedInteractions() throws {
        let v = vars(num("mAch"), num("meanses"), num("cses"), text("sector", ["Catholic", "Public"]))
        let s = try spec("mAch ~ meanses*cses + sector*cses + (cses | site)", v)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "meanses", "cses", "sectorPublic",
                                        "meanses:cses", "cses:sectorPublic"])
        XCTAssertEqual(column(s.fixed, "meanses:cses"), .binary(.multiply, .variable("meanses"), .variable("cses")))
        XCTAssertEqual(column(s.fixed, "cses:sectorPublic"),
                       .binary(.multiply, .variable("cses"), .indicator("sector", level: "Public")))
        XCTAssertEqual(s.terms.count, 1)
        XCTAssertEqual(s.terms[0].name, "site")
        XCTAssertEqual(s.terms[0].grouping, .site)
        XCTAssertEqual(names(s.terms[0].columns), ["(Intercept)", "cses"])
        let f = try Formula.parse("mAch ~ meanses*cses + sector*cses + (cses | site)")
        XCTAssertEqual(f.fixed.termLabels, ["meanses", "cses", "sector", "meanses:cses", "cses:sector"])
    }

    func testPastesSiteAndWithinSiteGroups() throws {
        let s = try spec("strength ~ 1 + (1 | site) + (1 | site:cask)", vars(num("strength"), text("cask", abc)))
        XCTAssertEqual(names(s.fixed), ["(Intercept)"])
        XCTAssertEqual(s.terms, [
            RandomTerm(name: "site", grouping: .site, columns: [DesignColumn(name: "(Intercept)", expr: .number(1))]),
            RandomTerm(name: "site:cask", grouping: .withinSite(["cask"]),
                       columns: [DesignColumn(name: "(Intercept)", expr: .number(1))]),
        ])
        XCTAssertEqual(s.requiredVariables, ["strength", "cask"])
    }

    func testNoInterceptGivesAllLevels() throws {
        let s = try spec("y ~ 0 + f + x + (1|site)", vars(num("y"), num("x"), text("f", abc)))
        XCTAssertEqual(names(s.fixed), ["fa", "fb", "fc", "x"])
        XCTAssertEqual(column(s.fixed, "fa"), .indicator("f", level: "a"))
    }

    func testDoubleBarSplitsTerms() throws {
        let s = try spec("y ~ x + (x || g)", vars(num("y"), num("x"), num("g")))
        XCTAssertEqual(s.terms, [
            RandomTerm(name: "g", grouping: .withinSite(["g"]), columns: [DesignColumn(name: "(Intercept)", expr: .number(1))]),
            RandomTerm(name: "g", grouping: .withinSite(["g"]), columns: [DesignColumn(name: "x", expr: .variable("x"))]),
        ])
        // A factor in || gets its own term with all levels (lme4's 0 + f).
        let t = try spec("y ~ x + (1 + x + f || g)", vars(num("y"), num("x"), num("g"), text("f", abc)))
        XCTAssertEqual(t.terms.map { names($0.columns) }, [["(Intercept)"], ["x"], ["fa", "fb", "fc"]])
        // No intercept on the left: only the slopes.
        let u = try spec("y ~ x + (0 + x + z || g)", vars(num("y"), num("x"), num("z"), num("g")))
        XCTAssertEqual(u.terms.map { names($0.columns) }, [["x"], ["z"]])
    }

    func testNestedGroupingWithSlash() throws {
        let s = try spec("y ~ x + (1 | site/ward)", vars(num("y"), num("x"), text("ward", abc)))
        // lme4's expandSlash: most nested first, named inner:outer (checked with lme4::findbars)
        XCTAssertEqual(s.terms.map(\.name), ["ward:site", "site"])
        XCTAssertEqual(s.terms.map(\.grouping), [.withinSite(["ward"]), .site])
        let t = try spec("y ~ x + (1 | g1/g2/g3)", vars(num("y"), num("x"), num("g1"), num("g2"), num("g3")))
        XCTAssertEqual(t.terms.map(\.name), ["g3:(g2:g1)", "g2:g1", "g1"])
        XCTAssertEqual(t.terms.map(\.grouping), [.withinSite(["g3", "g2", "g1"]), .withinSite(["g2", "g1"]),
                                                 .withinSite(["g1"])])
        let u = try spec("y ~ x + (x || site/ward)", vars(num("y"), num("x"), text("ward", abc)))
        XCTAssertEqual(u.terms.map(\.name), ["ward:site", "site", "ward:site", "site"])
        XCTAssertEqual(u.terms.map { names($0.columns) }, [["(Intercept)"], ["(Intercept)"], ["x"], ["x"]])
    }

    func testOffsets() throws {
        let v = vars(num("y"), num("x"), num("exposure"), num("w"))
        let s = try spec("y ~ x + offset(log(exposure)) + (1 | site)", v, family: .poisson, link: .log)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "x"])
        XCTAssertEqual(s.offset, .unary(.log, .variable("exposure")))
        let t = try spec("y ~ offset(log(exposure)) + x + offset(w / 2) + (1 | site)", v, family: .poisson, link: .log)
        XCTAssertEqual(names(t.fixed), ["(Intercept)", "x"])
        XCTAssertEqual(t.offset, .binary(.add, .unary(.log, .variable("exposure")),
                                         .binary(.divide, .variable("w"), .number(2))))
        XCTAssertEqual(try Formula.parse("y ~ offset(log(exposure)) + x + (1|site)").fixed.termLabels, ["x"])
    }

    func testTwoFactorInteraction() throws {
        let v = vars(num("y"), text("a", lv123), text("b", lv123))
        let s = try spec("y ~ a*b + (1 | site)", v)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "a2", "a3", "b2", "b3", "a2:b2", "a3:b2", "a2:b3", "a3:b3"])
        XCTAssertEqual(column(s.fixed, "a3:b2"),
                       .binary(.multiply, .indicator("a", level: "3"), .indicator("b", level: "2")))
        // Without main effects every combination is coded (R's margin rule).
        let t = try spec("y ~ a:b + (1 | site)", v)
        XCTAssertEqual(names(t.fixed), ["(Intercept)", "a1:b1", "a2:b1", "a3:b1", "a1:b2", "a2:b2", "a3:b2",
                                        "a1:b3", "a2:b3", "a3:b3"])
        // a + a:b (= a/b): b by contrasts, a by indicators within the interaction.
        let u = try spec("y ~ a + a:b + (1 | site)", v)
        XCTAssertEqual(names(u.fixed), ["(Intercept)", "a2", "a3", "a1:b2", "a2:b2", "a3:b2", "a1:b3", "a2:b3", "a3:b3"])
        // Variables in an interaction follow their first appearance.
        let w = try spec("y ~ b:a + a + (1 | site)", v)
        XCTAssertEqual(try Formula.parse("y ~ b:a + a + (1 | site)").fixed.termLabels, ["a", "b:a"])
        XCTAssertEqual(names(w.fixed), ["(Intercept)", "a2", "a3", "b2:a1", "b3:a1", "b2:a2", "b3:a2", "b2:a3", "b3:a3"])
        XCTAssertEqual(try Formula.parse("y ~ a + b:a + (1 | site)").fixed.termLabels, ["a", "a:b"])
    }

    // MARK: R's contrast (margin) rule

    func testMarginRuleWithNumericVariables() throws {
        let v = vars(num("y"), num("x"), text("f", abc), text("g", ["A", "B"]))
        XCTAssertEqual(names(try spec("y ~ x:f + (1|site)", v).fixed), ["(Intercept)", "x:fa", "x:fb", "x:fc"])
        XCTAssertEqual(names(try spec("y ~ f:x + (1|site)", v).fixed), ["(Intercept)", "fa:x", "fb:x", "fc:x"])
        // x is in the model, so within x:f the factor is coded by contrasts.
        XCTAssertEqual(names(try spec("y ~ x + x:f + (1|site)", v).fixed), ["(Intercept)", "x", "x:fb", "x:fc"])
        XCTAssertEqual(names(try spec("y ~ f + x:f + (1|site)", v).fixed), ["(Intercept)", "fb", "fc", "fa:x", "fb:x", "fc:x"])
        XCTAssertEqual(names(try spec("y ~ f*x + (1|site)", v).fixed), ["(Intercept)", "fb", "fc", "x", "fb:x", "fc:x"])
        // No intercept: only the first factor of the first factor term gets all levels.
        XCTAssertEqual(names(try spec("y ~ 0 + f + g + (1|site)", v).fixed), ["fa", "fb", "fc", "gB"])
        XCTAssertEqual(names(try spec("y ~ 0 + x + f + (1|site)", v).fixed), ["x", "fa", "fb", "fc"])
        XCTAssertEqual(names(try spec("y ~ 0 + x:f + (1|site)", v).fixed), ["x:fa", "x:fb", "x:fc"])
        XCTAssertEqual(names(try spec("y ~ 0 + f*g + (1|site)", v).fixed), ["fa", "fb", "fc", "gB", "fb:gB", "fc:gB"])
    }

    /// Column names checked by hand against R 4.2.2 / lme4 (lFormula) on
    /// data with these types; the tests do not need R.
    func testRVerifiedModelMatrixNames() throws {
        let v = vars(num("y"), num("x"), num("z"), num("grp"), text("a", lv123), text("b", lv123),
                     text("f", abc), text("g", ["A", "B"]))
        let cases: [(String, [String])] = [
            ("y ~ a:b + a:f", ["(Intercept)", "a1:b1", "a2:b1", "a3:b1", "a1:b2", "a2:b2", "a3:b2", "a1:b3", "a2:b3", "a3:b3",
                               "a1:fb", "a2:fb", "a3:fb", "a1:fc", "a2:fc", "a3:fc"]),
            ("y ~ a:f + b:f + f", ["(Intercept)", "fb", "fc", "a2:fa", "a3:fa", "a2:fb", "a3:fb", "a2:fc", "a3:fc",
                                   "fa:b2", "fb:b2", "fc:b2", "fa:b3", "fb:b3", "fc:b3"]),
            ("y ~ x:a + z:a", ["(Intercept)", "x:a1", "x:a2", "x:a3", "a1:z", "a2:z", "a3:z"]),
            ("y ~ z:x + x", ["(Intercept)", "x", "z:x"]),
            ("y ~ 0 + a:b + a", ["a1", "a2", "a3", "a1:b2", "a2:b2", "a3:b2", "a1:b3", "a2:b3", "a3:b3"]),
            ("y ~ 0 + x + a:b", ["x", "a1:b1", "a2:b1", "a3:b1", "a1:b2", "a2:b2", "a3:b2", "a1:b3", "a2:b3", "a3:b3"]),
            ("y ~ 0 + x:f + a", ["a1", "a2", "a3", "x:fa", "x:fb", "x:fc"]),
            ("y ~ (a + b)*f - a", ["(Intercept)", "b2", "b3", "fb", "fc", "a2:fa", "a3:fa", "a2:fb", "a3:fb", "a2:fc", "a3:fc",
                                   "b2:fb", "b3:fb", "b2:fc", "b3:fc"]),
            ("y ~ a*x*f - a:x:f", ["(Intercept)", "a2", "a3", "x", "fb", "fc", "a2:x", "a3:x", "a2:fb", "a3:fb", "a2:fc", "a3:fc",
                                   "x:fb", "x:fc"]),
            ("y ~ f:g:x", ["(Intercept)", "fa:gA:x", "fb:gA:x", "fc:gA:x", "fa:gB:x", "fb:gB:x", "fc:gB:x"]),
            ("y ~ x:f:g + f", ["(Intercept)", "fb", "fc", "x:fa:gA", "x:fb:gA", "x:fc:gA", "x:fa:gB", "x:fb:gB", "x:fc:gB"]),
        ]
        for (f, expected) in cases {
            XCTAssertEqual(names(try spec(f + " + (1 | grp)", v).fixed), expected, f)
        }
        XCTAssertEqual(names(try spec("y ~ x + (a*f | grp)", v).terms[0].columns),
                       ["(Intercept)", "a2", "a3", "fb", "fc", "a2:fb", "a3:fb", "a2:fc", "a3:fc"])
        XCTAssertEqual(names(try spec("y ~ x + (0 + a:f | grp)", v).terms[0].columns),
                       ["a1:fa", "a2:fa", "a3:fa", "a1:fb", "a2:fb", "a3:fb", "a1:fc", "a2:fc", "a3:fc"])
        // Variables removed with - still take their place in the variable
        // order (R 4.x's terms()): b comes before c, d before c.
        XCTAssertEqual(try Formula.parse("y ~ x - b + c + b:c + (1 | grp)").fixed.termLabels, ["x", "c", "b:c"])
        XCTAssertEqual(try Formula.parse("y ~ x - b:d + c + d:c + (1 | grp)").fixed.termLabels, ["x", "c", "d:c"])
    }

    func testTermOrderingAndDuplicates() throws {
        let f = try Formula.parse("y ~ c:a + b + a + b + a:c + log(z) + (1 | site)")
        XCTAssertEqual(f.fixed.termLabels, ["b", "a", "log(z)", "c:a"])
        XCTAssertTrue(f.fixed.intercept)
        let g = try Formula.parse("y ~ a*b*c - a:b:c + (1 | site)")
        XCTAssertEqual(g.fixed.termLabels, ["a", "b", "c", "a:b", "a:c", "b:c"])
        let h = try Formula.parse("y ~ (a + b)*c + (1 | site)")
        XCTAssertEqual(h.fixed.termLabels, ["a", "b", "c", "a:c", "b:c"])
        let k = try Formula.parse("y ~ a*(b + c) + (1 | site)")
        XCTAssertEqual(k.fixed.termLabels, ["a", "b", "c", "a:b", "a:c"])
        let m = try Formula.parse("y ~ (a + b):(c + d) + (1 | site)")
        XCTAssertEqual(m.fixed.termLabels, ["a:c", "a:d", "b:c", "b:d"])
        let n = try Formula.parse("y ~ x + (1 | site) + w")
        XCTAssertEqual(n.fixed.termLabels, ["x", "w"])
    }

    func testInterceptControl() throws {
        let cases: [(String, Bool)] = [
            ("y ~ x + (1|site)", true),
            ("y ~ x - 1 + (1|site)", false),
            ("y ~ x + 0 + (1|site)", false),
            ("y ~ 0 + x + (1|site)", false),
            ("y ~ -1 + x + (1|site)", false),
            ("y ~ - 1 + x + (1|site)", false),
            ("y ~ 1 + x + (1|site)", true),
            ("y ~ 0 + x + 1 + (1|site)", true),
            ("y ~ x - 0 + (1|site)", true),
            ("y ~ (1|site)", true),
            ("y ~ 0 + (1|site)", false),
        ]
        for (text, intercept) in cases {
            let f = try Formula.parse(text)
            XCTAssertEqual(f.fixed.intercept, intercept, text)
        }
        // Bars before a minus, as lme4's nobars reads them (checked with lme4):
        // y ~ x + (1 | g) - 1 has no intercept; y ~ (1 | g) - 1 keeps it.
        XCTAssertEqual(try Formula.parse("y ~ x + (1 | g) - 1").fixed.intercept, false)
        XCTAssertEqual(try Formula.parse("y ~ x + (1 | g) - 1").random.map(\.name), ["g"])
        XCTAssertEqual(try Formula.parse("y ~ (1 | g) - 1").fixed.intercept, true)
        let s = try spec("y ~ x - 1 + (1|site)", vars(num("y"), num("x")))
        XCTAssertEqual(names(s.fixed), ["x"])
        let t = try spec("y ~ (1|site)", vars(num("y")))
        XCTAssertEqual(names(t.fixed), ["(Intercept)"])
        let u = try spec("y ~ 0 + (1|site)", vars(num("y")))
        XCTAssertEqual(u.fixed, [])
    }

    // MARK: Names of columns (R's deparse)

    func testDeparsedColumnNames() throws {
        let v = vars(num("y"), num("x"), num("a"), num("b"), num("age"))
        let s = try spec("y ~ I(age * 2) + I(a/b) + I(x^2) + I(x - 1) + log(x) + I(-x) + I( age ^ 2 ) + exp(a+b) + sqrt(x) + (1|site)", v)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "I(age * 2)", "I(a/b)", "I(x^2)", "I(x - 1)", "log(x)", "I(-x)",
                                        "I(age^2)", "exp(a + b)", "sqrt(x)"])
        XCTAssertEqual(column(s.fixed, "I(a/b)"), .binary(.divide, .variable("a"), .variable("b")))
        XCTAssertEqual(column(s.fixed, "I(-x)"), .unary(.negate, .variable("x")))
        XCTAssertEqual(column(s.fixed, "exp(a + b)"), .unary(.exp, .binary(.add, .variable("a"), .variable("b"))))
        XCTAssertEqual(column(s.fixed, "sqrt(x)"), .unary(.sqrt, .variable("x")))
        let t = try spec("y ~ I((x + 1)^2) + I(1e5 * x) + I(x / 0.001) + I(x * 0.0001) + I(x^-1) + log(x + 0.5) + I(2.50 * a) + (1|site)", v)
        XCTAssertEqual(names(t.fixed), ["(Intercept)", "I((x + 1)^2)", "I(1e+05 * x)", "I(x/0.001)", "I(x * 1e-04)",
                                        "I(x^-1)", "log(x + 0.5)", "I(2.5 * a)"])
        XCTAssertEqual(column(t.fixed, "I(x^-1)"), .binary(.power, .variable("x"), .number(-1)))
        XCTAssertEqual(column(t.fixed, "I((x + 1)^2)"),
                       .binary(.power, .binary(.add, .variable("x"), .number(1)), .number(2)))
        // I(age^2) and I(age ^ 2) are the same variable.
        XCTAssertEqual(try Formula.parse("y ~ I(age^2) + I(age ^ 2) + (1|site)").fixed.termLabels, ["I(age^2)"])
    }

    func testNumberFormatting() {
        let cases: [(Double, String)] = [
            (2, "2"), (0.5, "0.5"), (100000, "1e+05"), (10000, "10000"), (123456, "123456"),
            (0.0001, "1e-04"), (0.001, "0.001"), (1.5e20, "1.5e+20"), (0.1 + 0.2, "0.3"),
            (1e-300, "1e-300"), (3.14159, "3.14159"), (1234.5678, "1234.5678"),
        ]
        for (x, s) in cases { XCTAssertEqual(RDeparse.number(x), s, "\(x)") }
    }

    func testBacktickedNames() throws {
        let v = vars(num("y"), num("body weight"), text("my group", ["p", "q"]))
        let s = try spec("y ~ `body weight` + log(`body weight`) + `my group` + (1 | site)", v)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "body weight", "log(`body weight`)", "my groupq"])
        XCTAssertEqual(column(s.fixed, "body weight"), .variable("body weight"))
    }

    // MARK: missing(), factor()

    func testMissingIndicator() throws {
        let v = vars(num("y"), num("x"), text("smoker", ["no", "yes"]))
        let s = try spec("y ~ x + missing(smoker) + (1 | site)", v)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "x", "missing(smoker)"])
        XCTAssertEqual(column(s.fixed, "missing(smoker)"), .isMissing("smoker"))
        XCTAssertEqual(s.requiredVariables, ["y", "x"])
        let r = try spec("missing(x) ~ smoker + (1 | site)", v, family: .binomial, link: .logit)
        XCTAssertEqual(r.response, .value(.isMissing("x")))
        XCTAssertEqual(names(r.fixed), ["(Intercept)", "smokeryes"])
    }

    func testFactorOfTextAndNumeric() throws {
        let v = vars(num("y"), text("sex", ["F", "M"]), num("dose", ["0.5", "1", "2"]))
        let s = try spec("y ~ factor(sex) + factor(dose) + sex + (1 | site)", v)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "factor(sex)M", "factor(dose)1", "factor(dose)2", "sexM"])
        XCTAssertEqual(column(s.fixed, "factor(dose)1"), .indicator("dose", level: "1"))
    }

    // MARK: Random terms

    func testRandomTermLeftSides() throws {
        let v = vars(num("y"), num("x"), num("g"), text("f", abc), num("Days"), num("Subject"))
        XCTAssertEqual(names(try spec("y ~ x + (1 + x | g)", v).terms[0].columns), ["(Intercept)", "x"])
        XCTAssertEqual(names(try spec("y ~ x + (0 + x | g)", v).terms[0].columns), ["x"])
        XCTAssertEqual(names(try spec("y ~ x + (-1 + x | g)", v).terms[0].columns), ["x"])
        XCTAssertEqual(names(try spec("y ~ x + (x - 1 | g)", v).terms[0].columns), ["x"])
        XCTAssertEqual(names(try spec("y ~ x + (f | g)", v).terms[0].columns), ["(Intercept)", "fb", "fc"])
        XCTAssertEqual(names(try spec("y ~ x + (0 + f | g)", v).terms[0].columns), ["fa", "fb", "fc"])
        XCTAssertEqual(names(try spec("y ~ x + (f:x | g)", v).terms[0].columns), ["(Intercept)", "fa:x", "fb:x", "fc:x"])
        let s = try spec("y ~ Days + ((1 | Subject) + (0 + Days | Subject))", v)
        XCTAssertEqual(s.terms.map(\.name), ["Subject", "Subject"])
        XCTAssertEqual(s.terms.map { names($0.columns) }, [["(Intercept)"], ["Days"]])
        let t = try spec("y ~ x + (1 | g:f) + (x | site) + (1 | site:g:f)", v)
        XCTAssertEqual(t.terms.map(\.name), ["g:f", "site", "site:g:f"])
        XCTAssertEqual(t.terms.map(\.grouping), [.withinSite(["g", "f"]), .site, .withinSite(["g", "f"])])
        XCTAssertEqual(t.terms.map(\.thetaCount), [1, 3, 1])
    }

    func testFormulaAST() throws {
        let f = try Formula.parse("log(y) ~ x*z + offset(w) + (x || g) + (1 | site/ward)")
        XCTAssertEqual(f.response.deparsed, "log(y)")
        XCTAssertEqual(f.fixed.termLabels, ["x", "z", "x:z"])
        XCTAssertEqual(f.fixed.offsets.map(\.deparsed), ["w"])
        XCTAssertEqual(f.bars.map(\.deparsed), ["x || g", "1 | site/ward"])
        XCTAssertEqual(f.random.map(\.name), ["g", "g", "ward:site", "site"])
        let text = f.text
        XCTAssertEqual(f.random.map(\.position), [at("||", text), at("||", text), at("| site", text), at("| site", text)])
        XCTAssertEqual(f.random[2].groupingPositions, [at("ward", text), at("site", text)])
        XCTAssertEqual(f.variablesUsed, ["y", "x", "z", "w", "g", "ward"])
        let g = try Formula.parse("cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)")
        XCTAssertEqual(g.variablesUsed, ["incidence", "size", "period", "herd"])
        XCTAssertEqual(g.response.deparsed, "cbind(incidence, size - incidence)")
    }

    func testArithmeticResponse() throws {
        let s = try spec("log(y + 1) ~ x + (1 | site)", vars(num("y"), num("x")))
        XCTAssertEqual(s.response, .value(.unary(.log, .binary(.add, .variable("y"), .number(1)))))
    }

    // MARK: Errors: malformed formulas

    func testErrorMissingTilde() {
        assertFormulaError("y + x + (1 | site)",
                           message: "the formula has no '~'; write response ~ terms, e.g. y ~ x + (1 | site)",
                           position: 0, term: "y + x + (1 | site)")
    }

    func testErrorEmptySides() {
        assertFormulaError("~ x + (1 | site)",
                           message: "the left side of '~' is empty; name the response, e.g. y ~ x + (1 | site)",
                           position: 0, term: "~")
        assertFormulaError("y ~ ",
                           message: "the right side of '~' is empty; add the terms, e.g. y ~ x + (1 | site)",
                           position: 2, term: "~")
        assertFormulaError("y ~ x ~ z",
                           message: "the formula has more than one '~'; write a single response ~ terms",
                           position: 6, term: "~")
    }

    func testErrorUnbalancedParentheses() {
        let f = "y ~ (x + (1 | site)"
        assertFormulaError(f, message: "unbalanced parentheses: the '(' here is never closed; add the matching ')'",
                           position: 4, term: "(")
        let g = "y ~ x) + (1 | site)"
        assertFormulaError(g, message: "unbalanced parentheses: this ')' has no matching '('; remove it or add the '(' it closes",
                           position: 5, term: ")")
    }

    func testErrorBarOutsideParentheses() {
        let f = "y ~ x + 1 | site"
        assertFormulaError(f, message: "a random-effects term must be in parentheses: write (x + 1 | site); '|' cannot be used in the fixed part",
                           position: at("|", f), term: "x + 1 | site")
    }

    func testErrorNestedBars() {
        let f = "y ~ x + (1 | (x | g))"
        assertFormulaError(f, message: "random-effects terms cannot be nested: 'x | g' is inside '1 | (x | g)'; write each term in its own parentheses, e.g. (1 | a) + (1 | b)",
                           position: at("|", f, 2), term: "x | g")
    }

    func testErrorBarWithEmptySide() {
        let f = "y ~ x + ( | site)"
        assertFormulaError(f, message: "the left side of '|' is empty; write (1 | g) for a random intercept or (x | g) for intercept and slope",
                           position: at("|", f), term: "|")
        let g = "y ~ x + (1 | )"
        assertFormulaError(g, message: "the right side of '|' is empty; name the grouping factor, e.g. (1 | site)",
                           position: at("|", g), term: "|")
        let h = "y ~ x + (1 || )"
        assertFormulaError(h, message: "the right side of '||' is empty; name the grouping factor, e.g. (1 || site)",
                           position: at("||", h), term: "||")
    }

    func testErrorUnknownFunction() {
        let f = "y ~ bs(x, 2) + (1 | site)"
        assertFormulaError(f, message: "function bs is not supported; supported: factor, as.factor, relevel, I, log, log1p, exp, sqrt, abs, pmin, pmax, scale, poly, ns, cut, offset, cbind, missing",
                           position: 4, term: "bs")
        let g = "y ~ I(sin(x)) + (1 | site)"
        assertFormulaError(g, message: "function sin is not supported; supported: factor, as.factor, relevel, I, log, log1p, exp, sqrt, abs, pmin, pmax, scale, poly, ns, cut, offset, cbind, missing",
                           position: at("sin", g), term: "sin")
    }

    func testErrorTrailingOperator() {
        let f = "y ~ x + (1 | site) +"
        assertFormulaError(f, message: "the formula ends with the operator '+'; add a term after it or remove it",
                           position: at("+", f, 2), term: "+")
        let g = "y ~ x + * z + (1 | site)"
        assertFormulaError(g, message: "two operators in a row: '*' follows '+'; put a term between them or remove one",
                           position: at("*", g), term: "*")
        let h = "y ~ x + (1 | site) + log(x,)"
        assertFormulaError(h, message: "missing argument in log(...); remove the extra ','",
                           position: at(")", h, 2), term: ")")
    }

    func testErrorStrayCharacters() {
        let f = "y ~ x $ z + (1 | site)"
        assertFormulaError(f, message: "unexpected character '$'; a formula contains variable names, numbers, parentheses and the operators ~ + - * / ^ : |",
                           position: 6, term: "$")
        let g = "y ~ x + (1 | site) z"
        assertFormulaError(g, message: "missing operator between ) and z; join terms with + (or : and * for interactions)",
                           position: at("z", g), term: "z")
        let h = "y ~ x > 2 + (1 | site)"
        assertFormulaError(h, message: "a comparison must be written inside I() to be a term, e.g. I(age > 65)",
                           position: at(">", h), term: ">")
        let k = "y ~ x + 2L + (1 | site)"
        assertFormulaError(k, message: "malformed number 2L; write numbers like 2, 0.5 or 1e-3", position: 8, term: "2L")
    }

    func testErrorNumbersAsTerms() {
        let f = "y ~ 2 + x + (1 | site)"
        assertFormulaError(f, message: "the number 2 cannot be a term; only 0 and 1 (drop or keep the intercept) may appear outside I(); for arithmetic use I(), e.g. I(2 * x)",
                           position: 4, term: "2")
        let g = "y ~ x:1 + (1 | site)"
        assertFormulaError(g, message: "the intercept (1) cannot be part of an interaction; add or remove it with + 1 or - 1",
                           position: 6, term: "1")
    }

    func testErrorPowerOutsideI() {
        let f = "y ~ (a + b)^2 + (1 | site)"
        assertFormulaError(f, message: "the power operator ^ in (a + b)^2 is not supported outside I(): write I(x^2) for a squared covariate, and write interactions out with * or : instead of (a + b)^2",
                           position: at("^", f), term: "^")
    }

    func testErrorDot() {
        let f = "y ~ . + (1 | site)"
        assertFormulaError(f, message: "'.' (all other variables) is not supported; list the variables by name, e.g. y ~ age + sex + (1 | site)",
                           position: 4, term: ".")
    }

    func testErrorBarInFixedPart() {
        let f = "y ~ x:(1 | site)"
        assertFormulaError(f, message: "'|' cannot be used in the fixed part: random-effects terms are added on their own with +, e.g. y ~ x + (1 | site)",
                           position: at("|", f), term: "|")
        let g = "y ~ log(a | b) + (1 | site)"
        assertFormulaError(g, message: "'|' cannot be used inside log(); random-effects terms are added to the right side, e.g. + (1 | site)",
                           position: at("|", g), term: "|")
    }

    func testErrorGroupingExpression() {
        let f = "y ~ x + (1 | log(g))"
        assertFormulaError(f, message: "the grouping factor log(g) must be a variable or variables joined by : or / (e.g. site, site:ward, site/ward); to group by an expression, create that variable at the sites",
                           position: at("log", f), term: "log(g)")
    }

    /// No random-effects term: a flat model (R's lm or glm), no longer an error.
    func testFormulaWithoutRandomTermIsFlat() throws {
        let f = try Formula.parse("y ~ x + z")
        XCTAssertTrue(f.random.isEmpty)
    }

    func testErrorSiteReserved() throws {
        let f = "y ~ site + (1 | site)"
        assertFormulaError(f, message: "'site' is reserved: it stands for the site itself and can only be a grouping factor, e.g. (1 | site) or (1 | site:ward)",
                           position: 4, term: "site")
        // site may stand anywhere in an interaction: ward:site is site:ward
        let g = try spec("y ~ x + (1 | ward:site)", vars(num("y"), num("x"), text("ward", abc)))
        XCTAssertEqual(g.terms.map(\.grouping), [.withinSite(["ward"])])
        XCTAssertEqual(g.terms.map(\.name), ["ward:site"])
        let k = "y ~ x + (site | g)"
        assertFormulaError(k, message: "'site' is reserved: it stands for the site itself and can only be a grouping factor, e.g. (1 | site) or (1 | site:ward)",
                           position: at("site", k), term: "site")
    }

    func testErrorOtherStructure() {
        let f = "y ~ x + (0 | g)"
        assertFormulaError(f, message: "the random-effects term (0 | g) has no columns; write (1 | g) for a random intercept",
                           position: 9, term: "0 | g")
        let g = "y ~ a/b + (1 | site)"
        assertFormulaError(g, message: "the nesting operator / in a/b is only supported in grouping factors, e.g. (1 | site/ward); in the fixed part write a + a:b, or I(a/b) for a ratio",
                           position: at("/", g), term: "/")
        let h = "y ~ x + cbind(a, b) + (1 | site)"
        assertFormulaError(h, message: "cbind(successes, failures) is only allowed as the response, on the left of ~",
                           position: at("cbind", h), term: "cbind(a, b)")
        let k = "y ~ x:offset(z) + (1 | site)"
        assertFormulaError(k, message: "offset() cannot be part of an interaction; add it on its own: + offset(...)",
                           position: at("offset", k), term: "offset(z)")
        let m = "y ~ x + (1 + offset(z) | g)"
        assertFormulaError(m, message: "offset() cannot be used inside a random-effects term; add it to the fixed part: + offset(...)",
                           position: at("offset", m), term: "offset(z)")
        let n = "y ~ -x + (1 | site)"
        assertFormulaError(n, message: "a minus sign before a term is not supported: -1 removes the intercept, a - b removes term b, and a negated covariate is written I(-x)",
                           position: 4, term: "-")
        let o = "y ~ x - (1 | g)"
        assertFormulaError(o, message: "a random-effects term cannot be subtracted; remove '- (1 | g)'",
                           position: at("|", o), term: "1 | g")
        let p = "y ~ y + x + (1 | site)"
        assertFormulaError(p, message: "the response y also appears on the right side of ~; remove it from the terms",
                           position: 4, term: "y")
        let q = "y ~ x %in% g + (1 | site)"
        assertFormulaError(q, message: "the operator %in% is not supported; supported operators are + - * : and ^ inside I(); nesting is written a + a:b",
                           position: at("%", q), term: "%in%")
        let r = "y ~ factor(x + 1) + (1 | site)"
        assertFormulaError(r, message: "factor() takes a single variable name, e.g. factor(period)",
                           position: 4, term: "factor(x + 1)")
        let s = "y ~ I(a:b) + (1 | site)"
        assertFormulaError(s, message: "':' is not arithmetic; inside I() use * to multiply", position: at(":", s), term: ":")
        let t = "y ~ log() + (1 | site)"
        assertFormulaError(t, message: "log() takes exactly one argument, e.g. log(x)", position: 4, term: "log()")
    }

    // MARK: Errors: resolution against the variables

    func testErrorUnknownVariable() {
        let v = vars(num("use01"), num("age"))
        let f = "use01 ~ agee + (1 | site)"
        assertFormulaError(f, v, message: "unknown variable agee: no site reported a variable of that name; did you mean age?",
                           position: 8, term: "agee")
        let g = "use01 ~ age + (1 | district)"
        assertFormulaError(g, v, message: "unknown variable district: no site reported a variable of that name; check the spelling against the variables the sites describe",
                           position: at("district", g), term: "district")
    }

    func testErrorFactorLevelsUnknown() {
        let v = vars(num("y"), num("id"), text("name", nil), text("one", ["A"]))
        let f = "y ~ factor(id) + (1 | site)"
        assertFormulaError(f, v, message: "levels of id are not known (too many distinct values); a factor needs its list of levels: use id as a grouping factor, e.g. (1 | id), or recode it at the sites",
                           position: 4, term: "factor(id)")
        let g = "y ~ name + (1 | site)"
        assertFormulaError(g, v, message: "levels of name are not known (too many distinct values); a factor needs its list of levels: use name as a grouping factor, e.g. (1 | name), or recode it at the sites",
                           position: 4, term: "name")
        let h = "y ~ one + (1 | site)"
        assertFormulaError(h, v, message: "one has 1 level (\"A\") at the sites; a factor needs at least two levels: remove the term",
                           position: 4, term: "one")
        // A text variable with unknown levels is fine as a grouping factor.
        XCTAssertNoThrow(try Formula.resolve(Formula.parse("y ~ 1 + (1 | site:name)"), variables: v, family: .gaussian, link: .identity))
    }

    func testErrorTextInArithmetic() {
        let v = vars(num("y"), text("sex", ["F", "M"]))
        let f = "y ~ I(sex * 2) + (1 | site)"
        assertFormulaError(f, v, message: "sex is a text variable and cannot be used in arithmetic (in I(sex * 2)); use it as a factor term (sex or factor(sex)), or recode it as a number at the sites",
                           position: 6, term: "sex")
        let g = "y ~ log(sex) + (1 | site)"
        assertFormulaError(g, v, message: "sex is a text variable and cannot be used in arithmetic (in log(sex)); use it as a factor term (sex or factor(sex)), or recode it as a number at the sites",
                           position: 8, term: "sex")
    }

    func testErrorResponses() {
        let v = vars(num("n"), num("k"), text("out", ["a", "b", "c"]), text("yn", ["no", "yes"]))
        let f = "cbind(k, n - k) ~ 1 + (1 | site)"
        assertFormulaError(f, v, message: "cbind(successes, failures) is a binomial response, but the family is gaussian; fit it with family binomial",
                           position: 0, term: "cbind(k, n - k)")
        assertFormulaError("yn ~ 1 + (1 | site)", v,
                           message: "the response yn is a text variable; a gaussian response must be numeric (a text response with two levels needs family binomial)",
                           position: 0, term: "yn")
        assertFormulaError("out ~ 1 + (1 | site)", v, family: .binomial,
                           message: "the response out is a text variable with 3 levels; a binomial response needs exactly two levels (the second counts as success), a 0/1 variable or cbind(successes, failures)",
                           position: 0, term: "out")
        assertFormulaError("factor(yn) ~ 1 + (1 | site)",
                           message: "factor() cannot be the response; a binomial response is a 0/1 variable, a two-level text variable or cbind(successes, failures)",
                           position: 0, term: "factor(yn)")
        assertFormulaError("cbind(k) ~ 1 + (1 | site)",
                           message: "cbind() takes two arguments: cbind(successes, failures)",
                           position: 0, term: "cbind(k)")
    }

    func testErrorDescriptionHasCaret() {
        do {
            _ = try Formula.parse("y ~ bs(x, 2) + (1 | site)")
            XCTFail("expected an error")
        } catch let e as FormulaError {
            XCTAssertEqual(e.description, """
                formula error at position 4: function bs is not supported; supported: factor, as.factor, relevel, I, log, log1p, exp, sqrt, abs, pmin, pmax, scale, poly, ns, cut, offset, cbind, missing
                  y ~ bs(x, 2) + (1 | site)
                      ^^
                """)
        } catch {
            XCTFail("\(error)")
        }
    }

    func testModelResolverAndSpecRoundTrip() throws {
        let v = vars(num("y"), num("x"), text("f", abc))
        let s = try ModelResolver(variables: v).resolve("y ~ x*f + (x | site/f)", family: .gaussian, link: .identity)
        let data = try JSONEncoder().encode(s)
        XCTAssertEqual(try JSONDecoder().decode(ModelSpec.self, from: data), s)
        XCTAssertEqual(names(s.fixed), ["(Intercept)", "x", "fb", "fc", "x:fb", "x:fc"])
    }
}

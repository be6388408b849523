import XCTest
@testable import Coordinator
import Math
import Protocol

/// `fedmix explain`: the text is a pure function of the model and the
/// number of sites, with every answer's aggregates, their dimensions and
/// the largest number of rounds; and `--filter` resolves into the
/// expression the sites evaluate.
final class ExplainTests: XCTestCase {
    let variables: [String: VariableInfo] = [
        "y": VariableInfo(name: "y", kind: .numeric),
        "x": VariableInfo(name: "x", kind: .numeric),
        "age": VariableInfo(name: "age", kind: .numeric),
        "died": VariableInfo(name: "died", kind: .numeric, levels: ["0", "1"]),
        "sex": VariableInfo(name: "sex", kind: .text, levels: ["F", "M"]),
        "ward": VariableInfo(name: "ward", kind: .text, levels: nil),
        "site": VariableInfo(name: "site", kind: .text, levels: ["A", "B"]),
    ]

    func spec(_ formula: String, family: Family = .gaussian) throws -> ModelSpec {
        try Formula.resolve(Formula.parse(formula), variables: variables, family: family, link: Analysis.defaultLink(family))
    }

    func testSiteGroupedLMMSendsItsSumsOnceInTwoRounds() throws {
        let t = Explain.text(spec: try spec("y ~ x + sex + (1 + x | site)"), sites: 4)
        XCTAssertTrue(t.contains("Fixed     p = 3: (Intercept), x, sexM"), t)
        XCTAssertTrue(t.contains("Sites     4;"), t)
        XCTAssertTrue(t.contains("[X y]ᵀ[X y] 4×4, Zᵀ[X y] 2×4, ZᵀZ 2×2"), t)
        XCTAssertTrue(t.contains("(28 numbers); the coordinator then iterates alone: no evaluate rounds"), t)
        XCTAssertTrue(t.contains("  2. finalize"), t)
        XCTAssertTrue(t.contains("the conditional modes of its own site-level effects (2: (Intercept), x)"), t)
        XCTAssertTrue(t.contains("its own no-pooling estimate of the same effects (2)"), t)
        XCTAssertTrue(t.contains("At most 2 rounds per site after describe;"), t)
        XCTAssertTrue(t.contains("every level of sex and every 0/1 column"), t)
        XCTAssertTrue(t.contains("(sexM)"), t)
        XCTAssertEqual(t, Explain.text(spec: try spec("y ~ x + sex + (1 + x | site)"), sites: 4), "a pure function")
    }

    /// scale() and poly() add their two moments rounds before the fit, with
    /// what each sends, and two to the most rounds.
    func testMomentsRoundsAreShown() throws {
        let plain = Explain.text(spec: try spec("y ~ x + age + (1 | site)"), sites: 4)
        XCTAssertFalse(plain.contains("moments"), plain)
        XCTAssertTrue(plain.contains("At most 2 rounds per site after describe"), plain)
        let t = Explain.text(spec: try spec("y ~ scale(x) + poly(age, 2) + (1 | site)"), sites: 4)
        XCTAssertTrue(t.contains("moments: 2 prepare rounds before the fit, for scale(x), poly(age, 2)"), t)
        // First round: 1, x, age and the response (w = 4): 4·5 + 1 numbers; second: 1, x−m, (age−m), (age−m)² (w = 5).
        XCTAssertTrue(t.contains("argument (21 numbers)"), t)
        XCTAssertTrue(t.contains("(31 numbers)"), t)
        XCTAssertTrue(t.contains("At most 4 rounds per site after describe"), t)
    }

    func testWithinSiteLMMSendsSchurComplementsEachRound() throws {
        let t = Explain.text(spec: try spec("y ~ x + (1 | site) + (1 | ward)"), sites: 3)
        // p = 2, m = 2: a jet has 1 + 2 + 3 = 6 numbers; 3×3 Schur complement: 54, plus log|L|²: 6.
        XCTAssertTrue(t.contains("receives θ (2 numbers)"), t)
        XCTAssertTrue(t.contains("(2) and Hessian (3) in θ: 60 numbers"), t)
        XCTAssertTrue(t.contains("2 … 101. evaluate, at most 100 rounds"), t)
        XCTAssertTrue(t.contains("103. finalize"), t)
        XCTAssertTrue(t.contains("At most 103 rounds per site after describe"), t)
        XCTAssertTrue(t.contains("(here: the conditional modes of site:ward)") || t.contains("(here: the conditional modes of ward)"), t)
        XCTAssertTrue(t.contains("the conditional modes of its own site-level effects (1: (Intercept))"), t)
        XCTAssertFalse(t.contains("no-pooling"), t)
        var options = FitOptions()
        options.maxEvaluations = 20
        XCTAssertTrue(Explain.text(spec: try spec("y ~ x + (1 | ward)"), sites: 3, options: options).contains("At most 23 rounds"))
    }

    func testGLMMSendsItsObjectiveWithDerivativesInThetaAndBeta() throws {
        let t = Explain.text(spec: try spec("died ~ age + sex + (1 | site)", family: .binomial), sites: 8,
                             options: FitOptions(family: .binomial, nAGQ: 1))
        // m + p = 1 + 3 = 4: 1 + 4 + 10 = 15 numbers.
        XCTAssertTrue(t.contains("receives θ (1) and β (3)"), t)
        XCTAssertTrue(t.contains("(10) in (θ, β): 15 numbers"), t)
        XCTAssertTrue(t.contains("sums over its used rows of each fixed-effects column (3 numbers)"), t)
        XCTAssertTrue(t.contains("102. finalize"), t)
        XCTAssertTrue(t.contains("at least min_cell events and min_cell non-events"), t)
        XCTAssertTrue(t.contains("family binomial, link logit, Laplace"), t)
    }

    func testFilterIsShownAndItsRulesListed() throws {
        var s = try spec("y ~ x + (1 | site)")
        s.filter = try RowFilterParser.parse("age >= 50 & sex == \"F\"", variables: variables)
        let t = Explain.text(spec: s, sites: 2)
        XCTAssertTrue(t.contains("Filter    age >= 50 & sex == \"F\""), t)
        XCTAssertTrue(t.contains("min_rows (filter)"), t)
        XCTAssertTrue(Explain.text(spec: try spec("y ~ x + (1 | site)"), sites: 2).contains("Filter    none"))
    }

    // MARK: --filter

    func testFilterResolvesAgainstTheVariables() throws {
        XCTAssertEqual(try RowFilterParser.parse("age >= 50", variables: variables), .binary(.greaterOrEqual, .variable("age"), .number(50)))
        XCTAssertEqual(try RowFilterParser.parse("sex == 'F'", variables: variables), .indicator("sex", level: "F"))
        XCTAssertEqual(try RowFilterParser.parse("sex != \"F\"", variables: variables),
                       .binary(.equal, .indicator("sex", level: "F"), .number(0)))
        XCTAssertEqual(try RowFilterParser.parse("!(age < 18 | is.na(x)) && ward == ICU", variables: variables),
                       .binary(.and, .binary(.equal, .binary(.or, .binary(.less, .variable("age"), .number(18)), .isMissing("x")), .number(0)),
                               .indicator("ward", level: "ICU")))
        XCTAssertEqual(Explain.expression(try RowFilterParser.parse("!(age < 18 | is.na(x)) & ward == \"ICU\"", variables: variables)),
                       "!(age < 18 | is.na(x)) & ward == \"ICU\"")
        XCTAssertEqual(try RowFilterParser.variableNames("age >= 50 & sex == \"F\" | is.na(x)"), ["age", "sex", "x"])
    }

    func testFilterMistakesAreNamed() {
        func message(_ f: String) -> String {
            do { _ = try RowFilterParser.parse(f, variables: variables); return "parsed" } catch { return "\(error)" }
        }
        XCTAssertEqual(message("age = 50"), "filter \"age = 50\": use == to compare, not =")
        XCTAssertEqual(message("height > 2"), "filter \"height > 2\": unknown variable height: no site describes it (or a site's rules do not allow it)")
        XCTAssertEqual(message("sex > \"F\""), "filter \"sex > \"F\"\": sex is text: compare it with == or != and one of its levels")
        XCTAssertEqual(message("sex == \"X\""), "filter \"sex == \"X\"\": \"X\" is not a level of sex at the sites (levels: F, M)")
        XCTAssertEqual(message("age > \"old\""), "filter \"age > \"old\"\": age is numeric: compare it with a number, not \"old\"")
        XCTAssertEqual(message("(age > 3"), "filter \"(age > 3\": a '(' is not closed")
        XCTAssertEqual(message("age > 3 x"), "filter \"age > 3 x\": unexpected name x after a complete filter")
    }
}

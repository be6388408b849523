import XCTest
import Coordinator
import Protocol
import Math

/// The formula grammar as a table: each row is a formula, resolved against
/// one fixed set of variables, and what it must give: the fixed-effect
/// column names, the random-effects terms (name, grouping, columns), an
/// offset, the response, or the error whose message contains a fragment.
/// Only the public entry points (`Formula.parse`, `Formula.resolve`) are used.
final class FormulaTableTests: XCTestCase {
    /// The variables every row is resolved against, as `describe` would report them.
    static let variables: [String: VariableInfo] = {
        let list = [
            VariableInfo(name: "y", kind: .numeric), VariableInfo(name: "x", kind: .numeric),
            VariableInfo(name: "z", kind: .numeric), VariableInfo(name: "age", kind: .numeric),
            VariableInfo(name: "exposure", kind: .numeric), VariableInfo(name: "w", kind: .numeric),
            VariableInfo(name: "k", kind: .numeric), VariableInfo(name: "n", kind: .numeric),
            VariableInfo(name: "g", kind: .numeric), VariableInfo(name: "patient", kind: .numeric),
            VariableInfo(name: "Reaction", kind: .numeric), VariableInfo(name: "Days", kind: .numeric),
            VariableInfo(name: "Subject", kind: .numeric),
            VariableInfo(name: "period", kind: .numeric, levels: ["1", "2", "3", "4"]),
            VariableInfo(name: "ward", kind: .text, levels: ["a", "b", "c"]),
            VariableInfo(name: "f", kind: .text, levels: ["a", "b", "c"]),
            VariableInfo(name: "sex", kind: .text, levels: ["F", "M"]),
            VariableInfo(name: "id", kind: .text, levels: nil),
        ]
        return Dictionary(uniqueKeysWithValues: list.map { ($0.name, $0) })
    }()

    /// An expected random-effects term.
    struct Term: Equatable, CustomStringConvertible {
        var name: String
        var grouping: Grouping
        var columns: [String]
        init(_ name: String, _ grouping: Grouping, _ columns: [String]) {
            self.name = name; self.grouping = grouping; self.columns = columns
        }
        var description: String { "(\(columns.joined(separator: " + ")) | \(name) \(grouping))" }
    }
    static let intercept = ["(Intercept)"]
    static func site(_ columns: [String] = intercept) -> Term { Term("site", .site, columns) }
    static func within(_ name: String, _ variables: [String], _ columns: [String] = intercept) -> Term {
        Term(name, .withinSite(variables), columns)
    }

    enum Expected {
        /// Fixed-effect names, random terms, and whether the formula has an offset.
        case model(fixed: [String], terms: [Term], offset: Bool = false)
        /// The error's message contains this fragment.
        case error(String)
    }

    struct Row {
        var formula: String
        var family: Family = .gaussian
        var link: Link = .identity
        var expected: Expected
        var line: UInt
        init(_ formula: String, _ expected: Expected, line: UInt = #line) {
            self.init(formula, .gaussian, expected, line: line)
        }
        init(_ formula: String, _ family: Family, _ expected: Expected, line: UInt = #line) {
            self.formula = formula; self.family = family; self.expected = expected; self.line = line
            switch family {
            case .gaussian: link = .identity
            case .binomial: link = .logit
            case .poisson: link = .log
            }
        }
    }

    static let rows: [Row] = [
        // Main effects and the intercept.
        Row("y ~ x + (1 | site)", .model(fixed: ["(Intercept)", "x"], terms: [site()])),
        Row("y ~ 1 + (1 | site)", .model(fixed: ["(Intercept)"], terms: [site()])),
        Row("y ~ x - 1 + (1 | site)", .model(fixed: ["x"], terms: [site()])),
        Row("y ~ 0 + x + (1 | site)", .model(fixed: ["x"], terms: [site()])),
        Row("y ~ -1 + x + z + (1 | site)", .model(fixed: ["x", "z"], terms: [site()])),
        Row("y ~ x + 0 + (1 | site)", .model(fixed: ["x"], terms: [site()])),
        Row("y ~ 0 + (1 | site)", .model(fixed: [], terms: [site()])),
        Row("y ~ x + z - z + (1 | site)", .model(fixed: ["(Intercept)", "x"], terms: [site()])),
        // Interactions: *, :, with factors (R's treatment contrasts and margin rule).
        Row("y ~ x*z + (1 | site)", .model(fixed: ["(Intercept)", "x", "z", "x:z"], terms: [site()])),
        Row("y ~ x:z + (1 | site)", .model(fixed: ["(Intercept)", "x:z"], terms: [site()])),
        Row("y ~ x*z*age - x:z:age + (1 | site)",
            .model(fixed: ["(Intercept)", "x", "z", "age", "x:z", "x:age", "z:age"], terms: [site()])),
        Row("y ~ (x + z)*age + (1 | site)", .model(fixed: ["(Intercept)", "x", "z", "age", "x:age", "z:age"], terms: [site()])),
        Row("y ~ f + (1 | site)", .model(fixed: ["(Intercept)", "fb", "fc"], terms: [site()])),
        Row("y ~ 0 + f + (1 | site)", .model(fixed: ["fa", "fb", "fc"], terms: [site()])),
        Row("y ~ f*x + (1 | site)", .model(fixed: ["(Intercept)", "fb", "fc", "x", "fb:x", "fc:x"], terms: [site()])),
        Row("y ~ x:f + (1 | site)", .model(fixed: ["(Intercept)", "x:fa", "x:fb", "x:fc"], terms: [site()])),
        Row("y ~ f*sex + (1 | site)",
            .model(fixed: ["(Intercept)", "fb", "fc", "sexM", "fb:sexM", "fc:sexM"], terms: [site()])),
        Row("y ~ f:sex + (1 | site)",
            .model(fixed: ["(Intercept)", "fa:sexF", "fb:sexF", "fc:sexF", "fa:sexM", "fb:sexM", "fc:sexM"], terms: [site()])),
        // scale, poly, as.factor, relevel, comparisons, cut, log1p, abs, pmin, pmax.
        Row("y ~ 0 + I(x > 2) + (1 | site)", .model(fixed: ["I(x > 2)FALSE", "I(x > 2)TRUE"], terms: [site()])),
        Row("y ~ I(x >= -1 & x < 2.5) + (1 | site)", .model(fixed: ["(Intercept)", "I(x >= -1 & x < 2.5)TRUE"], terms: [site()])),
        Row("y ~ scale(x) + (1 | site)", .model(fixed: ["(Intercept)", "scale(x)"], terms: [site()])),
        Row("y ~ poly(x, 2)*sex + (1 | site)", .model(fixed: ["(Intercept)", "poly(x, 2)1", "poly(x, 2)2", "sexM", "poly(x, 2)1:sexM", "poly(x, 2)2:sexM"], terms: [site()])),
        Row("y ~ as.factor(sex) + (1 | site)", .model(fixed: ["(Intercept)", "as.factor(sex)M"], terms: [site()])),
        Row("y ~ relevel(f, ref = \"b\") + (1 | site)", .model(fixed: ["(Intercept)", "relevel(f, ref = \"b\")a", "relevel(f, ref = \"b\")c"], terms: [site()])),
        Row("y ~ relevel(f, \"z\") + (1 | site)", .error("z is not a level of f")),
        Row("y ~ cut(x, c(-Inf, 0, 1, Inf)) + (1 | site)",
            .model(fixed: ["(Intercept)", "cut(x, c(-Inf, 0, 1, Inf))(0,1]", "cut(x, c(-Inf, 0, 1, Inf))(1, Inf]"], terms: [site()])),
        Row("y ~ log1p(x) + abs(x - 1) + pmin(x, 2) + pmax(x, 0) + (1 | site)",
            .model(fixed: ["(Intercept)", "log1p(x)", "abs(x - 1)", "pmin(x, 2)", "pmax(x, 0)"], terms: [site()])),
        Row("y ~ pmin(2, x) + (1 | site)", .error("pmin() takes an expression of variables first and a constant second")),
        // factor(), I(), log/exp/sqrt.
        Row("y ~ factor(period) + (1 | site)",
            .model(fixed: ["(Intercept)", "factor(period)2", "factor(period)3", "factor(period)4"], terms: [site()])),
        Row("y ~ factor(sex) + (1 | site)", .model(fixed: ["(Intercept)", "factor(sex)M"], terms: [site()])),
        Row("y ~ I(x^2) + I(x * z) + I(x/2) + I(-x) + (1 | site)",
            .model(fixed: ["(Intercept)", "I(x^2)", "I(x * z)", "I(x/2)", "I(-x)"], terms: [site()])),
        Row("y ~ age + I(age^2) + (1 | site)", .model(fixed: ["(Intercept)", "age", "I(age^2)"], terms: [site()])),
        Row("y ~ log(x) + exp(z) + sqrt(age) + log(x + 1) + (1 | site)",
            .model(fixed: ["(Intercept)", "log(x)", "exp(z)", "sqrt(age)", "log(x + 1)"], terms: [site()])),
        // Offsets: not columns; several are summed.
        Row("y ~ x + offset(log(exposure)) + (1 | site)", .poisson,
            .model(fixed: ["(Intercept)", "x"], terms: [site()], offset: true)),
        Row("y ~ offset(log(exposure)) + offset(w) + x + (1 | site)", .poisson,
            .model(fixed: ["(Intercept)", "x"], terms: [site()], offset: true)),
        // Responses: cbind for binomial counts, a two-level text response.
        Row("cbind(k, n - k) ~ x + (1 | site)", .binomial, .model(fixed: ["(Intercept)", "x"], terms: [site()])),
        Row("sex ~ x + (1 | site)", .binomial, .model(fixed: ["(Intercept)", "x"], terms: [site()])),
        // Random terms: slopes, ||, nesting with / and :, several terms.
        Row("Reaction ~ Days + (Days | Subject)",
            .model(fixed: ["(Intercept)", "Days"], terms: [within("Subject", ["Subject"], ["(Intercept)", "Days"])])),
        Row("y ~ x + (1 + x | site)", .model(fixed: ["(Intercept)", "x"], terms: [site(["(Intercept)", "x"])])),
        Row("y ~ x + (0 + x | g)", .model(fixed: ["(Intercept)", "x"], terms: [within("g", ["g"], ["x"])])),
        Row("y ~ x + (x || g)",
            .model(fixed: ["(Intercept)", "x"], terms: [within("g", ["g"]), within("g", ["g"], ["x"])])),
        Row("y ~ x + (1 + x + z || site)",
            .model(fixed: ["(Intercept)", "x"], terms: [site(), site(["x"]), site(["z"])])),
        Row("y ~ x + (f || g)",
            .model(fixed: ["(Intercept)", "x"], terms: [within("g", ["g"]), within("g", ["g"], ["fa", "fb", "fc"])])),
        Row("y ~ x + (1 | site/ward)",
            .model(fixed: ["(Intercept)", "x"], terms: [within("ward:site", ["ward"]), site()])),
        Row("y ~ x + (1 | site/ward/patient)",
            .model(fixed: ["(Intercept)", "x"],
                   terms: [within("patient:(ward:site)", ["patient", "ward"]), within("ward:site", ["ward"]), site()])),
        Row("y ~ x + (1 | site:ward)", .model(fixed: ["(Intercept)", "x"], terms: [within("site:ward", ["ward"])])),
        Row("y ~ x + (1 | ward:site)", .model(fixed: ["(Intercept)", "x"], terms: [within("ward:site", ["ward"])])),
        Row("y ~ x + (1 | site) + (1 | site:ward)",
            .model(fixed: ["(Intercept)", "x"], terms: [site(), within("site:ward", ["ward"])])),
        Row("y ~ x + (1 | g) + (1 | site)", .model(fixed: ["(Intercept)", "x"], terms: [within("g", ["g"]), site()])),
        Row("y ~ x + (1 | site:id)", .model(fixed: ["(Intercept)", "x"], terms: [within("site:id", ["id"])])),
        Row("y ~ x + (x | site/ward)",
            .model(fixed: ["(Intercept)", "x"], terms: [within("ward:site", ["ward"], ["(Intercept)", "x"]), site(["(Intercept)", "x"])])),
        Row("y ~ x + ((1 | site))", .model(fixed: ["(Intercept)", "x"], terms: [site()])),
        Row("y ~ x:x + (1 | site)", .model(fixed: ["(Intercept)", "x"], terms: [site()])),

        // Malformed input: the parser says what is wrong.
        Row("", .error("the formula has no '~'")),
        Row("y", .error("the formula has no '~'")),
        Row("~ x + (1 | site)", .error("the left side of '~' is empty")),
        Row("y ~", .error("the right side of '~' is empty")),
        Row("y ~ x ~ z + (1 | site)", .error("more than one '~'")),
        Row("y ~ x + ()", .error("empty parentheses")),
        Row("y ~ I() + (1 | site)", .error("I() takes exactly one argument")),
        Row("y ~ x + (1 | 2)", .error("the grouping factor 2 must be a variable")),
        Row("y ~ x + z", .model(fixed: ["(Intercept)", "x", "z"], terms: [])),   // flat: lm / glm
        Row("y ~ (x + (1 | site)", .error("unbalanced parentheses")),
        Row("y ~ x) + (1 | site)", .error("unbalanced parentheses")),
        Row("y ~ x + 1 | site", .error("must be in parentheses")),
        Row("y ~ x + (1 | (x | g))", .error("cannot be nested")),
        Row("y ~ x + ( | site)", .error("the left side of '|' is empty")),
        Row("y ~ x + (1 | )", .error("the right side of '|' is empty")),
        Row("y ~ x + (1 || )", .error("the right side of '||' is empty")),
        Row("y ~ x + (1 | site) +", .error("ends with the operator '+'")),
        Row("y ~ x + * z + (1 | site)", .error("two operators in a row")),
        Row("y ~ x $ z + (1 | site)", .error("unexpected character '$'")),
        Row("y ~ x + (1 | site) z", .error("missing operator")),
        Row("y ~ bs(x, 2) + (1 | site)", .error("function bs is not supported")),
        Row("y ~ ns(x, 2) + (1 | site)", .error("name the knots of ns()")),
        Row("y ~ poly(x, 4) + (1 | site)", .error("the degree of poly() must be 1, 2 or 3")),
        Row("y ~ cut(x, c(0, 1, 2)) + (1 | site)", .error("must start at -Inf and end at Inf")),
        Row("y ~ I(x > 2 + (1 | site)", .error("unbalanced parentheses")),
        Row("y ~ (x + z)^2 + (1 | site)", .error("power operator ^")),
        Row("y ~ . + (1 | site)", .error("'.' (all other variables) is not supported")),
        Row("y ~ 2 + x + (1 | site)", .error("the number 2 cannot be a term")),
        Row("y ~ x + 2L + (1 | site)", .error("malformed number 2L")),
        Row("y ~ x > 2 + (1 | site)", .error("a comparison must be written inside I()")),
        Row("y ~ I(x + (x > 2)) + (1 | site)", .error("a comparison can only be a whole I() term")),
        Row("y ~ I(x > 2) + (1 | site)", .model(fixed: ["(Intercept)", "I(x > 2)TRUE"], terms: [site()])),
        Row("y ~ x/z + (1 | site)", .error("the nesting operator /")),
        Row("y ~ x + (0 | g)", .error("has no columns")),
        Row("y ~ x + (1 | log(g))", .error("the grouping factor log(g) must be a variable")),
        Row("y ~ x - (1 | g)", .error("cannot be subtracted")),
        Row("y ~ -x + (1 | site)", .error("a minus sign before a term is not supported")),
        Row("y ~ x + cbind(k, n) + (1 | site)", .error("only allowed as the response")),
        Row("y ~ x:offset(w) + (1 | site)", .error("offset() cannot be part of an interaction")),
        Row("y ~ x + (1 + offset(w) | g)", .error("offset() cannot be used inside a random-effects term")),
        Row("y ~ factor(x + 1) + (1 | site)", .error("factor() takes a single variable name")),
        Row("y ~ log() + (1 | site)", .error("log() takes exactly one argument")),
        Row("y ~ site + (1 | site)", .error("'site' is reserved")),
        Row("y ~ y + x + (1 | site)", .error("the response y also appears on the right side")),
        // Resolution against the variables.
        Row("y ~ agee + (1 | site)", .error("unknown variable agee")),
        Row("y ~ x + (1 | district)", .error("unknown variable district")),
        Row("y ~ I(sex * 2) + (1 | site)", .error("sex is a text variable and cannot be used in arithmetic")),
        Row("y ~ id + (1 | site)", .error("levels of id are not known")),
        Row("cbind(k, n - k) ~ x + (1 | site)", .error("binomial response, but the family is gaussian")),
        Row("sex ~ x + (1 | site)", .error("the response sex is a text variable")),
        Row("cbind(k) ~ x + (1 | site)", .binomial, .error("cbind() takes two arguments")),
    ]

    func testFormulaTable() {
        var models = 0, errors = 0
        for row in Self.rows {
            let result = Result { try Formula.resolve(Formula.parse(row.formula), variables: Self.variables, family: row.family, link: row.link) }
            switch (row.expected, result) {
            case (.model(let fixed, let terms, let offset), .success(let spec)):
                models += 1
                XCTAssertEqual(spec.formula, row.formula, line: row.line)
                XCTAssertEqual(spec.fixed.map(\.name), fixed, "fixed effects of \(row.formula)", line: row.line)
                let got = spec.terms.map { Term($0.name, $0.grouping, $0.columns.map(\.name)) }
                XCTAssertEqual(got, terms, "random terms of \(row.formula)", line: row.line)
                XCTAssertEqual(spec.offset != nil, offset, "offset of \(row.formula)", line: row.line)
                XCTAssertEqual(spec.thetaCount, terms.reduce(0) { $0 + $1.columns.count * ($1.columns.count + 1) / 2 },
                               "θ count of \(row.formula)", line: row.line)
                XCTAssertEqual([spec.family.rawValue, spec.link.rawValue], [row.family.rawValue, row.link.rawValue], line: row.line)
            case (.model, .failure(let error)):
                XCTFail("\(row.formula): expected a model, got the error \(error)", line: row.line)
            case (.error(let fragment), .failure(let error)):
                errors += 1
                guard let e = error as? FormulaError else {
                    XCTFail("\(row.formula): expected a FormulaError, got \(type(of: error)): \(error)", line: row.line)
                    continue
                }
                XCTAssertTrue(e.message.contains(fragment), "\(row.formula): \"\(e.message)\" does not say \"\(fragment)\"", line: row.line)
                XCTAssertEqual(e.formula, row.formula, line: row.line)
                // The position points into the formula, at the offending term.
                XCTAssertTrue((0...row.formula.count).contains(e.position), "\(row.formula): position \(e.position)", line: row.line)
                if !row.formula.isEmpty {
                    XCTAssertTrue(e.description.contains(row.formula), "the description quotes the formula: \(e.description)", line: row.line)
                }
            case (.error(let fragment), .success(let spec)):
                XCTFail("\(row.formula): expected an error saying \"\(fragment)\", got the model \(spec.fixed.map(\.name)) \(spec.terms.map(\.name))",
                        line: row.line)
            }
        }
        XCTAssertEqual(models + errors, Self.rows.count)
        XCTAssertGreaterThan(models, 30)
        XCTAssertGreaterThan(errors, 30)
    }

    /// The parts of the formula that are not columns: the response and the offset as expressions.
    func testResponsesAndOffsetsResolveToTheirExpressions() throws {
        func resolve(_ f: String, _ family: Family, _ link: Link) throws -> ModelSpec {
            try Formula.resolve(Formula.parse(f), variables: Self.variables, family: family, link: link)
        }
        let counts = try resolve("cbind(k, n - k) ~ x + (1 | site)", .binomial, .logit)
        XCTAssertEqual(counts.response, .binomial(successes: .variable("k"), failures: .binary(.subtract, .variable("n"), .variable("k"))))
        // A two-level text response counts its second level as success.
        XCTAssertEqual(try resolve("sex ~ x + (1 | site)", .binomial, .logit).response, .value(.indicator("sex", level: "M")))
        let rate = try resolve("y ~ x + offset(log(exposure)) + offset(w) + (1 | site)", .poisson, .log)
        XCTAssertEqual(rate.offset, .binary(.add, .unary(.log, .variable("exposure")), .variable("w")))
        XCTAssertEqual(rate.requiredVariables, ["y", "x", "exposure", "w"])
        let deparsed = try resolve("y ~ I(x^2) + log(x + 1) + (1 | site)", .gaussian, .identity)
        XCTAssertEqual(deparsed.fixed.map(\.expr), [.number(1), .binary(.power, .variable("x"), .number(2)),
                                                    .unary(.log, .binary(.add, .variable("x"), .number(1)))])
    }
}

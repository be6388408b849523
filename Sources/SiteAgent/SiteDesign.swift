// A model's design at one site, for every model kind: evaluates the
// specification's column expressions on the site's rows, keeps complete
// cases, indexes the groups of each random-effects factor (site-local: equal
// codes at two sites are different groups), measures the small cells, and
// keeps what the kind's rounds read (an LMM's θ-free sums, a GLMM's rows).

import Foundation
import Math
import Protocol

/// Why a model cannot be evaluated on a site's rows. Messages name variables
/// and rules, never data values: they are sent to the coordinator.
public enum ModelFrameError: Error, Equatable, CustomStringConvertible {
    case unknownVariable(String, dataset: String)
    case notNumeric(String)
    case nonFinite(column: String, rows: Int)
    case siteColumnMismatch(column: String, site: String, rows: Int)
    case noCompleteRows(site: String, rows: Int)
    case unsupported(String)

    public var code: ErrorCode {
        switch self {
        case .unknownVariable: return .unknownVariable
        case .notNumeric: return .wrongVariableType
        case .nonFinite: return .nonFiniteValue
        case .siteColumnMismatch: return .siteColumnMismatch
        case .noCompleteRows: return .noCompleteRows
        case .unsupported: return .unsupported
        }
    }

    public var description: String { description(minCell: 1) }

    /// The message with row counts below `minCell` shown as "fewer than minCell".
    public func description(minCell: Int) -> String {
        func rows(_ n: Int) -> String { n < minCell ? "fewer than \(minCell) rows" : "\(n) row(s)" }
        switch self {
        case .unknownVariable(let v, let d):
            return "variable \"\(v)\" is not in dataset \"\(d)\" at this site; check the spelling or the site's allowed variables"
        case .notNumeric(let v):
            return "variable \"\(v)\" is text here but the model uses it as a number; use it as a factor, or declare its type as numeric in the agent's configuration"
        case .nonFinite(let c, let n):
            _ = n   // the count stays at the site: two such errors could be subtracted
            return "column \"\(c)\" is not finite in some rows (log or sqrt of a negative number, or a division by zero); transform the variable differently"
        case .siteColumnMismatch(let c, let s, let n):
            return "\(rows(n)) have a value in column \"\(c)\" other than this site's name \"\(s)\"; each site's data must hold only its own rows"
        case .noCompleteRows(_, let n):
            return "none of its \(n) rows has every variable the model needs; remove the site from the fit or fix its data"
        case .unsupported(let what):
            return what
        }
    }
}

/// A model's design on one site's rows, built once per session: the complete
/// cases, every column evaluated, each factor's site-local levels, and the
/// small-cell counts the disclosure rules read. A linear model keeps only its
/// θ-free blocks; a generalized one keeps the rows its conditional modes need.
public struct SiteDesign: Sendable {
    public let spec: ModelSpec
    /// Rows the filter selects.
    public let rows: Int
    /// Complete cases among them: the rows the model uses.
    public let used: Int
    /// Missing values per required variable, over the selected rows.
    public let missing: [String: Int]
    /// Levels of each term's grouping factor among used rows (model term order).
    public let groupCounts: [Int]
    /// Small-cell counts of the design, for the site's min_cell rule.
    public let cells: CellCounts
    public let model: Model
    /// A flat model's rows (no random-effects term): a GLM's IRLS steps and
    /// the robust covariance's per-cluster scores read them. Nil for mixed models.
    public let flat: FlatSite?
    /// GEE (the model's `gee`): the flat rows with their clusters, order
    /// values and working correlation. Nil otherwise.
    public let gee: GEESite?
    /// Models with crossed factors: the agreed level indices present among
    /// the used rows, per crossed factor (SiteSummary.crossedLevels).
    public private(set) var crossedLevels: [[Int]]? = nil
    /// GLMMs with crossed factors: the rows as GLMMCrossedSite answers them
    /// (`model` then holds the site-local part alone). Nil otherwise.
    public private(set) var crossedGLMM: GLMMCrossedSite? = nil
    /// LMMs with crossed factors: the fewest used rows any level of a
    /// within-site factor has (a ward, say; the site's own factor aside),
    /// which decides whether the site offers V_k (docs/PRIVACY.md). Nil
    /// without crossed factors or within-site factors.
    public private(set) var smallestOwnLevel: Int? = nil

    /// What a session keeps between rounds.
    public enum Model: Sendable {
        /// The θ-free blocks of [Z X y] and Σ log w over used rows (0 without
        /// prior weights; lme4 subtracts it from the criterion).
        case linear(SiteBlocks, logWeightSum: Double)
        /// The rows, which each evaluation's conditional modes read.
        case generalized(GLMMSite)
    }

    /// A linear model's blocks (nil for a GLMM).
    public var blocks: SiteBlocks? {
        if case .linear(let b, _) = model { return b } else { return nil }
    }
    /// A GLMM's site evaluator (nil for a linear model).
    public var glmm: GLMMSite? {
        if case .generalized(let s) = model { return s } else { return nil }
    }

    /// The model on the rows of `table` that its filter selects (`selection`,
    /// when the caller has already evaluated the filter). An LMM's sums are
    /// streamed (StreamedLinearDesign) unless `streamSiteSums` is false,
    /// which builds them from full-length columns like every other model
    /// (tests compare the two).
    public init(table: DataTable, spec: ModelSpec, dataset: String, selection: [Bool]? = nil, streamSiteSums: Bool = true) throws {
        self.spec = spec
        let family = try Self.family(spec)
        let cases = try CompleteCases(table: table, spec: spec, dataset: dataset, selection: selection)
        rows = cases.rows
        missing = cases.missing
        let rowCount = cases.usedRows.count
        used = rowCount
        if streamSiteSums && StreamedLinearDesign.applies(spec, family: family),
           let streamed = try StreamedLinearDesign(spec: spec, cases: cases) {
            // An LMM's θ-free sums, streamed without full-length copies of the columns.
            groupCounts = streamed.groupCounts
            cells = streamed.cells
            model = .linear(streamed.blocks, logWeightSum: streamed.logWeightSum)
            flat = nil
            gee = nil
            return
        }
        let ev = ExpressionEvaluator(columns: cases.columns, rows: cases.usedRows)
        let fixed = try spec.fixed.map { try ev.evaluate($0.expr, name: $0.name) }
        var columns = zip(spec.fixed.map(\.name), fixed).map { (name: $0, values: $1) }
        let response = try Self.response(spec, family: family, evaluator: ev)
        let weights = try spec.weights.map { try ev.evaluate($0, name: "weights") }
        let offset = try spec.offset.map { try ev.evaluate($0, name: "offset") }
        let groupings = spec.factorGroupings
        let (levels, levelCounts) = cases.factorLevels(spec)
        let crossed = try CrossedColumns(spec, levels: levels)
        groupCounts = spec.terms.map { t in
            let f = groupings.firstIndex(of: t.grouping)!
            return crossed.present(factor: f)?.count ?? levelCounts[f]
        }
        let local = crossed.isEmpty ? nil : crossed.localFactors
        // Nested within-site factors are held level by level (NestedChain): a GLMM's whenever they nest, an LMM's beyond the dense tail's cap.
        let nestedChain = crossed.isEmpty ? Self.nestedChain(spec, levelCounts: levelCounts, levels: levels, isGLMM: family != nil) : nil
        if nestedChain == nil {
            try Self.checkTail(spec.localModel, levelCounts: local.map { $0.map { levelCounts[$0] } } ?? levelCounts)
        }
        // Per factor, the columns of its terms in term order.
        var z: [[[Double]]] = []
        for g in groupings {
            let terms = spec.terms.filter { $0.grouping == g }
            z.append(try terms.flatMap { t in try t.columns.map { try ev.evaluate($0.expr, name: $0.name) } })
            columns += zip(terms.flatMap { t in t.columns.map { "\($0.name) | \(t.name)" } }, z[z.count - 1]).map { ($0, $1) }
        }
        let indicators = Self.indicatorVariables(spec).map { cases.columns[$0]! }
        flat = try Self.flatSite(spec, family: family, fixed: fixed, response: response, weights: weights, offset: offset,
                                 cases: cases, used: rowCount)
        gee = try Self.geeSite(spec, flat: flat, evaluator: ev)
        let thresholds = try ThresholdRules.atoms(spec).map { a in
            (name: ThresholdRules.label(a), values: try ev.evaluate(a, name: "threshold"))
        }
        if let family, let local {
            // Crossed factors (GLMMCrossedSite): the local effects' rows, and
            // each row's crossed level as a leading column.
            guard GLMMCrossedSite.isCanonical(family) else {
                throw ModelFrameError.unsupported("grouping factors crossed with the sites (\(spec.crossedFactors.map(\.variable).joined(separator: ", "))) are fitted for GLMMs with the canonical link only (binomial with logit, poisson with log); link \(spec.link.rawValue) is not supported with them")
            }
            let g = try GLMMRows(response: response, weights: weights, family: family, used: used)
            columns.append(("response", g.y))
            if let offset { columns.append(("offset", offset)) }
            if weights != nil { columns.append(("weights", g.n)) }
            var measured = CellCounts.measure(columns: columns, indicatorVariables: indicators, usedRows: cases.usedRows, outcome: g.outcome, thresholds: thresholds)
            crossed.measure(into: &measured, usedRows: cases.usedRows)
            cells = measured
            let localSpec = spec.localModel
            let data = GLMMSiteData(
                family: family, structure: localSpec.covarianceStructure, siteFactor: localSpec.siteFactorIndex, p: fixed.count,
                x: Self.rowMajor(fixed, rows: rowCount), y: g.y, n: g.n, offset: offset ?? [Double](repeating: 0, count: rowCount),
                levels: local.map { levels[$0] }, levelCounts: local.map { levelCounts[$0] }, z: local.map { Self.rowMajor(z[$0], rows: rowCount) })
            let rowColumns = CrossedRowColumns(factors: crossed.factors.map { f in
                .init(dimension: f.dimension, column: f.rowLevel.map { f.offset + f.rank[$0] * f.dimension }, z: Self.rowMajor(z[f.factor], rows: rowCount))
            }, width: crossed.width)
            let site = GLMMCrossedSite(local: data, crossed: rowColumns, localTheta: spec.localThetaIndices)
            crossedGLMM = site
            model = .generalized(GLMMSite(data))
            crossedLevels = crossed.presentLevels
        } else if let family {
            let g = try GLMMRows(response: response, weights: weights, family: family, used: used)
            // The response obeys the column rules too (min_cell minority, dominance).
            columns.append(("response", g.y))
            if let offset { columns.append(("offset", offset)) }
            if weights != nil { columns.append(("weights", g.n)) }
            cells = CellCounts.measure(columns: columns, indicatorVariables: indicators, usedRows: cases.usedRows, outcome: g.outcome, thresholds: thresholds)
            model = .generalized(GLMMSite(GLMMSiteData(
                family: family, structure: spec.covarianceStructure, siteFactor: spec.siteFactorIndex, p: fixed.count,
                x: Self.rowMajor(fixed, rows: rowCount), y: g.y, n: g.n, offset: offset ?? [Double](repeating: 0, count: rowCount),
                levels: levels, levelCounts: levelCounts, z: z.map { Self.rowMajor($0, rows: rowCount) }, chain: nestedChain)))
        } else {
            // [X y]; the offset is subtracted from the response, and prior
            // weights scale every row of [X y] and Z by √w (DESIGN.md).
            var wcols = fixed + [response.values]
            columns.append(("response", response.values))
            if let offset {
                columns.append(("offset", offset))
                for i in 0..<used { wcols[wcols.count - 1][i] -= offset[i] }
            }
            var logWeightSum = 0.0
            if let w = weights {
                columns.append(("weights", w))
                guard w.allSatisfy({ $0 > 0 }) else {
                    throw ModelFrameError.unsupported("prior weights of a linear mixed model must be positive; some rows have weights of 0 or less")
                }
                let sw = w.map { $0.squareRoot() }
                for j in wcols.indices { for i in 0..<used { wcols[j][i] *= sw[i] } }
                for f in z.indices { for a in z[f].indices { for i in 0..<used { z[f][a][i] *= sw[i] } } }
                for x in w { logWeightSum += Foundation.log(x) }
            }
            var measured = CellCounts.measure(columns: columns, indicatorVariables: indicators, usedRows: cases.usedRows,
                                              outcome: CellCounts.binaryClasses(response.values), thresholds: thresholds)
            if let local {
                // Crossed factors: their levels' effects lead [X y] (unscaled
                // z columns, one set per level present here); the site's own
                // random effects are the local factors'.
                crossed.measure(into: &measured, usedRows: cases.usedRows)
                cells = measured
                let localSpec = spec.localModel
                var builder = SiteBlocksBuilder(structure: localSpec.covarianceStructure, width: crossed.width + wcols.count,
                                                levelCounts: local.map { levelCounts[$0] }, siteFactor: localSpec.siteFactorIndex)
                crossed.add(to: &builder, w: wcols, levels: levels, z: z)
                model = .linear(builder.finish(), logWeightSum: logWeightSum)
                smallestOwnLevel = local.filter { spec.factorGroupings[$0] != .site }.compactMap { f -> Int? in
                    var counts = [Int](repeating: 0, count: levelCounts[f])
                    for l in levels[f] { counts[l] += 1 }
                    return counts.min()
                }.min()
            } else if let chain = nestedChain {
                cells = measured
                model = .linear(SiteBlocks.nested(structure: spec.covarianceStructure, width: wcols.count, levelCounts: levelCounts,
                                                  siteFactor: spec.siteFactorIndex, chain: chain, w: wcols, levels: levels, z: z),
                                logWeightSum: logWeightSum)
            } else {
                cells = measured
                var builder = SiteBlocksBuilder(structure: spec.covarianceStructure, width: wcols.count,
                                                levelCounts: levelCounts, siteFactor: spec.siteFactorIndex)
                builder.addColumns(w: wcols, levels: levels, z: z)
                model = .linear(builder.finish(), logWeightSum: logWeightSum)
            }
            crossedLevels = crossed.isEmpty ? nil : crossed.presentLevels
        }
    }

    /// GEE's rows: the flat rows (the gaussian family too, with the identity
    /// link) and the order variable's values.
    static func geeSite(_ spec: ModelSpec, flat: FlatSite?, evaluator ev: ExpressionEvaluator) throws -> GEESite? {
        guard let g = spec.gee, let flat else { return nil }
        let order = try g.order.map { try ev.evaluate(.variable($0), name: $0) }
        do {
            return try GEESite(rows: flat, family: GLMFamily(spec.family, spec.link), structure: g.correlation, order: order)
        } catch let e as GEEError {
            throw ModelFrameError.unsupported(e.description)
        }
    }

    /// A flat model's rows, with each row's cluster when the model has one
    /// (site-local codes; the site itself is one cluster).
    static func flatSite(_ spec: ModelSpec, family: GLMFamily?, fixed: [[Double]], response: (values: [Double], failures: [Double]?),
                         weights: [Double]?, offset: [Double]?, cases: CompleteCases, used: Int) throws -> FlatSite? {
        guard spec.isFlat else { return nil }
        var y = response.values, n = weights ?? [Double](repeating: 1, count: used)
        if let family { let g = try GLMMRows(response: response, weights: weights, family: family, used: used); y = g.y; n = g.n }
        var clusters: [Int]? = nil, count = 1
        if case .withinSite(let vs)? = spec.cluster {
            (clusters, count) = levelIndex(vs.map { cases.columns[$0]! }, rows: cases.usedRows)
        }
        return FlatSite(family: family, p: fixed.count, x: rowMajor(fixed, rows: used), y: y, n: n,
                        offset: offset ?? [Double](repeating: 0, count: used), clusters: clusters, clusterCount: count)
    }

    /// The GLM family of a generalized model, nil for a linear one.
    static func family(_ spec: ModelSpec) throws -> GLMFamily? {
        guard spec.family != .gaussian else { return nil }
        guard GLMFamily(spec.family, spec.link).isValid else {
            throw ModelFrameError.unsupported("family \(spec.family.rawValue) with link \(spec.link.rawValue) is not supported; use binomial with logit, probit or cloglog, or poisson with log")
        }
        return GLMFamily(spec.family, spec.link)
    }

    /// The response as written: one column, or successes and failures.
    static func response(_ spec: ModelSpec, family: GLMFamily?, evaluator ev: ExpressionEvaluator) throws
        -> (values: [Double], failures: [Double]?) {
        switch spec.response {
        case .value(let e):
            return (try ev.evaluate(e, name: "response"), nil)
        case .binomial(let s, let f):
            guard let family else {
                throw ModelFrameError.unsupported("cbind(successes, failures) is a binomial response: fit it with --family binomial")
            }
            guard family.distribution == .binomial else { throw ModelFrameError.unsupported("cbind(successes, failures) needs family binomial") }
            return (try ev.evaluate(s, name: "successes"), try ev.evaluate(f, name: "failures"))
        }
    }

    /// Columns as one rows × columns row-major array.
    static func rowMajor(_ columns: [[Double]], rows: Int) -> [Double] {
        let r = columns.count
        var out = [Double](repeating: 0, count: rows * r)
        for (a, c) in columns.enumerated() { for i in 0..<rows { out[i * r + a] = c[i] } }
        return out
    }
}

/// A GLMM's response as glm and glmer read it: successes y and trials n
/// (binomial), or counts y and log-likelihood multipliers n (Poisson).
struct GLMMRows {
    var y: [Double]
    var n: [Double]
    /// Binomial: events and non-events in total (the outcome's classes, for min_cell).
    var outcome: (events: Double, nonEvents: Double)?

    init(response: (values: [Double], failures: [Double]?), weights: [Double]?, family: GLMFamily, used: Int) throws {
        y = response.values
        if let failures = response.failures {
            n = zip(y, failures).map { $0 + $1 }
            if zip(y, failures).contains(where: { $0 < 0 || $1 < 0 || $0 != $0.rounded() || $1 != $1.rounded() }) {
                throw ModelFrameError.unsupported("cbind(successes, failures) needs non-negative whole numbers; some rows have other values")
            }
        } else {
            n = [Double](repeating: 1, count: used)
            if family.distribution == .binomial, weights == nil, y.contains(where: { $0 != 0 && $0 != 1 }) {
                throw ModelFrameError.unsupported("a binomial response must be 0/1, a two-level text variable, or cbind(successes, failures); some rows have other values")
            }
        }
        if family.distribution == .poisson, y.contains(where: { $0 < 0 || $0 != $0.rounded() }) {
            throw ModelFrameError.unsupported("a Poisson response must be a non-negative count; some rows have other values")
        }
        // Prior weights: for a binomial 0/1 (or proportion) response, the
        // number of trials; for Poisson, a multiplier of each row's log-likelihood.
        if let w = weights {
            guard w.allSatisfy({ $0 >= 0 }) else {
                throw ModelFrameError.unsupported("prior weights must be non-negative; some rows have negative weights")
            }
            switch family.distribution {
            case .binomial:
                if response.failures != nil {
                    throw ModelFrameError.unsupported("use either cbind(successes, failures) or weights for binomial trials, not both")
                }
                guard y.allSatisfy({ $0 >= 0 && $0 <= 1 }) else {
                    throw ModelFrameError.unsupported("with weights, a binomial response is a proportion between 0 and 1; some rows have other values")
                }
                y = zip(y, w).map { $0 * $1 }
                n = w
            case .poisson, .gaussian:   // gaussian: never a GLMM family
                n = w
            }
        }
        if family.distribution == .binomial {
            let events = y.reduce(0, +)
            outcome = (events, n.reduce(0, +) - events)
        } else {
            outcome = nil
        }
    }
}

extension SiteDesign {
    /// Refuses layouts whose dense tail (the grouping factors other than the
    /// one with the most levels) would be too large to hold at this site.
    static func checkTail(_ spec: ModelSpec, levelCounts: [Int]) throws {
        let td = SiteBlocksBuilder.tailDimension(structure: spec.covarianceStructure, levelCounts: levelCounts, siteFactor: spec.siteFactorIndex)
        guard td <= ProtocolLimits.maxTailDimension else {
            throw ModelFrameError.unsupported("the model's grouping factors other than the one with the most groups have \(td) random effects together at this site and are not nested in one another; at most \(ProtocolLimits.maxTailDimension) such effects are supported (they are held densely). Nest the within-site factors (e.g. site/patient/episode), or group the second factor more coarsely")
        }
    }

    /// The nested chain (finest factor first) when the within-site factors
    /// are nested and either the model is a GLMM or a linear model's dense
    /// tail would exceed its cap; nil otherwise (the dense layout, or
    /// checkTail's refusal). A GLMM's layout never leaves the site and the
    /// chain is the cheaper one at any size (17× at 400 patients per site),
    /// so it takes the chain whenever it can; a linear model's tail within
    /// the cap keeps the dense layout its answer is built from.
    static func nestedChain(_ spec: ModelSpec, levelCounts: [Int], levels: [[Int]], isGLMM: Bool = false) -> [Int]? {
        let s = spec.covarianceStructure, sf = spec.siteFactorIndex
        guard isGLMM || SiteBlocksBuilder.tailDimension(structure: s, levelCounts: levelCounts, siteFactor: sf) > nestedTailThreshold,
              let chain = NestedChain.order(structure: s, levelCounts: levelCounts, siteFactor: sf, levels: levels) else { return nil }
        let rest = (0..<s.factorCount).filter { !chain.contains($0) }.reduce(0) { $0 + levelCounts[$1] * s.factorDimension($1) }
        return rest <= ProtocolLimits.maxTailDimension ? chain : nil
    }

    /// The dense tail's size above which nested factors are held level by
    /// level: ProtocolLimits.maxTailDimension, or lower when the environment
    /// sets FEDMIX_NESTED_TAIL_THRESHOLD (tests and benchmarks use it to run
    /// the chain on small data; the answer is the same either way).
    static var nestedTailThreshold: Int {
        let cap = ProtocolLimits.maxTailDimension
        guard let v = ProcessInfo.processInfo.environment["FEDMIX_NESTED_TAIL_THRESHOLD"].flatMap(Int.init) else { return cap }
        return min(max(v, 0), cap)
    }

    /// Variables the design reads through a level indicator (factors), in first-use order.
    static func indicatorVariables(_ spec: ModelSpec) -> [String] {
        var out: [String] = []
        for e in spec.fixed.map(\.expr) + spec.terms.flatMap({ $0.columns.map(\.expr) }) {
            for (v, _) in e.indicators where !out.contains(v) { out.append(v) }
        }
        return out
    }

    /// Counts the missing values of a column among the `selected` rows and
    /// clears their rows in `complete`.
    static func markMissing(_ c: DataTable.Column, _ complete: inout [Bool], among selected: [Bool]) -> Int {
        var m = 0
        switch c.data {
        case .numeric(let v):
            for i in v.indices where v[i] == nil && selected[i] { m += 1; complete[i] = false }
        case .text(let v):
            for i in v.indices where v[i] == nil && selected[i] { m += 1; complete[i] = false }
        }
        return m
    }

    /// The level of every row in `rows` for the combination of `keyColumns`,
    /// numbered by first appearance, and the number of levels. Two rows are in
    /// the same group when every key column has the same text (`key`) for
    /// them: numbers compare as R prints them.
    static func levelIndex(_ keyColumns: [DataTable.Column], rows: [Int]) -> (index: [Int], count: Int) {
        var codes = [Int](repeating: 0, count: rows.count)
        var count = rows.isEmpty ? 0 : 1
        for (n, c) in keyColumns.enumerated() {
            let (cc, nc) = columnCodes(c, rows: rows)
            if n == 0 { codes = cc; count = nc; continue }
            // Combine with the previous columns' groups, again by first appearance.
            var map: [Int: Int] = [:]
            map.reserveCapacity(max(count, nc))
            for k in codes.indices {
                let key = codes[k] * nc + cc[k]
                if let l = map[key] { codes[k] = l } else { let l = map.count; map[key] = l; codes[k] = l }
            }
            count = map.count
        }
        return (codes, count)
    }

    /// Codes of one column's text (`key`) over `rows`, by first appearance.
    static func columnCodes(_ c: DataTable.Column, rows: [Int]) -> (codes: [Int], count: Int) {
        var codes = [Int](repeating: 0, count: rows.count)
        switch c.data {
        case .text(let v):
            var map: [String: Int] = [:]
            for (k, i) in rows.enumerated() {
                let s = v[i]!
                if let l = map[s] { codes[k] = l } else { let l = map.count; map[s] = l; codes[k] = l }
            }
            return (codes, map.count)
        case .numeric(let v):
            // Integers below 1e15 print as themselves: distinct integers are distinct levels.
            var lo = Double.infinity, hi = -Double.infinity, integral = true
            for i in rows {
                let x = v[i]!
                if !(x == x.rounded() && abs(x) < 1e15) { integral = false; break }
                lo = min(lo, x); hi = max(hi, x)
            }
            if integral && !rows.isEmpty && hi - lo < Double(4 * rows.count + 1024) {
                let base = Int(lo)
                var table = [Int](repeating: -1, count: Int(hi) - base + 1)
                var n = 0
                for (k, i) in rows.enumerated() {
                    let t = Int(v[i]!) - base
                    if table[t] < 0 { table[t] = n; n += 1 }
                    codes[k] = table[t]
                }
                return (codes, n)
            }
            // Distinct values first (−0 is 0), then merge values that print alike.
            var map: [UInt64: Int] = [:]
            var values: [Double] = []
            for (k, i) in rows.enumerated() {
                let x = v[i]! == 0 ? 0 : v[i]!
                if let l = map[x.bitPattern] { codes[k] = l } else {
                    let l = values.count; map[x.bitPattern] = l; values.append(x); codes[k] = l
                }
            }
            if integral { return (codes, values.count) }
            var byText: [String: Int] = [:]
            var merged = [Int](repeating: 0, count: values.count)
            for (p, x) in values.enumerated() {
                let s = RNumberFormat.format(x)
                if let l = byText[s] { merged[p] = l } else { let l = byText.count; byText[s] = l; merged[p] = l }
            }
            if byText.count < values.count { for k in codes.indices { codes[k] = merged[codes[k]] } }
            return (codes, byText.count)
        }
    }

    /// The text identifying a row's group: numbers as R would print them.
    static func key(_ c: DataTable.Column, _ i: Int) -> String {
        switch c.data {
        case .numeric(let v): return RNumberFormat.format(v[i]!)
        case .text(let v): return v[i]!
        }
    }

    static func allVariables(_ spec: ModelSpec) -> [String] {
        var out: [String] = []
        func add(_ e: Expr) { for v in e.variables where !out.contains(v) { out.append(v) } }
        switch spec.response { case .value(let e): add(e); case .binomial(let s, let f): add(s); add(f) }
        spec.fixed.forEach { add($0.expr) }
        spec.terms.forEach { $0.columns.forEach { add($0.expr) } }
        if let f = spec.filter { add(f) }
        return out
    }
}

/// Evaluates column expressions over a set of rows, column at a time.
struct ExpressionEvaluator {
    let columns: [String: DataTable.Column]
    let rows: [Int]

    /// The expression's values, non-finite ones included (row filters).
    func evaluateAllowingNonFinite(_ e: Expr) throws -> [Double] { try eval(e) }

    func evaluate(_ e: Expr, name: String) throws -> [Double] {
        let v = try eval(e)
        let bad = v.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        if bad > 0 { throw ModelFrameError.nonFinite(column: name, rows: bad) }
        return v
    }

    private func eval(_ e: Expr) throws -> [Double] {
        switch e {
        case .number(let x):
            return [Double](repeating: x, count: rows.count)
        case .variable(let v):
            guard case .numeric(let data) = columns[v]!.data else { throw ModelFrameError.notNumeric(v) }
            // The rows are complete in v; were one not, its NaN would be refused as non-finite.
            return data.storage.withUnsafeBufferPointer { values in rows.map { values[$0] } }
        case .indicator(let v, let level):
            switch columns[v]!.data {
            case .text(let data): return rows.map { data[$0]! == level ? 1 : 0 }
            case .numeric(let data):
                // Format each distinct value once.
                var seen: [UInt64: Double] = [:]
                return rows.map { i in
                    let x = data[i]!
                    if let r = seen[x.bitPattern] { return r }
                    let r: Double = RNumberFormat.format(x) == level ? 1 : 0
                    seen[x.bitPattern] = r
                    return r
                }
            }
        case .isMissing(let v):
            let c = columns[v]!
            return rows.map { c.isMissing($0) ? 1 : 0 }
        case .filled(let v, let x):
            guard case .numeric(let data) = columns[v]!.data else { throw ModelFrameError.notNumeric(v) }
            return rows.map { data[$0] ?? x }
        case .unary(let f, let a):
            let x = try eval(a)
            switch f {
            case .log: return x.map { $0 > 0 ? Foundation.log($0) : .nan }
            case .exp: return x.map { Foundation.exp($0) }
            case .sqrt: return x.map { $0 >= 0 ? $0.squareRoot() : .nan }
            case .negate: return x.map { -$0 }
            case .log1p: return x.map { $0 > -1 ? Foundation.log1p($0) : .nan }
            case .abs: return x.map { Swift.abs($0) }
            }
        case .binary(let op, let a, let b):
            let x = try eval(a), y = try eval(b)
            switch op {
            case .add: return zip(x, y).map { $0 + $1 }
            case .subtract: return zip(x, y).map { $0 - $1 }
            case .multiply: return zip(x, y).map { $0 * $1 }
            case .divide: return zip(x, y).map { $0 / $1 }
            case .power: return zip(x, y).map { Foundation.pow($0, $1) }
            case .less: return zip(x, y).map { $0 < $1 ? 1 : 0 }
            case .lessOrEqual: return zip(x, y).map { $0 <= $1 ? 1 : 0 }
            case .greater: return zip(x, y).map { $0 > $1 ? 1 : 0 }
            case .greaterOrEqual: return zip(x, y).map { $0 >= $1 ? 1 : 0 }
            case .equal: return zip(x, y).map { $0 == $1 ? 1 : 0 }
            case .notEqual: return zip(x, y).map { $0 != $1 ? 1 : 0 }
            case .and: return zip(x, y).map { $0 != 0 && $1 != 0 ? 1 : 0 }
            case .or: return zip(x, y).map { $0 != 0 || $1 != 0 ? 1 : 0 }
            case .pmin: return zip(x, y).map { Swift.min($0, $1) }
            case .pmax: return zip(x, y).map { Swift.max($0, $1) }
            }
        }
    }
}


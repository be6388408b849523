// The agent's request handler: answers describe, prepare, evaluate and
// finalize with aggregates of the site's rows. Transport-independent: the
// TLS server and the in-process channel both feed it protocol lines.

import Foundation
import Math
import Protocol
import Synchronization

/// Where a dataset's rows come from.
public enum DatasetSource: Sendable {
    case csv(path: String, types: [String: ColumnType])
    case sqliteTable(path: String, table: String, types: [String: ColumnType])
    case sqliteQuery(path: String, query: String, types: [String: ColumnType])
    case table(DataTable)
}

/// The site's disclosure rules (see docs/PRIVACY.md).
public struct DisclosurePolicy: Sendable, Equatable {
    /// Least number of rows a fit may use at this site.
    public var minRows = 10
    /// Least count reported exactly; smaller counts are shown as "<min_cell".
    public var minCell = 5
    /// Most distinct values of a variable whose levels `describe` lists.
    public var maxListedLevels = 50
    /// Most requests answered within one session.
    public var maxRoundsPerSession = 200
    /// Most model parameters per row used (DataSHIELD's nfilter.glm).
    public var maxParametersPerRow = 0.33
    /// Most sessions per coordinator identity per day.
    public var maxSessionsPerDay = 100
    /// Largest share of a column's sum of squared deviations that one row
    /// may carry (the dominance rule; ExpressionRules.swift).
    public var maxRowShare = 0.5
    /// Whether model expressions must be in the formula language the agent
    /// vouches for (ExpressionRules.swift).
    public var checksExpressions = true
    public init() {}

    /// No thresholds: for `fedmix local`, where every row is already on the
    /// analyst's machine and the agents only reproduce the federated path.
    public static let off: DisclosurePolicy = {
        var p = DisclosurePolicy()
        p.minRows = 1; p.minCell = 0; p.maxListedLevels = 1000; p.maxRoundsPerSession = 100_000
        p.maxParametersPerRow = .infinity; p.maxSessionsPerDay = .max
        p.maxRowShare = .infinity; p.checksExpressions = false
        return p
    }()
}

/// Identity of the peer a request came from (for the audit log and limits).
public struct PeerIdentity: Sendable, Equatable {
    public var subject: String
    public var fingerprint: String
    public init(subject: String, fingerprint: String) { self.subject = subject; self.fingerprint = fingerprint }
    public static let inProcess = PeerIdentity(subject: "in-process", fingerprint: "")
}

public final class SiteService: Sendable {
    public let site: String
    public let siteColumn: String?
    public let policy: DisclosurePolicy
    /// How long an idle session is kept (seconds).
    public let sessionTimeout: Double
    /// Variables that may be used (nil: all) and variables that never may.
    public let allowedVariables: Set<String>?
    public let deniedVariables: Set<String>
    /// Budgets checked before each request's work (limits.*).
    public let limits: AgentLimits
    /// The agent's own log (standard error): the detail of errors whose
    /// answer to the peer leaves out paths, SQL and values.
    public let log: AgentLog
    private let sources: [String: DatasetSource]
    private let tables = Mutex<[String: DataTable]>([:])
    private let sessions = Mutex<[String: Session]>([:])
    /// Sessions each coordinator identity opened in the last 24 hours (max_sessions_per_day).
    private let sessionBudget = SessionBudget()
    /// Row sets of the filtered models answered so far (differencing between filters).
    private let subsetHistory = SubsetHistory()
    /// Level-hash salts answered so far (each may be used once).
    let levelHashSalts = SaltHistory()

    struct Session: Sendable {
        var dataset: String
        var model: ModelSpec
        var fit: SiteDesign
        var patterns: [MissingPattern]
        var rounds: Int
        var lastUsed: Date
        /// Multiple imputation: the draws the session's data were completed
        /// with, and the values imputed per variable.
        var imputations: [ImputationDraw]? = nil
        var observed: [String]? = nil
        var imputed: [String: Int]? = nil
        var imputedMeans: [String: ImputedMeans]? = nil
        /// The prepare asked for Schur complements as their lower triangle (`schur_form`).
        var lowerSchur = false
    }

    public init(site: String, datasets: [String: DatasetSource], siteColumn: String? = "site",
                policy: DisclosurePolicy = DisclosurePolicy(), sessionTimeout: Double = 3600,
                allowedVariables: [String]? = nil, deniedVariables: [String] = [],
                limits: AgentLimits = AgentLimits(), log: AgentLog = AgentLog()) {
        self.site = site; self.sources = datasets; self.siteColumn = siteColumn
        self.limits = limits; self.log = log
        self.policy = policy; self.sessionTimeout = sessionTimeout
        self.allowedVariables = allowedVariables.map(Set.init); self.deniedVariables = Set(deniedVariables)
    }

    /// The service an agent configuration describes.
    public convenience init(config: AgentConfig, log: AgentLog = AgentLog()) {
        self.init(site: config.site, datasets: config.dataSources, siteColumn: config.siteColumn,
                  policy: config.disclosure, sessionTimeout: config.sessionTimeoutSeconds,
                  allowedVariables: config.allowedVariables, deniedVariables: config.deniedVariables,
                  limits: config.limits, log: log)
    }

    /// Whether the site's rules let a variable be used or described.
    public func mayUse(_ variable: String) -> Bool {
        !deniedVariables.contains(variable) && (allowedVariables?.contains(variable) ?? true)
    }

    /// Answers one protocol line with one protocol line. Never throws: every
    /// problem becomes an error answer.
    public func handle(line: String, peer: PeerIdentity = .inProcess) -> String {
        handle(line: line, peer: peer, isCancelled: { false })!
    }

    /// As `handle(line:peer:)`, but gives up (nil) when `isCancelled` says
    /// so before the work or before the answer is encoded: the server sets
    /// it when the peer closed the connection, so nobody's abandoned
    /// request keeps the agent busy.
    public func handle(line: String, peer: PeerIdentity = .inProcess, isCancelled: @Sendable () -> Bool) -> String? {
        handle(read: LineCodec.readRequest(line), peer: peer, isCancelled: isCancelled)
    }

    /// As `handle(line:peer:isCancelled:)` for a line already read (LineCodec.readRequest).
    func handle(read: (id: Int?, request: Result<Request, any Error>), peer: PeerIdentity, isCancelled: @Sendable () -> Bool) -> String? {
        let id = read.id ?? 0
        var reply: Reply
        do {
            let request = try read.request.get()
            if isCancelled() { return nil }
            if case .batch(let b) = request {
                guard let r = answerInProcess(b, peer: peer, isCancelled: isCancelled) else { return nil }
                reply = r
            } else {
                reply = handle(request, peer: peer)
            }
        } catch let e as ProtocolError {
            reply = .error(ErrorReply(code: e.code, fatal: false, message: Self.peerSafe(e)))
        } catch {
            reply = .error(ErrorReply(code: .invalidMessage, fatal: false, message: "the line is not a valid request"))
        }
        if isCancelled() { return nil }
        if case .error(var e) = reply { e.message = Self.bounded(e.message); reply = .error(e) }
        do {
            let line = try LineCodec.encode(reply, id: id)
            // A first evaluation that would take the prepare's answer over the limits goes in a round of its own.
            if case .prepared(var p) = reply, p.firstAnswer != nil, line.utf8.count > min(limits.maxAnswerBytes, limits.maxAuditEntryBytes) {
                p.firstAnswer = nil
                return try LineCodec.encode(.prepared(p), id: id)
            }
            return line
        } catch {
            return (try? LineCodec.encode(Reply.error(ErrorReply(code: .internal, fatal: false,
                message: "the answer could not be encoded (a non-finite number)")), id: id)) ?? "{}"
        }
    }

    public func handle(_ request: Request, peer: PeerIdentity = .inProcess) -> Reply {
        do {
            switch request {
            case .ping: return .pong
            case .describe(let r): return .described(try describe(r))
            case .prepare(let r):
                var p = try prepare(r, peer: peer)
                if let first = r.firstEvaluate { p.firstAnswer = firstAnswer(first, prepared: p, session: r.session, peer: peer) }
                return .prepared(p)
            case .evaluate(let r): return try evaluate(r)
            case .finalize(let r): return .finalized(try finalize(r))
            case .batch:
                // Its lines are answered one by one (handle(line:), AgentServer), each as if alone.
                return .error(ErrorReply(code: .invalidRequest, fatal: false, message: "a batch is answered line by line; send it as a protocol line"))
            }
        } catch let e as SiteError {
            return .error(ErrorReply(code: e.code, fatal: false, message: e.description))
        } catch let e as ModelFrameError {
            return .error(ErrorReply(code: e.code, fatal: false, message: "site \"\(site)\": \(e.description(minCell: policy.minCell))"))
        } catch let e as GLMMError {
            return .error(ErrorReply(code: .glmmFailed, fatal: false, message: "site \"\(site)\": \(e.description)"))
        } catch let e as LinearAlgebraError {
            return .error(ErrorReply(code: .numerical, fatal: false, message: "site \"\(site)\": \(e.description)"))
        } catch {
            // Never the error's own text: it may hold a path, SQL or a value.
            log.event("request_failed", ["site": site, "request": request.typeName, "error": "\(error)"])
            return .error(ErrorReply(code: .internal, fatal: false, message: "site \"\(site)\": the \(request.typeName) request failed at the site; the site's administrator can see why in the agent's log"))
        }
    }

    /// The answer line to a prepare's `first_evaluate`, exactly what the
    /// request would get alone (the same checks, limits and session state;
    /// an error answer included); nil when the site sends θ-free sums (the
    /// fit then asks differently) or when the line would take more than a
    /// quarter of the answer limit (it then comes in a round of its own).
    func firstAnswer(_ first: EvaluateRequest, prepared p: PrepareReply, session: String, peer: PeerIdentity) -> String? {
        guard p.blocks == nil, p.crossedSums == nil, p.crossedLevelForm == nil else { return nil }
        var reply: Reply
        if first.session == session {
            reply = handle(.evaluate(first), peer: peer)
        } else {
            reply = .error(ErrorReply(code: .invalidRequest, fatal: false, message: "first_evaluate must name the session of the prepare that carries it"))
        }
        if case .error(var e) = reply { e.message = Self.bounded(e.message); reply = .error(e) }
        guard let line = try? LineCodec.encode(reply, id: 0),
              line.utf8.count <= min(limits.maxAnswerBytes, limits.maxAuditEntryBytes) / 4 else { return nil }
        return line
    }

    /// A protocol error's text for the peer, without echoing what it sent
    /// (an unknown type names its length only; a decoding detail names the
    /// field, never the value).
    static func peerSafe(_ e: ProtocolError) -> String {
        switch e {
        case .unknownType(let t):
            return "unknown message type (\(t.utf8.count) characters); expected describe, prepare, evaluate, finalize, ping or batch"
        case .invalidMessage(let why):
            if let field = why.range(of: #"^field "[^"]{0,200}""#, options: .regularExpression) {
                return "invalid message: \(why[field]) is not valid"
            }
            return why.count <= 200 ? e.description : "invalid message"
        default:
            return bounded(e.description)
        }
    }

    /// Longest error message sent; quoted names the peer sent are cut to 64
    /// characters, so no answer can echo a long input back into the logs.
    static let maxErrorMessageBytes = 2000

    static func bounded(_ message: String) -> String {
        var out = message
        if let re = try? NSRegularExpression(pattern: #""([^"]{65,})""#) {
            let ns = out as NSString
            for m in re.matches(in: out, range: NSRange(location: 0, length: ns.length)).reversed() {
                let inner = ns.substring(with: m.range(at: 1))
                let replacement = "\"\(inner.prefix(24))…\" (\(inner.utf8.count) bytes, SHA-256 \(SHA256Digest.hex(Array(inner.utf8)).prefix(12)))"
                out = (out as NSString).replacingCharacters(in: m.range, with: replacement)
            }
        }
        if out.utf8.count > maxErrorMessageBytes { out = String(out.prefix(maxErrorMessageBytes / 4)) + "…" }
        return out
    }

    // MARK: describe

    /// Describes a dataset within the disclosure rules: nothing of a dataset
    /// below min_rows; a level (or a numeric value listed as one) is named
    /// only when at least min_cell rows have it, and the others are counted;
    /// a text column whose values are mostly numbers (a numeric column with
    /// unparsable cells) lists no values at all, since its rare values are
    /// exactly the extremes and typos that identify a row.
    func describe(_ r: DescribeRequest) throws -> SiteDescription {
        let table = try load(r.dataset)
        guard table.rowCount == 0 || table.rowCount >= policy.minRows else {
            throw SiteError.disclosure("the dataset has fewer rows than this site's minimum of \(policy.minRows), so nothing of it is described or fitted here (rule min_rows)")
        }
        var vars: [VariableDescription] = []
        let mostlyNumeric = Set(table.mostlyNumericTextColumns.map(\.name))
        let source = sourceKey(r.dataset, rowCount: table.rowCount)
        for c in table.columns where mayUse(c.name) {
            var missing = 0
            var levels: [VariableDescription.Level]? = nil
            var suppressed = 0
            var moments: NumericMoments? = nil
            let distinct: Int
            switch c.data {
            case .numeric(let v):
                // Count by value; format only the values that will be listed.
                let counts = Self.numericCounts(v, listLimit: min(20, policy.maxListedLevels))
                missing = counts.missing
                distinct = counts.distinct
                if let listed = counts.listed {
                    var merged: [(String, Double, Int)] = []
                    for (x, n) in listed {
                        let label = RNumberFormat.format(x)
                        if let last = merged.last, last.0 == label { merged[merged.count - 1].2 += n } else { merged.append((label, x, n)) }
                    }
                    levels = merged.filter { $0.2 >= policy.minCell }.map { .init(level: $0.0, count: disclosed($0.2)) }
                    suppressed = merged.count - levels!.count
                }
                if r.numericSummaries == true { moments = try numericMoments(v, variable: c.name, source: source, rowCount: table.rowCount) }
            case .text(let v):
                var counts: [String: Int] = [:]
                for x in v { if let x { counts[x, default: 0] += 1 } else { missing += 1 } }
                distinct = counts.count
                let mostlyNumbers = policy.minCell > 0 && mostlyNumeric.contains(c.name)
                if distinct <= policy.maxListedLevels && !mostlyNumbers {
                    let listed = counts.keys.filter { counts[$0]! >= policy.minCell }
                    levels = listed.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                        .map { .init(level: $0, count: disclosed(counts[$0]!)) }
                    suppressed = distinct - listed.count
                }
            }
            vars.append(VariableDescription(name: c.name, type: c.isNumeric ? .numeric : .text,
                                            missing: disclosed(missing), distinct: distinct, levels: levels,
                                            suppressedLevels: suppressed > 0 ? suppressed : nil,
                                            nonMissing: moments.map { disclosed($0.n) }, mean: moments?.mean, sd: moments?.sd,
                                            momentsWithheld: moments?.withheld))
        }
        let hashes = try r.levelHashes.map { try levelHashes($0, table: table) }
        return SiteDescription(site: site, dataset: r.dataset, rows: table.rowCount, variables: vars, levelHashes: hashes)
    }

    /// A numeric column's missing values, its distinct values (−0 is 0) and,
    /// when there are at most `listLimit`, each with its count in increasing
    /// order. Tallied over the values' ordered keys (ValueTally) rather than
    /// in a dictionary of counts: a continuous column of 10 million rows
    /// needs 160 MB here, not a table of 10 million entries (several hundred MB).
    static func numericCounts(_ v: NumericValues, listLimit: Int) -> (missing: Int, distinct: Int, listed: [(value: Double, count: Int)]?) {
        var keys: [UInt64] = []
        keys.reserveCapacity(v.count)
        for x in v { if let x { keys.append(RadixSort.orderedKey(x == 0 ? 0 : x)) } }
        let tally = keys.withUnsafeMutableBufferPointer { ValueTally.tally($0, listLimit: listLimit) }
        return (v.count - keys.count, tally.distinct,
                tally.listed?.map { (RadixSort.double(orderedKey: $0.key), $0.count) })
    }

    struct NumericMoments { var n: Int; var mean: Double?; var sd: Double?; var withheld: String? }

    /// A numeric variable's non-missing count, and its mean and SD when the
    /// rules allow: at least min_rows (and min_cell, and 2) values, and its non-missing rows
    /// either answered with moments before (the same answer again) or
    /// differing by none or at least min_rows from every row set answered
    /// before. Those rows are then remembered under the variable, so that a
    /// later model reading it cannot use rows a few short of them
    /// (`checkMomentDifferencing`). Never a minimum, maximum or single value.
    func numericMoments(_ v: NumericValues, variable: String, source: String, rowCount: Int) throws -> NumericMoments {
        let present = v.compactMap { $0 }
        let n = present.count
        // n itself is sent exactly with them (pooling needs it), so never below min_cell either.
        guard n >= max(policy.minRows, policy.minCell, 2) else { return NumericMoments(n: n, withheld: "min_rows") }
        let rows = RowSet(v.map { $0 != nil })
        let key = Self.momentsKey(source, variable)
        let m = policy.minRows
        if !subsetHistory.contains(rows, source: key), m > 1 {
            for s in [source, key] {
                if let d = subsetHistory.closestDifference(rows, source: s), d < m { return NumericMoments(n: n, withheld: "differencing") }
            }
        }
        // Two passes: the mean, then squared deviations from it.
        let mean = present.reduce(0, +) / Double(n)
        var ss = 0.0
        for x in present { ss += (x - mean) * (x - mean) }
        let sd = (ss / Double(n - 1)).squareRoot()
        guard mean.isFinite, sd.isFinite else { return NumericMoments(n: n, withheld: "not_finite") }
        try subsetHistory.remember([rows], source: key)
        return NumericMoments(n: n, mean: mean, sd: sd)
    }

    /// Where the rows behind a variable's describe moments are remembered.
    static func momentsKey(_ source: String, _ variable: String) -> String { source + "#moments:" + variable }

    /// A model's sums over its rows read each of its numeric variables over
    /// those rows; if describe sent that variable's moments over rows a few
    /// more, the difference would describe the few. Refused like any other
    /// differencing.
    func checkMomentDifferencing(_ usedRows: [Int], variables: [String], table: DataTable, source: String) throws {
        let m = policy.minRows
        guard m > 1 else { return }
        let used = RowSet(indices: usedRows, rowCount: table.rowCount)
        for name in Set(variables).sorted() {
            guard let c = table.column(named: name), case .numeric(let v) = c.data else { continue }
            let key = Self.momentsKey(source, name)
            let set = used.intersection(RowSet(v.map { $0 != nil }))
            if let d = subsetHistory.closestDifference(set, source: key), d < m {
                throw SiteError.disclosure("the rows this model uses at this site differ from the rows behind the mean and SD that describe sent for \"\(name)\" by fewer than \(m) rows, so the difference of the two answers would describe those patients (rule min_rows, differencing). A variable missing in a few rows usually causes this: leave it out, or fill it (--missing-indicator), so that the model uses all of \"\(name)\"'s rows")
            }
        }
    }

    /// A count as it may be disclosed: zero and counts ≥ min_cell exactly, others as "<min_cell".
    func disclosed(_ n: Int) -> DisclosedCount {
        (n == 0 || n >= policy.minCell) ? .exact(n) : .below(policy.minCell)
    }

    // MARK: prepare / evaluate / finalize

    /// Sessions opened earlier (from the audit log at start-up), so that
    /// restarting the agent does not reset max_sessions_per_day.
    public func seedSessionStarts(_ starts: [(identity: String, time: Date)]) {
        sessionBudget.seed(starts)
    }

    func prepare(_ r: PrepareRequest, peer: PeerIdentity = .inProcess) throws -> PrepareReply {
        if let existing = sessions.withLock({ $0[r.session] }) {
            guard existing.model == r.model, existing.dataset == r.dataset, existing.imputations == r.imputations, existing.observed == r.observed else {
                throw SiteError.sessionConflict(r.session)
            }
            return reply(for: r.session, existing.fit, patterns: existing.patterns, imputed: existing.imputed, imputedMeans: existing.imputedMeans)
        }
        try validate(model: r.model)
        // Every new session counts, answered or refused: refusals are answers too.
        guard sessionBudget.open(peer.fingerprint, limit: policy.maxSessionsPerDay) else {
            throw SiteError.disclosure("this coordinator's certificate has opened the \(policy.maxSessionsPerDay) sessions it may open in 24 hours (rule max_sessions_per_day)")
        }
        for v in SiteDesign.allVariables(r.model) + r.model.requiredVariables where !mayUse(v) {
            throw SiteError.disclosure("variable \"\(v)\" may not be used at this site (rules allowed_variables / denied_variables)")
        }
        try checkExpressions(r.model)
        var table = try load(r.dataset)
        let asObserved = table
        if let refusal = RequestCost.prepare(r.model, rows: table.rowCount).refusal(limits, what: "prepare") { throw refusal }
        var imputed: [String: Int]? = nil
        var imputedMeans: [String: ImputedMeans]? = nil
        if let draws = r.imputations {
            let done = try impute(draws, observed: r.observed ?? [], table: table, dataset: r.dataset)
            table = done.table
            imputed = done.imputed.mapValues(\.count)
            imputedMeans = disclosedMeans(done.imputed, table: try load(r.dataset))
        }
        var selection: [Bool]? = nil
        var filtered: RowSet? = nil
        if let filter = r.model.filter {
            let selected: [Bool]
            do { selected = try RowFilter.select(filter, table: table, dataset: r.dataset) }
            catch ModelFrameError.nonFinite(_, _) { throw SiteError.invalid("the row filter cannot be evaluated") }
            let rows = RowSet(selected)
            try checkFilter(rows, total: table.rowCount, source: sourceKey(r.dataset, rowCount: table.rowCount))
            selection = selected
            filtered = rows
        }
        let fit: SiteDesign
        do {
            fit = try SiteDesign(table: table, spec: r.model, dataset: r.dataset, selection: selection)
        } catch ModelFrameError.noCompleteRows(_, let n) { throw ModelFrameError.noCompleteRows(site: site, rows: n) }
        let used = fit.used
        guard used >= policy.minRows else {
            throw SiteError.disclosure("the model would use \(used < policy.minCell ? "fewer than \(policy.minCell)" : String(used)) rows at this site; the site's minimum is \(policy.minRows) (rule min_rows)")
        }
        // Crossed factors: the Schur complement onto their levels' effects
        // is a fit of those effects too, so each counts as a parameter.
        let crossedEffects = zip(r.model.crossedFactors, fit.crossedLevels ?? []).reduce(0) { $0 + $1.0.columns.count * $1.1.count }
        let parameters = r.model.fixedCount + r.model.thetaCount + (r.model.family == .gaussian ? 1 : 0) + crossedEffects
        guard Double(parameters) <= policy.maxParametersPerRow * Double(used) else {
            throw SiteError.disclosure("the model has \(parameters) parameters; with the rows it would use here the site allows at most \(policy.maxParametersPerRow) per row (rule max_params_per_row)")
        }
        if let why = fit.cells.violation(policy) { throw SiteError.disclosure(why) }
        let imputedRows = imputedRows(r, table: asObserved, usedRows: fit.cells.usedRows)
        if let gee = fit.gee, case .withinSite? = r.model.cluster, gee.members.count < policy.minCell {
            throw SiteError.disclosure("the model's rows form \(gee.members.count) clusters at this site; GEE answers are sums over at least \(policy.minCell) clusters (rule min_cell). Cluster by site, or leave this site out")
        }
        if let gee = fit.gee, gee.structure == .ar1, policy.minCell > 0,
           gee.holdersPerDistance.values.contains(where: { $0 < policy.minCell }) {
            throw SiteError.disclosure("with the ar1 working correlation, some distance between two order values within a cluster occurs in fewer than \(policy.minCell) clusters (pairs, clustered by site) at this site; rounds at several α would separate the residuals of those few pairs (rule min_cell). Use the exchangeable working correlation, or an order variable with regular visits")
        }
        if let gee = fit.gee, gee.structure == .exchangeable, gee.members.count > 1, policy.minCell > 0,
           gee.clustersPerSize.values.contains(where: { $0 < policy.minCell }) {
            throw SiteError.disclosure("with the exchangeable working correlation, some cluster size (rows per cluster) occurs in fewer than \(policy.minCell) clusters at this site; each size enters the sums through its own function of α, so rounds at several α would separate those few clusters (rule min_cell). Use the independence working correlation, or leave this site out")
        }
        if let flat = fit.flat, case .withinSite? = r.model.cluster, r.model.gee == nil, policy.minCell > 0,
           flat.clusterSizes.contains(where: { $0 < policy.minCell }) {
            throw SiteError.disclosure("some clusters of the robust covariance have fewer than \(policy.minCell) rows at this site; a cluster's score would describe those few rows (rule min_cell). Cluster by a coarser variable, or by site")
        }
        try checkMomentDifferencing(fit.cells.usedRows, variables: SiteDesign.allVariables(r.model) + r.model.requiredVariables,
                                    table: table, source: sourceKey(r.dataset, rowCount: table.rowCount))
        try checkDifferencing(fit.cells, filtered: filtered, imputed: imputedRows, source: sourceKey(r.dataset, rowCount: table.rowCount), rowCount: table.rowCount)
        let patterns = missingPatterns(table, variables: r.model.requiredVariables)
        let now = Date()
        sessions.withLock { s in
            s = s.filter { now.timeIntervalSince($0.value.lastUsed) < sessionTimeout }
            s[r.session] = Session(dataset: r.dataset, model: r.model, fit: fit, patterns: patterns, rounds: 1, lastUsed: now,
                                   imputations: r.imputations, observed: r.observed, imputed: imputed, imputedMeans: imputedMeans,
                                   lowerSchur: r.schurForm == WireJetMatrix.lowerForm)
        }
        return reply(for: r.session, fit, patterns: patterns, imputed: imputed, imputedMeans: imputedMeans)
    }

    /// The rows where each variable the model reads was imputed, among its
    /// used rows (checked in checkDifferencing).
    func imputedRows(_ r: PrepareRequest, table: DataTable, usedRows: [Int]) -> [(variable: String, rows: [Int])] {
        guard let draws = r.imputations else { return [] }
        let read = Set(SiteDesign.allVariables(r.model) + r.model.requiredVariables)
        var out: [(variable: String, rows: [Int])] = []
        for v in draws.map(\.variable) where read.contains(v) && !out.contains(where: { $0.variable == v }) && !(r.observed ?? []).contains(v) {
            guard let c = table.column(named: v) else { continue }
            out.append((v, usedRows.filter { c.isMissing($0) }))
        }
        return out
    }

    /// The expression rules of a model (an analysis or an imputation model):
    /// no comparison in the response, weights or offset; the formula
    /// language; comparisons only in the forms the threshold rule reads.
    func checkExpressions(_ model: ModelSpec) throws {
        let design = model.fixed.map(\.expr) + model.terms.flatMap { $0.columns.map(\.expr) }
        var response: [Expr]
        switch model.response { case .value(let e): response = [e]; case .binomial(let a, let b): response = [a, b] }
        response += [model.offset, model.weights].compactMap { $0 }
        if response.contains(where: \.usesLogicalOperators) {
            throw SiteError.disclosure("comparison and logical operators may be used only in a row filter or as a design column of its own (I(x > c)), never in the response, weights or offset (rule min_cell)")
        }
        if policy.checksExpressions {
            try ExpressionRules.check(model)
        } else if design.contains(where: \.usesLogicalOperators) {
            // Comparisons in columns only in the forms the threshold rule reads, whatever the policy.
            try ExpressionRules.checkComparisons(model)
        }
    }

    /// Multiple imputation: the table with the draws' variables completed
    /// (Imputer.swift). Each imputation model obeys the rules of a model
    /// (shape, allowed variables, expression language); what it completes
    /// stays in this session's design.
    func impute(_ draws: [ImputationDraw], observed: [String], table: DataTable, dataset: String) throws
        -> (table: DataTable, imputed: [String: (count: Int, observedMean: Double, imputedMean: Double)]) {
        guard (1...ProtocolLimits.maxImputedVariables).contains(draws.count) else {
            throw SiteError.invalid("a prepare completes 1 to \(ProtocolLimits.maxImputedVariables) variables")
        }
        for d in draws {
            try validate(model: d.model)
            for v in SiteDesign.allVariables(d.model) + d.model.requiredVariables where !mayUse(v) {
                throw SiteError.disclosure("variable \"\(v)\" may not be used at this site (rules allowed_variables / denied_variables)")
            }
            try checkExpressions(d.model)
        }
        // The imputation model's design obeys the cell rules of any model's
        // (min_cell, thresholds, dominance) over the rows it is evaluated on:
        // otherwise I(age > 90) with a large coefficient would make the
        // completed column an indicator of a few patients.
        return try Imputer.completeWithMeans(table, draws: draws, observed: observed, site: site, dataset: dataset) { d, cells in
            if let why = cells.violation(self.policy) { throw SiteError.disclosure("the imputation model of \"\(d.variable)\": \(why)") }
        }
    }

    /// Observed and imputed means of each completed variable, where both are
    /// over at least min_rows and min_cell rows (a mean of fewer would
    /// describe those few patients; the sums they come from are the
    /// differences of answers the differencing rule already admits).
    func disclosedMeans(_ s: [String: (count: Int, observedMean: Double, imputedMean: Double)], table: DataTable) -> [String: ImputedMeans]? {
        let least = max(policy.minRows, policy.minCell, 1)
        var out: [String: ImputedMeans] = [:]
        for (v, x) in s where x.count >= least && x.observedMean.isFinite && x.imputedMean.isFinite {
            let observedCount = table.column(named: v).map { c in (0..<table.rowCount).filter { !c.isMissing($0) }.count } ?? 0
            if observedCount >= least { out[v] = ImputedMeans(observed: x.observedMean, imputed: x.imputedMean) }
        }
        return out.isEmpty ? nil : out
    }

    /// A row filter and its complement must each select at least min_rows
    /// rows, and its rows must equal, or differ by at least min_rows from,
    /// the rows of every filter answered before on the same dataset.
    func checkFilter(_ rows: RowSet, total: Int, source: String) throws {
        let m = policy.minRows
        guard rows.count >= m else {
            throw SiteError.disclosure("the row filter selects fewer than \(m) rows at this site; a filter and the rows it leaves out must each number at least \(m) (rule min_rows)")
        }
        guard total - rows.count >= m else {
            throw SiteError.disclosure("the row filter leaves out fewer than \(m) rows at this site; a filter and the rows it leaves out must each number at least \(m) (rule min_rows)")
        }
        if let d = subsetHistory.closestDifference(rows, source: source), d < m {
            throw SiteError.disclosure("the row filter selects rows that differ from those of an earlier filter on this dataset by fewer than \(m) rows; filters must differ by none or at least \(m) rows, or the difference of two answers would describe a few patients (rule min_rows, differencing)")
        }
    }

    /// The row subsets an answer sums over (the complete cases, each 0/1
    /// column's rows, the filter's rows) must each equal, or differ by at
    /// least min_rows from, every subset answered before from the same
    /// source (SubsetHistory.swift); then they are remembered.
    func checkDifferencing(_ cells: CellCounts, filtered: RowSet?, imputed: [(variable: String, rows: [Int])] = [], source: String, rowCount: Int) throws {
        let m = policy.minRows
        let used = RowSet(indices: cells.usedRows, rowCount: rowCount)
        if m > 1, let d = subsetHistory.closestDifference(used, source: source), d < m {
            throw SiteError.disclosure("the rows this model uses at this site differ from the rows of a model answered before by fewer than \(m) rows, so the difference of the two answers would describe those patients (rule min_rows, differencing). A variable missing in a few rows usually causes this: leave it out, or fill it (--missing-indicator), so that models use the same rows")
        }
        var answered = [used]
        for (name, rows) in cells.binarySubsets {
            let set = RowSet(indices: rows, rowCount: rowCount)
            if m > 1, let d = subsetHistory.closestDifference(set, source: source), d < m {
                throw SiteError.disclosure("the rows where column \"\(name)\" is 1 differ from a set of rows answered before at this site by fewer than \(m) rows, so the difference of the two answers would describe those patients (rule min_rows, differencing)")
            }
            answered.append(set)
        }
        // The rows where a variable is imputed: none or at least min_cell,
        // like a missing(x) indicator's, and a subset like any other.
        // Otherwise a draw with a large shift δ (or intercept) would make the
        // completed column an indicator of those few patients.
        for (variable, rows) in imputed where !rows.isEmpty && rows.count < policy.minCell {
            throw SiteError.disclosure("\"\(variable)\" would be imputed in fewer than \(policy.minCell) of the rows this model uses at this site; a completed column would then single out those patients (rule min_cell). Leave this site out of the analysis (--exclude-sites), or the variable out of the model")
        }
        for (variable, rows) in imputed where !rows.isEmpty {
            let set = RowSet(indices: rows, rowCount: rowCount)
            if m > 1, let d = subsetHistory.closestDifference(set, source: source), d < m {
                throw SiteError.disclosure("the rows where \"\(variable)\" is imputed differ from a set of rows answered before at this site by fewer than \(m) rows, so the difference of the two answers would describe those patients (rule min_rows, differencing)")
            }
            answered.append(set)
        }
        if let filtered { answered.append(filtered) }
        try subsetHistory.remember(answered, source: source)
    }

    /// What identifies a dataset's rows, whatever name it is served under:
    /// the file (or database and query) it is read from, and its row count.
    func sourceKey(_ dataset: String, rowCount: Int) -> String {
        func canonical(_ path: String) -> String { URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL.path }
        let location: String
        switch sources[dataset] {
        case .csv(let path, _)?: location = "csv:" + canonical(path)
        case .sqliteTable(let path, let table, _)?: location = "sqlite:" + canonical(path) + "#table:" + table
        case .sqliteQuery(let path, let query, _)?: location = "sqlite:" + canonical(path) + "#query:" + query
        case .table?, nil: location = "memory:" + dataset
        }
        return location + "#rows:\(rowCount)"
    }

    /// Keeps the subsets answered in the SQLite file at `path`, so that
    /// differencing protection survives a restart.
    public func persistSubsetHistory(at path: String) throws {
        try subsetHistory.persist(at: path)
    }

    /// Counts of each combination of missing model variables, smallest counts suppressed.
    func missingPatterns(_ table: DataTable, variables: [String]) -> [MissingPattern] {
        let columns = variables.compactMap { table.column(named: $0) }
        // Rows missing anything are found column by column; only they are
        // keyed one by one (the complete rows, usually nearly all, are one pattern).
        var incomplete = [Bool](repeating: false, count: table.rowCount)
        for c in columns {
            switch c.data {
            case .numeric(let v):
                v.storage.withUnsafeBufferPointer { values in
                    for i in values.indices where values[i].isNaN { incomplete[i] = true }
                }
            case .text(let v):
                for i in v.indices where v[i] == nil { incomplete[i] = true }
            }
        }
        var counts: [[Bool]: Int] = [:]
        var key = [Bool](repeating: false, count: columns.count)
        var complete = table.rowCount
        for i in 0..<table.rowCount where incomplete[i] {
            for (k, c) in columns.enumerated() { key[k] = c.isMissing(i) }
            counts[key, default: 0] += 1
            complete -= 1
        }
        if complete > 0 { counts[[Bool](repeating: false, count: columns.count)] = complete }
        return counts.map { k, n in
            MissingPattern(missing: zip(columns, k).filter(\.1).map(\.0.name), count: disclosed(n))
        }.sorted { ($0.missing.count, $0.missing.joined(separator: ",")) < ($1.missing.count, $1.missing.joined(separator: ",")) }
    }

    private func reply(for session: String, _ frame: SiteDesign, patterns: [MissingPattern], imputed: [String: Int]?,
                       imputedMeans: [String: ImputedMeans]?) -> PrepareReply {
        var out = reply(for: session, frame, patterns: patterns)
        out.summary.imputed = imputed?.mapValues { disclosed($0) }
        out.summary.imputedMeans = imputedMeans
        return out
    }

    private func reply(for session: String, _ frame: SiteDesign, patterns: [MissingPattern]) -> PrepareReply {
        switch frame.model {
        case .linear(let blocks, let logWeightSum):
            var summary = SiteSummary(rows: frame.rows, used: frame.used,
                                      missing: frame.missing.mapValues { disclosed($0) }, groups: frame.groupCounts,
                                      patterns: patterns)
            if frame.spec.weights != nil { summary.logWeightSum = logWeightSum }
            summary.crossedLevels = frame.crossedLevels
            var out = PrepareReply(session: session, summary: summary,
                                   blocks: frame.spec.localModel.allTermsGroupedBySite ? blocks : nil)
            if offersLowRank(frame) {
                out.crossedSums = SiteBlocks(width: blocks.width, rows: blocks.rows, first: nil, siteFactor: nil, tail: [],
                                             tailDimension: 0, tt: [], tw: [], ww: blocks.ww)
            }
            return out
        case .generalized(let site):
            let data = site.data, p = data.p
            var sums = [Double](repeating: 0, count: p), squares = sums
            for i in 0..<data.rows {
                for j in 0..<p { let v = data.x[i * p + j]; sums[j] += v; squares[j] += v * v }
            }
            var summary = SiteSummary(rows: frame.rows, used: frame.used,
                                      missing: frame.missing.mapValues { disclosed($0) }, groups: frame.groupCounts,
                                      patterns: patterns, columnSums: sums)
            summary.columnSquareSums = squares
            summary.crossedLevels = frame.crossedLevels
            var out = PrepareReply(session: session, summary: summary, blocks: nil)
            out.crossedLevelForm = offersLevelForm(frame)
            return out
        }
    }

    /// The session, charged `rounds` toward max_rounds_per_session (a
    /// batched evaluate is charged one round per θ point: batching saves the
    /// coordinator latency, not the site's answer budget).
    private func session(_ id: String, rounds charged: Int = 1) throws -> Session {
        let now = Date()
        // Charged in place, not copied out and written back (a session holds its model and design).
        let s: Session? = sessions.withLock { all in
            guard let i = all.index(forKey: id) else { return nil }
            guard now.timeIntervalSince(all.values[i].lastUsed) < sessionTimeout else { all.remove(at: i); return nil }
            all.values[i].rounds += charged
            all.values[i].lastUsed = now
            return all.values[i]
        }
        guard let s else { throw SiteError.unknownSession(id) }
        guard s.rounds <= policy.maxRoundsPerSession else {
            throw SiteError.disclosure("session has used its \(policy.maxRoundsPerSession) rounds (rule max_rounds_per_session)")
        }
        return s
    }

    /// Whether a crossed LMM with within-site terms is answered in the
    /// low-rank form (A_k at prepare, V_kᵀ per θ): only when every level of
    /// every within-site factor has at least min_cell rows, since V_k's rows
    /// are per-level sums (docs/PRIVACY.md, "Crossed factors with
    /// within-site terms"); otherwise the dense Schur complement, as before.
    func offersLowRank(_ frame: SiteDesign) -> Bool {
        guard frame.spec.hasCrossedTerms, !frame.spec.localModel.allTermsGroupedBySite, let b = frame.blocks,
              b.nested == nil, let smallest = frame.smallestOwnLevel else { return false }
        return smallest >= max(1, policy.minCell)
    }

    /// Whether a crossed GLMM is answered in the level form (A_k and V',
    /// GLMMCrossedLevelForm), and with how many own effects m_k (sent at
    /// prepare as `crossed_level_form`): always when every own term is
    /// grouped by the site; with within-site terms (wards) only when every
    /// level of every within-site factor has at least min_cell rows, since
    /// V'V'ᵀ then separates the levels' sums, as V_k does for LMMs
    /// (docs/PRIVACY.md, "GLMMs, level form"); and at most
    /// ProtocolLimits.maxCrossedOwnEffects of them. Nil: the dense form.
    func offersLevelForm(_ frame: SiteDesign) -> Int? {
        guard let site = frame.crossedGLMM else { return nil }
        let m = site.ownEffectCount
        guard m <= ProtocolLimits.maxCrossedOwnEffects else { return nil }
        let bySite = frame.spec.localModel.factorGroupings.map { $0 == .site }
        if let smallest = site.smallestWithinSiteLevel(groupedBySite: bySite), smallest < max(1, policy.minCell) { return nil }
        return m
    }

    func evaluate(_ r: EvaluateRequest) throws -> Reply {
        let s = try session(r.session, rounds: max(1, r.points.count))
        for theta in r.points { try validate(theta: theta, structure: s.model.covarianceStructure) }
        // The site's own random effects: crossed factors' are the coordinator's.
        let structure = s.model.localModel.covarianceStructure
        guard (0...2).contains(r.order) else { throw SiteError.invalid("order must be 0, 1 or 2") }
        if let why = r.problem { throw SiteError.invalid("thetas \(why)") }
        if r.derivatives != nil {
            guard case .generalized = s.fit.model, s.fit.crossedGLMM == nil, s.fit.flat?.family == nil, r.gee == nil, r.crossed == nil else {
                throw SiteError.invalid("derivatives applies to the evaluations of a GLMM without crossed factors; leave it out of this request")
            }
        }
        if let point = r.gee { return try geeStep(r, point: point, session: s) }
        if let points = r.crossed { return try crossedGLMMStep(r, points: points, session: s) }
        if let flat = s.fit.flat, flat.family != nil {
            guard r.thetas == nil else { throw SiteError.invalid("a flat GLM has no θ to evaluate at several points") }
            // A flat GLM: one IRLS step of glm.fit at β (or at the start).
            if let beta = r.beta, !(beta.count == s.model.fixedCount && beta.allSatisfy(\.isFinite)) {
                throw SiteError.invalid("a GLM step needs beta with one finite value per fixed effect, or none for the start")
            }
            if let refusal = RequestCost.glmmEvaluate(s.fit.glmm!.data, order: 0, nAGQ: 1)
                .refusal(limits, what: "evaluation") { throw refusal }
            if let beta = r.beta, let family = flat.family {
                try refuseDominatedWeights(family.largestWeightShare(y: flat.y, n: flat.n, eta: GLMFamily.linearPredictor(x: flat.x, p: flat.p, beta: beta, offset: flat.offset)))
            }
            let step = flat.normalEquations(at: r.beta)
            guard step.deviance.isFinite, step.information.allSatisfy(\.isFinite), step.working.allSatisfy(\.isFinite) else {
                throw GLMMError.nonFinite
            }
            return .glmStep(GLMStepReply(session: r.session, rows: s.fit.used, deviance: step.deviance,
                                         information: step.information, working: step.working))
        }
        switch s.fit.model {
        case .linear(let blocks, _):
            // Cost before work: refused in microseconds, before any allocation.
            // A batched request (thetas) is costed point by point, and its
            // whole answer must still fit the site's answer budget.
            let cost = RequestCost.lmmEvaluate(blocks, structure: structure, order: r.order)
            if let refusal = cost.refusal(limits, what: "evaluation") { throw refusal }
            let points = r.points
            if points.count > 1, Double(points.count) * cost.answerBytes > Double(limits.maxAnswerBytes) {
                throw SiteError.invalid(String(format: "the %d points of this evaluation would need an answer of about %.0f bytes; this site sends at most %d (limits.max_answer_bytes). Ask for fewer points per request", points.count, Double(points.count) * cost.answerBytes, limits.maxAnswerBytes))
            }
            if r.lowRank == true {
                guard offersLowRank(s.fit) else {
                    throw SiteError.invalid("low_rank applies to a linear mixed model with factors crossed with the sites and within-site terms whose every level has at least min_cell rows here, for which this site sent crossed_sums; ask for the Schur complement instead (no low_rank)")
                }
                guard r.thetas == nil else { throw SiteError.invalid("low_rank answers one θ per request; leave out thetas") }
                if let refusal = RequestCost.lmmLowRank(blocks, structure: structure, order: r.order).refusal(limits, what: "evaluation") { throw refusal }
                guard let v = try LMMSite.lowRank(blocks, structure: structure, theta: s.model.localTheta(r.theta), order: r.order) else {
                    throw SiteError.invalid("low_rank is not available for this site's within-site factors")
                }
                return .lowRankContribution(LowRankContributionReply(session: r.session, contribution: v))
            }
            let c = try points.map { try LMMSite.evaluate(blocks, structure: structure, theta: s.model.localTheta($0), order: r.order) }
            return .contribution(ContributionReply(session: r.session, contributions: c, lower: s.lowerSchur))
        case .generalized(let site):
            guard s.fit.crossedGLMM == nil else {
                throw SiteError.invalid("this GLMM has factors crossed with the sites: its rounds send points (θ, β, crossed effects) as `crossed`, answered by glmm_crossed")
            }
            guard r.thetas == nil else { throw SiteError.invalid("thetas (several points per evaluation) applies to linear mixed models only") }
            guard let beta = r.beta, beta.count == s.model.fixedCount, beta.allSatisfy(\.isFinite) else {
                throw SiteError.invalid("a GLMM evaluation needs beta with one finite value per fixed effect")
            }
            let nAGQ = r.nAGQ ?? 1
            guard ProtocolLimits.quadraturePoints.contains(nAGQ) else {
                throw SiteError.invalid("nagq must be between \(ProtocolLimits.quadraturePoints.lowerBound) and \(ProtocolLimits.quadraturePoints.upperBound)")
            }
            if let refusal = RequestCost.glmmEvaluate(site.data, order: r.order, nAGQ: nAGQ)
                .refusal(limits, what: "evaluation") { throw refusal }
            let derivatives = try glmmDerivatives(r)
            let d = site.data
            try refuseDominatedWeights(d.family.largestWeightShare(y: d.y, n: d.n, eta: GLMFamily.linearPredictor(x: d.x, p: d.p, beta: beta, offset: d.offset)))
            let jet = derivatives == .beta ? try site.glmJet(beta: beta, order: r.order)
                                           : try site.evaluate(theta: r.theta, beta: beta, order: r.order, nAGQ: nAGQ)
            return .glmmContribution(GLMMContributionReply(session: r.session, rows: s.fit.used, objective: jet))
        }
    }

    /// The derivatives a GLMM evaluation asks for: all of (θ, β) when
    /// absent; `beta` (the GLM start's) only at θ = 0, where the answer is
    /// the β block of the full one; an unknown choice is refused by name.
    func glmmDerivatives(_ r: EvaluateRequest) throws -> GLMMDerivatives {
        guard let name = r.derivatives else { return .all }
        guard let choice = GLMMDerivatives(rawValue: name) else {
            throw SiteError.invalid("derivatives \"\(name)\" is not a choice this site answers; it answers \(GLMMDerivatives.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        if choice == .beta, !r.theta.allSatisfy({ $0 == 0 }) {
            throw SiteError.invalid("derivatives beta is answered at θ = 0 only (the GLM that starts a GLMM fit); send theta as zeros, or leave out derivatives for the derivatives in (θ, β)")
        }
        return choice
    }

    /// Refuses an answer at a β under which one row would hold more than
    /// max_row_share of the working weights (GLMFamily.largestWeightShare):
    /// the glm step's, the GLMM's and the crossed GLMM's sums would then
    /// mostly describe that row.
    func refuseDominatedWeights(_ share: Double) throws {
        guard share > policy.maxRowShare else { return }
        throw SiteError.disclosure("at the β sent, one row would carry more than \(Int(100 * policy.maxRowShare))% of the working weights of this site's rows (or of a crossed level's rows), so the answer would mostly describe that row (rule max_row_share, dominance). A β far too steep in one column does this")
    }

    /// A round of a GLMM with crossed factors (GLMMCrossedSite): each point's
    /// profiled piece. A round is charged as one toward max_rounds_per_session
    /// when it holds at most one finite-difference stencil of points (what one
    /// order-2 GLMM evaluation reveals as a Hessian), and one more per further
    /// stencil's worth.
    func crossedGLMMStep(_ r: EvaluateRequest, points: [CrossedGLMMPoint], session s: Session) throws -> Reply {
        guard let site = s.fit.crossedGLMM else {
            throw SiteError.invalid("crossed points apply to a session prepared for a GLMM with factors crossed with the sites")
        }
        let n = s.model.thetaCount + s.model.fixedCount, stencil = 2 + 2 * n + n * max(n - 1, 0)
        guard !points.isEmpty, points.count <= ProtocolLimits.maxExtraThetaPoints + 1 + stencil else {
            throw SiteError.invalid("a crossed GLMM round holds between 1 and \(ProtocolLimits.maxExtraThetaPoints + 1 + stencil) points; it has \(points.count)")
        }
        if points.count > stencil { _ = try session(r.session, rounds: (points.count - 1) / stencil) }
        let q = site.crossed.width
        for point in points {
            try validate(theta: point.theta, structure: s.model.covarianceStructure)
            guard point.beta.count == s.model.fixedCount, point.effects.count == q else {
                throw SiteError.invalid("each crossed point needs beta with one value per fixed effect (\(s.model.fixedCount)) and effects with one value per crossed effect at this site's levels (\(q))")
            }
        }
        let form = try crossedForm(r, frame: s.fit)
        let crossedWidth = site.crossed.factors.reduce(0) { $0 + $1.dimension }, own = site.ownEffectCount
        let one = RequestCost.glmmEvaluate(site.local, order: 0, nAGQ: 1)
        let cost = form == .level
            // Per point: per row the products of its Σr crossed and m own z values; per level V's m² solve.
            // Answer: the gradient, A's profile (about Σr per column), V' (m per column) and the profile's starts.
            ? RequestCost(work: Double(points.count) * (one.work + Double(site.local.rows) * Double((crossedWidth + own + 1) * (crossedWidth + own + 1))
                                                            + Double(q * (own + 1) * (own + 1))),
                          answerBytes: Double(points.count) * Double(q * (crossedWidth + own + 2) + 2) * RequestCost.bytesPerNumber + 256)
            : RequestCost(work: Double(points.count) * (one.work + Double(site.local.rows) * Double((q + 1) * (q + 1)) * 2),
                          answerBytes: Double(points.count) * Double(q * (q + 1) / 2 + q + 2) * RequestCost.bytesPerNumber + 256)
        if let refusal = cost.refusal(limits, what: "crossed GLMM round") { throw refusal }
        if form == .level {
            let pieces = try points.map { point -> CrossedGLMMPiece in
                try refuseDominatedWeights(site.largestWeightShare(beta: point.beta, effects: point.effects))
                let p = try site.levelPiece(theta: point.theta, beta: point.beta, effects: point.effects)
                try refuseDominatedWeights(p.largestRowShare)
                return CrossedGLMMPiece(value: p.value, gradient: p.gradient, aStart: p.start, a: p.values, coupling: p.coupling,
                                        ownEffects: p.localDimension, logDet: p.logDet)
            }
            guard pieces.allSatisfy(\.isWellFormed) else { throw GLMMError.nonFinite }
            return .glmmCrossed(CrossedGLMMReply(session: r.session, rows: s.fit.used, pieces: pieces))
        }
        let pieces = try points.map { point in
            try refuseDominatedWeights(site.largestWeightShare(beta: point.beta, effects: point.effects))
            let p = try site.piece(theta: point.theta, beta: point.beta, effects: point.effects)
            try refuseDominatedWeights(p.largestRowShare)
            let q = p.gradient.count
            let upper = (0..<q).flatMap { j in (0...j).map { i in p.hessian[i + j * q] } }
            return CrossedGLMMPiece(value: p.value, gradient: p.gradient, hessian: upper, logDet: p.logDet)
        }
        guard pieces.allSatisfy({ ([$0.value, $0.logDet] + $0.gradient + $0.hessian).allSatisfy(\.isFinite) }) else { throw GLMMError.nonFinite }
        return .glmmCrossed(CrossedGLMMReply(session: r.session, rows: s.fit.used, pieces: pieces))
    }

    /// The form asked for a crossed GLMM round's Hessians: dense when absent;
    /// the level form when the site offers it (`offersLevelForm`); an
    /// unknown form is refused by name, the level form otherwise naming the
    /// rule that withholds it.
    func crossedForm(_ r: EvaluateRequest, frame: SiteDesign) throws -> CrossedGLMMForm {
        guard let name = r.crossedForm else { return .dense }
        guard let form = CrossedGLMMForm(rawValue: name) else {
            throw SiteError.invalid("crossed_form \"\(name)\" is not a form this site answers; it answers \(CrossedGLMMForm.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        if form == .level, offersLevelForm(frame) == nil {
            if let site = frame.crossedGLMM, site.ownEffectCount > ProtocolLimits.maxCrossedOwnEffects {
                throw SiteError.invalid("crossed_form level answers at most \(ProtocolLimits.maxCrossedOwnEffects) own random effects per site; this model has \(site.ownEffectCount) here (its within-site terms' levels), so ask for the dense form")
            }
            throw SiteError.disclosure("crossed_form level with a random-effects term grouped within the site needs every level of that grouping (a ward, say) to have at least \(policy.minCell) rows here, since the answer would separate each level's sums (rule min_cell); this site did not offer it at prepare (no crossed_level_form), so ask for the dense form")
        }
        return form
    }

    /// One GEE round: the site's sums over its clusters at (β, α, φ)
    /// (GEESite.sums), with the corrected meats when the bread is sent.
    func geeStep(_ r: EvaluateRequest, point: GEEPoint, session s: Session) throws -> Reply {
        guard let gee = s.fit.gee else { throw SiteError.invalid("a GEE round (gee) needs a session prepared for GEE (the model's gee)") }
        let p = s.model.fixedCount
        guard let beta = r.beta, beta.count == p, beta.allSatisfy(\.isFinite) else {
            throw SiteError.invalid("a GEE round needs beta with one finite value per fixed effect")
        }
        var bread: Matrix? = nil
        if let b = point.bread {
            guard b.count == p * p else { throw SiteError.invalid("bread must hold p×p = \(p * p) values") }
            bread = Matrix(rows: p, cols: p, data: b)
        }
        if let refusal = RequestCost.geeStep(gee, corrections: bread != nil).refusal(limits, what: "GEE round") { throw refusal }
        let sums: GEESums
        do { sums = try gee.sums(beta: beta, alpha: point.alpha, scale: point.scale, bread: bread) }
        catch let e as GEEError {
            if case .breadBeyondSite = e { throw SiteError.disclosure(e.description + " (rule max_row_share, leverage)") }
            throw SiteError.invalid(e.description)
        }
        // Whatever β, α, φ and bread were sent: no answer mostly describes one
        // cluster (one patient when clusters are patients): its share of the
        // information, which only the design and the coordinator's β, α
        // move. The meat and Σ r² may be dominated by one cluster or row at
        // the honest β (an outcome far from its prediction), like a GLM
        // step's deviance, so they are not checked; a crafted α or β that
        // swamps them swamps the information first.
        if sums.largestClusterShare > policy.maxRowShare {
            throw SiteError.disclosure("at the β, α and scale sent, one cluster would carry more than \(Int(100 * policy.maxRowShare))% of the GEE information Σ DᵀV⁻¹D at this site, so the answer would mostly describe that cluster (rule max_row_share, dominance). A working correlation's α near the edge of its range, or a bread that is not the inverse of the pooled information, does this")
        }
        let numbers = sums.information + sums.score + sums.meat + (sums.meatMD ?? []) + (sums.meatKC ?? [])
            + [sums.pearsonSquares, sums.alphaInformation, sums.alphaCross, sums.alphaFitted]
        guard numbers.allSatisfy(\.isFinite) else { throw GLMMError.nonFinite }
        return .geeStep(GEEStepReply(session: r.session, sums: sums))
    }

    func finalize(_ r: FinalizeRequest) throws -> FinalizeReply {
        let s = try session(r.session)
        try validate(theta: r.theta, structure: s.model.covarianceStructure)
        let structure = s.model.localModel.covarianceStructure
        guard r.beta.count == s.model.fixedCount, r.sigma > 0, r.beta.allSatisfy(\.isFinite) else {
            throw SiteError.invalid("beta must have one finite value per fixed effect and sigma must be positive")
        }
        if let w = r.weightsAt, !(w.count == s.model.fixedCount && w.allSatisfy(\.isFinite)) {
            throw SiteError.invalid("weights_at must have one finite value per fixed effect")
        }
        var reply: FinalizeReply
        switch s.fit.model {
        case .linear(let blocks, _):
            if r.marginal != nil { throw SiteError.invalid("marginal effects apply to GLMMs (binomial or Poisson)") }
            if let refusal = RequestCost.lmmEvaluate(blocks, structure: structure, order: 0)
                .refusal(limits, what: "finalize") { throw refusal }
            let e: SiteLevelEffects?
            if s.model.hasCrossedTerms {
                // Given the crossed effects at this site's levels (its leading columns).
                let q = blocks.width - 1 - s.model.fixedCount
                let d = blocks.siteFactor.map { structure.factorDimension($0) } ?? 0
                guard let b = r.crossedEffects, b.count == q, b.allSatisfy(\.isFinite),
                      [r.crossedCovariance, r.crossedTerm, r.crossedProduct].compactMap({ $0 }).count == 1 else {
                    throw SiteError.invalid("a model with crossed factors needs crossed_effects (\(q) finite values, this site's levels) and one of crossed_covariance (\(q)×\(q)), crossed_term or crossed_product (\(d)×\(d)) to finalize")
                }
                if let v = r.crossedProduct, !(v.count == d * d && v.allSatisfy(\.isFinite)) {
                    throw SiteError.invalid("crossed_product must have \(d)×\(d) finite values (this site's own effects)")
                }
                if let v = r.crossedCovariance, !(v.count == q * q && v.allSatisfy(\.isFinite)) {
                    throw SiteError.invalid("crossed_covariance must have \(q)×\(q) finite values (this site's levels)")
                }
                if let v = r.crossedTerm, !(v.count == d * d && v.allSatisfy(\.isFinite)) {
                    throw SiteError.invalid("crossed_term must have \(d)×\(d) finite values (this site's own effects)")
                }
                e = try LMMSite.siteEffects(blocks, structure: structure, theta: s.model.localTheta(r.theta), beta: b + r.beta, sigma: r.sigma,
                                            crossedCovariance: r.crossedCovariance.map { Matrix(rows: q, cols: q, data: $0) },
                                            crossedTerm: r.crossedTerm.map { Matrix(rows: d, cols: d, data: $0) },
                                            crossedProduct: r.crossedProduct.map { Matrix(rows: d, cols: d, data: $0) })
            } else {
                e = try LMMSite.siteEffects(blocks, structure: structure, theta: r.theta, beta: r.beta, sigma: r.sigma)
            }
            reply = FinalizeReply(session: r.session, effects: e?.effects, conditionalCovariance: e?.conditionalCovariance.data,
                                  ownEffects: s.model.hasCrossedTerms ? nil : LMMSite.ownEstimate(blocks, beta: r.beta))
        case .generalized(let site):
            if let refusal = RequestCost.glmmEvaluate(site.data, order: 0, nAGQ: 1)
                .refusal(limits, what: "finalize") { throw refusal }
            let e: SiteLevelEffects?
            if let crossedSite = s.fit.crossedGLMM {
                // Given the crossed effects at this site's levels, as for LMMs.
                let q = crossedSite.crossed.width
                guard r.marginal == nil else { throw SiteError.invalid("marginal effects are not available for GLMMs with factors crossed with the sites") }
                // With the level form, crossed_term is N = V'ᵀPV' (m×m, GLMMCrossedLevelForm) instead of P.
                let m = offersLevelForm(s.fit)
                guard let b = r.crossedEffects, b.count == q, b.allSatisfy(\.isFinite),
                      (r.crossedCovariance == nil) != (r.crossedTerm == nil) else {
                    throw SiteError.invalid("a model with crossed factors needs crossed_effects (\(q) finite values, this site's levels) and crossed_covariance (\(q)×\(q))\(m.map { " or crossed_term (\($0)×\($0))" } ?? "") to finalize")
                }
                if let v = r.crossedCovariance {
                    guard v.count == q * q, v.allSatisfy(\.isFinite) else { throw SiteError.invalid("crossed_covariance must have \(q)×\(q) finite values (this site's levels)") }
                    e = try crossedSite.siteEffects(theta: r.theta, beta: r.beta, effects: b, crossedCovariance: Matrix(rows: q, cols: q, data: v))
                } else {
                    guard let m, let v = r.crossedTerm, v.count == m * m, v.allSatisfy(\.isFinite) else {
                        throw SiteError.invalid("crossed_term must have m×m finite values (m: this site's own effects) and applies when the site offered the level form at prepare (crossed_level_form)")
                    }
                    e = try crossedSite.siteEffects(theta: r.theta, beta: r.beta, effects: b, levelTerm: Matrix(rows: m, cols: m, data: v))
                }
            } else {
                e = try site.siteEffects(theta: r.theta, beta: r.beta)
            }
            reply = FinalizeReply(session: r.session, effects: e?.effects, conditionalCovariance: e?.conditionalCovariance.data,
                                  saturatedDeviance: site.saturatedConstant)
            if let m = r.marginal {
                // Population-averaged sums over the site's rows (GLMMMarginal).
                guard m.discrete.count == s.model.fixedCount else { throw SiteError.invalid("marginal.discrete must have one flag per fixed effect") }
                let p = Double(s.model.fixedCount)
                let cost = RequestCost(work: Double(site.data.rows) * (Double(m.points) * 3 * (p + 2) * (p + 1) + Double(s.model.thetaCount * s.model.thetaCount)),
                                       answerBytes: (p + 1) * (p + 1) * RequestCost.bytesPerNumber)
                if let refusal = cost.refusal(limits, what: "marginal effects") { throw refusal }
                let sums = GLMMMarginal.sums(site.data, beta: r.beta, theta: r.theta, discrete: m.discrete, points: m.points)
                guard (sums.values + sums.gradients).allSatisfy(\.isFinite) else { throw GLMMError.nonFinite }
                if sums.largestRowShare > policy.maxRowShare {
                    throw SiteError.disclosure("at the β and θ sent, one row would carry more than \(Int(100 * policy.maxRowShare))% of a marginal sum at this site (the population-averaged means, their derivatives or a discrete change), so the answer would mostly describe that row (rule max_row_share, dominance)")
                }
                reply.marginal = MarginalReply(sums)
            }
        }
        if let flat = s.fit.flat, let cluster = s.model.cluster, s.model.gee == nil {
            // The robust covariance's meat: the site's score, or Σ_c s_c s_cᵀ over its clusters.
            switch cluster {
            case .site:
                reply.score = flat.clusterScores(beta: r.beta, weightsAt: r.weightsAt)[0]
            case .crossed:
                throw SiteError.invalid("the clusters of a robust covariance are the site or groups nested in it, never a factor crossed with the sites")
            case .withinSite:
                reply.scoreCrossProducts = flat.scoreCrossProducts(beta: r.beta, weightsAt: r.weightsAt)
                reply.clusters = flat.clusterCount
            }
        }
        if let flat = s.fit.flat, flat.family != nil { reply.saturatedDeviance = flat.saturatedConstant }
        try Self.checkSiteLevelOnly(reply, model: s.model)
        // The fit is over: free its prepared data now rather than after the
        // session timeout (a coordinator that asks again, e.g. resending a
        // finalize whose answer was lost, prepares the session again).
        sessions.withLock { $0[r.session] = nil }
        return reply
    }

    /// Finalize answers only site-level quantities: one value per column of
    /// the terms grouped by the site itself (never a within-site group's
    /// mode), their r×r covariance, and no more.
    static func checkSiteLevelOnly(_ reply: FinalizeReply, model: ModelSpec) throws {
        let r = model.terms.filter { $0.grouping == .site }.reduce(0) { $0 + $1.columns.count }
        let ok = (reply.effects?.count ?? r) == r && (reply.ownEffects?.count ?? r) == r
            && (reply.conditionalCovariance?.count ?? r * r) == r * r && (r > 0 || reply.effects == nil)
        guard ok else {
            throw SiteError.disclosure("the answer would hold more than the site-level effects; nothing per patient or per within-site group is sent")
        }
    }

    /// Bounds on a model's shape, so no specification can make the site
    /// allocate without limit or build an empty random-effects term.
    private func validate(model m: ModelSpec) throws {
        let terms = ProtocolLimits.randomTerms, columns = ProtocolLimits.randomTermColumns
        guard m.fixed.count <= ProtocolLimits.maxFixedColumns else {
            throw SiteError.invalid("the model has more than \(ProtocolLimits.maxFixedColumns) fixed-effects columns")
        }
        guard m.alsoRequired.count <= ProtocolLimits.maxFixedColumns else {
            throw SiteError.invalid("the model requires more than \(ProtocolLimits.maxFixedColumns) further variables")
        }
        // No term: a flat model (an ordinary regression).
        guard m.terms.isEmpty || terms.contains(m.terms.count) else {
            throw SiteError.invalid("a model has at most \(terms.upperBound) random-effects terms")
        }
        for t in m.terms {
            guard columns.contains(t.columns.count) else {
                throw SiteError.invalid("random-effects term \(t.name) must have \(columns.lowerBound) to \(columns.upperBound) columns")
            }
            if case .withinSite(let vs) = t.grouping, vs.isEmpty { throw SiteError.invalid("random-effects term \(t.name) has no grouping variable") }
        }
        if m.cluster != nil && !m.isFlat {
            throw SiteError.invalid("a cluster for robust standard errors applies to flat models (no random-effects term) only")
        }
        if case .withinSite(let vs)? = m.cluster, vs.isEmpty || vs.count > 10 { throw SiteError.invalid("a cluster needs 1 to 10 variables") }
        if m.gee != nil && (!m.isFlat || m.cluster == nil) {
            throw SiteError.invalid("GEE (gee) needs a model without random-effects terms and a cluster")
        }
        guard m.family == .gaussian ? m.link == .identity : true else { throw SiteError.invalid("a gaussian model uses the identity link") }
        // θ's derivatives travel as jets whose width grows with θ²: bound it.
        guard m.thetaCount <= ProtocolLimits.maxThetaCount else {
            throw SiteError.invalid("the model has \(m.thetaCount) covariance parameters; this site evaluates at most \(ProtocolLimits.maxThetaCount) (simplify the random-effects terms)")
        }
    }

    private func validate(theta: [Double], structure: CovarianceStructure) throws {
        guard theta.count == structure.thetaCount else {
            throw SiteError.invalid("theta has \(theta.count) values; the model has \(structure.thetaCount)")
        }
        for (k, (t, lb)) in zip(theta, structure.lowerBounds).enumerated() where !(t >= lb) || !t.isFinite {
            throw SiteError.invalid("theta[\(k)] is outside its bounds (a diagonal entry must be finite and at least 0)")
        }
    }

    // MARK: data

    func load(_ dataset: String) throws -> DataTable {
        if let t = tables.withLock({ $0[dataset] }) { return t }
        guard let source = sources[dataset] else { throw SiteError.unknownDataset(dataset, known: sources.keys.sorted()) }
        let table: DataTable
        do { table = try read(source) } catch {
            // Paths, SQL and line numbers stay here; the peer learns only that it failed.
            log.event("dataset_error", ["site": site, "dataset": dataset, "error": "\(error)"])
            throw SiteError.datasetUnreadable(dataset)
        }
        try checkSiteColumn(table)
        tables.withLock { $0[dataset] = table }
        return table
    }

    /// Reads a source with the full detail of any failure (DataSourceError:
    /// path, line, SQL), for `fedmix-agent check`; never sent to a peer.
    func read(_ source: DatasetSource) throws -> DataTable {
        switch source {
        case .table(let t): return t
        case .csv(let path, let types): return try CSVReader.read(path: path, types: types)
        case .sqliteTable(let path, let name, let types): return try SQLiteSource.read(path: path, table: name, types: types)
        case .sqliteQuery(let path, let query, let types): return try SQLiteSource.read(path: path, query: query, types: types)
        }
    }

    /// The table of a configured dataset, failures in full detail (for `check`).
    func loadForCheck(_ dataset: String) throws -> DataTable {
        guard let source = sources[dataset] else { throw SiteError.unknownDataset(dataset, known: sources.keys.sorted()) }
        let table = try read(source)
        try checkSiteColumn(table)
        return table
    }

    func checkSiteColumn(_ table: DataTable) throws {
        guard let name = siteColumn, let c = table.column(named: name) else { return }
        var bad = 0
        for i in 0..<table.rowCount where !c.isMissing(i) && SiteDesign.key(c, i) != site { bad += 1 }
        if bad > 0 { throw ModelFrameError.siteColumnMismatch(column: name, site: site, rows: bad) }
    }
}

/// Refusals and request problems at a site.
public enum SiteError: Error, Equatable, CustomStringConvertible {
    case unknownDataset(String, known: [String])
    case unknownSession(String)
    case sessionConflict(String)
    /// A configured dataset could not be read; the detail (path, SQL, line)
    /// is in the agent's log only.
    case datasetUnreadable(String)
    case disclosure(String)
    case invalid(String)

    public var code: ErrorCode {
        switch self {
        case .unknownDataset: return .unknownDataset
        case .unknownSession: return .unknownSession
        case .datasetUnreadable: return .datasetError
        case .sessionConflict: return .sessionConflict
        case .disclosure: return .disclosureRefused
        case .invalid: return .invalidRequest
        }
    }
    /// A session id as echoed: ids up to 64 characters (UUIDs) as they are,
    /// longer ones by length.
    static func short(_ s: String) -> String {
        "(id of \(s.utf8.count) characters, SHA-256 \(SHA256Digest.hex(Array(s.utf8)).prefix(12)))"
    }

    public var description: String {
        switch self {
        case .unknownDataset(let d, let known):
            // The name is not repeated back: a peer could make it megabytes long.
            return "unknown dataset (a name of \(d.utf8.count) bytes, SHA-256 \(SHA256Digest.hex(Array(d.utf8)).prefix(12))); this site has: \(known.joined(separator: ", "))"
        case .unknownSession(let s):
            return "session \(Self.short(s)) is unknown or expired; prepare it again"
        case .sessionConflict(let s):
            return "session \(Self.short(s)) was prepared with a different model; use a new session id"
        case .datasetUnreadable(let d):
            return "the site's dataset \"\(d)\" could not be read; the site's administrator can see why in the agent's log"
        case .disclosure(let why): return "refused by the site's disclosure rules: \(why)"
        case .invalid(let why): return "invalid request: \(why)"
        }
    }
}

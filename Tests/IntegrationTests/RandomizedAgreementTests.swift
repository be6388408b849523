import Foundation
import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// Simulated datasets (Tests/Fixtures/randomized, written by
/// Tests/Fixtures/tools/randomized-agreement.R) fitted through the in-process
/// federation, one channel per site, against the true optimum (lme4 refitted
/// tight from several starts, glmmTMB as a cross-check; the lowest objective).
///
/// Kinds: random-intercept and random-slope LMMs (REML and ML), binomial and
/// Poisson random-intercept GLMMs (Laplace); ICC 0 to 0.5 (many in
/// 0.001-0.08), 5-100 sites, balanced / unbalanced / one huge site, x
/// standard, in thousands or uncentred around 1000.
///
/// Agreement rules (tol = 1e-5 for LMMs, 1e-4 for GLMMs; objective tolerance
/// 1e-6 for LMMs, 1e-5 for GLMMs, absolute):
/// - objective: fedmix − reference ≤ objective tolerance. fedmix *below* the
///   reference by more than that means the reference is not the optimum: that
///   is reported separately ("reference not optimal"), and fails too, since
///   the fixture must then be regenerated.
/// - fixed effects: |Δβ| ≤ tol · max(|β_ref|, SE_ref) (absolute floor at the SE).
/// - standard errors and σ: relative, |Δ| ≤ tol · ref.
/// - standard deviations of random effects (σ_site, slope SD): compared
///   absolutely near zero: |Δsd| ≤ tol · max(sd_ref, f) with the floor
///   f = 0.1 σ for a random intercept, 0.1 σ / SD(x) for a slope on x, and
///   0.1 σ · √(1 + (mean x / SD x)²) for the intercept of a random-slope term
///   (the SD at x = 0, extrapolated when x is uncentred); σ = 1 for GLMMs,
///   where the intercept's SD is θ itself. So a θ on or near the bound (below
///   0.1, i.e. ICC below 1%) is compared absolutely, to 1e-6 (LMM, in units of
///   σ) or 1e-5 (GLMM): far below the gap when a fit stops at 0 instead of an
///   interior optimum, but no finer than the criterion can resolve (near the
///   bound it changes by ~1e-10 when θ moves by 1e-6).
///   Variances: |Δv| ≤ 2.1 · tol · max(v_ref, f²). Covariances:
///   |Δc| ≤ 2.1 · tol · max(sd1, f1) · max(sd2, f2). Correlations:
///   |Δρ| ≤ tol · max(sd1, f1) · max(sd2, f2) / (sd1 · sd2) (no constraint
///   when a SD is 0: the correlation is not identified there).
///
/// Every failing fit is reported (one failure per fit, naming every quantity
/// off and by how much), followed by a summary table per model kind and the
/// distribution of the objective gaps. Set FEDMIX_RANDOMIZED_REPORT=path to
/// write one CSV line per fit as well.
final class RandomizedAgreementTests: XCTestCase {
    static let root = Fixtures.root.deletingLastPathComponent().appendingPathComponent("randomized")

    struct Dataset {
        var id: String
        var kind: String
        var family: Family
        var formula: String
        var nObs: Int
        var nSites: Int
        var truth: [String: Any]
        var fits: [String: [String: Any]]
        var csv: URL { RandomizedAgreementTests.root.appendingPathComponent("data/\(id).csv") }
    }

    nonisolated(unsafe) static let datasets: [Dataset] = {
        let url = root.appendingPathComponent("references.json")
        let all = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (all["datasets"] as! [[String: Any]]).map { d in
            let family: Family = switch d["family"] as! String { case "binomial": .binomial; case "poisson": .poisson; default: .gaussian }
            return Dataset(id: d["id"] as! String, kind: d["kind"] as! String, family: family,
                           formula: d["formula"] as! String, nObs: d["n_obs"] as! Int, nSites: d["n_sites"] as! Int,
                           truth: d["truth"] as? [String: Any] ?? [:], fits: d["fits"] as! [String: [String: Any]])
        }
    }()

    /// The dataset's rows, split by the `site` column into one in-memory table per site (sorted by name).
    static func siteTables(_ d: Dataset) throws -> [(site: String, table: DataTable)] {
        try split(CSVReader.read(path: d.csv.path))
    }

    static func split(_ t: DataTable) -> [(site: String, table: DataTable)] {
        guard case .text(let s)? = t.column(named: "site")?.data else { fatalError("no text column site") }
        var rows: [String: [Int]] = [:]
        for (i, v) in s.enumerated() { rows[v!, default: []].append(i) }
        return rows.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { site in
            let idx = rows[site]!
            let columns = t.columns.map { c -> DataTable.Column in
                switch c.data {
                case .numeric(let v): return .init(name: c.name, data: .numeric(idx.map { v[$0] }))
                case .text(let v): return .init(name: c.name, data: .text(idx.map { v[$0] }))
                }
            }
            return (site, DataTable(columns: columns, rowCount: idx.count))
        }
    }

    static func service(_ site: String, _ table: DataTable) -> SiteService {
        SiteService(site: site, datasets: ["data": .table(table)], siteColumn: "site", policy: .off)
    }

    static func federation(_ tables: [(site: String, table: DataTable)]) -> Federation {
        Federation(channels: tables.map { s in
            let service = service(s.site, s.table)
            return InProcessChannel(site: s.site) { service.handle(line: $0) }
        })
    }

    static func options(_ d: Dataset, fit: String) -> FitOptions {
        FitOptions(method: fit == "ml" ? .ml : .reml, family: d.family)
    }

    // MARK: - Comparison

    struct Outcome {
        var id: String
        var kind: String
        var fit: String
        var objectiveGap: Double = .nan          // fedmix − reference
        var worstEstimate: Double = 0            // worst |Δ| / allowed (≤ 1 passes)
        var worstWhat = ""
        var problems: [String] = []
        var referenceNotOptimal = false
        var fedmixOnBound = false
        var referenceOnBound = false
        var converged = false
        var error: String?
        var thetaFedmix: [Double] = []
        var thetaReference: [Double] = []
        var evaluations = 0
        var seconds = 0.0
        var failed: Bool { error != nil || !problems.isEmpty }
    }

    /// Compares a fit with a reference fit by the rules in the type's comment.
    /// `tol`/`objectiveTol` default to 1e-5 / 1e-6 (LMM) and 1e-4 / 1e-5 (GLMM);
    /// `meanX`, `sdX`: mean and SD of the slope's covariate (for the floors of the SDs).
    static func compare(_ r: FitResult, _ ref: [String: Any], dataset d: Dataset, fit: String, meanX: Double = 0, sdX: Double,
                        tol: Double? = nil, objectiveTol: Double? = nil) -> Outcome {
        let glmm = d.family != .gaussian
        let tol = tol ?? (glmm ? 1e-4 : 1e-5)
        let objectiveTol = objectiveTol ?? (glmm ? 1e-5 : 1e-6)
        var o = Outcome(id: d.id, kind: d.kind, fit: fit)
        o.converged = r.converged
        o.evaluations = r.evaluations
        o.thetaFedmix = r.theta
        o.thetaReference = (ref["theta"] as? [Double]) ?? [ref["theta"] as! Double]
        let diagonal = d.kind == "rs" ? [0, 2] : [0]
        o.fedmixOnBound = diagonal.contains { $0 < r.theta.count && r.theta[$0] <= 1e-7 }
        o.referenceOnBound = ref["boundary"] as! Bool
        let objective = ref["objective"] as! Double
        o.objectiveGap = r.objective - objective
        if o.objectiveGap > objectiveTol {
            o.problems.append("objective worse than the optimum by \(sci(o.objectiveGap)) (fedmix \(r.objective), reference \(objective))")
        } else if o.objectiveGap < -objectiveTol {
            o.referenceNotOptimal = true
            o.problems.append("REFERENCE NOT OPTIMAL: fedmix's objective is below the reference by \(sci(-o.objectiveGap))")
        }
        func check(_ mine: Double, _ theirs: Double, allowed: Double, _ what: String) {
            let ratio = mine == theirs ? 0 : abs(mine - theirs) / allowed
            if !(ratio <= 1) { o.problems.append("\(what): fedmix \(mine), reference \(theirs) (\(sci(ratio)) × allowed)") }
            if !(ratio <= o.worstEstimate) { o.worstEstimate = ratio.isNaN ? .infinity : ratio; o.worstWhat = what }
        }
        let fe = ref["fixed_effects"] as! [[String: Any]]
        if r.fixedEffects.map(\.name) != fe.map({ $0["name"] as! String }) {
            o.problems.append("fixed-effect names \(r.fixedEffects.map(\.name)) vs \(fe.map { $0["name"] as! String })")
        } else {
            for (mine, theirs) in zip(r.fixedEffects, fe) {
                let b = theirs["estimate"] as! Double, se = theirs["std_error"] as! Double
                check(mine.estimate, b, allowed: tol * max(abs(b), se), "β \(mine.name)")
                check(mine.stdError, se, allowed: tol * se, "SE \(mine.name)")
            }
        }
        let sigma = glmm ? 1.0 : ref["sigma"] as! Double
        if !glmm { check(r.sigma, sigma, allowed: tol * sigma, "σ") }
        let slopes = d.kind == "rs"
        func floorSD(_ column: String?) -> Double {
            column != "(Intercept)" ? 0.1 * sigma / sdX
                : slopes ? 0.1 * sigma * (1 + (meanX / sdX) * (meanX / sdX)).squareRoot() : 0.1 * sigma
        }
        let vcs = ref["variance_components"] as! [[String: Any]]
        let sds: [String: Double] = Dictionary(vcs.compactMap { v in
            guard v["grp"] as? String == "site", v["var2"] as? String == nil, let n = v["var1"] as? String else { return nil }
            return (n, v["sdcor"] as! Double)
        }, uniquingKeysWith: { a, _ in a })
        for v in vcs {
            let group = v["grp"] as! String, var1 = v["var1"] as? String, var2 = v["var2"] as? String
            let vcov = v["vcov"] as! Double, sdcor = v["sdcor"] as! Double
            if group == "Residual" { continue }      // σ, compared above
            guard let mine = r.varianceComponents.first(where: { $0.group == group && $0.var1 == var1 && $0.var2 == var2 }) else {
                o.problems.append("no variance component \(group) \(var1 ?? "") \(var2 ?? "")"); continue
            }
            let label = "\(group) \(var1 ?? "")\(var2.map { " " + $0 } ?? "")"
            if var2 == nil {
                let f = floorSD(var1)
                check(mine.sdcor, sdcor, allowed: tol * max(sdcor, f), "sd \(label)")
                check(mine.vcov, vcov, allowed: 2.1 * tol * max(vcov, f * f), "variance \(label)")
            } else {
                let f1 = floorSD(var1), f2 = floorSD(var2)
                let s1 = sds[var1 ?? ""] ?? 0, s2 = sds[var2!] ?? 0
                check(mine.vcov, vcov, allowed: 2.1 * tol * max(s1, f1) * max(s2, f2), "covariance \(label)")
                if s1 > 0 && s2 > 0 {
                    check(mine.sdcor, sdcor, allowed: tol * max(s1, f1) * max(s2, f2) / (s1 * s2), "correlation \(label)")
                }
            }
        }
        return o
    }

    /// LMMs whose response has a mean more than 1000 residual SDs from 0
    /// (y ≈ 130, σ = 0.05): summed squares lose about log10(mean²/σ²) ≈ 7
    /// digits to cancellation, so the criterion itself is only good to about
    /// 1e-9 relative (1e-5 absolute at n = 3000) in any sums-based method.
    static func precisionLimited(_ d: Dataset, _ tables: [(site: String, table: DataTable)]) -> Bool {
        guard d.family == .gaussian, let sigma = d.fits["reml"]?["sigma"] as? Double else { return false }
        var sum = 0.0, n = 0
        for t in tables { if case .numeric(let v)? = t.table.column(named: "y")?.data { for x in v { sum += x ?? 0; n += 1 } } }
        return abs(sum / Double(max(n, 1))) / sigma > 1000
    }

    /// Fits every dataset of `kinds` in process and reports. `precisionLimited`:
    /// only the LMMs with a response far from 0 relative to σ (see
    /// `precisionLimited(_:_:)`), compared with DESIGN.md's relative criterion
    /// tolerance (1e-8 · |criterion|); otherwise every other dataset, at the
    /// tolerances in the type's comment.
    func sweep(_ kinds: Set<String>, title: String, precisionLimited: Bool = false) throws {
        let selected = Self.datasets.filter { kinds.contains($0.kind) }
        XCTAssertFalse(selected.isEmpty, "no datasets")
        var outcomes: [Outcome] = []
        var skipped: [String] = []
        let started = Date()
        for d in selected {
            let tables = try Self.siteTables(d)
            XCTAssertEqual(tables.count, d.nSites, "\(d.id) sites")
            if Self.precisionLimited(d, tables) != precisionLimited { skipped.append(d.id); continue }
            let xs = tables.flatMap { t -> [Double] in
                guard case .numeric(let v)? = t.table.column(named: "x")?.data else { return [] }
                return v.compactMap { $0 }
            }
            let sdX = Self.standardDeviation(xs), meanX = xs.reduce(0, +) / Double(max(xs.count, 1))
            for fit in d.fits.keys.sorted(by: >) {     // reml before ml
                let ref = d.fits[fit]!
                let t0 = Date()
                do {
                    let r = try Analysis.fit(Self.federation(tables), dataset: "data", formula: d.formula,
                                             options: Self.options(d, fit: fit))
                    var o = Self.compare(r, ref, dataset: d, fit: fit, meanX: meanX, sdX: sdX,
                                         objectiveTol: precisionLimited ? 1e-8 * abs(ref["objective"] as! Double) : nil)
                    o.seconds = Date().timeIntervalSince(t0)
                    XCTAssertEqual(r.nObs, d.nObs, "\(d.id)/\(fit) n_obs")
                    // Every fit must also be writable as JSON (a non-finite
                    // number in any field would make `--format json` fail).
                    XCTAssertNoThrow(try r.json(), "\(d.id)/\(fit): the result cannot be written as JSON")
                    outcomes.append(o)
                } catch {
                    var o = Outcome(id: d.id, kind: d.kind, fit: fit)
                    o.error = "\(error)"
                    o.referenceOnBound = ref["boundary"] as! Bool
                    o.seconds = Date().timeIntervalSince(t0)
                    outcomes.append(o)
                }
            }
        }
        let elapsed = Date().timeIntervalSince(started)
        for o in outcomes where !o.failed {
            if let why = Self.knownFailures["\(o.id)/\(o.fit)"] {
                XCTFail("\(o.id)/\(o.fit) is listed as a known failure (\(why)) but passes now: remove it from knownFailures")
            }
        }
        for o in outcomes where o.failed {
            let d = selected.first { $0.id == o.id }!
            if let why = Self.knownFailures["\(o.id)/\(o.fit)"] {
                print("known failure \(o.id)/\(o.fit): \(why); objective gap \(sci(o.objectiveGap)), worst \(sci(o.worstEstimate)) × allowed (\(o.worstWhat))")
                continue
            }
            let context = "icc \(sig(d.truth["icc"] as? Double ?? .nan)), \(d.nSites) sites, \(d.nObs) rows, "
                + "\(d.truth["layout"] as? String ?? "?"), x \(d.truth["scaling"] as? String ?? "?"); "
                + "θ fedmix \(o.thetaFedmix.map(sig)), reference \(o.thetaReference.map(sig)), converged \(o.converged)"
            if let e = o.error {
                XCTFail("\(o.id)/\(o.fit): fit failed: \(e) [\(context)]")
            } else {
                XCTFail("\(o.id)/\(o.fit): objective gap \(sci(o.objectiveGap)); \(o.problems.count) problem(s): "
                        + o.problems.prefix(6).joined(separator: "; ") + (o.problems.count > 6 ? "; …" : "") + " [\(context)]")
            }
        }
        print(Self.summary(outcomes, title: title, seconds: elapsed))
        if !skipped.isEmpty {
            print(precisionLimited ? "(other datasets: see the sweeps by kind)"
                  : "left to testPrecisionLimitedLMMs (|mean y| > 1000 σ): \(skipped.joined(separator: " "))")
        }
        if let path = ProcessInfo.processInfo.environment["FEDMIX_RANDOMIZED_REPORT"] {
            let header = "id,kind,fit,objective_gap,worst_estimate_ratio,worst_what,fedmix_bound,reference_bound,converged,theta_fedmix,theta_reference,failed,reference_not_optimal,error\n"
            let lines = outcomes.map { o in
                [o.id, o.kind, o.fit, "\(o.objectiveGap)", "\(o.worstEstimate)", o.worstWhat, "\(o.fedmixOnBound)", "\(o.referenceOnBound)",
                 "\(o.converged)", o.thetaFedmix.map { "\($0)" }.joined(separator: " "), o.thetaReference.map { "\($0)" }.joined(separator: " "),
                 "\(o.failed)", "\(o.referenceNotOptimal)", (o.error ?? "").replacingOccurrences(of: ",", with: ";")]
                    .map { "\"\($0.replacingOccurrences(of: "\"", with: "'"))\"" }.joined(separator: ",")
            }
            let url = URL(fileURLWithPath: path)
            let existing = (try? String(contentsOf: url, encoding: .utf8)) ?? header
            try? (existing + lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        }
    }

    /// Fits that still fail, each with the reason, listed so that they are
    /// reported on every run without failing it; one that starts passing
    /// fails the run until it is removed here. Open work, not tolerance.
    static let knownFailures: [String: String] = {
        var out: [String: String] = [:]
        out["poisson-032/laplace"] = "the reference stops 5.6e-6 above fedmix's objective, so its β is 1.09 × the tolerance from fedmix's; a tighter reference is needed"
        out["ri-008/reml"] = "x in thousands: the criterion is flat to its rounding near θ = 0, where fedmix stops at θ = 1.2e-5 and the optimum is 4e-8 (the objectives agree to 2.4e-9); the site SD is 12 × its absolute tolerance"
        return out
    }()

    static func summary(_ outcomes: [Outcome], title: String, seconds: Double) -> String {
        var lines = ["", "=== Randomized agreement: \(title) (\(outcomes.count) fits, \(String(format: "%.1f", seconds)) s) ==="]
        lines.append(pad("kind/fit", 18) + pad("fits", 6) + pad("fail", 6) + pad("refNotOpt", 10) + pad("errors", 7)
                     + pad("worst obj gap", 15) + pad("lowest gap", 13) + pad("worst est (×tol)", 18)
                     + pad("bound f/r/both", 16) + pad("unconv", 7))
        let groups = Dictionary(grouping: outcomes) { "\($0.kind)/\($0.fit)" }
        for key in groups.keys.sorted() {
            let g = groups[key]!
            let gaps = g.map(\.objectiveGap).filter { !$0.isNaN }
            lines.append(pad(key, 18) + pad("\(g.count)", 6) + pad("\(g.filter(\.failed).count)", 6)
                         + pad("\(g.filter(\.referenceNotOptimal).count)", 10) + pad("\(g.filter { $0.error != nil }.count)", 7)
                         + pad(sci(gaps.max() ?? .nan), 15) + pad(sci(gaps.min() ?? .nan), 13)
                         + pad(sci(g.map(\.worstEstimate).max() ?? .nan), 18)
                         + pad("\(g.filter(\.fedmixOnBound).count)/\(g.filter(\.referenceOnBound).count)/\(g.filter { $0.fedmixOnBound && $0.referenceOnBound }.count)", 16)
                         + pad("\(g.filter { !$0.converged && $0.error == nil }.count)", 7))
        }
        // Distribution of objective gaps (fedmix − reference).
        let edges: [(String, (Double) -> Bool)] = [
            ("< −1e-5 (reference not optimal)", { $0 < -1e-5 }),
            ("[−1e-5, −1e-8)", { $0 >= -1e-5 && $0 < -1e-8 }),
            ("|gap| ≤ 1e-8", { abs($0) <= 1e-8 }),
            ("(1e-8, 1e-6]", { $0 > 1e-8 && $0 <= 1e-6 }),
            ("(1e-6, 1e-5]", { $0 > 1e-6 && $0 <= 1e-5 }),
            ("(1e-5, 1e-3]", { $0 > 1e-5 && $0 <= 1e-3 }),
            ("(1e-3, 1e-1]", { $0 > 1e-3 && $0 <= 1e-1 }),
            ("(0.1, 10]", { $0 > 0.1 && $0 <= 10 }),
            ("> 10", { $0 > 10 }),
        ]
        lines.append("objective gap (fedmix − reference) distribution:")
        for (label, test) in edges {
            let n = outcomes.filter { !$0.objectiveGap.isNaN && test($0.objectiveGap) }.count
            lines.append("  " + pad(label, 34) + "\(n)")
        }
        lines.append("  " + pad("fit failed (error)", 34) + "\(outcomes.filter { $0.error != nil }.count)")
        let boundaryDisagree = outcomes.filter { $0.error == nil && $0.fedmixOnBound != $0.referenceOnBound }
        lines.append("on a bound: fedmix \(outcomes.filter(\.fedmixOnBound).count), reference \(outcomes.filter(\.referenceOnBound).count), "
                     + "disagreeing \(boundaryDisagree.count)" + (boundaryDisagree.isEmpty ? "" : ": " + boundaryDisagree.map { "\($0.id)/\($0.fit)" }.joined(separator: " ")))
        let failing = outcomes.filter(\.failed).sorted { ($0.objectiveGap.isNaN ? .infinity : $0.objectiveGap) > ($1.objectiveGap.isNaN ? .infinity : $1.objectiveGap) }
        if !failing.isEmpty {
            lines.append("failing fits (objective gap, worst estimate in × allowed):")
            for o in failing {
                lines.append("  " + pad("\(o.id)/\(o.fit)", 22) + pad(o.error == nil ? sci(o.objectiveGap) : "error", 13)
                             + pad(sci(o.worstEstimate), 11) + (o.error ?? o.worstWhat))
            }
        }
        let slowest = outcomes.max { $0.seconds < $1.seconds }
        if let s = slowest { lines.append("slowest fit: \(s.id)/\(s.fit) \(String(format: "%.2f", s.seconds)) s") }
        return lines.joined(separator: "\n")
    }

    static func standardDeviation(_ v: [Double]) -> Double {
        guard v.count > 1 else { return 1 }
        let m = v.reduce(0, +) / Double(v.count)
        return (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count - 1)).squareRoot()
    }

    // MARK: - Tests

    func testRandomInterceptLMMs() throws { try sweep(["ri"], title: "y ~ x + z + (1 | site), REML and ML") }
    func testRandomSlopeLMMs() throws { try sweep(["rs"], title: "y ~ x + z + (1 + x | site), REML and ML") }
    func testBinomialGLMMs() throws { try sweep(["binomial"], title: "yb ~ x + z + (1 | site), binomial, Laplace") }
    func testPoissonGLMMs() throws { try sweep(["poisson"], title: "count ~ x + z [+ offset(log(expo))] + (1 | site), Poisson, Laplace") }

    /// The LMMs with |mean(y)| > 1000 σ (y ≈ 130, σ = 0.05), where the
    /// criterion is only as good as the summed squares allow: checked against
    /// DESIGN.md's criterion tolerance (1e-8 relative) and the usual estimate
    /// tolerances.
    func testPrecisionLimitedLMMs() throws {
        try sweep(["ri", "rs"], title: "LMMs with |mean y| > 1000 σ (criterion to 1e-8 relative)", precisionLimited: true)
    }

    func testFixtureCoversTheDesign() {
        let d = Self.datasets
        XCTAssertGreaterThanOrEqual(d.count, 200)
        for k in ["ri", "rs", "binomial", "poisson"] { XCTAssertGreaterThanOrEqual(d.filter { $0.kind == k }.count, 40, k) }
        let icc = d.compactMap { $0.truth["icc"] as? Double }
        XCTAssertGreaterThanOrEqual(icc.filter { $0 == 0 }.count, 15, "true variance 0")
        XCTAssertGreaterThanOrEqual(icc.filter { $0 >= 0.001 && $0 <= 0.08 }.count, 100, "small ICC")
        XCTAssertGreaterThanOrEqual(d.filter { $0.truth["layout"] as? String == "huge" }.count, 50, "one huge site")
        XCTAssertGreaterThanOrEqual(d.filter { ($0.truth["scaling"] as? String).map { $0 != "standard" } ?? false }.count, 80, "badly scaled x")
        XCTAssertEqual(d.map(\.nSites).min(), 5)
        XCTAssertEqual(d.map(\.nSites).max(), 100)
    }

    /// A few datasets of different kinds through real agents over loopback
    /// mutual TLS: the same fit, bit for bit, as in process.
    func testSubsetOverTLSIsBitIdenticalToInProcess() throws {
        func first(_ kind: String, _ p: (Dataset) -> Bool) -> Dataset? { Self.datasets.first { $0.kind == kind && p($0) } }
        let smallICC: (Dataset) -> Bool = { ($0.truth["icc"] as? Double ?? 1) < 0.08 && $0.nSites <= 15 }
        let picks = [
            first("ri", smallICC), first("ri") { $0.truth["scaling"] as? String == "uncentred" && $0.nSites <= 15 },
            first("rs") { $0.nSites <= 12 }, first("rs") { $0.truth["scaling"] as? String == "thousands" && $0.nSites <= 15 },
            first("binomial") { $0.nSites <= 12 }, first("poisson") { $0.nSites <= 12 && $0.formula.contains("offset") },
        ].compactMap { $0 }
        XCTAssertEqual(picks.count, 6)
        let pki = try TestPKI("randomized")
        defer { pki.remove() }
        for d in picks {
            let tables = try Self.siteTables(d)
            let agents = try tables.map { try LoopbackAgent(service: Self.service($0.site, $0.table), pki: pki) }
            defer { agents.forEach { $0.stop() } }
            let overTLS = try tlsFederation(agents, pki: pki)
            defer { overTLS.close() }
            for fit in d.fits.keys.sorted(by: >) {
                let label = "\(d.id)/\(fit) over TLS"
                let remote = try Analysis.fit(overTLS, dataset: "data", formula: d.formula, options: Self.options(d, fit: fit))
                let local = try Analysis.fit(Self.federation(tables), dataset: "data", formula: d.formula, options: Self.options(d, fit: fit))
                XCTAssertEqual(assertSameFit(remote, local, tol: 0, label), 0, "\(label): not bit-identical")
                XCTAssertEqual(remote.objective.bitPattern, local.objective.bitPattern, label)
                XCTAssertEqual(remote.theta.map(\.bitPattern), local.theta.map(\.bitPattern), label)
                XCTAssertEqual(remote.rounds, local.rounds, label)
                print("\(label): bit-identical to in-process (objective \(remote.objective), rounds \(remote.rounds), θ \(remote.theta))")
            }
        }
    }
}

private func sci(_ x: Double) -> String { x.isNaN ? "nan" : String(format: "%.3g", x) }
private func sig(_ x: Double) -> String { x.isNaN ? "nan" : String(format: "%.6g", x) }
private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

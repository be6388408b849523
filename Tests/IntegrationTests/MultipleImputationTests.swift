import XCTest
import Foundation
@testable import Coordinator
import SiteAgent
import Protocol
import Math

/// Multiple imputation (`--impute`): Rubin's rules equal mice::pool.scalar;
/// the imputation model's fit equals lme4; the same seed gives bit-identical
/// pooled results in-process and through agents over TLS; pooled results
/// agree with an R implementation of the same draws and with mice's
/// two-level method on the pooled rows (M = 100); δ shifts imputed values
/// exactly; chained equations; refusals. References:
/// Tests/Fixtures/tools/imputation-references.R on Tests/Fixtures/imputation/registry.
final class MultipleImputationTests: XCTestCase {
    static let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("imputation")
    static var files: [URL] {
        (try! FileManager.default.contentsOfDirectory(at: directory.appendingPathComponent("registry"), includingPropertiesForKeys: nil))
            .filter { $0.pathExtension == "csv" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
    }
    static var references: [String: Any] {
        let data = try! Data(contentsOf: directory.appendingPathComponent("references.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
    static let analysis = ImputationSimulator.analysisFormula
    static let imputation = ImputationSimulator.imputationFormula

    func numbers(_ x: Any?) -> [Double] {
        if let a = x as? [Any] { return a.map { ($0 as! NSNumber).doubleValue } }
        return [(x as! NSNumber).doubleValue]
    }

    func imputed(_ federation: Federation, m: Int, seed: UInt64, delta: [String: Double] = [:], formula: String = analysis,
                 family: Family = .binomial, models: [String] = [imputation], iterations: Int = 10) throws -> FitResult {
        let descriptions = try Analysis.describe(federation, dataset: "data")
        return try MultipleImputation.fit(federation, dataset: "data", formula: formula, descriptions: descriptions,
                                          options: FitOptions(family: family),
                                          settings: ImputationSettings(models: models, m: m, seed: seed, iterations: iterations, delta: delta))
    }

    // MARK: Rubin's rules

    func testRubinRulesEqualMicePoolScalar() throws {
        for c in Self.references["rubin"] as! [[String: Any]] {
            let n = numbers(c["n"])[0], k = numbers(c["k"])[0]
            let r = RubinRules.pool(estimates: numbers(c["q"]), variances: numbers(c["u"]), completeDataDF: n - k)
            for (mine, key) in [(r.estimate, "qbar"), (r.within, "ubar"), (r.between, "b"), (r.total, "t"), (r.df, "df"), (r.riv, "riv"), (r.fmi, "fmi")] {
                XCTAssertLessThanOrEqual(relativeError(mine, numbers(c[key])[0]), 1e-12, "\(key) of \(numbers(c["q"]))")
            }
        }
        // No between-imputation variance: df is the complete-data df adjusted, fmi from it alone.
        let same = RubinRules.pool(estimates: [1, 1, 1], variances: [0.5, 0.5, 0.5], completeDataDF: 50)
        XCTAssertEqual(same.between, 0)
        XCTAssertEqual(same.df, 51.0 / 53.0 * 50, accuracy: 1e-12)
    }

    /// Likelihood-ratio statistics pooled by D2 equal mitml's (.D2 and pf).
    func testPooledLikelihoodRatioEqualsMitml() throws {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent("d2.json"))
        let cases = (try JSONSerialization.jsonObject(with: data) as! [String: Any])["cases"] as! [[String: Any]]
        for c in cases {
            let r = PooledLikelihoodRatio.pool(numbers(c["d"]), df: Int(numbers(c["k"])[0]))
            XCTAssertLessThanOrEqual(relativeError(r.statistic, numbers(c["statistic"])[0]), 1e-12)
            XCTAssertLessThanOrEqual(relativeError(r.df2, numbers(c["df2"])[0]), 1e-12)
            XCTAssertLessThanOrEqual(relativeError(r.pValue, numbers(c["p"])[0]), 1e-8)
        }
    }

    // MARK: The imputation model's fit

    /// The imputation model is an ordinary federated fit on the rows where
    /// the variable is observed: it equals lme4 (REML, tight tolerances).
    func testImputationModelFitEqualsLme4() throws {
        let ref = Self.references["imputation_model"] as! [String: Any]
        let fed = inProcessFederation(files: Self.files)
        let fit = try Analysis.fit(fed, dataset: "data", formula: Self.imputation)
        XCTAssertEqual(fit.nObs, Int(numbers(ref["n_obs"])[0]))
        XCTAssertEqual(fit.fixedEffects.map(\.name), (ref["names"] as! [String]))
        for (f, (b, se)) in zip(fit.fixedEffects, zip(numbers(ref["estimate"]), numbers(ref["std_error"]))) {
            XCTAssertLessThanOrEqual(relativeError(f.estimate, b), 1e-6, f.name)
            XCTAssertLessThanOrEqual(relativeError(f.stdError, se), 1e-6, f.name)
        }
        XCTAssertLessThanOrEqual(relativeError(fit.theta[0], numbers(ref["theta"])[0]), 1e-6)
        XCTAssertLessThanOrEqual(relativeError(fit.sigma, numbers(ref["sigma"])[0]), 1e-6)
        XCTAssertLessThanOrEqual(relativeError(fit.objective, numbers(ref["objective"])[0]), 1e-9)
        // The multiple imputation reports the same fit.
        let mi = try imputed(fed, m: 2, seed: 1)
        let model = try XCTUnwrap(mi.imputation?.models.first)
        XCTAssertEqual(model.kind, "lmm")
        XCTAssertEqual(model.nObs, fit.nObs)
        XCTAssertEqual(model.fixedEffects["iss"], fit.fixedEffects[2].estimate)
        XCTAssertEqual(model.theta, fit.theta)
    }

    // MARK: Reproducibility, in-process and over TLS

    func testSameSeedIsBitIdenticalInProcessAndOverTLS() throws {
        let a = try imputed(inProcessFederation(files: Self.files), m: 5, seed: 42)
        let b = try imputed(inProcessFederation(files: Self.files), m: 5, seed: 42)
        let pki = try TestPKI("imputation")
        defer { pki.remove() }
        let agents = try Self.files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let tls = try tlsFederation(agents, pki: pki)
        defer { tls.close() }
        let c = try imputed(tls, m: 5, seed: 42)
        let other = try imputed(inProcessFederation(files: Self.files), m: 5, seed: 43)
        func key(_ r: FitResult) -> [Double] {
            r.fixedEffects.flatMap { [$0.estimate, $0.stdError, $0.df!, $0.riv!, $0.fmi!, $0.ciLower, $0.ciUpper, $0.pValue] }
                + r.varianceComponents.map(\.sdcor) + [r.sigma] + r.vcov.flatMap { $0 }
        }
        XCTAssertEqual(key(a), key(b), "same seed, in-process twice")
        XCTAssertEqual(key(a), key(c), "same seed, in-process and over TLS: bit-identical")
        XCTAssertNotEqual(key(a), key(other), "another seed, other imputations")
        // Per-site counts: every row with lactate missing (the predictors are complete).
        for f in Self.files {
            let table = try CSVReader.read(path: f.path)
            let missing = (0..<table.rowCount).filter { table.column(named: "lactate")!.isMissing($0) }.count
            let site = f.deletingPathExtension().lastPathComponent
            XCTAssertEqual(c.imputation?.perSite.first { $0.site == site }?.imputed["lactate"], .exact(missing), site)
            // Observed vs imputed means (the rules allow them here: both counts reach min_rows and min_cell).
            guard case .numeric(let v) = table.column(named: "lactate")!.data else { return XCTFail() }
            let seen = v.compactMap { $0 }
            let entry = c.imputation?.perSite.first { $0.site == site }
            XCTAssertEqual(entry?.observedMean?["lactate"] ?? .nan, seen.reduce(0, +) / Double(seen.count), accuracy: 1e-12, site)
            XCTAssertNotNil(entry?.imputedMean?["lactate"], site)
        }
        XCTAssertEqual(c.nObs, 1480, "every row is used after imputation")
        let summary = try XCTUnwrap(c.imputation)
        XCTAssertEqual(summary.m, 5); XCTAssertEqual(summary.seed, 42); XCTAssertEqual(summary.imputationFits, 1); XCTAssertEqual(summary.analysisFits, 5)
        print("rounds: \(summary.rounds) in all, \(summary.roundsPerAnalysis) per analysis fit; bytes sent \(c.bytesSent), received \(c.bytesReceived)")
        // The audit hook saw each analysis prepare with its draw; no answer holds a completed column.
        for agent in agents {
            let prepares = agent.audit.all.filter { $0.direction == .received && $0.type == "prepare" && $0.line.contains("\"imputations\"") }
            XCTAssertEqual(prepares.count, 5, agent.site)
            XCTAssertTrue(prepares.allSatisfy { $0.line.contains("\"seed\":42") }, agent.site)
            let answers = agent.audit.all.filter { $0.direction == .sent && $0.line.contains("\"imputed\"") }
            XCTAssertEqual(answers.count, 5, agent.site)
        }
    }

    // MARK: Agreement with R on the pooled rows (M = 100)

    /// fedmix's pooled result against (a) an R implementation of the same
    /// draws: estimates within two Monte Carlo SEs, SEs within 5%; and (b)
    /// mice's two-level method 2l.lmer, whose random-effects variance is
    /// drawn differently (inverse Wishart around the BLUPs): SEs within 5%;
    /// its estimates' distance is printed in Monte Carlo SEs.
    func testAgreementWithRAtM100() throws {
        let r = try imputed(inProcessFederation(files: Self.files), m: 100, seed: 1)
        for (source, checkEstimates) in [("own", true), ("mice", false)] {
            let ref = Self.references[source] as! [String: Any]
            XCTAssertEqual(r.fixedEffects.map(\.name), ref["names"] as! [String])
            for (j, f) in r.fixedEffects.enumerated() {
                let between = f.riv! * f.stdError * f.stdError / (1 + f.riv!) / (1 + 1.0 / 100)
                let mcse = (between / 100 + numbers(ref["between"])[j] / 100).squareRoot()
                let distance = abs(f.estimate - numbers(ref["estimate"])[j]) / mcse
                let seRatio = f.stdError / numbers(ref["std_error"])[j]
                print(String(format: "%@ %@: estimate %.5f vs %.5f (%.2f Monte Carlo SEs), SE %.5f vs %.5f (ratio %.4f), fmi %.3f vs %.3f",
                             source, f.name, f.estimate, numbers(ref["estimate"])[j], distance, f.stdError, numbers(ref["std_error"])[j],
                             seRatio, f.fmi!, numbers(ref["fmi"])[j]))
                if checkEstimates { XCTAssertLessThanOrEqual(distance, 2, "\(source) \(f.name) estimate") }
                XCTAssertLessThanOrEqual(abs(seRatio - 1), 0.05, "\(source) \(f.name) SE")
            }
        }
    }

    // MARK: MNAR shifts

    /// With the same seed, δ shifts every imputed value by exactly δ: the
    /// pooled mean of lactate (an lm with an intercept) moves by δ times the
    /// imputed share of rows.
    func testDeltaShiftsImputedValuesExactly() throws {
        let fed = inProcessFederation(files: Self.files)
        let base = try imputed(fed, m: 3, seed: 9, formula: "lactate ~ 1", family: .gaussian)
        let shifted = try imputed(fed, m: 3, seed: 9, delta: ["lactate": 0.75], formula: "lactate ~ 1", family: .gaussian)
        let imputedRows = base.imputation!.perSite.reduce(0) { n, s in if case .exact(let k)? = s.imputed["lactate"] { return n + k }; return n }
        XCTAssertEqual(shifted.fixedEffects[0].estimate - base.fixedEffects[0].estimate, 0.75 * Double(imputedRows) / 1480, accuracy: 1e-12)
        XCTAssertEqual(shifted.imputation?.models[0].delta, 0.75)
    }

    func testTippingPointInterpolatesTheBoundCrossingZero() throws {
        func result(_ estimate: Double, _ lower: Double, _ upper: Double) throws -> FitResult {
            var r = try imputed(inProcessFederation(files: Self.files), m: 2, seed: 1, formula: "lactate ~ 1", family: .gaussian)
            r.fixedEffects[0].estimate = estimate; r.fixedEffects[0].ciLower = lower; r.fixedEffects[0].ciUpper = upper
            return r
        }
        let base = try result(0.5, 0.2, 0.8)
        let points = [(0.0, base), (0.5, try result(0.4, 0.1, 0.7)), (1.0, try result(0.25, -0.1, 0.6)), (-1.0, try result(0.7, 0.4, 1.0))]
        let t = TippingPoint.find(term: "(Intercept)", variable: "lactate", points: points.map { (delta: $0.0, result: $0.1) })
        XCTAssertEqual(t.delta!, 0.5 + 0.5 * 0.1 / 0.2, accuracy: 1e-12, "the lower bound crosses 0 between δ = 0.5 and 1")
        XCTAssertEqual(t.points.map(\.delta), [-1, 0, 0.5, 1])
        let none = TippingPoint.find(term: "(Intercept)", variable: "lactate", points: Array(points.prefix(2)).map { (delta: $0.0, result: $0.1) })
        XCTAssertNil(none.delta)
        XCTAssertTrue(none.text.contains("no tipping point on this grid"))
    }

    // MARK: Chained equations

    /// Two incomplete variables (the trauma registry's lactate and age):
    /// each chain sweeps both models; the same seed reproduces the result;
    /// observed values are never replaced.
    func testChainedEquationsOverTwoVariables() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-fcs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = try TraumaRegistrySimulator.write(to: dir.path, scale: 0.5)
        let models = ["lactate ~ age + iss + died + (1 | site)", "age ~ lactate + iss + died + (1 | site)"]
        let a = try imputed(inProcessFederation(files: files), m: 3, seed: 5, formula: "died ~ age + iss + lactate + (1 | site)",
                            models: models, iterations: 2)
        let b = try imputed(inProcessFederation(files: files), m: 3, seed: 5, formula: "died ~ age + iss + lactate + (1 | site)",
                            models: models, iterations: 2)
        XCTAssertEqual(a.fixedEffects.map(\.estimate), b.fixedEffects.map(\.estimate))
        let s = try XCTUnwrap(a.imputation)
        XCTAssertEqual(s.iterations, 2)
        XCTAssertEqual(s.imputationFits, 1 + 3 * (2 * 2 - 1), "one shared first fit, then one per chain, variable and sweep")
        let total = files.reduce(0) { n, f in n + ((try? CSVReader.read(path: f.path).rowCount) ?? 0) }
        XCTAssertEqual(a.nObs, total, "both variables completed in every row")
        // Site-level check: completing the table keeps observed values.
        let table = try CSVReader.read(path: files[2].path)
        let d = try ImputationDraw(variable: "lactate", model: Analysis.model(formula: models[0], descriptions: Analysis.describe(inProcessFederation(files: files), dataset: "data"), options: FitOptions()),
                                   transform: .identity, theta: [0.5], beta: [1, 0, 0.05, 0.3], sigma: 0.8, delta: 0, seed: 1, m: 1)
        let service = SiteService(site: files[2].deletingPathExtension().lastPathComponent, datasets: ["data": .table(table)], policy: .off)
        var request = PrepareRequest(session: "s", dataset: "data", model: d.model, imputations: [d])
        request.observed = nil
        guard case .prepared(let p) = service.handle(.prepare(request)) else { return XCTFail("prepare refused") }
        XCTAssertNotNil(p.summary.imputed?["lactate"])
    }

    // MARK: Transformed and binary variables

    /// `log(lactate) ~ …`: the model is fitted on the log scale, imputed
    /// values are exp of the draws (positive; their site means are reported).
    func testLogTransformedImputation() throws {
        // The trauma registry's lactate is positive (the imputation registry's, simulated normal, is not).
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-mi-log-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let fed = inProcessFederation(files: try TraumaRegistrySimulator.write(to: dir.path, scale: 0.5))
        let r = try imputed(fed, m: 3, seed: 4, models: ["log(lactate) ~ age + iss + died + (1 | site)"])
        let model = try XCTUnwrap(r.imputation?.models.first)
        XCTAssertEqual(model.transform, "log")
        let direct = try Analysis.fit(fed, dataset: "data", formula: "log(lactate) ~ age + iss + died + (1 | site)")
        XCTAssertEqual(model.fixedEffects["iss"], direct.fixedEffects[2].estimate)
        let means = r.imputation!.perSite.compactMap { $0.imputedMean?["lactate"] }
        XCTAssertFalse(means.isEmpty)
        XCTAssertTrue(means.allSatisfy { $0 > 0 }, "\(means)")
    }

    /// A 0/1 variable gets a logistic GLMM; each site draws its effect by
    /// Metropolis-Hastings and imputes 0 or 1; the same seed reproduces it.
    func testBinaryVariableGetsALogisticModel() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-mi-bin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var files: [URL] = [], missing = 0
        for f in Self.files {
            // died missing in every 5th row whose iss is odd (missing at random given iss).
            let lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
            var out = [lines[0]]
            for (i, line) in lines.dropFirst().enumerated() {
                var cells = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                if i % 5 == 0, let iss = Int(cells[3]), iss % 2 == 1 { cells[5] = "NA"; missing += 1 }
                out.append(cells.joined(separator: ","))
            }
            let url = dir.appendingPathComponent(f.lastPathComponent)
            try (out.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
            files.append(url)
        }
        let run = { try self.imputed(inProcessFederation(files: files), m: 3, seed: 8, formula: "iss ~ age + died + (1 | site)",
                                     family: .gaussian, models: ["died ~ age + iss + (1 | site)"]) }
        let a = try run(), b = try run()
        XCTAssertEqual(a.imputation?.models.first?.kind, "glmm")
        XCTAssertEqual(a.fixedEffects.map(\.estimate), b.fixedEffects.map(\.estimate))
        XCTAssertEqual(a.nObs, 1480)
        let total = a.imputation!.perSite.reduce(0) { n, s in if case .exact(let k)? = s.imputed["died"] { return n + k }; return n }
        XCTAssertEqual(total, missing)
        for s in a.imputation!.perSite {
            if let m = s.imputedMean?["died"] { XCTAssertTrue((0...1).contains(m), s.site) }
        }
    }

    // MARK: Disclosure

    /// With the default rules, a site that would impute between 1 and
    /// min_rows − 1 values refuses the analysis: its rows differ from the
    /// imputation model's by fewer than min_rows rows (differencing rule).
    func testDifferencingRuleRefusesAFewImputedRows() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-mi-diff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var files: [URL] = []
        for f in Self.files {
            var text = try String(contentsOf: f, encoding: .utf8)
            if f.lastPathComponent == "st-olaf.csv" {
                // Keep 3 of its missing values; fill the others.
                var kept = 0
                text = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                    guard line.contains(",NA,") else { return String(line) }
                    kept += 1
                    return kept <= 3 ? String(line) : line.replacingOccurrences(of: ",NA,", with: ",2.00,")
                }.joined(separator: "\n")
            }
            let url = dir.appendingPathComponent(f.lastPathComponent)
            try text.write(to: url, atomically: true, encoding: .utf8)
            files.append(url)
        }
        let fed = inProcessFederation(files: files, policy: DisclosurePolicy())
        XCTAssertThrowsError(try imputed(fed, m: 2, seed: 1, formula: "iss ~ age + lactate + (1 | site)", family: .gaussian,
                                         models: ["lactate ~ age + iss + (1 | site)"])) { e in
            XCTAssertTrue("\(e)".contains("st-olaf"), "\(e)")
            XCTAssertTrue("\(e)".contains("by fewer than 10 rows"), "\(e)")
        }
    }

    // MARK: Refusals and warnings

    func testRefusalsAndWarnings() throws {
        func refused(_ s: ImputationSettings, _ expected: String) {
            XCTAssertThrowsError(try MultipleImputation.validate(s, analysisFormula: Self.analysis)) { e in
                XCTAssertTrue("\(e)".contains(expected), "\(e)")
            }
        }
        refused(ImputationSettings(models: ["lactate + age ~ iss"]), "the left side must be the variable to impute, or log(variable)")
        refused(ImputationSettings(models: ["sqrt(lactate) ~ iss"]), "the left side must be the variable to impute, or log(variable)")
        refused(ImputationSettings(models: ["lactate ~ iss", "lactate ~ age"]), "lactate has two imputation models")
        refused(ImputationSettings(models: ["lactate ~ iss"], delta: ["age": 1]), "delta age: no --impute model completes age")
        refused(ImputationSettings(models: ["lactate ~ iss"], m: 1), "imputations must be between 2 and 1000")
        let warnings = try MultipleImputation.validate(ImputationSettings(models: ["lactate ~ iss + (1 | site)"]), analysisFormula: Self.analysis)
        XCTAssertTrue(warnings.contains { $0.contains("the analysis outcome died is not in the imputation model") }, "\(warnings)")
        XCTAssertTrue(try MultipleImputation.validate(ImputationSettings(models: [Self.imputation]), analysisFormula: Self.analysis).isEmpty)
        // Resolved against the sites: a within-site grouping is refused, a 0/1 variable gets no log.
        let fed = inProcessFederation(files: Self.files)
        XCTAssertThrowsError(try imputed(fed, m: 2, seed: 1, models: ["lactate ~ iss + (1 | patient_id)"])) { e in
            XCTAssertTrue("\(e)".contains("must be grouped by site"), "\(e)")
        }
        XCTAssertThrowsError(try imputed(fed, m: 2, seed: 1, formula: "lactate ~ iss + (1 | site)", family: .gaussian, models: ["log(died) ~ iss"])) { e in
            XCTAssertTrue("\(e)".contains("died is binary (0/1); impute it on its own scale"), "\(e)")
        }
    }
}

/// `fedmix gee --impute`: the GEE on each completed dataset (the draws of
/// `fit --impute`), pooled by Rubin's rules on the GEE's own terms: each
/// pooled estimate is the mean of the M GEE estimates, each SE (robust, naive)
/// √(mean of its variances + (1 + 1/M)·between), df is Rubin's (M − 1)/λ² on
/// the robust z test; bit-identical for one seed in-process and over TLS.
final class ImputedGEETests: XCTestCase {
    static let formula = "died ~ age + iss + lactate"
    func gee(_ federation: Federation, m: Int, seed: UInt64) throws -> (GEEResult, [GEEResult]) {
        var options = FitOptions(family: .binomial)
        options.cluster = "site"
        options.gee = GEESettings(correlation: .exchangeable, order: nil, smallSample: nil)
        let descriptions = try Analysis.describe(federation, dataset: "data")
        let settings = ImputationSettings(models: [MultipleImputationTests.imputation], m: m, seed: seed, iterations: 10)
        let pooled = try GEEResult.imputed(federation, dataset: "data", formula: Self.formula,
                                           descriptions: descriptions, options: options, settings: settings)
        // The M analyses by hand, with the same draws.
        var each: [GEEResult] = []
        let chains = try MultipleImputation.chains(federation, dataset: "data", analysisFormula: Self.formula,
                                                   descriptions: descriptions, options: options, settings: settings)
        for draws in chains.draws {
            var o = options
            o.imputations = draws
            each.append(try XCTUnwrap(GEEResult(try Analysis.fit(federation, dataset: "data", formula: Self.formula,
                                                                 descriptions: descriptions, options: o, missingData: MissingDataStrategy()))))
        }
        return (pooled, each)
    }

    func testPooledByRubinsRulesAndReproducible() throws {
        let (a, each) = try gee(inProcessFederation(files: MultipleImputationTests.files), m: 4, seed: 11)
        XCTAssertEqual(each.count, 4)
        let m = 4.0
        for (j, f) in a.fixedEffects.enumerated() {
            let q = each.map { $0.fixedEffects[j].estimate }
            let mean = q.reduce(0, +) / m
            let between = q.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (m - 1)
            let robust = each.reduce(0) { $0 + pow($1.fixedEffects[j].stdError, 2) } / m
            let naive = each.reduce(0) { $0 + pow($1.fixedEffects[j].naiveStdError, 2) } / m
            XCTAssertEqual(f.estimate, mean, accuracy: 1e-12 * max(1, abs(mean)), f.name)
            XCTAssertEqual(f.stdError, (robust + (1 + 1 / m) * between).squareRoot(), accuracy: 1e-12, f.name)
            XCTAssertEqual(f.naiveStdError, (naive + (1 + 1 / m) * between).squareRoot(), accuracy: 1e-12, f.name)
            let lambda = (1 + 1 / m) * between / (robust + (1 + 1 / m) * between)
            XCTAssertEqual(f.df!, (m - 1) / (lambda * lambda), accuracy: 1e-9 * f.df!, f.name)
            let t = StudentT.quantile(0.975, degreesOfFreedom: f.df!)
            XCTAssertEqual(f.ciLower, f.estimate - t * f.stdError, accuracy: 1e-12, f.name)
        }
        XCTAssertEqual(a.correlation.alpha!, each.reduce(0) { $0 + $1.correlation.alpha! } / m, accuracy: 1e-14)
        XCTAssertEqual(a.imputation?.m, 4)
        XCTAssertGreaterThan(a.fixedEffects.first { $0.name == "lactate" }!.fmi!, 0)
        // The same seed through agents over TLS: bit-identical.
        let pki = try TestPKI("imputed-gee")
        defer { pki.remove() }
        let agents = try MultipleImputationTests.files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let tls = try tlsFederation(agents, pki: pki)
        defer { tls.close() }
        let (b, _) = try gee(tls, m: 4, seed: 11)
        XCTAssertEqual(a.fixedEffects.map(\.estimate), b.fixedEffects.map(\.estimate))
        XCTAssertEqual(a.fixedEffects.map(\.stdError), b.fixedEffects.map(\.stdError))
        XCTAssertEqual(a.fixedEffects.map(\.naiveStdError), b.fixedEffects.map(\.naiveStdError))
        print("gee --impute: rounds \(b.rounds) (\(b.imputation!.roundsPerAnalysis) per analysis), lactate fmi \(a.fixedEffects.last!.fmi!)")
    }
}

import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// Grouping factors crossed with the sites (issue 17; DESIGN.md "Crossed
/// factors"): lme4's Penicillin with the plate as the site, a simulated
/// registry with years, wards and surgeons, and 300 surgeons at 2-4 of 20
/// hospitals, whose effects are eliminated level by level
/// (Tests/Fixtures/tools/crossed-references.R), against lmer refitted tightly on the pooled rows,
/// in-process and through agents over TLS; and the refusals.
final class CrossedFactorTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("crossed-factors")
    override class func tearDown() { pki.remove() }

    static let directory = Fixtures.root.deletingLastPathComponent().appendingPathComponent("crossed")
    nonisolated(unsafe) static let references = Fixtures.references("crossed")

    static func files(_ caseName: String) throws -> [URL] { try Fixtures.csvFiles(in: directory.appendingPathComponent(caseName)) }

    static func options(_ ref: [String: Any]) -> FitOptions {
        FitOptions(method: ref["method"] as! String == "ML" ? .ml : .reml)
    }

    /// DESIGN.md's LMM tolerances against lmer refitted tightly: the
    /// criterion never worse than lmer's by more than 1e-8 relative;
    /// estimates, SEs, variance components and σ within 1e-5 relative (REML:
    /// Satterthwaite and Kenward-Roger df and SEs too); the
    /// conditional modes of every factor (crossed levels and sites) within
    /// 1e-5 of their conditional SD, and the conditional SDs within 1e-5
    /// relative. Returns the worst relative error.
    @discardableResult
    func assertMatchesR(_ r: FitResult, _ key: String, file: StaticString = #filePath, line: UInt = #line) -> Double {
        let ref = Self.references[key]!
        let objective = ref["objective"] as! Double
        XCTAssertLessThanOrEqual((r.objective - objective) / abs(objective), 1e-8, "\(key): criterion worse than lmer's", file: file, line: line)
        XCTAssertEqual(r.nObs, ref["n_obs"] as! Int, file: file, line: line)
        var worst = 0.0
        func check(_ a: Double, _ b: Double, _ what: String, floor: Double = 1e-8) {
            let e = abs(a - b) / max(abs(b), floor)
            worst = max(worst, e)
            XCTAssertLessThanOrEqual(e, 1e-5, "\(key) \(what): \(a) vs lmer \(b)", file: file, line: line)
        }
        let fixed = ref["fixed"] as! [String: Any]
        XCTAssertEqual(r.fixedEffects.map(\.name), fixed["names"] as! [String], file: file, line: line)
        for (k, f) in r.fixedEffects.enumerated() {
            check(f.estimate, (fixed["estimates"] as! [Double])[k], "\(f.name) estimate", floor: f.stdError)
            check(f.stdError, (fixed["std_errors"] as! [Double])[k], "\(f.name) SE")
        }
        let components = ref["variance_components"] as! [[String: Any]]
        XCTAssertEqual(r.varianceComponents.count, components.count, file: file, line: line)
        for c in components {
            let mine = r.varianceComponents.first { $0.group == c["group"] as! String && $0.var1 == c["var1"] as? String && $0.var2 == c["var2"] as? String }
            XCTAssertNotNil(mine, "\(key): variance component \(c)", file: file, line: line)
            check(mine?.vcov ?? .nan, c["vcov"] as! Double, "vcov \(c["group"]!) \(c["var1"] ?? "") \(c["var2"] ?? "")")
        }
        // REML: lmerTest's Satterthwaite df and pbkrtest's Kenward-Roger SEs and df.
        if let inference = ref["inference"] as? [String: Any] {
            for (k, f) in r.fixedEffects.enumerated() {
                check(f.df ?? .nan, (inference["satterthwaite_df"] as! [Double])[k], "\(f.name) Satterthwaite df")
                check(f.kenwardRoger?.stdError ?? .nan, (inference["kr_std_errors"] as! [Double])[k], "\(f.name) Kenward-Roger SE")
                check(f.kenwardRoger?.df ?? .nan, (inference["kr_df"] as! [Double])[k], "\(f.name) Kenward-Roger df")
            }
        }
        check(r.sigma, ref["sigma"] as! Double, "sigma")
        check(r.loglik, ref["loglik"] as! Double, "logLik")
        // ranef(condVar = TRUE): crossed levels from `crossed_effects`, sites from `sites`.
        var compared = 0
        for g in ref["ranef"] as! [[String: Any]] {
            let group = g["group"] as! String, columns = g["columns"] as! [String]
            for (i, level) in (g["levels"] as! [String]).enumerated() {
                let modes = (g["modes"] as! [[Double]])[i], sds = (g["cond_sd"] as! [[Double]])[i]
                let mine: (effects: [String: Double], sd: [String: Double])?
                if let e = r.crossedEffects?.first(where: { $0.group == group && $0.level == level }) { mine = (e.effects, e.condSD) }
                else if group == "site", let s = r.sites.first(where: { $0.site == level }) { mine = (s.effects, s.condSD) }
                else { mine = nil }
                guard let mine else { continue }   // within-site groups never leave a site
                for (a, column) in columns.enumerated() {
                    check(mine.effects[column] ?? .nan, modes[a], "mode \(group) \(level) \(column)", floor: sds[a])
                    check(mine.sd[column] ?? .nan, sds[a], "cond SD \(group) \(level) \(column)")
                    compared += 1
                }
            }
        }
        XCTAssertGreaterThan(compared, 0, file: file, line: line)
        return worst
    }

    /// Every reference fit in-process: lmer's answer on the pooled rows.
    func testReferencesInProcess() throws {
        for key in Self.references.keys.sorted() {
            let ref = Self.references[key]!
            let federation = inProcessFederation(files: try Self.files(ref["case"] as! String))
            let r = try Analysis.fit(federation, dataset: "data", formula: ref["formula"] as! String, options: Self.options(ref))
            XCTAssertTrue(r.converged, key)
            let worst = assertMatchesR(r, key)
            print("crossed \(key): worst relative error \(worst), criterion \(r.objective - (ref["objective"] as! Double)), rounds \(r.rounds), evaluations \(r.evaluations)")
        }
    }

    /// Through agents over loopback TLS: the same fit as in-process (1e-10)
    /// and lmer's; the crossed levels' modes too. Models whose own terms are
    /// all grouped by the site take 2 rounds (prepare, finalize); with wards
    /// nested in the sites each evaluation is a round. Rounds and bytes per
    /// site are printed.
    func testReferencesOverTLS() throws {
        for caseName in ["penicillin", "registry", "surgeons"] {
            let files = try Self.files(caseName)
            let agents = try files.map { try LoopbackAgent(file: $0, pki: Self.pki) }
            let federation = try tlsFederation(agents, pki: Self.pki)
            defer { federation.close(); agents.forEach { $0.stop() } }
            for key in Self.references.keys.sorted() where Self.references[key]!["case"] as! String == caseName {
                let ref = Self.references[key]!
                let formula = ref["formula"] as! String
                let sentBefore = federation.bytesSent, receivedBefore = federation.bytesReceived
                let overTLS = try Analysis.fit(federation, dataset: "data", formula: formula, options: Self.options(ref))
                let inProcess = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: Self.options(ref))
                assertSameFit(overTLS, inProcess, tol: 1e-10, key)
                XCTAssertEqual(overTLS.crossedEffects, inProcess.crossedEffects, key)
                assertMatchesR(overTLS, key)
                let siteGrouped = !formula.contains("/")
                if siteGrouped { XCTAssertEqual(overTLS.rounds, 2, "\(key) rounds") }
                else { XCTAssertLessThanOrEqual(overTLS.rounds, 20, "\(key) rounds") }
                let sent = zip(federation.bytesSent, sentBefore).map { $0 - $1 }
                let received = zip(federation.bytesReceived, receivedBefore).map { $0 - $1 }
                print("crossed over TLS \(key): \(overTLS.rounds) rounds, \(overTLS.evaluations) evaluations; per site sent \(sent.min()!)-\(sent.max()!) B, received \(received.min()!)-\(received.max()!) B")
            }
        }
    }

    /// The crossed fit with the rows at 8 sites equals the fit of the same
    /// model with all rows at one site (where the factor is local) to 1e-8.
    func testSplitOverSitesEqualsOneSite() throws {
        let files = try Self.files("registry")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("crossed-one-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var lines: [String] = []
        for (k, f) in files.enumerated() {
            let rows = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
            lines += k == 0 ? rows : Array(rows.dropFirst())
        }
        // One site, "all": the site column renamed so that every row is this site's.
        let header = lines[0].replacingOccurrences(of: "site,", with: "hospital,")
        let pooled = dir.appendingPathComponent("all.csv")
        try ([header] + lines.dropFirst()).joined(separator: "\n").write(to: pooled, atomically: true, encoding: .utf8)
        for formula in ["y ~ x + (1 | year)", "y ~ x + (1 + x | year) + (1 | surgeon)"] {
            let split = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula)
            let one = try Analysis.fit(inProcessFederation(files: [pooled]), dataset: "data", formula: formula)
            XCTAssertNotNil(split.crossedEffects, formula)
            XCTAssertNil(one.crossedEffects, "one site: the factor is local there")
            XCTAssertLessThanOrEqual(relativeError(split.objective, one.objective), 1e-8, formula)
            for (a, b) in zip(split.fixedEffects, one.fixedEffects) {
                XCTAssertLessThanOrEqual(relativeError(a.estimate, b.estimate), 1e-8, "\(formula) \(a.name)")
                XCTAssertLessThanOrEqual(relativeError(a.stdError, b.stdError), 1e-8, "\(formula) \(a.name) SE")
            }
            for (a, b) in zip(split.theta, one.theta) { XCTAssertLessThanOrEqual(relativeError(a, b), 1e-6, formula) }
        }
    }

    /// Sites written from the registry's rows, edited by `edit(site, rows)`.
    func editedRegistry(_ edit: (String, [[String]]) -> [[String]]) throws -> (dir: URL, files: [URL]) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("crossed-edit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var out: [URL] = []
        for f in try Self.files("registry") {
            let lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            let site = f.deletingPathExtension().lastPathComponent
            let rows = [lines[0]] + edit(site, Array(lines.dropFirst()))
            let url = dir.appendingPathComponent(f.lastPathComponent)
            try rows.map { $0.joined(separator: ",") }.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
            out.append(url)
        }
        return (dir, out)
    }

    func refusal(_ files: [URL], _ formula: String, policy: DisclosurePolicy, family: Family = .gaussian) -> String {
        let federation = inProcessFederation(files: files, policy: policy)
        guard let e = thrownError({ try Analysis.fit(federation, dataset: "data", formula: formula, options: FitOptions(family: family)) }) else { return "" }
        return "\(e)"
    }

    static var strict: DisclosurePolicy {
        var p = DisclosurePolicy.off
        p.minCell = 5
        return p
    }

    /// A crossed level with fewer than min_cell rows at a site is never
    /// fitted: listed by other sites, the site refuses it (rule min_cell);
    /// listed by none, it is not in the agreed coding and the site refuses
    /// its rows. Both messages name the factor and say what to do, never the level.
    func testSmallCellOfACrossedLevelIsRefused() throws {
        // H01 keeps 2 rows of 2011, a level other sites list.
        var kept = 0
        let (dir, files) = try editedRegistry { site, rows in
            rows.filter { r in
                guard site == "H01", r[1] == "2011" else { return true }
                kept += 1
                return kept <= 2
            }
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        let listed = refusal(files, "y ~ x + (1 | site) + (1 | year)", policy: Self.strict)
        XCTAssertTrue(listed.contains("grouping factor \"year\""), listed)
        XCTAssertTrue(listed.contains("min_cell"), listed)
        XCTAssertTrue(listed.contains("Merge rare levels"), listed)
        XCTAssertFalse(listed.contains("2011"), listed)

        // H02 has 3 rows of a year no other site has (2031): no site lists it.
        let (dir2, files2) = try editedRegistry { site, rows in
            guard site == "H02" else { return rows }
            return rows.enumerated().map { k, r in var r = r; if k < 3 { r[1] = "2031" }; return r }
        }
        defer { try? FileManager.default.removeItem(at: dir2) }
        let unlisted = refusal(files2, "y ~ x + (1 | site) + (1 | year)", policy: Self.strict)
        XCTAssertTrue(unlisted.contains("grouping factor \"year\""), unlisted)
        XCTAssertTrue(unlisted.contains("not among its agreed levels"), unlisted)
        XCTAssertFalse(unlisted.contains("2031"), unlisted)
    }

    /// A plainly written factor whose codes recur at several sites but whose
    /// levels the sites do not list (identifiers numbered from 1 at every
    /// site) is ambiguous: the message names it and both ways to write it.
    func testAmbiguousFactorIsRefusedWithBothWaysToWriteIt() throws {
        let (dir, files) = try editedRegistry { _, rows in
            rows.enumerated().map { k, r in r + [String(k / 3 + 1)] }
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        // The header gains the column too.
        for f in files {
            var text = try String(contentsOf: f, encoding: .utf8)
            text = text.replacingOccurrences(of: "site,year,ward,surgeon,x,y\n", with: "site,year,ward,surgeon,x,y,patient\n")
            try text.write(to: f, atomically: true, encoding: .utf8)
        }
        let message = refusal(files, "y ~ x + (1 | patient)", policy: .off)
        XCTAssertTrue(message.contains("grouping factor \"patient\" is ambiguous"), message)
        XCTAssertTrue(message.contains("(1 | site:patient)"), message)
        XCTAssertTrue(message.contains("(1 | site/patient)"), message)
        XCTAssertTrue(message.contains("(1 | patient)"), message)
        XCTAssertTrue(message.contains("declare \"patient\" as text in each agent's \"types\""), "numeric codes: how to get them listed: \(message)")
        // Written with the site, it is nested and fitted.
        XCTAssertNoThrow(try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | site:patient)"))
    }

    /// GLMMs with a crossed factor are fitted with the canonical link and
    /// Laplace (CrossedGLMMTests); other links and nAGQ > 1 are refused
    /// before any prepare, naming the factor and what to use instead.
    func testGeneralizedModelWithCrossedFactorNeedsCanonicalLinkAndLaplace() throws {
        let (dir, files) = try editedRegistry { _, rows in rows.map { r in var r = r; r[5] = Double(r[5])! > 2 ? "1" : "0"; return r } }
        defer { try? FileManager.default.removeItem(at: dir) }
        let federation = inProcessFederation(files: files, policy: .off)
        let probit = thrownError({ try Analysis.fit(federation, dataset: "data", formula: "y ~ x + (1 | site) + (1 | year)",
                                                    options: FitOptions(family: .binomial, link: .probit)) }).map { "\($0)" } ?? ""
        XCTAssertTrue(probit.contains("canonical link only") && probit.contains("probit"), probit)
        let agq = thrownError({ try Analysis.fit(federation, dataset: "data", formula: "y ~ x + (1 | site) + (1 | year)",
                                                 options: FitOptions(family: .binomial, nAGQ: 5)) }).map { "\($0)" } ?? ""
        XCTAssertTrue(agq.contains("year") && agq.contains("Laplace"), agq)
    }
}

extension ExecutableTests {
    /// `fedmix local` on the simulated registry (agents on loopback TLS):
    /// `(1 + x | year)` crossed with the hospitals equals lmer on the pooled
    /// rows, and the JSON carries every year's effects.
    func localCrossedFactorEqualsLmer() throws {
        let ref = CrossedFactorTests.references["year_slope"]!
        let dir = CrossedFactorTests.directory.appendingPathComponent("registry").path
        let fit = try jsonFit(["local", dir, "--formula", ref["formula"] as! String])
        let objective = ref["objective"] as! Double
        XCTAssertLessThanOrEqual((fit["objective"] as! Double - objective) / objective, 1e-8)
        for (mine, theirs) in zip(Self.estimates(fit), (ref["fixed"] as! [String: Any])["estimates"] as! [Double]) {
            XCTAssertEqual(mine, theirs, accuracy: 1e-5 * max(abs(theirs), 1))
        }
        let crossed = fit["crossed_effects"] as! [[String: Any]]
        XCTAssertEqual(crossed.count, 10)
        XCTAssertEqual(Set(crossed.map { $0["group"] as! String }), ["year"])
        XCTAssertEqual(Set((crossed[0]["effects"] as! [String: Double]).keys), ["(Intercept)", "x"])
        XCTAssertEqual(fit["rounds"] as? Int, 2)
    }
}

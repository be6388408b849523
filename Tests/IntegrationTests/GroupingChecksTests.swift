import XCTest
import Foundation
import Coordinator
import SiteAgent
import Math
import Protocol

/// Grouping factors that would give a silently wrong answer:
/// - lme4's level-count rules on the pooled rows (one level; for linear
///   models as many levels as rows, or a term with as many random effects
///   as rows), for every grouping factor including `site`, `site:ward` and
///   the expansions of `a/b`;
/// - factors whose codes recur at several sites (they cross the sites),
///   whatever their number of levels: checked with keyed level hashes, so
///   more than 20 numeric or 50 text codes per site no longer skip the check
///   (mlmRev ScotsSec, `(1 | primary)` split by secondary school).
final class GroupingChecksTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-grouping-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// One CSV per site, in a folder of their own: `rows(site)` gives the site's rows, values in `columns` order.
    func sites(_ names: [String], columns: [String], rows: (String) -> [[String]]) throws -> [URL] {
        let folder = directory.appendingPathComponent(UUID().uuidString.prefix(8).description)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return try names.map { site in
            let url = folder.appendingPathComponent("\(site).csv")
            let lines = [(["site"] + columns).joined(separator: ",")] + rows(site).map { ([site] + $0).joined(separator: ",") }
            try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
            return url
        }
    }

    /// A deterministic, irregular response.
    static func y(_ i: Int, _ g: Int) -> String { String(format: "%.4f", sin(Double(i) * 1.3) + 0.5 * cos(Double(g) * 2.1) + Double(i % 5) * 0.1) }

    func fitError<E: Error>(_ files: [URL], _ formula: String, _ type: E.Type, family: Family = .gaussian,
                            file: StaticString = #filePath, line: UInt = #line) -> E? {
        do {
            let r = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: FitOptions(family: family))
            XCTFail("\(formula) was fitted (objective \(r.objective), groups \(r.nGroups)) where \(E.self) was expected", file: file, line: line)
        } catch let e as E {
            return e
        } catch {
            XCTFail("\(formula): expected \(E.self), got \(Swift.type(of: error)): \(error)", file: file, line: line)
        }
        return nil
    }

    // MARK: Level counts

    func testOneSiteWithASiteTermIsRefusedForEveryFamily() throws {
        let files = try sites(["A"], columns: ["y", "x", "b", "ward"]) { _ in
            (0..<40).map { i in [Self.y(i, i % 4), String(i % 7), String(i % 3 == 0 ? 1 : 0), "w\(i % 4)"] }
        }
        guard let e = fitError(files, "y ~ x + (1 | site)", GroupingLevelsError.self) else { return }
        XCTAssertEqual(e.message, "grouping factor \"site\" has 1 level: the fit has a single site (A), and a random effect needs a grouping factor with at least 2 levels (lme4: grouping factors must have > 1 sampled level). Fit two or more sites, or drop (1 | site) (with no random-effects term left the model is an ordinary regression, which fedmix fits as R's lm or glm: drop the term to fit it)")
        guard let g = fitError(files, "b ~ x + (1 | site)", GroupingLevelsError.self, family: .binomial) else { return }
        XCTAssertTrue(g.message.hasPrefix("grouping factor \"site\" has 1 level"), g.message)
        // With another term left, the advice is only to drop the term; (1 | site/ward) expands to ward:site and site.
        guard let n = fitError(files, "y ~ x + (1 | site/ward)", GroupingLevelsError.self) else { return }
        XCTAssertTrue(n.message.hasPrefix("grouping factor \"site\" has 1 level: the fit has a single site (A)"), n.message)
        XCTAssertTrue(n.message.hasSuffix("Fit two or more sites, or drop (1 | site)"), n.message)
        // The site-local factor with 4 wards fits at one site.
        XCTAssertEqual(try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | site:ward)").nGroups, ["site:ward": 4])
    }

    func testWithinSiteFactorWithOneLevelIsRefusedBeforeAndAfterCompleteCases() throws {
        // One ward in the data: refused from describe, before anything is prepared.
        let one = try sites(["A"], columns: ["y", "x", "ward"]) { _ in (0..<30).map { i in [Self.y(i, 0), String(i % 7), "w1"] } }
        guard let e = fitError(one, "y ~ x + (1 | ward)", GroupingLevelsError.self) else { return }
        XCTAssertTrue(e.message.hasPrefix("grouping factor \"ward\" has 1 level in the rows the model uses (all sites together)"), e.message)
        XCTAssertTrue(e.message.contains("drop (1 | ward) (with no random-effects term left"), e.message)
        // Two wards, but the second one's rows all miss y: one level among the rows used.
        let missing = try sites(["A"], columns: ["y", "x", "ward"]) { _ in
            (0..<30).map { i in [i < 20 ? Self.y(i, 0) : "NA", String(i % 7), i < 20 ? "w1" : "w2"] }
        }
        guard let m = fitError(missing, "y ~ x + (1 | site:ward)", GroupingLevelsError.self) else { return }
        XCTAssertTrue(m.message.hasPrefix("grouping factor \"site:ward\" has 1 level in the rows the model uses"), m.message)
        XCTAssertTrue(m.message.contains("Check the filter and the missing values"), m.message)
    }

    func testFactorWithAsManyLevelsAsRowsIsRefusedForLinearModels() throws {
        // Site-local row identifiers (A: 1-15, B: 101-115): 30 levels for 30 rows.
        let files = try sites(["A", "B"], columns: ["y", "x", "id", "pair"]) { s in
            (0..<15).map { i in [Self.y(i, s == "A" ? 1 : 2), String(i % 4), String((s == "A" ? 1 : 101) + i), String((s == "A" ? 1 : 101) + i / 2)] }
        }
        guard let e = fitError(files, "y ~ x + (1 | id)", GroupingLevelsError.self) else { return }
        XCTAssertEqual(e.message, "grouping factor \"id\" has as many levels (30) as the rows the model uses (30, all sites together): each group has a single row, so its variance cannot be told apart from the residual variance (lme4: number of levels of each grouping factor must be < number of observations). Drop (1 | id), or fit a model with several rows per group")
        // 16 pairs with two columns each: 32 random effects for 30 rows (lme4's check.nobs.vs.nRE).
        guard let q = fitError(files, "y ~ x + (1 + x | pair)", GroupingLevelsError.self) else { return }
        XCTAssertTrue(q.message.hasPrefix("the term (1 + x | pair) has 32 random effects (16 levels × 2 columns), not fewer than the 30 rows"), q.message)
        // One column per pair: 16 < 30 fits.
        XCTAssertEqual(try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | pair)").nGroups, ["pair": 16])
    }

    func testLevelRulesOfGeneralizedModelsAreLme4s() throws {
        let descriptions = [SiteDescription(site: "A", dataset: "data", rows: 30, variables: [
            .init(name: "y", type: .numeric, missing: .exact(0), distinct: 2, levels: [.init(level: "0", count: .exact(15)), .init(level: "1", count: .exact(15))]),
            .init(name: "g", type: .numeric, missing: .exact(0), distinct: 30, levels: nil)]),
                            SiteDescription(site: "B", dataset: "data", rows: 30, variables: [
            .init(name: "y", type: .numeric, missing: .exact(0), distinct: 2, levels: [.init(level: "0", count: .exact(15)), .init(level: "1", count: .exact(15))]),
            .init(name: "g", type: .numeric, missing: .exact(0), distinct: 30, levels: nil)])]
        let glmm = try Analysis.resolve(formula: "y ~ 1 + (1 | g)", descriptions: descriptions, family: .binomial)
        XCTAssertNoThrow(try GroupingChecks.check(glmm, levels: [60], nObs: 60), "glmer allows as many levels as rows")
        XCTAssertThrowsError(try GroupingChecks.check(glmm, levels: [1], nObs: 60))
        let lmm = try Analysis.resolve(formula: "y ~ 1 + (1 | g)", descriptions: descriptions)
        XCTAssertThrowsError(try GroupingChecks.check(lmm, levels: [60], nObs: 60))
        XCTAssertNoThrow(try GroupingChecks.check(lmm, levels: [59], nObs: 60))
    }

    // MARK: Factors that cross sites, with many levels

    /// Three sites whose `g` codes are 1…30 at every site (recurring), and
    /// `local` codes that are distinct per site (A: 1-30, B: 101-130, C: 201-230).
    func manyLevelSites(text: Bool, perSite: Int) throws -> [URL] {
        try sites(["A", "B", "C"], columns: ["y", "x", "g", "local"]) { s in
            let base = ["A": 0, "B": 100, "C": 200][s]!
            return (0..<(perSite * 3)).map { i in
                let g = i % perSite + 1
                return [Self.y(i + base, g + base), String((i * 7) % 11), text ? "code\(g)" : String(g), text ? "code\(base + g)" : String(base + g)]
            }
        }
    }

    /// Recurring codes the sites do not list (numbers beyond 20 per site):
    /// ambiguous between nested and crossed, refused with both spellings.
    func testRecurringNumericCodesBeyondTwentyPerSiteAreAmbiguous() throws {
        let files = try manyLevelSites(text: false, perSite: 30)
        guard let e = fitError(files, "y ~ x + (1 | g)", CatalogError.self) else { return }
        XCTAssertTrue(e.message.hasPrefix("grouping factor \"g\" is ambiguous: 30 of its codes occur at more than one site (A, B, C)"), e.message)
        XCTAssertTrue(e.message.contains("write (1 | site:g) or (1 | site/g)"), e.message)
        XCTAssertTrue(e.message.contains("written (1 | g)"), e.message)
        XCTAssertFalse(e.message.contains("17"), "no code in the message: \(e.message)")
        // The nested spelling fits: 90 groups, as lme4 would on (1 | site:g).
        XCTAssertEqual(try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | site:g)").nGroups, ["site:g": 90])
    }

    /// Recurring text codes the sites list are crossed with the sites: 60
    /// shared groups (each site lists its 60 codes: its max_listed_levels allows).
    func testRecurringListedTextCodesAreFittedCrossed() throws {
        let files = try manyLevelSites(text: true, perSite: 60)
        let crossed = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | g)")
        XCTAssertEqual(crossed.nGroups, ["g": 60])
        XCTAssertEqual(crossed.crossedEffects?.count, 60)
        // An interaction crosses only if every component recurs: g:local is nested (local's codes are local).
        XCTAssertEqual(try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | g:local)").nGroups, ["g:local": 180])
        guard let both = fitError(files, "y ~ x + (1 | g:x)", CatalogError.self) else { return }
        XCTAssertTrue(both.message.hasPrefix("grouping factor \"g:x\" crosses sites"), both.message)
    }

    func testLocalCodesThatDifferStillFitAsNested() throws {
        for text in [false, true] {
            let files = try manyLevelSites(text: text, perSite: text ? 60 : 30)
            let recorded = Recording(inProcessFederation(files: files))
            let implicit = try Analysis.fit(recorded.federation, dataset: "data", formula: "y ~ x + (1 | local)")
            XCTAssertEqual(recorded.hashRequests, [["local"], ["local"], ["local"]], "one describe per site asks for local's hashes")
            let explicitRecorded = Recording(inProcessFederation(files: files))
            let explicit = try Analysis.fit(explicitRecorded.federation, dataset: "data", formula: "y ~ x + (1 | site:local) + (1 | site/g)")
            XCTAssertEqual(explicitRecorded.hashRequests, [], "site-qualified factors are nested by construction: nothing hashed")
            XCTAssertEqual(explicitRecorded.describes, 3)
            XCTAssertEqual(explicit.nGroups, ["site:local": text ? 180 : 90, "g:site": text ? 180 : 90, "site": 3])
            let plain = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "y ~ x + (1 | site:local)")
            XCTAssertEqual(implicit.nGroups, ["local": text ? 180 : 90])
            XCTAssertEqual(implicit.objective, plain.objective, accuracy: 1e-8 * abs(plain.objective), "the same grouping under two spellings")
        }
    }

    func testCheckIsCompleteWhenTheFirstDescribeHadNoHashes() throws {
        // `fedmix sensitivity` describes once without a formula; the fit then asks for the hashes itself.
        let fed = inProcessFederation(files: try manyLevelSites(text: false, perSite: 30))
        let descriptions = try Analysis.describe(fed, dataset: "data")
        XCTAssertTrue(descriptions.allSatisfy { $0.levelHashes == nil })
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | g)", descriptions: descriptions,
                                              options: FitOptions(), missingData: MissingDataStrategy())) { e in
            XCTAssertTrue("\(e)".hasPrefix("grouping factor \"g\" is ambiguous: 30 of its codes"), "\(e)")
        }
    }

    func testAgentsThatSendNoHashesGetUncheckableFactorsRefused() throws {
        // As an agent older than the level hashes answers: describe without them.
        let files = try manyLevelSites(text: false, perSite: 30)
        let inner = inProcessFederation(files: files)
        let fed = Federation(channels: inner.channels.map { StripHashes($0) })
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | local)")) { e in
            let m = "\(e)"
            XCTAssertTrue(m.hasPrefix("cannot check that grouping factor \"local\" is nested in the sites: A, B, C sent neither the levels of \"local\" nor their keyed hashes"), m)
            XCTAssertTrue(m.contains("write (1 | site:local)"), m)
        }
        // The explicit spelling needs no check.
        XCTAssertEqual(try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | site:local)").nGroups, ["site:local": 90])
    }

    func testHashesUnderAnotherSaltAreASiteFailure() throws {
        let files = try manyLevelSites(text: false, perSite: 30)
        let inner = inProcessFederation(files: files)
        let fed = Federation(channels: inner.channels.enumerated().map { k, c in k == 1 ? ForgeSalt(c) : c })
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | local)")) { e in
            XCTAssertEqual("\(e)", "site \"B\": sent level hashes under another salt than the one asked for")
        }
    }

    // MARK: ScotsSec: primary schools split by secondary school

    /// Primary codes recur at secondary schools (lme4 fits 148 crossed
    /// groups) but the sites do not list them (numbers beyond 20): ambiguous.
    func testScotsSecPrimaryCrossesSecondarySchoolsAndIsRefused() throws {
        let files = try Fixtures.siteFiles("scotssec-primary")
        XCTAssertEqual(files.count, 19)
        let fed = inProcessFederation(files: files)
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "attain ~ verbal + sex + social + (1 | primary)")) { e in
            guard let c = e as? CatalogError else { return XCTFail("expected a CatalogError, got \(e)") }
            XCTAssertTrue(c.message.hasPrefix("grouping factor \"primary\" is ambiguous: 91 of its codes occur at more than one site (S01, S02, S03, S04, S05 and 14 more)"), c.message)
            XCTAssertTrue(c.message.contains("write (1 | site:primary)"), c.message)
        }
        let nested = try Analysis.fit(inProcessFederation(files: files), dataset: "data",
                                      formula: "attain ~ verbal + sex + social + (1 | site:primary)")
        let ref = try Fixtures.fit("scotssec-primary", "nested")
        XCTAssertEqual(nested.nGroups, ref["n_groups"] as! [String: Int])
        XCTAssertEqual(nested.nGroups, ["site:primary": 303])
        XCTAssertEqual(nested.nObs, 3435)
        XCTAssertEqual(nested.fixedEffects.map(\.name), ["(Intercept)", "verbal", "sexM", "social"])
    }

    /// lme4's fit of (1 | second:primary) on the pooled rows (tight bobyqa; Tests/Fixtures/tools/scotssec-primary.R).
    func testScotsSecNestedSpellingMatchesLme4() throws {
        // At θ = 0 the slope is 0 by symmetry and the curvature negative: the optimizer must move inside.
        let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("scotssec-primary")), dataset: "data",
                                 formula: "attain ~ verbal + sex + social + (1 | site:primary)")
        XCTAssertTrue(r.converged, r.messages.joined(separator: "; "))
        assertMatchesReference(r, try Fixtures.fit("scotssec-primary", "nested"), rel: 1e-5)
    }
}

/// A federation whose channels record the describe requests they pass on.
final class Recording: @unchecked Sendable {
    private let lock = NSLock()
    private var requests: [DescribeRequest] = []
    private(set) var federation: Federation!
    init(_ inner: Federation) {
        federation = Federation(channels: inner.channels.map { RecordingChannel($0, owner: self) })
    }
    func record(_ d: DescribeRequest) { lock.lock(); requests.append(d); lock.unlock() }
    var describes: Int { lock.lock(); defer { lock.unlock() }; return requests.count }
    /// The variables of each describe that asked for level hashes.
    var hashRequests: [[String]] { lock.lock(); defer { lock.unlock() }; return requests.compactMap { $0.levelHashes?.variables } }
}

final class RecordingChannel: SiteChannel, @unchecked Sendable {
    let inner: SiteChannel
    unowned let owner: Recording
    init(_ inner: SiteChannel, owner: Recording) { self.inner = inner; self.owner = owner }
    var site: String { inner.site }
    func call(_ request: Request) throws -> Reply {
        if case .describe(let d) = request { owner.record(d) }
        return try inner.call(request)
    }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    func close() { inner.close() }
}

/// A channel that drops the level hashes from describe answers (an older agent).
final class StripHashes: SiteChannel, @unchecked Sendable {
    let inner: SiteChannel
    init(_ inner: SiteChannel) { self.inner = inner }
    var site: String { inner.site }
    func call(_ request: Request) throws -> Reply {
        var r = request
        if case .describe(var d) = request { d.levelHashes = nil; r = .describe(d) }
        return try inner.call(r)
    }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    func close() { inner.close() }
}

/// A channel whose describe answers carry another salt than the one asked for.
final class ForgeSalt: SiteChannel, @unchecked Sendable {
    let inner: SiteChannel
    init(_ inner: SiteChannel) { self.inner = inner }
    var site: String { inner.site }
    func call(_ request: Request) throws -> Reply {
        let reply = try inner.call(request)
        guard case .described(var d) = reply, d.levelHashes != nil else { return reply }
        d.levelHashes!.salt = LevelHasher.randomSalt()
        return .described(d)
    }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    func close() { inner.close() }
}

import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// GLMMs through agents over loopback mutual TLS, and the failure modes a
/// GLMM meets in practice: each gets a clear message, never a NaN.
final class GLMMFederationTests: XCTestCase {
    func testCbppOverTLSEqualsInProcessAndLme4() throws {
        let pki = try TestPKI("glmm")
        defer { pki.remove() }
        let files = try Fixtures.siteFiles("cbpp")
        let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let ref = try Fixtures.fit("cbpp", "laplace")
        let options = FitOptions(family: .binomial)
        let overTLS = try tlsFederation(agents, pki: pki)
        defer { overTLS.close() }
        let remote = try Analysis.fit(overTLS, dataset: "data", formula: ref["formula"] as! String, options: options)
        let local = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: ref["formula"] as! String, options: options)
        assertSameFit(remote, local, tol: 1e-10, "cbpp over TLS")
        print(try assertGLMM(remote, ref: ref, tight: try GLMMReferenceTests.tight("cbpp", "laplace"), nAGQ: 1, label: "cbpp/laplace over TLS"))
        XCTAssertLessThanOrEqual(remote.rounds, 25)
    }

    /// Writes sites with `rows(site)` rows of (y, x, ward).
    func sites(_ rows: [String: [(y: Int, x: Double, ward: String)]]) throws -> [URL] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-glmm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return try rows.keys.sorted().map { site in
            let url = dir.appendingPathComponent("\(site).csv")
            let text = "y,x,ward\n" + rows[site]!.map { "\($0.y),\($0.x),\($0.ward)" }.joined(separator: "\n") + "\n"
            try text.write(to: url, atomically: true, encoding: .utf8)
            return url
        }
    }

    func simulated(sites: Int, rows: Int, seed: UInt64, transform: (Int, Int, inout (y: Int, x: Double, ward: String)) -> Void = { _, _, _ in })
        -> [String: [(y: Int, x: Double, ward: String)]] {
        var rng = SeededRandom(seed: seed)
        var out: [String: [(y: Int, x: Double, ward: String)]] = [:]
        for s in 0..<sites {
            let effect = 0.7 * rng.normal()
            out["s\(s)"] = (0..<rows).map { i in
                let x = rng.normal()
                let p = 1 / (1 + exp(-(-0.4 + 0.8 * x + effect)))
                var row = (y: rng.uniform() < p ? 1 : 0, x: (x * 1000).rounded() / 1000, ward: "w\(i % 3)")
                transform(s, i, &row)
                return row
            }
        }
        return out
    }

    func testSeparationIsReportedWithAdvice() throws {
        // y is 1 exactly when x > 0 at every site: complete separation
        let data = simulated(sites: 4, rows: 30, seed: 3) { _, _, r in r.y = r.x > 0 ? 1 : 0 }
        let fed = inProcessFederation(files: try sites(data))
        XCTAssertThrowsError(try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | site)", options: FitOptions(family: .binomial))) { e in
            let m = "\(e)"
            XCTAssertTrue(m.contains("separated"), m)
            XCTAssertTrue(m.contains("x"), m)
            XCTAssertFalse(m.lowercased().contains("nan"), m)
        }
    }

    func testSiteWithAllZeroOutcomesAndSiteWithOneGroupFit() throws {
        let data = simulated(sites: 5, rows: 40, seed: 11) { s, _, r in
            if s == 0 { r.y = 0 }            // a site where the event never occurs
            if s == 1 { r.ward = "only" }    // a site with a single ward
        }
        let fed = inProcessFederation(files: try sites(data))
        let r = try Analysis.fit(fed, dataset: "data", formula: "y ~ x + (1 | site) + (1 | site:ward)", options: FitOptions(family: .binomial))
        XCTAssertTrue(r.converged, r.messages.joined())
        XCTAssertEqual(r.nGroups["site:ward"], 4 * 3 + 1)
        let zero = r.sites.first { $0.site == "s0" }!
        XCTAssertLessThan(zero.effects["(Intercept)"]!, 0, "the all-zero site is estimated below average")
        let json = try r.json()
        XCTAssertFalse(json.contains("NaN") || json.contains("nan"), "no NaN in the output")
        for f in r.fixedEffects { XCTAssertTrue(f.stdError.isFinite && f.pValue.isFinite) }
    }

    func testModesThatDoNotConvergeNameTheProblem() throws {
        let data = simulated(sites: 1, rows: 50, seed: 5)
        let file = try sites(data)[0]
        let spec = try Analysis.resolve(formula: "y ~ x + (1 | site:ward)",
                                        descriptions: try Analysis.describe(inProcessFederation(files: [file]), dataset: "data"),
                                        family: .binomial)
        let site = try SiteDesign(table: try CSVReader.read(path: file.path), spec: spec, dataset: "data").glmm!
        site.maxIterations = 1
        XCTAssertThrowsError(try site.objective(theta: [3], beta: [4, -6])) { e in
            XCTAssertEqual(e as? GLMMError, .modesDidNotConverge(iterations: 1))
            XCTAssertTrue("\(e)".contains("did not converge"), "\(e)")
        }
    }
}

extension GLMMFederationTests {
    /// Binomial prior weights are trials, as in glm/glmer: the proportion
    /// incidence/size with weights size is cbind(incidence, size − incidence).
    func testBinomialWeightsAreTrials() throws {
        let files = try Fixtures.siteFiles("cbpp")
        let counts = try Analysis.fit(inProcessFederation(files: files), dataset: "data",
                                      formula: "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)",
                                      options: FitOptions(family: .binomial))
        var options = FitOptions(family: .binomial)
        options.weights = "size"
        let weighted = try Analysis.fit(inProcessFederation(files: files), dataset: "data",
                                        formula: "I(incidence/size) ~ factor(period) + (1 | site)", options: options)
        XCTAssertEqual(weighted.objective, counts.objective, accuracy: 1e-9 * counts.objective)
        for (a, b) in zip(weighted.fixedEffects, counts.fixedEffects) {
            XCTAssertEqual(a.estimate, b.estimate, accuracy: 1e-7 * max(1, abs(b.estimate)))
            XCTAssertEqual(a.stdError, b.stdError, accuracy: 1e-6 * b.stdError)
        }
    }

    /// Poisson prior weights multiply a row's log-likelihood: weight 2 is the row twice.
    func testPoissonWeightsMultiplyRows() throws {
        var rng = SeededRandom(seed: 17)
        var plain: [String: [(y: Int, x: Double, ward: String)]] = [:]
        for s in 0..<4 {
            plain["s\(s)"] = (0..<25).map { _ in
                let x = (rng.normal() * 1000).rounded() / 1000
                let mu = exp(0.3 + 0.5 * x)
                var k = 0, p = exp(-mu), sum = p
                let u = rng.uniform()
                while u > sum && k < 50 { k += 1; p *= mu / Double(k); sum += p }
                return (k, x, "w")
            }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-pw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var weightedFiles: [URL] = [], doubledFiles: [URL] = []
        for (site, rows) in plain.sorted(by: { $0.key < $1.key }) {
            let w = dir.appendingPathComponent("\(site).csv"), d = dir.appendingPathComponent("d-\(site).csv")
            try ("y,x,w,site\n" + rows.enumerated().map { "\($1.y),\($1.x),\($0 % 2 == 0 ? 2 : 1),\(site)" }.joined(separator: "\n") + "\n")
                .write(to: w, atomically: true, encoding: .utf8)
            try ("y,x,site\n" + rows.enumerated().flatMap { i, r in Array(repeating: "\(r.y),\(r.x),\(site)", count: i % 2 == 0 ? 2 : 1) }
                .joined(separator: "\n") + "\n").write(to: d, atomically: true, encoding: .utf8)
            weightedFiles.append(w); doubledFiles.append(d)
        }
        var options = FitOptions(family: .poisson)
        options.weights = "w"
        let weighted = try Analysis.fit(inProcessFederation(files: weightedFiles), dataset: "data", formula: "y ~ x + (1 | site)", options: options)
        // the doubled files are named d-s0…: their site column must match, so compare through a site-less model
        let doubled = try Analysis.fit(inProcessFederation(files: doubledFiles, siteColumn: nil), dataset: "data",
                                       formula: "y ~ x + (1 | site)", options: FitOptions(family: .poisson))
        XCTAssertEqual(weighted.objective, doubled.objective, accuracy: 1e-9 * abs(doubled.objective))
        for (a, b) in zip(weighted.fixedEffects, doubled.fixedEffects) {
            XCTAssertEqual(a.estimate, b.estimate, accuracy: 1e-7 * max(1, abs(b.estimate)))
        }
    }
}

import XCTest
import Foundation
import Coordinator
import SiteAgent
import Protocol
import Math

/// The covariance of the fixed effects (`vcov` in the JSON) against lme4's
/// `vcov()` on the pooled rows (Tests/Fixtures/vcov-references.json, written
/// by Tests/Fixtures/tools/vcov-references.R), fitted in-process and through
/// agents over TLS, and lme4's "Correlation of Fixed Effects" block in the text.
final class VcovReferenceTests: XCTestCase {
    func vcovReference(_ key: String) throws -> [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("vcov-references.json")
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return all[key] as! [String: Any]
    }

    /// Asserts the fit's vcov is a symmetric p×p matrix whose diagonal is the
    /// squared standard errors (to 1e-12 relative), and that it agrees with
    /// lme4's `v`: on the diagonal as standard errors √Vᵢᵢ to `tol` relative
    /// (the SE tolerance of the case), off it in correlation units,
    /// |Vᵢⱼ − vᵢⱼ| / √(vᵢᵢvⱼⱼ) ≤ `tol`. Returns the largest of these errors.
    @discardableResult
    func assertVcov(_ r: FitResult, _ v: [[Double]], tol: Double, _ label: String,
                    file: StaticString = #filePath, line: UInt = #line) -> Double {
        let p = r.fixedEffects.count
        XCTAssertEqual(r.vcov.count, p, label, file: file, line: line)
        XCTAssertEqual(v.count, p, label, file: file, line: line)
        guard r.vcov.count == p, v.count == p, r.vcov.allSatisfy({ $0.count == p }) else { return .infinity }
        var worst = 0.0
        for i in 0..<p {
            let se = r.fixedEffects[i].stdError
            XCTAssertLessThanOrEqual(abs(r.vcov[i][i] - se * se), 1e-12 * se * se, "\(label): vcov[\(i)][\(i)] is not SE²", file: file, line: line)
            for j in 0..<p {
                XCTAssertEqual(r.vcov[i][j], r.vcov[j][i], "\(label): vcov not symmetric at \(i),\(j)", file: file, line: line)
                let e = i == j ? relativeError(r.vcov[i][i].squareRoot(), v[i][i].squareRoot())
                               : abs(r.vcov[i][j] - v[i][j]) / (v[i][i] * v[j][j]).squareRoot()
                worst = max(worst, e)
                XCTAssertLessThanOrEqual(e, tol, "\(label): vcov[\(i)][\(j)] fedmix \(r.vcov[i][j]), lme4 \(v[i][j])", file: file, line: line)
            }
        }
        return worst
    }

    /// The JSON carries the same numbers, bit for bit, as rows in fixed-effect
    /// order (read with JSONDecoder: Foundation's JSONSerialization on Linux
    /// does not parse every shortest round-trip decimal back to its double).
    func assertJSONVcov(_ r: FitResult, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        struct Rows: Decodable { var vcov: [[Double]] }
        let rows = try JSONDecoder().decode(Rows.self, from: Data(try r.json().utf8)).vcov
        XCTAssertEqual(rows.map { $0.map(\.bitPattern) }, r.vcov.map { $0.map(\.bitPattern) }, "\(label): JSON vcov", file: file, line: line)
    }

    /// Sleepstudy REML (random effects by subject within 3 sites): lme4's vcov
    /// at its SE tolerances (1e-4 vs its default fit, 1e-6 vs its tight fit),
    /// over TLS and in-process alike; the text has lme4's block exactly.
    func testSleepstudyREMLMatchesLme4OverTLS() throws {
        let ref = try vcovReference("sleepstudy/reml")
        let formula = ref["formula"] as! String
        let files = try Fixtures.siteFiles("sleepstudy")
        let pki = try TestPKI("vcov-lmm")
        defer { pki.remove() }
        let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let overTLS = try tlsFederation(agents, pki: pki)
        defer { overTLS.close() }
        let options = FitOptions(method: .reml)
        let remote = try Analysis.fit(overTLS, dataset: "data", formula: formula, options: options)
        let local = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options)
        assertSameFit(remote, local, tol: 1e-10, "sleepstudy over TLS")
        XCTAssertEqual(remote.fixedEffects.map(\.name), ref["names"] as! [String])
        var report: [String] = []
        for (r, how) in [(remote, "over TLS"), (local, "in-process")] {
            let d = assertVcov(r, ref["vcov"] as! [[Double]], tol: 1e-4, "sleepstudy \(how) vs lme4")
            let t = assertVcov(r, ref["vcov_tight"] as! [[Double]], tol: 1e-6, "sleepstudy \(how) vs tight lme4")
            try assertJSONVcov(r, "sleepstudy \(how)")
            report.append("sleepstudy/reml \(how): worst vcov error vs lme4 \(d), vs tight lme4 \(t)")
        }
        print(report.joined(separator: "\n"))
        let block = ref["correlation_block"] as! String
        XCTAssertEqual(block, "Correlation of Fixed Effects:\n     (Intr)\nDays -0.138\n")
        let text = Report.text(remote)
        XCTAssertTrue(text.contains("\n" + block + "\n"), text)
        // right after the fixed-effects table (lmerTest's columns), as lme4 prints it
        XCTAssertTrue(text.contains("Days          10.467      1.546 17.000    6.77 3.26e-06\n\n" + block), text)
        // no correlation block or empty Corr header for a model with one fixed effect and no correlations
        let one = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "Reaction ~ 1 + (1 | Subject)", options: options)
        XCTAssertEqual(one.vcov.count, 1)
        let oneText = Report.text(one)
        XCTAssertFalse(oneText.contains("Correlation"), oneText)
        XCTAssertFalse(oneText.contains("Corr"), oneText)
        XCTAssertTrue(oneText.contains(" Groups   Name        Variance Std.Dev.\n"), oneText)
    }

    /// cbpp, binomial Laplace (β standardized inside the fit and mapped back):
    /// lme4's vcov from its tight fit at the GLMM SE tolerance (1e-3), over TLS.
    func testCbppLaplaceMatchesLme4OverTLS() throws {
        let ref = try vcovReference("cbpp/laplace")
        let formula = ref["formula"] as! String
        let files = try Fixtures.siteFiles("cbpp")
        let pki = try TestPKI("vcov-glmm")
        defer { pki.remove() }
        let agents = try files.map { try LoopbackAgent(file: $0, pki: pki) }
        defer { agents.forEach { $0.stop() } }
        let overTLS = try tlsFederation(agents, pki: pki)
        defer { overTLS.close() }
        let options = FitOptions(family: .binomial)
        let remote = try Analysis.fit(overTLS, dataset: "data", formula: formula, options: options)
        let local = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options)
        assertSameFit(remote, local, tol: 1e-10, "cbpp over TLS")
        XCTAssertEqual(remote.fixedEffects.map(\.name), ref["names"] as! [String])
        for (i, row) in remote.vcov.enumerated() {
            for (j, x) in row.enumerated() {
                XCTAssertLessThanOrEqual(abs(x - local.vcov[i][j]), 1e-10 * (remote.vcov[i][i] * remote.vcov[j][j]).squareRoot())
            }
        }
        let t = assertVcov(remote, ref["vcov_tight"] as! [[Double]], tol: 1e-3, "cbpp over TLS vs tight lme4")
        try assertJSONVcov(remote, "cbpp over TLS")
        let text = Report.text(remote)
        XCTAssertTrue(text.contains("\nCorrelation of Fixed Effects:\n            (Intr) fct()2 fct()3\nfactr(prd)2 "), text)
        print("cbpp/laplace over TLS: worst vcov error vs tight lme4 \(t)")
    }

    /// The exact centring of a site-grouped LMM (a covariate far from 0 is
    /// fitted as x − m and mapped back): the vcov is the analyst's, i.e. that
    /// of the uncentred model, A·V·Aᵀ with A the map (β₀, β₁) ↦ (β₀ − m·β₁, β₁)
    /// from the fit on Days to the fit on Year = Days + 2000.
    func testCentredFitReportsTheAnalystsCovariance() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-vcov-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var files: [URL] = []
        for f in try Fixtures.siteFiles("sleepstudy-weighted") {   // site = Subject
            let lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n")
            let header = lines[0].split(separator: ",").map(String.init)
            let days = try XCTUnwrap(header.firstIndex(of: "\"Days\""))
            var out = lines[0] + ",\"Year\"\n"
            for l in lines.dropFirst() {
                let cells = l.split(separator: ",", omittingEmptySubsequences: false)
                out += l + "," + String(Double(cells[days])! + 2000) + "\n"
            }
            let url = dir.appendingPathComponent(f.lastPathComponent)
            try out.write(to: url, atomically: true, encoding: .utf8)
            files.append(url)
        }
        let options = FitOptions(method: .reml)
        let plain = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "Reaction ~ Days + (Days | site)", options: options)
        let shifted = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: "Reaction ~ Year + (Year | site)", options: options)
        XCTAssertEqual(shifted.objective, plain.objective, accuracy: 1e-7)
        let v = plain.vcov, m = 2000.0
        let expected = [[v[0][0] - 2 * m * v[0][1] + m * m * v[1][1], v[0][1] - m * v[1][1]],
                        [v[1][0] - m * v[1][1], v[1][1]]]
        let worst = assertVcov(shifted, expected, tol: 1e-5, "Year = Days + 2000 vs Days")
        print("centring: worst vcov error of the Year fit vs the mapped Days fit \(worst)")
    }
}

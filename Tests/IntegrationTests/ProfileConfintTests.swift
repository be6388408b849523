import XCTest
import Coordinator
import SiteAgent
import Protocol
import Math

/// lme4's confint(method = "profile") and Wald intervals, and the ICC's
/// profile interval (Tests/Fixtures/inference/references.json, sections
/// `confint_profile` and `icc`).
///
/// How the profile bounds are compared: against `profile_tight`, the roots of
/// ζ(ψ) = ∓z₀.₉₇₅ solved by uniroot on the ML profile (checked there to 1e-10
/// in ζ²), at 1e-4 relative. lme4's own `profile` values come from a spline
/// through a grid and differ from the roots by up to 6e-5 absolute, 1.6e-4
/// relative; they are reported, not asserted.
final class ProfileConfintTests: XCTestCase {
    static var references: [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("inference/references.json")
        return try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    static func section(_ name: String, _ key: String) -> [String: Any] {
        (references[name] as! [String: Any])[key] as! [String: Any]
    }

    /// (parameter, lower, upper) rows of a fixture list.
    static func rows(_ list: Any?) -> [(String, Double?, Double?)] {
        (list as! [[String: Any]]).map { ($0["parameter"] as! String, $0["lower"] as? Double, $0["upper"] as? Double) }
    }

    static let cases = [("sleepstudy", "sleepstudy"), ("exam", "exam")]

    /// Every bound within 1e-4 relative of profile_tight (returns the worst
    /// errors against profile_tight and lme4's spline).
    @discardableResult
    static func assertProfileMatches(_ r: FitResult, _ ref: [String: Any], file: StaticString = #filePath, line: UInt = #line) -> (tight: Double, spline: Double) {
        let tight = rows(ref["profile_tight"]), spline = rows(ref["profile"])
        guard let ci = r.confint else { XCTFail("no confint", file: file, line: line); return (.nan, .nan) }
        XCTAssertEqual(ci.map(\.parameter), tight.map(\.0), file: file, line: line)
        var worstTight = 0.0, worstSpline = 0.0
        for (row, (t, s)) in zip(ci, zip(tight, spline)) {
            XCTAssertEqual(row.method, "profile")
            for (mine, theirs, lme4, side) in [(row.lower, t.1!, s.1!, "lower"), (row.upper, t.2!, s.2!, "upper")] {
                guard let mine else { XCTFail("\(row.parameter) \(side): no bound", file: file, line: line); continue }
                let e = relativeError(mine, theirs)
                worstTight = max(worstTight, e); worstSpline = max(worstSpline, relativeError(mine, lme4))
                XCTAssertLessThanOrEqual(e, 1e-4, "\(row.parameter) \(side): fedmix \(mine), profile_tight \(theirs)", file: file, line: line)
            }
        }
        return (worstTight, worstSpline)
    }

    func testProfileIntervalsMatchTheProfileEquationInProcess() throws {
        var report: [String] = []
        for (name, file) in Self.cases {
            let ref = Self.section("confint_profile", name)
            var options = FitOptions(method: .reml)
            options.confint = .profile
            let fed = inProcessFederation(files: try Fixtures.siteFiles(file))
            let r = try Analysis.fit(fed, dataset: "data", formula: ref["formula"] as! String, options: options)
            let worst = Self.assertProfileMatches(r, ref)
            let p = try XCTUnwrap(r.profile)
            XCTAssertEqual(p.mlDeviance, ref["ml_deviance_min"] as! Double, accuracy: 1e-8 * p.mlDeviance)
            if name == "exam" { XCTAssertEqual(p.rounds, 0, "site-grouped: the profile needs no round") }
            else { XCTAssertLessThanOrEqual(p.rounds, 40, "within-site: batched rounds") }
            report.append("\(name): worst rel vs profile_tight \(worst.tight), vs lme4 spline \(worst.spline); profile rounds \(p.rounds), steps \(p.batches), points \(p.points), sent \(p.bytesSent) B, received \(p.bytesReceived) B")
        }
        print(report.joined(separator: "\n"))
    }

    /// Over mutual TLS: the batched evaluate requests cross the wire.
    func testProfileIntervalsOverTLS() throws {
        let pki = try TestPKI("profile-confint")
        defer { pki.remove() }
        for (name, file) in Self.cases {
            let ref = Self.section("confint_profile", name)
            let agents = try Fixtures.siteFiles(file).map { try LoopbackAgent(file: $0, pki: pki) }
            defer { agents.forEach { $0.stop() } }
            let fed = try tlsFederation(agents, pki: pki)
            defer { fed.close() }
            var options = FitOptions(method: .reml)
            options.confint = .profile
            let r = try Analysis.fit(fed, dataset: "data", formula: ref["formula"] as! String, options: options)
            let worst = Self.assertProfileMatches(r, ref)
            print("\(name) over TLS: worst rel vs profile_tight \(worst.tight); profile rounds \(r.profile!.rounds), received \(r.profile!.bytesReceived) B")
            if name == "sleepstudy" {
                // Each point is one evaluate answer: the agents' audit shows batched evaluates.
                let evaluates = agents.map { $0.audit.types(.received)["evaluate"] ?? 0 }
                XCTAssertTrue(evaluates.allSatisfy { $0 > 0 })
            }
        }
    }

    func testWaldIntervalsAreLme4s() throws {
        for (name, file) in Self.cases {
            let ref = Self.section("confint_profile", name)
            var options = FitOptions(method: .reml)
            options.confint = .wald
            let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles(file)), dataset: "data",
                                     formula: ref["formula"] as! String, options: options)
            let wald = Self.rows(ref["wald"])
            let ci = try XCTUnwrap(r.confint)
            XCTAssertEqual(ci.map(\.parameter), wald.map(\.0))
            for (row, w) in zip(ci, wald) {
                XCTAssertEqual(row.method, "Wald")
                if let lo = w.1, let hi = w.2 {
                    // Relative to the interval's width (a bound can be near 0); lme4's
                    // default REML fit stops within ~1e-6 of the optimum.
                    XCTAssertLessThanOrEqual(abs(row.lower! - lo) / (hi - lo), 1e-5, "\(name) \(row.parameter)")
                    XCTAssertLessThanOrEqual(abs(row.upper! - hi) / (hi - lo), 1e-5, "\(name) \(row.parameter)")
                } else {
                    XCTAssertNil(row.lower); XCTAssertNil(row.upper)
                }
            }
            // Null bounds are written as null, as R's NA.
            XCTAssertTrue(try r.json().contains("\"lower\" : null"))
        }
    }

    /// The ICC's interval: the fit's own criterion profiled in θ = σ_g/σ,
    /// both ends mapped by θ²/(1 + θ²).
    func testICCProfileIntervals() throws {
        var report: [String] = []
        for key in ["sleepstudy_site", "sleepstudy_subject", "exam_site"] {
            let ref = Self.section("icc", key)
            let file = ref["case"] as! String
            for method in [EstimationMethod.reml, .ml] {
                let expected = ref[method == .reml ? "reml" : "ml"] as! [String: Any]
                let ci = expected["icc_ci95"] as! [String: Any]
                var options = FitOptions(method: method)
                options.confint = .profile
                let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles(file)), dataset: "data",
                                         formula: ref["formula"] as! String, options: options)
                let icc = try XCTUnwrap(r.iccConfint?.first)
                XCTAssertLessThanOrEqual(relativeError(icc.icc, expected["icc"] as! Double), 1e-5, "\(key) \(method)")
                let eLo = relativeError(try XCTUnwrap(icc.lower), ci["lower"] as! Double)
                let eHi = relativeError(try XCTUnwrap(icc.upper), ci["upper"] as! Double)
                XCTAssertLessThanOrEqual(max(eLo, eHi), 1e-6, "\(key) \(method): \(icc)")
                report.append("ICC \(key) \(method.rawValue): [\(icc.lower!), \(icc.upper!)], worst rel \(max(eLo, eHi)), profile rounds \(r.profile!.rounds)")
            }
        }
        print(report.joined(separator: "\n"))
    }

    func testWithoutTheOptionTheResultIsUnchanged() throws {
        let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("exam")), dataset: "data",
                                 formula: "normexam ~ standLRT + sex + (1 | site)", options: FitOptions())
        XCTAssertNil(r.confint)
        let json = try r.json()
        for key in ["\"confint\"", "\"icc_confint\"", "\"profile\""] { XCTAssertFalse(json.contains(key), key) }
        XCTAssertFalse(Report.text(r).contains("Confidence intervals"))
    }

    func testProfileIsRefusedForGLMMsAndWaldIsNot() throws {
        let files = try Fixtures.siteFiles("cbpp")
        var options = FitOptions(family: .binomial)
        options.confint = .profile
        let formula = "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)"
        let e = thrownError { try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options) }
        XCTAssertEqual((e as? SettingError)?.settings, [.confint, .confint], "\(String(describing: e))")
        options.confint = .wald
        let r = try Analysis.fit(inProcessFederation(files: files), dataset: "data", formula: formula, options: options)
        XCTAssertEqual(r.confint?.map(\.parameter), [".sig01"] + r.fixedEffects.map(\.name))
        XCTAssertNotNil(r.confint?.last?.lower)
    }

    // MARK: the batched evaluate message

    func testBatchedEvaluateAnswersEachPointAsASingleEvaluation() throws {
        let file = try Fixtures.siteFiles("sleepstudy")[0]
        let site = file.deletingPathExtension().lastPathComponent
        let service = SiteService(site: site, datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: "site", policy: .off)
        let fed = Federation(channels: [InProcessChannel(site: site) { service.handle(line: $0) }])
        let descriptions = try Analysis.describe(fed, dataset: "data")
        let spec = try Analysis.resolve(formula: "Reaction ~ Days + (Days | Subject)", descriptions: descriptions)
        guard case .prepared = service.handle(.prepare(PrepareRequest(session: "b1", dataset: "data", model: spec))) else { return XCTFail() }
        let points = [[1.0, 0.0, 1.0], [0.9, 0.1, 0.2], [2.0, -0.5, 0.0]]
        guard case .contribution(let batch) = service.handle(.evaluate(EvaluateRequest(session: "b1", theta: points[0], order: 2,
                                                                                     thetas: Array(points.dropFirst())))) else { return XCTFail() }
        let all = try batch.contributions()
        XCTAssertEqual(all.count, 3)
        for (k, theta) in points.enumerated() {
            guard case .contribution(let one) = service.handle(.evaluate(EvaluateRequest(session: "b1", theta: theta, order: 2))) else { return XCTFail() }
            XCTAssertEqual(try one.contribution(), all[k])
        }
        // Over the wire: the line decodes to the same answer.
        let line = try LineCodec.encode(Reply.contribution(batch), id: 7)
        guard case .contribution(let back) = try LineCodec.decodeReply(line).reply else { return XCTFail() }
        XCTAssertEqual(back, batch)
        // A point outside the bounds is refused, like theta itself.
        guard case .error(let e) = service.handle(.evaluate(EvaluateRequest(session: "b1", theta: points[0], order: 0, thetas: [[-1, 0, 1]]))) else { return XCTFail() }
        XCTAssertEqual(e.code, .invalidRequest)
    }

    /// Batching saves latency, not the site's budget: each θ point of a
    /// batch counts toward max_rounds_per_session.
    func testEachPointOfABatchCountsAsARound() throws {
        let file = try Fixtures.siteFiles("sleepstudy")[0]
        let site = file.deletingPathExtension().lastPathComponent
        var policy = DisclosurePolicy.off
        policy.maxRoundsPerSession = 10
        let service = SiteService(site: site, datasets: ["data": .csv(path: file.path, types: [:])], siteColumn: "site", policy: policy)
        let fed = Federation(channels: [InProcessChannel(site: site) { service.handle(line: $0) }])
        let spec = try Analysis.resolve(formula: "Reaction ~ Days + (Days | Subject)", descriptions: try Analysis.describe(fed, dataset: "data"))
        guard case .prepared = service.handle(.prepare(PrepareRequest(session: "b2", dataset: "data", model: spec))) else { return XCTFail() }
        // prepare (1) + 8 points = 9 rounds: answered.
        let eight = (0..<8).map { [1.0 + Double($0) * 0.1, 0.0, 1.0] }
        guard case .contribution = service.handle(.evaluate(EvaluateRequest(session: "b2", theta: eight[0], order: 0,
                                                                             thetas: Array(eight.dropFirst())))) else { return XCTFail() }
        // 2 more points would make 11 > 10: refused by the rule, although it is one request.
        guard case .error(let e) = service.handle(.evaluate(EvaluateRequest(session: "b2", theta: eight[0], order: 0, thetas: [eight[1]]))) else {
            return XCTFail("a batch beyond the round budget was answered")
        }
        XCTAssertTrue(e.message.contains("max_rounds_per_session"), e.message)
    }

    func testBatchedEvaluateDecodingValidates() throws {
        let base = try LineCodec.encode(.evaluate(EvaluateRequest(session: "s", theta: [1, 0, 1], order: 2, thetas: [[7, 7, 7]])), id: 1)
        XCTAssertTrue(base.contains("\"thetas\":[[7,7,7]]"), base)
        func decode(_ thetas: String) -> Error? {
            do { _ = try LineCodec.decodeRequest(base.replacingOccurrences(of: "[[7,7,7]]", with: thetas)); return nil } catch { return error }
        }
        XCTAssertNil(decode("[[1,0,1],[2,0,1]]"))
        XCTAssertNotNil(decode("[]"))
        XCTAssertNotNil(decode("[[1,0]]"))
        let many = "[" + Array(repeating: "[1,0,1]", count: ProtocolLimits.maxExtraThetaPoints + 1).joined(separator: ",") + "]"
        XCTAssertNotNil(decode(many))
        let most = "[" + Array(repeating: "[1,0,1]", count: ProtocolLimits.maxExtraThetaPoints).joined(separator: ",") + "]"
        XCTAssertNil(decode(most))
    }
}

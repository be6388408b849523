import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent
import Math

/// A coordinator holding a valid certificate chooses every number of a GEE
/// round: β, α, φ and the bread B of the small-sample corrections. These
/// tests send crafted rounds that would make a site's sums describe one
/// cluster (one patient) or one row, and check the agent refuses each with
/// a specific code and message (docs/PRIVACY.md "GEE"), in-process and over
/// loopback mutual TLS; honest rounds at the same session are answered.
final class GEEAttackTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("gee-attack")
    override class func tearDown() { pki.remove() }

    /// The off policy with only the dominance rule on (max_row_share 0.5).
    static var shareOnly: DisclosurePolicy { var p = DisclosurePolicy.off; p.maxRowShare = 0.5; return p }

    /// 20 patients of 2 visits and one of 6: the 6-visit patient is the
    /// only cluster whose exchangeable correlation becomes singular at
    /// α = −1/5.
    static func oneLargeCluster() throws -> URL {
        var lines = ["id,x,y,z"]
        var row = 0
        for id in 1...21 {
            for _ in 0..<(id == 21 ? 6 : 2) {
                row += 1
                let x = Double(row % 11) + 1
                lines.append("\(id),\(x),\(Int(2 + sin(Double(row)) * 1.5 + x / 4)),\(Double(row) / 10)")
            }
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gee-attack-\(getpid()).csv")
        try lines.joined(separator: "\n").appending("\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func spec(_ family: Family, _ link: Link, response: String, x: String) -> ModelSpec {
        var s = ModelSpec(formula: "\(response) ~ \(x)", family: family, link: link, response: .value(.variable(response)),
                          fixed: [DesignColumn(name: "(Intercept)", expr: .number(1)), DesignColumn(name: x, expr: .variable(x))], terms: [])
        s.cluster = .withinSite(["id"])
        s.gee = GEESpec(correlation: .exchangeable)
        return s
    }

    static func ask(_ service: SiteService, _ r: Request) throws -> Reply {
        try LineCodec.decodeReply(service.handle(line: try LineCodec.encode(r, id: 1))).reply
    }

    static func round(_ session: String, beta: [Double], alpha: Double, bread: [Double]? = nil) -> Request {
        .evaluate(EvaluateRequest(session: session, theta: [], order: 0, beta: beta, gee: GEEPoint(alpha: alpha, scale: 1, bread: bread)))
    }

    static func refusal(_ reply: Reply, file: StaticString = #filePath, line: UInt = #line) -> ErrorReply? {
        guard case .error(let e) = reply else { XCTFail("the crafted round was answered", file: file, line: line); return nil }
        return e
    }

    /// A bread larger than the inverse of the site's own information would
    /// push one cluster's leverage toward 1 and amplify its estimating
    /// function in the corrected meats without bound; it is refused. The
    /// honest bread (the inverse of the information, here one site's) is
    /// answered; a bread that is not symmetric is refused as invalid.
    func testCraftedBreadIsRefused() throws {
        let file = try GEETests.siteFiles("respiratory")[0]
        let service = SiteService(site: "c1", datasets: ["data": .csv(path: file.path, types: [:])], policy: .off)
        _ = try Self.ask(service, .prepare(PrepareRequest(session: "g", dataset: "data",
                                                          model: Self.spec(.binomial, .logit, response: "outcome", x: "age"))))
        let beta = [-0.5, 0.01]
        guard case .geeStep(let plain) = try Self.ask(service, Self.round("g", beta: beta, alpha: 0.2)) else { return XCTFail() }
        let honest = try Dense.inverseFromCholesky(Dense.cholesky(Matrix(rows: 2, cols: 2, data: plain.information)))
        guard case .geeStep(let corrected) = try Self.ask(service, Self.round("g", beta: beta, alpha: 0.2, bread: honest.data)) else {
            return XCTFail("the honest bread was refused")
        }
        XCTAssertNotNil(corrected.meatMD)
        XCTAssertEqual(corrected.information, plain.information, "the same sums with or without the bread")

        // 1.5 times the honest bread: leverages up to 1.5 times the site's own.
        if let e = Self.refusal(try Self.ask(service, Self.round("g", beta: beta, alpha: 0.2, bread: honest.data.map { $0 * 1.5 }))) {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("bread is larger than the inverse of this site's own information"), e.message)
            XCTAssertTrue(e.message.contains("rule max_row_share, leverage"), e.message)
        }
        var skew = honest.data
        skew[1] += 1e-3 * abs(skew[0])
        if let e = Self.refusal(try Self.ask(service, Self.round("g", beta: beta, alpha: 0.2, bread: skew))) {
            XCTAssertEqual(e.code, .invalidRequest)
            XCTAssertTrue(e.message.contains("bread must be a symmetric positive definite p×p matrix"), e.message)
        }
        if let e = Self.refusal(try Self.ask(service, Self.round("g", beta: beta, alpha: 0.2, bread: [1, 0, 0, -1]))) {
            XCTAssertEqual(e.code, .invalidRequest)
            XCTAssertTrue(e.message.contains("symmetric positive definite"), e.message)
        }
    }

    /// An exchangeable α just above −1/(n − 1) for the largest cluster makes
    /// that cluster's working covariance nearly singular: its sums dominate
    /// the answer (shown with the rule off), and the agent refuses them.
    func testAlphaNearTheEdgeIsRefused() throws {
        let file = try Self.oneLargeCluster()
        defer { try? FileManager.default.removeItem(at: file) }
        let spec = Self.spec(.gaussian, .identity, response: "y", x: "x")
        let crafted = -0.2 + 1e-7
        let open = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: .off)
        _ = try Self.ask(open, .prepare(PrepareRequest(session: "g", dataset: "data", model: spec)))
        guard case .geeStep(let honest) = try Self.ask(open, Self.round("g", beta: [2, 0.2], alpha: 0.1)),
              case .geeStep(let dominated) = try Self.ask(open, Self.round("g", beta: [2, 0.2], alpha: crafted)) else { return XCTFail() }
        XCTAssertGreaterThan(dominated.information[0], 1e4 * honest.information[0], "the weakness: one patient's sums swamp the answer")

        let guarded = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: Self.shareOnly)
        _ = try Self.ask(guarded, .prepare(PrepareRequest(session: "g", dataset: "data", model: spec)))
        guard case .geeStep(let same) = try Self.ask(guarded, Self.round("g", beta: [2, 0.2], alpha: 0.1)) else {
            return XCTFail("an honest round was refused")
        }
        XCTAssertEqual(same, honest)
        if let e = Self.refusal(try Self.ask(guarded, Self.round("g", beta: [2, 0.2], alpha: crafted))) {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("one cluster would carry more than 50% of the GEE information Σ DᵀV⁻¹D at this site"), e.message)
            XCTAssertTrue(e.message.contains("rule max_row_share, dominance"), e.message)
        }
    }

    /// A Poisson β steep in one column makes exp(zβ) of the row with the
    /// largest z swamp its cluster's information and meat: refused.
    func testSteepBetaIsRefused() throws {
        let file = try Self.oneLargeCluster()
        defer { try? FileManager.default.removeItem(at: file) }
        let service = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: Self.shareOnly)
        _ = try Self.ask(service, .prepare(PrepareRequest(session: "g", dataset: "data", model: Self.spec(.poisson, .log, response: "y", x: "z"))))
        guard case .geeStep = try Self.ask(service, Self.round("g", beta: [0.5, 0.1], alpha: 0.1)) else { return XCTFail("an honest round was refused") }
        if let e = Self.refusal(try Self.ask(service, Self.round("g", beta: [0, 8], alpha: 0.1))) {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("rule max_row_share, dominance"), e.message)
        }
    }

    /// The same crafted α and bread through an agent over loopback mutual
    /// TLS, sent by a raw client holding the coordinator certificate.
    func testCraftedRoundsRefusedOverTLS() throws {
        let file = try Self.oneLargeCluster()
        defer { try? FileManager.default.removeItem(at: file) }
        let agent = try LoopbackAgent(file: file, pki: Self.pki, policy: Self.shareOnly)
        defer { agent.stop() }
        let client = try RawProtocolClient(agent: agent, identity: Self.pki.coordinator)
        defer { client.close() }
        try client.send(.prepare(PrepareRequest(session: "g", dataset: "data", model: Self.spec(.gaussian, .identity, response: "y", x: "x"))), id: 1)
        guard case .prepared? = try client.reply()?.reply else { return XCTFail("prepare was not answered") }
        try client.send(Self.round("g", beta: [2, 0.2], alpha: 0.1), id: 2)
        guard case .geeStep(let plain)? = try client.reply()?.reply else { return XCTFail("an honest round was refused") }
        if let e = try client.expectError(after: LineCodec.encode(Self.round("g", beta: [2, 0.2], alpha: -0.2 + 1e-7), id: 3))?.error {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("rule max_row_share, dominance"), e.message)
        }
        let honest = try Dense.inverseFromCholesky(Dense.cholesky(Matrix(rows: 2, cols: 2, data: plain.information)))
        if let e = try client.expectError(after: LineCodec.encode(Self.round("g", beta: [2, 0.2], alpha: 0.1, bread: honest.data.map { $0 * 3 }), id: 4))?.error {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("rule max_row_share, leverage"), e.message)
        }
    }

    /// ar1: one patient with a gap of 18 visits that no other patient has.
    /// α's moments are polynomials in α with one coefficient per distance,
    /// so rounds at several α would give that patient's residual product;
    /// the site refuses at prepare (min_cell clusters per distance). Without
    /// the odd patient the model is answered.
    func testRareAR1DistanceIsRefused() throws {
        func data(odd: Bool) throws -> URL {
            var lines = ["id,visit,x,y"]
            for id in 1...20 { for v in 1...3 {
                let visit = odd && id == 20 && v == 3 ? 20 : v
                lines.append("\(id),\(visit),\(Double((id * 3 + v) % 7)),\(Double((id * 5 + v * 3) % 11) / 2)")
            } }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("gee-ar1-\(getpid())-\(odd).csv")
            try lines.joined(separator: "\n").appending("\n").write(to: url, atomically: true, encoding: .utf8)
            return url
        }
        var spec = Self.spec(.gaussian, .identity, response: "y", x: "x")
        spec.gee = GEESpec(correlation: .ar1, order: "visit")
        var policy = DisclosurePolicy.off
        policy.minCell = 5
        for odd in [false, true] {
            let file = try data(odd: odd)
            defer { try? FileManager.default.removeItem(at: file) }
            let service = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: policy)
            let reply = try Self.ask(service, .prepare(PrepareRequest(session: "g", dataset: "data", model: spec)))
            if !odd {
                guard case .prepared = reply else { return XCTFail("regular visits were refused: \(reply)") }
            } else if let e = Self.refusal(reply) {
                XCTAssertEqual(e.code, .disclosureRefused)
                XCTAssertTrue(e.message.contains("some distance between two order values within a cluster occurs in fewer than 5 clusters"), e.message)
                XCTAssertTrue(e.message.contains("rule min_cell"), e.message)
            }
        }
    }

    /// Exchangeable: the only 6-visit patient's sums enter through their own
    /// function of α (c₆ = α/(1 + 5α)), which rounds at several α would
    /// separate; refused at prepare under min_cell 5. Patients of 4 visits
    /// each (respiratory) are answered.
    func testRareClusterSizeIsRefused() throws {
        var policy = DisclosurePolicy.off
        policy.minCell = 5
        let file = try Self.oneLargeCluster()
        defer { try? FileManager.default.removeItem(at: file) }
        let odd = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: policy)
        if let e = Self.refusal(try Self.ask(odd, .prepare(PrepareRequest(session: "g", dataset: "data",
                                                                        model: Self.spec(.gaussian, .identity, response: "y", x: "x"))))) {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("some cluster size (rows per cluster) occurs in fewer than 5 clusters at this site"), e.message)
        }
        let regular = try GEETests.siteFiles("respiratory")[0]
        let service = SiteService(site: "c1", datasets: ["data": .csv(path: regular.path, types: [:])], policy: policy)
        guard case .prepared = try Self.ask(service, .prepare(PrepareRequest(session: "g", dataset: "data",
                                                                            model: Self.spec(.binomial, .logit, response: "outcome", x: "age")))) else {
            return XCTFail("clusters of one size were refused")
        }
    }

    /// The rules refuse no honest fit: every geepack acceptance case, with
    /// the Mancl-DeRouen correction (the bread round), under max_row_share
    /// 0.5 (and min_cell 5 for ar1's distances) gives geepack's answer (GEETests.check, 1e-6 relative).
    func testHonestFitsPassTheRules() throws {
        for (name, ref) in GEETests.references.sorted(by: { $0.key < $1.key }) {
            let files = try GEETests.siteFiles(ref["dir"] as! String)
            do {
                var policy = Self.shareOnly
                // Cluster sizes and ar1's distances under min_cell 5 (trauma's
                // and ohio's small sites have fewer than 5 events, refused by
                // the outcome's own rule).
                policy.minCell = ["respiratory"].contains(ref["dir"] as? String ?? "") ? 5 : 0
                let r = try Analysis.fit(inProcessFederation(files: files, siteColumn: nil, policy: policy), dataset: "data",
                                         formula: ref["formula"] as! String, options: GEETests.options(ref, smallSample: .md))
                GEETests.check(r, ref, "\(name) under max_row_share 0.5", corrected: true)
            } catch { XCTFail("\(name): \(error)") }
        }
    }
}

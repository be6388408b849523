import Foundation
import XCTest
import Coordinator
import Protocol
import SiteAgent

/// A coordinator holding a valid certificate chooses every imputation draw a
/// prepare carries: the imputation model, β, σ, δ. These tests send draws
/// that would make a completed column single out a few patients, and check
/// the agent refuses each with a specific code and message (docs/PRIVACY.md
/// "Multiple imputation"), in-process and over loopback mutual TLS.
final class ImputationAttackTests: XCTestCase {
    static let pki: TestPKI = try! TestPKI("mi-attack")
    override class func tearDown() { pki.remove() }

    /// 60 patients; two are over 90. `v` is missing in 12 rows (the two old
    /// patients among them), `w` in 3 rows.
    static func data() throws -> URL {
        var lines = ["id,age,secret,v,w,y"]
        for i in 0..<60 {
            let age = i == 7 ? 95 : i == 31 ? 97 : 20 + (i * 37) % 60
            let v = i % 5 == 2 || i == 31 ? "NA" : String(format: "%.2f", 1 + Double((i * 13) % 17) / 4)
            let w = i % 20 == 3 ? "NA" : String(format: "%.2f", 2 + Double((i * 7) % 11) / 3)
            lines.append("\(i + 1),\(age),\((i * 29) % 23),\(v),\(w),\(String(format: "%.3f", 10 + sin(Double(i)) * 3))")
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("mi-attack-\(getpid()).csv")
        try lines.joined(separator: "\n").appending("\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static var policy: DisclosurePolicy { var p = DisclosurePolicy.off; p.minCell = 5; p.maxRowShare = 0.5; return p }

    static func spec(_ formula: String, file: URL) throws -> ModelSpec {
        let federation = inProcessFederation(files: [file], siteColumn: nil)
        return try Analysis.model(formula: formula, descriptions: Analysis.describe(federation, dataset: "data"), options: FitOptions())
    }

    static func draw(_ variable: String, _ formula: String, beta: [Double], delta: Double = 0, file: URL) throws -> ImputationDraw {
        try ImputationDraw(variable: variable, model: spec(formula, file: file), transform: .identity, theta: [], beta: beta,
                           sigma: 1e-9, delta: delta, seed: 1, m: 1)
    }

    static func prepare(_ analysis: String, _ draw: ImputationDraw, file: URL) throws -> Request {
        .prepare(PrepareRequest(session: UUID().uuidString, dataset: "data", model: try spec(analysis, file: file), imputations: [draw]))
    }

    static func refusal(_ reply: Reply, file: StaticString = #filePath, line: UInt = #line) -> ErrorReply? {
        guard case .error(let e) = reply else { XCTFail("the crafted prepare was answered", file: file, line: line); return nil }
        return e
    }

    /// An imputation model with a threshold column held by two patients:
    /// with a large coefficient the completed `v` marks them (σ ≈ 0). The
    /// imputation model's columns obey the cell rules of any model's.
    func testThresholdInTheImputationModelIsRefused() throws {
        let file = try Self.data()
        defer { try? FileManager.default.removeItem(at: file) }
        let service = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: Self.policy)
        let honest = try Self.draw("v", "v ~ age", beta: [2, 0.01], file: file)
        guard case .prepared = service.handle(try Self.prepare("y ~ v", honest, file: file)) else { return XCTFail("an honest draw was refused") }
        let crafted = try Self.draw("v", "v ~ I(age > 90)", beta: [0, 1000], file: file)
        if let e = Self.refusal(service.handle(try Self.prepare("y ~ v", crafted, file: file))) {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("the imputation model of \"v\""), e.message)
            XCTAssertTrue(e.message.contains("rule min_cell"), e.message)
        }
    }

    /// A variable imputed in 3 rows: a huge δ would make the completed `w`
    /// an indicator of those 3 patients. Refused like a missing(w) column
    /// of 3 rows; `v`, imputed in 12 rows, is answered.
    func testFewImputedRowsAreRefused() throws {
        let file = try Self.data()
        defer { try? FileManager.default.removeItem(at: file) }
        let service = SiteService(site: "s", datasets: ["data": .csv(path: file.path, types: [:])], policy: Self.policy)
        guard case .prepared = service.handle(try Self.prepare("y ~ v", Self.draw("v", "v ~ age", beta: [2, 0.01], file: file), file: file)) else {
            return XCTFail("an honest draw was refused")
        }
        if let e = Self.refusal(service.handle(try Self.prepare("y ~ w", Self.draw("w", "w ~ age", beta: [2, 0], delta: 1e6, file: file), file: file))) {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("\"w\" would be imputed in fewer than 5 of the rows this model uses at this site"), e.message)
            XCTAssertTrue(e.message.contains("rule min_cell"), e.message)
        }
    }

    /// Over TLS: the threshold draw, and an imputation model reading a
    /// variable the site does not allow (it would leak into the allowed one).
    func testCraftedDrawsRefusedOverTLS() throws {
        let file = try Self.data()
        defer { try? FileManager.default.removeItem(at: file) }
        let agent = try LoopbackAgent(file: file, pki: Self.pki, policy: Self.policy, allowedVariables: ["id", "age", "v", "w", "y"])
        defer { agent.stop() }
        let client = try RawProtocolClient(agent: agent, identity: Self.pki.coordinator)
        defer { client.close() }
        let threshold = try Self.prepare("y ~ v", Self.draw("v", "v ~ I(age > 90)", beta: [0, 1000], file: file), file: file)
        if let e = try client.expectError(after: LineCodec.encode(threshold, id: 1))?.error {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("the imputation model of \"v\""), e.message)
        }
        let copy = try Self.prepare("y ~ v", Self.draw("v", "v ~ secret", beta: [0, 1], file: file), file: file)
        if let e = try client.expectError(after: LineCodec.encode(copy, id: 2))?.error {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("variable \"secret\" may not be used at this site"), e.message)
        }
        let few = try Self.prepare("y ~ w", Self.draw("w", "w ~ age", beta: [2, 0], delta: 1e6, file: file), file: file)
        if let e = try client.expectError(after: LineCodec.encode(few, id: 3))?.error {
            XCTAssertEqual(e.code, .disclosureRefused)
            XCTAssertTrue(e.message.contains("would be imputed in fewer than 5"), e.message)
        }
    }
}

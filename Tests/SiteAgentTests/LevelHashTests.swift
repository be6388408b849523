import XCTest
import Foundation
import Protocol
@testable import SiteAgent

/// The level hashes a describe request may ask for (docs/PRIVACY.md, "Level
/// hashes"): HMAC-SHA256 as specified (checked against an independent
/// implementation), no code in the clear, one answer per salt, only allowed
/// variables, never the values of a measurement, and nothing that depends on
/// a filter or on counts.
final class LevelHashTests: XCTestCase {
    static let salt = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

    static func table() -> DataTable {
        let n = 60
        let school: [Double?] = (0..<n).map { i -> Double? in i % 9 == 0 ? nil : Double(1000 + i % 30) }
        return DataTable(columns: [
            .init(name: "y", data: .numeric((0..<n).map { Double($0 % 7) + 0.5 })),
            .init(name: "school", data: .numeric(school)),
            .init(name: "ward", data: .text((0..<n).map { "Ward \($0 % 40)" })),
            .init(name: "lab", data: .numeric((0..<n).map { 3.25 + Double($0) / 8 })),
            .init(name: "mrn", data: .text((0..<n).map { "MRN-\(90_000 + $0)" })),
        ], rowCount: n)
    }

    static func service(denied: [String] = []) -> SiteService {
        SiteService(site: "A", datasets: ["main": .table(table())], siteColumn: nil, deniedVariables: denied)
    }

    static func describe(_ s: SiteService, salt: String = LevelHasher.randomSalt(), _ variables: [String]) -> (line: String, reply: Reply) {
        let request = Request.describe(DescribeRequest(dataset: "main", levelHashes: LevelHashRequest(salt: salt, variables: variables)))
        let line = s.handle(line: try! LineCodec.encode(request, id: 1))
        return (line, try! LineCodec.decodeReply(line).reply)
    }

    /// Known answers computed with Python's hmac module:
    /// hmac.new(bytes(range(32)), ns("fedmix-level-hash-1") + ns(variable) + ns(code), sha256).hexdigest()[:16],
    /// where ns(s) is the netstring "len:s,".
    func testHashIsTruncatedHMACSHA256OfTheNetstrings() throws {
        XCTAssertEqual(try LevelHasher(salt: Self.salt, variable: "primary").hash("17"), "2b92037037dd2d1c")
        XCTAssertEqual(try LevelHasher(salt: Self.salt, variable: "ward").hash("Ward B"), "940ba3914db08faa")
        // One hasher, many codes: each hash starts afresh from the key.
        let ward = try LevelHasher(salt: Self.salt, variable: "ward")
        _ = ward.hash("Ward A"); _ = ward.hash("")
        XCTAssertEqual(ward.hash("Ward B"), "940ba3914db08faa")
        XCTAssertEqual(ward.hash("Ward B"), "940ba3914db08faa")
        XCTAssertEqual(try LevelHasher(salt: Self.salt.uppercased(), variable: "ward").hash("Ward B"), "940ba3914db08faa", "hex case does not matter")
        // The variable's name is part of the message: the same code in two variables does not link them.
        XCTAssertNotEqual(try LevelHasher(salt: Self.salt, variable: "school").hash("17"), "2b92037037dd2d1c")
        XCTAssertThrowsError(try LevelHasher(salt: "00ff", variable: "x"), "a salt shorter than 16 bytes")
        XCTAssertThrowsError(try LevelHasher(salt: String(repeating: "g", count: 64), variable: "x"), "not hex")
        XCTAssertNotEqual(LevelHasher.randomSalt(), LevelHasher.randomSalt())
        XCTAssertEqual(LevelHasher.randomSalt().count, 64)
    }

    func testDescribeSendsSortedHashesOfEveryDistinctCodeAndNoCodeInTheClear() throws {
        let s = Self.service()
        let (line, reply) = Self.describe(s, salt: Self.salt, ["school", "ward"])
        guard case .described(let d) = reply, let h = d.levelHashes else { return XCTFail("no level hashes: \(line)") }
        XCTAssertEqual(h.salt, Self.salt)
        let school = try LevelHasher(salt: Self.salt, variable: "school")
        XCTAssertEqual(h.variables["school"], school.hashes((0..<30).map { String(1000 + $0) }), "30 codes, missing values left out")
        XCTAssertEqual(h.variables["school"]?.count, 30)
        XCTAssertEqual(h.variables["school"], h.variables["school"]?.sorted())
        XCTAssertEqual(h.variables["ward"]?.count, 40)
        XCTAssertEqual(h.variables["ward"]?.first, (try LevelHasher(salt: Self.salt, variable: "ward")).hashes((0..<40).map { "Ward \($0)" }).first)
        // describe lists neither variable's levels (more than 20 numbers, 40 ≤ 50 text levels are listed as before).
        XCTAssertNil(d.variables.first { $0.name == "school" }?.levels)
        // No code in the clear: the school codes (not listed) appear nowhere in the line, and every entry is a hash.
        XCTAssertFalse(line.contains("1007"), line)
        XCTAssertTrue(h.variables.values.joined().allSatisfy(LevelHasher.isHash))
        // Without a request, no hashes.
        let plain = s.handle(line: try LineCodec.encode(.describe(DescribeRequest(dataset: "main")), id: 2))
        XCTAssertFalse(plain.contains("level_hashes"), plain)
    }

    func testASaltIsAnsweredOnce() throws {
        let s = Self.service()
        guard case .described = Self.describe(s, salt: Self.salt, ["ward"]).reply else { return XCTFail("first use") }
        guard case .error(let e) = Self.describe(s, salt: Self.salt, ["school"]).reply else { return XCTFail("a reused salt was answered") }
        XCTAssertEqual(e.code, "disclosure_refused")
        XCTAssertTrue(e.message.contains("salt was used before"), e.message)
        guard case .error(let bad) = Self.describe(s, salt: "1234", ["ward"]).reply else { return XCTFail("a short salt was answered") }
        XCTAssertEqual(bad.code, "invalid_request")
        XCTAssertTrue(bad.message.contains("32 to 128 hexadecimal digits"), bad.message)
        let many = (0..<21).map { "v\($0)" }
        guard case .error(let tooMany) = Self.describe(s, many).reply else { return XCTFail("21 variables were hashed") }
        XCTAssertTrue(tooMany.message.contains("at most 20 variables"), tooMany.message)
    }

    func testOnlyAllowedCodeVariablesAreHashed() throws {
        let s = Self.service(denied: ["mrn"])
        guard case .described(let d) = Self.describe(s, ["mrn", "lab", "nonexistent", "ward"]).reply, let h = d.levelHashes else {
            return XCTFail("no answer")
        }
        XCTAssertEqual(Set(h.variables.keys), ["ward"], "denied (mrn), fractional numbers (lab) and unknown variables get no hashes")
    }

    func testHashesDoNotDependOnRowsOrFilters() throws {
        // Two sites with the same codes in other proportions send the same hashes
        // (tiny tables: no thresholds, or describe would refuse them under min_rows).
        let a = SiteService(site: "A", datasets: ["main": .table(DataTable(columns: [
            .init(name: "g", data: .numeric([1, 1, 1, 2, 3, nil]))], rowCount: 6))], siteColumn: nil, policy: .off)
        let b = SiteService(site: "B", datasets: ["main": .table(DataTable(columns: [
            .init(name: "g", data: .numeric([3, 2, 1]))], rowCount: 3))], siteColumn: nil, policy: .off)
        let salt = LevelHasher.randomSalt()
        guard case .described(let da) = Self.describe(a, salt: salt, ["g"]).reply,
              case .described(let db) = Self.describe(b, salt: salt, ["g"]).reply else { return XCTFail("no answer") }
        XCTAssertEqual(da.levelHashes?.variables["g"], db.levelHashes?.variables["g"])
        XCTAssertEqual(da.levelHashes?.variables["g"]?.count, 3)
    }
}

import Foundation
import XCTest
import ExecutableSupport
import Protocol
import SiteAgent

/// `fedmix-agent audit list --since TIME` and `audit export --since TIME`
/// accept every form their help advertises, through the built executable:
/// dates, date-times (T or space, minutes, seconds, fractions), time zones
/// (Z, ±HH:MM, ±HHMM, ±HH), the TIME column of `audit list` itself, and
/// spans back from now (30m, 24h, 7d, 2w). A log with entries at known
/// times shows where each cut falls.
final class AuditSinceTests: XCTestCase {
    static let peer = PeerIdentity(subject: "CN=coordinator", fingerprint: String(repeating: "ab", count: 32))

    /// A log with one entry at each of `times` (in order): the log is
    /// reopened for each entry with a clock stopped at its time.
    func makeLog(_ path: String, at times: [Date]) throws {
        for (i, t) in times.enumerated() {
            let log = try AuditLog.open(path: path, now: { t })
            try log.record(direction: .received, peer: Self.peer, line: #"{"type":"hello","n":\#(i)}"#)
            log.close()
        }
    }

    func agent(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = try Executables.agent()
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// The sequence numbers `audit list --since TIME` prints.
    func listed(_ log: String, since: String) throws -> [Int] {
        let r = try agent(["audit", "list", "--log", log, "--since", since])
        XCTAssertEqual(r.status, 0, "--since \(since): \(r.err)")
        return r.out.split(separator: "\n").dropFirst().compactMap { $0.split(separator: "\t").first.flatMap { Int($0) } }
    }

    func utc(_ text: String) -> Date {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: text)!
    }

    func testEveryAdvertisedAbsoluteForm() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("since-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/audit.db"
        // Entries 1…6.
        try makeLog(log, at: [utc("2026-02-28T23:59:59.000Z"), utc("2026-03-01T00:00:00.000Z"), utc("2026-03-01T08:30:00.000Z"),
                              utc("2026-03-01T09:30:00.000Z"), utc("2026-03-01T09:30:15.500Z"), utc("2026-03-02T12:00:00.000Z")])

        // The help names the forms; each one is read as it says.
        let help = try agent(["audit", "list", "--help"])
        let words = help.out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        XCTAssertTrue(words.contains(AuditEntry.timeForms) && words.contains(AuditEntry.relativeForms), help.out)
        let cases: [(String, [Int])] = [
            ("2026-03-01", [2, 3, 4, 5, 6]),                       // a date: midnight UTC
            ("2026-03-01T09:30", [4, 5, 6]),                       // date-time with minutes, UTC
            ("2026-03-01 09:30:15", [5, 6]),                       // a space instead of T, seconds
            ("2026-03-01T09:30:15.5", [5, 6]),                     // fractions of a second
            ("2026-03-01T09:30:15.6Z", [6]),
            ("2026-03-01T09:30:00Z", [4, 5, 6]),                   // Z
            ("2026-03-01T09:30:00+01:00", [3, 4, 5, 6]),           // 08:30 UTC
            ("2026-03-01T09:30+01:00", [3, 4, 5, 6]),              // minutes and a zone
            ("2026-03-01T10:30:00+0100", [4, 5, 6]),               // ±HHMM
            ("2026-03-01T04:30-05", [4, 5, 6]),                    // ±HH
            ("2026-03-01T00:00:00.000Z", [2, 3, 4, 5, 6]),         // the TIME column of audit list, as printed
            ("2026-03-03", []),
        ]
        for (since, expected) in cases {
            XCTAssertEqual(try listed(log, since: since), expected, "--since \(since)")
        }
        // export reads the same forms.
        let exported = try agent(["audit", "export", "--log", log, "--since", "2026-03-01T09:30+01:00"])
        XCTAssertEqual(exported.status, 0, exported.err)
        XCTAssertEqual(exported.out.split(separator: "\n").count, 4, exported.out)

        // Not times: a usage error (exit 2) that says what is accepted.
        for bad in ["soon", "2026-02-30", "2026-13-01", "2026-03-01T25:00", "01.03.2026", "7y", "-3d", "2026-03-01T09:30+25:00"] {
            let r = try agent(["audit", "list", "--log", log, "--since", bad])
            XCTAssertEqual(r.status, 2, "--since \(bad): \(r.out)")
            XCTAssertTrue(r.err.contains("--since is not a time: give a date or date-time (e.g. 2026-03-01 or 2026-03-01T09:30:00Z) or a span back from now (e.g. 24h or 7d)"), r.err)
        }
    }

    func testSpansBackFromNow() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("since-rel-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/audit.db"
        let now = Date()
        // Entries 1…5: 3 weeks, 8 days, 2 days, 3 hours and 10 minutes ago.
        try makeLog(log, at: [now - 21 * 86400, now - 8 * 86400, now - 2 * 86400, now - 3 * 3600, now - 600])
        let cases: [(String, [Int])] = [
            ("30m", [5]), ("5h", [4, 5]), ("24h", [4, 5]), ("7d", [3, 4, 5]), ("2w", [2, 3, 4, 5]), ("4w", [1, 2, 3, 4, 5]),
        ]
        for (since, expected) in cases {
            XCTAssertEqual(try listed(log, since: since), expected, "--since \(since)")
        }
        let exported = try agent(["audit", "export", "--log", log, "--since", "7d"])
        XCTAssertEqual(exported.out.split(separator: "\n").count, 3, exported.out)
    }

    /// The parser itself, for the forms and the dates that do not exist.
    func testParseTime() {
        XCTAssertEqual(AuditEntry.parseTime("2026-03-01"), utc("2026-03-01T00:00:00.000Z"))
        XCTAssertEqual(AuditEntry.parseTime("2024-02-29T12:00"), utc("2024-02-29T12:00:00.000Z"))
        XCTAssertNil(AuditEntry.parseTime("2026-02-29"))
        XCTAssertEqual(AuditEntry.parseTime("2026-03-01t09:30z"), utc("2026-03-01T09:30:00.000Z"))
        XCTAssertEqual(AuditEntry.parseTime(AuditEntry.timestamp(utc("2026-03-01T09:30:00.125Z"))), utc("2026-03-01T09:30:00.125Z"))
        let now = utc("2026-03-08T12:00:00.000Z")
        XCTAssertEqual(AuditEntry.parseSince("7d", now: now), utc("2026-03-01T12:00:00.000Z"))
        XCTAssertEqual(AuditEntry.parseSince("0m", now: now), now)
        XCTAssertNil(AuditEntry.parseSince("d", now: now))
        XCTAssertNil(AuditEntry.parseSince("1.5h", now: now))
    }
}

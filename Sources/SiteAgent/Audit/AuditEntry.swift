// One entry of the agent's audit log and its place in the hash chain.
//
// Canonical serialization (format "fedmix-audit-1"). An entry's hash is the
// SHA-256, as 64 lowercase hex digits, of the concatenation of these nine
// netstrings, where netstring(s) = <UTF-8 byte count of s in decimal> ":" s ","
//
//   1. "fedmix-audit-1"
//   2. prev_hash          the previous entry's hash (64 zeros for the first entry)
//   3. time               UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ"
//   4. direction          "received", "sent" or "note" (an entry the log writes about itself)
//   5. peer_subject       the peer certificate's subject ("" for notes)
//   6. peer_fingerprint   SHA-256 of the peer certificate (DER), lowercase hex ("" for notes)
//   7. session            the line's session id, "" when it has none
//   8. bytes              the line's size on the wire in decimal (UTF-8 bytes + 1 for the newline; 0 for notes)
//   9. line               the message exactly as read or written, without its newline
//
// The sequence number is not hashed: the order of entries is fixed by each
// entry's prev_hash. `verify` checks that sequence numbers have no gaps and
// that `session` and `bytes` are what the line gives.

import Foundation
import Protocol

public struct AuditEntry: Sendable, Equatable, Codable {
    public static let format = "fedmix-audit-1"
    /// prev_hash of the first entry of a log.
    public static let genesisHash = String(repeating: "0", count: 64)

    public var seq: Int
    public var time: String
    public var direction: String
    public var peerSubject: String
    public var peerFingerprint: String
    public var session: String?
    public var bytes: Int
    public var line: String
    public var previousHash: String
    public var hash: String

    enum CodingKeys: String, CodingKey {
        case seq, time, direction, session, bytes, line, hash
        case peerSubject = "peer_subject", peerFingerprint = "peer_fingerprint", previousHash = "prev_hash"
    }

    /// The bytes the entry's hash is taken over (see the top of this file).
    public static func canonicalBytes(previousHash: String, time: String, direction: String, peerSubject: String,
                                      peerFingerprint: String, session: String?, bytes: Int, line: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(line.utf8.count + 256)
        func netstring(_ s: String) {
            out.append(contentsOf: String(s.utf8.count).utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: s.utf8)
            out.append(UInt8(ascii: ","))
        }
        for field in [format, previousHash, time, direction, peerSubject, peerFingerprint, session ?? "", String(bytes), line] {
            netstring(field)
        }
        return out
    }

    public static func computeHash(previousHash: String, time: String, direction: String, peerSubject: String,
                                   peerFingerprint: String, session: String?, bytes: Int, line: String) -> String {
        SHA256Digest.hex(canonicalBytes(previousHash: previousHash, time: time, direction: direction, peerSubject: peerSubject,
                                        peerFingerprint: peerFingerprint, session: session, bytes: bytes, line: line))
    }

    /// The hash the entry's content gives (equal to `hash` unless it was edited).
    public var computedHash: String {
        Self.computeHash(previousHash: previousHash, time: time, direction: direction, peerSubject: peerSubject,
                         peerFingerprint: peerFingerprint, session: session, bytes: bytes, line: line)
    }

    /// The line's top-level "type" (describe, prepared, error, hello, ...), if it is a JSON object with one.
    public var messageType: String? { Self.topLevel(line)?["type"] as? String }

    /// The line's "id", if it has one.
    public var messageID: Int? { (Self.topLevel(line)?["id"] as? NSNumber)?.intValue }

    static func topLevel(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed])) as? [String: Any]
    }

    /// The session id of a line. Lines the agent received are parsed (their
    /// top-level "session"); lines it sent are its own encoder's output, so
    /// the first `"session":"…"` key is the top-level one and a scan is
    /// enough (answers can be megabytes).
    public static func sessionID(direction: String, line: String) -> String? {
        if direction == "received" { return topLevel(line)?["session"] as? String }
        if direction == "note" { return nil }
        let bytes = Array(line.utf8)
        let key = Array("\"session\"".utf8)
        var i = 0
        outer: while i + key.count <= bytes.count {
            guard bytes[i] == key[0] else { i += 1; continue }
            for k in 1..<key.count where bytes[i + k] != key[k] { i += 1; continue outer }
            var j = i + key.count
            while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x09 { j += 1 }
            guard j < bytes.count, bytes[j] == UInt8(ascii: ":") else { i += 1; continue }
            j += 1
            while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x09 { j += 1 }
            guard j < bytes.count, bytes[j] == UInt8(ascii: "\"") else { return nil }
            let start = j
            j += 1
            var escaped = false
            while j < bytes.count {
                if escaped { escaped = false } else if bytes[j] == UInt8(ascii: "\\") { escaped = true } else if bytes[j] == UInt8(ascii: "\"") { break }
                j += 1
            }
            guard j < bytes.count else { return nil }
            let literal = Data(bytes[start...j])
            return try? JSONDecoder().decode(String.self, from: literal)
        }
        return nil
    }

    /// Bytes a line takes on the wire (with its newline).
    public static func wireBytes(_ line: String) -> Int { line.utf8.count + 1 }

    /// A time as the log writes it: UTC with milliseconds, "2026-03-01T09:30:00.125Z".
    public static func timestamp(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var seconds = time_t(t.rounded(.down))
        let millis = min(999, Int(((t - t.rounded(.down)) * 1000).rounded(.down)))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), millis)
    }

    /// The forms `parseTime` and `parseSince` read, for help texts and errors.
    public static let timeForms = "2026-03-01, 2026-03-01T09:30, 2026-03-01 09:30:15, 2026-03-01T09:30:00.125Z, 2026-03-01T09:30+01:00"
    /// The relative forms `parseSince` reads: N minutes, hours, days or weeks ago.
    public static let relativeForms = "30m, 24h, 7d, 2w"

    /// Reads a time: "YYYY-MM-DD" (midnight), or a date with "HH:MM",
    /// "HH:MM:SS" or "HH:MM:SS.fff" after a "T" or a space, in UTC unless it
    /// ends in "Z", "±HH:MM", "±HHMM" or "±HH". Every time the log writes
    /// reads back (its TIME column). Nil for anything else, including
    /// dates that do not exist (2026-02-30).
    public static func parseTime(_ text: String) -> Date? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let pattern = #"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?)?$"#
        guard let re = try? NSRegularExpression(pattern: pattern),
              let m = re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else { return nil }
        func group(_ i: Int) -> String? {
            guard let r = Range(m.range(at: i), in: s) else { return nil }
            return String(s[r])
        }
        func number(_ i: Int) -> Int { group(i).flatMap { Int($0) } ?? 0 }
        let (year, month, day) = (number(1), number(2), number(3))
        let (hour, minute, second) = (number(4), number(5), number(6))
        guard (1...12).contains(month), (1...31).contains(day), hour <= 23, minute <= 59, second <= 59 else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900); parts.tm_mon = Int32(month - 1); parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour); parts.tm_min = Int32(minute); parts.tm_sec = Int32(second)
        var seconds = timegm(&parts)
        // timegm normalizes 2026-02-30 to 2026-03-02: such a date does not exist.
        var back = tm()
        gmtime_r(&seconds, &back)
        guard Int(back.tm_mday) == day, Int(back.tm_mon) + 1 == month else { return nil }
        var t = TimeInterval(seconds)
        if let fraction = group(7) { t += (Double("0." + fraction) ?? 0) }
        if let sign = group(9) {
            let hours = number(10), minutes = number(11)
            guard hours <= 23, minutes <= 59 else { return nil }
            let offset = TimeInterval(hours * 3600 + minutes * 60)
            t -= sign == "+" ? offset : -offset
        }
        return Date(timeIntervalSince1970: t)
    }

    /// Reads a `--since` value: a time as `parseTime` reads it, or a span
    /// back from `now`: "30m", "24h", "7d", "2w" (minutes, hours, days, weeks).
    public static func parseSince(_ text: String, now: Date = Date()) -> Date? {
        let s = text.trimmingCharacters(in: .whitespaces)
        if let unit = s.last, let n = Int(s.dropLast()), n >= 0, !s.dropLast().contains(where: { !$0.isASCII || !$0.isNumber }) {
            let seconds: Double
            switch unit {
            case "m": seconds = 60
            case "h": seconds = 3600
            case "d": seconds = 86400
            case "w": seconds = 7 * 86400
            default: return nil
            }
            return now.addingTimeInterval(-Double(n) * seconds)
        }
        return parseTime(s)
    }
}

/// Re-indents one JSON line for reading, keeping every token exactly as
/// written (numbers are not re-parsed, so they read as they were sent).
public func prettyJSON(_ line: String, indent: String = "  ") -> String {
    var out = ""
    var depth = 0
    var inString = false, escaped = false
    let scalars = Array(line.unicodeScalars)
    func newline() { out += "\n" + String(repeating: indent, count: depth) }
    var i = 0
    while i < scalars.count {
        let c = scalars[i]
        if inString {
            out.unicodeScalars.append(c)
            if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
            i += 1
            continue
        }
        switch c {
        case "\"": inString = true; out.unicodeScalars.append(c)
        case "{", "[":
            // Empty containers, and arrays of numbers or strings, stay on one line.
            if c == "[", let end = flatArrayEnd(scalars, from: i) {
                var inner = false, esc = false
                for k in i...end {
                    let d = scalars[k]
                    if inner {
                        out.unicodeScalars.append(d)
                        if esc { esc = false } else if d == "\\" { esc = true } else if d == "\"" { inner = false }
                    } else if d == "\"" { inner = true; out.unicodeScalars.append(d) }
                    else if d == "," { out += ", " }
                    else if d != " " && d != "\t" { out.unicodeScalars.append(d) }
                }
                i = end
            } else {
                var j = i + 1
                while j < scalars.count, scalars[j] == " " || scalars[j] == "\t" { j += 1 }
                if j < scalars.count, c == "{" && scalars[j] == "}" {
                    out += "{}"; i = j
                } else {
                    out.unicodeScalars.append(c); depth += 1; newline()
                }
            }
        case "}", "]": depth = max(0, depth - 1); newline(); out.unicodeScalars.append(c)
        case ",": out += ","; newline()
        case ":": out += ": "
        case " ", "\t", "\r", "\n": break
        default: out.unicodeScalars.append(c)
        }
        i += 1
    }
    return out
}

/// The index of the "]" closing the array that opens at `start`, if the
/// array holds no object or array.
private func flatArrayEnd(_ s: [Unicode.Scalar], from start: Int) -> Int? {
    var inString = false, escaped = false
    var i = start + 1
    while i < s.count {
        let c = s[i]
        if inString {
            if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
        } else if c == "\"" { inString = true }
        else if c == "[" || c == "{" { return nil }
        else if c == "]" { return i }
        i += 1
    }
    return nil
}

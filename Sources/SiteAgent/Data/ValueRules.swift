/// The type a column of a site's data takes. Inferred by the data sources, or
/// forced by the hospital's configuration when inference would guess wrong
/// (for example a ward code such as "007" that must stay text).
public enum ColumnType: String, Codable, Sendable {
    case numeric, text
}

/// The value rules shared by the CSV and SQLite sources, kept in one place so
/// that a number or a missing value means the same thing whichever source a
/// hospital uses. They work on raw UTF-8 bytes: no String is made per value.
enum ValueRules {
    static let space: UInt8 = 0x20, tab: UInt8 = 0x09

    /// Exact powers of ten that a Double holds without rounding (10^0...10^22).
    static let exactPowersOfTen: [Double] = {
        var p: [Double] = [1]
        for _ in 1...22 { p.append(p[p.count - 1] * 10) }
        return p
    }()

    /// The range `start..<end` of `base` without leading and trailing spaces and tabs.
    @inline(__always)
    static func trimmed(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> (Int, Int) {
        var s = start, e = end
        while s < e && (base[s] == space || base[s] == tab) { s += 1 }
        while e > s && (base[e - 1] == space || base[e - 1] == tab) { e -= 1 }
        return (s, e)
    }

    /// True when the raw field is a missing value: empty, only blanks, or NA.
    @inline(__always)
    static func isMissing(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        let (s, e) = trimmed(base, start, end)
        if s == e { return true }
        return e - s == 2 && base[s] == 0x4E && base[s + 1] == 0x41 // "NA"
    }

    /// Parses a finite decimal number, allowing blanks around it.
    ///
    /// Accepted: `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`, so
    /// 12, -3.5, 1e-3, .5, +2 and 1. are numbers while "1,5", "0x10", "inf",
    /// "nan" and "1e400" (not finite) are not. The grammar is checked by hand so
    /// that nothing a C library would also accept (hex, inf, locale commas)
    /// slips through. Short numbers are converted exactly here (Clinger's fast
    /// path); long ones go through the standard library's correctly rounded,
    /// locale-independent parser.
    static func parseNumber(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Double? {
        let (s, e) = trimmed(base, start, end)
        var i = s
        if i == e { return nil }
        var negative = false
        if base[i] == 0x2B || base[i] == 0x2D { negative = base[i] == 0x2D; i += 1 }

        var mantissa: UInt64 = 0
        var significantDigits = 0
        var exponent = 0
        var truncated = false
        var digitCount = 0

        // Integer part.
        while i < e {
            let d = base[i] &- 0x30
            if d > 9 { break }
            digitCount += 1
            if mantissa == 0 && d == 0 {
                // Leading zero: contributes nothing.
            } else if significantDigits < 19 {
                mantissa = mantissa &* 10 &+ UInt64(d); significantDigits += 1
            } else {
                exponent += 1; truncated = truncated || d != 0
            }
            i += 1
        }
        // Fraction.
        if i < e && base[i] == 0x2E {
            i += 1
            while i < e {
                let d = base[i] &- 0x30
                if d > 9 { break }
                digitCount += 1
                if mantissa == 0 && d == 0 {
                    exponent -= 1
                } else if significantDigits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(d); significantDigits += 1; exponent -= 1
                } else {
                    truncated = truncated || d != 0
                }
                i += 1
            }
        }
        if digitCount == 0 { return nil }
        // Exponent.
        if i < e && (base[i] == 0x65 || base[i] == 0x45) {
            i += 1
            var expNegative = false
            if i < e && (base[i] == 0x2B || base[i] == 0x2D) { expNegative = base[i] == 0x2D; i += 1 }
            var expValue = 0
            var expDigits = 0
            while i < e {
                let d = base[i] &- 0x30
                if d > 9 { break }
                if expValue < 100_000 { expValue = expValue * 10 + Int(d) }
                expDigits += 1
                i += 1
            }
            if expDigits == 0 { return nil }
            exponent += expNegative ? -expValue : expValue
        }
        if i != e { return nil }

        if mantissa == 0 { return negative ? -0.0 : 0.0 }
        if !truncated && mantissa <= (1 << 53) && exponent >= -22 && exponent <= 22 {
            var value = Double(mantissa)
            if exponent >= 0 { value *= exactPowersOfTen[exponent] } else { value /= exactPowersOfTen[-exponent] }
            return negative ? -value : value
        }
        // Rare: many digits or a large exponent. The grammar is already checked,
        // so the standard library sees a plain ASCII decimal.
        let text = String(decoding: UnsafeBufferPointer(start: base + s, count: e - s), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { return nil }
        return value
    }

    /// Checks that `start..<end` is well-formed UTF-8 (no overlong forms,
    /// surrogates or code points above U+10FFFF). Returns the offset of the
    /// first bad byte, or nil when the bytes are valid.
    static func firstInvalidUTF8(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Int? {
        var i = start
        while i < end {
            let b0 = base[i]
            if b0 < 0x80 { i += 1; continue }
            let need: Int
            var lower: UInt8 = 0x80, upper: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: need = 2
            case 0xED: need = 2; upper = 0x9F
            case 0xF0: need = 3; lower = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; upper = 0x8F
            default: return i
            }
            if end - i <= need { return i }
            let b1 = base[i + 1]
            if b1 < lower || b1 > upper { return i }
            var k = 2
            while k <= need {
                if base[i + k] & 0xC0 != 0x80 { return i }
                k += 1
            }
            i += need + 1
        }
        return nil
    }

    /// Renders a number for a text column: integers without a trailing ".0",
    /// everything else in the shortest form that reads back to the same Double.
    static func render(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 9.007_199_254_740_992e15 {
            return String(Int64(value))
        }
        return value.description
    }
}

import Foundation

/// Formats numbers the way R's `as.character` does (15 significant digits,
/// no trailing zeros), so that `factor(x)` on a numeric variable yields the
/// level labels R would (`factor(period)2`, `factor(dose)0.5`).
public enum RNumberFormat {
    public static func format(_ x: Double) -> String {
        if x.isNaN { return "NaN" }
        if x.isInfinite { return x > 0 ? "Inf" : "-Inf" }
        if x == x.rounded(), abs(x) < 1e15 { return String(Int64(x)) }
        var s = String(format: "%.15g", x)
        if s.contains("e") {
            // R writes 1e-05, 1.5e+20: keep C's exponent form, trimmed mantissa.
            let parts = s.split(separator: "e", maxSplits: 1).map(String.init)
            var mant = parts[0]
            if mant.contains(".") {
                while mant.hasSuffix("0") { mant.removeLast() }
                if mant.hasSuffix(".") { mant.removeLast() }
            }
            s = mant + "e" + parts[1]
        } else if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        return s
    }
}

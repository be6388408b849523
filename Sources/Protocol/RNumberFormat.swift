import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Formats numbers the way R's `as.character` and `deparse` do (up to 15
/// significant digits; fixed notation unless scientific is narrower), so
/// `factor(x)` on a numeric variable and `I()` terms get R's names
/// (`factor(period)2`, `factor(dose)1e+05`, `I(x * 1e-04)`).
public enum RNumberFormat {
    public static func format(_ x: Double) -> String {
        if x.isNaN { return "NaN" }
        if x.isInfinite { return x > 0 ? "Inf" : "-Inf" }
        if x == 0 { return "0" }
        let neg = x < 0
        // 15 significant digits: d.dddddddddddddde±XX
        let sci = printf("%.14e", abs(x))
        guard let eIndex = sci.firstIndex(of: "e"), let exponent = Int(sci[sci.index(after: eIndex)...]) else { return sci }
        var digits = sci[..<eIndex].filter { $0 != "." }
        while digits.count > 1 && digits.hasSuffix("0") { digits.removeLast() }
        let nsig = digits.count
        let rgt = max(0, nsig - exponent - 1)
        let left = exponent >= 0 ? exponent + 1 : 1
        let fixedWidth = (neg ? 1 : 0) + left + (rgt > 0 ? rgt + 1 : 0)
        let expDigits = abs(exponent) >= 100 ? 3 : 2
        let sciWidth = (neg ? 1 : 0) + (nsig > 1 ? nsig + 1 : 1) + 2 + expDigits
        if fixedWidth <= sciWidth { return printf("%.\(rgt)f", x) }
        var mantissa = String(digits.first!)
        if nsig > 1 { mantissa += "." + digits.dropFirst() }
        let expText = String(abs(exponent))
        let paddedExp = String(repeating: "0", count: max(0, expDigits - expText.count)) + expText
        return (neg ? "-" : "") + mantissa + "e" + (exponent < 0 ? "-" : "+") + paddedExp
    }

    /// C's printf of one double. Why not String(format:): Foundation's
    /// formatter took most of a site's describe answer (it formats every
    /// distinct value of a numeric variable). A locale whose decimal point
    /// is not "." (something called setlocale) gets Foundation's, which
    /// always writes ".".
    static func printf(_ format: String, _ x: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        let n = withVaList([x]) { args in vsnprintf(&buffer, buffer.count, format, args) }
        guard n > 0, n < buffer.count, JSONLineDocument.pointIsDot else { return String(format: format, x) }
        return String(decoding: buffer[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

// R's names for numbers (as.character), and the C formatting under them.

import Foundation
import XCTest
@testable import Protocol

final class RNumberFormatTests: XCTestCase {
    /// as.character(x) in R 4.2.2, for each x.
    func testNumbersAreNamedAsRNamesThem() {
        let expected: [(Double, String)] = [
            (1e5, "1e+05"), (0.1, "0.1"), (123456.7, "123456.7"), (1e-4, "1e-04"), (2, "2"), (-1.5, "-1.5"),
            (1.0 / 3, "0.333333333333333"), (123456, "123456"), (0.0001234, "0.0001234"), (1e15, "1e+15"),
            (123456789012, "123456789012"), (-2.5e-7, "-2.5e-07"), (1e300, "1e+300"),
            (5e-324, "4.94065645841247e-324"), (3.14159265358979, "3.14159265358979"), (0, "0"),
            (.infinity, "Inf"), (-.infinity, "-Inf"), (.nan, "NaN"),
        ]
        for (x, name) in expected { XCTAssertEqual(RNumberFormat.format(x), name, "\(x)") }
    }

    /// The C formatter writes what Foundation's String(format:) writes.
    func testPrintfWritesWhatStringFormatWrites() {
        var rng = LineCodecTests.SplitMix64(state: 7)
        for k in 0..<20_000 {
            let x = k % 2 == 0 ? Double(bitPattern: rng.next() & 0x7FEF_FFFF_FFFF_FFFF) : Double.random(in: -1e6...1e6, using: &rng)
            XCTAssertEqual(RNumberFormat.printf("%.14e", x), String(format: "%.14e", x))
            let digits = k % 21
            if abs(x) < 1e30 { XCTAssertEqual(RNumberFormat.printf("%.\(digits)f", x), String(format: "%.\(digits)f", x)) }
        }
    }
}

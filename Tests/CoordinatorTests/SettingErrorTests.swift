import XCTest
@testable import Coordinator

/// The library names settings; front ends word them as their own options.
final class SettingErrorTests: XCTestCase {
    func testMessageNamesSettingsAndEachFrontEndWordsThem() {
        let n = 5
        let e: SettingError = "\(.nAGQ) \(n) needs a single scalar term; use \(.nAGQ) 1 or \(.family) gaussian"
        XCTAssertEqual(e.description, "nAGQ 5 needs a single scalar term; use nAGQ 1 or family gaussian")
        XCTAssertEqual(e.worded { "--" + $0.rawValue.lowercased() }, "--nagq 5 needs a single scalar term; use --nagq 1 or --family gaussian")
        XCTAssertEqual(e.settings, [.nAGQ, .nAGQ, .family])
    }

    func testPlainMessageHasNoSettings() {
        let e: SettingError = "sites.json: cannot read the sites file"
        XCTAssertEqual(e.description, "sites.json: cannot read the sites file")
        XCTAssertEqual(e.settings, [])
    }

    func testValidationNamesTheSettingNotAFlag() {
        var options = FitOptions(family: .gaussian)
        options.nAGQ = 3
        XCTAssertThrowsError(try Analysis.validate(formula: "y ~ x + (1 | site)", options: options)) { error in
            guard let e = error as? SettingError else { return XCTFail("\(error)") }
            XCTAssertEqual(e.description, "nAGQ applies to GLMMs (family binomial or poisson)")
            XCTAssertFalse(e.description.contains("--"))
        }
    }
}

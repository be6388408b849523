import XCTest
import Coordinator
import Protocol

/// lme4's df.resid in the text report: rows used minus parameters, with σ
/// counted for linear models only (cbpp: 56 − 4 − 1 = 51; sleepstudy ML:
/// 180 − 2 − 3 − 1 = 174, as summary() prints them).
final class DfResidTests: XCTestCase {
    func testGLMMHasNoScaleParameter() throws {
        let options = FitOptions(family: .binomial)
        let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("cbpp")), dataset: "data",
                                 formula: "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)", options: options)
        XCTAssertEqual(r.dfResid, 51)
        let text = Report.text(r)
        let header = text.split(separator: "\n").first { $0.contains("df.resid") }
        let values = header.flatMap { h in text.split(separator: "\n").drop { $0 != h }.dropFirst().first }
        XCTAssertEqual(values?.split(separator: " ").last, "51", text)
    }

    func testLMMCountsSigma() throws {
        let r = try Analysis.fit(inProcessFederation(files: try Fixtures.siteFiles("sleepstudy")), dataset: "data",
                                 formula: "Reaction ~ Days + (Days | Subject)", options: FitOptions(method: .ml))
        XCTAssertEqual(r.dfResid, 174)
    }
}

import XCTest

extension ExecutableTests {
    /// `fedmix bench --models surgeon-wards --lme4`: the 2,000 surgeons with
    /// 10–20 wards per hospital, `(1 | site/ward) + (1 | surgeon)`, through
    /// the built executable. The sites' sums depend on θ, so each evaluation
    /// is a round (far fewer than 100 in all); the coordinator eliminates the
    /// surgeons level by level with the hospitals' own effects as columns.
    /// The REML criterion is never above lmer's by more than 1e-8 relative
    /// and β agrees to 1e-4 (`assertNotAboveLme4`) when R is present.
    func benchSurgeonWardsBesideLme4() throws {
        let r = try fedmix(["bench", "--models", "surgeon-wards", "--modes", "in-process", "--no-isolate", "--json", "--lme4"], timeout: 300)
        XCTAssertTrue(r.out.contains("[1/1] y ~ x + (1 | site/ward) + (1 | surgeon)"), r.out)
        XCTAssertTrue(r.out.contains("rows 36,174, sites 20"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "surgeon-wards")
        XCTAssertEqual(m["converged"] as? Bool, true)
        XCTAssertLessThanOrEqual(try XCTUnwrap(m["rounds"] as? Int), 30, "one round per evaluation, then finalize")
        let line = r.out.split(separator: "\n").first { $0.contains("REML criterion lme4 ") }.map(String.init)
        guard let line else {
            XCTAssertTrue(r.out.contains("      lme4     not available"), r.out)
            return
        }
        try assertNotAboveLme4(line, m)
    }
}

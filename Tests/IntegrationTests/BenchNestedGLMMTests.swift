import XCTest

extension ExecutableTests {
    /// `fedmix bench --models nested-glmm --patients 300 --lme4`: visits in
    /// episodes in 300 patients at each of 3 sites, binary,
    /// `died ~ x + (1 | site/patient/episode)`, through the built executable
    /// (the sites hold the nested chain, as at any size).
    /// −2 log L is never above glmer's by more than 1e-8 relative when R is present.
    func benchNestedGLMMBesideGlmer() throws {
        let r = try fedmix(["bench", "--models", "nested-glmm", "--patients", "300", "--modes", "in-process", "--no-isolate", "--json", "--lme4"])
        XCTAssertTrue(r.out.contains("[1/1] died ~ x + (1 | site/patient/episode)"), r.out)
        XCTAssertTrue(r.out.contains("sites 3"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "nested-glmm")
        XCTAssertEqual(m["patients"] as? Int, 300)
        XCTAssertEqual(m["converged"] as? Bool, true)
        let line = r.out.split(separator: "\n").first { $0.contains("−2 log L lme4 ") }.map(String.init)
        guard let line else {
            XCTAssertTrue(r.out.contains("      lme4     not available"), r.out)
            return
        }
        try assertCriterionNotAboveLme4(line, m)
    }
}

import XCTest

extension ExecutableTests {
    /// `fedmix bench --models surgeon-wards-glmm --surgeons 100 --lme4`: the
    /// surgeons-glmm rows with 10–20 wards per hospital,
    /// `died ~ age + (1 | site/ward) + (1 | surgeon)`, through the built
    /// executable. Every ward has min_cell rows, so every site offers the
    /// level form, but at 100 surgeons (and ~320 own effects over the sites)
    /// the cost rule takes the dense form (the result says which ran; the
    /// level form's agreement is CrossedGLMMWardsFitTests'). −2 log L is
    /// never above glmer's by more than 1e-8 relative when R is present.
    /// β is not compared: glmer at its default tolerances stops 0.007 above
    /// our deviance at 200 surgeons (0.006 at 100), with β 4e-4 away, beyond
    /// assertNotAboveLme4's 1e-4.
    func benchSurgeonWardsGLMMBesideGlmer() throws {
        let r = try fedmix(["bench", "--models", "surgeon-wards-glmm", "--surgeons", "100", "--modes", "in-process", "--no-isolate", "--json", "--lme4"], timeout: 300)
        XCTAssertTrue(r.out.contains("[1/1] died ~ age + (1 | site/ward) + (1 | surgeon)"), r.out)
        XCTAssertTrue(r.out.contains("sites 20"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "surgeon-wards-glmm")
        XCTAssertEqual(m["surgeons"] as? Int, 100)
        XCTAssertEqual(m["converged"] as? Bool, true)
        XCTAssertTrue((m["messages"] as? [String] ?? []).contains { $0.contains("dense form") }, "\(m["messages"] ?? "")")
        let line = r.out.split(separator: "\n").first { $0.contains("−2 log L lme4 ") }.map(String.init)
        guard let line else {
            XCTAssertTrue(r.out.contains("      lme4     not available"), r.out)
            return
        }
        try assertCriterionNotAboveLme4(line, m)
    }
}

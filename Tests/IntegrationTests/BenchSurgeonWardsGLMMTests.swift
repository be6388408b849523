import XCTest

extension ExecutableTests {
    /// `fedmix bench --models surgeon-wards-glmm --surgeons 200 --lme4`: the
    /// surgeons-glmm rows with 10–20 wards per hospital,
    /// `died ~ age + (1 | site/ward) + (1 | surgeon)`, through the built
    /// executable. Every ward has min_cell rows, so the sites answer in the
    /// level form (the result says so); −2 log L is never above glmer's by
    /// more than 1e-8 relative and β agrees to 1e-4 (`assertNotAboveLme4`)
    /// when R is present.
    func benchSurgeonWardsGLMMBesideGlmer() throws {
        let r = try fedmix(["bench", "--models", "surgeon-wards-glmm", "--surgeons", "200", "--modes", "in-process", "--no-isolate", "--json", "--lme4"])
        XCTAssertTrue(r.out.contains("[1/1] died ~ age + (1 | site/ward) + (1 | surgeon)"), r.out)
        XCTAssertTrue(r.out.contains("sites 20"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["model"] as? String, "surgeon-wards-glmm")
        XCTAssertEqual(m["surgeons"] as? Int, 200)
        XCTAssertEqual(m["converged"] as? Bool, true)
        XCTAssertTrue((m["messages"] as? [String] ?? []).contains { $0.contains("level form") }, "\(m["messages"] ?? "")")
        let line = r.out.split(separator: "\n").first { $0.contains("−2 log L lme4 ") }.map(String.init)
        guard let line else {
            XCTAssertTrue(r.out.contains("      lme4     not available"), r.out)
            return
        }
        try assertNotAboveLme4(line, m)
    }
}

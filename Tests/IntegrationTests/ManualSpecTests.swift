import XCTest
import Coordinator
import Protocol
import Math

final class ManualSpecTests: XCTestCase {
    func testDyestuffREML() throws {
        let spec = ModelSpec(formula: "Yield ~ 1 + (1 | site)", response: .value(.variable("Yield")),
                             fixed: [DesignColumn(name: "(Intercept)", expr: .number(1))],
                             terms: [RandomTerm(name: "site", grouping: .site, columns: [DesignColumn(name: "(Intercept)", expr: .number(1))])])
        let fed = inProcessFederation(files: try Fixtures.siteFiles("dyestuff"))
        let r = try LMMFit.run(fed, dataset: "data", spec: spec)
        print(try r.json())
        assertMatchesReference(r, try Fixtures.fit("dyestuff", "reml"))
    }
    func testSleepstudyREML() throws {
        let one = DesignColumn(name: "(Intercept)", expr: .number(1)), days = DesignColumn(name: "Days", expr: .variable("Days"))
        let spec = ModelSpec(formula: "Reaction ~ Days + (Days | Subject)", response: .value(.variable("Reaction")),
                             fixed: [one, days],
                             terms: [RandomTerm(name: "Subject", grouping: .withinSite(["Subject"]), columns: [one, days])])
        let fed = inProcessFederation(files: try Fixtures.siteFiles("sleepstudy"))
        let r = try LMMFit.run(fed, dataset: "data", spec: spec)
        print(r.evaluations, r.rounds, r.objective, r.theta)
        assertMatchesReference(r, try Fixtures.fit("sleepstudy", "reml"))
    }
}

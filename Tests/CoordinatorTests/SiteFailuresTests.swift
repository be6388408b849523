import XCTest
@testable import Coordinator

/// The advice after several sites refused fits the reason: a daily session
/// quota is neither the model's nor the data's fault.
final class SiteFailuresTests: XCTestCase {
    func testAdviceFollowsTheReason() {
        let quota = SiteFailures(failures: [
            SiteFailure(site: "north", message: "refused by the site's disclosure rules: this coordinator's certificate has opened the 100 sessions it may open in 24 hours (rule max_sessions_per_day)", code: "disclosure_refused"),
            SiteFailure(site: "south", message: "refused by the site's disclosure rules: this coordinator's certificate has opened the 100 sessions it may open in 24 hours (rule max_sessions_per_day)", code: "disclosure_refused"),
        ], request: "prepare", round: 2)
        XCTAssertTrue(quota.description.contains("wait, or ask them to raise max_sessions_per_day"), quota.description)
        XCTAssertFalse(quota.description.contains("Fix the model"), quota.description)
        XCTAssertTrue(quota.description.contains("--exclude-sites north,south"), quota.description)
        let model = SiteFailures(failures: [
            SiteFailure(site: "north", message: "variable \"lab\" may not be used at this site", code: "disclosure_refused"),
            SiteFailure(site: "south", message: "refused by the site's disclosure rules: (rule max_sessions_per_day)", code: "disclosure_refused"),
        ], request: "prepare", round: 2)
        XCTAssertTrue(model.description.contains("Fix the model or the sites' data"), model.description)
    }
}

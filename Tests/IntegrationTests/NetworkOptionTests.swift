import Foundation
import XCTest
import ExecutableSupport
import Synchronization
import Coordinator
import Protocol
import SiteAgent

/// The network options of the built `fedmix` (ExecutableTests.table):
/// --round-timeout, --connect-timeout, --reconnect-budget and --quiet,
/// against a site that never answers describe (an in-process agent whose
/// audit hook holds the request) and a port that never completes TLS.
extension ExecutableTests {
    final class StalledSite: @unchecked Sendable {
        let pki: TestPKI
        let agent: LoopbackAgent
        let listener: ValidationBeforeConnectingTests.Listener
        /// Reaches the stalled agent.
        let sitesFile: String
        /// Reaches the listener that never completes a handshake.
        let deafSitesFile: String
        private let release = DispatchSemaphore(value: 0)

        init() throws {
            pki = try TestPKI("stalled")
            let file = try Fixtures.siteFiles("sleepstudy")[1]
            agent = try LoopbackAgent(file: file, pki: pki)
            listener = try ValidationBeforeConnectingTests.Listener()
            let release = self.release
            agent.audit.onRecord { direction, line in
                // Holds every describe for up to 6 s (released at the end).
                if direction == .received, line.contains("\"type\":\"describe\"") { _ = release.wait(timeout: .now() + 6) }
            }
            let (pki, agent) = (pki, agent)
            func write(_ name: String, _ address: String) throws -> String {
                let json: [String: Any] = [
                    "tls": ["certificate": "coordinator/cert.pem", "key": "coordinator/key.pem", "ca": "ca/ca.pem"],
                    "sites": [["name": agent.site, "address": address, "server_name": agent.serverName]],
                ]
                let path = pki.root + "/\(name).json"
                try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
                return path
            }
            sitesFile = try write("stalled", "127.0.0.1:\(agent.port)")
            deafSitesFile = try write("deaf", "127.0.0.1:\(listener.port)")
        }

        func stop() {
            for _ in 0..<20 { release.signal() }
            agent.stop()
            pki.remove()
        }
    }

    func stalledSite() throws -> StalledSite {
        let s = try StalledSite()
        addTeardownBlock { s.stop() }
        return s
    }

    /// Runs `fedmix args` expecting failure; returns stderr and the time it took.
    func failing(_ args: [String], environment: [String: String] = [:]) throws -> (String, Double) {
        let started = Date()
        let r = try fedmix(args, status: 1, environment: environment)
        return (r.err, Date().timeIntervalSince(started))
    }

    func networkOptions(_ command: String, _ extra: [String]) throws {
        let s = try stalledSite()
        let site = s.agent.site
        let (err, elapsed) = try failing([command, "--sites", s.sitesFile, "--dataset", "data", "--round-timeout", "4"] + extra,
                                         environment: ["FEDMIX_PROGRESS": "1"])
        XCTAssertTrue(err.contains("site \"\(site)\": no answer to describe (round 1) within 4 s"), err)
        XCTAssertTrue(err.contains("fedmix: round 1 (describe): waiting for \(site) ("), "a notice while waiting: \(err)")
        XCTAssertLessThan(elapsed, 12)
        let (quiet, _) = try failing([command, "--sites", s.sitesFile, "--dataset", "data", "--round-timeout", "1", "--quiet"] + extra,
                                     environment: ["FEDMIX_PROGRESS": "1"])
        XCTAssertFalse(quiet.contains("waiting for"), "--quiet: \(quiet)")
        XCTAssertTrue(quiet.contains("within 1 s"), quiet)
        let (deaf, took) = try failing([command, "--sites", s.deafSitesFile, "--dataset", "data", "--connect-timeout", "1", "--reconnect-budget", "0"] + extra)
        XCTAssertTrue(deaf.contains("site \"\(site)\": cannot connect to 127.0.0.1:\(s.listener.port): "), deaf)
        XCTAssertLessThan(took, 4)
        try fedmixUsageError([command, "--sites", s.sitesFile, "--dataset", "data", "--reconnect-budget", "-1"] + extra,
                             "--reconnect-budget must be a number of seconds, 0 or more")
        try fedmixUsageError([command, "--sites", s.sitesFile, "--dataset", "data", "--round-timeout", "0"] + extra,
                             "--round-timeout must be a positive number")
    }

    func fitNetworkOptions() throws {
        try networkOptions("fit", ["--formula", Self.sleepstudy])
        // --reconnect-budget: north's connection is cut while it computes its second evaluate.
        let pki = try TestPKI("reconnect-option")
        let sites = try ShapedSites(pki: pki, network: NetworkPolicy())
        defer { sites.stop(); pki.remove() }
        let proxy = sites.proxy("north")
        let evaluates = Mutex(0)
        sites.agent("north").audit.onRecord { direction, line in
            guard direction == .received, line.contains("\"type\":\"evaluate\"") else { return }
            if evaluates.withLock({ $0 += 1; return $0 }) % 2 == 0 { proxy.cut() }
        }
        let json: [String: Any] = [
            "tls": ["certificate": "coordinator/cert.pem", "key": "coordinator/key.pem", "ca": "ca/ca.pem"],
            "sites": sites.file.sites.map { ["name": $0.name, "address": "127.0.0.1:\($0.port)", "server_name": $0.serverName] },
        ]
        let path = pki.root + "/sites.json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        let args = ["fit", "--sites", path, "--dataset", "data", "--formula", Self.sleepstudy]
        let resumed = try jsonFit(args + ["--reconnect-budget", "5"])
        XCTAssertTrue((resumed["messages"] as? [String] ?? []).contains { $0.hasPrefix("site north: evaluate (round ") && $0.contains("reconnected after") },
                      "\(resumed["messages"] ?? "")")
        let (err, _) = try failing(args + ["--reconnect-budget", "0"])
        XCTAssertTrue(err.contains("site \"north\": connection lost: "), err)
    }
    func describeNetworkOptions() throws { try networkOptions("describe", []) }
    func explainNetworkOptions() throws { try networkOptions("explain", ["--formula", Self.sleepstudy]) }
    func sensitivityNetworkOptions() throws {
        try networkOptions("sensitivity", ["--formula", Self.withLab, "--missing-indicator", "lab=0"])
        try fedmixUsageError(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--round-timeout", "5"],
                             "--round-timeout cannot be used with CSV paths")
    }
}

extension ExecutableTests {
    /// Progress goes to standard error only (FEDMIX_PROGRESS=1 stands in for
    /// a terminal); --quiet silences it; standard output is the JSON alone.
    func localQuiet() throws {
        let args = ["local"] + (try data().files) + ["--formula", Self.sleepstudy, "--format", "json", "--in-process"]
        let loud = try fedmix(args, environment: ["FEDMIX_PROGRESS": "1"])
        let quiet = try fedmix(args + ["--quiet"], environment: ["FEDMIX_PROGRESS": "1"])
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(loud.out.utf8)) as? [String: Any], "stdout is JSON only")
        XCTAssertEqual(quiet.err, "", "--quiet: nothing on standard error")
        XCTAssertEqual(try json(loud)["objective"] as? Double, try json(quiet)["objective"] as? Double)
        XCTAssertTrue(loud.err.contains("fedmix: "), "progress on standard error: \(loud.err)")
    }
}

extension ExecutableTests {
    /// `fedmix bench-network` on a few agents: the figures it prints (no timing is asserted).
    func benchNetworkSmall() throws {
        let r = try fedmix(["bench-network", "--agents", "3", "--rows", "40-60", "--seed", "3"])
        // --serve-agents is what the child process hosting the agents runs.
        XCTAssertTrue(r.out.hasPrefix("fedmix bench-network: 3 agents in one child process, "), r.out)
        XCTAssertTrue(r.out.contains("(40–60 per site), seed 3"), r.out)
        XCTAssertTrue(r.out.contains("site-grouped LMM: y ~ x1 + x2 + (1 | site)\n  rounds 2 (+1 describe)"), r.out)
        XCTAssertTrue(r.out.contains("binomial GLMM: b ~ x1 + (1 | site)\n  rounds "), r.out)
        XCTAssertTrue(r.out.contains("coordinator peak RSS: "), r.out)
        XCTAssertTrue(r.out.contains("coordinator threads during the fit: peak "), r.out)
        XCTAssertTrue(r.out.contains("a fan-out pool of min(sites, 64) = 3 threads"), r.out)
        let other = try fedmix(["bench-network", "--agents", "3", "--rows", "40-60", "--seed", "4"])
        func objective(_ out: String) -> String? { out.split(separator: "\n").first { $0.contains("objective") }.map(String.init)?.components(separatedBy: "objective ").last }
        XCTAssertNotEqual(objective(r.out), objective(other.out), "--seed changes the rows")
        try fedmixUsageError(["bench-network", "--rows", "300-200"], "--rows takes MIN-MAX")
        try fedmixUsageError(["bench-network", "--agents", "0"], "--agents must be a whole number from 1 to 2000")
    }

    /// --analysts: K coordinators at once against the same agents, all succeeding with the same numbers.
    func benchNetworkAnalysts() throws {
        let r = try fedmix(["bench-network", "--agents", "3", "--rows", "40-60", "--analysts", "3"])
        XCTAssertTrue(r.out.contains("analysts: 3 at once, each its own certificate and federation (3 TLS connections of its own)"), r.out)
        XCTAssertTrue(r.out.contains("\n  one analyst alone: "), r.out)
        XCTAssertTrue(r.out.contains("\n  per-analyst wall: median "), r.out)
        XCTAssertTrue(r.out.contains(", slowest ") && r.out.contains("; total wall "), r.out)
        XCTAssertTrue(r.out.contains("\n  succeeded: 3 of 3; results bit-identical to one another: yes; and to the analyst alone: yes\n"), r.out)
        XCTAssertFalse(r.out.contains("site-grouped LMM: "), "--analysts replaces the two fits: \(r.out)")
        try fedmixUsageError(["bench-network", "--analysts", "0"], "--analysts must be a whole number from 1 to 500")
        try fedmixUsageError(["bench-network", "--analysts", "2", "--soak", "10"], "--analysts and --soak are separate measurements")
    }

    /// --soak: N fits one after another; the agents' and the coordinator's memory and descriptors at fit 10 and N.
    func benchNetworkSoak() throws {
        let r = try fedmix(["bench-network", "--agents", "2", "--rows", "40-60", "--soak", "12"])
        XCTAssertTrue(r.out.contains("soak: 12 consecutive fits of y ~ x1 + x2 + (1 | site), each opening its own federation (2 TLS connections)"), r.out)
        for fit in ["10", "12"] {
            XCTAssertTrue(r.out.contains("\n  fit \(fit): agents' process RSS "), r.out)
        }
        XCTAssertTrue(r.out.contains(" fds, "), r.out)
        XCTAssertTrue(r.out.contains("\n  all 12 fits succeeded; results bit-identical to one another: yes; per fit: median "), r.out)
        XCTAssertTrue(r.out.contains("\n  agents' process, fit 10 -> fit 12: "), r.out)
        XCTAssertTrue(r.out.contains("\n  coordinator, fit 10 -> fit 12: "), r.out)
        XCTAssertFalse(r.out.contains("site-grouped LMM: "), "--soak replaces the two fits: \(r.out)")
        try fedmixUsageError(["bench-network", "--soak", "5"], "--soak must be a whole number from 10 to 1000000")
    }
}

extension ExecutableTests {
    /// `exclude_sites` in the sites file: describe says which site it left out (text: in the report; JSON: on stderr).
    func describeNamesSitesLeftOutByTheSitesFile() throws {
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: try agents().sitesFile))) as! [String: Any]
        var json = original
        json["exclude_sites"] = [["site": "south", "reason": "data being reloaded"]]
        let path = try agents().root + "/sites-excluding-\(UUID().uuidString.prefix(6)).json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        let text = try fedmix(["describe", "--sites", path, "--dataset", "data"]).out
        XCTAssertTrue(text.contains("site south left out: excluded in the sites file: data being reloaded"), text)
        let r = try fedmix(["describe", "--sites", path, "--dataset", "data", "--format", "json"])
        let sites = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        XCTAssertEqual(sites.map { $0["site"] as? String }, ["central", "north"])
        XCTAssertTrue(r.err.contains("fedmix: site south left out: excluded in the sites file: data being reloaded"), r.err)
    }
}

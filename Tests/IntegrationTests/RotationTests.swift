import Foundation
import XCTest
import ExecutableSupport
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// Certificate rotation without downtime: a real `fedmix-agent serve`
/// process reloads its certificate, key, CA file and allowed coordinators on
/// SIGHUP. A fit whose connection was opened before the reloads finishes; a
/// coordinator with a certificate from the new CA fits; a coordinator whose CA
/// was removed from the agent's CA file, or whose name was removed from
/// allowed_coordinators, is refused; a reload with a bad key keeps the
/// running certificate.
final class RotationTests: XCTestCase {
    static let formula = "Reaction ~ Days + (Days | Subject)"

    /// The deployment moves from CA A (TestPKI's "ca") to CA B ("other-ca").
    func testSIGHUPRotatesCertificateAndCAWhileAFitIsInFlight() throws {
        let binary = try Executables.agent()
        let pki = try TestPKI("rotation")
        defer { pki.remove() }
        let caA = pki.caDirectory, caB = pki.otherCADirectory
        let csv = try Fixtures.siteFiles("sleepstudy")[0]
        let site = csv.deletingPathExtension().lastPathComponent
        let serverName = "agent-rotation"

        // The agent's files, at the paths its configuration names.
        let agentDir = pki.root + "/agent"
        let trustedCA = agentDir + "/trusted-ca.pem"
        let configPath = agentDir + "/agent.json"
        try Certificates.issue(caDirectory: caA, name: serverName, outDirectory: agentDir, days: 2)
        try copyFile(caA + "/ca.pem", to: trustedCA)
        func writeConfig(allowed: [String]) throws {
            let config: [String: Any] = [
                "site": site, "listen": "127.0.0.1:0",
                "tls": ["certificate": "cert.pem", "key": "key.pem", "ca": "trusted-ca.pem", "allowed_coordinators": allowed],
                "datasets": ["data": ["csv": csv.path]],
                "disclosure": ["min_rows": 10, "min_cell": 5, "max_params_per_row": 0.33],
            ]
            let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: configPath), options: .atomic)
        }
        try writeConfig(allowed: ["coordinator", "analyst-2"])

        // Coordinators: the old one (CA A), one that trusts both CAs during
        // the change-over, and two with certificates from CA B.
        let bothCAs = pki.root + "/both-cas.pem"
        try (String(contentsOfFile: caA + "/ca.pem", encoding: .utf8) + String(contentsOfFile: caB + "/ca.pem", encoding: .utf8))
            .write(toFile: bothCAs, atomically: true, encoding: .utf8)
        let oldCoordinator = pki.coordinator
        let oldCoordinatorTrustingBoth = TLSIdentity(certificatePath: oldCoordinator.certificatePath, keyPath: oldCoordinator.keyPath, caPath: bothCAs)
        try Certificates.issue(caDirectory: caB, name: "coordinator", outDirectory: pki.root + "/coordinator-b", days: 2)
        try Certificates.issue(caDirectory: caB, name: "analyst-2", outDirectory: pki.root + "/analyst-2-b", days: 2)
        let newCoordinator = TLSIdentity(directory: pki.root + "/coordinator-b", caPath: caB + "/ca.pem")
        let analyst2 = TLSIdentity(directory: pki.root + "/analyst-2-b", caPath: caB + "/ca.pem")

        let agent = try RotatingAgentProcess(binary: binary, configPath: configPath, logDirectory: pki.root)
        defer { agent.kill() }
        func sites(_ identity: TLSIdentity) -> SitesFile {
            SitesFile(identity: identity, sites: [.init(name: site, host: "127.0.0.1", port: agent.port, serverName: serverName)])
        }
        func describeRows(_ identity: TLSIdentity) throws -> Int? {
            let federation = try sites(identity).connect(timeout: 10)
            defer { federation.close() }
            return try Analysis.describe(federation, dataset: "data").first?.rows
        }

        // Before: CA A only.
        XCTAssertEqual(try describeRows(oldCoordinator), 60)
        XCTAssertThrowsError(try describeRows(newCoordinator), "CA B is not trusted yet")
        let fingerprintA = try Certificates.inspect(certificatePath: agentDir + "/cert.pem").fingerprintSHA256

        // A fit over a connection opened now, as the old coordinator. After
        // its prepare round the agent is rotated twice; the fit goes on.
        let connected = try sites(oldCoordinator).connect(timeout: 10)
        XCTAssertEqual((connected.channels.first as? TLSChannel)?.agentSoftware, fedmixAgentVersion, "the agent's hello carries its version")
        var rotatedDuringFit = false
        var rotationError: Error?
        var fingerprintB = ""
        let inFlight = Federation(channels: connected.channels.map { channel in
            HookedChannel(channel) { request, _ in
                guard case .prepare = request, !rotatedDuringFit else { return }
                rotatedDuringFit = true
                do {
                    // 1. Change-over: a certificate from CA B, CA file A + B.
                    try Certificates.issue(caDirectory: caB, name: serverName, outDirectory: agentDir, days: 2)
                    try copyFile(bothCAs, to: trustedCA)
                    try agent.reload(expecting: "reloaded", count: 1)
                    fingerprintB = try Certificates.inspect(certificatePath: agentDir + "/cert.pem").fingerprintSHA256
                    XCTAssertEqual(agent.events(named: "reloaded").last?["certificate_sha256"], fingerprintB)
                    XCTAssertEqual(try describeRows(oldCoordinatorTrustingBoth), 60, "CA A is still trusted")
                    XCTAssertEqual(try describeRows(analyst2), 60, "analyst-2 is still allowed")
                    // 2. CA A and analyst-2 removed.
                    try copyFile(caB + "/ca.pem", to: trustedCA)
                    try writeConfig(allowed: ["coordinator"])
                    try agent.reload(expecting: "reloaded", count: 2)
                } catch { rotationError = error }
            }
        })
        let fitInFlight = try Analysis.fit(inFlight, dataset: "data", formula: Self.formula)
        inFlight.close()
        XCTAssertTrue(rotatedDuringFit)
        XCTAssertNil(rotationError)
        XCTAssertNotEqual(fingerprintA, fingerprintB)
        XCTAssertGreaterThan(fitInFlight.rounds, 2, "rounds after the reloads went over the same connection")

        // After: the new coordinator fits, with the same result.
        let federation = try sites(newCoordinator).connect(timeout: 10)
        let fitAfter = try Analysis.fit(federation, dataset: "data", formula: Self.formula)
        federation.close()
        let inProcess = try Analysis.fit(inProcessFederation(files: [csv]), dataset: "data", formula: Self.formula)
        assertSameFit(fitInFlight, inProcess, tol: 1e-10, "fit across the reloads")
        assertSameFit(fitAfter, inProcess, tol: 1e-10, "fit with the new certificate")
        XCTAssertEqual(fitAfter.nObs, 60)

        // The old coordinator's CA and analyst-2's name were removed: refused.
        let refusedBefore = agent.events(named: "connection_refused").count
        XCTAssertThrowsError(try describeRows(oldCoordinatorTrustingBoth))
        XCTAssertThrowsError(try describeRows(analyst2))
        XCTAssertThrowsError(try describeRows(oldCoordinator), "trusts only CA A, so it refuses the agent's new certificate")
        let reasons = try agent.waitForEvents(named: "connection_refused", count: refusedBefore + 2)
            .dropFirst(refusedBefore).compactMap { $0["reason"] }
        XCTAssertTrue(reasons.contains { $0.contains("was not issued by this deployment's CA") }, "\(reasons)")
        XCTAssertTrue(reasons.contains { $0.contains("peer name not allowed: the client's certificate is for analyst-2") }, "\(reasons)")

        // A reload with a key that does not match: logged, old context kept.
        try Certificates.issue(caDirectory: caB, name: serverName, outDirectory: pki.root + "/unrelated", days: 2)
        try copyFile(pki.root + "/unrelated/key.pem", to: agentDir + "/key.pem")
        try agent.reload(expecting: "reload_failed", count: 1)
        let failure = try XCTUnwrap(agent.events(named: "reload_failed").first)
        XCTAssertTrue(failure["reason"]?.contains("does not match certificate \(agentDir)/cert.pem") ?? false, "\(failure)")
        XCTAssertEqual(failure["kept"], "the previous certificate, key, CA and allowed coordinators")
        XCTAssertEqual(try describeRows(newCoordinator), 60, "still serving with the previous key")
        XCTAssertThrowsError(try describeRows(oldCoordinatorTrustingBoth), "and still refusing CA A")

        XCTAssertEqual(agent.events(named: "signal").compactMap { $0["signal"] }, ["HUP", "HUP", "HUP"])
        try agent.stop()
    }

    /// AgentReloader in process: each outcome, and that a failed reload
    /// leaves the running context serving.
    func testReloaderOutcomes() throws {
        let pki = try TestPKI("reloader")
        defer { pki.remove() }
        let agentDir = pki.root + "/agent"
        try Certificates.issue(caDirectory: pki.caDirectory, name: "agent-reloader", outDirectory: agentDir, days: 2)
        let configPath = agentDir + "/agent.json"
        let csv = try Fixtures.siteFiles("sleepstudy")[0]
        let site = csv.deletingPathExtension().lastPathComponent
        func write(_ changes: [String: Any] = [:]) throws {
            var config: [String: Any] = [
                "site": site, "listen": "127.0.0.1:0",
                "tls": ["certificate": "cert.pem", "key": "key.pem", "ca": pki.caPath, "allowed_coordinators": ["coordinator"]],
                "datasets": ["data": ["csv": csv.path]],
            ]
            config.merge(changes) { $1 }
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath), options: .atomic)
        }
        try write()
        let config = try AgentConfig.load(path: configPath)
        let server = try AgentServer(config: config, log: AgentLog(enabled: false))
        server.start()
        defer { server.stop() }
        let reloader = AgentReloader(server: server, config: config)
        let sites = SitesFile(identity: pki.coordinator, sites: [.init(name: site, host: "127.0.0.1", port: server.port, serverName: "agent-reloader")])
        func describeRows() throws -> Int? {
            let f = try sites.connect(timeout: 10)
            defer { f.close() }
            return try Analysis.describe(f, dataset: "data").first?.rows
        }

        guard case .reloaded(let fingerprint, let allowed, let restart) = reloader.reload() else { return XCTFail("expected a reload") }
        XCTAssertEqual(fingerprint, try Certificates.inspect(certificatePath: agentDir + "/cert.pem").fingerprintSHA256)
        XCTAssertEqual(allowed, ["coordinator"])
        XCTAssertEqual(restart, [])

        // Settings a reload does not apply are named.
        try write(["listen": "127.0.0.1:7999", "disclosure": ["min_rows": 50]])
        guard case .reloaded(_, _, let restart2) = reloader.reload() else { return XCTFail("expected a reload") }
        XCTAssertEqual(restart2, ["listen", "disclosure"])

        try write(["tls": "nope"])
        guard case .failed(let bad) = reloader.reload() else { return XCTFail("expected a failure") }
        XCTAssertTrue(bad.hasPrefix("configuration: \(configPath): \"tls\" must be an object"), bad)

        try write()
        try Certificates.issue(caDirectory: pki.caDirectory, name: "agent-reloader", outDirectory: pki.root + "/expired",
                               days: -1, notBeforeOffsetDays: -10)
        try copyFile(pki.root + "/expired/cert.pem", to: agentDir + "/cert.pem")
        try copyFile(pki.root + "/expired/key.pem", to: agentDir + "/key.pem")
        guard case .failed(let expired) = reloader.reload() else { return XCTFail("expected a failure") }
        XCTAssertTrue(expired.contains("(CN=agent-reloader) expired on"), expired)
        XCTAssertEqual(try describeRows(), 60, "the running certificate still serves")

        // Removing the coordinator's name takes effect at the next connection.
        try Certificates.issue(caDirectory: pki.caDirectory, name: "agent-reloader", outDirectory: agentDir, days: 2)
        try write(["tls": ["certificate": "cert.pem", "key": "key.pem", "ca": pki.caPath, "allowed_coordinators": ["someone-else"]]])
        guard case .reloaded = reloader.reload() else { return XCTFail("expected a reload") }
        XCTAssertThrowsError(try describeRows())
    }
}

private func copyFile(_ from: String, to: String) throws {
    try Data(contentsOf: URL(fileURLWithPath: from)).write(to: URL(fileURLWithPath: to), options: .atomic)
}

private struct RotationTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// One `fedmix-agent serve --config FILE` process, its log read from stderr.
private final class RotatingAgentProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    let stderrPath: String

    init(binary: URL, configPath: String, logDirectory: String) throws {
        let tag = UUID().uuidString.prefix(6)
        let stdoutPath = logDirectory + "/rotation-\(tag).out"
        stderrPath = logDirectory + "/rotation-\(tag).err"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = binary
        process.arguments = ["serve", "--config", configPath]
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(15)
        var found: Int?
        while found == nil && Date() < deadline && process.isRunning {
            let out = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""  // the listening line is logged on stderr
            if let r = out.range(of: "listening on 127.0.0.1:"), let line = out[r.upperBound...].split(separator: "\n").first {
                found = Int(line)
            } else { usleep(20_000) }
        }
        guard let found else {
            let err = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
            if process.isRunning { process.terminate() }
            throw RotationTestError("fedmix-agent did not report its port (stderr: \(err))")
        }
        port = found
    }

    var events: [[String: String]] {
        let text = (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: String] }
    }

    func events(named name: String) -> [[String: String]] { events.filter { $0["event"] == name } }

    /// Waits (up to 10 s) until `count` events of this name were logged.
    @discardableResult
    func waitForEvents(named name: String, count: Int) throws -> [[String: String]] {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let found = events(named: name)
            if found.count >= count { return found }
            usleep(10_000)
        }
        throw RotationTestError("no \(count) \"\(name)\" events within 10 s; log: \(events)")
    }

    /// SIGHUP, then waits for the `count`-th event `name` ("reloaded" or "reload_failed").
    func reload(expecting name: String, count: Int) throws {
        XCTAssertTrue(process.isRunning)
        Glibc.kill(process.processIdentifier, SIGHUP)
        try waitForEvents(named: name, count: count)
    }

    /// SIGTERM; the agent exits with status 0.
    func stop() throws {
        Glibc.kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(process.isRunning, "fedmix-agent did not stop within 5 s of SIGTERM")
        XCTAssertEqual(process.terminationReason, .exit)
        XCTAssertEqual(process.terminationStatus, 0)
    }

    func kill() {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

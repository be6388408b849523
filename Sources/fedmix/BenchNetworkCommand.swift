import Foundation
import CommandKit
import Coordinator
import Math
import Protocol
import SiteAgent
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `fedmix bench-network`: many agents at once. Hosts N site agents in this
/// process (mutual TLS on loopback, each site with its own number of rows)
/// and fits a site-grouped LMM and a binomial GLMM over them, reporting
/// rounds, wall time, the process's peak memory and its thread count before
/// and during the fits, so that the coordinator's share (threads held by
/// the fan-out, not by the agents) can be read off.
enum BenchNetworkCommand {
    static let agentsOption = Option<Int>("agents", value: "N", help: "site agents hosted in this process (default 200)", .integer(in: 1...2000))
    static let rowsOption = Option<String>("rows", value: "MIN-MAX", help: "rows per site, spread evenly over this range (default 200-2000)")
    static let seedOption = Option<UInt64>("seed", value: "S", help: "the random seed of the simulated rows (default 7)", .unsigned)
    static let analystsOption = Option<Int>("analysts", value: "K", help: "instead of the two fits: K analysts at once, each with its own certificate and federation (own TLS connections), fitting the site-grouped LMM against the same agents", .integer(in: 1...500))
    static let soakOption = Option<Int>("soak", value: "N", help: "instead of the two fits: N consecutive site-grouped LMM fits, each opening and closing its federation; the agents' and the coordinator's memory, open files and threads at fit 10 and fit N", .integer(in: 10...1_000_000))
    static let serveAgents = Flag("serve-agents", help: "internal: host the agents, print where, and serve until standard input closes (what the child process runs)")
    static let readyPrefix = "FEDMIX-AGENTS "

    static let command = Command(
        "bench-network", abstract: "Many agents in one process over loopback TLS: rounds, wall time, peak memory, threads.",
        discussion: """
        Simulated sites (x1, x2 ~ N(0,1); a site effect; y Gaussian, b binary), each with its own agent
        (AgentServer, mutual TLS on loopback, throwaway certificates), all hosted in one child process, fitted from this
        process with y ~ x1 + x2 + (1 | site) (site-grouped LMM: prepare, finalize) and the binomial GLMM
        b ~ x1 + (1 | site) (a round per evaluation). The coordinator's peak memory (getrusage) and threads
        (/proc/self/status) are this process's alone. Figures, not a test: run it on an otherwise idle machine.
        --analysts K: K analysts (threads of this process, each with its own certificate from the agents' throwaway CA,
        as K people would have: an agent admits at most limits.max_connections_per_certificate connections, 8 by default,
        per certificate) connect, describe, fit the LMM and close, all at once; per-analyst and total wall time, and
        whether every fit succeeded with bit-identical results. --soak N: N fits of the LMM one after another, each
        opening and closing its own federation as an analyst running one fit at a time would; the agents' process's
        resident memory, open file descriptors and threads (/proc/<pid>) and this process's, at fit 10 and fit N, with
        growth flagged. The agents apply the default disclosure rules except max_sessions_per_day (100 sessions per
        certificate in 24 hours), which is lifted so that a soak can open a session per fit.
        """,
        options: [agentsOption, rowsOption, seedOption, analystsOption, soakOption, serveAgents], run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let n = a.value(agentsOption, default: 200)
        let rowsText = a.value(rowsOption, default: "200-2000")
        let parts = rowsText.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 20, parts[1] >= parts[0] else {
            throw ArgumentError("--rows takes MIN-MAX, whole numbers with 20 <= MIN <= MAX (got \"\(rowsText)\")")
        }
        let seed = a.value(seedOption, default: 7)
        if a.flag(serveAgents) {
            try a.refuse([analystsOption, soakOption], "with --serve-agents")
            return try serve(agents: n, rows: (parts[0], parts[1]), seed: seed)
        }
        let analysts = a.value(analystsOption), soak = a.value(soakOption)
        if analysts != nil, soak != nil { throw ArgumentError("--analysts and --soak are separate measurements; give one of them") }
        return try coordinate(agents: n, rowsText: rowsText, rows: (parts[0], parts[1]), seed: seed, analysts: analysts, soak: soak)
    }

    /// The child: builds the sites' data, starts the agents, writes a sites
    /// file, prints its path, and serves until standard input closes.
    static func serve(agents n: Int, rows: (Int, Int), seed: UInt64) throws -> Int32 {
        var rng = SeededRandom(seed: seed)
        let parts = [rows.0, rows.1]
        let t0 = monotonicSeconds()
        var services: [SiteService] = []
        var totalRows = 0
        // The default disclosure rules, except max_sessions_per_day (100 per certificate): --soak opens a session per fit.
        var policy = DisclosurePolicy()
        policy.maxSessionsPerDay = .max
        for k in 0..<n {
            let rows = n == 1 ? parts[0] : parts[0] + (parts[1] - parts[0]) * k / (n - 1)
            totalRows += rows
            let u = 0.5 * rng.normal(), v = 0.4 * rng.normal()
            var x1: [Double?] = [], x2: [Double?] = [], y: [Double?] = [], b: [Double?] = []
            for _ in 0..<rows {
                let a1 = rng.normal(), a2 = rng.normal()
                x1.append(a1); x2.append(a2)
                y.append(1 + 0.5 * a1 - 0.3 * a2 + u + rng.normal())
                let p = 1 / (1 + exp(-(-0.5 + 0.8 * a1 + v)))
                b.append(rng.uniform() < p ? 1 : 0)
            }
            let table = DataTable(columns: [.init(name: "x1", data: .numeric(x1)), .init(name: "x2", data: .numeric(x2)),
                                            .init(name: "y", data: .numeric(y)), .init(name: "b", data: .numeric(b))], rowCount: rows)
            services.append(SiteService(site: String(format: "site-%03d", k), datasets: ["data": .table(table)], siteColumn: nil, policy: policy))
        }
        let agents = try LocalAgents(services: services, startOnly: true)
        defer { agents.stop() }
        let path = NSTemporaryDirectory() + "fedmix-bench-network-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try agents.writeSitesFile(to: path)
        FileHandle.standardOutput.write(readyPrefix + "\(totalRows) \(String(format: "%.3f", monotonicSeconds() - t0)) \(path)\n")
        _ = FileHandle.standardInput.readDataToEndOfFile()
        return 0
    }

    /// The parent: starts the child, connects to its agents and fits.
    static func coordinate(agents n: Int, rowsText: String, rows: (Int, Int), seed: UInt64,
                           analysts: Int? = nil, soak: Int? = nil) throws -> Int32 {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: Bundle.main.executablePath ?? CommandLine.arguments[0])
        child.arguments = ["bench-network", "--serve-agents", "--agents", String(n), "--rows", rowsText, "--seed", String(seed)]
        let input = Pipe(), output = Pipe()
        child.standardInput = input
        child.standardOutput = output
        try child.run()
        defer { try? input.fileHandleForWriting.close(); child.waitUntilExit() }
        var ready = ""
        while !ready.hasSuffix("\n") {
            let d = output.fileHandleForReading.availableData
            if d.isEmpty { break }
            ready += String(decoding: d, as: UTF8.self)
        }
        let words = ready.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 3).map(String.init)
        guard words.count == 4, words[0] + " " == readyPrefix, let totalRows = Int(words[1]), let setup = Double(words[2]) else {
            throw BenchError("the agents' process did not start (it printed \"\(ready)\")")
        }
        let threadsStart = threadCount()
        let t1 = monotonicSeconds()
        let federation = try SitesFile.load(path: words[3]).connect()
        defer { federation.close() }
        let t2 = monotonicSeconds()
        usleep(100_000)   // the connect pool's threads wind down
        let threadsConnected = threadCount()
        let parts = [rows.0, rows.1]
        print("fedmix bench-network: \(n) agents in one child process, \(totalRows) rows (\(parts[0])–\(parts[1]) per site), seed \(seed), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        print("  setup: data and \(n) agents (certificates, listeners) \(String(format: "%.2f", setup)) s; \(n) TLS connections \(String(format: "%.2f", t2 - t1)) s")
        print("  coordinator threads: \(threadsStart) before connecting, \(threadsConnected) with every site connected")
        if let analysts { return try concurrentAnalysts(analysts, sitesPath: words[3], agents: n) }
        if let soak { return try soakFits(soak, sitesPath: words[3], agents: n, agentPID: child.processIdentifier) }

        let peakThreads = Mutex(0)
        let peakCoordinator = Mutex(0)
        let sampling = Mutex(true)
        let sampler = Thread {
            while sampling.withLock({ $0 }) {
                let t = threadCount()
                peakThreads.withLock { $0 = max($0, t) }
                let c = FanOutPool.liveThreads
                peakCoordinator.withLock { $0 = max($0, c) }
                usleep(20_000)
            }
        }
        sampler.start()
        for (label, formula, family) in [("site-grouped LMM", "y ~ x1 + x2 + (1 | site)", Family.gaussian),
                                         ("binomial GLMM", "b ~ x1 + (1 | site)", Family.binomial)] {
            peakThreads.withLock { $0 = 0 }
            peakCoordinator.withLock { $0 = 0 }
            let start = monotonicSeconds()
            let r = try Analysis.fit(federation, dataset: "data", formula: formula, options: FitOptions(family: family))
            let wall = monotonicSeconds() - start
            let peak = peakThreads.withLock { $0 }
            let coordinator = peakCoordinator.withLock { $0 }
            print("\(label): \(formula)")
            print("  rounds \(r.rounds) (+1 describe), evaluations \(r.evaluations), wall \(String(format: "%.2f", wall)) s (\(String(format: "%.0f", 1000 * wall / Double(r.rounds + 1))) ms per round), \(r.converged ? "converged" : "NOT converged"), objective \(String(format: "%.4f", r.objective))")
            print("  traffic sent \(BenchCommand.bytes(r.bytesSent)), received \(BenchCommand.bytes(r.bytesReceived)); coordinator threads during the fit: peak \(peak) (fan-out pool \(coordinator), watchdog, this benchmark's sampler and main thread)")
        }
        sampling.withLock { $0 = false }
        print("coordinator peak RSS: \(BenchCommand.bytes(BenchCommand.peakRSS())) (this process only; the agents run in the child)")
        let agentsUsage = Usage.of(String(child.processIdentifier))
        print("agents' process after the fits: \(agentsUsage.text) (\(n) agents, \(agentsUsage.rss.map { BenchCommand.bytes($0 / max(n, 1)) } ?? "n/a") per agent)")
        print("coordinator threads: a fan-out pool of min(sites, \(Federation.maxFanOutThreads)) = \(min(n, Federation.maxFanOutThreads)) threads for the fit, one watchdog thread")
        return 0
    }

    static let analystFormula = "y ~ x1 + x2 + (1 | site)"

    /// What an analyst does: loads the sites file, connects (its own TLS
    /// connections), describes, fits the site-grouped LMM and closes.
    static func analystFit(sitesPath: String) throws -> FitResult {
        try analystFit(SitesFile.load(path: sitesPath))
    }

    static func analystFit(_ sites: SitesFile) throws -> FitResult {
        let federation = try sites.connect()
        defer { federation.close() }
        return try Analysis.fit(federation, dataset: "data", formula: analystFormula, options: FitOptions(family: .gaussian))
    }

    /// The numbers of a fit, bit for bit (estimates, standard errors, θ,
    /// variance components, σ, objective, log-likelihood).
    static func fingerprint(_ r: FitResult) -> [UInt64] {
        r.fixedEffects.flatMap { [$0.estimate.bitPattern, $0.stdError.bitPattern] } + r.theta.map(\.bitPattern)
            + r.varianceComponents.map(\.vcov.bitPattern) + [r.sigma.bitPattern, r.objective.bitPattern, r.loglik.bitPattern]
    }

    static func seconds(_ x: Double) -> String { String(format: "%.2f s", x) }

    /// --analysts K: K analysts at once against the same agents.
    static func concurrentAnalysts(_ k: Int, sitesPath: String, agents n: Int) throws -> Int32 {
        print("analysts: \(k) at once, each its own certificate and federation (\(n) TLS connections of its own): connect, describe, \(analystFormula), close")
        // Each analyst its own certificate (named "coordinator", as the agents admit), issued by the agents' throwaway CA.
        let shared = try SitesFile.load(path: sitesPath)
        let caDirectory = (shared.identity.caPath as NSString).deletingLastPathComponent
        let directory = NSTemporaryDirectory() + "fedmix-bench-analysts-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var files: [SitesFile] = []
        for i in 0..<k {
            try Certificates.issue(caDirectory: caDirectory, name: "coordinator", outDirectory: directory + "/analyst-\(i)", days: 1)
            var f = shared
            f.identity = TLSIdentity(directory: directory + "/analyst-\(i)", caPath: shared.identity.caPath)
            files.append(f)
        }
        let soloStart = monotonicSeconds()
        let solo = try analystFit(sitesPath: sitesPath)
        let soloWall = monotonicSeconds() - soloStart
        print("  one analyst alone: \(seconds(soloWall)) (rounds \(solo.rounds) +1 describe, \(solo.converged ? "converged" : "NOT converged"))")

        struct Outcome: Sendable { var wall: Double; var fingerprint: [UInt64]?; var error: String? }
        let start = monotonicSeconds()
        let analysts = files
        let all = FanOutPool.map(k, width: k, name: "analyst", stackSize: 8 << 20) { i in
            let t0 = monotonicSeconds()
            var o = Outcome(wall: 0, fingerprint: nil, error: nil)
            do { o.fingerprint = fingerprint(try analystFit(analysts[i])) } catch { o.error = "\(error)" }
            o.wall = monotonicSeconds() - t0
            return o
        }
        let total = monotonicSeconds() - start
        let walls = all.map(\.wall).sorted()
        let median = walls.count % 2 == 1 ? walls[walls.count / 2] : (walls[walls.count / 2 - 1] + walls[walls.count / 2]) / 2
        let succeeded = all.filter { $0.fingerprint != nil }
        let prints = Set(succeeded.compactMap(\.fingerprint))
        let identical = succeeded.count == k && prints.count == 1
        print("  per-analyst wall: median \(seconds(median)), slowest \(seconds(walls.last!)), fastest \(seconds(walls.first!)); total wall \(seconds(total)) for all \(k)")
        print("  succeeded: \(succeeded.count) of \(k); results bit-identical to one another: \(identical ? "yes" : "NO (\(prints.count) different)")"
              + (identical ? "; and to the analyst alone: \(prints.first! == fingerprint(solo) ? "yes" : "NO")" : ""))
        for (i, o) in all.enumerated() where o.error != nil { print("  analyst \(i) failed: \(o.error!)") }
        return identical && prints.first! == fingerprint(solo) ? 0 : 1
    }

    /// Resident memory, open file descriptors and threads of a process.
    struct Usage {
        var rss: Int?, fds: Int?, threads: Int?
        static func of(_ pid: String) -> Usage {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            func field(_ name: String) -> Int? {
                guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return nil }
                return Int(line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
            }
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"))?.count
            return Usage(rss: field("VmRSS").map { $0 * 1024 }, fds: fds, threads: field("Threads"))
        }
        var text: String {
            "RSS \(rss.map(BenchCommand.bytes) ?? "n/a"), \(fds.map(String.init) ?? "n/a") fds, \(threads.map(String.init) ?? "n/a") threads"
        }
    }

    /// "flat" or "GROWTH …" from fit 10 to fit N: memory up by more than
    /// 4 MB and 10 %, or any more file descriptors or threads.
    static func growth(_ a: Usage, _ b: Usage) -> String {
        guard let r0 = a.rss, let r1 = b.rss, let f0 = a.fds, let f1 = b.fds, let t0 = a.threads, let t1 = b.threads else { return "n/a (no /proc)" }
        var grew: [String] = []
        if r1 - r0 > max(4 << 20, r0 / 10) { grew.append("RSS +\(BenchCommand.bytes(r1 - r0))") }
        if f1 > f0 { grew.append("fds +\(f1 - f0)") }
        if t1 > t0 { grew.append("threads +\(t1 - t0)") }
        let delta = r1 >= r0 ? "+" + BenchCommand.bytes(r1 - r0) : "-" + BenchCommand.bytes(r0 - r1)
        return grew.isEmpty ? "flat (RSS \(delta), fds \(f1 - f0 >= 0 ? "+" : "")\(f1 - f0), threads \(t1 - t0 >= 0 ? "+" : "")\(t1 - t0))"
                            : "GROWTH: " + grew.joined(separator: ", ")
    }

    /// --soak N: N fits one after another, each with its own federation.
    static func soakFits(_ count: Int, sitesPath: String, agents n: Int, agentPID: Int32) throws -> Int32 {
        print("soak: \(count) consecutive fits of \(analystFormula), each opening its own federation (\(n) TLS connections) and closing it after the fit, as an analyst running one fit at a time would")
        let samplesAt = Set([1, 10, count / 4, count / 2, 3 * count / 4, count].filter { $0 >= 1 })
        var first: [UInt64]? = nil, identical = true
        var walls: [Double] = []
        var at10: (Usage, Usage)? = nil, atN: (Usage, Usage)? = nil
        let start = monotonicSeconds()
        for i in 1...count {
            let t0 = monotonicSeconds()
            let r: FitResult
            do { r = try analystFit(sitesPath: sitesPath) } catch {
                print("  fit \(i) of \(count) FAILED after \(seconds(monotonicSeconds() - start)): \(error)")
                return 1
            }
            walls.append(monotonicSeconds() - t0)
            let f = fingerprint(r)
            if first == nil { first = f } else if f != first { identical = false }
            if samplesAt.contains(i) {
                usleep(200_000)   // the agents finish closing the connections
                let agentUsage = Usage.of(String(agentPID)), own = Usage.of("self")
                print("  fit \(String(i).leftPad(String(count).count)): agents' process \(agentUsage.text); coordinator \(own.text); fit wall \(seconds(walls.last!))")
                if i == 10 { at10 = (agentUsage, own) }
                if i == count { atN = (agentUsage, own) }
            }
        }
        let total = monotonicSeconds() - start
        let sorted = walls.sorted()
        print("  all \(count) fits succeeded; results bit-identical to one another: \(identical ? "yes" : "NO"); per fit: median \(seconds(sorted[sorted.count / 2])), slowest \(seconds(sorted.last!)); total \(seconds(total))")
        if let at10, let atN {
            print("  agents' process, fit 10 -> fit \(count): \(growth(at10.0, atN.0))")
            print("  coordinator, fit 10 -> fit \(count): \(growth(at10.1, atN.1))")
        }
        return identical ? 0 : 1
    }

    /// Threads of this process (/proc/self/status), 0 where unavailable.
    static func threadCount() -> Int { Usage.of("self").threads ?? 0 }
}

private extension String {
    func leftPad(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

import Foundation
import CommandKit
import Coordinator
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
        """,
        options: [agentsOption, rowsOption, seedOption, serveAgents], run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let n = a.value(agentsOption, default: 200)
        let rowsText = a.value(rowsOption, default: "200-2000")
        let parts = rowsText.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 20, parts[1] >= parts[0] else {
            throw ArgumentError("--rows takes MIN-MAX, whole numbers with 20 <= MIN <= MAX (got \"\(rowsText)\")")
        }
        let seed = a.value(seedOption, default: 7)
        if a.flag(serveAgents) { return try serve(agents: n, rows: (parts[0], parts[1]), seed: seed) }
        return try coordinate(agents: n, rowsText: rowsText, rows: (parts[0], parts[1]), seed: seed)
    }

    /// The child: builds the sites' data, starts the agents, writes a sites
    /// file, prints its path, and serves until standard input closes.
    static func serve(agents n: Int, rows: (Int, Int), seed: UInt64) throws -> Int32 {
        var rng = SplitMix(seed: seed)
        let parts = [rows.0, rows.1]
        let t0 = monotonicSeconds()
        var services: [SiteService] = []
        var totalRows = 0
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
            services.append(SiteService(site: String(format: "site-%03d", k), datasets: ["data": .table(table)], siteColumn: nil))
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
    static func coordinate(agents n: Int, rowsText: String, rows: (Int, Int), seed: UInt64) throws -> Int32 {
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
        print("coordinator threads: a fan-out pool of min(sites, \(Federation.maxFanOutThreads)) = \(min(n, Federation.maxFanOutThreads)) threads for the fit, one watchdog thread")
        return 0
    }

    /// Threads of this process (/proc/self/status), 0 where unavailable.
    static func threadCount() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("Threads:") }) else { return 0 }
        return Int(line.dropFirst("Threads:".count).trimmingCharacters(in: .whitespaces)) ?? 0
    }

    /// A small seeded generator (SplitMix64), normal by Box–Muller.
    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) / Double(1 << 53) }
        mutating func normal() -> Double { (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform()) }
    }
}

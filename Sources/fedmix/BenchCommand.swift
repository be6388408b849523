import Foundation
import CommandKit
import Coordinator
import Protocol
import SiteAgent
import Math
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `fedmix bench`: fits the three benchmark models (BenchmarkData) on
/// simulated rows, in process and over site agents on loopback TLS, and
/// reports time, rounds, traffic and peak memory. Each configuration runs in
/// a child process of its own, so that its peak memory is its own.
enum BenchCommand {
    enum Model: String, CaseIterable, Codable {
        case slope, patient, binary
        /// geepack's ohio (wheeze of 537 children at ages 7–10, mother's smoking), one child per site,
        /// adaptive Gauss–Hermite with 12 points: many tiny sites. Rows and sites are the data's.
        case ohio
        /// mlmRev's egsingle, one school per site, children nested in schools (BenchEgsingle.swift).
        case egsingle
        /// Visits in episodes in patients, 20,000 patients at each of 3 sites (BenchNested.swift).
        case nested
        /// The same design with a binary outcome, a GLMM through the nested chain (BenchNested.swift).
        case nestedGLMM = "nested-glmm"
        /// 2,000 surgeons crossed with 20 hospitals (BenchSurgeons.swift).
        case surgeons
        /// The same surgeons with a binary outcome, a crossed GLMM (BenchSurgeonsGLMM.swift).
        case surgeonsGLMM = "surgeons-glmm"
        /// The same surgeons with 10–20 wards per hospital, `(1 | site/ward)` (BenchSurgeons.swift).
        case surgeonWards = "surgeon-wards"
        /// The surgeons-glmm rows with 10–20 wards per hospital, `(1 | site/ward)` (BenchSurgeonsGLMM.swift).
        case surgeonWardsGLMM = "surgeon-wards-glmm"
        var formula: String {
            switch self {
            case .slope: return BenchmarkData.slopeFormula
            case .patient: return BenchmarkData.patientFormula
            case .binary: return BenchmarkData.binaryFormula
            case .ohio: return OhioData.formula
            case .egsingle: return EgsingleData.formula
            case .nested: return NestedVisitsData.formula
            case .nestedGLMM: return NestedVisitsData.glmmFormula
            case .surgeons: return SurgeonsData.formula
            case .surgeonsGLMM: return SurgeonsGLMMData.formula
            case .surgeonWards: return SurgeonWardsData.formula
            case .surgeonWardsGLMM: return SurgeonWardsGLMMData.formula
            }
        }
        var options: FitOptions {
            switch self {
            case .binary, .surgeonsGLMM, .surgeonWardsGLMM, .nestedGLMM: return FitOptions(family: .binomial)
            case .ohio: return FitOptions(family: .binomial, nAGQ: OhioData.nAGQ)
            case .slope, .patient, .egsingle, .nested, .surgeons, .surgeonWards: return FitOptions(method: .reml)
            }
        }
        var isGLMM: Bool { self == .binary || self == .ohio || self == .surgeonsGLMM || self == .surgeonWardsGLMM || self == .nestedGLMM }
        /// Its patients per site are --patients.
        var takesPatients: Bool { self == .nested || self == .nestedGLMM }
        /// Its surgeons are --surgeons.
        var takesSurgeons: Bool { self == .surgeonsGLMM || self == .surgeonWardsGLMM }
        /// A data set of its own (its rows and sites, not --rows and --sites): measured once.
        var hasOwnRows: Bool { self == .ohio || self == .egsingle || self == .nested || self == .surgeons || self == .surgeonsGLMM || self == .surgeonWards || self == .surgeonWardsGLMM || self == .nestedGLMM }
        /// The models `fedmix bench` runs without --models.
        static let defaults: [Model] = [.slope, .patient, .binary]
        /// lme4's time at 100 000 rows on the reference machine (seconds).
        var lme4Seconds100k: Double { switch self { case .slope: return 6.5; case .patient: return 5.3; case .binary: return 20; case .ohio, .egsingle, .nested, .nestedGLMM, .surgeons, .surgeonsGLMM, .surgeonWards, .surgeonWardsGLMM: return .nan } }
    }

    enum Mode: String, CaseIterable, Codable {
        case inProcess = "in-process", federated
        /// Federated, each agent writing its SQLite audit log (WAL, synchronous FULL) before every answer.
        case audited = "federated-audit"
    }

    /// One configuration's figures.
    struct Measurement: Codable {
        var rows: Int
        var sites: Int
        var model: Model
        var mode: Mode
        /// Generating the rows and the sites' DataTables.
        var generateSeconds: Double
        /// Site services, or certificates + agents + TLS connections.
        var setupSeconds: Double
        /// Federated: the set-up's parts, [certificates, agents' start, connections and handshakes] (LocalAgents.startup).
        var setupParts: [Double]?
        /// In process: the sites' rows written as CSV files and read back by the agents' reader (CSVIngest).
        var csvIngest: CSVIngest?
        /// Describe round and formula resolution.
        var describeSeconds: Double
        /// Prepare round: every site evaluates the model on its rows.
        var prepareSeconds: Double
        /// From the last prepare answer to the finalize answers.
        var fitSeconds: Double
        var evaluations: Int
        var rounds: Int
        var bytesSent: Int
        var bytesReceived: Int
        var peakRSSBytes: Int
        /// Process CPU time (user + system, all threads) of generation, setup,
        /// describe, prepare and fit: less sensitive than wall time to a busy machine.
        var cpuSeconds: [Double]?
        /// Peak RSS when generation, setup, describe and prepare had finished (it only grows).
        var peakRSSByPhase: [Int]?
        var objective: Double
        var theta: [Double]
        var beta: [Double]
        var sigma: Double
        var converged: Bool
        var messages: [String]
        var isolated: Bool
        /// Runs this measurement is the best of.
        var runs: Int?
        /// The optimizer's path (objective and Newton decrement per iteration), to read rounds against.
        var trace: [FitResult.TracePoint]?
        /// surgeons-glmm, surgeon-wards-glmm: its surgeons (--surgeons).
        var surgeons: Int?
        /// nested, nested-glmm: patients per site (--patients).
        var patients: Int?

        var designSeconds: Double { describeSeconds + prepareSeconds }
        /// What lme4's timing covers: model frame and design from in-memory rows, and the fit.
        var analysisSeconds: Double { designSeconds + fitSeconds }
    }

    static let resultPrefix = "FEDMIX-BENCH-RESULT "

    static let rowsOption = Option<[Int]>("rows", value: "N[,N...]", help: "rows of each configuration (default 100000,1000000)",
                                          .list(of: .integer(in: 1...Int.max), what: "numbers of rows"))
    static let sitesOption = Option<Int>("sites", value: "K", help: "sites the rows are split over (default 50)", .integer(in: 1...Int.max))
    static let modelsOption = Option<[Model]>("models", value: "LIST", help: "which models: slope,patient,binary,ohio,egsingle,nested,nested-glmm,surgeons,surgeons-glmm,surgeon-wards,surgeon-wards-glmm (default slope,patient,binary)",
                                              .list(of: .cases, what: "slope, patient, binary, ohio, egsingle, nested, nested-glmm, surgeons, surgeons-glmm, surgeon-wards or surgeon-wards-glmm"))
    static let modesOption = Option<[Mode]>("modes", value: "LIST", help: "in-process, federated, federated-audit (default in-process,federated)",
                                            .list(of: .cases, what: "in-process, federated or federated-audit"))
    static let repeatOption = Option<Int>("repeat", value: "R", help: "keep the fastest of R runs of each configuration (default 1)", .integer(in: 1...Int.max))
    static let seedOption = Option<UInt64>("seed", value: "S", help: "the random seed of the simulated rows (default 20260101)", .unsigned)
    static let json = Flag("json", help: "also print every measurement as one JSON line")
    static let lme4 = Flag("lme4", help: "also time lme4 (lmer or glmer) on the same rows and print the ratio (needs Rscript with lme4)")
    static let codec = Flag("codec", help: "time only the protocol codec: µs per encode and decode of an evaluate request, a GLMM answer and an LMM contribution answer")
    static let noIsolate = Flag("no-isolate", help: "run every configuration in this process (peak memory is then cumulative)")
    static let patientsOption = Option<Int>("patients", value: "N", help: "patients per site of the nested and nested-glmm models (default 20000)", .integer(in: 10...1_000_000))
    static let surgeonsOption = Option<Int>("surgeons", value: "N", help: "surgeons of the surgeons-glmm and surgeon-wards-glmm models (default 2000), each at 2–4 of 20 hospitals", .integer(in: 40...100_000))
    static let single = Option<String>("single", value: "ROWS:SITES:MODEL:MODE",
                                       help: "internal: measure one configuration and print its result line (what each child process runs)")

    static let command = Command(
        "bench", abstract: "Simulated rows; timing, rounds, bytes, memory, in process and over agents.",
        discussion: """
        Simulated rows (BenchmarkData: x1, x2, x3 ~ N(0,1), about 5 rows per patient) split over K sites,
        fitted with \(Model.slope.formula) (slope),
        \(Model.patient.formula) (patient)
        and the GLMM \(Model.binary.formula) (binary, binomial logit, Laplace),
        in process (SiteService on in-memory DataTables) and over one agent per site on loopback mutual TLS.
        Each configuration runs in a child process so that its peak memory (getrusage ru_maxrss) is its own.
        ohio (geepack's, one child per site, nAGQ 12) and egsingle (mlmRev's growth model, one school per site,
        children nested) and nested (\(NestedVisitsData.formula), \(NestedVisitsData.patientsPerSite) patients at each of
        \(NestedVisitsData.sites) sites, 1–3 episodes of 1–3 visits each; nested-glmm the same design with \(NestedVisitsData.glmmFormula),
        binomial; --patients sets the patients per site of both) and surgeons (\(SurgeonsData.formula), \(SurgeonsData.surgeons) surgeons
        crossed with \(SurgeonsData.hospitals) hospitals, each at 2–4 of them; surgeons-glmm the same design with \(SurgeonsGLMMData.formula),
        binomial; surgeon-wards the same rows with
        \(SurgeonWardsData.wardsPerHospital.lowerBound)–\(SurgeonWardsData.wardsPerHospital.upperBound) wards per hospital, \(SurgeonWardsData.formula); surgeon-wards-glmm
        the surgeons-glmm rows with as many wards, \(SurgeonWardsGLMMData.formula)) are data sets of their own, ohio and egsingle read through Rscript (simulated alike without R), measured once
        whatever --rows and --sites say. --lme4 times lmer or glmer on the same rows and prints the ratio.
        Federated runs split the start-up into certificates, agents and handshakes; in-process runs print the
        agents' CSV reading rate (MB/s) on the same rows.
        FEDMIX_BENCH_CHILD=/path/to/fedmix measures another build with this one's report.
        """,
        options: [rowsOption, sitesOption, modelsOption, modesOption, repeatOption, seedOption, surgeonsOption, patientsOption, json, noIsolate, single, lme4, codec],
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let seed = a.value(seedOption, default: 20260101)
        let surgeons = a.value(surgeonsOption, default: SurgeonsGLMMData.surgeons)
        let patients = a.value(patientsOption, default: NestedVisitsData.patientsPerSite)
        if a.flag(codec) {
            try a.refuse([rowsOption, sitesOption, modelsOption, modesOption, repeatOption, seedOption, surgeonsOption, patientsOption, json, noIsolate, single, lme4],
                         "with --codec (it times the codec alone, on fixed messages)")
            try BenchCodec.run()
            return 0
        }
        if let single = a.value(single) {
            // Child: one configuration, one result line.
            try a.refuse([rowsOption, sitesOption, modelsOption, modesOption, repeatOption, json, noIsolate, lme4],
                         "with --single (it measures the one configuration it names)")
            let parts = single.split(separator: ":").map(String.init)
            guard parts.count == 4, let rows = Int(parts[0]), let sites = Int(parts[1]),
                  let model = Model(rawValue: parts[2]), let mode = Mode(rawValue: parts[3]) else {
                throw ArgumentError("--single ROWS:SITES:MODEL:MODE")
            }
            let m = try measure(rows: rows, sites: sites, model: model, mode: mode, seed: seed, isolated: true, surgeons: surgeons, patients: patients)
            let data = try JSONEncoder().encode(m)
            print(resultPrefix + String(decoding: data, as: UTF8.self))
            return 0
        }
        let rowsList = a.value(rowsOption, default: [100_000, 1_000_000])
        let sites = a.value(sitesOption, default: 50)
        guard rowsList.allSatisfy({ $0 >= 10 * sites }) else {
            throw ArgumentError("every --rows must be at least 10 rows per site (--sites \(sites))")
        }
        let models = a.value(modelsOption, default: Model.defaults)
        // A size no chosen model uses would be read and silently dropped.
        if a.value(patientsOption) != nil, !models.contains(where: \.takesPatients) {
            throw ArgumentError("--patients sets the patients per site of the nested and nested-glmm models; add one of them to --models, or drop --patients")
        }
        if a.value(surgeonsOption) != nil, !models.contains(where: \.takesSurgeons) {
            throw ArgumentError("--surgeons sets the surgeons of the surgeons-glmm and surgeon-wards-glmm models; add one of them to --models, or drop --surgeons")
        }
        let withLme4 = a.flag(lme4)
        let modes = a.value(modesOption, default: [.inProcess, .federated])
        let isolate = !a.flag(noIsolate)
        let repeats = a.value(repeatOption, default: 1)
        let printJSON = a.flag(json)

        print("fedmix bench: \(sites) sites, rows \(rowsList.map(group).joined(separator: ", ")), seed \(seed), \(ProcessInfo.processInfo.activeProcessorCount) cores")
        for (i, m) in models.enumerated() { print("  model \(i + 1) (\(m.rawValue)): \(m.formula)") }
        print("  each configuration in \(isolate ? "its own process (peak memory is its own)" : "this process (peak memory is cumulative)")"
              + (repeats > 1 ? ", best of \(repeats) runs (least generation + design + fitting time; largest peak memory)" : "") + "\n")
        var results: [Measurement] = []
        // ohio and egsingle have their own rows: measured once, with the first --rows
        let total = rowsList.count * models.filter { !$0.hasOwnRows }.count * modes.count + models.filter(\.hasOwnRows).count * modes.count
        for rows in rowsList {
            for mode in modes {
                for model in models where !model.hasOwnRows || rows == rowsList.first {
                    var runs: [Measurement] = []
                    for _ in 0..<repeats {
                        runs.append(isolate
                            ? try runChild(rows: rows, sites: sites, model: model, mode: mode, seed: seed, surgeons: surgeons, patients: patients)
                            : try measure(rows: rows, sites: sites, model: model, mode: mode, seed: seed, isolated: false, surgeons: surgeons,
                                          patients: patients))
                    }
                    var m = runs.min { $0.generateSeconds + $0.analysisSeconds < $1.generateSeconds + $1.analysisSeconds }!
                    m.peakRSSBytes = runs.map(\.peakRSSBytes).max()!
                    m.runs = repeats
                    results.append(m)
                    print("[\(results.count)/\(total)] " + block(m))
                    if withLme4 && mode == modes.first {
                        print(Lme4Timing.line(fedmix: m, seed: seed))
                    }
                }
            }
        }
        print(table(results))
        if printJSON {
            let e = JSONEncoder(); e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(results), as: UTF8.self))
        }
        return 0
    }

    // MARK: one configuration

    static func measure(rows: Int, sites: Int, model: Model, mode: Mode, seed: UInt64, isolated: Bool,
                        surgeons: Int = SurgeonsGLMMData.surgeons, patients: Int = NestedVisitsData.patientsPerSite) throws -> Measurement {
        let t0 = monotonicSeconds(), c0 = cpuSeconds()
        let tables: [(site: String, table: DataTable)] = {
            if model == .ohio { return OhioData.load(seed: seed).tables }
            if model == .egsingle { return EgsingleData.load(seed: seed).tables }
            if model == .nested { return NestedVisitsData.load(seed: seed, patients: patients) }
            if model == .nestedGLMM { return NestedVisitsData.load(seed: seed, patients: patients, binary: true) }
            if model == .surgeons { return SurgeonsData.load(seed: seed) }
            if model == .surgeonsGLMM { return SurgeonsGLMMData.load(seed: seed, surgeons: surgeons) }
            if model == .surgeonWards { return SurgeonWardsData.load(seed: seed) }
            if model == .surgeonWardsGLMM { return SurgeonWardsGLMMData.load(seed: seed, surgeons: surgeons) }
            let data = BenchmarkData.generate(rows: rows, sites: sites, seed: seed)
            return data.sites.map { ($0.name, table($0)) }
        }()
        let tGenerated = monotonicSeconds(), cGenerated = cpuSeconds()
        // In process, the agents' CSV reader on the same rows, outside every phase's clock.
        let ingest = mode == .inProcess ? try CSVIngest.measure(tables) : nil
        let t1 = monotonicSeconds(), c1 = cpuSeconds()
        var peaks = [peakRSS()]
        // ohio's sites are single children (4 rows), and three of egsingle's schools have fewer than 27
        // rows (the parameter-per-rows rule): the data sets are fitted whole, as with `fedmix local`.
        var policy = model == .ohio || model == .egsingle ? DisclosurePolicy.off : DisclosurePolicy()
        // A crossed factor's levels must be listed by the sites (about 300 surgeons at each hospital).
        if model == .surgeons || model == .surgeonsGLMM || model == .surgeonWards || model == .surgeonWardsGLMM { policy.maxListedLevels = max(SurgeonsData.surgeons, surgeons) }
        let base: Federation
        var setupParts: [Double]? = nil
        switch mode {
        case .inProcess:
            base = Federation(channels: tables.map { s in
                let service = SiteService(site: s.site, datasets: ["data": .table(s.table)], siteColumn: nil, policy: policy)
                return InProcessChannel(site: s.site) { service.handle(line: $0) }
            })
        case .federated, .audited:
            // Audit logs in FEDMIX_BENCH_AUDIT_DIR if set (to measure another disk), else a temporary folder.
            let auditDirectory = mode == .audited
                ? (ProcessInfo.processInfo.environment["FEDMIX_BENCH_AUDIT_DIR"] ?? NSTemporaryDirectory()) + "/fedmix-bench-audit-\(getpid())-\(UUID().uuidString.prefix(8))"
                : nil
            let agents = try LocalAgents(services: tables.map { SiteService(site: $0.site, datasets: ["data": .table($0.table)], siteColumn: nil, policy: policy) },
                                         auditDirectory: auditDirectory)
            setupParts = [agents.startup.certificates, agents.startup.agents, agents.startup.connections]
            base = agents.federation
        }
        defer { base.close() }
        let clock = RoundClock(sites: base.channels.count)
        let federation = Federation(channels: base.channels.map { TimedChannel($0, clock: clock) })
        let t2 = monotonicSeconds(), c2 = cpuSeconds()
        peaks.append(peakRSS())
        let sent0 = federation.bytesSent.reduce(0, +), received0 = federation.bytesReceived.reduce(0, +)
        let descriptions = try Analysis.describe(federation, dataset: "data")
        let spec = try Analysis.resolve(formula: model.formula, descriptions: descriptions, family: model.options.family)
        let t3 = monotonicSeconds(), c3 = cpuSeconds()
        peaks.append(peakRSS())
        let result = try FitDriver.fit(federation, dataset: "data", spec: spec, options: model.options)
        let t4 = monotonicSeconds(), c4 = cpuSeconds()
        let tp = clock.lastPrepare ?? t3, cp = clock.cpuAtPrepare ?? c3
        return Measurement(
            rows: model.hasOwnRows ? tables.reduce(0) { $0 + $1.table.rowCount } : rows,
            sites: tables.count, model: model, mode: mode,
            generateSeconds: tGenerated - t0, setupSeconds: t2 - t1, setupParts: setupParts, csvIngest: ingest, describeSeconds: t3 - t2,
            prepareSeconds: tp - t3, fitSeconds: t4 - tp,
            evaluations: result.evaluations, rounds: result.rounds,
            bytesSent: federation.bytesSent.reduce(0, +) - sent0,
            bytesReceived: federation.bytesReceived.reduce(0, +) - received0,
            peakRSSBytes: peakRSS(), cpuSeconds: [cGenerated - c0, c2 - c1, c3 - c2, cp - c3, c4 - cp], peakRSSByPhase: peaks + [clock.peakAtPrepare ?? 0], objective: result.objective, theta: result.theta,
            beta: result.fixedEffects.map(\.estimate), sigma: result.sigma, converged: result.converged,
            messages: result.messages, isolated: isolated, trace: result.trace, surgeons: model.takesSurgeons ? surgeons : nil,
            patients: model.takesPatients ? patients : nil)
    }

    /// A site's rows as the table an agent would have read.
    static func table(_ s: BenchmarkData.Site) -> DataTable {
        DataTable(columns: s.columns.map { .init(name: $0.name, data: .numeric($0.values.map { Optional($0) })) },
                  rowCount: s.rows)
    }

    /// Runs one configuration in a child process (`fedmix bench --single …`).
    /// FEDMIX_BENCH_CHILD names another fedmix build to measure (to compare builds).
    static func runChild(rows: Int, sites: Int, model: Model, mode: Mode, seed: UInt64, surgeons: Int, patients: Int) throws -> Measurement {
        let p = Process()
        let executable = ProcessInfo.processInfo.environment["FEDMIX_BENCH_CHILD"]
            ?? Bundle.main.executablePath ?? CommandLine.arguments[0]
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["bench", "--single", "\(rows):\(sites):\(model.rawValue):\(mode.rawValue)", "--seed", String(seed), "--surgeons", String(surgeons),
                       "--patients", String(patients)]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0,
              let line = text.split(separator: "\n").last(where: { $0.hasPrefix(resultPrefix) }) else {
            throw BenchError("the benchmark of \(model.rawValue) at \(rows) rows (\(mode.rawValue)) failed (exit status \(p.terminationStatus))")
        }
        return try JSONDecoder().decode(Measurement.self, from: Data(line.dropFirst(resultPrefix.count).utf8))
    }

    // MARK: output

    static func block(_ m: Measurement) -> String {
        let modeText = m.mode == .inProcess
            ? "in-process (\(m.sites) SiteServices on in-memory DataTables, protocol lines)"
            : "federated (\(m.sites) agents, mutual TLS on loopback, in-memory DataTables\(m.mode == .audited ? ", audit logs in a temporary folder" : ""))"
        var out = "\(m.model.formula)\n"
        out += "      rows \(group(m.rows)), sites \(m.sites), mode \(modeText)\n"
        out += "      time     data generation \(secs(m.generateSeconds)) + design building \(secs(m.designSeconds))"
        out += " (describe \(secs(m.describeSeconds)), prepare \(secs(m.prepareSeconds)))"
        out += " = \(secs(m.generateSeconds + m.designSeconds)); fitting \(secs(m.fitSeconds))\n"
        out += "               design + fitting \(secs(m.analysisSeconds))"
        out += m.mode != .inProcess ? "; agents, certificates and TLS connections \(secs(m.setupSeconds))\n" : "\n"
        if let p = m.setupParts, p.count == 3 {
            out += "      start-up certificates \(secs(p[0])) (CA and \(m.sites + 1) certificates), agents \(secs(p[1])) (TLS contexts, listening), "
            out += "connections \(secs(p[2])) (\(m.sites) mutual-TLS handshakes)\n"
        }
        if let c = m.csvIngest { out += "      CSV      \(c)\n" }
        if let c = m.cpuSeconds, c.count == 5 {
            out += "      CPU      generation \(secs(c[0])), describe \(secs(c[2])), prepare \(secs(c[3])), fitting \(secs(c[4])) (all threads)\n"
        }
        out += "      fit      \(m.evaluations) criterion evaluations, \(m.rounds) rounds (+1 describe), \(m.model == .ohio ? "AGQ objective (−2 log L)" : m.model.isGLMM ? "Laplace objective (−2 log L)" : "REML criterion") \(String(format: "%.6f", m.objective))\(m.converged ? "" : ", NOT CONVERGED")\n"
        for msg in m.messages { out += "               \(msg)\n" }
        out += "               β = [\(m.beta.map { String(format: "%.4f", $0) }.joined(separator: ", "))], θ = [\(m.theta.map { String(format: "%.4f", $0) }.joined(separator: ", "))], σ = \(String(format: "%.4f", m.sigma))\n"
        out += "      traffic  sent \(bytes(m.bytesSent)), received \(bytes(m.bytesReceived)) (coordinator side, describe to finalize)\n"
        if let runs = m.runs, runs > 1 { out += "      runs     best of \(runs)\n" }
        let phases = zip(["generation", "setup", "describe", "prepare"], m.peakRSSByPhase ?? []).map { "\($0) \(bytes($1))" }
        out += "      memory   peak RSS \(bytes(m.peakRSSBytes))\(phases.isEmpty ? "" : " (peak so far after " + phases.joined(separator: ", ") + ")")\(m.isolated ? "" : " (cumulative: this process ran earlier configurations)")\n"
        return out
    }

    static func table(_ ms: [Measurement]) -> String {
        var rows = [["rows", "model", "mode", "gen", "describe", "prepare", "gen+design", "fit", "design+fit",
                     "vs lme4", "w/o describe", "CPU describe", "CPU prepare", "CPU fit",
                     "evals", "rounds", "sent", "received", "peak RSS"]]
        for m in ms {
            func speedup(_ t: Double) -> String { m.rows == 100_000 ? String(format: "%.1fx", m.model.lme4Seconds100k / t) : "" }
            rows.append([group(m.rows), m.model.rawValue, m.mode.rawValue, secs(m.generateSeconds), secs(m.describeSeconds),
                         secs(m.prepareSeconds), secs(m.generateSeconds + m.designSeconds), secs(m.fitSeconds),
                         secs(m.analysisSeconds), speedup(m.analysisSeconds), speedup(m.prepareSeconds + m.fitSeconds),
                         m.cpuSeconds.map { secs($0[2]) } ?? "", m.cpuSeconds.map { secs($0[3]) } ?? "",
                         m.cpuSeconds.map { secs($0[4]) } ?? "",
                         String(m.evaluations), String(m.rounds), bytes(m.bytesSent), bytes(m.bytesReceived),
                         bytes(m.peakRSSBytes)])
        }
        var out = "Summary: design = describe round + prepare round (the sites build their designs); fit = evaluations + finalize.\n"
        out += "vs lme4: lme4's time at 100,000 rows (6.5 s slope model, 5.3 s patient model) over design+fit, and over\n"
        out += "prepare+fit (without the describe round). CPU: process CPU time, all threads (agents included when federated).\n"
        out += "Rounds exclude describe; traffic counts describe to finalize.\n"
        out += Report.table(rows, rightAlign: true, leftFirst: true)
        return out
    }

    static func secs(_ s: Double) -> String { s < 10 ? String(format: "%.3f s", s) : String(format: "%.1f s", s) }
    static func group(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, c) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }
    static func bytes(_ n: Int) -> String {
        let x = Double(n)
        if n >= 1 << 30 { return String(format: "%.2f GB", x / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MB", x / Double(1 << 20)) }
        if n >= 1 << 10 { return String(format: "%.1f kB", x / Double(1 << 10)) }
        return "\(n) B"
    }

    /// Peak resident set size of this process (bytes).
    static func peakRSS() -> Int {
        guard let u = selfUsage() else { return 0 }
        #if os(Linux)
        return Int(u.ru_maxrss) * 1024      // kilobytes on Linux
        #else
        return Int(u.ru_maxrss)             // bytes on macOS
        #endif
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}


/// CPU time of this process so far (user + system, all threads).
func cpuSeconds() -> Double {
    guard let u = selfUsage() else { return 0 }
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return s(u.ru_utime) + s(u.ru_stime)
}

/// This process's resource usage (getrusage), nil if it cannot be read.
func selfUsage() -> rusage? {
    var u = rusage()
    #if os(Linux)
    guard getrusage(RUSAGE_SELF.rawValue, &u) == 0 else { return nil }
    #else
    guard getrusage(RUSAGE_SELF, &u) == 0 else { return nil }
    #endif
    return u
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// When the last prepare answer arrived (the end of the prepare round).
/// CPU and peak memory are read at a round's last answer only: getrusage
/// walks every thread of the process (over a thousand with 537 agents), and
/// read per site it cost tens of milliseconds in the prepare round.
final class RoundClock: Sendable {
    let sites: Int
    init(sites: Int) { self.sites = max(1, sites) }
    private let prepared = Mutex<(time: Double, cpu: Double, peak: Int)?>(nil)
    private let answers = Mutex(0)
    func markPrepared() {
        let t = monotonicSeconds()
        let last = answers.withLock { $0 += 1; return $0 % sites == 0 }
        let cpu = last ? cpuSeconds() : 0, peak = last ? BenchCommand.peakRSS() : 0
        prepared.withLock { $0 = (max($0?.time ?? t, t), max($0?.cpu ?? cpu, cpu), max($0?.peak ?? peak, peak)) }
    }
    var lastPrepare: Double? { prepared.withLock { $0?.time } }
    var cpuAtPrepare: Double? { prepared.withLock { $0?.cpu } }
    var peakAtPrepare: Int? { prepared.withLock { $0?.peak } }
}

/// A channel that notes when prepare answers arrive, to split design from fit.
final class TimedChannel: SiteChannel {
    let inner: any SiteChannel
    let clock: RoundClock
    init(_ inner: any SiteChannel, clock: RoundClock) { self.inner = inner; self.clock = clock }
    var site: String { inner.site }
    func call(_ request: Request) throws -> Reply {
        let reply = try inner.call(request)
        if case .prepare = request { clock.markPrepared() }
        return reply
    }
    /// FEDMIX_BENCH_UNPIPELINED=1 measures rounds with a thread per site
    /// (as before pipelined rounds), for comparison in the same build.
    var pipelines: Bool { inner.pipelines && !Self.unpipelined }
    static let unpipelined = ProcessInfo.processInfo.environment["FEDMIX_BENCH_UNPIPELINED"] == "1"
    func start(_ request: Request, round: Int?) -> PendingCall { inner.start(request, round: round) }
    func answerArriving(_ pending: PendingCall) -> Bool { inner.answerArriving(pending) }
    func finish(_ pending: PendingCall) throws -> Reply {
        let reply = try inner.finish(pending)
        if case .prepare = pending.request { clock.markPrepared() }
        return reply
    }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    func close() { inner.close() }
}


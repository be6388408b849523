import Foundation
import XCTest
import ExecutableSupport
import Synchronization
import Coordinator
import Protocol
import SiteAgent
#if canImport(Glibc)
import Glibc
#endif

/// Every option of every command of the BUILT executables (`fedmix`,
/// `fedmix-agent`), each shown to reach its effect: a weighted fit differs
/// from the unweighted one and equals lme4's, `--ml` changes the method,
/// `--filter` the rows, `--dry-run` fits nothing, and so on. Fits against
/// agents use real `fedmix-agent serve` processes over TLS, configured by
/// files and reached through a sites file; `fedmix local` starts its own.
///
/// `testEveryDeclaredOptionOfEveryCommandHasACheck` reads the commands from
/// `fedmix` / `fedmix-agent` usage and each command's options from its
/// generated `--help`, and fails when any option (or positional argument)
/// has no entry in `table`: an option can never again be parsed and dropped
/// unnoticed. Every run sets FEDMIX_CHECK_OPTIONS=1, so a command path that
/// never reads one of its declared options fails with exit status 70 too.
final class ExecutableTests: XCTestCase {
    typealias Check = (ExecutableTests) -> () throws -> Void

    /// Which options (and positional arguments) of a command a check shows working.
    struct Entry {
        let program: String
        let command: String
        let covers: [String]
        let check: Check
        init(_ command: String, _ covers: [String], _ check: @escaping Check) {
            self.program = "fedmix"; self.command = command; self.covers = covers; self.check = check
        }
        init(agent command: String, _ covers: [String], _ check: @escaping Check) {
            self.program = "fedmix-agent"; self.command = command; self.covers = covers; self.check = check
        }
    }

    static var table: [Entry] {
        [
            Entry("demo", ["--keep", "--output"], ExecutableTests.demoKeepsFilesAndWritesTheReport),
            Entry("demo", ["--in-process", "--format"], ExecutableTests.demoInProcessAndJSON),

            Entry("local", ["PATH", "--formula", "--weights", "--format"], ExecutableTests.localWeightedFitEqualsLme4),
            Entry("local", ["--weights", "--family"], ExecutableTests.localBinomialProportionWithWeightsEqualsCbind),
            Entry("local", ["--ml"], ExecutableTests.localMLChangesTheMethod),
            Entry("local", ["--family", "--link", "--nagq"], ExecutableTests.localFamilyLinkAndQuadrature),
            Entry("local", ["--filter"], ExecutableTests.localFilterChangesTheRows),
            Entry("local", ["--missing-indicator", "--exclude-sites-missing-above"], ExecutableTests.localMissingDataOptionsChangeTheRows),
            Entry("local", ["--output"], ExecutableTests.localOutputWritesTheFile),
            Entry("local", ["--in-process"], ExecutableTests.localInProcessStartsNoAgents),
            Entry("local", ["--exclude-sites"], ExecutableTests.localExcludeSites),
            Entry("local", ["--quiet"], ExecutableTests.localQuiet),
            Entry("local", ["--confint"], ExecutableTests.localConfint),
            Entry("local", ["--cluster"], ExecutableTests.localFlatModelWithClusterEqualsVcovCL),
            Entry("local", ["--marginal"], ExecutableTests.localMarginalEffects),
            Entry("local", ["--split-by", "PATH", "--formula"], ExecutableTests.localSplitBy),
            Entry("local", ["PATH", "--formula", "--format"], ExecutableTests.localCrossedFactorEqualsLmer),
            Entry("local", ["--family", "--format"], ExecutableTests.localCrossedGLMMEqualsGlmer),
            Entry("local", ["--report", "--output", "--format"], ExecutableTests.localReportWritesTheHTMLPage),
            Entry("local", ["--report", "--output", "--format"], ExecutableTests.localReportDrawsCrossedEffects),
            Entry("local", ["--weights", "--nagq", "--family", "--link", "--format", "--exclude-sites-missing-above", "--missing-indicator", "--ml"],
                  ExecutableTests.localUsageErrors),

            Entry("fit", ["--sites", "--dataset", "--formula", "--weights", "--format"], ExecutableTests.fitWeightedOverAgentProcessesEqualsLme4),
            Entry("fit", ["--ml"], ExecutableTests.fitMLOverAgents),
            Entry("fit", ["--family", "--link", "--nagq"], ExecutableTests.fitGLMMOverAgents),
            Entry("fit", ["--filter", "--missing-indicator", "--exclude-sites-missing-above"], ExecutableTests.fitRowOptionsOverAgents),
            Entry("fit", ["--dry-run", "--output"], ExecutableTests.fitDryRunFitsNothing),
            Entry("fit", ["--sites", "--dataset", "--formula"], ExecutableTests.fitUsageErrors),
            Entry("fit", ["--exclude-sites"], ExecutableTests.fitExcludeSites),
            Entry("fit", ["--confint"], ExecutableTests.fitConfintOverAgents),
            Entry("fit", ["--cluster"], ExecutableTests.fitFlatModelWithClusterOverAgents),
            Entry("fit", ["--marginal"], ExecutableTests.fitMarginalOverAgents),
            Entry("fit", ["--report", "--dry-run"], ExecutableTests.fitReportOverAgents),
            Entry("fit", ["--round-timeout", "--connect-timeout", "--reconnect-budget", "--quiet"], ExecutableTests.fitNetworkOptions),

            Entry("explain", ["--sites", "--dataset", "--formula", "--ml", "--filter", "--family", "--link", "--nagq"],
                  ExecutableTests.explainShowsTheModelOptions),
            Entry("explain", ["--weights", "--missing-indicator", "--exclude-sites-missing-above"], ExecutableTests.explainWeightsAndMissingData),
            Entry("explain", ["--model", "--site-count"], ExecutableTests.explainModelFromAnAuditLine),
            Entry("explain", ["--exclude-sites"], ExecutableTests.explainExcludeSites),
            Entry("explain", ["--round-timeout", "--connect-timeout", "--reconnect-budget", "--quiet"], ExecutableTests.explainNetworkOptions),

            Entry("describe", ["--sites", "--dataset", "--format"], ExecutableTests.describeTextAndJSON),
            Entry("describe", ["--round-timeout", "--connect-timeout", "--reconnect-budget", "--quiet"], ExecutableTests.describeNetworkOptions),
            Entry("describe", ["--sites", "--dataset", "--format"], ExecutableTests.describeNamesSitesLeftOutByTheSitesFile),
            Entry("describe", ["--sites", "--dataset", "--format"], ExecutableTests.describeNumericSummaries),

            Entry("sensitivity", ["PATH", "--formula", "--exclude-sites-missing-above", "--missing-indicator", "--format"],
                  ExecutableTests.sensitivityLocalAlternatives),
            Entry("sensitivity", ["--sites", "--dataset", "--output"], ExecutableTests.sensitivityOverAgents),
            Entry("sensitivity", ["--report", "--output", "--format", "--missing-indicator"], ExecutableTests.sensitivityReportShowsEveryAnalysis),
            Entry("sensitivity", ["--weights", "--ml", "--filter"], ExecutableTests.sensitivityModelOptions),
            Entry("sensitivity", ["--family", "--link", "--nagq"], ExecutableTests.sensitivityGLMM),
            Entry("sensitivity", ["--in-process", "--dataset", "PATH"], ExecutableTests.sensitivityRefusesOptionsThatDoNotApply),
            Entry("sensitivity", ["--exclude-sites"], ExecutableTests.sensitivityExcludeSites),
            Entry("sensitivity", ["--round-timeout", "--connect-timeout", "--reconnect-budget", "--quiet"], ExecutableTests.sensitivityNetworkOptions),

            Entry("compare", ["PATH", "--formula", "--format", "--in-process"], ExecutableTests.compareExamEqualsLme4),
            Entry("compare", ["--sites", "--dataset", "--output", "--ml"], ExecutableTests.compareOverAgentsOnTheSameRows),
            Entry("compare", ["--report", "--output", "--format", "PATH", "--formula"], ExecutableTests.compareReportShowsEveryModel),
            Entry("compare", ["--family", "--link", "--nagq"], ExecutableTests.compareGLMM),
            Entry("compare", ["--weights", "--filter"], ExecutableTests.compareModelOptions),
            Entry("compare", ["--formula", "--in-process", "--dataset", "PATH"], ExecutableTests.compareRefusals),
            Entry("compare", ["--exclude-sites"], ExecutableTests.compareExcludeSites),
            Entry("compare", ["--round-timeout", "--connect-timeout", "--reconnect-budget", "--quiet"], ExecutableTests.compareNetworkOptions),

            Entry("gee", ["PATH", "--formula", "--family", "--link", "--cluster", "--corstr", "--order", "--small-sample", "--format"],
                  ExecutableTests.geeLocalEqualsGeepack),
            Entry("gee", ["--in-process", "--format"], ExecutableTests.geeInProcessAndText),
            Entry("gee", ["--glmm"], ExecutableTests.geeBesideGLMM),
            Entry("gee", ["--impute", "--m", "--seed", "--iterations", "--delta"], ExecutableTests.geeImputed),
            Entry("gee", ["--sites", "--dataset", "--output"], ExecutableTests.geeOverAgents),
            Entry("gee", ["--filter", "--missing-indicator", "--exclude-sites-missing-above", "--exclude-sites"], ExecutableTests.geeRowOptions),
            Entry("gee", ["--formula", "--cluster", "--corstr", "--order", "--small-sample", "--dataset"], ExecutableTests.geeUsageErrors),
            Entry("gee", ["--round-timeout", "--connect-timeout", "--reconnect-budget", "--quiet"], ExecutableTests.geeNetworkOptions),

            Entry("simulate", ["DATASET", "--out", "--scale", "--seed"], ExecutableTests.simulateTrauma),
            Entry("simulate", ["DATASET", "--scale", "--seed"], ExecutableTests.simulateHypertension),
            // Multiple imputation (ImputationExecutableTests.swift).
            Entry("simulate", ["DATASET", "--out", "--seed"], ExecutableTests.simulateImputation),
            Entry("local", ["--impute", "--m", "--seed", "--delta", "--iterations"], ExecutableTests.localImputation),
            Entry("fit", ["--impute", "--m", "--seed", "--delta", "--iterations"], ExecutableTests.fitImputationOverAgents),
            Entry("sensitivity", ["--impute", "--m", "--seed", "--delta", "--tipping-point", "--iterations"], ExecutableTests.sensitivityImputation),
            Entry("bench-imputation", ["--replications", "--m", "--seed"], ExecutableTests.benchImputationSmall),
            Entry("compare", ["--impute", "--m", "--seed", "--delta", "--iterations"], ExecutableTests.compareImputation),

            Entry("certs init", ["DIR", "--days", "--force"], ExecutableTests.certsInit),
            Entry("certs issue", ["--ca", "--name", "--out", "--days"], ExecutableTests.certsIssue),

            Entry("bench", ["--rows", "--sites", "--models", "--modes", "--seed", "--json", "--no-isolate"], ExecutableTests.benchInProcess),
            Entry("bench", ["--repeat", "--modes"], ExecutableTests.benchRepeatIsolatedAndFederated),
            Entry("bench", ["--single", "--seed"], ExecutableTests.benchSingle),
            Entry("bench", ["--codec"], ExecutableTests.benchCodec),
            Entry("bench", ["--models", "--lme4"], ExecutableTests.benchOhioBesideLme4),
            Entry("bench", ["--models", "--modes", "--lme4"], ExecutableTests.benchEgsingleAndSlopeFederatedBesideLme4),
            Entry("bench", ["--models", "--lme4"], ExecutableTests.benchSurgeonsCrossedBesideLme4),
            Entry("bench", ["--models", "--surgeons", "--lme4"], ExecutableTests.benchSurgeonsGLMMBesideGlmer),
            Entry("bench", ["--models", "--lme4"], ExecutableTests.benchSurgeonWardsBesideLme4),
            Entry("bench", ["--models", "--surgeons", "--lme4"], ExecutableTests.benchSurgeonWardsGLMMBesideGlmer),
            Entry("bench", ["--models", "--patients", "--lme4"], ExecutableTests.benchNestedGLMMBesideGlmer),
            Entry("bench", ["--models", "--modes", "--rows"], ExecutableTests.benchCSVIngest),
            Entry("bench-network", ["--agents", "--rows", "--seed", "--serve-agents"], ExecutableTests.benchNetworkSmall),
            Entry("bench-network", ["--analysts", "--agents", "--rows"], ExecutableTests.benchNetworkAnalysts),
            Entry("bench-network", ["--soak", "--agents", "--rows"], ExecutableTests.benchNetworkSoak),

            Entry(agent: "serve", ["--config"], ExecutableTests.agentServe),
            Entry(agent: "check", ["--config", "--running", "--warn-days"], ExecutableTests.agentCheck),
            Entry(agent: "audit list", ["--config", "--log", "--since"], ExecutableTests.auditList),
            Entry(agent: "audit show", ["ID", "--config", "--log", "--line"], ExecutableTests.auditShow),
            Entry(agent: "audit verify", ["--config", "--log"], ExecutableTests.auditVerify),
            Entry(agent: "audit verify", ["--config", "--receipts", "--certificate"], ExecutableTests.auditVerifyReceipts),
            Entry(agent: "audit export", ["--config", "--log", "--since"], ExecutableTests.auditExport),
            Entry(agent: "audit prune", ["--config", "--days"], ExecutableTests.auditPrune),
        ]
    }

    // MARK: - The table against the declarations

    /// Commands from the top-level usage, options from each command's --help
    /// (both generated from the declarations): every one has a check.
    func testEveryDeclaredOptionOfEveryCommandHasACheck() throws {
        for program in ["fedmix", "fedmix-agent"] {
            let binary = try Executables.url(program)
            let usage = try Executables.run(binary, [])
            XCTAssertEqual(usage.status, 0, "\(usage)")
            let commands = Self.commands(inUsage: usage.out, program: program)
            XCTAssertFalse(commands.isEmpty, usage.out)
            let tabled = Set(Self.table.filter { $0.program == program }.map(\.command))
            XCTAssertEqual(Set(commands), tabled, "\(program): commands in the usage vs commands with checks")
            for command in commands {
                let help = try Executables.run(binary, command.split(separator: " ").map(String.init) + ["--help"])
                XCTAssertEqual(help.status, 0, "\(help)")
                XCTAssertTrue(help.out.hasPrefix("Usage: \(program) \(command) "), help.out)
                XCTAssertTrue(help.out.contains("\n  -h, --help "), help.out)
                let declared = Set(Self.declaredNames(inHelp: help.out))
                XCTAssertFalse(declared.isEmpty, "\(program) \(command) declares nothing? \(help.out)")
                let covered = Set(Self.table.filter { $0.program == program && $0.command == command }.flatMap(\.covers))
                let unchecked = declared.subtracting(covered).sorted()
                XCTAssertTrue(unchecked.isEmpty, "\(program) \(command): no check for \(unchecked.joined(separator: ", ")); add one to ExecutableTests.table")
                let stale = covered.subtracting(declared).sorted()
                XCTAssertTrue(stale.isEmpty, "\(program) \(command): the table names \(stale.joined(separator: ", ")), which it does not declare")
                // `help COMMAND` is the same text.
                let viaHelp = try Executables.run(binary, ["help"] + command.split(separator: " ").map(String.init))
                XCTAssertEqual(viaHelp.out, help.out)
            }
        }
    }

    /// "  fedmix local PATH... --formula F [options]" → "local"; "  fedmix certs init DIR" → "certs init".
    static func commands(inUsage usage: String, program: String) -> [String] {
        usage.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("  \(program) ") else { return nil }
            let words = line.dropFirst(program.count + 3).split(separator: " ").prefix { w in
                w.first!.isLowercase && w.allSatisfy { $0.isLowercase || $0 == "-" }
            }
            return words.isEmpty ? nil : words.joined(separator: " ")
        }
    }

    /// Option names ("--weights") and positional arguments ("PATH") listed by a command's --help.
    static func declaredNames(inHelp help: String) -> [String] {
        var section = "", names: [String] = []
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") && line.hasSuffix(":") { section = String(line); continue }
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { continue }
            let word = String(line.dropFirst(2).prefix { $0 != " " })
            if section == "Options:", word.hasPrefix("--") { names.append(word) }
            if section == "Arguments:" { names.append(word.replacingOccurrences(of: "...", with: "").trimmingCharacters(in: CharacterSet(charactersIn: "[]"))) }
        }
        return names
    }

    func testTopLevelUsageVersionAndUnknownCommands() throws {
        let fedmix = try Executables.fedmix(), agent = try Executables.agent()
        XCTAssertEqual(try Executables.run(fedmix, ["--version"]).out, "fedmix \(fedmixVersion) (protocol \(protocolVersion))\n")
        XCTAssertEqual(try Executables.run(agent, ["--version"]).out, "fedmix-agent \(fedmixAgentVersion) (protocol \(protocolVersion))\n")
        for (binary, program) in [(fedmix, "fedmix"), (agent, "fedmix-agent")] {
            let usage = try Executables.run(binary, ["--help"])
            XCTAssertEqual(usage.status, 0)
            XCTAssertEqual(usage.out, try Executables.run(binary, []).out)
            XCTAssertTrue(usage.out.contains("Run \(program) COMMAND --help"), usage.out)
        }
        try usageError(fedmix, ["fti"], "fedmix: unknown command \"fti\"; did you mean fit?")
        try usageError(agent, ["serv"], "fedmix-agent: unknown command \"serv\"; did you mean serve?")
        try usageError(agent, ["audit"], "fedmix-agent audit: give a command: list, show, verify, export or prune")
        try usageError(agent, ["audit", "lst"], "unknown audit command \"lst\"; use list, show, verify, export or prune (did you mean list?)")
        try usageError(fedmix, ["certs"], "fedmix certs: give a command: init or issue")
        let group = try Executables.run(agent, ["audit", "--help"])
        XCTAssertEqual(group.status, 0)
        XCTAssertTrue(group.out.contains("  fedmix-agent audit prune [--days N] --config FILE\n"), group.out)
    }

    func testFedmixDemo() throws { try runChecks("demo") }
    func testFedmixLocal() throws { try runChecks("local") }
    func testFedmixFit() throws { try runChecks("fit") }
    func testFedmixExplain() throws { try runChecks("explain") }
    func testFedmixDescribe() throws { try runChecks("describe") }
    func testFedmixSensitivity() throws { try runChecks("sensitivity") }
    func testFedmixCompare() throws { try runChecks("compare") }
    func testFedmixSimulate() throws { try runChecks("simulate") }
    func testFedmixGEE() throws { try runChecks("gee") }
    func testFedmixCerts() throws { try runChecks("certs init"); try runChecks("certs issue") }
    func testFedmixBench() throws { try runChecks("bench") }
    func testFedmixBenchNetwork() throws { try runChecks("bench-network") }
    func testFedmixBenchImputation() throws { try runChecks("bench-imputation") }
    func testAgentServeAndCheck() throws { try runChecks("serve", program: "fedmix-agent"); try runChecks("check", program: "fedmix-agent") }
    func testAgentAudit() throws {
        for c in ["list", "show", "verify", "export", "prune"] { try runChecks("audit " + c, program: "fedmix-agent") }
    }

    /// Runs every check of a command, each failure reported with what it covers.
    func runChecks(_ command: String, program: String = "fedmix") throws {
        let entries = Self.table.filter { $0.program == program && $0.command == command }
        XCTAssertFalse(entries.isEmpty, "no checks for \(program) \(command)")
        for e in entries {
            let started = Date()
            do { try e.check(self)() } catch {
                XCTFail("\(program) \(command) \(e.covers.joined(separator: " ")): \(error)")
            }
            print("\(program) \(command) \(e.covers.joined(separator: " ")): \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
    }

    // MARK: - Running the executables

    /// `fedmix ARGS`: exit status 0 expected, and no internal error.
    @discardableResult
    /// `timeout`: the run's limit (a hang fails the test rather than CI's job);
    /// longer only for the few bench runs that fit thousands of effects in the
    /// debug build, which a loaded machine slows past the default.
    func fedmix(_ args: [String], status: Int32 = 0, environment: [String: String] = [:], stdin: String? = nil, timeout: Double = 120,
                file: StaticString = #filePath, line: UInt = #line) throws -> Executables.Run {
        try run(try Executables.fedmix(), args, status: status, environment: environment, stdin: stdin, timeout: timeout, file: file, line: line)
    }

    @discardableResult
    func agent(_ args: [String], status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> Executables.Run {
        try run(try Executables.agent(), args, status: status, file: file, line: line)
    }

    func run(_ binary: URL, _ args: [String], status: Int32, environment: [String: String] = [:], stdin: String? = nil,
             timeout: Double = 120, file: StaticString, line: UInt) throws -> Executables.Run {
        let r = try Executables.run(binary, args, environment: environment, stdin: stdin, timeout: timeout)
        XCTAssertEqual(r.status, status, "\(r)", file: file, line: line)
        XCTAssertFalse(r.err.contains("internal error"), "\(r)", file: file, line: line)
        return r
    }

    /// Exit status 2, and standard error starting with `message` (or containing it).
    func usageError(_ binary: URL, _ args: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Executables.run(binary, args)
        XCTAssertEqual(r.status, 2, "\(r)", file: file, line: line)
        XCTAssertTrue(r.err.contains(message), "expected \"\(message)\" in \(r)", file: file, line: line)
        XCTAssertEqual(r.out, "", file: file, line: line)
    }

    func fedmixUsageError(_ args: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        try usageError(try Executables.fedmix(), args, message, file: file, line: line)
    }

    func json(_ r: Executables.Run, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        guard let o = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any] else {
            throw AgentProcessError("not a JSON object: \(r)")
        }
        return o
    }

    func jsonFit(_ args: [String], environment: [String: String] = [:]) throws -> [String: Any] {
        try json(try fedmix(args + ["--format", "json"], environment: environment))
    }

    static func model(_ fit: [String: Any]) -> [String: String] { fit["model"] as! [String: String] }
    static func estimates(_ fit: [String: Any]) -> [Double] { (fit["fixed_effects"] as! [[String: Any]]).map { $0["estimate"] as! Double } }
    static func stdErrors(_ fit: [String: Any]) -> [Double] { (fit["fixed_effects"] as! [[String: Any]]).map { $0["std_error"] as! Double } }
    static func names(_ fit: [String: Any]) -> [String] { (fit["fixed_effects"] as! [[String: Any]]).map { $0["name"] as! String } }

    /// lme4's weighted sleepstudy (Tests/Fixtures/tools/lme4-weighted.R) at
    /// DESIGN.md's LMM tolerances: criterion never worse than lme4's tight
    /// optimum by more than 1e-8 relative; estimates, SEs and σ within 1e-5.
    func assertMatchesWeightedReference(_ fit: [String: Any], _ key: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("reference-weighted.json")
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let ref = all["sleepstudy/\(key)"] as! [String: Any]
        let objective = fit["objective"] as! Double, refObjective = ref["objective"] as! Double
        XCTAssertLessThanOrEqual(objective - refObjective, 1e-8 * refObjective, "criterion worse than lme4's", file: file, line: line)
        XCTAssertGreaterThanOrEqual(objective - refObjective, -1e-6, "criterion far below lme4's: check the reference", file: file, line: line)
        XCTAssertEqual(fit["n_obs"] as? Int, ref["n_obs"] as? Int, file: file, line: line)
        XCTAssertEqual(Self.names(fit), ref["names"] as! [String], file: file, line: line)
        for (a, b) in zip(Self.estimates(fit), ref["estimates"] as! [Double]) {
            XCTAssertLessThanOrEqual(relativeError(a, b), 1e-5, "estimate \(a) vs lme4 \(b)", file: file, line: line)
        }
        for (a, b) in zip(Self.stdErrors(fit), ref["std_errors"] as! [Double]) {
            XCTAssertLessThanOrEqual(relativeError(a, b), 1e-5, "SE \(a) vs lme4 \(b)", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(relativeError(fit["sigma"] as! Double, ref["sigma"] as! Double), 1e-5, "σ", file: file, line: line)
    }

    // MARK: - Test data and agents

    /// sleepstudy's three sites with w = 1 + (Days mod 3)/2 (lme4-weighted.R),
    /// a covariate `lab` missing from Days 8 at central (20%), 7 at north
    /// (30%) and 5 at south (50%), and `slow` = 1 above the site's median Reaction.
    static let data: Result<TestData, any Error> = Result { try TestData() }

    final class TestData: Sendable {
        let dir: String
        let files: [String]

        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-exec-\(getpid())-\(UUID().uuidString.prefix(6))").path
            try FileManager.default.createDirectory(atPath: dir + "/sites", withIntermediateDirectories: true)
            var files: [String] = []
            let missingFrom = ["central": 8, "north": 7, "south": 5]
            for f in try Fixtures.siteFiles("sleepstudy") {
                let site = f.deletingPathExtension().lastPathComponent
                let lines = try String(contentsOf: f, encoding: .utf8).split(separator: "\n").map(String.init)
                let rows = lines.dropFirst().map { $0.split(separator: ",").map(String.init) }
                let reactions = rows.map { Double($0[0])! }
                let median = reactions.sorted()[reactions.count / 2 - 1]
                var out = lines[0] + ",\"w\",\"lab\",\"slow\"\n"
                for (i, r) in rows.enumerated() {
                    let days = Int(r[1])!
                    let lab = days >= missingFrom[site]! ? "NA" : String(Double((i * 37) % 23) / 4 + 1)
                    out += r.joined(separator: ",") + ",\(1 + Double(days % 3) / 2),\(lab),\(reactions[i] > median ? 1 : 0)\n"
                }
                let path = dir + "/sites/\(site).csv"
                try out.write(toFile: path, atomically: true, encoding: .utf8)
                files.append(path)
            }
            self.files = files
        }
    }

    func data() throws -> TestData { try Self.data.get() }

    /// Three `fedmix-agent serve` processes (certificates made by `fedmix
    /// certs`) on the test data, with audit logs, and a sites file. Started
    /// once, on first use; stopped (SIGTERM) when the class's tests end.
    final class Agents: @unchecked Sendable {
        let root: String
        let sitesFile: String
        let processes: [AgentProcess]
        let configs: [String]
        let logs: [String]

        init(data: TestData) throws {
            root = data.dir + "/agents"
            let fedmix = try Executables.fedmix(), agent = try Executables.agent()
            func certs(_ args: [String]) throws {
                let r = try Executables.run(fedmix, ["certs"] + args)
                guard r.status == 0 else { throw AgentProcessError("\(r)") }
            }
            try certs(["init", root + "/ca", "--days", "30"])
            try certs(["issue", "--ca", root + "/ca", "--name", "coordinator", "--out", root + "/coordinator", "--days", "20"])
            var processes: [AgentProcess] = [], configs: [String] = [], logs: [String] = []
            do {
                for file in data.files {
                    let site = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
                    let name = "agent-" + site
                    try certs(["issue", "--ca", root + "/ca", "--name", name, "--out", root + "/" + name, "--days", "20"])
                    let log = root + "/\(name)-audit.db"
                    let config: [String: Any] = [
                        "site": site, "listen": "127.0.0.1:0",
                        "tls": ["certificate": "\(name)/cert.pem", "key": "\(name)/key.pem", "ca": "ca/ca.pem",
                                "allowed_coordinators": ["coordinator"]],
                        "datasets": ["data": ["csv": file]],
                        "audit_log": log,
                        "disclosure": ["min_rows": 10, "min_cell": 5, "max_params_per_row": 0.33],
                    ]
                    let path = root + "/\(name).json"
                    try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
                    processes.append(try AgentProcess(binary: agent, configPath: path, site: site, serverName: name, logDirectory: root))
                    configs.append(path); logs.append(log)
                }
            } catch {
                processes.forEach { $0.kill() }
                throw error
            }
            self.processes = processes; self.configs = configs; self.logs = logs
            let sites: [String: Any] = [
                "tls": ["certificate": "coordinator/cert.pem", "key": "coordinator/key.pem", "ca": "ca/ca.pem"],
                "sites": processes.map { ["name": $0.site, "address": "127.0.0.1:\($0.port)", "server_name": $0.serverName] },
            ]
            sitesFile = root + "/sites.json"
            try JSONSerialization.data(withJSONObject: sites, options: [.prettyPrinted]).write(to: URL(fileURLWithPath: sitesFile))
        }

        func stop() {
            for p in processes where p.process.isRunning {
                Glibc.kill(p.process.processIdentifier, SIGTERM)
                if !p.waitForExit(timeout: 5) { p.kill() }
            }
        }
    }

    static let agentsStarted = Mutex(false)
    static let agents: Result<Agents, any Error> = Result {
        agentsStarted.withLock { $0 = true }
        return try Agents(data: try data.get())
    }

    func agents() throws -> Agents { try Self.agents.get() }

    override class func tearDown() {
        if agentsStarted.withLock({ $0 }), case .success(let a) = agents { a.stop() }
        if case .success(let d) = data { try? FileManager.default.removeItem(atPath: d.dir) }
        super.tearDown()
    }

    /// A fresh folder for one check's files.
    func scratch(_ tag: String) throws -> String {
        let dir = try data().dir + "/\(tag)-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    var remote: [String] { get throws { ["--sites", try agents().sitesFile, "--dataset", "data"] } }
    static let sleepstudy = "Reaction ~ Days + (Days | Subject)"
    static let withLab = "Reaction ~ Days + lab + (1 | Subject)"
    static let cbpp = "cbind(incidence, size - incidence) ~ factor(period) + (1 | site)"
    var cbppSites: String { Fixtures.caseDirectory("cbpp").appendingPathComponent("sites").path }

    // MARK: - demo

    func demoKeepsFilesAndWritesTheReport() throws {
        let dir = try scratch("demo")
        let r = try fedmix(["demo", "--keep", dir + "/registry", "--output", dir + "/report.txt"])
        XCTAssertEqual(r.out, "", "--output: nothing on standard output")
        let report = try String(contentsOfFile: dir + "/report.txt", encoding: .utf8)
        XCTAssertTrue(report.contains("mutual TLS on loopback, throwaway certificates"), report)
        XCTAssertTrue(report.contains("(\(dir)/registry)"), report)
        XCTAssertTrue(report.contains("Partial pooling"), report)
        let kept = try FileManager.default.contentsOfDirectory(atPath: dir + "/registry").filter { $0.hasSuffix(".csv") }
        XCTAssertEqual(kept.count, RegistrySimulator.demoSites.count, "--keep keeps the registry")
    }

    func demoInProcessAndJSON() throws {
        let text = try fedmix(["demo", "--in-process"])
        XCTAssertTrue(text.out.contains("Each hospital runs a site agent (in this process)"), text.out)
        let fit = try json(try fedmix(["demo", "--in-process", "--format", "json"]))
        XCTAssertEqual(fit["n_sites"] as? Int, 10)
        XCTAssertEqual(Self.model(fit)["formula"], RegistrySimulator.demoFormula)
        try fedmixUsageError(["demo", "--format", "xml"], "fedmix demo: --format must be text or json (got \"xml\")")
    }

    // MARK: - local

    func localWeightedFitEqualsLme4() throws {
        let files = try data().files
        let weighted = try jsonFit(["local"] + files + ["--formula", Self.sleepstudy, "--weights", "w"])
        let unweighted = try jsonFit(["local"] + files + ["--formula", Self.sleepstudy])
        try assertMatchesWeightedReference(weighted, "weighted_reml")
        XCTAssertGreaterThan(abs((weighted["objective"] as! Double) - (unweighted["objective"] as! Double)), 1, "the weights change the fit")
        // One file instead of the folder: one site.
        XCTAssertEqual(try jsonFit(["local", files[0], "--formula", Self.sleepstudy])["n_sites"] as? Int, 1)
        let text = try fedmix(["local", try data().dir + "/sites", "--formula", Self.sleepstudy, "--weights", "w"])
        XCTAssertTrue(text.out.hasPrefix("Linear mixed model fit by REML [fedmix, 3 sites]"), text.out)
    }

    /// The README's example: a proportion with --weights size is the cbind fit (and lme4's).
    func localBinomialProportionWithWeightsEqualsCbind() throws {
        let proportion = try jsonFit(["local", cbppSites, "--family", "binomial", "--formula", "I(incidence/size) ~ factor(period) + (1 | site)",
                                      "--weights", "size"])
        let cbind = try jsonFit(["local", cbppSites, "--family", "binomial", "--formula", Self.cbpp])
        XCTAssertLessThanOrEqual(relativeError(proportion["objective"] as! Double, cbind["objective"] as! Double), 1e-10)
        for (a, b) in zip(Self.estimates(proportion) + Self.stdErrors(proportion), Self.estimates(cbind) + Self.stdErrors(cbind)) {
            XCTAssertLessThanOrEqual(relativeError(a, b), 1e-8)
        }
        let tight = try tightGLMM("cbpp/laplace")
        XCTAssertLessThanOrEqual((proportion["objective"] as! Double) - (tight["objective"] as! Double), 1e-6)
        for (a, b) in zip(Self.estimates(proportion), tight["estimates"] as! [Double]) { XCTAssertLessThanOrEqual(relativeError(a, b), 1e-4) }
        // Without the weights the proportions are not a binomial response.
        let r = try fedmix(["local", cbppSites, "--family", "binomial", "--formula", "I(incidence/size) ~ factor(period) + (1 | site)", "--in-process"], status: 1)
        XCTAssertTrue(r.err.contains("a binomial response must be 0/1"), r.err)
    }

    func tightGLMM(_ key: String) throws -> [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("reference-tight-glmm.json")
        return (try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any])[key] as! [String: Any]
    }

    /// --confint profile on exam (every term grouped by site: no profile
    /// round), the text table, and the option's refusals.
    func localConfint() throws {
        let sites = Fixtures.caseDirectory("exam").appendingPathComponent("sites").path
        let formula = "normexam ~ standLRT + sex + (standLRT | site)"
        let fit = try jsonFit(["local", sites, "--formula", formula, "--confint", "profile", "--in-process"])
        let tight = ProfileConfintTests.rows(ProfileConfintTests.section("confint_profile", "exam")["profile_tight"])
        let ci = fit["confint"] as! [[String: Any]]
        XCTAssertEqual(ci.map { $0["parameter"] as! String }, tight.map(\.0))
        for (row, t) in zip(ci, tight) {
            XCTAssertLessThanOrEqual(relativeError(row["lower"] as! Double, t.1!), 1e-4, "\(t.0) lower")
            XCTAssertLessThanOrEqual(relativeError(row["upper"] as! Double, t.2!), 1e-4, "\(t.0) upper")
        }
        XCTAssertEqual((fit["profile"] as! [String: Any])["rounds"] as? Int, 0)
        let text = try fedmix(["local", sites, "--formula", "normexam ~ standLRT + sex + (1 | site)", "--confint", "profile"]).out
        XCTAssertTrue(text.contains("2.5 %     97.5 %\n.sig01       0.2450"), text)
        XCTAssertTrue(text.contains("ICC site: 0.1377, 95% profile interval [0.0977, 0.1950]"), text)
        XCTAssertFalse(try fedmix(["local", sites, "--formula", formula, "--in-process"]).out.contains("Confidence intervals"))
        try fedmixUsageError(["local", sites, "--formula", formula, "--confint", "bootstrap"], "--confint")
        try fedmixUsageError(["local", cbppSites, "--family", "binomial", "--formula", Self.cbpp, "--confint", "profile", "--in-process"],
                             "--confint profile applies to linear mixed models (the gaussian family); use --confint wald")
    }

    func localMLChangesTheMethod() throws {
        let files = try Fixtures.siteFiles("sleepstudy").map(\.path)
        let ml = try jsonFit(["local"] + files + ["--formula", Self.sleepstudy, "--ml"])
        XCTAssertEqual(Self.model(ml)["method"], "ML")
        let tight = try Fixtures.tight("sleepstudy", "ml")["objective"] as! Double
        XCTAssertLessThanOrEqual((ml["objective"] as! Double) - tight, 1e-8 * tight)
        XCTAssertEqual(Self.model(try jsonFit(["local"] + files + ["--formula", Self.sleepstudy]))["method"], "REML")
        try assertMatchesWeightedReference(try jsonFit(["local"] + (try data().files) + ["--formula", Self.sleepstudy, "--weights", "w", "--ml"]),
                                           "weighted_ml")
    }

    /// (Over local TLS agents once; in process for the variants, to stay fast: 15 sites.)
    func localFamilyLinkAndQuadrature() throws {
        let laplace = try jsonFit(["local", cbppSites, "--family", "binomial", "--formula", Self.cbpp])
        XCTAssertEqual(Self.model(laplace), ["formula": Self.cbpp, "family": "binomial", "link": "logit", "method": "Laplace"])
        let probit = try fedmix(["local", cbppSites, "--family", "binomial", "--link", "probit", "--formula", Self.cbpp, "--in-process"])
        XCTAssertTrue(probit.out.contains("\n Family: binomial  ( probit )\n"), probit.out)
        // (lme4's nAGQ = 9 fit is checked by GLMMObjectiveTests; 3 points keep this fast.)
        let agq = try jsonFit(["local", cbppSites, "--family", "binomial", "--nagq", "3", "--formula", Self.cbpp, "--in-process"])
        XCTAssertEqual(Self.model(agq)["method"], "AGQ nAGQ=3")
        XCTAssertGreaterThan(abs((agq["objective"] as! Double) - (laplace["objective"] as! Double)), 1e-3, "quadrature changes the objective")
        let poisson = try jsonFit(["local", cbppSites, "--family", "poisson", "--formula", "incidence ~ factor(period) + (1 | site)", "--in-process"])
        XCTAssertEqual(Self.model(poisson)["family"], "poisson")
        XCTAssertEqual(Self.model(poisson)["link"], "log")
    }

    /// Flat models' robust covariance (Tests/Fixtures/inference/references.json, section flat).
    static func flatReference(_ name: String) throws -> [String: Any] {
        let url = Fixtures.root.deletingLastPathComponent().appendingPathComponent("inference/references.json")
        let all = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (all["flat"] as! [String: Any])[name] as! [String: Any]
    }

    static func assertRobust(_ fit: [String: Any], _ ref: [String: Any], cluster: String, file: StaticString = #filePath, line: UInt = #line) {
        let expected = (ref["robust"] as! [[String: Any]]).first { $0["cluster"] as! String == cluster && $0["type_is_default"] as! Bool }!
        guard let robust = fit["robust"] as? [String: Any] else { return XCTFail("no robust section", file: file, line: line) }
        XCTAssertEqual(robust["type"] as? String, expected["type"] as? String, file: file, line: line)
        XCTAssertEqual(robust["clusters"] as? Int, expected["n_clusters"] as? Int, file: file, line: line)
        for (a, b) in zip(robust["std_errors"] as! [Double], expected["std_error"] as! [Double]) {
            XCTAssertLessThan(abs(a - b) / b, 1e-8, "robust SE", file: file, line: line)
        }
    }

    func localFlatModelWithClusterEqualsVcovCL() throws {
        let formula = "cbind(incidence, size - incidence) ~ factor(period)"
        let fit = try jsonFit(["local", cbppSites, "--family", "binomial", "--formula", formula, "--cluster", "site"])
        XCTAssertEqual(Self.model(fit)["kind"], "glm")
        Self.assertRobust(fit, try Self.flatReference("cbpp"), cluster: "site")
        try fedmixUsageError(["local", cbppSites, "--family", "binomial", "--formula", Self.cbpp, "--cluster", "site"],
                             "--cluster applies to flat models")
    }

    func fitFlatModelWithClusterOverAgents() throws {
        let fit = try jsonFit(["fit"] + (try remote) + ["--formula", "Reaction ~ Days", "--cluster", "Subject"])
        XCTAssertEqual(Self.model(fit)["kind"], "lm")
        Self.assertRobust(fit, try Self.flatReference("sleepstudy"), cluster: "Subject")
    }

    func localFilterChangesTheRows() throws {
        let files = try Fixtures.siteFiles("sleepstudy").map(\.path)
        let all = try jsonFit(["local"] + files + ["--formula", Self.sleepstudy])
        let filtered = try jsonFit(["local"] + files + ["--formula", Self.sleepstudy, "--filter", "Days >= 2"])
        XCTAssertEqual(all["n_obs"] as? Int, 180)
        XCTAssertEqual(filtered["n_obs"] as? Int, 144)
        XCTAssertTrue((filtered["messages"] as! [String]).contains { $0.hasPrefix("rows at each site filtered by: ") }, "\(filtered["messages"]!)")
    }

    func localMissingDataOptionsChangeTheRows() throws {
        let files = try data().files
        let complete = try jsonFit(["local"] + files + ["--formula", Self.withLab])
        XCTAssertEqual(complete["n_obs"] as? Int, 180 - 12 - 18 - 30)
        let indicator = try jsonFit(["local"] + files + ["--formula", Self.withLab, "--missing-indicator", "lab=0"])
        XCTAssertEqual(indicator["n_obs"] as? Int, 180)
        XCTAssertEqual(Self.names(indicator), ["(Intercept)", "Days", "lab", "missing(lab)"])
        let excluded = try jsonFit(["local"] + files + ["--formula", Self.withLab, "--exclude-sites-missing-above", "lab=0.4"])
        XCTAssertEqual(excluded["n_sites"] as? Int, 2)
        XCTAssertEqual(excluded["excluded_sites"] as? [String], ["south"])
        XCTAssertEqual(excluded["n_obs"] as? Int, 48 + 42)
    }

    func localOutputWritesTheFile() throws {
        let dir = try scratch("local-output")
        let r = try fedmix(["local"] + (try data().files) + ["--formula", Self.sleepstudy, "--output", dir + "/fit.txt"])
        XCTAssertEqual(r.out, "")
        let text = try String(contentsOfFile: dir + "/fit.txt", encoding: .utf8)
        XCTAssertTrue(text.hasPrefix("Linear mixed model fit by REML [fedmix, 3 sites]\nFormula: \(Self.sleepstudy)\n"), text)
        try fedmix(["local"] + (try data().files) + ["--formula", Self.sleepstudy, "--output", dir + "/fit.json", "--format", "json"])
        let fit = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/fit.json"))) as! [String: Any]
        XCTAssertEqual(fit["n_obs"] as? Int, 180)
    }

    /// FEDMIX_AGENT_LOG makes local agents log their connections: none in process.
    func localInProcessStartsNoAgents() throws {
        let args = ["local"] + (try data().files) + ["--formula", Self.sleepstudy, "--format", "json"]
        let tls = try fedmix(args, environment: ["FEDMIX_AGENT_LOG": "1"])
        let inProcess = try fedmix(args + ["--in-process"], environment: ["FEDMIX_AGENT_LOG": "1"])
        XCTAssertTrue(tls.err.contains("\"event\":\"connection\""), tls.err)
        XCTAssertEqual(inProcess.err, "")
        let a = try json(tls), b = try json(inProcess)
        XCTAssertEqual(a["objective"] as! Double, b["objective"] as! Double, accuracy: 1e-9 * abs(b["objective"] as! Double))
    }

    func localUsageErrors() throws {
        let base = ["local", cbppSites, "--formula", Self.cbpp]
        try fedmixUsageError(base + ["--weight", "size"], "fedmix local: unknown option --weight; did you mean --weights?\nRun fedmix local --help for its options.")
        try fedmixUsageError(base + ["--nagq", "0"], "fedmix local: --nagq must be a whole number from 1 to 25 (got \"0\")")
        try fedmixUsageError(base + ["--nagq", "26"], "--nagq must be a whole number from 1 to 25 (got \"26\")")
        try fedmixUsageError(base + ["--family", "binomail"], "--family must be gaussian, binomial or poisson (got \"binomail\"); did you mean binomial?")
        try fedmixUsageError(base + ["--family", "binomial", "--link", "logti"], "--link must be logit, probit, cloglog, log or identity (got \"logti\"); did you mean logit?")
        try fedmixUsageError(base + ["--format", "xml"], "--format must be text or json (got \"xml\")")
        try fedmixUsageError(base + ["--family", "binomial", "--ml"], "--ml applies to linear mixed models")
        try fedmixUsageError(base + ["--nagq", "9"], "--nagq applies to GLMMs (--family binomial or poisson)")
        try fedmixUsageError(base + ["--exclude-sites-missing-above", "lab"], "--exclude-sites-missing-above takes VAR=NUMBER (got \"lab\")")
        try fedmixUsageError(base + ["--exclude-sites-missing-above", "lab=1.5"], "--exclude-sites-missing-above takes fractions of rows, from 0 to 1")
        try fedmixUsageError(base + ["--exclude-sites-missing-above", "lab=0.2,0.3"], "fedmix sensitivity compares several")
        try fedmixUsageError(base + ["--missing-indicator", "lab=x"], "--missing-indicator takes VAR=NUMBER (got \"lab=x\")")
        try fedmixUsageError(base + ["--format", "json", "--format", "text"], "--format was given twice (\"json\" and \"text\"); give it once")
        try fedmixUsageError(base + ["--weights"], "--weights needs a value: --weights VAR")
        try fedmixUsageError(base + ["--weights", "--ml"], "--weights needs a value: --weights VAR (got the option --ml)")
        try fedmixUsageError(base + ["--ml=yes"], "--ml is a flag and takes no value")
        try fedmixUsageError(base + ["--dataset", "x"], "--dataset is not an option of this command: fedmix local serves each CSV file")
        try fedmixUsageError(["local", cbppSites], "fedmix local: missing required option --formula F")
        try fedmixUsageError(["local", "--formula", Self.cbpp], "fedmix local: give at least one CSV file or folder of CSV files")
        try fedmixUsageError(["local", "/nonexistent", "--formula", Self.cbpp], "/nonexistent: no such file or folder")
        // A value the data refuses is a usage error naming the option.
        try fedmixUsageError(["local"] + (try data().files) + ["--formula", Self.sleepstudy, "--weights", "site"],
                             "--weights site: prior weights must be a numeric variable")
    }

    // MARK: - fit, against agent processes

    func fitWeightedOverAgentProcessesEqualsLme4() throws {
        let weighted = try jsonFit(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--weights", "w"])
        try assertMatchesWeightedReference(weighted, "weighted_reml")
        XCTAssertEqual(weighted["n_sites"] as? Int, 3)
        let unweighted = try jsonFit(["fit"] + (try remote) + ["--formula", Self.sleepstudy])
        XCTAssertGreaterThan(abs((weighted["objective"] as! Double) - (unweighted["objective"] as! Double)), 1)
        let text = try fedmix(["fit"] + (try remote) + ["--formula", Self.sleepstudy])
        XCTAssertTrue(text.out.hasPrefix("Linear mixed model fit by REML [fedmix, 3 sites]"), text.out)
    }

    /// --confint profile over the agent processes: sleepstudy's Subject is
    /// within sites, so the profile's points travel in batched evaluate rounds.
    func fitConfintOverAgents() throws {
        let fit = try jsonFit(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--confint", "profile"])
        let ref = ProfileConfintTests.section("confint_profile", "sleepstudy")
        let tight = ProfileConfintTests.rows(ref["profile_tight"])
        let ci = fit["confint"] as! [[String: Any]]
        XCTAssertEqual(ci.map { $0["parameter"] as! String }, tight.map(\.0))
        for (row, t) in zip(ci, tight) {
            XCTAssertEqual(row["method"] as? String, "profile")
            XCTAssertLessThanOrEqual(relativeError(row["lower"] as! Double, t.1!), 1e-4, "\(t.0) lower")
            XCTAssertLessThanOrEqual(relativeError(row["upper"] as! Double, t.2!), 1e-4, "\(t.0) upper")
        }
        let profile = fit["profile"] as! [String: Any]
        XCTAssertGreaterThan(profile["rounds"] as! Int, 0)
        XCTAssertLessThanOrEqual(profile["rounds"] as! Int, 40)
        let text = try fedmix(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--confint", "wald"]).out
        XCTAssertTrue(text.contains("Confidence intervals (95%, Wald):\n"), text)
        XCTAssertTrue(text.contains("\n.sig01              NA        NA\n"), text)
    }

    func fitMLOverAgents() throws {
        let ml = try jsonFit(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--ml"])
        XCTAssertEqual(Self.model(ml)["method"], "ML")
        let tight = try Fixtures.tight("sleepstudy", "ml")["objective"] as! Double
        XCTAssertLessThanOrEqual((ml["objective"] as! Double) - tight, 1e-8 * tight)
        XCTAssertGreaterThanOrEqual((ml["objective"] as! Double) - tight, -1e-6)
    }

    func fitGLMMOverAgents() throws {
        let formula = "slow ~ Days + (1 | site)"
        let laplace = try jsonFit(["fit"] + (try remote) + ["--formula", formula, "--family", "binomial"])
        XCTAssertEqual(Self.model(laplace)["link"], "logit")
        XCTAssertEqual(Self.model(laplace)["method"], "Laplace")
        let other = try jsonFit(["fit"] + (try remote) + ["--formula", formula, "--family", "binomial", "--link", "probit", "--nagq", "5"])
        XCTAssertEqual(Self.model(other)["link"], "probit")
        XCTAssertEqual(Self.model(other)["method"], "AGQ nAGQ=5")
        XCTAssertNotEqual(Self.estimates(laplace)[1], Self.estimates(other)[1])
        let poisson = try jsonFit(["fit"] + (try remote) + ["--formula", formula, "--family", "poisson"])
        XCTAssertEqual(Self.model(poisson)["family"], "poisson")
    }

    func fitRowOptionsOverAgents() throws {
        let filtered = try jsonFit(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--filter", "Days >= 2"])
        XCTAssertEqual(filtered["n_obs"] as? Int, 144)
        let indicator = try jsonFit(["fit"] + (try remote) + ["--formula", Self.withLab, "--missing-indicator", "lab=0"])
        XCTAssertEqual(indicator["n_obs"] as? Int, 180)
        XCTAssertTrue(Self.names(indicator).contains("missing(lab)"))
        let excluded = try jsonFit(["fit"] + (try remote) + ["--formula", Self.withLab, "--exclude-sites-missing-above", "lab=0.4"])
        XCTAssertEqual(excluded["excluded_sites"] as? [String], ["south"])
        XCTAssertEqual(excluded["n_obs"] as? Int, 48 + 42)
    }

    /// Prepare requests in the agents' audit logs (read with fedmix-agent audit export).
    func preparesLogged() throws -> Int {
        try agents().logs.reduce(0) { n, log in
            n + (try agent(["audit", "export", "--log", log]).out.split(separator: "\n")
                .map { try JSONDecoder().decode(AuditEntry.self, from: Data($0.utf8)) }.filter { $0.messageType == "prepare" }.count)
        }
    }

    func fitDryRunFitsNothing() throws {
        let before = try preparesLogged()
        let r = try fedmix(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--dry-run"])
        XCTAssertTrue(r.out.hasPrefix("What each site would send for this model (nothing has been computed yet)\n"), r.out)
        XCTAssertTrue(r.out.contains("Sites     3;"), r.out)
        let dir = try scratch("dry-run")
        XCTAssertEqual(try fedmix(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--dry-run", "--output", dir + "/explain.txt"]).out, "")
        XCTAssertEqual(try String(contentsOfFile: dir + "/explain.txt", encoding: .utf8), r.out)
        XCTAssertEqual(try preparesLogged(), before, "--dry-run sent no prepare")
        try fedmix(["fit"] + (try remote) + ["--formula", Self.sleepstudy])
        XCTAssertEqual(try preparesLogged(), before + 3, "a fit sends one prepare per site")
        try fedmixUsageError(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--dry-run", "--format", "json"],
                             "--dry-run prints text (what each site would send); --format json applies to fits")
    }

    func fitUsageErrors() throws {
        try fedmixUsageError(["fit", "--dataset", "data", "--formula", Self.sleepstudy], "fedmix fit: missing required option --sites FILE")
        try fedmixUsageError(["fit", "--sites", try agents().sitesFile, "--formula", Self.sleepstudy], "missing required option --dataset NAME")
        try fedmixUsageError(["fit", "--sites", try agents().sitesFile, "--dataset", "data"], "missing required option --formula F")
        try fedmixUsageError(["fit", "--sites", "/nonexistent.json", "--dataset", "data", "--formula", Self.sleepstudy],
                             "/nonexistent.json: cannot read the sites file")
        try fedmixUsageError(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--site"], "unknown option --site; did you mean --sites?")
        let r = try fedmix(["fit", "--sites", try agents().sitesFile, "--dataset", "registry", "--formula", Self.sleepstudy], status: 1)
        XCTAssertTrue(r.err.hasPrefix("fedmix: error: "), r.err)
        // The agent never echoes a name it was sent; it says what it has.
        XCTAssertTrue(r.err.contains("unknown dataset") && r.err.contains("this site has: data"), r.err)
    }

    // MARK: - explain

    func explainShowsTheModelOptions() throws {
        let base = ["explain"] + (try remote)
        let reml = try fedmix(base + ["--formula", Self.sleepstudy]).out
        XCTAssertTrue(reml.contains("Model     \(Self.sleepstudy)\n          family gaussian, link identity, REML\n"), reml)
        XCTAssertTrue(reml.contains("Filter    none: every row of the dataset\n"), reml)
        XCTAssertTrue(reml.contains("Sites     3;"), reml)
        XCTAssertTrue(try fedmix(base + ["--formula", Self.sleepstudy, "--ml"]).out.contains("family gaussian, link identity, ML\n"))
        let filtered = try fedmix(base + ["--formula", Self.sleepstudy, "--filter", "Days >= 2"]).out
        XCTAssertTrue(filtered.contains("Filter    Days >= 2\n"), filtered)
        let glmm = try fedmix(base + ["--formula", "slow ~ Days + (1 | site)", "--family", "binomial", "--link", "probit", "--nagq", "5"]).out
        XCTAssertTrue(glmm.contains("family binomial, link probit, adaptive Gauss-Hermite, nAGQ = 5\n"), glmm)
        try fedmixUsageError(["explain", "--sites", try agents().sitesFile, "--formula", Self.sleepstudy], "missing required option --dataset NAME")
    }

    func explainWeightsAndMissingData() throws {
        let base = ["explain"] + (try remote)
        XCTAssertTrue(try fedmix(base + ["--formula", Self.sleepstudy, "--weights", "w"]).out.contains("Sites     3;"))
        try fedmixUsageError(base + ["--formula", Self.sleepstudy, "--weights", "site"], "--weights site: prior weights must be a numeric variable")
        let indicator = try fedmix(base + ["--formula", Self.withLab, "--missing-indicator", "lab=0"]).out
        XCTAssertTrue(indicator.contains("Fixed     p = 4: (Intercept), Days, lab, missing(lab)\n"), indicator)
        let excluded = try fedmix(base + ["--formula", Self.withLab, "--exclude-sites-missing-above", "lab=0.4"]).out
        XCTAssertTrue(excluded.contains("Sites     2;"), excluded)
        XCTAssertTrue(excluded.contains("Site south would be left out (--exclude-sites-missing-above): lab missing in 50% of rows > 40%"), excluded)
    }

    /// A prepare line from an agent's audit log, explained by --model.
    func explainModelFromAnAuditLine() throws {
        try fedmix(["fit"] + (try remote) + ["--formula", "slow ~ Days + (1 | site)", "--family", "binomial"])
        let log = try agents().logs[0]
        let list = try agent(["audit", "list", "--log", log]).out.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        let id = try XCTUnwrap(list.last { $0.last == "prepare" }?.first)
        let dir = try scratch("explain-model")
        try agent(["audit", "show", id, "--line", "--log", log]).out.write(toFile: dir + "/prepare.json", atomically: true, encoding: .utf8)
        let one = try fedmix(["explain", "--model", dir + "/prepare.json"]).out
        XCTAssertTrue(one.contains("Model     slow ~ Days + (1 | site)\n          family binomial, link logit, Laplace\n"), one)
        XCTAssertTrue(one.contains("Sites     1;"), one)
        let four = try fedmix(["explain", "--model", dir + "/prepare.json", "--site-count", "4", "--nagq", "7"]).out
        XCTAssertTrue(four.contains("Sites     4;"), four)
        XCTAssertTrue(four.contains("adaptive Gauss-Hermite, nAGQ = 7"), four)
        let stdin = try fedmix(["explain", "--model", "-"], stdin: try String(contentsOfFile: dir + "/prepare.json", encoding: .utf8)).out
        XCTAssertEqual(stdin, one)
        try fedmixUsageError(["explain", "--model", dir + "/prepare.json", "--formula", Self.sleepstudy],
                             "--formula cannot be used with --model (the model specification already holds them)")
        try fedmixUsageError(["explain", "--model", dir + "/prepare.json", "--site-count", "0"], "--site-count must be a whole number of at least 1")
        try fedmixUsageError(["explain"] + (try remote) + ["--formula", Self.sleepstudy, "--site-count", "2"],
                             "--site-count cannot be used without --model (the sites file gives the number of sites)")
    }

    // MARK: - describe

    func describeTextAndJSON() throws {
        let r = try fedmix(["describe"] + (try remote) + ["--format", "json"])
        let sites = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        XCTAssertEqual(sites.map { $0["site"] as? String }, ["central", "north", "south"])
        XCTAssertEqual(sites.map { $0["rows"] as? Int }, [60, 60, 60])
        let text = try fedmix(["describe"] + (try remote)).out
        XCTAssertTrue(text.contains("lab"), text)
        XCTAssertThrowsError(try JSONSerialization.jsonObject(with: Data(text.utf8)), "text is not JSON")
        XCTAssertEqual(try fedmix(["describe"] + (try remote) + ["--format", "text"]).out, text)
        try fedmixUsageError(["describe"] + (try remote) + ["--format", "xml"], "--format must be text or json (got \"xml\")")
        try fedmixUsageError(["describe", "--sites", try agents().sitesFile], "fedmix describe: missing required option --dataset NAME")
        try fedmixUsageError(["describe"] + (try remote) + ["--formula", "y ~ x"], "fedmix describe: unknown option --formula")
    }

    // MARK: - sensitivity

    func sensitivityLocalAlternatives() throws {
        let r = try fedmix(["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--format", "json",
                                                                   "--exclude-sites-missing-above", "lab=0.4,0.25", "--missing-indicator", "lab=0"])
        let analyses = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        XCTAssertEqual(analyses.map { $0["analysis"] as? String }, ["complete case", "exclude lab>0.4", "exclude lab>0.25", "indicator lab=0"])
        let results = analyses.map { $0["result"] as! [String: Any] }
        XCTAssertEqual(results.map { $0["n_sites"] as? Int }, [3, 2, 1, 3])
        XCTAssertEqual(results.map { $0["n_obs"] as? Int }, [120, 90, 48, 180])
        let text = try fedmix(["sensitivity", try data().dir + "/sites", "--formula", Self.withLab, "--missing-indicator", "lab=0"]).out
        XCTAssertTrue(text.contains("complete case"), text)
        XCTAssertTrue(text.contains("indicator lab=0"), text)
        try fedmixUsageError(["sensitivity"] + (try data().files) + ["--formula", Self.withLab],
                             "give at least one alternative: --exclude-sites-missing-above VAR=FRACTION[,FRACTION...], --missing-indicator VAR=VALUE or --impute MODEL")
    }

    func sensitivityOverAgents() throws {
        let dir = try scratch("sensitivity")
        let r = try fedmix(["sensitivity"] + (try remote) + ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--output", dir + "/s.txt"])
        XCTAssertEqual(r.out, "")
        let text = try String(contentsOfFile: dir + "/s.txt", encoding: .utf8)
        XCTAssertTrue(text.contains("indicator lab=0"), text)
        try fedmix(["sensitivity"] + (try remote) + ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--format", "json",
                                                     "--output", dir + "/s.json"])
        let analyses = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/s.json"))) as! [[String: Any]]
        XCTAssertEqual(analyses.map { ($0["result"] as! [String: Any])["n_obs"] as? Int }, [120, 180])
        try fedmixUsageError(["sensitivity", "--sites", try agents().sitesFile, "--formula", Self.withLab, "--missing-indicator", "lab=0"],
                             "missing required option --dataset NAME")
    }

    func sensitivityModelOptions() throws {
        let base = ["sensitivity"] + (try data().files) + ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--format", "json"]
        func results(_ extra: [String]) throws -> [[String: Any]] {
            let a = try JSONSerialization.jsonObject(with: Data(try fedmix(base + extra).out.utf8)) as! [[String: Any]]
            return a.map { $0["result"] as! [String: Any] }
        }
        let plain = try results([])
        let options = try results(["--ml", "--filter", "Days >= 2", "--weights", "w"])
        XCTAssertEqual(plain.map { Self.model($0)["method"] }, ["REML", "REML"])
        XCTAssertEqual(options.map { Self.model($0)["method"] }, ["ML", "ML"])
        XCTAssertEqual(options.map { $0["n_obs"] as? Int }, [36 + 30 + 18, 144], "--filter Days >= 2")
        let mlFiltered = try results(["--ml", "--filter", "Days >= 2"])
        XCTAssertNotEqual(mlFiltered[0]["objective"] as! Double, options[0]["objective"] as! Double, "--weights changes the fit")
    }

    func sensitivityGLMM() throws {
        let r = try fedmix(["sensitivity"] + (try data().files) + ["--formula", "slow ~ Days + lab + (1 | site)", "--missing-indicator", "lab=0",
                                                                   "--family", "binomial", "--link", "probit", "--nagq", "3", "--format", "json"])
        let analyses = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [[String: Any]]
        for a in analyses {
            let model = Self.model(a["result"] as! [String: Any])
            XCTAssertEqual(model["family"], "binomial")
            XCTAssertEqual(model["link"], "probit")
            XCTAssertEqual(model["method"], "AGQ nAGQ=3")
        }
    }

    func sensitivityRefusesOptionsThatDoNotApply() throws {
        let args = ["--formula", Self.withLab, "--missing-indicator", "lab=0", "--format", "json"]
        let local = try fedmix(["sensitivity"] + (try data().files) + args + ["--in-process"], environment: ["FEDMIX_AGENT_LOG": "1"])
        XCTAssertEqual(local.err, "", "in process: no agents logged connections")
        XCTAssertTrue(try fedmix(["sensitivity"] + (try data().files) + args, environment: ["FEDMIX_AGENT_LOG": "1"]).err
            .contains("\"event\":\"connection\""))
        try fedmixUsageError(["sensitivity"] + (try remote) + args + ["--in-process"],
                             "--in-process cannot be used with --sites (it runs local agents for CSV paths)")
        try fedmixUsageError(["sensitivity"] + (try data().files) + args + ["--dataset", "data"],
                             "--dataset cannot be used with CSV paths")
        try fedmixUsageError(["sensitivity", try data().files[0]] + (try remote) + args, "PATH arguments (\"\(try data().files[0])\") cannot be used with --sites")
        try fedmixUsageError(["sensitivity"] + args, "give --sites FILE --dataset NAME, or CSV files/folders")
    }

    // MARK: - simulate

    func rows(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").dropFirst().map(String.init)
    }

    func simulateTrauma() throws {
        let dir = try scratch("simulate")
        XCTAssertEqual(try fedmix(["simulate", "trauma", "--out", dir + "/a", "--scale", "0.1"]).out, "wrote 8 site files to \(dir)/a\n")
        XCTAssertEqual(try rows(dir + "/a/st-olaf.csv").count, 12, "--scale 0.1 of 120 patients")
        try fedmix(["simulate", "trauma", "--out", dir + "/b", "--scale", "0.1", "--seed", "7"])
        try fedmix(["simulate", "trauma", "--out", dir + "/c", "--scale", "0.1", "--seed", "3"])
        XCTAssertEqual(try rows(dir + "/a/st-olaf.csv"), try rows(dir + "/b/st-olaf.csv"), "the default seed is 7")
        XCTAssertNotEqual(try rows(dir + "/a/st-olaf.csv"), try rows(dir + "/c/st-olaf.csv"), "--seed changes the rows")
        try fedmixUsageError(["simulate", "trauma", "--out", dir, "--scale", "0"], "--scale must be a positive number (got \"0\")")
        try fedmixUsageError(["simulate", "trauma", "--out", dir, "--seed", "-1"], "--seed must be a non-negative whole number (got \"-1\")")
        try fedmixUsageError(["simulate", "trauma"], "missing required option --out DIR")
        try fedmixUsageError(["simulate", "--out", dir], "fedmix simulate trauma|hypertension|imputation --out DIR")
        try fedmixUsageError(["simulate", "truama", "--out", dir], "unknown dataset \"truama\"; use trauma (site-structured missing lactate), hypertension (the demo) or imputation (missing lactate with known truth)")
    }

    func simulateHypertension() throws {
        let dir = try scratch("simulate")
        try fedmix(["simulate", "hypertension", "--out", dir + "/default"])
        let demo = RegistrySimulator.demoSites[0]
        XCTAssertEqual(try String(contentsOfFile: dir + "/default/\(demo.name).csv", encoding: .utf8),
                       RegistrySimulator.siteCSV(site: demo.name, index: 0, patients: demo.patients), "the demo's data by default")
        try fedmix(["simulate", "hypertension", "--out", dir + "/half", "--scale", "0.5", "--seed", "1"])
        XCTAssertEqual(try rows(dir + "/half/metropolitan.csv").count, 210)
        try fedmix(["simulate", "hypertension", "--out", dir + "/seed", "--seed", "1"])
        XCTAssertNotEqual(try rows(dir + "/seed/\(demo.name).csv"), try rows(dir + "/default/\(demo.name).csv"))
    }

    // MARK: - certs

    func certsInit() throws {
        let dir = try scratch("certs")
        let r = try fedmix(["certs", "init", dir + "/ca", "--days", "100"])
        XCTAssertEqual(r.out, "wrote \(dir)/ca/ca.pem (give to every agent and coordinator) and \(dir)/ca/ca.key (keep offline; mode 0600)\n")
        let ca = try Certificates.inspect(certificatePath: dir + "/ca/ca.pem")
        XCTAssertTrue(ca.isCA)
        XCTAssertEqual(ca.notAfter.timeIntervalSinceNow / 86400, 100, accuracy: 0.1)
        let again = try fedmix(["certs", "init", dir + "/ca"], status: 1)
        XCTAssertTrue(again.err.hasPrefix("fedmix: error: "), again.err)
        try fedmix(["certs", "init", dir + "/ca", "--force"])
        let replaced = try Certificates.inspect(certificatePath: dir + "/ca/ca.pem")
        XCTAssertNotEqual(replaced.fingerprintSHA256, ca.fingerprintSHA256, "--force replaced the CA")
        XCTAssertEqual(replaced.notAfter.timeIntervalSinceNow / 86400, 3650, accuracy: 0.1, "3650 days by default")
        try fedmixUsageError(["certs", "init"], "fedmix certs init DIR: give the folder for the CA")
        try fedmixUsageError(["certs", "init", dir + "/x", "--days", "0"], "--days must be a whole number from 1 to 36600 (got \"0\")")
        try fedmixUsageError(["certs", "init", "--out", dir + "/x"], "--out is not an option of this command: give the folder as an argument")
    }

    func certsIssue() throws {
        let dir = try scratch("certs")
        try fedmix(["certs", "init", dir + "/ca"])
        let r = try fedmix(["certs", "issue", "--ca", dir + "/ca", "--name", "hospital-a.example.org", "--out", dir + "/a", "--days", "40"])
        XCTAssertEqual(r.out, "wrote \(dir)/a/cert.pem and \(dir)/a/key.pem (mode 0600) for hospital-a.example.org\n")
        let cert = try Certificates.inspect(certificatePath: dir + "/a/cert.pem")
        XCTAssertEqual(cert.commonName, "hospital-a.example.org")
        XCTAssertEqual(cert.notAfter.timeIntervalSinceNow / 86400, 40, accuracy: 0.1)
        try fedmix(["certs", "issue", "--ca", dir + "/ca", "--name", "coordinator", "--out", dir + "/c"])
        XCTAssertEqual(try Certificates.inspect(certificatePath: dir + "/c/cert.pem").notAfter.timeIntervalSinceNow / 86400, 825, accuracy: 0.1)
        try fedmixUsageError(["certs", "issue", "--ca", dir + "/ca", "--name", "x"], "fedmix certs issue: missing required option --out DIR")
        try fedmixUsageError(["certs", "issue", "--ca", dir + "/ca", "--name", "x", "--out", dir + "/x", "--force"],
                             "--force is not an option of this command: certs issue always replaces the files in --out")
        let missingCA = try fedmix(["certs", "issue", "--ca", dir + "/nothing", "--name", "x", "--out", dir + "/x"], status: 1)
        XCTAssertTrue(missingCA.err.hasPrefix("fedmix: error: "), missingCA.err)
    }

    // MARK: - bench

    func benchLines(_ out: String) -> [[String: Any]] {
        out.split(separator: "\n").filter { $0.hasPrefix("[{") }.flatMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [[String: Any]]) ?? []
        }
    }

    func benchInProcess() throws {
        let r = try fedmix(["bench", "--rows", "200,300", "--sites", "4", "--models", "slope,binary", "--modes", "in-process",
                            "--seed", "5", "--json", "--no-isolate"])
        XCTAssertTrue(r.out.hasPrefix("fedmix bench: 4 sites, rows 200, 300, seed 5, "), r.out)
        XCTAssertTrue(r.out.contains("each configuration in this process (peak memory is cumulative)"), r.out)
        XCTAssertTrue(r.out.contains("[4/4] "), r.out)
        let measurements = benchLines(r.out)
        XCTAssertEqual(measurements.map { $0["rows"] as? Int }, [200, 200, 300, 300])
        XCTAssertEqual(measurements.map { $0["model"] as? String }, ["slope", "binary", "slope", "binary"])
        XCTAssertEqual(Set(measurements.map { $0["mode"] as? String }), ["in-process"])
        XCTAssertEqual(Set(measurements.map { $0["sites"] as? Int }), [4])
        XCTAssertEqual(Set(measurements.map { $0["isolated"] as? Bool }), [false])
        let other = try fedmix(["bench", "--rows", "200", "--sites", "4", "--models", "slope", "--modes", "in-process", "--seed", "6", "--no-isolate", "--json"])
        XCTAssertNotEqual(benchLines(other.out).first?["beta"] as? [Double], measurements.first?["beta"] as? [Double], "--seed changes the rows")
        XCTAssertTrue(benchLines(try fedmix(["bench", "--rows", "200", "--sites", "4", "--models", "slope", "--modes", "in-process", "--no-isolate"]).out).isEmpty,
                      "no JSON without --json")
        try fedmixUsageError(["bench", "--rows", "30", "--sites", "4"], "every --rows must be at least 10 rows per site (--sites 4)")
        try fedmixUsageError(["bench", "--models", "slope", "--patients", "300"], "--patients sets the patients per site of the nested and nested-glmm models")
        try fedmixUsageError(["bench", "--surgeons", "300"], "--surgeons sets the surgeons of the surgeons-glmm and surgeon-wards-glmm models")
        try fedmixUsageError(["bench", "--models", "slpoe"], "--models takes slope, patient, binary, ohio, egsingle, nested, nested-glmm, surgeons, surgeons-glmm, surgeon-wards or surgeon-wards-glmm, separated by commas")
        try fedmixUsageError(["bench", "--modes", "federated,"], "--modes takes in-process, federated or federated-audit, separated by commas")
        try fedmixUsageError(["bench", "--rows", "1e5"], "--rows takes numbers of rows, separated by commas")
    }

    func benchRepeatIsolatedAndFederated() throws {
        let r = try fedmix(["bench", "--rows", "200", "--sites", "4", "--models", "slope", "--modes", "federated", "--repeat", "2", "--json"])
        XCTAssertTrue(r.out.contains("each configuration in its own process (peak memory is its own), best of 2 runs"), r.out)
        XCTAssertTrue(r.out.contains("runs     best of 2"), r.out)
        XCTAssertTrue(r.out.contains("federated (4 agents, mutual TLS on loopback"), r.out)
        let m = try XCTUnwrap(benchLines(r.out).first)
        XCTAssertEqual(m["isolated"] as? Bool, true)
        XCTAssertEqual(m["runs"] as? Int, 2)
        XCTAssertEqual(m["mode"] as? String, "federated")
        try fedmixUsageError(["bench", "--repeat", "0"], "--repeat must be a whole number of at least 1 (got \"0\")")
    }

    func benchSingle() throws {
        let r = try fedmix(["bench", "--single", "200:4:slope:in-process", "--seed", "5"])
        let line = try XCTUnwrap(r.out.split(separator: "\n").first { $0.hasPrefix("FEDMIX-BENCH-RESULT ") })
        let m = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.dropFirst("FEDMIX-BENCH-RESULT ".count).utf8)) as? [String: Any])
        XCTAssertEqual(m["rows"] as? Int, 200)
        XCTAssertEqual(m["sites"] as? Int, 4)
        let same = try fedmix(["bench", "--rows", "200", "--sites", "4", "--models", "slope", "--modes", "in-process", "--seed", "5", "--no-isolate", "--json"])
        XCTAssertEqual(m["beta"] as? [Double], benchLines(same.out).first?["beta"] as? [Double], "--seed reaches the child")
        try fedmixUsageError(["bench", "--single", "200:4:slope:in-process", "--rows", "300"],
                             "--rows cannot be used with --single (it measures the one configuration it names)")
        try fedmixUsageError(["bench", "--single", "200:4:slope"], "--single ROWS:SITES:MODEL:MODE")
    }

    func benchCodec() throws {
        let r = try fedmix(["bench", "--codec"])
        for name in ["evaluate request", "glmm_contribution answer", "contribution answer"] {
            let row = try XCTUnwrap(r.out.split(separator: "\n").first { $0.hasPrefix(name + " ") }, r.out)
            let figures = row.dropFirst(name.count).split(separator: " ").compactMap { Double($0) }
            XCTAssertEqual(figures.count, 3, String(row))
            XCTAssertTrue(figures.allSatisfy { $0 > 0 }, "bytes, encode µs and decode µs: \(row)")
        }
        try fedmixUsageError(["bench", "--codec", "--models", "ohio"], "--models cannot be used with --codec (it times the codec alone, on fixed messages)")
    }

    // MARK: - fedmix-agent

    func agentServe() throws {
        let a = try agents()
        XCTAssertTrue(a.processes.allSatisfy { $0.process.isRunning })
        XCTAssertEqual(try fedmix(["describe"] + (try remote) + ["--format", "json"]).status, 0, "the agents serve their --config")
        try usageError(try Executables.agent(), ["serve"], "fedmix-agent serve: missing required option --config FILE")
        try usageError(try Executables.agent(), ["serve", "--config", a.configs[0], "--port", "1"], "fedmix-agent serve: unknown option --port")
        let r = try agent(["serve", "--config", try data().dir + "/none.json"], status: 1)
        XCTAssertTrue(r.err.hasPrefix("fedmix-agent: error: "), r.err)
    }

    /// A copy of an agent's configuration with other values.
    func config(_ index: Int, _ change: (inout [String: Any]) -> Void) throws -> String {
        let a = try agents()
        var c = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: a.configs[index]))) as! [String: Any]
        change(&c)
        let path = a.root + "/variant-\(UUID().uuidString.prefix(6)).json"
        try JSONSerialization.data(withJSONObject: c, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        return path
    }

    func agentCheck() throws {
        let a = try agents()
        // The certificates are valid for 20 days (the CA 30): within the default 30 days of warning.
        let warned = try agent(["check", "--config", a.configs[0]])
        XCTAssertTrue(warned.out.contains("expires in 19 days"), warned.out)
        XCTAssertTrue(warned.out.contains("check passed: "), warned.out)
        let quiet = try agent(["check", "--config", a.configs[0], "--warn-days", "10"])
        XCTAssertFalse(quiet.out.contains("expires in"), quiet.out)
        XCTAssertTrue(quiet.out.hasSuffix(" 0 warnings, 0 failed\n"), quiet.out)
        // The listen address of a running agent: in use.
        let taken = try config(0) { $0["listen"] = "127.0.0.1:\(a.processes[0].port)" }
        let failed = try agent(["check", "--config", taken], status: 1)
        XCTAssertTrue(failed.out.contains("FAIL listen: cannot bind 127.0.0.1:\(a.processes[0].port): Address already in use"), failed.out)
        let running = try agent(["check", "--config", taken, "--running"])
        XCTAssertTrue(running.out.contains("in use, as expected while the agent runs"), running.out)
        try usageError(try Executables.agent(), ["check", "--config", a.configs[0], "--warn-days", "-1"],
                       "fedmix-agent check: --warn-days must be a whole number of at least 0 (got \"-1\")")
        try usageError(try Executables.agent(), ["check"], "fedmix-agent check: missing required option --config FILE")
    }

    func auditList() throws {
        let a = try agents()
        try fedmix(["describe"] + (try remote))
        let byLog = try agent(["audit", "list", "--log", a.logs[1]]).out
        let byConfig = try agent(["audit", "list", "--config", a.configs[1]]).out
        XCTAssertEqual(byLog.split(separator: "\n").first, "SEQ\tTIME\tDIRECTION\tPEER\tSESSION\tBYTES\tTYPE")
        XCTAssertGreaterThanOrEqual(byLog.split(separator: "\n").count, 3)
        XCTAssertTrue(byLog.contains("\tdescribe\n"), byLog)
        XCTAssertEqual(Array(byConfig.split(separator: "\n").prefix(3)), Array(byLog.split(separator: "\n").prefix(3)))
        XCTAssertEqual(try agent(["audit", "list", "--log", a.logs[1], "--since", "2100-01-01"]).out, "SEQ\tTIME\tDIRECTION\tPEER\tSESSION\tBYTES\tTYPE\n")
        let agentBinary = try Executables.agent()
        try usageError(agentBinary, ["audit", "list", "--log", a.logs[1], "--config", a.configs[1]], "give --config FILE or --log FILE, not both")
        try usageError(agentBinary, ["audit", "list"], "give --config FILE (the agent's configuration) or --log FILE")
        try usageError(agentBinary, ["audit", "list", "--log", a.logs[1], "--since", "soon"], "--since is not a time")
    }

    func auditShow() throws {
        let a = try agents()
        try fedmix(["describe"] + (try remote))
        let full = try agent(["audit", "show", "1", "--log", a.logs[2]]).out
        XCTAssertTrue(full.hasPrefix("entry        1\n"), full)
        XCTAssertTrue(full.contains("(matches the entry's content)"), full)
        let line = try agent(["audit", "show", "1", "--line", "--config", a.configs[2]]).out
        XCTAssertTrue(line.hasPrefix("{") && line.hasSuffix("}\n") && line.split(separator: "\n").count == 1, line)
        XCTAssertNotEqual(line, full)
        try usageError(try Executables.agent(), ["audit", "show", "--log", a.logs[2]], "give one entry number: fedmix-agent audit show ID --config FILE")
        try usageError(try Executables.agent(), ["audit", "show", "first", "--log", a.logs[2]], "ID must be an entry number")
        try usageError(try Executables.agent(), ["audit", "show", "1", "2", "--log", a.logs[2]], "unexpected argument \"2\"")
        let missing = try agent(["audit", "show", "999999", "--log", a.logs[2]], status: 1)
        XCTAssertTrue(missing.err.contains("there is no entry 999999"), missing.err)
    }

    func auditVerify() throws {
        let a = try agents()
        for args in [["--log", a.logs[0]], ["--config", a.configs[0]]] {
            let r = try agent(["audit", "verify"] + args)
            XCTAssertTrue(r.out.contains("hash chain intact"), r.out)
            XCTAssertTrue(r.out.hasPrefix(a.logs[0] + ": "), r.out)
        }
        let noLog = try config(0) { $0.removeValue(forKey: "audit_log") }
        try usageError(try Executables.agent(), ["audit", "verify", "--config", noLog], "has no \"audit_log\": this agent keeps no audit log")
    }

    /// A fit's signed receipts match each agent's log; the options' misuse is refused.
    func auditVerifyReceipts() throws {
        let a = try agents()
        let dir = try scratch("receipts")
        try fedmix(["fit"] + (try remote) + ["--formula", Self.sleepstudy, "--format", "json", "--output", dir + "/fit.json"])
        for (i, config) in a.configs.enumerated() {
            let r = try agent(["audit", "verify", "--config", config, "--receipts", dir + "/fit.json"])
            XCTAssertTrue(r.out.contains("hash chain intact"), r.out)
            XCTAssertTrue(r.out.contains("\(dir)/fit.json: receipts: ") && r.out.contains("match the log"), "agent \(i): \(r.out)")
            XCTAssertFalse(r.out.contains("FAILED"), r.out)
        }
        // --certificate adds a certificate the receipts may have been signed with (here the agent's own again).
        let certificate = a.root + "/agent-" + URL(fileURLWithPath: a.logs[0]).lastPathComponent
            .replacingOccurrences(of: "agent-", with: "").replacingOccurrences(of: "-audit.db", with: "") + "/cert.pem"
        let withCertificate = try agent(["audit", "verify", "--config", a.configs[0], "--receipts", dir + "/fit.json", "--certificate", certificate])
        XCTAssertTrue(withCertificate.out.contains("match the log"), withCertificate.out)
        try usageError(try Executables.agent(), ["audit", "verify", "--log", a.logs[0], "--receipts", dir + "/fit.json"],
                       "--receipts needs --config FILE")
        try usageError(try Executables.agent(), ["audit", "verify", "--config", a.configs[0], "--certificate", certificate],
                       "--certificate applies with --receipts FIT.json")
    }

    func auditExport() throws {
        let a = try agents()
        try fedmix(["describe"] + (try remote))
        let byLog = try agent(["audit", "export", "--log", a.logs[0]]).out
        let entries = try byLog.split(separator: "\n").map { try JSONDecoder().decode(AuditEntry.self, from: Data($0.utf8)) }
        XCTAssertGreaterThanOrEqual(entries.count, 2)
        XCTAssertEqual(entries.map(\.seq), Array(1...entries.count))
        let byConfig = try agent(["audit", "export", "--config", a.configs[0]]).out
        XCTAssertTrue(byConfig.hasPrefix(byLog), "the same log")
        XCTAssertEqual(try agent(["audit", "export", "--log", a.logs[0], "--since", "2100-01-01"]).out, "")
        XCTAssertEqual(try agent(["audit", "export", "--log", a.logs[0], "--since", "2000-01-01"]).out, byConfig, "every entry is after 2000")
    }

    func auditPrune() throws {
        let dir = try scratch("prune")
        let noRetention = try config(0) { $0["audit_log"] = dir + "/audit.db" }
        try usageError(try Executables.agent(), ["audit", "prune", "--config", noRetention], "sets no \"audit_retention_days\"; give --days N")
        XCTAssertEqual(try agent(["audit", "prune", "--config", noRetention, "--days", "3"]).out, "nothing older than 3 days\n")
        let retention = try config(0) { $0["audit_log"] = dir + "/audit.db"; $0["audit_retention_days"] = 400 }
        XCTAssertEqual(try agent(["audit", "prune", "--config", retention]).out, "nothing older than 400 days\n")
        try usageError(try Executables.agent(), ["audit", "prune", "--config", retention, "--days", "0"], "--days must be a whole number of at least 1 (got \"0\")")
        try usageError(try Executables.agent(), ["audit", "prune", "--log", dir + "/audit.db"], "--log is not")
    }
}

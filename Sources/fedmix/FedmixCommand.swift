import Foundation
import Coordinator
import Protocol
import SiteAgent
import Math

/// `fedmix`: the coordinator's command line.
enum FedmixCommand {
    static let usage = """
    fedmix \(fedmixVersion): federated mixed-effects models (lme4 formulas) over hospitals' site agents

    Usage:
      fedmix demo [--format text|json]
          Simulated multi-site registry, local agents over TLS, fit and partial pooling.
      fedmix local PATH... --formula F [--ml] [--family binomial|poisson [--link L] [--nagq N]]
                   [--format text|json] [--output FILE]
          Each CSV file (or each CSV in a folder) is one site; fits over local agents.
      fedmix fit --sites FILE --dataset NAME --formula F [--ml] [--filter F] [--dry-run] [--format text|json] [--output FILE]
          --filter 'age >= 50 & sex == "F"': fit on those rows at every site; --dry-run: print what
          each site would send (as fedmix explain) and stop
      fedmix explain --sites FILE --dataset NAME --formula F [--filter F]   (or --model FILE)
          Before anything is computed: per site, what each round would send and the most rounds.
      fedmix describe --sites FILE --dataset NAME [--format text|json]
      fedmix sensitivity (PATH... | --sites FILE --dataset NAME) --formula F
                   [--exclude-sites-missing-above VAR=F[,F...]] [--missing-indicator VAR=VALUE]
          Main complete-case fit next to each alternative, with shifts and dropped sites.
      Missing data in fit/local: [--exclude-sites-missing-above VAR=F] [--missing-indicator VAR=VALUE]
      fedmix simulate trauma|hypertension --out DIR [--scale X]
          Writes a simulated multi-site registry (trauma: site-structured missing lactate).
      fedmix certs init DIR
      fedmix certs issue --ca DIR --name NAME --out DIR
      fedmix bench [--rows N[,N...]] [--sites K]   (simulated rows; timing, rounds, bytes, memory)
      fedmix --version
    """

    static func run(_ args: [String]) -> Int32 {
        guard let command = args.first else { print(usage); return 0 }
        let rest = Array(args.dropFirst())
        do {
            switch command {
            case "--version", "version": print("fedmix \(fedmixVersion) (protocol \(protocolVersion))"); return 0
            case "help", "--help", "-h": print(usage); return 0
            case "local": return try LocalCommand.run(rest)
            case "demo": return try DemoCommand.run(rest)
            case "fit": return try RemoteCommands.fit(rest)
            case "describe": return try RemoteCommands.describe(rest)
            case "explain": return try ExplainCommand.run(rest)
            case "certs": return try CertsCommand.run(rest)
            case "simulate": return try SimulateCommand.run(rest)
            case "sensitivity": return try SensitivityCommand.run(rest)
            case "bench": return try BenchCommand.run(rest)
            default: throw UsageError("unknown command \"\(command)\"; run fedmix help")
            }
        } catch let e as UsageError {
            FileHandle.standardError.write("fedmix: \(e.message)\n")
            return 2
        } catch {
            FileHandle.standardError.write("fedmix: error: \(error)\n")
            return 1
        }
    }
}

extension FileHandle {
    func write(_ s: String) { write(Data(s.utf8)) }
}

/// Writes a result as text or JSON, to a file or standard output.
func emit(_ r: FitResult, format: String, output: String?) throws {
    let text: String
    switch format {
    case "text": text = Report.text(r)
    case "json": text = try r.json() + "\n"
    default: throw UsageError("--format must be text or json")
    }
    if let output { try text.write(toFile: output, atomically: true, encoding: .utf8) } else { print(text, terminator: "") }
}

/// --ml, --family, --link, --nagq, --weights, --filter as fit options.
func fitOptions(_ a: Arguments) throws -> FitOptions {
    guard let family = Family(rawValue: a.value("family") ?? "gaussian") else {
        throw UsageError("--family must be gaussian, binomial or poisson")
    }
    var link: Link? = nil
    if let l = a.value("link") {
        guard let parsed = Link(rawValue: l) else { throw UsageError("--link must be logit, probit, cloglog, log or identity") }
        link = parsed
    }
    guard let nagq = Int(a.value("nagq") ?? "1"), (1...25).contains(nagq) else { throw UsageError("--nagq must be a whole number from 1 to 25") }
    if family == .gaussian && (a.value("nagq") != nil) { throw UsageError("--nagq applies to GLMMs (--family binomial or poisson)") }
    if family != .gaussian && a.has("ml") { throw UsageError("--ml applies to linear mixed models; GLMMs are always fitted by maximum likelihood") }
    var options = FitOptions(method: a.has("ml") ? .ml : .reml, family: family, link: link, nAGQ: nagq)
    options.filter = a.value("filter")
    options.weights = a.value("weights")
    return options
}

/// --exclude-sites-missing-above and --missing-indicator as a strategy.
func missingDataStrategy(_ a: Arguments) throws -> MissingDataStrategy {
    var s = MissingDataStrategy()
    for (v, f) in try MissingDataStrategy.parseAssignments(a.values["exclude-sites-missing-above"] ?? [], option: "exclude-sites-missing-above") {
        guard f.count == 1 else { throw UsageError("--exclude-sites-missing-above takes one fraction per variable in a fit; use fedmix sensitivity for several") }
        s.excludeAbove[v] = f[0]
    }
    for (v, c) in try MissingDataStrategy.parseAssignments(a.values["missing-indicator"] ?? [], option: "missing-indicator") {
        s.indicators[v] = c[0]
    }
    return s
}

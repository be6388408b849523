import Foundation
import CommandKit
import Coordinator
import Protocol
import SiteAgent

/// `fedmix fit` and `fedmix describe` against agents listed in a sites file.
enum RemoteCommands {
    static let sites = Option<String>("sites", value: "FILE", help: Opt.sites.info.help, required: true)
    static let dataset = Option<String>("dataset", value: "NAME", help: Opt.dataset.info.help, required: true)
        static let dryRun = Flag("dry-run", help: "print what each site would send (as fedmix explain) and stop; nothing is fitted")

    static let fitCommand = Command(
        "fit", abstract: "Fits the model over the agents of a sites file.",
        options: [sites, dataset, Opt.requiredFormula] + Opt.model + Opt.missingData + Opt.imputation + Opt.result + [Opt.confint, dryRun, Opt.excludeSites, Opt.cluster, Opt.marginal, Opt.report] + Opt.network,
        run: fit)

    static func fit(_ a: ParsedArguments) throws -> Int32 {
        let dataset = try a.require(dataset), formula = try a.require(Opt.requiredFormula)
        var options = try singleFitOptions(a)
        options.confint = a.value(Opt.confint)
        let missing = missingDataStrategy(a)
        let dry = a.flag(dryRun)
        if dry && a.value(Opt.format) == .json {
            throw ArgumentError("--dry-run prints text (what each site would send); --format json applies to fits")
        }
        if dry && a.value(Opt.report) != nil { throw ArgumentError("--dry-run fits nothing; --report writes a fit's page") }
        try Analysis.validate(formula: formula, options: options, missingData: missing)
        let imputation = try imputationSettings(a)
        if let imputation { _ = try MultipleImputation.validate(imputation, analysisFormula: formula) }
        let federation = try connectSites(try a.require(sites), a)
        defer { federation.close() }
        if dry {
            try write(try ExplainCommand.text(federation, dataset: dataset, formula: formula, options: options, missingData: missing), a)
            return 0
        }
        let result = try fitMaybeImputed(federation, dataset: dataset, formula: formula, options: options, missingData: missing, imputation: imputation)
        try emit(result, a)
        try writeReport(result, a, title: "fedmix fit: \(formula)")
        return 0
    }

    static let describeCommand = Command(
        "describe", abstract: "Each site's variables: types, missing values, levels (counts below a site's min_cell suppressed), and numeric variables' n, mean and SD where a site's rules allow.",
        options: [sites, dataset, Opt.format] + Opt.network,
        run: describe)

    static func describe(_ a: ParsedArguments) throws -> Int32 {
        let dataset = try a.require(dataset)
        let format = a.value(Opt.format, default: .text)
        let federation = try connectSites(try a.require(sites), a, exclusions: false)
        defer { federation.close() }
        let d = try Analysis.describe(federation, dataset: dataset, numericSummaries: true)
        switch format {
        case .json:
            let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(d), as: UTF8.self))
            // The array holds the described sites only: say on stderr which were left out.
            for x in federation.exclusions { FileHandle.standardError.write("fedmix: site \(x.site) left out: \(x.reason)\n") }
        case .text:
            print(TerminalText.cleanLines(DescribeReport.text(d)))
            for x in federation.exclusions { print("site \(x.site) left out: \(x.reason)") }
        }
        return 0
    }
}

/// `fedmix certs init DIR` and `fedmix certs issue --ca DIR --name NAME --out DIR`.
enum CertsCommand {
    static let directory = Positional("DIR", help: "where to write ca.pem and ca.key", missing: "fedmix certs init DIR: give the folder for the CA")
    static let force = Flag("force", help: "replace an existing CA in DIR (every certificate it issued stops being trusted)")
    static let ca = Option<String>("ca", value: "DIR", help: "the CA's folder (ca.pem, ca.key)", required: true)
    static let name = Option<String>("name", value: "NAME", help: "the certificate's name (CN and subjectAltName): a host name, or \"coordinator\"", required: true)
    static let out = Option<String>("out", value: "DIR", help: "where to write cert.pem and key.pem (replaced if present)", required: true)
    static func days(_ d: Int) -> Option<Int> {
        Option("days", value: "N", help: "validity in days (default \(d))", .integer(in: 1...36600))
    }
    static let caDays = days(3650), certDays = days(825)

    static let group = CommandGroup("certs", abstract: "The deployment's certificates: a CA, and one certificate per agent and coordinator.", commands: [
        Command("init", abstract: "Creates the deployment's CA (keep ca.key offline).", arguments: [directory], options: [caDays, force],
                notHere: ["out": "give the folder as an argument: fedmix certs init DIR"], run: initCA),
        Command("issue", abstract: "Issues a certificate signed by the CA, for an agent or the coordinator.", options: [ca, name, out, certDays],
                notHere: ["force": "certs issue always replaces the files in --out"], run: issue),
    ])

    static func initCA(_ a: ParsedArguments) throws -> Int32 {
        let dir = a.positional(directory)!
        try Certificates.createAuthority(directory: dir, days: a.value(caDays, default: 3650), overwrite: a.flag(force))
        print("wrote \(dir)/ca.pem (give to every agent and coordinator) and \(dir)/ca.key (keep offline; mode 0600)")
        return 0
    }

    static func issue(_ a: ParsedArguments) throws -> Int32 {
        let out = try a.require(out), name = try a.require(name)
        try Certificates.issue(caDirectory: try a.require(ca), name: name, outDirectory: out, days: a.value(certDays, default: 825))
        print("wrote \(out)/cert.pem and \(out)/key.pem (mode 0600) for \(name)")
        return 0
    }
}

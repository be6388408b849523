import Foundation
import CommandKit
import Coordinator
import Protocol

/// `fedmix explain` and `fedmix fit --dry-run`: what each site would send
/// for a model, before anything is computed (Coordinator/Explain.swift).
enum ExplainCommand {
    static let model = Option<String>("model", value: "FILE",
                                      help: "explain a model specification instead: a ModelSpec in JSON, or a prepare line from an agent's audit log; \"-\" reads standard input")
    static let siteCount = Option<Int>("site-count", value: "K", help: "with --model: the number of sites (default 1)", .integer(in: 1...Int.max))

    static let command = Command(
        "explain", abstract: "Before anything is computed: per site, what each round would send and the most rounds.",
        synopsis: "--sites FILE --dataset NAME --formula F [options]   (or --model FILE [--site-count K])",
        discussion: """
        With --sites: describes the sites' variables (one describe round), resolves the model and prints, per site,
        what each round would send; no model is prepared or fitted.
        With --model: the same text for a model specification, e.g. a prepare line from an agent's audit log
        (fedmix-agent audit show ID --line --config agent.json > prepare.json).
        """,
        options: [Opt.sites, Opt.dataset, Opt.formula] + Opt.model + Opt.missingData + [model, siteCount, Opt.excludeSites] + Opt.network,
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        if let path = a.value(model) {
            try a.refuse([Opt.sites, Opt.dataset, Opt.formula, Opt.family, Opt.link, Opt.weights, Opt.filter, Opt.excludeSites] + Opt.missingData + Opt.network,
                         "with --model (the model specification already holds them)")
            let spec = try readModel(path)
            var options = FitOptions(method: a.flag(Opt.ml) ? .ml : .reml, family: spec.family, link: spec.link)
            if let n = a.value(Opt.nagq) { options.nAGQ = n }
            print(Explain.text(spec: spec, sites: a.value(siteCount, default: 1), options: options), terminator: "")
            return 0
        }
        try a.refuse([siteCount], "without --model (the sites file gives the number of sites)")
        let dataset = try a.require(Opt.dataset), formula = try a.require(Opt.formula)
        let options = try fitOptions(a)
        let missing = missingDataStrategy(a)
        try Analysis.validate(formula: formula, options: options, missingData: missing)
        let federation = try connectSites(try a.require(Opt.sites), a)
        defer { federation.close() }
        print(try text(federation, dataset: dataset, formula: formula, options: options, missingData: missing), terminator: "")
        return 0
    }

    /// describe → leave out sites (--exclude-sites-missing-above) → resolve
    /// (filter, missing-indicator method) → explain.
    static func text(_ federation: Federation, dataset: String, formula: String, options: FitOptions,
                     missingData: MissingDataStrategy) throws -> String {
        let descriptions = try Analysis.describe(federation, dataset: dataset)
        let excluded = try missingData.sitesToExclude(descriptions)
        let kept = descriptions.filter { d in !excluded.contains { $0.site == d.site } }
        guard !kept.isEmpty else { throw UsageError("every site would be excluded by --exclude-sites-missing-above") }
        let spec = try Analysis.model(formula: formula, descriptions: kept, options: options, missingData: missingData)
        var out = Explain.text(spec: spec, sites: kept.count, options: options)
        for e in excluded { out += "Site \(e.site) would be left out (--exclude-sites-missing-above): \(e.reason); it is sent nothing but describe\n" }
        for e in federation.exclusions { out += "Site \(e.site) is left out (\(e.reason)); it is sent nothing\n" }
        return out
    }

    /// A ModelSpec, or the "model" of a prepare line.
    static func readModel(_ path: String) throws -> ModelSpec {
        let data: Data
        if path == "-" { data = FileHandle.standardInput.readDataToEndOfFile() } else {
            guard let d = FileManager.default.contents(atPath: path) else { throw UsageError("\(path): cannot read the file") }
            data = d
        }
        if let request = try? JSONDecoder().decode(PrepareRequest.self, from: data) { return request.model }
        do { return try JSONDecoder().decode(ModelSpec.self, from: data) } catch {
            throw UsageError("\(path): neither a model specification nor a prepare line (\(error))")
        }
    }
}

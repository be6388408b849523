import Foundation
import Coordinator
import Protocol

/// `fedmix explain` and `fedmix fit --dry-run`: what each site would send
/// for a model, before anything is computed (Coordinator/Explain.swift).
enum ExplainCommand {
    static let usage = """
    fedmix explain --sites FILE --dataset NAME --formula F [--filter F] [--family ...] [--ml] [--nagq N]
        describes the sites' variables (one describe round), resolves the model and prints, per site,
        what each round would send; no model is prepared or fitted
    fedmix explain --model FILE [--site-count K] [--ml] [--nagq N]
        the same text for a model specification: a ModelSpec in JSON, or a prepare line from an agent's
        audit log (fedmix-agent audit show ID --line --config agent.json > prepare.json); "-" reads standard input
    """

    static func run(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: ["sites", "dataset", "formula", "filter", "family", "link", "nagq", "model", "site-count",
                                              "exclude-sites-missing-above", "missing-indicator"], flags: ["ml", "help"])
        if a.has("help") { print(usage); return 0 }
        if let path = a.value("model") {
            let spec = try readModel(path)
            let sites = try Int(a.value("site-count") ?? "1").orThrow("--site-count must be a number")
            var options = FitOptions(method: a.has("ml") ? .ml : .reml, family: spec.family, link: spec.link)
            if let n = a.value("nagq") { options.nAGQ = try Int(n).orThrow("--nagq must be a number") }
            print(Explain.text(spec: spec, sites: sites, options: options), terminator: "")
            return 0
        }
        let sites = try SitesFile.load(path: try a.require("sites"))
        let federation = try sites.connect()
        defer { federation.close() }
        print(try text(federation, a), terminator: "")
        return 0
    }

    /// describe → resolve (with the filter and missing-data strategy) → explain.
    static func text(_ federation: Federation, _ a: Arguments) throws -> String {
        let dataset = try a.require("dataset")
        let descriptions = try Analysis.describe(federation, dataset: dataset)
        let options = try fitOptions(a)
        let spec = try Analysis.model(formula: try a.require("formula"), descriptions: descriptions, options: options,
                                      missingData: try missingDataStrategy(a))
        return Explain.text(spec: spec, sites: federation.sites.count, options: options)
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

import Foundation
import CommandKit
import Coordinator
import Protocol
import SiteAgent
import Math

/// `fedmix local PATH...`: one site per CSV file.
enum LocalCommand {
    static let paths = Positional("PATH", help: "CSV files, or folders of CSV files; each file is one site (its name is the file's stem)",
                                  arity: .oneOrMore, missing: "give at least one CSV file or folder of CSV files")

    static let command = Command(
        "local", abstract: "Each CSV file (or each CSV in a folder) is one site; fits over local agents (mutual TLS on loopback).",
        arguments: [paths],
        options: [Opt.requiredFormula] + Opt.model + Opt.missingData + Opt.result + [Opt.confint, Opt.inProcess, Opt.excludeSites, Opt.quiet, Opt.cluster],
        notHere: ["dataset": "fedmix local serves each CSV file as the one dataset of its site; --dataset goes with --sites (fit, describe, explain, sensitivity)"],
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let formula = try a.require(Opt.requiredFormula)
        var options = try singleFitOptions(a)
        options.confint = a.value(Opt.confint)
        let missing = missingDataStrategy(a)
        try Analysis.validate(formula: formula, options: options, missingData: missing)
        let files = try siteFiles(a.positionals(paths))
        let federation = try LocalFederation.start(files: files, inProcess: a.flag(Opt.inProcess), excluding: a.value(Opt.excludeSites) ?? [],
                                                   quiet: a.flag(Opt.quiet))
        defer { federation.close() }
        let result = try Analysis.fit(federation, dataset: "data", formula: formula, options: options, missingData: missing)
        try emit(result, a)
        return 0
    }

    /// Expands folders into their CSV files; one file is one site (name = file stem).
    static func siteFiles(_ paths: [String]) throws -> [URL] {
        var out: [URL] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else {
                throw UsageError("\(p): no such file or folder")
            }
            if isDir.boolValue {
                let files = try FileManager.default.contentsOfDirectory(atPath: p).filter { $0.hasSuffix(".csv") }
                    .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                guard !files.isEmpty else { throw UsageError("\(p): the folder has no .csv files") }
                out += files.map { URL(fileURLWithPath: p).appendingPathComponent($0) }
            } else {
                out.append(URL(fileURLWithPath: p))
            }
        }
        let names = out.map { $0.deletingPathExtension().lastPathComponent }
        if let dup = names.first(where: { n in names.filter { $0 == n }.count > 1 }) {
            throw UsageError("two files would both be site \"\(dup)\"; site names are file names without .csv and must differ")
        }
        return out
    }
}

/// Site agents for local files.
enum LocalFederation {
    /// One agent per file: over mutual TLS on loopback with throwaway
    /// certificates (the production path), or in this process.
    static func start(files: [URL], inProcess: Bool, excluding names: [String] = [], quiet: Bool = true) throws -> Federation {
        let federation = try start(files: files, inProcess: inProcess, excluding: names)
        federation.reporter = .standardError(quiet: quiet)
        return federation
    }

    private static func start(files: [URL], inProcess: Bool, excluding names: [String]) throws -> Federation {
        guard !names.isEmpty else { return inProcess ? Self.inProcess(files: files) : try LocalAgents(files: files).federation }
        let stems = files.map { $0.deletingPathExtension().lastPathComponent }
        for n in names where !stems.contains(n) {
            throw UsageError("--exclude-sites: no site \"\(n)\" among the files (sites: \(stems.joined(separator: ", ")))")
        }
        let kept = files.filter { !names.contains($0.deletingPathExtension().lastPathComponent) }
        guard !kept.isEmpty else { throw UsageError("every site would be excluded by --exclude-sites; nothing would be fitted") }
        let base = inProcess ? Self.inProcess(files: kept) : try LocalAgents(files: kept).federation
        let federation = Federation(channels: base.channels,
                                    exclusions: names.map { SiteExclusion(site: $0, reason: "excluded by the analyst (--exclude-sites)") })
        federation.onClose = { base.close() }
        return federation
    }

    /// Agents in this process, reached through protocol lines.
    static func inProcess(files: [URL]) -> Federation {
        Federation(channels: files.map { url in
            let site = url.deletingPathExtension().lastPathComponent
            let service = SiteService(site: site, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
            return InProcessChannel(site: site) { service.handle(line: $0) }
        })
    }
}

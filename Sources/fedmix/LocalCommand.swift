import Foundation
import CommandKit
import Coordinator
import Protocol
import SiteAgent
import Math

/// `fedmix local PATH...`: one site per CSV file.
enum LocalCommand {
    static let paths = Positional("PATH", help: "CSV files, or folders of CSV files; each file is one site (its name is the file's stem); with --split-by, one CSV of pooled rows",
                                  arity: .oneOrMore, missing: "give at least one CSV file or folder of CSV files")

    static let command = Command(
        "local", abstract: "Each CSV file (or each CSV in a folder) is one site; fits over local agents (mutual TLS on loopback).",
        arguments: [paths],
        options: [Opt.requiredFormula] + Opt.model + Opt.missingData + Opt.imputation + Opt.result + [Opt.confint, Opt.inProcess, Opt.excludeSites, Opt.quiet, Opt.cluster, Opt.marginal, Opt.splitBy, Opt.report],
        notHere: ["dataset": "fedmix local serves each CSV file as the one dataset of its site; --dataset goes with --sites (fit, describe, explain, sensitivity)"],
        run: run)

    static func run(_ a: ParsedArguments) throws -> Int32 {
        let formula = try a.require(Opt.requiredFormula)
        var options = try singleFitOptions(a)
        options.confint = a.value(Opt.confint)
        let missing = missingDataStrategy(a)
        try Analysis.validate(formula: formula, options: options, missingData: missing)
        let imputation = try imputationSettings(a)
        if let imputation { _ = try MultipleImputation.validate(imputation, analysisFormula: formula) }
        let services: [SiteService]
        if let column = a.value(Opt.splitBy) {
            services = try split(a.positionals(paths), by: column)
        } else {
            services = try siteFiles(a.positionals(paths)).map(LocalFederation.service)
        }
        let federation = try LocalFederation.start(services: services, inProcess: a.flag(Opt.inProcess), excluding: a.value(Opt.excludeSites) ?? [],
                                                   quiet: a.flag(Opt.quiet))
        defer { federation.close() }
        let result = try fitMaybeImputed(federation, dataset: "data", formula: formula, options: options, missingData: missing, imputation: imputation)
        try emit(result, a)
        try writeReport(result, a, title: "fedmix local: \(formula)")
        return 0
    }

    /// `--split-by COLUMN`: one CSV of pooled rows, one site per value of
    /// COLUMN (numbers as R prints them), sites in the byte order of their names.
    static func split(_ paths: [String], by column: String) throws -> [SiteService] {
        guard paths.count == 1 else {
            throw UsageError("--split-by splits one CSV file of pooled rows into sites; give one file (got \(paths.count))")
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: paths[0], isDirectory: &isDir), !isDir.boolValue else {
            throw UsageError("\(paths[0]): no such file (--split-by needs one CSV file)")
        }
        let table = try CSVReader.read(path: paths[0])
        guard let key = table.column(named: column) else {
            throw UsageError("--split-by \(column): the file has no column \(column) (columns: \(table.columns.map(\.name).joined(separator: ", ")))")
        }
        var rows: [String: [Int]] = [:]
        var missing = 0
        for i in 0..<table.rowCount {
            if key.isMissing(i) { missing += 1; continue }
            let name: String
            switch key.data {
            case .text(let v): name = v[i]!
            case .numeric(let v): name = RNumberFormat.format(v[i]!)
            }
            rows[name, default: []].append(i)
        }
        guard missing == 0 else {
            throw UsageError("--split-by \(column): \(missing) row\(missing == 1 ? " has" : "s have") no value in \(column), so no site; fill or remove them")
        }
        return rows.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }.map { name in
            let picked = rows[name]!
            let columns = table.columns.map { c -> DataTable.Column in
                switch c.data {
                case .numeric(let v): return DataTable.Column(name: c.name, data: .numeric(picked.map { v[$0] }))
                case .text(let v): return DataTable.Column(name: c.name, data: .text(picked.map { v[$0] }))
                }
            }
            return SiteService(site: name, datasets: ["data": .table(DataTable(columns: columns, rowCount: picked.count))],
                               siteColumn: nil, policy: .off)
        }
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
        try start(services: files.map(service), inProcess: inProcess, excluding: names, quiet: quiet)
    }

    /// The site of one CSV file (its name is the file's stem).
    static func service(_ url: URL) -> SiteService {
        SiteService(site: url.deletingPathExtension().lastPathComponent, datasets: ["data": .csv(path: url.path, types: [:])], policy: .off)
    }

    /// One agent per service, over loopback TLS or in this process.
    static func start(services: [SiteService], inProcess: Bool, excluding names: [String] = [], quiet: Bool = true) throws -> Federation {
        let federation = try start(services: services, inProcess: inProcess, excluding: names)
        federation.reporter = .standardError(quiet: quiet)
        return federation
    }

    private static func start(services: [SiteService], inProcess: Bool, excluding names: [String]) throws -> Federation {
        guard !names.isEmpty else { return inProcess ? Self.inProcess(services) : try LocalAgents(services: services).federation }
        let stems = services.map(\.site)
        for n in names where !stems.contains(n) {
            throw UsageError("--exclude-sites: no site \"\(n)\" among the files (sites: \(stems.joined(separator: ", ")))")
        }
        let kept = services.filter { !names.contains($0.site) }
        guard !kept.isEmpty else { throw UsageError("every site would be excluded by --exclude-sites; nothing would be fitted") }
        let base = inProcess ? Self.inProcess(kept) : try LocalAgents(services: kept).federation
        let federation = Federation(channels: base.channels,
                                    exclusions: names.map { SiteExclusion(site: $0, reason: "excluded by the analyst (--exclude-sites)") })
        federation.onClose = { base.close() }
        return federation
    }

    static func inProcess(_ services: [SiteService]) -> Federation {
        Federation(channels: services.map { service in InProcessChannel(site: service.site) { service.handle(line: $0) } })
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

import Foundation
import Coordinator
import Protocol
import SiteAgent
import Math

/// `fedmix local PATH...`: one site per CSV file.
enum LocalCommand {
    static func run(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: ["formula", "format", "output", "dataset", "family", "link", "nagq", "weights", "exclude-sites-missing-above", "missing-indicator", "filter"], flags: ["ml", "in-process"])
        guard !a.positionals.isEmpty else { throw UsageError("give at least one CSV file or folder of CSV files") }
        let formula = try a.require("formula")
        let files = try siteFiles(a.positionals)
        let federation = try LocalFederation.start(files: files, inProcess: a.has("in-process"))
        defer { federation.close() }
        let result = try Analysis.fit(federation, dataset: "data", formula: formula,
                                      options: try fitOptions(a), missingData: try missingDataStrategy(a))
        try emit(result, format: a.value("format") ?? "text", output: a.value("output"))
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
    static func start(files: [URL], inProcess: Bool) throws -> Federation {
        inProcess ? Self.inProcess(files: files) : try LocalAgents(files: files).federation
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

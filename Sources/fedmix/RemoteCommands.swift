import Foundation
import Coordinator
import Protocol
import SiteAgent

/// `fedmix fit` and `fedmix describe` against agents listed in a sites file.
enum RemoteCommands {
    static func fit(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: ["sites", "dataset", "formula", "format", "output", "family", "link", "nagq", "weights", "exclude-sites-missing-above", "missing-indicator", "filter"], flags: ["ml", "dry-run"])
        let sites = try SitesFile.load(path: try a.require("sites"))
        let federation = try sites.connect()
        defer { federation.close() }
        if a.has("dry-run") { print(try ExplainCommand.text(federation, a), terminator: ""); return 0 }
        let result = try Analysis.fit(federation, dataset: try a.require("dataset"), formula: try a.require("formula"),
                                      options: try fitOptions(a), missingData: try missingDataStrategy(a))
        try emit(result, format: a.value("format") ?? "text", output: a.value("output"))
        return 0
    }

    static func describe(_ args: [String]) throws -> Int32 {
        let a = try Arguments(args, options: ["sites", "dataset", "format"], flags: [])
        let sites = try SitesFile.load(path: try a.require("sites"))
        let federation = try sites.connect()
        defer { federation.close() }
        let d = try Analysis.describe(federation, dataset: try a.require("dataset"))
        if a.value("format") == "json" {
            let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(d), as: UTF8.self))
        } else {
            print(DescribeReport.text(d))
        }
        return 0
    }
}

/// `fedmix certs init DIR` and `fedmix certs issue --ca DIR --name NAME --out DIR`.
enum CertsCommand {
    static func run(_ args: [String]) throws -> Int32 {
        guard let sub = args.first else { throw UsageError("fedmix certs init DIR | fedmix certs issue --ca DIR --name NAME --out DIR") }
        let a = try Arguments(Array(args.dropFirst()), options: ["ca", "name", "out", "days"], flags: ["force"])
        switch sub {
        case "init":
            guard let dir = a.positionals.first else { throw UsageError("fedmix certs init DIR") }
            try Certificates.createAuthority(directory: dir, days: Int(a.value("days") ?? "3650") ?? 3650, overwrite: a.has("force"))
            print("wrote \(dir)/ca.pem (give to every agent and coordinator) and \(dir)/ca.key (keep offline; mode 0600)")
        case "issue":
            let out = try a.require("out"), name = try a.require("name")
            try Certificates.issue(caDirectory: try a.require("ca"), name: name, outDirectory: out,
                                   days: Int(a.value("days") ?? "825") ?? 825)
            print("wrote \(out)/cert.pem and \(out)/key.pem (mode 0600) for \(name)")
        default: throw UsageError("unknown certs command \"\(sub)\"; use init or issue")
        }
        return 0
    }
}

// A small command-line parser: options with values (`--formula F`, also
// `--formula=F`), flags (`--ml`) and positional arguments. Written here
// rather than taken from a package so the supply chain stays readable.

public struct UsageError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct Arguments: Sendable {
    public var positionals: [String] = []
    public var values: [String: [String]] = [:]
    public var flags: Set<String> = []

    /// Parses `args` given the options that take a value and the flags.
    public init(_ args: [String], options: Set<String>, flags: Set<String>) throws {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { positionals.append(contentsOf: args[(i + 1)...]); break }
            if a.hasPrefix("--") {
                var name = String(a.dropFirst(2)), value: String? = nil
                if let eq = name.firstIndex(of: "=") { value = String(name[name.index(after: eq)...]); name = String(name[..<eq]) }
                if options.contains(name) {
                    if value == nil {
                        guard i + 1 < args.count else { throw UsageError("option --\(name) needs a value") }
                        i += 1; value = args[i]
                    }
                    values[name, default: []].append(value!)
                } else if flags.contains(name) {
                    guard value == nil else { throw UsageError("flag --\(name) takes no value") }
                    self.flags.insert(name)
                } else {
                    let known = (options.union(flags)).sorted().map { "--\($0)" }.joined(separator: ", ")
                    throw UsageError("unknown option --\(name) (known: \(known))")
                }
            } else {
                positionals.append(a)
            }
            i += 1
        }
    }

    public func value(_ name: String) -> String? { values[name]?.last }
    public func require(_ name: String) throws -> String {
        guard let v = value(name) else { throw UsageError("missing required option --\(name)") }
        return v
    }
    public func has(_ flag: String) -> Bool { flags.contains(flag) }
}

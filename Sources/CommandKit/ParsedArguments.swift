// The command line of one command, parsed against its declarations, with a
// record of what the command read.

import Foundation

/// A command's arguments, converted and validated against its declarations.
///
/// Every accessor records that the command read the option (or positional
/// argument). After the command returns, `Program` checks the record: an
/// option the user gave that the command never read is reported as an
/// internal error (it was parsed and dropped), and in debug builds (or with
/// FEDMIX_CHECK_OPTIONS=1) so is any declared option the path never read,
/// given or not. That is what makes "parsed and never used" a test failure
/// instead of a silent wrong answer: a command must use each option, or
/// refuse it explicitly (`refuse(_:_:)`) on the paths where it does not apply.
public final class ParsedArguments {
    /// "fedmix local", for messages.
    public let commandPath: String
    let command: Command
    private var values: [String: [(text: String, value: any Sendable)]] = [:]
    private var flags: Set<String> = []
    private var positionalValues: [String: [String]] = [:]
    private(set) var read: Set<String> = []

    /// Parses `args` (what follows the command's name).
    public init(_ args: [String], command: Command, path: String) throws {
        self.command = command
        self.commandPath = path
        var declared: [String: OptionInfo] = [:]
        for o in command.options { declared[o.info.name] = o.info }
        var positionals: [String] = []
        var i = 0, afterDashes = false
        while i < args.count {
            let token = args[i]
            defer { i += 1 }
            if afterDashes { positionals.append(token); continue }
            if token == "--" { afterDashes = true; continue }
            if token.hasPrefix("--") {
                var name = String(token.dropFirst(2)), inline: String? = nil
                if let eq = name.firstIndex(of: "=") { inline = String(name[name.index(after: eq)...]); name = String(name[..<eq]) }
                guard let info = declared[name] else { throw Self.unknown("--" + name, command: command, declared: declared) }
                if info.isFlag {
                    if inline != nil { throw ArgumentError("--\(name) is a flag and takes no value (\(token))") }
                    flags.insert(name)
                    continue
                }
                let text: String
                if let inline { text = inline } else {
                    guard i + 1 < args.count else { throw ArgumentError("--\(name) needs a value: \(info.label)") }
                    text = args[i + 1]
                    if text.hasPrefix("--"), declared[String(text.dropFirst(2).prefix { $0 != "=" })] != nil || text == "--help" {
                        throw ArgumentError("--\(name) needs a value: \(info.label) (got the option \(text))")
                    }
                    i += 1
                }
                let value: any Sendable
                do { value = try info.convert!(text) } catch let e as InvalidValue {
                    throw ArgumentError("--\(name) \(e.reason) (got \"\(text)\")" + (e.suggestion.map { "; did you mean \($0)?" } ?? ""))
                }
                if let earlier = values[name]?.first, !info.repeatable {
                    throw ArgumentError("--\(name) was given twice (\"\(earlier.text)\" and \"\(text)\"); give it once")
                }
                values[name, default: []].append((text, value))
            } else if token.count > 1, token.hasPrefix("-"), Double(token) == nil {
                throw Self.unknown(token, command: command, declared: declared)
            } else {
                positionals.append(token)
            }
        }
        try assign(positionals)
        for o in command.options where o.info.required && values[o.info.name] == nil {
            throw ArgumentError("missing required option \(o.info.label)")
        }
    }

    /// Hands the positional arguments to the declared ones, in order.
    private func assign(_ tokens: [String]) throws {
        var rest = tokens[...]
        for p in command.arguments {
            switch p.arity {
            case .one:
                guard let t = rest.first else { throw ArgumentError(p.missing ?? "missing \(p.name): \(p.help)") }
                positionalValues[p.name] = [t]; rest = rest.dropFirst()
            case .optional:
                if let t = rest.first { positionalValues[p.name] = [t]; rest = rest.dropFirst() }
            case .oneOrMore, .any:
                if p.arity == .oneOrMore && rest.isEmpty { throw ArgumentError(p.missing ?? "missing \(p.name): \(p.help)") }
                positionalValues[p.name] = Array(rest); rest = []
            }
        }
        if let extra = rest.first {
            let takes = command.arguments.isEmpty ? "takes no arguments besides options"
                : "takes \(command.arguments.map(\.label).joined(separator: " "))"
            throw ArgumentError("unexpected argument \"\(extra)\" (\(commandPath) \(takes))")
        }
    }

    static func unknown(_ option: String, command: Command, declared: [String: OptionInfo]) -> ArgumentError {
        let name = option.hasPrefix("--") ? String(option.dropFirst(2)) : option
        if let why = command.notHere[name] { return ArgumentError("\(option) is not an option of this command: \(why)") }
        if let near = nearest(name.trimmingCharacters(in: CharacterSet(charactersIn: "-")), among: Array(declared.keys).sorted()) {
            return ArgumentError("unknown option \(option); did you mean --\(near)?")
        }
        return ArgumentError("unknown option \(option)")
    }

    // MARK: reading

    private func mark(_ info: OptionInfo) {
        precondition(command.options.contains { $0.info.name == info.name },
                     "\(commandPath) reads --\(info.name), which it does not declare")
        read.insert(info.name)
    }

    /// The option's value, or nil when it was not given.
    public func value<T>(_ option: Option<T>) -> T? {
        mark(option.info)
        return values[option.info.name]?.last.map { $0.value as! T }
    }

    /// The option's value, or `defaultValue` when it was not given.
    public func value<T>(_ option: Option<T>, default defaultValue: T) -> T {
        value(option) ?? defaultValue
    }

    /// The option's value; a usage error names it when it was not given.
    public func require<T>(_ option: Option<T>) throws -> T {
        guard let v = value(option) else { throw ArgumentError("missing required option \(option.info.label)") }
        return v
    }

    /// Every value of a repeatable option, in order.
    public func values<T>(_ option: Option<T>) -> [T] {
        mark(option.info)
        return (values[option.info.name] ?? []).map { $0.value as! T }
    }

    /// Whether the flag was given.
    public func flag(_ flag: Flag) -> Bool {
        mark(flag.info)
        return flags.contains(flag.info.name)
    }

    /// The argument of a `.one` or `.optional` positional.
    public func positional(_ p: Positional) -> String? { positionals(p).first }

    /// The arguments of a positional.
    public func positionals(_ p: Positional) -> [String] {
        precondition(command.arguments.contains { $0.name == p.name }, "\(commandPath) reads \(p.name), which it does not declare")
        read.insert("<\(p.name)>")
        return positionalValues[p.name] ?? []
    }

    /// Whether the user gave the option (or flag). Does not count as reading it.
    public func isGiven(_ option: any OptionDeclaration) -> Bool {
        values[option.info.name] != nil || flags.contains(option.info.name)
    }

    /// Reads options that do not apply on the command's current path and
    /// refuses them if given: "--formula cannot be used with --model (…)".
    public func refuse(_ options: [any OptionDeclaration], _ context: String) throws {
        for o in options { mark(o.info) }
        let given = options.filter(isGiven).map { "--" + $0.info.name }
        guard !given.isEmpty else { return }
        throw ArgumentError("\(listed(given, or: false)) cannot be used \(context)")
    }

    /// Reads positional arguments that do not apply on this path and refuses them if given.
    public func refuse(_ p: Positional, _ context: String) throws {
        let given = positionals(p)
        guard let first = given.first else { return }
        throw ArgumentError("\(p.name) arguments (\"\(first)\"\(given.count > 1 ? ", …" : "")) cannot be used \(context)")
    }

    // MARK: the record

    /// Options the user gave that the command never read.
    public var givenButUnread: [String] {
        command.options.map(\.info.name).filter { isGivenName($0) && !read.contains($0) }.map { "--" + $0 }
            + command.arguments.filter { !(positionalValues[$0.name] ?? []).isEmpty && !read.contains("<\($0.name)>") }.map(\.name)
    }

    /// Declared options (and positional arguments) the command never read.
    public var declaredButUnread: [String] {
        command.options.map(\.info.name).filter { !read.contains($0) }.map { "--" + $0 }
            + command.arguments.filter { !read.contains("<\($0.name)>") }.map(\.name)
    }

    private func isGivenName(_ name: String) -> Bool { values[name] != nil || flags.contains(name) }
}

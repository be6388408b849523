// A small declarative command layer for fedmix and fedmix-agent. Each
// command declares its options once (name, value name, help, flag or value,
// repeatable, how a value is converted); parsing, validation, help and usage
// errors all come from those declarations, and the parsed arguments record
// which options the command read, so an option that is parsed and then
// dropped is detected (Program.swift). Written here rather than taken from a
// package so that a hospital's security review can read the whole supply chain.

/// Why a value was refused, as words that follow the option's name
/// ("must be a whole number from 1 to 25").
public struct InvalidValue: Error, Sendable {
    public var reason: String
    /// A near allowed value, for "did you mean ...?".
    public var suggestion: String?
    public init(_ reason: String, suggestion: String? = nil) { self.reason = reason; self.suggestion = suggestion }
}

/// How the text of an option's value becomes its value. Declared with the
/// option, so that every value is converted and validated in one place, at
/// parse time, before a command does any work.
public struct ValueParser<Value: Sendable>: Sendable {
    /// Converts the text; throws `InvalidValue` saying what is expected.
    public let parse: @Sendable (String) throws -> Value
    /// The allowed values, when there are few (for help and "did you mean").
    public let choices: [String]?

    public init(choices: [String]? = nil, _ parse: @escaping @Sendable (String) throws -> Value) {
        self.parse = parse
        self.choices = choices
    }
}

extension ValueParser where Value == String {
    /// Any text.
    public static var string: ValueParser<String> { ValueParser { $0 } }
}

extension ValueParser where Value == Int {
    /// A whole number, optionally within a range.
    public static func integer(in range: ClosedRange<Int>? = nil) -> ValueParser<Int> {
        ValueParser { text in
            let reason = range.map { r in r.upperBound == Int.max ? "must be a whole number of at least \(r.lowerBound)"
                : "must be a whole number from \(r.lowerBound) to \(r.upperBound)" } ?? "must be a whole number"
            guard let n = Int(text.replacingOccurrences(of: "_", with: "")) else { throw InvalidValue(reason) }
            if let range, !range.contains(n) { throw InvalidValue(reason) }
            return n
        }
    }
}

extension ValueParser where Value == UInt64 {
    /// A non-negative whole number (seeds).
    public static var unsigned: ValueParser<UInt64> {
        ValueParser { guard let n = UInt64($0) else { throw InvalidValue("must be a non-negative whole number") }; return n }
    }
}

extension ValueParser where Value == Double {
    /// A finite number, optionally positive.
    public static func number(positive: Bool = false) -> ValueParser<Double> {
        ValueParser { text in
            guard let x = Double(text), x.isFinite, !positive || x > 0 else {
                throw InvalidValue(positive ? "must be a positive number" : "must be a number")
            }
            return x
        }
    }
}

extension ValueParser {
    /// One of a few words, each standing for a value.
    public static func oneOf(_ cases: [(String, Value)]) -> ValueParser<Value> {
        let names = cases.map(\.0)
        let table = cases
        return ValueParser(choices: names) { text in
            if let hit = table.first(where: { $0.0 == text }) { return hit.1 }
            throw InvalidValue("must be \(listed(names, or: true))", suggestion: nearest(text, among: names))
        }
    }

    /// A list separated by commas, each item converted by `item`.
    public static func list<Item: Sendable>(of item: ValueParser<Item>, what: String) -> ValueParser<Value> where Value == [Item] {
        ValueParser(choices: nil) { text in
            let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard !parts.isEmpty, !parts.contains(where: { $0.isEmpty }) else { throw InvalidValue("takes \(what), separated by commas") }
            return try parts.map { p in
                do { return try item.parse(p) } catch let e as InvalidValue {
                    throw InvalidValue("takes \(what), separated by commas: \"\(p)\" \(e.reason)")
                }
            }
        }
    }
}

extension ValueParser where Value: RawRepresentable & CaseIterable, Value.RawValue == String {
    /// One of the cases of a string enumeration, by raw value.
    public static var cases: ValueParser<Value> { .oneOf(Value.allCases.map { ($0.rawValue, $0) }) }
}

/// "a, b or c" (or "a, b and c").
public func listed(_ words: [String], or: Bool) -> String {
    guard words.count > 1 else { return words.first ?? "" }
    return words.dropLast().joined(separator: ", ") + (or ? " or " : " and ") + words.last!
}

/// What a command declares about one option. Built by `Option` and `Flag`.
public struct OptionInfo: Sendable {
    /// The name without dashes: "weights" for `--weights`.
    public let name: String
    /// The placeholder of the value in help ("VAR"); nil for a flag.
    public let valueName: String?
    public let help: String
    /// May be given more than once (each value is kept); otherwise giving
    /// it twice is an error rather than a silent choice of one value.
    public let repeatable: Bool
    /// Missing is a usage error, reported before the command runs.
    public let required: Bool
    let convert: (@Sendable (String) throws -> any Sendable)?

    public var isFlag: Bool { valueName == nil }
    /// `--name VALUE` or `--name`.
    public var label: String { valueName.map { "--\(name) \($0)" } ?? "--\(name)" }
}

/// An option or a flag, as a command lists it.
public protocol OptionDeclaration: Sendable {
    var info: OptionInfo { get }
}

/// An option with a value (`--nagq 9`, `--nagq=9`), converted to `Value`.
public struct Option<Value: Sendable>: OptionDeclaration {
    public let info: OptionInfo
    public init(_ name: String, value valueName: String, help: String, repeatable: Bool = false, required: Bool = false,
                _ parser: ValueParser<Value>) {
        info = OptionInfo(name: name, valueName: valueName, help: help, repeatable: repeatable, required: required,
                          convert: { try parser.parse($0) })
    }
}

extension Option where Value == String {
    /// An option whose value is any text.
    public init(_ name: String, value valueName: String, help: String, repeatable: Bool = false, required: Bool = false) {
        self.init(name, value: valueName, help: help, repeatable: repeatable, required: required, .string)
    }
}

/// An option without a value (`--ml`).
public struct Flag: OptionDeclaration {
    public let info: OptionInfo
    public init(_ name: String, help: String) {
        info = OptionInfo(name: name, valueName: nil, help: help, repeatable: false, required: false, convert: nil)
    }
}

/// A positional argument.
public struct Positional: Sendable {
    public enum Arity: Sendable { case one, optional, oneOrMore, any }
    /// The placeholder in help ("PATH").
    public let name: String
    public let help: String
    public let arity: Arity
    /// Said when a required argument is missing (default: "missing NAME").
    public let missing: String?
    public init(_ name: String, help: String, arity: Arity = .one, missing: String? = nil) {
        self.name = name; self.help = help; self.arity = arity; self.missing = missing
    }
    /// `PATH`, `[PATH]`, `PATH...`, `[PATH...]`.
    public var label: String {
        switch arity {
        case .one: return name
        case .optional: return "[\(name)]"
        case .oneOrMore: return "\(name)..."
        case .any: return "[\(name)...]"
        }
    }
}

/// One command: what it takes, its help, and what it does.
public struct Command: Sendable {
    public let name: String
    /// One line for the program's list of commands.
    public let abstract: String
    /// What follows the command's name in its usage line; generated from the
    /// declarations when nil.
    public let synopsis: String?
    /// Paragraphs printed after the options in `--help`.
    public let discussion: String?
    public let arguments: [Positional]
    public let options: [any OptionDeclaration]
    /// Options that other commands have, with why they are not options here:
    /// the usage error says so instead of just "unknown option".
    public let notHere: [String: String]
    /// Runs the command; its return value is the exit status.
    public let run: @Sendable (ParsedArguments) throws -> Int32

    public init(_ name: String, abstract: String, synopsis: String? = nil, discussion: String? = nil,
                arguments: [Positional] = [], options: [any OptionDeclaration], notHere: [String: String] = [:],
                run: @escaping @Sendable (ParsedArguments) throws -> Int32) {
        self.name = name; self.abstract = abstract; self.synopsis = synopsis; self.discussion = discussion
        self.arguments = arguments; self.options = options; self.notHere = notHere; self.run = run
        var seen = Set<String>()
        for o in options {
            precondition(o.info.name != "help", "\(name): --help is provided by CommandKit")
            precondition(seen.insert(o.info.name).inserted, "\(name) declares --\(o.info.name) twice")
        }
    }
}

/// Commands under a common word (`fedmix certs init|issue`, `fedmix-agent audit list|show|...`).
public struct CommandGroup: Sendable {
    public let name: String
    public let abstract: String
    public let discussion: String?
    public let commands: [Command]
    /// Runtime errors of its commands read "program group: error: ..." (as
    /// `fedmix-agent audit` always has) instead of "program: error: ...".
    public let namesItselfInErrors: Bool
    public init(_ name: String, abstract: String, discussion: String? = nil, namesItselfInErrors: Bool = false, commands: [Command]) {
        self.name = name; self.abstract = abstract; self.discussion = discussion
        self.namesItselfInErrors = namesItselfInErrors; self.commands = commands
    }
}

/// A command or a group of commands.
public enum Entry: Sendable {
    case command(Command)
    case group(CommandGroup)
    var name: String {
        switch self { case .command(let c): return c.name; case .group(let g): return g.name }
    }
}

/// Errors that are the user's to fix by changing the command line: exit
/// status 2, no "error:" prefix. Other modules' usage errors conform too.
public protocol UsageFailure: Error {
    var usageMessage: String { get }
}

/// A usage error found by CommandKit or thrown by a command.
public struct ArgumentError: UsageFailure, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var usageMessage: String { message }
    public var description: String { message }
}

/// The candidate nearest to `word` by edit distance (or by prefix), if near enough to be a likely misspelling.
public func nearest(_ word: String, among candidates: [String]) -> String? {
    let w = Array(word.lowercased())
    var best: (String, Int)? = nil
    for c in candidates {
        let lc = c.lowercased()
        var d = editDistance(w, Array(lc))
        if w.count >= 3 && (lc.hasPrefix(String(w)) || String(w).hasPrefix(lc)) { d = min(d, 1) }
        if d <= max(1, min(3, c.count / 3)), best == nil || d < best!.1 { best = (c, d) }
    }
    return best?.0
}

/// Levenshtein distance, with a transposition of neighbours counting 1.
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev2 = [Int](repeating: 0, count: b.count + 1)
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { cur[j] = min(cur[j], prev2[j - 2] + 1) }
        }
        (prev2, prev, cur) = (prev, cur, prev2)
    }
    return prev[b.count]
}

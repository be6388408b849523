// A program: its commands, the top-level usage, dispatch, help, exit
// statuses, and the check that a command read every option it declared.

import Foundation

/// An executable's commands. `run` is its whole `main`.
///
/// Exit statuses: 0 success (or help), what a command returns, 2 for a usage
/// error (unknown command or option, bad value, any `UsageFailure`), 1 for
/// any other error, 70 (EX_SOFTWARE) when a command left an option unread.
public struct Program: Sendable {
    public let name: String
    /// The first line of the top-level usage ("fedmix 1.2: ...").
    public let title: String
    /// What `--version` prints.
    public let version: String
    public let entries: [Entry]
    /// Printed after the list of commands.
    public let footer: String?

    public init(name: String, title: String, version: String, entries: [Entry], footer: String? = nil) {
        self.name = name; self.title = title; self.version = version; self.entries = entries; self.footer = footer
    }

    /// Whether a command must read every option it declares on every
    /// successful path: in debug builds (what the tests run), or with
    /// FEDMIX_CHECK_OPTIONS=1 in any build.
    public static var checksEveryDeclaredOption: Bool {
        #if DEBUG
        return ProcessInfo.processInfo.environment["FEDMIX_CHECK_OPTIONS"] != "0"
        #else
        return ProcessInfo.processInfo.environment["FEDMIX_CHECK_OPTIONS"] == "1"
        #endif
    }

    /// Runs the command line (without the program's own name); returns the exit status.
    public func run(_ args: [String]) -> Int32 {
        guard let first = args.first else { print(usage()); return 0 }
        switch first {
        case "--version", "version": print(version); return 0
        case "help", "--help", "-h":
            guard args.count > 1 else { print(usage()); return 0 }
            return run(Array(args.dropFirst()) + ["--help"])
        default: break
        }
        guard let entry = entries.first(where: { $0.name == first }) else {
            var message = "unknown command \"\(first)\""
            if let near = nearest(first, among: entries.map(\.name)) { message += "; did you mean \(near)?" }
            return usageError(name, message, hint: "Run \(name) help for the commands.")
        }
        let rest = Array(args.dropFirst())
        switch entry {
        case .command(let c):
            return execute(c, path: "\(name) \(c.name)", errorPrefix: name, rest)
        case .group(let g):
            guard let sub = rest.first, !sub.hasPrefix("-") || sub == "--help" || sub == "-h" else {
                FileHandle.standardError.write(Data("\(name) \(g.name): give a command: \(listed(g.commands.map(\.name), or: true))\n\n\(groupUsage(g))\n".utf8))
                return 2
            }
            if sub == "--help" || sub == "-h" || sub == "help" {
                if sub == "help", rest.count > 1 { return run([g.name, rest[1], "--help"]) }
                print(groupUsage(g)); return 0
            }
            guard let c = g.commands.first(where: { $0.name == sub }) else {
                var message = "unknown \(g.name) command \"\(sub)\"; use \(listed(g.commands.map(\.name), or: true))"
                if let near = nearest(sub, among: g.commands.map(\.name)) { message += " (did you mean \(near)?)" }
                return usageError("\(name) \(g.name)", message, hint: "Run \(name) \(g.name) --help for its commands.")
            }
            return execute(c, path: "\(name) \(g.name) \(c.name)", errorPrefix: g.namesItselfInErrors ? "\(name) \(g.name)" : name,
                           Array(rest.dropFirst()))
        }
    }

    /// Parses, runs, and checks what the command read.
    func execute(_ command: Command, path: String, errorPrefix: String, _ args: [String]) -> Int32 {
        if args.prefix(while: { $0 != "--" }).contains(where: { $0 == "--help" || $0 == "-h" }) {
            print(help(command, path: path)); return 0
        }
        let parsed: ParsedArguments
        let status: Int32
        do {
            parsed = try ParsedArguments(args, command: command, path: path)
            status = try command.run(parsed)
        } catch let e as ArgumentError {
            return usageError(path, e.message, hint: "Run \(path) --help for its options.")
        } catch let e as UsageFailure {
            return usageError(path, e.usageMessage, hint: nil)
        } catch {
            FileHandle.standardError.write(Data("\(errorPrefix): error: \(error)\n".utf8))
            return 1
        }
        let dropped = parsed.givenButUnread
        if !dropped.isEmpty {
            FileHandle.standardError.write(Data("\(path): internal error: \(listed(dropped, or: false)) accepted but never used; the result above ignored \(dropped.count == 1 ? "it" : "them"). Please report this.\n".utf8))
            return 70
        }
        if status == 0 && Self.checksEveryDeclaredOption {
            let unread = parsed.declaredButUnread
            if !unread.isEmpty {
                FileHandle.standardError.write(Data("\(path): internal error: declares \(listed(unread, or: false)) but this path never read \(unread.count == 1 ? "it" : "them") (use or refuse every declared option)\n".utf8))
                return 70
            }
        }
        return status
    }

    func usageError(_ path: String, _ message: String, hint: String?) -> Int32 {
        FileHandle.standardError.write(Data("\(path): \(message)\n\(hint.map { $0 + "\n" } ?? "")".utf8))
        return 2
    }

    // MARK: help

    /// The top-level usage: every command's usage line and abstract.
    public func usage() -> String {
        var out = title + "\n\nUsage:\n"
        for e in entries {
            switch e {
            case .command(let c): out += commandLine(c, path: "\(name) \(c.name)")
            case .group(let g): for c in g.commands { out += commandLine(c, path: "\(name) \(g.name) \(c.name)") }
            }
        }
        out += "  \(name) --version\n"
        out += "\nRun \(name) COMMAND --help (or \(name) help COMMAND) for a command's options."
        if let footer { out += "\n" + footer }
        return out
    }

    private func commandLine(_ c: Command, path: String) -> String {
        "  \(path) \(synopsis(c))\n" + wrap(c.abstract, indent: 6)
    }

    /// A group's commands with their usage lines.
    public func groupUsage(_ g: CommandGroup) -> String {
        var out = "\(name) \(g.name): \(g.abstract)\n\nUsage:\n"
        for c in g.commands { out += commandLine(c, path: "\(name) \(g.name) \(c.name)") }
        out += "\nRun \(name) \(g.name) COMMAND --help for a command's options."
        if let d = g.discussion { out += "\n\n" + d }
        return out
    }

    /// What follows a command's name in its usage line.
    public func synopsis(_ c: Command) -> String {
        if let s = c.synopsis { return s }
        var parts = c.arguments.map(\.label)
        parts += c.options.filter(\.info.required).map(\.info.label)
        if c.options.contains(where: { !$0.info.required }) { parts.append("[options]") }
        return parts.joined(separator: " ")
    }

    /// A command's `--help`: usage, abstract, arguments, options, discussion.
    public func help(_ c: Command, path: String) -> String {
        var out = "Usage: \(path) \(synopsis(c))\n\n" + wrap(c.abstract, indent: 0)
        if !c.arguments.isEmpty {
            out += "\nArguments:\n"
            for p in c.arguments { out += row(p.label, p.help) }
        }
        out += "\nOptions:\n"
        for o in c.options {
            var text = o.info.help
            if o.info.required { text += " (required)" }
            if o.info.repeatable { text += " (repeatable)" }
            out += row(o.info.label, text)
        }
        out += row("-h, --help", "show this help")
        if let d = c.discussion { out += "\n" + d + "\n" }
        return String(out.dropLast())
    }

    private func row(_ left: String, _ text: String) -> String {
        let column = 32
        let head = "  " + left
        let body = wrap(text, indent: column)
        if head.count + 2 <= column { return head + String(repeating: " ", count: column - head.count) + body.dropFirst(column) }
        return head + "\n" + body
    }

    /// Words wrapped at 110 columns, every line indented.
    private func wrap(_ text: String, indent: Int) -> String {
        var lines: [String] = [], line = ""
        for word in text.split(separator: " ", omittingEmptySubsequences: false) {
            if !line.isEmpty && indent + line.count + 1 + word.count > 110 { lines.append(line); line = String(word) }
            else { line += (line.isEmpty ? "" : " ") + word }
        }
        lines.append(line)
        return lines.map { String(repeating: " ", count: indent) + $0 }.joined(separator: "\n") + "\n"
    }
}

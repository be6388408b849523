import Foundation
import XCTest
import CommandKit

/// The command layer itself: parsing against declarations, the record of
/// what a command read (the guard against options parsed and dropped),
/// suggestions, and help generated from the declarations.
final class CommandKitTests: XCTestCase {
    static let count = Option<Int>("count", value: "N", help: "how many", .integer(in: 1...5))
    static let name = Option<String>("name", value: "NAME", help: "a name", repeatable: true)
    static let mode = Option<String>("mode", value: "MODE", help: "fast or slow", .oneOf([("fast", "fast"), ("slow", "slow")]))
    static let loud = Flag("loud", help: "say more")
    static let files = Positional("FILE", help: "input files", arity: .any)

    static func command(_ run: @escaping @Sendable (ParsedArguments) throws -> Int32) -> Command {
        Command("try", abstract: "A command for tests.", arguments: [files], options: [count, name, mode, loud],
                notHere: ["sites": "this command reads files"], run: run)
    }

    func parse(_ args: [String]) throws -> ParsedArguments {
        try ParsedArguments(args, command: Self.command { _ in 0 }, path: "test try")
    }

    func assertUsageError(_ args: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(args), file: file, line: line) { error in
            XCTAssertEqual((error as? ArgumentError)?.message, message, file: file, line: line)
        }
    }

    func testValuesAreConvertedOnceAndReadsAreRecorded() throws {
        let a = try parse(["a.csv", "--count", "3", "--name=x", "--name", "y", "--loud", "--", "--b.csv"])
        XCTAssertEqual(a.givenButUnread, ["--count", "--name", "--loud", "FILE"])
        XCTAssertEqual(a.value(Self.count), 3)
        XCTAssertEqual(a.values(Self.name), ["x", "y"])
        XCTAssertTrue(a.flag(Self.loud))
        XCTAssertEqual(a.givenButUnread, ["FILE"])
        XCTAssertEqual(a.positionals(Self.files), ["a.csv", "--b.csv"])
        XCTAssertEqual(a.givenButUnread, [])
        XCTAssertEqual(a.declaredButUnread, ["--mode"], "declared, not given, never read")
        XCTAssertNil(a.value(Self.mode))
        XCTAssertEqual(a.declaredButUnread, [])
    }

    func testRefusingReadsTheOptionAndNamesIt() throws {
        let a = try parse(["--count", "2", "--loud"])
        XCTAssertThrowsError(try a.refuse([Self.count, Self.loud, Self.mode], "here (for a test)")) { error in
            XCTAssertEqual((error as? ArgumentError)?.message, "--count and --loud cannot be used here (for a test)")
        }
        XCTAssertEqual(a.givenButUnread, [])
        let b = try parse([])
        XCTAssertNoThrow(try b.refuse([Self.count], "here"))
        XCTAssertFalse(b.declaredButUnread.contains("--count"))
    }

    func testUsageErrorsNameTheOption() {
        assertUsageError(["--cont", "2"], "unknown option --cont; did you mean --count?")
        assertUsageError(["--nmae", "x"], "unknown option --nmae; did you mean --name?")
        assertUsageError(["--colour"], "unknown option --colour")
        assertUsageError(["-c"], "unknown option -c")
        assertUsageError(["--sites", "s.json"], "--sites is not an option of this command: this command reads files")
        assertUsageError(["--count", "6"], "--count must be a whole number from 1 to 5 (got \"6\")")
        assertUsageError(["--count", "two"], "--count must be a whole number from 1 to 5 (got \"two\")")
        assertUsageError(["--mode", "fats"], "--mode must be fast or slow (got \"fats\"); did you mean fast?")
        assertUsageError(["--count", "1", "--count", "2"], "--count was given twice (\"1\" and \"2\"); give it once")
        assertUsageError(["--count"], "--count needs a value: --count N")
        assertUsageError(["--count", "--loud"], "--count needs a value: --count N (got the option --loud)")
        assertUsageError(["--loud=yes"], "--loud is a flag and takes no value (--loud=yes)")
    }

    func testPositionalArity() throws {
        let one = Command("one", abstract: "x", arguments: [Positional("ID", help: "an id", missing: "give an ID")], options: []) { _ in 0 }
        XCTAssertThrowsError(try ParsedArguments([], command: one, path: "t one")) {
            XCTAssertEqual(($0 as? ArgumentError)?.message, "give an ID")
        }
        XCTAssertThrowsError(try ParsedArguments(["1", "2"], command: one, path: "t one")) {
            XCTAssertEqual(($0 as? ArgumentError)?.message, "unexpected argument \"2\" (t one takes ID)")
        }
        XCTAssertEqual(try ParsedArguments(["-1"], command: one, path: "t one").positional(one.arguments[0]), "-1", "a negative number is an argument")
    }

    func testNearest() {
        XCTAssertEqual(nearest("weight", among: ["weights", "filter", "format"]), "weights")
        XCTAssertEqual(nearest("fromat", among: ["weights", "filter", "format"]), "format", "a transposition")
        XCTAssertEqual(nearest("exclude", among: ["exclude-sites-missing-above", "missing-indicator"]), "exclude-sites-missing-above", "a prefix")
        XCTAssertNil(nearest("zzz", among: ["weights", "filter"]))
    }

    /// A command whose successful path leaves a declared option unread fails
    /// with status 70 (in debug builds, or with FEDMIX_CHECK_OPTIONS=1); one
    /// that drops an option the user gave fails in any build.
    func testProgramReportsOptionsACommandNeverRead() throws {
        let forgetful = Self.command { a in _ = a.value(Self.count); _ = a.values(Self.name); _ = a.flag(Self.loud); _ = a.positionals(Self.files); return 0 }
        let careful = Self.command { a in _ = a.value(Self.count); _ = a.values(Self.name); _ = a.flag(Self.loud); _ = a.positionals(Self.files); _ = a.value(Self.mode); return 0 }
        let program = { (c: Command) in Program(name: "test", title: "test", version: "test 1", entries: [.command(c)]) }
        XCTAssertEqual(program(careful).run(["try", "--mode", "fast"]), 0)
        XCTAssertEqual(program(forgetful).run(["try", "--mode", "fast"]), 70, "given and dropped")
        if Program.checksEveryDeclaredOption {
            XCTAssertEqual(program(forgetful).run(["try"]), 70, "declared and never read on this path")
        }
        XCTAssertEqual(program(careful).run(["try", "--mdoe", "fast"]), 2)
        XCTAssertEqual(program(careful).run(["tyr"]), 2)
        XCTAssertEqual(program(careful).run(["try", "--help"]), 0)
    }

    func testHelpIsGeneratedFromTheDeclarations() {
        let program = Program(name: "test", title: "test 1: a test", version: "test 1", entries: [.command(Self.command { _ in 0 })])
        let help = program.help(Self.command { _ in 0 }, path: "test try")
        XCTAssertEqual(help, """
            Usage: test try [FILE...] [options]

            A command for tests.

            Arguments:
              [FILE...]                     input files

            Options:
              --count N                     how many
              --name NAME                   a name (repeatable)
              --mode MODE                   fast or slow
              --loud                        say more
              -h, --help                    show this help
            """)
        XCTAssertEqual(program.usage(), """
            test 1: a test

            Usage:
              test try [FILE...] [options]
                  A command for tests.
              test --version

            Run test COMMAND --help (or test help COMMAND) for a command's options.
            """)
    }
}

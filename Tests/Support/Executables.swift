import Foundation

/// The built executables (`fedmix`, `fedmix-agent`) next to the test bundle:
/// `swift build --build-tests` and `swift test` build them into the same
/// folder. The one lookup every test that runs them uses (a target of its
/// own so that every test target can share it).
public enum Executables {
    /// The executable `name` (e.g. "fedmix-agent"), or an error saying how to build it.
    public static func url(_ name: String) throws -> URL {
        var directories: [URL] = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),  // Linux: …/debug/fedmixPackageTests.xctest
            Bundle.main.bundleURL,
            Bundle(for: Marker.self).bundleURL.deletingLastPathComponent(),               // macOS: …/debug/fedmixPackageTests.xctest/
        ]
        if let e = Bundle.main.executableURL { directories.append(e.deletingLastPathComponent()) }
        for d in directories {
            let candidate = d.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        var searched: [String] = []
        for d in directories where !searched.contains(d.standardizedFileURL.path) { searched.append(d.standardizedFileURL.path) }
        throw NotBuilt(description: "\(name) is not built (looked in \(searched.joined(separator: ", "))); run `swift build --build-tests` first")
    }

    public static func fedmix() throws -> URL { try url("fedmix") }
    public static func agent() throws -> URL { try url("fedmix-agent") }

    private final class Marker {}

    /// An executable the tests need is missing.
    public struct NotBuilt: Error, CustomStringConvertible {
        public let description: String
    }

    /// A run did not finish in time.
    public struct TimedOut: Error, CustomStringConvertible {
        public let description: String
    }

    /// What a finished run printed.
    public struct Run: CustomStringConvertible {
        public let arguments: [String]
        public let status: Int32
        public let out: String
        public let err: String
        public var description: String { "\(arguments.joined(separator: " ")) → exit \(status)\nstdout: \(out)\nstderr: \(err)" }
    }

    /// Runs `executable` with `arguments` to completion (output through files,
    /// so a large output cannot block it). FEDMIX_CHECK_OPTIONS=1 makes any
    /// build report a declared option that the command's path never read.
    public static func run(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                    stdin: String? = nil, timeout: Double = 120) throws -> Run {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["FEDMIX_CHECK_OPTIONS"] = "1"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let tag = FileManager.default.temporaryDirectory.appendingPathComponent("fedmix-run-\(UUID().uuidString.prefix(8))").path
        let outPath = tag + ".out", errPath = tag + ".err"
        defer { try? FileManager.default.removeItem(atPath: outPath); try? FileManager.default.removeItem(atPath: errPath) }
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = FileHandle(forWritingAtPath: outPath)!, err = FileHandle(forWritingAtPath: errPath)!
        defer { try? out.close(); try? err.close() }
        p.standardOutput = out
        p.standardError = err
        if let stdin {
            let pipe = Pipe()
            p.standardInput = pipe
            try p.run()
            pipe.fileHandleForWriting.write(Data(stdin.utf8))
            try pipe.fileHandleForWriting.close()
        } else {
            p.standardInput = FileHandle.nullDevice
            try p.run()
        }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        if p.isRunning {
            p.terminate()
            p.waitUntilExit()
            throw TimedOut(description: "\(executable.lastPathComponent) \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        p.waitUntilExit()
        return Run(arguments: [executable.lastPathComponent] + arguments, status: p.terminationStatus,
                   out: try String(contentsOfFile: outPath, encoding: .utf8), err: try String(contentsOfFile: errPath, encoding: .utf8))
    }
}

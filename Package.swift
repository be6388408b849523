// swift-tools-version:6.0
// fedmix: federated mixed-effects models. Only the Swift toolchain and two
// system libraries (OpenSSL 3, SQLite 3); no SwiftPM package dependencies, so
// a hospital's security review can read the whole supply chain.
import PackageDescription

let package = Package(
    name: "fedmix",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "fedmix", targets: ["fedmix"]),
        .executable(name: "fedmix-agent", targets: ["fedmix-agent"]),
    ],
    targets: [
        // System libraries, wrapped by small C shims.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        // glibc's allocator settings (mallopt), for both executables.
        .systemLibrary(name: "CAllocator", path: "Sources/CAllocator"),

        // Linear algebra, per-site contributions, optimizers. No I/O.
        .target(name: "Math", path: "Sources/Math"),
        // Messages, JSON lines, model specification, TLS transport.
        .target(name: "Protocol", dependencies: ["Math", "COpenSSL"], path: "Sources/Protocol"),
        // Site agent: data sources, design matrices, disclosure, audit log, server.
        .target(name: "SiteAgent", dependencies: ["Math", "Protocol", "CSQLite", "CAllocator"], path: "Sources/SiteAgent"),
        // Coordinator: formulas, fitting rounds, results and reports.
        .target(name: "Coordinator", dependencies: ["Math", "Protocol"], path: "Sources/Coordinator"),

        // Declarative command layer of both executables: options declared
        // once; parsing, help, usage errors and the check that every option is read.
        .target(name: "CommandKit", path: "Sources/CommandKit"),

        // Thin executables.
        .executableTarget(name: "fedmix", dependencies: ["Coordinator", "SiteAgent", "Protocol", "Math", "CommandKit"],
                          path: "Sources/fedmix"),
        .executableTarget(name: "fedmix-agent", dependencies: ["SiteAgent", "Protocol", "CommandKit"],
                          path: "Sources/fedmix-agent"),

        // The tests' one lookup of the built executables (and a runner for them).
        .target(name: "ExecutableSupport", path: "Tests/Support"),
        .testTarget(name: "MathTests", dependencies: ["Math"], path: "Tests/MathTests"),
        .testTarget(name: "ProtocolTests", dependencies: ["Protocol"], path: "Tests/ProtocolTests"),
        .testTarget(name: "SiteAgentTests", dependencies: ["SiteAgent", "Protocol", "ExecutableSupport"], path: "Tests/SiteAgentTests"),
        .testTarget(name: "CoordinatorTests", dependencies: ["Coordinator", "Protocol", "Math"],
                    path: "Tests/CoordinatorTests"),
        .testTarget(name: "IntegrationTests", dependencies: ["Coordinator", "SiteAgent", "Protocol", "Math", "CommandKit", "ExecutableSupport"],
                    path: "Tests/IntegrationTests"),
    ]
)

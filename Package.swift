// swift-tools-version: 6.1
import PackageDescription

/// One settings list for every Swift target: Swift 6 language mode with strict concurrency.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Quantumwala",
    products: [
        .executable(name: "qw", targets: ["qw"]),
        // the dashboard's server, a binary of its own: its HTTP stack (and the libraries
        // Foundation's networking brings) stays out of every other start of qw
        .executable(name: "qw-dashboard", targets: ["qw-dashboard"]),
        .library(name: "QuantumwalaLua", targets: ["QuantumwalaLua"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // the dashboard's HTTP server: no dependencies of its own, a tenth of Hummingbird's build
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.1"),
    ],
    targets: [
        // Lua 5.4 from the system (Debian: liblua5.4-dev), found with pkg-config.
        .systemLibrary(
            name: "CLua",
            pkgConfig: "lua5.4",
            providers: [.apt(["liblua5.4-dev"])]
        ),
        // GNU readline; linked from the module map because SwiftPM drops its pkg-config flags.
        .systemLibrary(
            name: "CReadline",
            providers: [.apt(["libreadline-dev"])]
        ),
        // The C side of the bridge: trampolines that raise and yield on Swift's behalf, the
        // allocator with a heap limit, signal handling and spawning.
        .target(
            name: "CSystem",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        .target(
            name: "CLuaShims",
            dependencies: ["CLua", "CSystem"],
            cSettings: [.unsafeFlags(["-I/usr/include/lua5.4"]), .define("_GNU_SOURCE")]
        ),
        .target(
            name: "QuantumwalaCore",
            dependencies: ["CSystem", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "GRDBSQLite", package: "GRDB.swift"),
                           .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LuaHost",
            dependencies: ["CLua", "CLuaShims"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "QuantumwalaLua",
            dependencies: ["LuaHost", "QuantumwalaCore", "CLua", "CLuaShims", "CSystem"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "qw",
            dependencies: [
                "QuantumwalaLua", "LuaHost", "QuantumwalaCore", "CReadline", "CLuaShims", "CLua", "CSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "QuantumwalaDashboard",
            dependencies: ["QuantumwalaLua", "LuaHost", "QuantumwalaCore", .product(name: "FlyingFox", package: "FlyingFox")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "qw-dashboard",
            dependencies: ["QuantumwalaDashboard", "QuantumwalaLua", "QuantumwalaCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LuaHostTests",
            dependencies: ["LuaHost", "CLua"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "QuantumwalaCoreTests",
            dependencies: ["QuantumwalaCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "QuantumwalaLuaTests",
            dependencies: ["QuantumwalaLua", "LuaHost", "QuantumwalaCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["qw", "qw-dashboard", "CSystem", "QuantumwalaCore"],
            swiftSettings: swiftSettings
        ),
    ]
)

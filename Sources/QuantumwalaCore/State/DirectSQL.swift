import GRDB
import GRDBSQLite

/// A value bound to a statement run by ``Database/direct(_:_:row:)``.
enum DirectValue {
    case null
    case int(Int64)
    case double(Double)
    case text(String)

    static func of(_ v: Double?) -> DirectValue { v.map { .double($0) } ?? .null }
    static func of(_ v: Int?) -> DirectValue { v.map { .int(Int64($0)) } ?? .null }
    static func of(_ v: Int64?) -> DirectValue { v.map { .int($0) } ?? .null }
    static func of(_ v: String?) -> DirectValue { v.map { .text($0) } ?? .null }
    static func of(_ v: Bool) -> DirectValue { .int(v ? 1 : 0) }
}

/// The current row of a statement run by ``Database/direct(_:_:row:)``; columns from 0.
struct DirectRow {
    let handle: OpaquePointer

    func double(_ i: Int32) -> Double { sqlite3_column_double(handle, i) }
    func int(_ i: Int32) -> Int64 { sqlite3_column_int64(handle, i) }
    func bool(_ i: Int32) -> Bool { sqlite3_column_int64(handle, i) != 0 }
    func isNull(_ i: Int32) -> Bool { sqlite3_column_type(handle, i) == SQLITE_NULL }
    func text(_ i: Int32) -> String? {
        guard let p = sqlite3_column_text(handle, i) else { return nil }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(sqlite3_column_bytes(handle, i))), as: UTF8.self)
    }
}

extension Database {
    /// Runs one statement through SQLite's C calls, handing each row to `row`.
    ///
    /// For the few statements that every short-lived `qw` runs (the agent gate, the cost
    /// ledger): GRDB's generic rows and cursors are set up on their first use in a process
    /// (type metadata built, protocol conformances looked up), which costs more than these
    /// queries do.
    func direct(_ sql: String, _ args: [DirectValue] = [], row: ((DirectRow) throws -> Void)? = nil) throws {
        guard let connection = sqliteConnection else { throw StoreError(message: "the store is closed") }
        var handle: OpaquePointer?
        var rc = sqlite3_prepare_v2(connection, sql, -1, &handle, nil)
        guard rc == SQLITE_OK, let handle else {
            throw StoreError(message: "\(String(cString: sqlite3_errmsg(connection))) (in \(sql))")
        }
        defer { sqlite3_finalize(handle) }
        // bound as the store's other statements are (a text with its length: it may hold NUL)
        let raw = RawStatement(handle, db: connection)
        for (n, v) in args.enumerated() {
            let i = Int32(n + 1)
            switch v {
            case .null: raw.bind(i, nil as Int?)
            case .int(let x): raw.bind(i, Int(x))
            case .double(let x): raw.bind(i, x)
            case .text(let s): raw.bind(i, s)
            }
        }
        while true {
            rc = sqlite3_step(handle)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else {
                throw StoreError(message: "\(String(cString: sqlite3_errmsg(connection))) (in \(sql))")
            }
            try row?(DirectRow(handle: handle))
        }
    }
}

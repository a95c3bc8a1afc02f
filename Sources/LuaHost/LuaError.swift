/// An error raised by Lua code, or by loading a chunk.
///
/// `message` reads `chunk.lua:LINE: text` for errors raised at a known place; `traceback`
/// holds the stack traceback when one was taken.
public struct LuaError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this was.
    /// `interrupted`: the run was stopped by Ctrl-C (SIGINT), not by an error of its own.
    public enum Kind: Sendable { case syntax, runtime, memory, file, interrupted }
    public var kind: Kind
    public var message: String
    public var traceback: String?

    public init(_ kind: Kind, _ message: String, traceback: String? = nil) {
        self.kind = kind
        self.message = message
        self.traceback = traceback
    }

    public var description: String {
        if let traceback { return message + "\n" + traceback }
        return message
    }
}

/// Thrown by a Swift function bound into Lua to raise a Lua error at the caller's position.
public struct LuaArgumentError: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

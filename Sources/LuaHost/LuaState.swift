import CLua
import CLuaShims
import Glibc

/// What a Swift function bound into Lua hands back to the trampoline.
public enum LuaReturn {
    /// Return this many values from the top of the stack.
    case values(Int32)
    /// Raise the value on top of the stack as the error object.
    case raise
    /// Yield to the host scheduler (see ``LuaState/hostYieldTag``); the scheduler resumes
    /// the thread with `true, results...` or `false, error`.
    case yield
    /// Raise the string on top of the stack prefixed with the caller's `file:line:`.
    case raiseHere
}

/// One call of a Swift function from Lua.
public struct LuaCall {
    /// The calling thread's stack: arguments are at 1...argCount.
    public let stack: LuaStack
    public unowned let state: LuaState
    public var L: OpaquePointer { stack.L }
    public var argCount: Int32 { stack.top }
    /// Whether this call may yield (false inside a metamethod, a `table.sort` comparator, ...).
    public var canYield: Bool { lua_isyieldable(stack.L) != 0 }
}

/// A Swift function callable from Lua. Throw ``LuaArgumentError`` to raise a Lua error at the
/// caller's `file:line`.
public typealias LuaFunction = (LuaCall) throws -> LuaReturn

final class FunctionBox {
    let fn: LuaFunction
    unowned let state: LuaState
    init(_ fn: @escaping LuaFunction, state: LuaState) {
        self.fn = fn
        self.state = state
    }
}

private let dispatch: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { L, ctx in
    let box = Unmanaged<FunctionBox>.fromOpaque(ctx!).takeUnretainedValue()
    let stack = LuaStack(L!)
    do {
        switch try box.fn(LuaCall(stack: stack, state: box.state)) {
        case .values(let n): return n
        case .raise: return QW_RAISE
        case .yield: return QW_YIELD
        case .raiseHere: return QW_RAISE_WHERE
        }
    } catch let e as LuaArgumentError {
        stack.push(e.message)
        return QW_RAISE_WHERE
    } catch {
        stack.push(String(describing: error))
        return QW_RAISE_WHERE
    }
}

/// A Lua 5.4 state owned by Swift.
///
/// Not thread-safe: a state and everything reached through it belong to the thread that
/// made it. Lua errors never cross Swift frames: functions registered here are called
/// through a C trampoline that raises and yields on their behalf.
public final class LuaState {
    /// The main thread.
    public let L: OpaquePointer
    private var boxes: [FunctionBox] = []

    /// Creates a state with the standard libraries open.
    ///
    /// - Parameter memoryLimit: bytes the Lua heap may grow to while Lua code runs (0: no
    ///   limit); past it Lua raises "not enough memory".
    public init(memoryLimit: Int = 0) {
        qw_set_dispatch(dispatch)
        guard let L = qw_newstate(memoryLimit) else { fatalError("cannot create a Lua state: out of memory") }
        self.L = L
        luaL_openlibs(L)
    }

    deinit {
        qw_closestate(L)
    }

    /// The main thread's stack.
    public var stack: LuaStack { LuaStack(L) }

    /// The Lua heap's size in bytes, and its limit (0: none).
    public var memoryUsed: Int { qw_mem_used(L) }
    public var memoryLimit: Int {
        get { qw_mem_limit(L) }
        set { qw_mem_set_limit(L, newValue) }
    }
    /// The 64 KiB slabs that hold the heap's small blocks (256 bytes or less) now.
    var smallBlockSlabs: Int { qw_mem_slabs(L) }

    /// The light userdata that a host yield carries as its only value.
    public static var hostYieldTag: UnsafeMutableRawPointer { qw_host_yield_tag() }

    /// Pushes `fn` as a Lua function onto `stack` (the main thread's by default).
    public func pushFunction(_ fn: @escaping LuaFunction, on stack: LuaStack? = nil) {
        let box = FunctionBox(fn, state: self)
        boxes.append(box)
        qw_push_swift_function((stack ?? self.stack).L, Unmanaged.passUnretained(box).toOpaque())
    }

    /// Sets global `name` to `fn`.
    public func setGlobal(_ name: String, _ fn: @escaping LuaFunction) {
        pushFunction(fn)
        lua_setglobal(L, name)
    }

    /// Sets field `name` of the table at `index` of the main stack to `fn`.
    public func setFunction(_ name: String, in index: Int32, _ fn: @escaping LuaFunction) {
        let t = stack.absolute(index)
        pushFunction(fn)
        stack.setField(t, name)
    }

    /// Loads a chunk and pushes it as a function.
    ///
    /// - Parameters:
    ///   - code: the source (or precompiled) bytes.
    ///   - name: the chunk name; `@path.lua` makes errors read `path.lua:LINE: message`.
    /// - Throws: ``LuaError`` of kind `.syntax` with the parser's message.
    public func load(_ code: [UInt8], name: String, mode: String = "t") throws(LuaError) {
        let status = code.withUnsafeBytes { buf in
            luaL_loadbufferx(L, buf.baseAddress?.assumingMemoryBound(to: CChar.self), buf.count, name, mode)
        }
        if status != LUA_OK {
            let msg = stack.string(at: -1) ?? "cannot load \(name)"
            stack.pop()
            throw LuaError(status == LUA_ERRMEM ? .memory : .syntax, msg)
        }
    }

    /// Loads a file as a chunk named `@displayPath` and pushes it as a function.
    ///
    /// - Throws: ``LuaError`` `.file` when it cannot be read, `.syntax` when it does not parse.
    public func loadFile(_ path: String, displayPath: String? = nil) throws(LuaError) {
        guard var bytes = readFile(path) else {
            throw LuaError(.file, "cannot open \(displayPath ?? path): \(String(cString: strerror(errno)))")
        }
        if bytes.first == UInt8(ascii: "#") {  // skip a #! line, keeping line numbers
            let nl = bytes.firstIndex(of: 10) ?? bytes.endIndex
            bytes.replaceSubrange(0..<nl, with: [])
        }
        let mode = bytes.first == 0x1B ? "b" : "t"
        try load(bytes, name: "@" + (displayPath ?? path), mode: mode)
    }

    /// ``loadFile(_:displayPath:)`` through a cache of compiled chunks in `cacheDir`: a file
    /// whose size, mtime and inode are those it was compiled at is loaded from its bytecode
    /// (with its debug information, so messages and tracebacks are the same), which skips
    /// the parser. A cache that cannot be read or written is passed over.
    public func loadFile(_ path: String, displayPath: String? = nil, cacheDir: String?) throws(LuaError) {
        var st = stat()
        guard let cacheDir, stat(path, &st) == 0 else { return try loadFile(path, displayPath: displayPath) }
        let key = "\(path)\u{0}\(displayPath ?? "")\u{0}\(st.st_size)\u{0}\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)\u{0}\(st.st_ino)\u{0}\(LUA_VERSION_NUM)"
        let cached = cacheDir + "/" + Self.cacheName(key) + ".luac"
        if let code = readFile(cached), code.first == 0x1B, (try? load(code, name: "@" + (displayPath ?? path), mode: "b")) != nil {
            return
        }
        try loadFile(path, displayPath: displayPath)
        // the chunk is on top: keep its bytecode for next time
        final class Sink { var bytes: [UInt8] = [] }
        let sink = Sink()
        let rc = withExtendedLifetime(sink) {
            lua_dump(L, { _, p, n, ud in
                let sink = Unmanaged<Sink>.fromOpaque(ud!).takeUnretainedValue()
                sink.bytes.append(contentsOf: UnsafeRawBufferPointer(start: p, count: n))
                return 0
            }, Unmanaged.passUnretained(sink).toOpaque(), 0)
        }
        guard rc == 0, !sink.bytes.isEmpty else { return }
        _ = mkdir(cacheDir, 0o700)
        let temp = cached + ".\(getpid()).tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let written = sink.bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        if written != sink.bytes.count || rename(temp, cached) != 0 {
            unlink(temp)
            return
        }
        Self.pruneCache(cacheDir, keep: 32)
    }

    /// Removes the oldest compiled chunks beyond `keep` (each edit of a file, and each
    /// checkout it is read from, leaves one behind). Runs only after a chunk was written.
    static func pruneCache(_ dir: String, keep: Int) {
        guard let d = opendir(dir) else { return }
        var files: [(mtime: Int, path: String)] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasSuffix(".luac") else { continue }
            var st = stat()
            if stat(dir + "/" + name, &st) == 0 { files.append((st.st_mtim.tv_sec, dir + "/" + name)) }
        }
        closedir(d)
        guard files.count > keep else { return }
        for f in files.sorted(by: { $0.mtime < $1.mtime }).prefix(files.count - keep) { unlink(f.path) }
    }

    /// A file name for a cache key (FNV-1a, 64 bits, in hex).
    private static func cacheName(_ key: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return String(h, radix: 16)
    }

    /// Calls the function below `nargs` arguments on the main stack, leaving `nresults`
    /// results (or all, with `LUA_MULTRET`).
    ///
    /// - Throws: ``LuaError`` with the message and a stack traceback.
    public func call(nargs: Int32 = 0, nresults: Int32 = 0) throws(LuaError) {
        let saved = qw_mem_strict()
        qw_mem_set_strict(1)
        let status = qw_pcall_traceback(L, nargs, nresults)
        qw_mem_set_strict(saved)
        if status != LUA_OK {
            let full = stack.string(at: -1) ?? "error"
            stack.pop()
            throw Self.error(status: status, full: full)
        }
    }

    /// Splits a message-plus-traceback into a ``LuaError``.
    static func error(status: Int32, full: String) -> LuaError {
        var e = splitTraceback(full)
        e.kind = status == LUA_ERRMEM ? .memory : .runtime
        return e
    }

    /// Splits `message\nstack traceback:\n...` into its two parts.
    public static func splitTraceback(_ full: String) -> LuaError {
        let kind = LuaError.Kind.runtime
        let marker = Array("\nstack traceback:".utf8)
        let bytes = Array(full.utf8)
        if bytes.count >= marker.count {
            for i in 0...(bytes.count - marker.count) where bytes[i] == 10 && Array(bytes[i..<i + marker.count]) == marker {
                return LuaError(kind, String(decoding: bytes[..<i], as: UTF8.self),
                                traceback: String(decoding: bytes[(i + 1)...], as: UTF8.self))
            }
        }
        return LuaError(kind, full)
    }

    /// Runs a chunk of source (which gets `args` as `...`) and returns its results as Swift
    /// values.
    @discardableResult
    public func run(_ code: String, name: String = "=(code)", args: [LuaValue] = []) throws -> [LuaValue] {
        let base = stack.top
        try load(Array(code.utf8), name: name)
        for a in args { stack.push(a) }
        try call(nargs: Int32(args.count), nresults: LUA_MULTRET)
        defer { stack.top = base }
        return try (base + 1..<stack.top + 1).map { i throws(LuaArgumentError) in try stack.value(at: i) }
    }

    /// A new coroutine thread, anchored in the registry until ``release(_:)``.
    public func newThread() -> (thread: OpaquePointer, ref: Int32) {
        let co = lua_newthread(L)!
        let ref = luaL_ref(L, qwl_registryindex())
        return (co, ref)
    }

    /// Anchors the value on top of the main stack in the registry (popping it).
    public func ref() -> Int32 { luaL_ref(L, qwl_registryindex()) }
    /// Pushes a registry-anchored value onto `stack`.
    public func pushRef(_ ref: Int32, on stack: LuaStack? = nil) {
        lua_rawgeti((stack ?? self.stack).L, qwl_registryindex(), lua_Integer(ref))
    }
    /// Drops a registry anchor.
    public func release(_ ref: Int32) { luaL_unref(L, qwl_registryindex(), ref) }

    /// Prepends `dir/?.lua;dir/?/init.lua` to `package.path`.
    public func addPackagePath(_ dir: String) {
        lua_getglobal(L, "package")
        stack.getField(-1, "path")
        let old = stack.string(at: -1) ?? ""
        stack.pop()
        stack.push("\(dir)/?.lua;\(dir)/?/init.lua;" + old)
        stack.setField(-2, "path")
        stack.pop()
    }
}

/// Reads a whole file, or nil (errno set). A file is read straight into an array of its size
/// (and a byte more, which tells that it grew meanwhile); files that give no size, as /proc's,
/// and files that grew are read on in steps.
public func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    let room = fstat(fd, &st) == 0 && st.st_size > 0 ? Int(st.st_size) + 1 : 16384
    var failed = false
    var out = [UInt8](unsafeUninitializedCapacity: room) { buf, count in
        count = 0
        while count < buf.count {
            let n = read(fd, buf.baseAddress! + count, buf.count - count)
            if n < 0 {
                if errno == EINTR { continue }
                failed = true
                return
            }
            if n == 0 { return }
            count += n
        }
    }
    if failed { return nil }
    if out.count < room { return out }
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { return out }
        out.append(contentsOf: buf[0..<n])
    }
}

import CSystem
import Dispatch
import Glibc

/// What identifies a file's content without reading it: when all of these are unchanged, a
/// hash taken earlier still holds (git and ninja trust the same fields).
public struct FileStamp: Equatable, Sendable {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int64
    public var mtimeNs: Int64
    public var ctimeNs: Int64

    public init(device: UInt64, inode: UInt64, size: Int64, mtimeNs: Int64, ctimeNs: Int64) {
        self.device = device
        self.inode = inode
        self.size = size
        self.mtimeNs = mtimeNs
        self.ctimeNs = ctimeNs
    }

    /// The stamp of a regular file (following symbolic links); nil when it does not exist or
    /// is not a regular file.
    public static func of(_ path: String) -> FileStamp? {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return FileStamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                         ctimeNs: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec))
    }
}

/// Hashes of file contents for one workflow run: each file is read at most once per run
/// (while its stamp holds), and not at all when the store's cache has a hash for its stamp.
///
/// A hash is cached only for a file last changed more than ``settle`` seconds before it was
/// read: a file written again within the clock's granularity could keep its stamp while its
/// content changes ("racily clean", as git calls it).
public final class ContentHashes {
    public struct Entry: Sendable {
        public var path: String
        public var stamp: FileStamp
        public var hash: String
    }

    /// Seconds a file's mtime must lie in the past for its hash to be cached.
    public static let settle: Double = 2

    private var memo: [String: Entry] = [:]
    /// Looks a path up in the persistent cache (the store); nil when it has none.
    private let lookup: (String) -> Entry?
    /// Hashes taken this run that the persistent cache should keep.
    public private(set) var fresh: [Entry] = []

    /// The hashes to keep that were taken since the last call.
    public func takeFresh() -> [Entry] {
        defer { fresh = [] }
        return fresh
    }
    /// Bytes read to hash files this run.
    public private(set) var bytesRead: Int64 = 0
    public private(set) var filesRead = 0

    public init(lookup: @escaping (String) -> Entry? = { _ in nil }) {
        self.lookup = lookup
    }

    /// Hashes the files among `paths` (absolute) that neither this run nor the cache knows,
    /// on several threads at once (one per core, at most 4): reading is then no slower than
    /// one `cat` of them. Files that cannot be read are left for ``hash(_:)`` to report.
    public func prefetch(_ paths: [String]) {
        var misses: [(String, FileStamp)] = []
        var seen = Set<String>()
        for p in paths where seen.insert(p).inserted {
            guard let stamp = FileStamp.of(p) else { continue }
            if let m = memo[p], m.stamp == stamp { continue }
            if let c = lookup(p), c.stamp == stamp {
                memo[p] = c
                continue
            }
            misses.append((p, stamp))
        }
        guard misses.count > 1 else { return }  // one file: hash(_:) reads it as it goes
        var out = [(UInt64, UInt64, Int32)](repeating: (0, 0, 0), count: misses.count)
        let threads = min(4, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))), misses.count)
        let jobs = misses
        out.withUnsafeMutableBufferPointer { buf in
            let results = UncheckedBuffer(buf)
            let next = Counter()
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                while true {
                    let k = next.take()
                    if k >= jobs.count { return }
                    var h: (UInt64, UInt64) = (0, 0)
                    let rc = withUnsafeMutableBytes(of: &h) { qw_hash_file(jobs[k].0, $0.baseAddress!.assumingMemoryBound(to: UInt64.self)) }
                    results.base[k] = (h.0, h.1, rc)
                }
            }
        }
        for (k, (path, stamp)) in misses.enumerated() where out[k].2 == 0 {
            remember(path, stamp, hex64(out[k].0) + hex64(out[k].1))
        }
    }

    private func remember(_ path: String, _ stamp: FileStamp, _ hash: String) {
        filesRead += 1
        bytesRead += stamp.size
        let entry = Entry(path: path, stamp: stamp, hash: hash)
        memo[path] = entry
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let ageNs = (Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)) - max(stamp.mtimeNs, stamp.ctimeNs)
        if Double(ageNs) / 1e9 > Self.settle { fresh.append(entry) }
    }

    /// The content hash of the regular file at `path` (absolute): 32 hex digits, or the
    /// errno that kept it from being read (ENOENT when it does not exist).
    public func hash(_ path: String) -> Result<String, HashError> {
        guard let stamp = FileStamp.of(path) else {
            var st = stat()
            if stat(path, &st) == 0 { return .failure(HashError(code: EISDIR)) }
            return .failure(HashError(code: errno == 0 ? ENOENT : errno))
        }
        if let m = memo[path], m.stamp == stamp { return .success(m.hash) }
        if let c = lookup(path), c.stamp == stamp {
            memo[path] = c
            return .success(c.hash)
        }
        var out: (UInt64, UInt64) = (0, 0)
        let rc = withUnsafeMutableBytes(of: &out) { qw_hash_file(path, $0.baseAddress!.assumingMemoryBound(to: UInt64.self)) }
        guard rc == 0 else { return .failure(HashError(code: rc)) }
        let h = hex64(out.0) + hex64(out.1)
        remember(path, stamp, h)
        return .success(h)
    }

    /// Why a file could not be hashed.
    public struct HashError: Error, Sendable, Equatable {
        public var code: Int32
        public var message: String { code == EISDIR ? "is a directory" : errnoText(code) }
    }
}

/// Slots that threads fill, each its own.
private struct UncheckedBuffer<T>: @unchecked Sendable {
    let base: UnsafeMutableBufferPointer<T>
    init(_ b: UnsafeMutableBufferPointer<T>) { base = b }
}

/// A shared counter that hands out 0, 1, 2 ... to threads.
private final class Counter: @unchecked Sendable {
    private var value = 0
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    deinit { pthread_mutex_destroy(&lock) }
    func take() -> Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        value += 1
        return value - 1
    }
}

private func hex64(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

/// Paths and glob patterns of task inputs and outputs.
///
/// A pattern is a path relative to a base folder (or absolute) whose components may hold
/// `*`, `?` and `[...]` (as fnmatch(3) reads them, a leading `.` matched only by a pattern
/// that starts with one), and `**` for any number of folders. A pattern without any of these
/// is a literal path.
public enum PathPattern {
    /// Whether `pattern` holds glob characters.
    public static func isGlob(_ pattern: String) -> Bool {
        pattern.utf8.contains { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "[") }
    }

    /// `path` made absolute against `base` and cleaned of `.`, `..` and repeated slashes
    /// (lexically: symbolic links are not resolved).
    public static func absolute(_ path: String, base: String) -> String {
        let joined = path.hasPrefix("/") ? path : base + "/" + path
        var parts: [Substring] = []
        for c in joined.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." { continue }
            if c == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// The regular files a glob pattern matches, as paths in the pattern's own form (relative
    /// to `base` when the pattern is relative), sorted. Folders that cannot be read are
    /// passed over.
    public static func expand(_ pattern: String, base: String) -> [String] {
        let absolutePattern = pattern.hasPrefix("/")
        let segments = pattern.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var out: [String] = []
        walk(dir: absolutePattern ? "/" : base, shown: "", segments[...], &out, prefixSlash: absolutePattern)
        return out.sorted()
    }

    private static func walk(dir: String, shown: String, _ segments: ArraySlice<String>, _ out: inout [String], prefixSlash: Bool) {
        guard let seg = segments.first else { return }
        let rest = segments.dropFirst()
        func join(_ a: String, _ b: String) -> String { a.isEmpty ? (prefixSlash ? "/" + b : b) : (a.hasSuffix("/") ? a + b : a + "/" + b) }
        func fsJoin(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }
        if seg == "**" {
            // zero folders, then each folder below; links to folders are not followed (no loops)
            walk(dir: dir, shown: shown, rest, &out, prefixSlash: prefixSlash)
            for (name, isDir, isLink) in entries(dir) where isDir && !isLink && !name.hasPrefix(".") {
                walk(dir: fsJoin(dir, name), shown: join(shown, name), segments, &out, prefixSlash: prefixSlash)
            }
            return
        }
        if !isGlob(seg) {
            let p = fsJoin(dir, seg)
            if rest.isEmpty {
                if FileStamp.of(p) != nil { out.append(join(shown, seg)) }
            } else {
                walk(dir: p, shown: join(shown, seg), rest, &out, prefixSlash: prefixSlash)
            }
            return
        }
        for (name, isDir, _) in entries(dir) {
            guard fnmatch(seg, name, FNM_PERIOD) == 0 else { continue }
            if rest.isEmpty {
                if FileStamp.of(fsJoin(dir, name)) != nil { out.append(join(shown, name)) }
            } else if isDir {
                walk(dir: fsJoin(dir, name), shown: join(shown, name), rest, &out, prefixSlash: prefixSlash)
            }
        }
    }

    /// The names in a folder (without . and ..), each with whether it is a folder (or a link
    /// to one) and whether it is a symbolic link.
    private static func entries(_ dir: String) -> [(String, Bool, Bool)] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var list: [(String, Bool, Bool)] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            var isDir = e.pointee.d_type == UInt8(DT_DIR)
            if e.pointee.d_type == UInt8(DT_UNKNOWN) || e.pointee.d_type == UInt8(DT_LNK) {
                var st = stat()
                isDir = stat(dir + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            }
            list.append((name, isDir, e.pointee.d_type == UInt8(DT_LNK)))
        }
        return list
    }

    /// Whether the absolute path `path` is matched by `pattern` (absolute too): glob
    /// characters within a component, `**` for any number of components.
    public static func matches(_ pattern: String, _ path: String) -> Bool {
        let p = pattern.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let s = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        func go(_ i: Int, _ j: Int) -> Bool {
            if i == p.count { return j == s.count }
            if p[i] == "**" {
                for k in j...s.count where go(i + 1, k) { return true }
                return false
            }
            guard j < s.count, fnmatch(p[i], s[j], FNM_PERIOD) == 0 else { return false }
            return go(i + 1, j + 1)
        }
        return go(0, 0)
    }
}

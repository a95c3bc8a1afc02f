import Glibc

/// Writes all of `text` to a file descriptor (1: stdout, 2: stderr), unbuffered.
///
/// Lua's `print` and `io.write` go through C's stdout buffer; flush it first so that what
/// Lua printed and what qw writes come out in order.
public func writeAll(_ fd: Int32, _ text: String) {
    fflush(nil)
    var text = text
    text.withUTF8 { buf in
        var off = 0
        while off < buf.count {
            let n = write(fd, buf.baseAddress! + off, buf.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            off += n
        }
    }
}

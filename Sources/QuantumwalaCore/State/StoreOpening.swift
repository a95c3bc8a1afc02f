extension StateStore {
    /// A store being opened on a thread of its own, so that the open (GRDB's set-up, the WAL's
    /// index rebuilt from the file) overlaps what the caller does meanwhile. `qw agent run`
    /// starts one before its Lua start-up: the store is needed only at the agent gate, a few
    /// milliseconds later.
    public final class Opening: @unchecked Sendable {
        public let path: String
        private let work: BackgroundWork<Result<StateStore, StoreError>>

        /// Starts opening the store at `path` (see ``StateStore/init(path:busyWait:)``).
        public init(path: String, busyWait: Double = 30) {
            self.path = path
            work = BackgroundWork {
                do throws(StoreError) {
                    return .success(try StateStore(path: path, busyWait: busyWait))
                } catch {
                    return .failure(error)
                }
            }
        }

        /// The open store, once the thread is done with it, or the error that opening it met;
        /// for the thread that made it.
        public func wait() throws(StoreError) -> StateStore {
            try work.wait().get()
        }
    }
}

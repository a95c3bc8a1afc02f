import QuantumwalaLua

struct ReplSession {
    let runtime: Runtime
    func run() throws {}
}

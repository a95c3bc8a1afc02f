import CLua
import LuaHost
import QuantumwalaCore

extension Runtime {
    func registerAgents(in t: Int32) {
        // qw._agent_files(dir) -> { { path, stem, prompt, prompt_line, problems = { {line, message} },
        //   fields = { { key, text, list, line, items = { {text, line} } } } }, ... } (sorted by path)
        lua.setFunction("_agent_files", in: t) { call in
            let s = call.stack
            guard let dir = s.string(at: 1) else { throw LuaArgumentError("_agent_files: a folder is needed") }
            let files = AgentFile.files(in: dir).map(AgentFile.read)
            s.newTable(array: Int32(files.count))
            for (i, f) in files.enumerated() {
                s.newTable(hash: 6)
                s.push(f.path); s.setField(-2, "path")
                s.push(f.stem); s.setField(-2, "stem")
                s.push(f.prompt); s.setField(-2, "prompt")
                s.push(f.promptLine); s.setField(-2, "prompt_line")
                s.newTable(array: Int32(f.problems.count))
                for (k, p) in f.problems.enumerated() {
                    s.newTable(hash: 2)
                    s.push(p.line); s.setField(-2, "line")
                    s.push(p.message); s.setField(-2, "message")
                    s.setIndex(-2, k + 1)
                }
                s.setField(-2, "problems")
                s.newTable(array: Int32(f.fields.count))
                for (k, field) in f.fields.enumerated() {
                    s.newTable(hash: 5)
                    s.push(field.key); s.setField(-2, "key")
                    if let text = field.text { s.push(text); s.setField(-2, "text") }
                    s.push(field.isList); s.setField(-2, "list")
                    s.push(field.line); s.setField(-2, "line")
                    s.newTable(array: Int32(field.items.count))
                    for (j, item) in field.items.enumerated() {
                        s.newTable(hash: 2)
                        s.push(item.text); s.setField(-2, "text")
                        s.push(item.line); s.setField(-2, "line")
                        s.setIndex(-2, j + 1)
                    }
                    s.setField(-2, "items")
                    s.setIndex(-2, k + 1)
                }
                s.setField(-2, "fields")
                s.setIndex(-2, i + 1)
            }
            return .values(1)
        }
    }
}

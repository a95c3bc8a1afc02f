#!/usr/bin/env python3
"""A fake Anthropic Messages API for the tests: the model is the only thing faked.

It serves POST /v1/messages on 127.0.0.1 (streaming SSE, or one JSON body for
`stream: false`) and answers from scripted scenarios. The scenario is named by a marker
`[[fake:NAME]]` in the system prompt or in the text of a user message; the last one wins, so
a resumed conversation follows the marker of its new prompt. The turn is the number of
assistant messages already in the request. Every request is appended to the log as one
JSON line: {"at", "scenario", "turn", "status", "body"}.

Scenarios file (JSON): { "NAME": [ turn, ... ], ... } where a turn is
  {"text": "..."}                                   a text answer (end_turn)
  {"tool_use": {"name": "Write", "input": {...}}}   a tool call (stop_reason tool_use); "{{path}}"
                                                    in its input is the [[path:...]] of the request
  {"status": 429, "headers": {...}, "error": {"type": "rate_limit_error", "message": "..."}}
  {"hang": true}                                    never answers (until the client gives up)
  {"delay": 0.5, ...}                               waits before answering
and may carry "usage": {input_tokens, output_tokens, cache_read_input_tokens,
cache_creation_input_tokens}. Past the last turn the last one is repeated. A scenario may be
{"first": N, "then": [turns], "reject": turn} to answer the first N requests with `reject`,
or {"rate": R, "then": [turns], "reject": turn} to admit at most R requests a second.
"_routes": [["words", "NAME"], ...] names the scenario of a request with no marker: the first
route whose words appear in its system prompt or user text (prompts that qw writes itself).

Usage: fake_anthropic.py --scenarios FILE --log FILE [--port 0]; prints the port on stdout.
"""
import argparse
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARK = re.compile(r"\[\[fake:([A-Za-z0-9_.-]+)\]\]")
# [[path:/abs/file]] in the request: "{{path}}" in a scripted tool input becomes that path
PATH_MARK = re.compile(r"\[\[path:([^\]]+)\]\]")


def texts(value):
    """Every string inside a request value (messages, system), for finding the marker."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from texts(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k in ("text", "content", "system", "messages", "prompt", "input"):
                yield from texts(v)


def marker_texts(body):
    """The texts that may name the scenario, in order: the system prompt, then the user's
    own words (not tool results, which may quote other prompts)."""
    yield from texts(body.get("system"))
    for m in body.get("messages") or []:
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            yield c
        elif isinstance(c, list):
            for b in c:
                if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str):
                    yield b["text"]


class State:
    def __init__(self, scenarios, log):
        self.scenarios = scenarios
        self.log = log
        self.lock = threading.Lock()
        self.counts = {}
        self.windows = {}
        self.seq = 0

    def next_id(self):
        with self.lock:
            self.seq += 1
            return self.seq


def sse(event, data):
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(data))).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.reply_json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no such path"}})

    def reply_json(self, status, body, headers=None):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        st = self.server.state
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        name = path = None
        for t in marker_texts(body):
            for m in MARK.finditer(t):
                name = m.group(1)
        if name is None:  # no marker: the first route whose words the request has
            said = list(marker_texts(body))
            for words, scenario in st.scenarios.get("_routes", []):
                if any(words in t for t in said):
                    name = scenario
                    break
        for t in list(texts(body.get("system"))) + list(texts(body.get("messages"))):
            p = PATH_MARK.search(t)
            if p and path is None:
                path = p.group(1)
        messages = body.get("messages") or []
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        script = st.scenarios.get(name) if name else None
        with st.lock:
            n = st.counts.get(name, 0)
            st.counts[name] = n + 1
        if isinstance(script, dict) and "rate" in script:  # {"rate": R, "reject": turn, "then": [...]}: R per second
            # R a second: at most max(1, floor(R)) requests within any count / R seconds
            # (at 2: two within one second; at 0.5: one within two seconds)
            now = time.time()
            count = max(1, int(script["rate"]))
            span = count / script["rate"]
            with st.lock:
                window = [t for t in st.windows.get(name, []) if now - t < span]
                admitted = len(window) < count
                if admitted:
                    window.append(now)
                st.windows[name] = window
            step = script["then"][min(turn, len(script["then"]) - 1)] if admitted else script["reject"]
        elif isinstance(script, dict):  # {"first": N, "reject": turn, "then": [...]}
            step = script["reject"] if n < script.get("first", 0) else script["then"][min(turn, len(script["then"]) - 1)]
        elif script:
            step = script[min(turn, len(script) - 1)]
        else:
            step = {"text": "fake model: no scenario for this request"}
        status = step.get("status", 200)
        with st.lock:
            with open(st.log, "a") as f:
                f.write(json.dumps({"at": time.time(), "scenario": name, "turn": turn, "status": status,
                                    "path": self.path, "body": body}) + "\n")
        if step.get("delay"):
            time.sleep(step["delay"])
        if step.get("hang"):
            time.sleep(3600)
            return
        if status != 200:
            err = step.get("error") or {"type": "api_error", "message": "fake error %d" % status}
            self.reply_json(status, {"type": "error", "error": err}, step.get("headers"))
            return
        usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        usage.update(step.get("usage") or {})
        model = body.get("model", "claude-opus-5-5")
        msg_id = "msg_fake_%d" % st.next_id()
        if "tool_use" in step:
            tu = step["tool_use"]
            raw = json.dumps(tu.get("input", {}))
            if path:
                raw = raw.replace("{{path}}", path)
            block = {"type": "tool_use", "id": "toolu_fake_%d" % st.next_id(), "name": tu["name"], "input": json.loads(raw)}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": step.get("text", "")}
            stop = "end_turn"
        if not body.get("stream"):
            self.reply_json(200, {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                  "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        start_usage = dict(usage, output_tokens=1)
        out = [sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}})]
        if block["type"] == "text":
            out.append(sse("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": block["text"]}}))
        else:
            out.append(sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        out.append(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": usage["output_tokens"]}}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        self.wfile.write(b"".join(out))
        self.wfile.flush()
        self.close_connection = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    with open(a.scenarios) as f:
        scenarios = json.load(f)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    server.state = State(scenarios, a.log)
    print(server.server_address[1], flush=True)
    # it ends with whoever started it, even one that could not say so (a crashed test run)
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()

"""Headless Chromium through chromedriver's WebDriver protocol (for scripts/bench/dashboard
and scripts/screenshots): standard library only."""
import json
import os
import socket
import subprocess
import urllib.request


class Browser:
    def __init__(self, profile, width=1400, height=1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={self.port}"], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
        while "started successfully" not in self.driver.stdout.readline():
            if self.driver.poll() is not None:
                raise RuntimeError("chromedriver did not start")
        os.makedirs(profile, exist_ok=True)
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "--no-first-run"]}}}})["sessionId"]

    def _call(self, method, path, body=None, timeout=60):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(req, timeout=timeout))["value"]

    def call(self, method, path, body=None, timeout=60):
        return self._call(method, f"/session/{self.session}{path}", body, timeout)

    def open(self, url):
        self.call("POST", "/url", {"url": url})

    def wait_for(self, condition, args=(), timeout=15):
        """Waits (a MutationObserver) until the JavaScript expression holds; returns
        Date.now() in the page when it did."""
        self.call("POST", "/timeouts", {"script": int(timeout * 1000)})
        return self.call("POST", "/execute/async", {"script": f"""
            const done = arguments[arguments.length - 1];
            const test = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
            if (test()) return done(Date.now());
            const o = new MutationObserver(() => {{ if (test()) {{ o.disconnect(); done(Date.now()); }} }});
            o.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});""",
            "args": list(args)}, timeout + 10)

    def screenshot(self, path):
        import base64
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("GET", "/screenshot")))

    def quit(self):
        try:
            self.call("DELETE", "")
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/shutdown", timeout=5)
        except Exception:
            pass
        self.driver.kill()
        self.driver.wait()

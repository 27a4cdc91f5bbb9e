"""A small threaded HTTP receiver the tests point webhook channels at."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Records every POST; answers 200 unless ``status[path]`` says otherwise, after ``delay[path]`` seconds.

    ``Receiver(port=...)`` listens on a given port, so a test can bring a
    receiver back where an earlier one went down.
    """

    def __init__(self, port: int = 0):
        self.received: list[Received] = []
        self.status: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}
        # Seconds to wait, after recording, before answering: a receiver slower than the sender's timeout.
        self.delay: dict[str, float] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                time.sleep(receiver.delay.get(self.path, 0))
                code = receiver.status.get(self.path, 200)
                # A sender that timed out has hung up; that is the point of a delay, not an error.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(code)
                    for name, value in receiver.headers.get(self.path, {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if code < 400 else b"no_service")

            def log_message(self, format, *args):  # quiet test output
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.on(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.on(path))} of {count} messages on {path} in {timeout}s")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

"""A loopback HTTP server of files, the source of URL ingests in tests (the emulator really downloads).

`server.add(path, bytes)` returns the URL; anything else is a 404. `hits` counts
GETs per path; a path with a `gates[path]` Event answers only once it is set.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class SourceServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.gates: dict[str, threading.Event] = {}
        files, hits, gates = self.files, self.hits, self.gates

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                path = unquote(self.path.split("?", 1)[0])
                hits[path] += 1
                gate = gates.get(path)
                if gate is not None:
                    gate.wait(30)
                body = files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "video/mp4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.base + path

    def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self._server.shutdown()
        self._server.server_close()

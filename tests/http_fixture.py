"""A local HTTP file server for download tests: 127.0.0.1, port 0, a daemon thread, no internet.

Each path serves bytes with a chosen behaviour: normal (with Range support), an HTTP error status, a body
cut short after N bytes (the server closes the connection), Range requests ignored, no Content-Length or a
false one, or a stall before the body or after its first N bytes (so a client can be killed mid-body).
Every request is recorded (path and Range header) so tests can see what the client asked for."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    truncate_at: int | None = None  # total bytes of the file sent before the connection is closed
    ignore_range: bool = False
    stall: float = 0.0  # seconds to wait after the headers, before the body (or after `stall_after` bytes of it)
    stall_after: int = 0  # bytes of the body sent before the stall
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    claim_length: int | None = None  # a Content-Length to announce instead of the true one


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                body, start = route.body, 0
                wanted = self.headers.get("Range")
                if wanted and not route.ignore_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if route.send_length:
                    claimed = route.claim_length if route.claim_length is not None else len(body) - start
                    self.send_header("Content-Length", str(claimed))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                end = len(body) if route.truncate_at is None else max(start, route.truncate_at)
                first = min(end, start + route.stall_after)
                try:
                    self.wfile.write(body[start:first])
                    self.wfile.flush()
                    if route.stall:
                        time.sleep(route.stall)
                    self.wfile.write(body[first:end])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, path: str, body: bytes = b"", **behaviour) -> str:
        """Serve `body` at `path` (with Route behaviour); the full URL."""
        self.routes[path] = Route(body, **behaviour)
        return self.url + path

    def ranges(self, path: str) -> list[str | None]:
        """The Range headers of the requests made for `path`, in order (None: no Range)."""
        return [r for p, r in self.requests if p == path]

    def start(self) -> "FileServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

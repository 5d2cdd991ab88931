"""A real HTTP server on loopback serving tests/feeds/*, for the feed tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

FILES = Path(__file__).parent / "feeds"
TYPES = {".xml": "application/xml", ".html": "text/html", ".bin": "application/octet-stream"}


@dataclass
class FeedServer:
    """Serves tests/feeds/NAME (any query string: one file, many feed URLs) with an ETag;
    answers 304 to a matching If-None-Match."""

    port: int = 0
    status: dict[str, int] = field(default_factory=dict)  # name -> forced status
    delay: float = 0.0  # seconds before each answer: lets concurrent pollers overlap
    redirects: dict[str, str] = field(default_factory=dict)  # name -> where it moved
    # (path with query, If-None-Match) of every request, in order
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def fetches(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)


@contextmanager
def serving() -> Iterator[FeedServer]:
    state = FeedServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.requests.append((self.path.lstrip("/"), self.headers.get("If-None-Match")))
            if state.delay:
                time.sleep(state.delay)  # the server's pace, not the test's clock
            name = urlsplit(self.path).path.lstrip("/")
            if name in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[name])
                self.end_headers()
                return
            if name in state.status:
                self.send_response(state.status[name])
                self.end_headers()
                return
            path = FILES / name
            if not path.is_file():
                self.send_error(404)
                return
            etag = f'"{path.stat().st_mtime_ns}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", TYPES.get(path.suffix, "text/plain"))
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()

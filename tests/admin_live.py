"""The app served by a real uvicorn on a loopback port, in a thread, with a frozen clock:
what the Chromium tests of the admin pages browse."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import uvicorn

from digestd.service import Service
from digestd.web.app import create_app

WAIT_S = 10.0


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # only the main thread may
        return None


def listening() -> socket.socket:
    """A loopback socket on a free port, listening (the base URL is known before serving)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def serving(service: Service, sock: socket.socket, now: datetime) -> Iterator[str]:
    """Serve ``service``'s app on ``sock`` as of ``now``; yields the base URL."""
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(service, clock=lambda: now),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()

"""The HTTP app behind the daemon's real uvicorn server on a loopback socket, in a thread
with its own event loop, for tests that need real connections (peers, proxies, timeouts)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from types import TracebackType

from digestd.config import http_url
from digestd.service import Service
from digestd.web.app import create_app
from digestd.web.connections import ConnectionLimits
from digestd.web.context import WebPolicy
from digestd.web.server import EmbeddedServer, http_server, listen_socket


class LiveServer:
    def __init__(
        self,
        service: Service,
        limits: ConnectionLimits | None = None,
        policy: WebPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        settings = service.settings
        self.service = service
        # Listening from here on (a free port of the listen host): no wait for the thread.
        self.sock = listen_socket(replace(settings, listen_port=0))
        self.port = int(self.sock.getsockname()[1])
        self.url = http_url(settings.listen_host, self.port)
        self.server: EmbeddedServer = http_server(
            create_app(service, policy, clock), settings, limits or ConnectionLimits()
        )
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            await self.service.close()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.server.should_exit = True  # uvicorn looks at it every 0.1 s
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server did not stop"

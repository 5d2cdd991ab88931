"""``digestd run``: the long-running process: the HTTP app (uvicorn) and the scheduler share
one asyncio loop. APScheduler is only the timer that wakes a tick
every minute; what is due lives in the database (APScheduler 3 cannot share a job store
between processes, and the deliveries table already is the source of truth).

SIGTERM/SIGINT: the HTTP server stops accepting and finishes its open requests; no new tick
starts; the tick in progress finishes its current batch (a batch's messages are in flight and
their outcomes must be recorded) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from digestd import feeds
from digestd.config import Settings
from digestd.errors import ConfigError, DigestdError
from digestd.service import Service
from digestd.web import create_app

log = logging.getLogger("digestd")

TICK_SECONDS = 60


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT and stops
    the server itself (uvicorn would otherwise replace our handlers and re-raise)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


def listen_socket(settings: Settings) -> socket.socket:
    """Bind before anything starts, so a taken port is one clear configuration error."""
    try:
        infos = socket.getaddrinfo(
            settings.listen_host, settings.listen_port, type=socket.SOCK_STREAM
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections queue from now on, even before uvicorn accepts
    except OSError as exc:
        raise ConfigError(
            "DIGESTD_LISTEN",
            f"cannot listen on {settings.listen_host}:{settings.listen_port}: "
            f"{exc.strerror or exc}",
        ) from exc
    sock.set_inheritable(True)
    return sock


def http_server(service: Service) -> uvicorn.Server:
    settings = service.settings
    config = uvicorn.Config(
        create_app(service),
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,  # keep digestd's logging
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    return _EmbeddedServer(config)


async def serve(
    service: Service,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sock: socket.socket | None = None,
) -> None:
    sock = sock or listen_socket(service.settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    busy = asyncio.Lock()

    async def tick() -> None:
        if stopping.is_set() or busy.locked():
            return
        async with busy:
            try:
                report = await service.tick(clock(), should_stop=stopping.is_set)
            except Exception:  # a bad tick must not kill the daemon; the next one retries
                log.exception("tick failed")
                return
            log.info(report.summary())

    async def poll_feeds() -> None:
        if stopping.is_set():
            return
        try:
            report = await asyncio.to_thread(feeds.poll_due, service.sessions, clock())
        except Exception:  # a broken feed run must not kill the daemon
            log.exception("feed polling failed")
            return
        if report.polled:
            log.info(
                "feeds: %d polled, %d unchanged, %d failed, %d articles",
                report.polled,
                report.unchanged,
                report.failed,
                report.articles,
            )

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        poll_feeds,
        "interval",
        seconds=TICK_SECONDS,
        next_run_time=clock(),
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        tick,
        "interval",
        seconds=TICK_SECONDS,
        next_run_time=clock(),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=TICK_SECONDS,
    )
    scheduler.start()
    server = http_server(service)
    http = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    http.add_done_callback(lambda _: stopping.set())  # the server died: stop everything
    log.info(
        "digestd running on http://%s:%s/ ; a tick every %ss; mail %s",
        service.settings.listen_host,
        service.settings.listen_port,
        TICK_SECONDS,
        f"to {service.settings.smtp.host}:{service.settings.smtp.port}"
        if service.settings.smtp
        else f"caught in {service.settings.mail_dir}/",
    )
    await stopping.wait()
    unexpected = http.done()
    log.info("stopping: finishing open requests and the batch in flight")
    scheduler.shutdown(wait=False)
    server.should_exit = True
    try:
        await http
    finally:
        async with busy:  # waits for a running tick to reach a batch boundary
            pass
        await service.close()
    if unexpected:
        raise DigestdError("the HTTP server stopped unexpectedly; see the log above")
    log.info("stopped")

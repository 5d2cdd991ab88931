"""``digestd run``: the long-running process: the HTTP app (uvicorn) and the scheduler share
one asyncio loop. APScheduler is only the timer that wakes the sending loop every
``DIGESTD_TICK_SECONDS`` (60); what is due lives in the database (APScheduler 3 cannot share a
job store between processes, and the deliveries table already is the source of truth).
Ticks run in their own task, never inside an APScheduler job: shutting the scheduler down
cancels running jobs, and a tick cancelled between claiming rows and recording their
outcomes would leave them leased until the lease runs out.

SIGTERM/SIGINT: the HTTP server stops accepting and finishes its open requests; no new tick
starts and no new batch is claimed; in the batch in flight, messages already handed to SMTP
finish (their outcomes are recorded) and the rest are released to the queue. The process
exits 0 within about one SMTP timeout (bounded by ``STOP_TIMEOUT``; anything still leased
then is picked up by the next worker when its lease expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.exc import InterfaceError, OperationalError

from digestd.config import Settings
from digestd.content import feeds
from digestd.errors import ConfigError, DigestdError, first_line
from digestd.inbound import lmtp
from digestd.service import Service
from digestd.web.app import create_app

log = logging.getLogger("digestd")

STOP_TIMEOUT = 60.0  # seconds to wait for the batch in flight on SIGTERM


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


async def start_inbound(service: Service) -> lmtp.Inbound | None:
    """The LMTP listener for bounces, complaints and mailto: unsubscribes, when
    ``DIGESTD_INBOUND_LISTEN`` is set (a taken port is a ConfigError before anything runs)."""
    settings = service.settings
    return await lmtp.start(
        settings.inbound_listen, service.sessions, service.tokens, settings.from_domain
    )


async def serve(
    service: Service,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sock: socket.socket | None = None,
) -> None:
    sock = sock or listen_socket(service.settings)
    inbound = await start_inbound(service)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    wake = asyncio.Event()
    tick_seconds = service.settings.delivery.tick_seconds

    async def nudge() -> None:
        wake.set()

    async def ticking() -> None:
        """One tick per wake-up; a wake-up during a tick runs one more right after it."""
        while not stopping.is_set():
            waiter = asyncio.create_task(wake.wait())
            stopper = asyncio.create_task(stopping.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stopping.is_set():
                return
            wake.clear()
            try:
                report = await service.tick(clock(), should_stop=stopping.is_set)
            except (OperationalError, InterfaceError) as exc:
                # The database went away (a restart, a failover, the network): expected in
                # operation, so one line, not a traceback. Nothing is lost: rows sent but
                # not recorded return when their lease ends, the rest are still queued.
                log.error(
                    "tick failed: database unavailable (%s); the next tick retries",
                    first_line(exc),
                )
                continue
            except Exception:  # a bad tick must not kill the daemon; the next one retries
                log.exception("tick failed")
                continue
            log.info(report.summary())

    ticks = asyncio.create_task(ticking(), name="ticks")

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
        seconds=60,
        next_run_time=clock(),
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        nudge,
        "interval",
        seconds=tick_seconds,
        next_run_time=clock(),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=int(tick_seconds),
    )
    scheduler.start()
    service.health.scheduler_started_at = time.monotonic()
    server = http_server(service)
    http = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    http.add_done_callback(lambda _: stopping.set())  # the server died: stop everything
    log.info(
        "digestd running on http://%s:%s/ ; a tick every %ss; mail %s",
        service.settings.listen_host,
        service.settings.listen_port,
        tick_seconds,
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
        try:  # the tick in flight stops at a batch boundary, releasing what it has not sent
            await asyncio.wait_for(ticks, STOP_TIMEOUT)
        except TimeoutError:
            log.warning(
                "the batch in flight did not finish in %.0fs; its leases will expire", STOP_TIMEOUT
            )
        await lmtp.stop(inbound)
        await service.close()
    if unexpected:
        raise DigestdError("the HTTP server stopped unexpectedly; see the log above")
    log.info("stopped")

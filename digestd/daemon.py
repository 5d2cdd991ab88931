"""``digestd run``: the long-running process: the HTTP app (uvicorn) and the scheduler share
one asyncio loop. APScheduler is only the timer that wakes the sending loop every
``DIGESTD_TICK_SECONDS`` (60); what is due lives in the database (APScheduler 3 cannot share a
job store between processes, and the deliveries table already is the source of truth).
Ticks run in their own task, never inside an APScheduler job: shutting the scheduler down
cancels running jobs, and a tick cancelled between claiming rows and recording their
outcomes would leave them leased until the lease runs out.

SIGTERM/SIGINT/SIGHUP: the HTTP server stops accepting and finishes its open requests
(within ``web.server.GRACEFUL_SECONDS``); no new tick starts and no new batch is claimed;
in the batch in flight, messages already handed to SMTP finish (their outcomes are
recorded) and the rest are released to the queue. The process
exits 0 within about one SMTP timeout (bounded by ``STOP_TIMEOUT``; anything still leased
then is picked up by the next worker when its lease expires).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.applications import Starlette

from digestd.content import feed_polling
from digestd.errors import DigestdError, first_line
from digestd.inbound import lmtp
from digestd.ops.retention import prune
from digestd.service import Service
from digestd.web.app import create_app
from digestd.web.connections import ConnectionLimits
from digestd.web.context import Web
from digestd.web.server import EmbeddedServer, http_server, listen_socket, open_files_limit

log = logging.getLogger("digestd")

STOP_TIMEOUT = 60.0  # seconds to wait for the batch in flight on SIGTERM
# SIGHUP too (a closed terminal, a reload habit): its default killed the process mid-send,
# leaving its batch leased and the messages on the wire to be sent again.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def serve(
    service: Service,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sock: socket.socket | None = None,
) -> None:
    await Daemon(service, clock).run(sock or listen_socket(service.settings))


async def start_inbound(service: Service, web: Web) -> lmtp.Inbound | None:
    """The LMTP listener for bounces, complaints and mailto: unsubscribes, when
    ``DIGESTD_INBOUND_LISTEN`` is set (a taken port is a ConfigError before anything runs).
    It emails links with the web's mailer, within the web's signup limits."""
    settings = service.settings
    return await lmtp.start(
        settings.inbound_listen,
        service.sessions,
        service.tokens,
        settings.from_domain,
        service.metrics,
        links=lmtp.LinkMailer(web.send_signup_email, web.policy.signup_limits),
    )


class Daemon:
    """The HTTP server, the timer and the tick loop of one ``digestd run``."""

    def __init__(self, service: Service, clock: Callable[[], datetime]) -> None:
        self.service = service
        self.clock = clock
        self.stopping = asyncio.Event()  # SIGTERM/SIGINT, or the HTTP server died
        self.wake = asyncio.Event()  # a tick is due

    async def run(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stopping.set)
        app = create_app(self.service)
        inbound = await start_inbound(self.service, app.state.web)
        ticks = asyncio.create_task(self.tick_loop(), name="ticks")
        scheduler = self.start_scheduler()
        server, http = self.start_http(sock, app)
        await self.stopping.wait()
        unexpected = http.done()
        log.info("stopping: finishing open requests and the batch in flight")
        scheduler.shutdown(wait=False)
        server.should_exit = True
        try:
            await http
        finally:
            await lmtp.stop(inbound)
            await self.finish(ticks)
        if unexpected:
            raise DigestdError("the HTTP server stopped unexpectedly; see the log above")
        log.info("stopped")

    def start_http(
        self, sock: socket.socket, app: Starlette
    ) -> tuple[EmbeddedServer, asyncio.Task[None]]:
        settings = self.service.settings
        limits = ConnectionLimits().fitted(open_files_limit())
        server = http_server(app, settings, limits)
        http = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        http.add_done_callback(lambda _: self.stopping.set())  # the server died: stop everything
        log.info(
            "digestd running on %s/ ; a tick every %ss; mail %s",
            settings.listen_url,
            settings.delivery.tick_seconds,
            f"to {settings.smtp.host}:{settings.smtp.port}"
            if settings.smtp
            else f"caught in {settings.mail_dir}/",
        )
        return server, http

    def start_scheduler(self) -> AsyncIOScheduler:
        tick_seconds = self.service.settings.delivery.tick_seconds
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self.poll_feeds,
            "interval",
            seconds=60,
            next_run_time=self.clock(),
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self.prune,
            "interval",
            hours=1,
            next_run_time=self.clock() + timedelta(minutes=5),  # not with the first tick
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self.nudge,
            "interval",
            seconds=tick_seconds,
            next_run_time=self.clock(),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(tick_seconds),
        )
        scheduler.start()
        self.service.health.scheduler_started_at = time.monotonic()
        return scheduler

    async def nudge(self) -> None:
        self.wake.set()

    async def tick_loop(self) -> None:
        """One tick per wake-up; a wake-up during a tick runs one more right after it."""
        while not self.stopping.is_set():
            waiter = asyncio.create_task(self.wake.wait())
            stopper = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self.stopping.is_set():
                return
            self.wake.clear()
            await self.tick()

    async def tick(self) -> None:
        try:
            report = await self.service.tick(self.clock(), should_stop=self.stopping.is_set)
        except (OperationalError, InterfaceError) as exc:
            # The database went away (a restart, a failover, the network): expected in
            # operation, so one line, not a traceback. Nothing is lost: rows sent but
            # not recorded return when their lease ends, the rest are still queued.
            log.error(
                "tick failed: database unavailable (%s); the next tick retries",
                first_line(exc),
            )
            return
        except Exception:  # a bad tick must not kill the daemon; the next one retries
            log.exception("tick failed")
            return
        # A quiet daemon ticks every minute: only a tick that did something is news.
        log.log(logging.DEBUG if report.idle else logging.INFO, "tick", extra=report.fields())

    async def poll_feeds(self) -> None:
        if self.stopping.is_set():
            return
        try:
            report = await asyncio.to_thread(
                feed_polling.poll_due,
                self.service.sessions,
                self.clock(),
                should_stop=self.stopping.is_set,  # SIGTERM: claim no further feed
            )
        except asyncio.CancelledError:  # stopping: the thread finishes the fetches under way
            log.info("feed polling stopped: the feeds not polled stay due")
            return
        except Exception:  # a broken feed run must not kill the daemon
            log.exception("feed polling failed")
            return
        if report.polled:
            log.info(
                "feeds",
                extra={
                    "polled": report.polled,
                    "unchanged": report.unchanged,
                    "failed": report.failed,
                    "articles": report.articles,
                    "rejected": report.rejected,
                },
            )

    async def prune(self) -> None:
        """Forget settled history older than DIGESTD_RETENTION_DAYS (in a thread, in short
        transactions: sending and the pages go on)."""
        if self.stopping.is_set():
            return
        days = self.service.settings.retention_days
        try:
            report = await asyncio.to_thread(prune, self.service.sessions, self.clock(), days)
        except (OperationalError, InterfaceError) as exc:
            log.warning("pruning history skipped: database unavailable (%s)", first_line(exc))
            return
        if report.deliveries or report.clicks or report.unmatched:
            log.info(
                "pruned history older than %d days: %d deliveries, %d digests, %d editions, "
                "%d clicks, %d unmatched bounce reports",
                days,
                report.deliveries,
                report.digests,
                report.editions,
                report.clicks,
                report.unmatched,
            )

    async def finish(self, ticks: asyncio.Task[None]) -> None:
        try:  # the tick in flight stops at a batch boundary, releasing what it has not sent
            await asyncio.wait_for(ticks, STOP_TIMEOUT)
        except TimeoutError:
            log.warning(
                "the batch in flight did not finish in %.0fs; its leases will expire", STOP_TIMEOUT
            )
        await self.service.close()

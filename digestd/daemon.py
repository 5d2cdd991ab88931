"""``digestd run``: the long-running process. APScheduler is only the timer that wakes a tick
every minute; what is due lives in the database (APScheduler 3 cannot share a job store
between processes, and the deliveries table already is the source of truth).

SIGTERM/SIGINT: no new tick starts; the tick in progress finishes its current batch (a
batch's messages are in flight and their outcomes must be recorded) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from digestd import feeds
from digestd.service import Service

log = logging.getLogger("digestd")

TICK_SECONDS = 60


async def serve(
    service: Service, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> None:
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
    log.info(
        "digestd running: a tick every %ss; mail %s",
        TICK_SECONDS,
        f"to {service.settings.smtp.host}:{service.settings.smtp.port}"
        if service.settings.smtp
        else f"caught in {service.settings.mail_dir}/",
    )
    await stopping.wait()
    log.info("stopping: finishing the batch in flight")
    scheduler.shutdown(wait=False)
    async with busy:  # waits for a running tick to reach a batch boundary
        pass
    await service.close()
    log.info("stopped")

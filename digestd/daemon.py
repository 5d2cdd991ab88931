"""``digestd run``: the long-running process. APScheduler is only the timer that wakes a tick
every minute; what is due lives in the database (APScheduler 3 cannot share a job store
between processes, and the deliveries table already is the source of truth).

SIGTERM/SIGINT: no new tick starts and no new batch is claimed; in the batch in flight,
messages already handed to SMTP finish (their outcomes must be recorded) and the rest are
released back to the queue. So the process exits 0 within about one SMTP timeout.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from digestd.service import Service

log = logging.getLogger("digestd")


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

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        tick,
        "interval",
        seconds=service.settings.delivery.tick_seconds,
        next_run_time=clock(),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=int(service.settings.delivery.tick_seconds),
    )
    scheduler.start()
    log.info(
        "digestd running: a tick every %ss; mail %s",
        service.settings.delivery.tick_seconds,
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

"""The sender's next batch: rows claimed from the queue, with their digests rendered.

:meth:`Batches.claim` takes rows (in a thread: the event loop keeps sending meanwhile) and
:meth:`Batches.render` makes sure every digest they need is rendered: from the composer's
cache, else rendered now, by the render worker processes when a batch is on the wire
(``in_pool``) or right here when nothing is.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from digestd.delivery.queue import Job, claim, unsendable
from digestd.mail.composer import Composer
from digestd.mail.prerender import DigestSource, RenderPool
from digestd.mail.template import MessageTemplate

T = TypeVar("T")


@dataclass
class Batch:
    jobs: list[Job]
    unsendable: list[str | None]  # per job: why it will not be sent, or None
    deadline: float  # monotonic: unsent messages are released after it (80 % of the lease)
    templates: dict[int, MessageTemplate] = field(default_factory=dict)  # by digest id


class Batches:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        composer: Composer,
        renders: RenderPool | None,
        *,
        size: int,
        lease: timedelta,
        monotonic: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.composer = composer
        self.renders = renders  # None: digests are always rendered in the sender
        self.size = size
        self.lease = lease
        self.monotonic = monotonic
        self.rendered = 0  # digests rendered (here or by a worker), for the tick's report
        # One thread for all of the sender's database work: a claim and a write of outcomes
        # never wait for each other's SQLite lock, and they happen in the order asked for.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digestd-queue")

    async def in_thread(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` in the database thread (the event loop goes on sending)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._thread, functools.partial(function, *args, **kwargs)
        )

    def close(self) -> None:
        self._thread.shutdown(wait=False)

    async def claim(self, now: datetime) -> Batch | None:
        # The deadline counts from the claim: time waiting behind the batch before counts.
        deadline = self.monotonic() + 0.8 * self.lease.total_seconds()
        jobs, reasons = await self.in_thread(self._claim, now)
        return Batch(jobs, reasons, deadline) if jobs else None

    def _claim(self, now: datetime) -> tuple[list[Job], list[str | None]]:
        jobs = claim(self.sessions, now, self.lease, self.size)
        if not jobs:
            return [], []
        with self.sessions() as session:
            return jobs, unsendable(session, jobs)

    async def render(self, batch: Batch, *, in_pool: bool) -> None:
        """Fill ``batch.templates``: every digest a sendable job of the batch needs."""
        wanted: dict[int, tuple[str, str]] = {}
        for job, why in zip(batch.jobs, batch.unsendable, strict=True):
            if why is None and job.digest_id is not None:
                wanted[job.digest_id] = (job.kind, job.period)
        missing: dict[int, tuple[str, str]] = {}
        for digest_id, edition in wanted.items():
            template = self.composer.cached(digest_id)
            if template is None:
                missing[digest_id] = edition
            else:
                batch.templates[digest_id] = template
        if not in_pool and self.renders is not None and len(batch.jobs) == self.size:
            self.renders.warm_up()  # a full batch: more are coming, to render ahead
        if not missing:
            return
        sources = await self.in_thread(self._sources, missing)
        self.rendered += len(sources)
        if in_pool and self.renders is not None:
            built = await self.renders.render(sources, self.composer.build)
        else:
            built = [self.composer.build(source) for source in sources]
        for source, template in zip(sources, built, strict=True):
            self.composer.remember(source.digest_id, template)
            batch.templates[source.digest_id] = template

    def lend_a_hand(self) -> bool:
        """Render one digest the render workers have not started (see RenderPool)."""
        return self.renders is not None and self.renders.lend_a_hand()

    def _sources(self, digests: dict[int, tuple[str, str]]) -> list[DigestSource]:
        with self.sessions() as session:
            return self.composer.sources(session, digests)

"""The one place that builds every part of digestd from Settings (like listmonk's main.go)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.db import make_engine, make_sessions, migrate
from digestd.delivery.sender import Composer, DeliveryReport, Sender
from digestd.delivery.transport import Transport, make_transport
from digestd.mail.prerender import RenderPool
from digestd.mail.render import Renderer
from digestd.ops.metrics import Metrics
from digestd.planning.enqueuer import Enqueuer
from digestd.planning.planner import EnqueueReport, Policy, enqueue_due
from digestd.tokens import Tokens

log = logging.getLogger("digestd")

# While the helper process is still enqueueing and the queue looks empty, how long the
# sender waits before looking again (it wakes at once when the helper finishes).
MORE_POLL_SECONDS = 0.05


@dataclass
class TickReport:
    now: datetime
    enqueued: EnqueueReport
    delivered: DeliveryReport

    def summary(self) -> str:
        q = self.enqueued.queued
        d = self.delivered
        return (
            f"tick {self.now.isoformat().replace('+00:00', 'Z')}: "
            f"queued {sum(q.values())} (daily {q['daily']}, weekly {q['weekly']}), "
            f"skipped {self.enqueued.empty} empty + {self.enqueued.late} late, "
            f"sent {d.sent}, failed {d.failed}, deferred {d.deferred}; "
            f"rendered {d.rendered} digest{'' if d.rendered == 1 else 's'}"
        )


@dataclass
class Health:
    """What /healthz reports beyond the database: is the scheduler still ticking?"""

    scheduler_started_at: float | None = None  # monotonic; None: no scheduler in this process
    last_tick_at: float | None = None  # monotonic
    stall_after: float = 300.0  # seconds without a finished tick (ticks are every 60 s)

    def scheduler_problem(self, now: float) -> str | None:
        if self.scheduler_started_at is None:
            return None
        since = self.last_tick_at or self.scheduler_started_at
        if now - since > self.stall_after:
            return f"no scheduler pass finished for {now - since:.0f} s"
        return None


@dataclass
class Service:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    tokens: Tokens
    composer: Composer
    transport: Transport
    policy: Policy
    renders: RenderPool | None = None  # None: digests are rendered in the sender
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}")
    metrics: Metrics = field(default_factory=Metrics)
    health: Health = field(default_factory=lambda: Health())

    def __post_init__(self) -> None:
        self.metrics.watch(self.sessions)

    @classmethod
    def build(
        cls, settings: Settings, *, auto_migrate: bool = True, transport: Transport | None = None
    ) -> Service:
        engine = make_engine(settings.database_url)
        if auto_migrate:
            migrate(engine)
        tokens = Tokens(settings.secret_keys)
        renderer = Renderer()
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessions(engine),
            tokens=tokens,
            composer=Composer(settings, tokens, renderer),
            transport=transport
            or make_transport(
                settings.smtp,
                settings.mail_dir,
                pool_size=settings.delivery.pool_size,
                max_per_connection=settings.delivery.max_per_connection,
            ),
            policy=Policy.from_settings(settings),
            # No process is started until a digest is rendered ahead of a batch on the wire.
            renders=RenderPool(settings.delivery.helper_processes, renderer.directory),
        )

    @cached_property
    def enqueuer(self) -> Enqueuer:
        # A helper process needs a database it can open too: not an in-memory SQLite.
        url = self.engine.url
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        return Enqueuer(
            self.sessions,
            url.render_as_string(hide_password=False),
            in_helper=self.settings.delivery.helper_processes > 0 and not in_memory,
        )

    @cached_property
    def _sender(self) -> Sender:
        # One per process: its failure-burst pause must outlive a tick.
        return Sender(
            self.sessions,
            self.composer,
            self.transport,
            catchup=timedelta(hours=self.settings.catchup_hours),
            tuning=self.settings.delivery,
            renders=self.renders,
            worker=self.worker,
            metrics=self.metrics,
        )

    def sender(self) -> Sender:
        return self._sender

    async def tick(
        self,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int], None] | None = None,
    ) -> TickReport:
        """One scheduler pass: enqueue every edition due at ``now`` and deliver the queue.

        With a helper process the two overlap: the helper commits a batch of queue rows at
        a time and the sender claims them as they come, until the helper is done and the
        queue is empty. Without one, enqueueing comes first (a thread here would only take
        turns with the sender at the GIL).
        """
        started = time.monotonic()
        if not self.enqueuer.in_helper:
            enqueued = await asyncio.to_thread(enqueue_due, self.sessions, self.policy, now)
            # Leases are compared across processes: sending starts at the time it really
            # is, not at the start of a tick whose enqueue took a while.
            elapsed = timedelta(seconds=time.monotonic() - started)
            delivered = await self.sender().deliver_due(now + elapsed, should_stop, on_batch)
        else:
            enqueuing = asyncio.ensure_future(self.enqueuer.enqueue(self.policy, now))

            async def more() -> bool:
                """Called when the queue looks empty: wait for the helper's next batch; once
                it has finished, one last look (False after that)."""
                if enqueuing.done():
                    return False
                await asyncio.wait({enqueuing}, timeout=MORE_POLL_SECONDS)
                return True

            def stop_enqueueing() -> None:
                # What the helper committed is queued; the next start plans the rest.
                enqueuing.cancel()
                self.enqueuer.close()

            try:
                delivered = await self.sender().deliver_due(now, should_stop, on_batch, more)
            except BaseException:
                stop_enqueueing()
                raise
            if should_stop() and not enqueuing.done():
                stop_enqueueing()
            try:
                enqueued = await enqueuing
            except asyncio.CancelledError:
                enqueued = EnqueueReport()
        self.metrics.last_tick.set_to_current_time()
        self.health.last_tick_at = time.monotonic()
        return TickReport(now, enqueued, delivered)

    async def close(self) -> None:
        if "enqueuer" in self.__dict__:  # only if a tick made one
            self.enqueuer.close()
        if "_sender" in self.__dict__:  # built (cached_property) by a tick
            self._sender.close()
        if self.renders is not None:
            self.renders.close()
        await self.transport.close()
        self.engine.dispose()

"""The one place that builds every part of digestd from Settings (like listmonk's main.go)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from digestd.config import Settings
from digestd.db import make_sessions, open_database
from digestd.delivery.helper_sending import SendingShare, Settled, Shared
from digestd.delivery.sender import DeliveryReport, Sender
from digestd.delivery.transport import SmtpPool, Transport, make_transport
from digestd.errors import first_line
from digestd.instruments import Metrics
from digestd.mail.composer import Composer
from digestd.mail.digests import DigestRenderer, Masthead
from digestd.ops import counts
from digestd.ops.metrics import watch
from digestd.ops.sunset import Sunset
from digestd.planning.archive import publish_due
from digestd.planning.enqueuer import Enqueuer, HelperDied
from digestd.planning.policy import EnqueueReport, Policy
from digestd.readers import clicks
from digestd.readers import sunset as reader_sunset
from digestd.readers.lifecycle import Schedule, resume_ended
from digestd.tokens import Tokens

log = logging.getLogger("digestd")


@dataclass
class TickReport:
    now: datetime
    enqueued: EnqueueReport
    delivered: DeliveryReport
    seconds: float = 0.0  # how long the tick took

    def fields(self) -> dict[str, int | float]:
        """The tick's numbers for its log line (``event=tick queued=… sent=…``)."""
        queued = self.enqueued.queued
        d = self.delivered
        return {
            "queued": sum(queued.values()),
            "queued_daily": queued["daily"],
            "queued_weekly": queued["weekly"],
            "empty": self.enqueued.empty,  # readers with nothing new
            "late": self.enqueued.late,  # due beyond the catch-up window
            "instead": self.enqueued.instead,  # Sunday dailies the recap replaces
            "sent": d.sent,
            "failed": d.failed,
            "deferred": d.deferred,
            "skipped": d.skipped,
            "rendered": self.enqueued.rendered,
            "seconds": round(self.seconds, 3),
        }

    def problems(self) -> str | None:
        """Why messages were not sent, the three commonest reasons with their counts."""
        common = self.delivered.problems.most_common(3)
        if not common:
            return None
        shown = "; ".join(f"{reason} ({n})" for reason, n in common)
        more = len(self.delivered.problems) - len(common)
        return shown + (f"; and {more} other reason{'s' if more > 1 else ''}" if more else "")

    @property
    def idle(self) -> bool:
        """Nothing planned, rendered or handled: the usual minute of a quiet daemon."""
        return not any(value for key, value in self.fields().items() if key != "seconds")

    def summary(self) -> str:
        q = self.enqueued.queued
        d = self.delivered
        r = self.enqueued.rendered
        u = self.enqueued.unrenderable
        return (
            f"tick {self.now.isoformat().replace('+00:00', 'Z')}: "
            f"queued {sum(q.values())} (daily {q['daily']}, weekly {q['weekly']}), "
            f"skipped {self.enqueued.empty} empty + {self.enqueued.late} late"
            + (f" + {self.enqueued.instead} recap instead" if self.enqueued.instead else "")
            + ", "
            f"sent {d.sent}, failed {d.failed}, deferred {d.deferred}; "
            f"rendered {r} digest{'' if r == 1 else 's'}"
            + (f"; {u} not sent: their digest could not be rendered" if u else "")
            + (
                f"; {d.taken_over} outcomes left to the worker that took their rows over"
                if d.taken_over
                else ""
            )
        )


@dataclass
class Health:
    """What /healthz reports beyond the database: is the work still moving?

    Liveness is progress, not a finished tick: a million-reader edition, or one sent
    through a rate-limited relay, runs for many minutes, and a probe that restarted the
    daemon then would cut the edition short. The scheduler beats when a tick starts, for
    each batch planned and each message handed over; only silence for ``stall_after``
    while it is running means it is stuck.
    """

    scheduler_started_at: float | None = None  # monotonic; None: no scheduler in this process
    last_beat_at: float | None = None  # monotonic
    stall_after: float = 300.0  # seconds of silence (ticks are every 60 s)
    clock: Callable[[], float] = time.monotonic

    def beat(self) -> None:
        self.last_beat_at = self.clock()

    def scheduler_problem(self) -> str | None:
        if self.scheduler_started_at is None:
            return None
        since = self.last_beat_at or self.scheduler_started_at
        silent = self.clock() - since
        if silent > self.stall_after:
            return f"no progress for {silent:.0f} s"
        return None


class Service:
    """Every part of digestd, built from Settings once (:meth:`build`)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        transport: Transport | None = None,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.monotonic = monotonic  # the sender's clock (tests move it)
        self.engine = engine
        self.sessions = make_sessions(engine)
        self.tokens = Tokens(settings.secret_keys)
        self.composer = Composer(settings, self.tokens)
        self.renderer = DigestRenderer(Masthead.from_settings(settings))
        self.transport = transport or make_transport(
            settings.smtp,
            settings.mail_dir,
            pool_size=settings.delivery.pool_size,
            max_per_connection=settings.delivery.max_per_connection,
        )
        self.policy = Policy.from_settings(settings)
        self.metrics = metrics or Metrics()
        watch(self.metrics, self.sessions)
        self.health = Health()
        self._enqueuer: Enqueuer | None = None
        self._sender: Sender | None = None
        self._sunset: Sunset | None = None
        self._pool_back: asyncio.Future[None] | None = None  # the helper's connections back

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        transport: Transport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Service:
        """On a database already at this digestd's schema (:class:`SchemaError` if not):
        only ``digestd migrate`` and ``run`` change the schema, before building this."""
        engine = open_database(settings.database_url)
        return cls(settings, engine, transport=transport, monotonic=monotonic)

    @property
    def enqueuer(self) -> Enqueuer:
        if self._enqueuer is None:
            # A helper process needs a database it can open too: not an in-memory SQLite.
            url = self.engine.url
            in_memory = url.get_backend_name() == "sqlite" and url.database in (
                None,
                "",
                ":memory:",
            )
            self._enqueuer = Enqueuer(
                self.sessions,
                url.render_as_string(hide_password=False),
                self.renderer,
                in_helper=self.settings.delivery.helper_processes > 0 and not in_memory,
            )
        return self._enqueuer

    @property
    def sender(self) -> Sender:
        """One per process: its failure-burst pause must outlive a tick."""
        if self._sender is None:
            self._sender = Sender.build(
                self.settings,
                self.sessions,
                self.renderer,
                self.composer,
                self.transport,
                metrics=self.metrics,
                monotonic=self.monotonic,
                heartbeat=self.health.beat,
            )
        return self._sender

    async def tick(
        self,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int], None] | None = None,
        on_planned: Callable[[int], None] | None = None,
    ) -> TickReport:
        """One scheduler pass: plan every edition due at ``now`` and deliver the queue.

        With a helper process the two overlap: the helper commits a batch of queue rows at
        a time and the sender claims them as they come, until the helper is done and the
        queue is empty. Without one, planning comes first (a thread here would only take
        turns with the sender at the GIL). ``on_planned`` hears, once planning is over, how
        many messages are left to settle (a progress bar's total).
        """
        started = time.monotonic()
        self.health.beat()
        await asyncio.to_thread(self._resume_ended_pauses, now)
        await asyncio.to_thread(self.settle_clicks, now)
        if self.sunset.due(now):
            await self.sunset.run(now)
        if self.enqueuer.in_helper:
            enqueued, delivered = await self._overlapped(now, should_stop, on_batch, on_planned)
        else:
            enqueued = await self.enqueuer.enqueue(self.policy, now, self.health.beat)
            if on_planned is not None:
                on_planned(self._waiting(now))
            # Leases are compared across processes: sending starts at the time it really
            # is, not at the start of a tick whose planning took a while.
            elapsed = timedelta(seconds=time.monotonic() - started)
            delivered = await self.sender.deliver_due(now + elapsed, should_stop, on_batch)
        await asyncio.to_thread(
            publish_due,
            self.sessions,
            self.policy,
            self.renderer,
            self.settings.default_timezone,
            now,
            should_stop,
        )
        self.metrics.last_tick.set_to_current_time()
        self.health.beat()
        report = TickReport(now, enqueued, delivered, time.monotonic() - started)
        problems = report.problems()
        if problems:  # the count is in the tick's line; here is why
            log.warning(
                "%d deferred, %d failed: %s", delivered.deferred, delivered.failed, problems
            )
        return report

    def _resume_ended_pauses(self, now: datetime) -> None:
        schedule = Schedule(
            self.settings.daily_time, self.settings.weekly_time, self.settings.sunday_daily
        )
        with self.sessions.begin() as session:
            resumed = resume_ended(session, now, schedule)
        if resumed:
            log.info("pauses ended: %d readers resumed", resumed)

    def settle_clicks(self, now: datetime) -> clicks.Settled:
        """Count the clicks that came in (:mod:`digestd.readers.clicks`); in reader mode a
        click brings a reader back from their sunset (:mod:`digestd.readers.sunset`)."""
        schedule = Schedule(self.settings.daily_time, self.settings.weekly_time)

        def restore(session: Session, latest: dict[int, datetime]) -> None:
            restored = reader_sunset.restore(session, latest, now, schedule)
            if restored:
                log.info("sunset: %d readers back after a click", restored)

        per_reader = self.settings.tracks_readers
        return clicks.settle(self.sessions, now, per_reader, restore if per_reader else None)

    @property
    def sunset(self) -> Sunset:
        if self._sunset is None:
            self._sunset = Sunset(self.settings, self.sessions, self.composer, self.transport)
        return self._sunset

    def _waiting(self, now: datetime) -> int:
        with self.sessions() as session:
            return counts.waiting(session, now, self.sender.store.worker.label)

    async def _overlapped(
        self,
        now: datetime,
        should_stop: Callable[[], bool],
        on_batch: Callable[[int], None] | None,
        on_planned: Callable[[int], None] | None = None,
    ) -> tuple[EnqueueReport, DeliveryReport]:
        """Plan in the helper while sending what it has committed so far."""
        committed = asyncio.Event()  # the helper committed a batch of queue rows

        def progress() -> None:
            committed.set()
            self.health.beat()

        waiting = await asyncio.to_thread(self._waiting, now) if on_planned else 0
        settling = _Settling(waiting, on_batch, on_planned)
        planning = asyncio.ensure_future(self._plan(now, progress, settling))
        planning.add_done_callback(settling.planned)

        async def more() -> bool:
            """Called when the queue looks empty: wait for the helper's next batch (no
            claims in a loop meanwhile); once it has finished, one last look."""
            if planning.done():
                return False
            if not committed.is_set():
                waiter = asyncio.ensure_future(committed.wait())
                # At most a second at a time: a stop asked meanwhile is noticed soon.
                await asyncio.wait(
                    {planning, waiter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
            committed.clear()
            return True

        def stop_planning() -> None:
            # What the helper committed is queued; the next start plans the rest.
            planning.cancel()
            self.enqueuer.close()

        try:
            delivered = await self.sender.deliver_due(now, should_stop, settling.batch, more)
        except Exception:
            await self._end_helper(stop_planning)
            raise
        except BaseException:  # cancelled: a forced shutdown waits for nobody
            stop_planning()
            raise
        if should_stop() and not planning.done():
            stop_planning()
        try:
            enqueued = await planning
        except asyncio.CancelledError:  # stopped: what the helper had committed is queued
            enqueued = self.enqueuer.committed
        delivered.add(await self._helper_share(now, should_stop, settling))
        return enqueued, delivered

    async def _end_helper(self, stop_planning: Callable[[], None]) -> None:
        """After an error here: a helper that sends is asked to stop and waited for (killed,
        its messages on the wire would be sent again), one that plans is stopped."""
        sending = self.enqueuer.after_planning
        if sending is None:
            stop_planning()
            return
        self.enqueuer.ask_to_stop()
        try:
            await asyncio.wait({sending})
        finally:
            self.enqueuer.after_planning = None
        failed = None if sending.cancelled() else sending.exception()
        if failed is not None:  # most likely the same error as ours: one line, not two traces
            log.warning("the helper process's sending ended too: %s", first_line(failed))

    def _sending_share(self) -> SendingShare | None:
        """The helper's share of the sending, if it should send once it has planned: with
        the pool this service built (not a test's transport), and not while paused."""
        if not isinstance(self.transport, SmtpPool) or self.sender.paused:
            return None
        return SendingShare.of(self.settings)

    async def _plan(
        self, now: datetime, progress: Callable[[], None], settling: _Settling
    ) -> EnqueueReport:
        """Plan in the helper; then it sends too, with its share of the pool once this
        process has closed as many of its connections."""
        share = self._sending_share()
        report = await self.enqueuer.enqueue(self.policy, now, progress, share)
        if share is not None and self.enqueuer.holding:
            assert isinstance(self.transport, SmtpPool)
            await self.transport.limit(self.transport.size - share.connections)
            if not self.enqueuer.go_on(self._heard(settling)):
                await self.transport.limit(self.transport.size)  # it has gone: all ours
            elif self.enqueuer.after_planning is not None:
                self.enqueuer.after_planning.add_done_callback(self._helper_done)
        return report

    def _helper_done(self, sending: asyncio.Future[Any]) -> None:
        """The helper's sending is over: its connections are ours again, and if it died,
        it is reaped now, so its claims are a dead worker's (delivery.worker) while this
        process is still sending, not after."""
        if not sending.cancelled() and isinstance(sending.exception(), HelperDied):
            self.enqueuer.close()
        if isinstance(self.transport, SmtpPool):
            self._pool_back = asyncio.ensure_future(self.transport.limit(self.transport.size))

    def _heard(self, settling: _Settling) -> Callable[[Any], None]:
        def heard(news: Any) -> None:
            if isinstance(news, Settled):
                self.metrics.absorb(news.tally)
                settling.batch(news.count)
                self.health.beat()

        return heard

    async def _helper_share(
        self, now: datetime, should_stop: Callable[[], bool], settling: _Settling
    ) -> DeliveryReport:
        """Wait for the helper's sending to end (asking it to stop when we are told to)."""
        sending = self.enqueuer.after_planning
        if sending is None:
            return DeliveryReport()
        shared: Shared | None = None
        try:
            while not sending.done():
                if should_stop():
                    self.enqueuer.ask_to_stop()
                await asyncio.wait({sending}, timeout=1.0)
            shared = sending.result()
        except HelperDied:
            # Reaped here, its claims are a dead worker's (delivery.worker): ours at once.
            log.warning("the helper process died while sending; the rest is sent here")
            self.enqueuer.close()
        finally:
            self.enqueuer.after_planning = None
            if isinstance(self.transport, SmtpPool):
                await self.transport.limit(self.transport.size)
        if shared is None:
            return await self.sender.deliver_due(now, should_stop, settling.batch)
        self.metrics.absorb(shared.tally)
        return shared.report

    async def close(self) -> None:
        if self._enqueuer is not None:
            self._enqueuer.close()
        if self._sender is not None:
            self._sender.close()
        await self.transport.close()
        self.engine.dispose()


class _Settling:
    """What a tick's progress bar hears while the helper plans: each batch settled, and,
    once planning is over, how many are left: those waiting before it began and those it
    queued, less those settled meanwhile. Counted here rather than read back from the
    queue, where a batch the sender has written but not yet reported was missed."""

    def __init__(
        self,
        waiting: int,
        on_batch: Callable[[int], None] | None,
        on_planned: Callable[[int], None] | None,
    ) -> None:
        self.waiting = waiting
        self.settled = 0
        self.on_batch = on_batch
        self.on_planned = on_planned

    def batch(self, settled: int) -> None:
        self.settled += settled
        if self.on_batch is not None:
            self.on_batch(settled)

    def planned(self, done: asyncio.Future[EnqueueReport]) -> None:
        if self.on_planned is None or done.cancelled() or done.exception() is not None:
            return  # a failure is raised where the planning is awaited
        queued = sum(done.result().queued.values())
        self.on_planned(self.waiting + queued - self.settled)

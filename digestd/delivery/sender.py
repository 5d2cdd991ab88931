"""Deliver the send queue: a batch at a time, claim → compose → send → record.

Each batch is claimed from the queue store (:mod:`digestd.delivery.queue`), its digests'
stored templates are loaded (:mod:`digestd.delivery.templates`), each message is composed
by substitution just before it leaves, and outcomes are written in the background
(:mod:`digestd.delivery.recorder`) while the following messages are on the wire. The next
batch is claimed while this one is sending, one batch ahead, no more.

Crash semantics: a message that left but whose outcome was not written (kill -9 between
the server's reply and the UPDATE) is sent again when its lease expires: at most one batch
per worker may repeat (no message starts while a batch's worth of sent messages is
unrecorded), nothing is ever skipped. A batch claimed ahead and not started returns to the
queue when its lease expires. Message-IDs are deterministic per delivery, so a repeat
carries the same Message-ID.

A batch never outlives its lease: messages not started by 80 % of the lease (counted from
the claim, so time spent waiting behind the previous batch counts), or when the process is
told to stop, or while sending is paused after a burst of failures, are *released* (back to
``queued``, attempt not counted) instead of being sent late. So are those not started while
a write of outcomes is failing (the database went away): they could not be recorded
either, and each would go out again; the next batch waits for that write.

Each message is composed and handed over by :mod:`digestd.delivery.handover`, which also
holds the breakers that pause sending.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import LEASE_SHARE_AFTER_LAST_START, DeliveryTuning, Settings
from digestd.delivery.handover import HandOver
from digestd.delivery.limits import Limits
from digestd.delivery.outcomes import (
    RELEASED,
    Broken,
    Outcomes,
    Result,
    Skipped,
    Unsendable,
    label,
)
from digestd.delivery.queue import Job, Outcome, QueueStore
from digestd.delivery.queue_store import queue_store
from digestd.delivery.recorder import Recorder
from digestd.delivery.storms import reply_gist
from digestd.delivery.templates import TemplateCache
from digestd.delivery.transport import Transport
from digestd.delivery.worker import Worker
from digestd.errors import first_line
from digestd.instruments import Metrics
from digestd.mail.composer import Composer
from digestd.mail.digests import DigestRenderer, StoredDigest

log = logging.getLogger(__name__)
T = TypeVar("T")

# Retrying a failed write of outcomes: from a quarter second, doubling up to 10 s, until a
# tenth of the lease before the claims expire (_Run._margin).
RECORD_RETRY_FIRST = 0.25
RECORD_RETRY_CAP = 10.0
RECORD_RETRY_SHARE = 0.1


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    released: int = 0
    # Outcomes not written: another worker had taken their rows over (this one stalled past
    # its lease); counted above as what this worker saw, recorded by that one.
    taken_over: int = 0
    paused: bool = False
    # Why messages were deferred or failed, without their addresses: a tick's warning.
    problems: Counter[str] = field(default_factory=Counter)

    def add(self, other: DeliveryReport) -> None:
        """Count in what another sender did in the same tick (the helper's share)."""
        self.sent += other.sent
        self.failed += other.failed
        self.deferred += other.deferred
        self.skipped += other.skipped
        self.released += other.released
        self.taken_over += other.taken_over
        self.paused = self.paused or other.paused
        self.problems.update(other.problems)


@dataclass
class Batch:
    jobs: list[Job]
    unsendable: list[str | None]  # per job: why it will not be sent, or None
    digests: dict[int, StoredDigest]  # by digest id
    deadline: float  # monotonic: unsent messages are released after it (80 % of the lease)


class Sender:
    def __init__(
        self,
        store: QueueStore,
        templates: TemplateCache,
        composer: Composer,
        transport: Transport,
        *,
        catchup: timedelta,
        tuning: DeliveryTuning | None = None,
        limits: Limits | None = None,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.sleep = sleep
        self.heartbeat = heartbeat  # progress, for liveness (Service.health)
        self.templates = templates
        self.composer = composer
        self.transport = transport
        self.tuning = tuning or DeliveryTuning()
        self.limits = limits or Limits(
            self.tuning.rate, self.tuning.domain_rate, self.tuning.domain_concurrency
        )
        self.monotonic = monotonic
        self.metrics = metrics or Metrics()
        self.lease = timedelta(seconds=self.tuning.lease_seconds)
        self.outcomes = Outcomes(
            catchup, self.tuning.max_attempts, rng, relay=getattr(transport, "name", None)
        )
        self.handover = HandOver(
            composer,
            transport,
            self.limits,
            self.tuning,
            self.outcomes,
            monotonic=monotonic,
            metrics=self.metrics,
            heartbeat=lambda: self.heartbeat(),
        )
        # One thread for all of the sender's database work: a claim and a write of outcomes
        # never wait for each other's SQLite lock, and they happen in the order asked for.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digestd-queue")

    @classmethod
    def build(
        cls,
        settings: Settings,
        sessions: sessionmaker[Session],
        renderer: DigestRenderer,
        composer: Composer,
        transport: Transport,
        *,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> Sender:
        """The sender of this process, as ``settings`` tune it."""
        store = queue_store(
            sessions, Worker.this_process(), max_attempts=settings.delivery.max_attempts
        )
        return cls(
            store,
            TemplateCache(sessions, renderer),
            composer,
            transport,
            catchup=timedelta(hours=settings.catchup_hours),
            tuning=settings.delivery,
            monotonic=monotonic,
            metrics=metrics,
            heartbeat=heartbeat,
        )

    def close(self) -> None:
        self._thread.shutdown(wait=False)

    @property
    def paused(self) -> bool:
        return self.handover.paused

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` in the database thread (the event loop goes on sending)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(function, *args))

    async def deliver_due(
        self,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int], None] | None = None,
        more: Callable[[], Awaitable[bool]] | None = None,
    ) -> DeliveryReport:
        """Send every row due at ``now``, a batch at a time; rows deferred to later stay queued.

        ``now`` may be injected (tests, ``tick --now``); time spent sending is added to it,
        so leases stay honest during a long edition. ``on_batch`` (a progress bar) hears how
        many messages each write of outcomes settled. ``more``, when the queue looks empty,
        waits for rows still being planned and says whether to look again.
        """
        run = _Run(self, now, should_stop, on_batch, more)
        self.handover.begin_send()
        try:
            while (batch := await run.next_batch()) is not None:
                await run.send(batch)
        except asyncio.CancelledError:
            raise  # forced shutdown: what is claimed returns when its lease expires
        except Exception:
            await run.abandon()
            raise
        run.release_held()
        await run.recorder.close()
        run.report.paused = run.report.paused or self.paused
        return run.report

    async def claim(self, now: datetime) -> Batch | None:
        self.heartbeat()
        # The deadline counts from the claim: time waiting behind the batch before counts.
        share = 1 - LEASE_SHARE_AFTER_LAST_START
        deadline = self.monotonic() + share * self.lease.total_seconds()
        jobs, unsendable, digests = await self.in_thread(self._claim, now)
        return Batch(jobs, unsendable, digests, deadline) if jobs else None

    def _claim(self, now: datetime) -> tuple[list[Job], list[str | None], dict[int, StoredDigest]]:
        jobs = self.store.claim(now, self.lease, self.tuning.batch)
        if not jobs:
            return [], [], {}
        unsendable = self.store.unsendable(jobs)
        wanted = {j.digest_id for j, why in zip(jobs, unsendable, strict=True) if why is None}
        return jobs, unsendable, self.templates.get(i for i in wanted if i is not None)


class _Run:
    """One ``deliver_due`` call: its clock, report, outcome recorder and batch claimed ahead."""

    def __init__(
        self,
        sender: Sender,
        now: datetime,
        should_stop: Callable[[], bool],
        on_batch: Callable[[int], None] | None,
        more: Callable[[], Awaitable[bool]] | None,
    ) -> None:
        self.sender = sender
        self.started = sender.monotonic()
        self.now = now
        self.should_stop = should_stop
        self.on_batch = on_batch
        self.more = more
        self.report = DeliveryReport()
        self.recorder: Recorder[tuple[Job, Result]] = Recorder(self._record, sender.tuning.batch)
        self.ahead: asyncio.Task[Batch | None] | None = None
        self.took = 0.0  # seconds the last batch took to send
        # Refusals waiting for their run of identical refusals to be decided (storms.py).
        self.held: list[tuple[Job, Result]] = []
        # A write of outcomes failed and is being retried: no message starts meanwhile.
        self.stalled = False

    def clock(self) -> datetime:
        return self.now + timedelta(seconds=self.sender.monotonic() - self.started)

    def halted(self) -> bool:
        if self.should_stop():
            return True
        if self.sender.paused:
            self.report.paused = True
            return True
        return self.recorder.failed is not None

    async def next_batch(self) -> Batch | None:
        """The next batch: the one claimed ahead, else a fresh claim once every outcome so
        far is written (rows released before are claimable again); when the queue looks
        empty, ``more`` may say rows are still coming."""
        if self.stalled:  # nothing more is sent before what was sent can be recorded
            await self.recorder.settle()
        batch = None
        if self.ahead is not None:
            batch, self.ahead = await self.ahead, None
        while batch is None:
            if self.halted():
                return None
            await self.recorder.settle()
            batch = await self.sender.claim(self.clock())
            if batch is None and (self.more is None or not await self.more()):
                return None
        if self.halted():
            self.release(batch)
            return None
        # Claim the next batch now, unless it would wait so long behind this one that its
        # lease ran out before its turn (a slow, rate-limited relay).
        if self.took < 0.4 * self.sender.tuning.lease_seconds:
            self.ahead = asyncio.create_task(self.sender.claim(self.clock()))
        return batch

    async def send(self, batch: Batch) -> None:
        began = self.sender.monotonic()
        work = iter(zip(batch.jobs, batch.unsendable, strict=True))
        errors: list[BaseException] = []

        async def lane() -> None:
            # Lanes take the batch's messages in order, one at a time each, as many lanes
            # as messages may usefully be in flight: a task per lane, not one per message.
            for job, why in work:
                try:
                    await self._send_one(job, why, batch)
                except Exception as exc:  # raised once every message has had its turn
                    errors.append(exc)

        lanes = min(max(1, self.sender.transport.concurrency), len(batch.jobs))
        # Every lane runs to its end before this returns (return_exceptions): an unexpected
        # error in one must not leave others sending with nobody to record their outcome.
        results = await asyncio.gather(*(lane() for _ in range(lanes)), return_exceptions=True)
        self.took = self.sender.monotonic() - began
        self.recorder.flush()
        errors += (result for result in results if isinstance(result, BaseException))
        if errors:
            raise errors[0]

    async def _send_one(self, job: Job, why: str | None, batch: Batch) -> None:
        if why is not None or job.digest_id is None:
            self.recorder.add((job, Skipped(why or "no content")))
            return
        late = self.sender.outcomes.too_late(job, self.clock())
        if late is not None:
            self.recorder.add((job, late))
            return
        stored = batch.digests.get(job.digest_id)
        template = stored.template if stored is not None else None
        if template is None:
            reason = stored.error if stored is not None else None
            self.recorder.add((job, Unsendable(reason or "its digest no longer exists")))
            return

        def hold() -> bool:
            return (
                self.should_stop()
                or self.sender.paused
                or self.sender.monotonic() > batch.deadline
                or self.recorder.failed is not None
                or self.stalled
            )

        if hold():
            self.recorder.add((job, RELEASED))
            return
        await self.recorder.admit()
        result: Result
        try:
            result = await self.sender.handover.transmit(job, template, hold, self.clock)
        except Exception as exc:  # this message only: the rest of the queue goes on
            log.warning("message %d failed: %s", job.delivery_id, exc, exc_info=True)
            result = Broken(f"{exc.__class__.__name__}: {exc}")
        self.recorder.add((job, result), admitted=True)

    def release(self, batch: Batch) -> None:
        for job in batch.jobs:
            self.recorder.add((job, RELEASED))
        self.recorder.flush()

    async def abandon(self) -> None:
        """After an error: the batch claimed ahead goes back, the outcomes known are written.
        Failures here are logged, not raised: the error that got us here is the one to see."""
        if self.ahead is not None:
            try:
                batch = await self.ahead
            except Exception:
                batch = None  # it failed on its own (the same database error, most likely)
            if batch is not None:
                self.release(batch)
        self.release_held()
        try:
            await self.recorder.close()
        except Exception as exc:
            log.warning(
                "could not record the batch in flight (%s); its leases will expire",
                first_line(exc),
            )

    def release_held(self) -> None:
        """No more refusals are coming in this call: the runs held for are decided."""
        handover = self.sender.handover
        handover.end_send(handover.last_failure)
        held, self.held = self.held, []
        for entry in held:
            self.recorder.add(entry)

    async def _record(self, entries: list[tuple[Job, Result]]) -> None:
        """Write ``entries`` (counted into the report here, on the event loop)."""
        now = self.clock()
        decided, self.held = self.sender.handover.refusals.sort_out([*self.held, *entries])
        entries = [(job, result) for job, result, _ in decided]
        outcomes = [
            self.sender.outcomes.of(job, result, now, storm=storm) for job, result, storm in decided
        ]
        settled = 0
        for (job, result), outcome in zip(entries, outcomes, strict=True):
            if result is RELEASED:
                self.report.released += 1
                continue
            settled += 1
            name = label(result, outcome)
            self.sender.metrics.message(job.kind, name)
            self._count(name, outcome.last_error)
        await self._write(outcomes, now)
        if self.on_batch is not None and settled:
            self.on_batch(settled)

    async def _write(self, outcomes: list[Outcome], now: datetime) -> None:
        """Write outcomes, retrying a database blip while the claims still have margin:
        each message not recorded is one the next worker sends again."""
        delay = RECORD_RETRY_FIRST
        give_up = self.sender.monotonic() + self._margin(outcomes)
        while True:
            try:
                written = await self.sender.in_thread(self.sender.store.record, outcomes, now)
                self.stalled = False
                self._taken_over(len(outcomes) - written)
                return
            except (OperationalError, InterfaceError) as exc:
                # Messages sent from here on could not be recorded either: each would go
                # out again after its lease. The rest of the batch is released instead.
                self.stalled = True
                if self.sender.monotonic() + delay > give_up:
                    raise
                log.warning(
                    "could not record %d outcomes (%s); trying again in %.1fs",
                    len(outcomes),
                    first_line(exc),
                    delay,
                )
            await self.sender.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_CAP)

    def _taken_over(self, lost: int) -> None:
        if lost > 0:
            self.report.taken_over += lost
            log.warning(
                "%d outcomes were not recorded: their rows were another worker's by then "
                "(this one stalled past its lease); that worker sends and records them",
                lost,
            )

    def _margin(self, outcomes: list[Outcome]) -> float:
        """Seconds to keep retrying: until the earliest of these claims is about to expire
        (a tenth of the lease before it, for clocks that disagree a little), and never less
        than a tenth of the lease. Past that, another worker may take the rows and send them
        again; until then a database that comes back loses nothing."""
        # Leases are the database's clock; the wall clock is what stands closest to it (the
        # tick's own ``now`` may be an operator's ``--now`` days away).
        wall = datetime.now(UTC)
        lease = self.sender.lease.total_seconds()
        earliest = min((outcome.job.lease for outcome in outcomes), default=wall)
        if earliest.tzinfo is None:  # SQLite hands instants back naive, in UTC
            earliest = earliest.replace(tzinfo=UTC)
        left = (earliest - wall).total_seconds() - RECORD_RETRY_SHARE * lease
        return max(RECORD_RETRY_SHARE * lease, left)

    def _count(self, name: str, error: str | None) -> None:
        if name == "sent":
            self.report.sent += 1
        elif name == "skipped":
            self.report.skipped += 1
        elif name == "deferred":
            self.report.deferred += 1
            self.report.problems[reply_gist(error or "no reason recorded")] += 1
        else:  # bounced or failed
            self.report.failed += 1
            self.report.problems[reply_gist(error or "no reason recorded")] += 1

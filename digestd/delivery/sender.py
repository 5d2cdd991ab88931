"""Deliver the send queue: claim due rows, compose each message, push it, record the outcome.

Claiming (:mod:`digestd.delivery.queue`): rows move ``queued → sending`` under a lease, picked
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never take the same row;
the lease is the claim's fencing token, and outcomes are written only where it is still
ours. Rows come in (due time, digest) order, so each digest is rendered once per process.

Overlap: while one batch is on the wire, the next one is claimed and its new digests are
rendered by a worker process (:mod:`digestd.delivery.batches`,
:mod:`digestd.mail.prerender`), and the outcomes of what was sent are written in the
background (:mod:`digestd.delivery.recorder`). One batch ahead, no more.

Crash semantics: a message that left but whose outcome was not recorded (kill -9 between
``sendmail`` and the UPDATE) is sent again when its lease expires: the in-flight window
(at most one batch per worker: no message starts while a batch's worth of sent messages
is unrecorded) may repeat, nothing is ever skipped. A batch claimed ahead and not started
returns to the queue when its lease expires. Message-IDs are deterministic per delivery,
so a repeat carries the same Message-ID.

A batch never outlives its lease: messages not started by 80 % of the lease (counted from
the claim, so time spent waiting behind the previous batch counts), or when the process
is told to stop, or while sending is paused after a burst of failures, are *released*
(back to ``queued``, attempt not counted) instead of being sent late; so is a whole batch
claimed ahead when the sender stops or pauses before its turn.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from digestd.config import DeliveryTuning
from digestd.delivery.batches import Batch, Batches
from digestd.delivery.limits import Limits
from digestd.delivery.queue import Job, write_outcomes
from digestd.delivery.recorder import Recorder
from digestd.delivery.transport import Transport
from digestd.errors import DeliveryError, PermanentDeliveryError, first_line
from digestd.mail.composer import Composer, Links
from digestd.mail.prerender import RenderPool
from digestd.mail.template import MessageTemplate, ascii_address
from digestd.models import DeliveryStatus
from digestd.ops.metrics import Metrics
from digestd.readers.suppression import SOFT_BOUNCE_MARK

__all__ = ["Composer", "DeliveryReport", "Links", "Sender"]

log = logging.getLogger(__name__)

# Waiting for the batch claimed ahead: how often to look for a digest to render meanwhile.
HELP_POLL_SECONDS = 0.005
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)


class _Released(enum.Enum):
    RELEASED = "released"


RELEASED = _Released.RELEASED


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    released: int = 0
    rendered: int = 0  # digests rendered for this run (each once, unless evicted from the cache)
    paused: bool = False
    errors: list[str] = field(default_factory=list)


_Result = str | DeliveryError | _Released | None  # reply, failure, released, skipped


@dataclass(frozen=True)
class _Outcome:
    job: Job
    result: _Result
    why: str | None = None  # why a skipped job was not sent


def _outcome_label(result: object, row: dict[str, Any]) -> str:
    if isinstance(result, PermanentDeliveryError):
        return "bounced"
    status = row["b_status"]
    if status == DeliveryStatus.QUEUED:
        return "deferred"
    return str(status)  # sent, failed (gave up), skipped


class Sender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        composer: Composer,
        transport: Transport,
        *,
        catchup: timedelta,
        tuning: DeliveryTuning | None = None,
        limits: Limits | None = None,
        renders: RenderPool | None = None,
        worker: str = "digestd",
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.composer = composer
        self.transport = transport
        self.catchup = catchup  # also the maximum age of a retried message
        self.tuning = tuning or DeliveryTuning()
        self.limits = limits or Limits(
            self.tuning.rate, self.tuning.domain_rate, self.tuning.domain_concurrency
        )
        self.worker = worker
        self.rng = rng
        self.monotonic = monotonic
        self.metrics = metrics or Metrics()
        self.lease = timedelta(seconds=self.tuning.lease_seconds)
        self.batches = Batches(  # renders None: digests are rendered here, in the sender
            sessions,
            composer,
            renders,
            size=self.tuning.batch,
            lease=self.lease,
            monotonic=monotonic,
        )
        # Failure-burst circuit breaker; ``pauses`` is a counter for /metrics.
        self.consecutive_failures = 0
        self.paused_until = 0.0
        self.pauses = 0

    def close(self) -> None:
        self.batches.close()

    @property
    def paused(self) -> bool:
        return self.monotonic() < self.paused_until

    async def deliver_due(
        self,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int], None] | None = None,
        more: Callable[[], Awaitable[bool]] | None = None,
    ) -> DeliveryReport:
        """Drain every row due at ``now``; rows deferred to later stay queued.

        ``now`` may be injected (tests, ``tick --now``); time spent sending is added to it,
        so leases stay honest during a long edition. ``on_batch`` (a progress bar) hears how
        many messages each write of outcomes covered. ``more``, when the queue looks empty,
        waits for rows still being enqueued and says whether to look again.
        """
        report = DeliveryReport()
        started = self.monotonic()
        rendered_before = self.batches.rendered

        def clock() -> datetime:
            return now + timedelta(seconds=self.monotonic() - started)

        async def write(outcomes: list[_Outcome]) -> None:
            done = await self._record(outcomes, clock(), report)
            if on_batch is not None and done:
                on_batch(done)

        recorder: Recorder[_Outcome] = Recorder(write, self.tuning.batch)

        def halt() -> bool:
            if should_stop():
                return True
            if self.paused:
                report.paused = True
                return True
            return recorder.failed is not None

        async def take(*, in_pool: bool) -> Batch | None:
            """The next batch, claimed once every outcome so far is written (rows released
            by the batch before are claimable again); when the queue looks empty, ``more``
            may say rows are still coming."""
            while not halt():
                await recorder.settle()
                batch = await self._take(clock, recorder, in_pool=in_pool)
                if batch is not None or more is None or not await more():
                    return batch
            return None

        ahead: asyncio.Task[Batch | None] | None = None
        try:
            batch = await take(in_pool=False)
            took = 0.0
            while batch is not None:
                if halt():
                    self._release(batch, recorder)
                    break
                # Claim the next batch now, unless it would wait so long behind this one
                # that its lease ran out before its turn (a slow, rate-limited relay).
                if took < 0.4 * self.tuning.lease_seconds:
                    ahead = asyncio.create_task(self._take(clock, recorder, in_pool=True))
                began = self.monotonic()
                await self._send_batch(batch, should_stop, recorder)
                took = self.monotonic() - began
                recorder.flush()
                if ahead is not None:
                    batch, ahead = await self._ahead_ready(ahead), None
                    if batch is None:  # the queue looked empty: rows may still be coming
                        batch = await take(in_pool=False)
                else:
                    batch = await take(in_pool=False)
        except asyncio.CancelledError:
            raise  # forced shutdown: what is claimed returns when its lease expires
        except Exception:
            await self._abandon(ahead, recorder)
            raise
        await recorder.close()
        if self.paused:
            report.paused = True
        report.rendered = self.batches.rendered - rendered_before
        return report

    async def _ahead_ready(self, ahead: asyncio.Task[Batch | None]) -> Batch | None:
        """The batch claimed ahead; while its digests are rendering, this process renders
        those no worker has started yet (it has nothing else to do)."""
        while not ahead.done():
            if self.batches.lend_a_hand():
                await asyncio.sleep(0)  # replies and the recorder get their turn
            else:  # still claiming, or the workers have all that is left
                await asyncio.wait({ahead}, timeout=HELP_POLL_SECONDS)
        return await ahead

    async def _abandon(
        self, ahead: asyncio.Task[Batch | None] | None, recorder: Recorder[_Outcome]
    ) -> None:
        """After an error: the batch claimed ahead goes back, the outcomes known are written.
        Failures here are logged, not raised: the error that got us here is the one to see."""
        if ahead is not None:
            try:
                batch = await ahead
            except Exception:
                batch = None  # it failed on its own (the same database error, most likely)
            if batch is not None:
                self._release(batch, recorder)
        try:
            await recorder.close()
        except Exception as exc:
            log.warning(
                "could not record the batch in flight (%s); its leases will expire",
                first_line(exc),
            )

    def _release(self, batch: Batch, recorder: Recorder[_Outcome]) -> None:
        for job in batch.jobs:
            recorder.add(_Outcome(job, RELEASED))
        recorder.flush()

    async def _take(
        self, clock: Callable[[], datetime], recorder: Recorder[_Outcome], *, in_pool: bool
    ) -> Batch | None:
        batch = await self.batches.claim(clock())
        if batch is None:
            return None
        try:
            await self.batches.render(batch, in_pool=in_pool)
        except Exception:
            self._release(batch, recorder)  # a rendering error: not stuck until the lease ends
            raise
        return batch

    async def _send_batch(
        self, batch: Batch, should_stop: Callable[[], bool], recorder: Recorder[_Outcome]
    ) -> None:
        gate = asyncio.Semaphore(max(1, self.transport.concurrency))

        def hold() -> bool:
            return (
                should_stop()
                or self.paused
                or self.monotonic() > batch.deadline
                or recorder.failed is not None
            )

        # Every send runs to its end before this returns (return_exceptions): an unexpected
        # error in one must not leave others sending with nobody to record their outcome.
        results = await asyncio.gather(
            *(
                self._send(job, why, batch.templates, gate, hold, recorder)
                for job, why in zip(batch.jobs, batch.unsendable, strict=True)
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _send(
        self,
        job: Job,
        why: str | None,
        templates: dict[int, MessageTemplate],
        gate: asyncio.Semaphore,
        hold: Callable[[], bool],
        recorder: Recorder[_Outcome],
    ) -> None:
        if why is not None or job.digest_id is None:
            recorder.add(_Outcome(job, None, why))
            return
        recipient = ascii_address(job.email)
        async with gate:
            if hold():
                recorder.add(_Outcome(job, RELEASED))
                return
            await recorder.admit()
            result = await self._transmit(job, recipient, templates[job.digest_id], hold)
            recorder.add(_Outcome(job, result), admitted=True)

    async def _transmit(
        self, job: Job, recipient: str, template: MessageTemplate, hold: Callable[[], bool]
    ) -> _Result:
        async with self.limits.slot(recipient):
            if hold():
                return RELEASED
            # Composed here, just before it leaves: only the messages in flight are in memory.
            data = self.composer.compose(
                template,
                delivery_id=job.delivery_id,
                public_id=job.public_id,
                email=job.email,
                kind=job.kind,
                period=job.period,
            )
            started = self.monotonic()
            try:
                reply = await self.transport.send(
                    self.composer.envelope_from(job.delivery_id), recipient, data
                )
            except DeliveryError as exc:
                self.metrics.smtp_errors.labels(str(exc.code or "none")).inc()
                self._failure(exc)
                return exc
            finally:
                self.metrics.send_seconds.observe(self.monotonic() - started)
        self.consecutive_failures = 0
        self.metrics.smtp_succeeded()
        return reply

    def _failure(self, exc: DeliveryError) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.tuning.failure_burst and not self.paused:
            self.pauses += 1
            self.metrics.sending_pauses.inc()
            self.paused_until = self.monotonic() + self.tuning.pause_seconds
            log.warning(
                "sending paused for %.0fs: %d failures in a row (last: %s); "
                "unsent messages stay queued",
                self.tuning.pause_seconds,
                self.consecutive_failures,
                exc,
            )
            self.consecutive_failures = 0

    def backoff(self, attempts: int) -> timedelta:
        """Exponential with ±20 % jitter, so a fleet of deferred messages does not retry in step."""
        delay: timedelta = min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
        return delay * (0.8 + 0.4 * self.rng())

    def _outcome(self, outcome: _Outcome, now: datetime, report: DeliveryReport) -> dict[str, Any]:
        job, result = outcome.job, outcome.result
        row: dict[str, Any] = {
            "b_id": job.delivery_id,
            "b_lease": job.lease,
            "b_status": DeliveryStatus.QUEUED,
            "b_tried": 1,
            "b_next_attempt_at": now,
            "b_sent_at": None,
            "b_smtp_reply": None,
            "b_message_id": None,
            "b_last_error": None,
        }
        if result is RELEASED:
            report.released += 1
            row.update(b_tried=0)
        elif result is None:
            report.skipped += 1
            row.update(b_status=DeliveryStatus.SKIPPED, b_tried=0, b_last_error=outcome.why)
        elif isinstance(result, str):
            report.sent += 1
            row.update(
                b_status=DeliveryStatus.SENT,
                b_sent_at=now,
                b_smtp_reply=result[:500],
                b_message_id=self.composer.message_id(job.kind, job.period, job.delivery_id),
            )
        elif isinstance(result, PermanentDeliveryError):
            report.failed += 1
            report.errors.append(str(result))
            row.update(
                b_status=DeliveryStatus.FAILED,
                b_last_error=str(result)[:1000],
                b_smtp_reply=str(result)[:500],
            )
        elif now - job.due_at > self.catchup:
            # Temporary failures until the edition is too old to send: a soft bounce.
            report.failed += 1
            report.errors.append(str(result))
            row.update(
                b_status=DeliveryStatus.FAILED,
                b_last_error=f"{SOFT_BOUNCE_MARK} gave up after {job.attempts + 1} attempts: "
                f"{result}"[:1000],
                b_smtp_reply=str(result)[:500],
            )
        else:
            report.deferred += 1
            row.update(
                b_last_error=str(result)[:1000],
                b_smtp_reply=str(result)[:500],
                b_next_attempt_at=now + self.backoff(job.attempts + 1),
            )
        return row

    async def _record(self, outcomes: list[_Outcome], now: datetime, report: DeliveryReport) -> int:
        """Write ``outcomes`` (counted into ``report`` here, on the event loop); returns how
        many messages they settled (released ones are not)."""
        rows = [self._outcome(outcome, now, report) for outcome in outcomes]
        settled = 0
        for outcome, row in zip(outcomes, rows, strict=True):
            if outcome.result is not RELEASED:
                settled += 1
                label = _outcome_label(outcome.result, row)
                self.metrics.messages.labels(outcome.job.kind, label).inc()
        bounces = [
            (outcome.job.subscriber_id, isinstance(outcome.result, PermanentDeliveryError))
            for outcome, row in zip(outcomes, rows, strict=True)
            if row["b_status"] == DeliveryStatus.FAILED
        ]
        await self.batches.in_thread(write_outcomes, self.sessions, rows, bounces=bounces, now=now)
        return settled

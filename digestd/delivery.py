"""Deliver the send queue: claim due rows, compose each message, push it, record the outcome.

Claiming: rows move ``queued → sending`` with a lease (``lease_expires_at``) in one
transaction; on PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED`` so workers
never wait on each other or take the same row. The lease value written by a claim is that
claim's fencing token: outcomes are recorded only ``WHERE lease_expires_at = <ours>``, so
a worker that stalled past its lease cannot overwrite the row its successor now owns.

Crash semantics: a message that left but whose outcome was not recorded (kill -9 between
``sendmail`` and the UPDATE) is sent again when its lease expires: the in-flight window
(at most one batch per worker) may repeat, nothing is ever skipped. Message-IDs are
deterministic per delivery, so a repeat carries the same Message-ID.

A batch never outlives its lease: messages not started by 80 % of the lease, or when the
process is told to stop, or while sending is paused after a burst of failures, are
*released* (back to ``queued``, attempt not counted) instead of being sent late.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from digestd.compose import ascii_address
from digestd.config import DeliveryTuning
from digestd.errors import DeliveryError, PermanentDeliveryError
from digestd.messages import Composer, Links
from digestd.metrics import Metrics
from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from digestd.ratelimit import Limits
from digestd.subscribers import email_hash
from digestd.suppress import SOFT_BOUNCE_MARK, soft_bounce, suppress
from digestd.transport import Transport

__all__ = ["Composer", "DeliveryReport", "Links", "Sender"]

log = logging.getLogger(__name__)

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
    paused: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    subscriber_id: int
    public_id: str
    email: str
    status: str
    digest_id: int | None
    kind: str
    period: str
    due_at: datetime
    attempts: int
    lease: datetime


_Result = str | DeliveryError | _Released | None  # reply, failure, released, skipped


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
        # Failure-burst circuit breaker; ``pauses`` is a counter for /metrics.
        self.consecutive_failures = 0
        self.paused_until = 0.0
        self.pauses = 0

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
        so leases stay honest during a long edition. ``more``, when the queue looks empty,
        waits for rows still being enqueued and says whether to look again.
        """
        report = DeliveryReport()
        started = self.monotonic()

        def clock() -> datetime:
            return now + timedelta(seconds=self.monotonic() - started)

        while not should_stop():
            if self.paused:
                report.paused = True
                break
            done = report.sent + report.failed + report.deferred + report.skipped
            if not await self.deliver_batch(clock, report, should_stop):
                if more is not None and await more():
                    continue
                break
            if on_batch is not None:  # a progress bar on a terminal
                on_batch(report.sent + report.failed + report.deferred + report.skipped - done)
        return report

    async def deliver_batch(
        self,
        clock: Callable[[], datetime],
        report: DeliveryReport,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        claimed_at = clock()
        jobs = await asyncio.to_thread(self._claim, claimed_at)
        if not jobs:
            return False
        deadline = self.monotonic() + 0.8 * self.tuning.lease_seconds
        with self.sessions() as session:
            prepared = self._prepare(session, jobs)
        gate = asyncio.Semaphore(max(1, self.transport.concurrency))

        def hold() -> bool:
            return should_stop() or self.paused or self.monotonic() > deadline

        results = await asyncio.gather(
            *(self._send(job, data, gate, hold) for job, data in zip(jobs, prepared, strict=True))
        )
        await asyncio.to_thread(self._record, jobs, prepared, results, clock(), report)
        return True

    def _claim(self, now: datetime) -> list[_Job]:
        lease = now + self.lease
        with self.sessions.begin() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            ids: list[int] = []
            # Rows of a worker that died; the lease has run out. Few, so checked first.
            for condition in (
                (Delivery.status == DeliveryStatus.SENDING) & (Delivery.lease_expires_at < now),
                (Delivery.status == DeliveryStatus.QUEUED) & (Delivery.next_attempt_at <= now),
            ):
                query = (
                    select(Delivery.id)
                    .where(condition)
                    .order_by(Delivery.next_attempt_at)  # served by the (status, next) index
                    .limit(self.tuning.batch - len(ids))
                )
                if postgres:
                    query = query.with_for_update(skip_locked=True)
                ids += session.scalars(query)
                if len(ids) >= self.tuning.batch:
                    break
            if not ids:
                return []
            # Guarded again: on SQLite another process may have claimed between our SELECT
            # and this UPDATE; only rows still claimable move, and only they carry our lease.
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(ids),
                    (
                        (Delivery.status == DeliveryStatus.QUEUED)
                        | (
                            (Delivery.status == DeliveryStatus.SENDING)
                            & (Delivery.lease_expires_at < now)
                        )
                    ),
                )
                .values(status=DeliveryStatus.SENDING, lease_expires_at=lease)
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                select(
                    Delivery.id,
                    Subscriber.id,
                    Subscriber.public_id,
                    Subscriber.email,
                    Subscriber.status,
                    Delivery.digest_id,
                    Edition.kind,
                    Edition.period,
                    Delivery.due_at,
                    Delivery.attempts,
                    Delivery.lease_expires_at,
                )
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(
                    Delivery.id.in_(ids),
                    Delivery.status == DeliveryStatus.SENDING,
                    Delivery.lease_expires_at == lease,
                )
                .order_by(Delivery.digest_id, Delivery.id)
            ).all()
            return [_Job(*row) for row in rows]

    def _prepare(self, session: Session, jobs: list[_Job]) -> list[bytes | str]:
        """Each job's message bytes, or why it will not be sent."""
        hashes = {email_hash(job.email): job for job in jobs}
        suppressed = set(
            session.scalars(
                select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes))
            )
        )
        prepared: list[bytes | str] = []
        for job in jobs:
            if job.status != SubscriberStatus.ACTIVE:
                prepared.append(f"subscriber is {job.status}")
            elif email_hash(job.email) in suppressed:
                prepared.append("address is suppressed")
            elif job.digest_id is None:
                prepared.append("no content")
            else:
                template = self.composer.template(session, job.digest_id, job.kind, job.period)
                prepared.append(
                    self.composer.compose(
                        template,
                        delivery_id=job.delivery_id,
                        public_id=job.public_id,
                        email=job.email,
                        kind=job.kind,
                        period=job.period,
                    )
                )
        return prepared

    async def _send(
        self,
        job: _Job,
        data: bytes | str,
        gate: asyncio.Semaphore,
        hold: Callable[[], bool],
    ) -> _Result:
        if isinstance(data, str):
            return None
        recipient = ascii_address(job.email)
        async with gate:
            if hold():
                return RELEASED
            async with self.limits.slot(recipient):
                if hold():
                    return RELEASED
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

    def _outcome(
        self, job: _Job, data: bytes | str, result: _Result, now: datetime, report: DeliveryReport
    ) -> dict[str, Any]:
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
            row.update(b_status=DeliveryStatus.SKIPPED, b_tried=0, b_last_error=str(data))
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

    def _record(
        self,
        jobs: Sequence[_Job],
        prepared: Sequence[bytes | str],
        results: Sequence[_Result],
        now: datetime,
        report: DeliveryReport,
    ) -> None:
        rows = [
            self._outcome(job, data, result, now, report)
            for job, data, result in zip(jobs, prepared, results, strict=True)
        ]
        for job, result, row in zip(jobs, results, rows, strict=True):
            if result is not RELEASED:
                self.metrics.messages.labels(job.kind, _outcome_label(result, row)).inc()
        table = Delivery.__table__
        assert isinstance(table, Table)
        with self.sessions.begin() as session:
            # One executemany for the batch; the lease guard makes it a no-op for rows
            # another worker took over after our lease ran out.
            session.execute(
                update(table)
                .where(
                    table.c.id == bindparam("b_id"),
                    table.c.status == DeliveryStatus.SENDING,
                    table.c.lease_expires_at == bindparam("b_lease"),
                )
                .values(
                    status=bindparam("b_status"),
                    lease_expires_at=None,
                    attempts=table.c.attempts + bindparam("b_tried"),
                    next_attempt_at=bindparam("b_next_attempt_at"),
                    sent_at=bindparam("b_sent_at"),
                    smtp_reply=bindparam("b_smtp_reply"),
                    message_id=bindparam("b_message_id"),
                    last_error=bindparam("b_last_error"),
                ),
                rows,
            )
            for job, result, row in zip(jobs, results, rows, strict=True):
                if isinstance(result, PermanentDeliveryError):
                    suppress(
                        session, job.subscriber_id, SubscriberStatus.BOUNCED, "hard-bounce", now
                    )
                elif row["b_status"] == DeliveryStatus.FAILED:
                    soft_bounce(session, job.subscriber_id, now)

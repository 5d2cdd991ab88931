"""The send queue in the database, as the sender sees it: claim due rows, record outcomes.

Claiming moves rows ``queued → sending`` under a lease (``lease_expires_at``) in one
transaction, in (due time, digest, id) order, the order of the claim index, so one
digest's readers come together. The lease value a claim writes is that claim's fencing
token: an outcome is written only ``WHERE lease_expires_at = <ours>``, so a worker that
stalled past its lease cannot overwrite the row its successor now owns.

Crash semantics: a row claimed by a worker that dies returns to the queue when its lease
runs out; one whose message left but whose outcome was not written is sent again then
(repeated, never skipped).

One store per database (:func:`queue_store`): SQLite and PostgreSQL differ in how rows
are locked and how a batch of outcomes becomes one statement.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.bulk import among
from digestd.models import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberStatus
from digestd.models import Suppression as SuppressionRow
from digestd.readers.subscribers import email_hash
from digestd.readers.suppression import soft_bounce, suppress


@dataclass(frozen=True)
class Job:
    """One claimed delivery, with what sending it needs."""

    delivery_id: int
    subscriber_id: int
    public_id: str
    email: str
    status: str  # the subscriber's
    digest_id: int | None
    kind: str
    period: str
    due_at: datetime
    attempts: int
    lease: datetime  # this claim's fencing token


# What a claim reads with each row (in Job's field order).
JOB_COLUMNS = (
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


class Bounce(enum.Enum):
    HARD = "hard"  # the address is suppressed
    SOFT = "soft"  # counts towards the run of soft bounces that suppresses


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed delivery, as it is written back."""

    job: Job
    status: DeliveryStatus  # QUEUED again (released or deferred), SENT, FAILED or SKIPPED
    tried: bool  # counts as an attempt
    next_attempt_at: datetime
    sent_at: datetime | None = None
    smtp_reply: str | None = None
    message_id: str | None = None
    last_error: str | None = None
    bounce: Bounce | None = None

    def values(self) -> dict[str, Any]:
        """The row's new values, keyed ``b_*`` (bound parameters of the outcome UPDATE)."""
        return {
            "b_id": self.job.delivery_id,
            "b_lease": self.job.lease,
            "b_status": self.status,
            "b_tried": int(self.tried),
            "b_next_attempt_at": self.next_attempt_at,
            "b_sent_at": self.sent_at,
            "b_smtp_reply": self.smtp_reply,
            "b_message_id": self.message_id,
            "b_last_error": self.last_error,
        }


class QueueStore:
    """The queue as the sender uses it; subclasses lock and write the way their database
    does it best."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def claim(self, now: datetime, lease: timedelta, size: int) -> list[Job]:
        """Up to ``size`` due rows, now ``sending`` under a lease ending at ``now + lease``,
        in digest order."""
        with self.sessions.begin() as session:
            jobs = self._claim(session, now, now + lease, size)
        jobs.sort(key=lambda job: (job.digest_id or 0, job.delivery_id))
        return jobs

    def record(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        """One transaction: every outcome (where the lease is still ours) and the
        suppressions their bounces call for."""
        with self.sessions.begin() as session:
            if outcomes:
                self._write(session, [outcome.values() for outcome in outcomes])
            for outcome in outcomes:
                if outcome.bounce is Bounce.HARD:
                    suppress(
                        session,
                        outcome.job.subscriber_id,
                        SubscriberStatus.BOUNCED,
                        "hard-bounce",
                        now,
                    )
                elif outcome.bounce is Bounce.SOFT:
                    soft_bounce(session, outcome.job.subscriber_id, now)

    def unsendable(self, jobs: Sequence[Job]) -> list[str | None]:
        """Why each job will not be sent (it is skipped), or None."""
        with self.sessions() as session:
            hashes = {email_hash(job.email) for job in jobs}
            suppressed = set(
                session.scalars(
                    select(SuppressionRow.email_hash).where(
                        among(session, SuppressionRow.email_hash, hashes)
                    )
                )
            )
        reasons: list[str | None] = []
        for job in jobs:
            if job.status != SubscriberStatus.ACTIVE:
                reasons.append(f"subscriber is {job.status}")
            elif email_hash(job.email) in suppressed:
                reasons.append("address is suppressed")
            elif job.digest_id is None:
                reasons.append("no content")
            else:
                reasons.append(None)
        return reasons

    def _claim(self, session: Session, now: datetime, until: datetime, size: int) -> list[Job]:
        raise NotImplementedError

    def _write(self, session: Session, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError


def claimable(now: datetime) -> Any:
    """Rows a claim may take: queued, or sending under a lease that ran out (a dead worker's)."""
    return (Delivery.status == DeliveryStatus.QUEUED) | (
        (Delivery.status == DeliveryStatus.SENDING) & (Delivery.lease_expires_at < now)
    )


def due_ids(session: Session, now: datetime, size: int, *, lock: bool) -> list[int]:
    """Up to ``size`` claimable row ids, a dead worker's first (few, so checked first), then
    queued rows in claim order (ix_deliveries_claim_order: no sort, and a digest's readers
    land in one batch or two in a row). ``lock``: ``FOR UPDATE SKIP LOCKED``."""
    ids: list[int] = []
    for condition in (
        (Delivery.status == DeliveryStatus.SENDING) & (Delivery.lease_expires_at < now),
        (Delivery.status == DeliveryStatus.QUEUED) & (Delivery.next_attempt_at <= now),
    ):
        query = (
            select(Delivery.id)
            .where(condition)
            .order_by(Delivery.next_attempt_at, Delivery.digest_id, Delivery.id)
            .limit(size - len(ids))
        )
        if lock:
            query = query.with_for_update(skip_locked=True)
        ids += session.scalars(query)
        if len(ids) >= size:
            break
    return ids


def queue_store(sessions: sessionmaker[Session]) -> QueueStore:
    with sessions() as session:
        dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from digestd.delivery.queue_postgres import PostgresQueue

        return PostgresQueue(sessions)
    from digestd.delivery.queue_sqlite import SqliteQueue

    return SqliteQueue(sessions)

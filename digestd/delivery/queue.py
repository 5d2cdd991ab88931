"""The send queue in the database, as the sender sees it: claim due rows, record outcomes.

Claiming moves rows ``queued → sending`` under a lease (``lease_expires_at``, by the
database's clock, so a worker's skewed clock or an injected ``--now`` never steals a live
lease) in one transaction, in (due time, digest, id) order, the order of the claim index,
so one digest's readers come together. The claim counts the attempt and names its worker
(``claimed_by``). The lease value and the worker are the claim's fencing token: an
outcome is written only where both are still ours, so a worker that stalled past its
lease cannot overwrite the row its successor now owns.

Crash semantics: a row claimed by a worker that dies returns to the queue when its lease
runs out, or at once for a successor on the same host (:mod:`digestd.delivery.worker`);
one whose message left but whose outcome was not written is sent again then (repeated,
never skipped). A row claimed ``max_attempts`` times without an outcome (a message that
kills its worker every time) fails for good instead of looping.

One store per database (:func:`queue_store`): SQLite and PostgreSQL differ in how rows
are locked and how a batch of outcomes becomes one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, case, select, update
from sqlalchemy.orm import Session, sessionmaker

from digestd.bulk import among
from digestd.delivery.worker import Worker
from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberStatus,
)
from digestd.models import Suppression as SuppressionRow
from digestd.readers import ledger
from digestd.readers.ledger import Event
from digestd.readers.subscribers import email_hash


@dataclass(frozen=True)
class Job:
    """One claimed delivery, with what sending it needs."""

    delivery_id: int
    subscriber_id: int
    public_id: str
    email: str
    status: str  # the subscriber's
    wanted: bool  # the subscriber still takes this kind of edition
    digest_id: int | None
    kind: str
    period: str
    due_at: datetime
    attempts: int  # this one included
    lease: datetime  # with the worker, this claim's fencing token


# The tables, for Core statements: the hot path skips the ORM's per-row machinery.
DELIVERIES = cast(Table, Delivery.__table__)
SUBSCRIBERS = cast(Table, Subscriber.__table__)
EDITIONS = cast(Table, Edition.__table__)
_d, _s, _e = DELIVERIES.c, SUBSCRIBERS.c, EDITIONS.c

# What a claim reads with each row (in Job's field order).
JOB_COLUMNS = (
    _d.id,
    _s.id,
    _s.public_id,
    _s.email,
    _s.status,
    case((_e.kind == EditionKind.DAILY, _s.wants_daily), else_=_s.wants_weekly),
    _d.digest_id,
    _e.kind,
    _e.period,
    _d.due_at,
    _d.attempts,
    _d.lease_expires_at,
)


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
    event: Event | None = None  # a refusal for the bounce ledger (and the policy)

    def values(self) -> dict[str, Any]:
        """The row's new values, keyed ``b_*`` (bound parameters of the outcome UPDATE).
        The claim counted an attempt; one that was not tried gives it back."""
        return {
            "b_id": self.job.delivery_id,
            "b_lease": self.job.lease,
            "b_status": self.status,
            "b_attempt": 0 if self.tried else -1,
            "b_next_attempt_at": self.next_attempt_at,
            "b_sent_at": self.sent_at,
            "b_smtp_reply": self.smtp_reply,
            "b_message_id": self.message_id,
            "b_last_error": self.last_error,
        }


class QueueStore:
    """The queue as the sender uses it; subclasses lock and write the way their database
    does it best."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        worker: Worker,
        *,
        max_attempts: int = 8,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.sessions = sessions
        self.worker = worker
        self.max_attempts = max_attempts
        self._clock = clock  # None: the database's clock (tests inject one)

    def claim(self, now: datetime, lease: timedelta, size: int) -> list[Job]:
        """Up to ``size`` rows due at ``now``, now ``sending`` under a lease of ``lease``
        from the database's clock, in digest order."""
        with self.sessions.begin() as session:
            clock = self._clock() if self._clock else self.database_clock(session)
            expired = _d.lease_expires_at < clock
            dead = self._dead_claims(session)
            if dead:
                expired = expired | _d.claimed_by.in_(dead)
            self._give_up_looping(session, expired)
            ids = due_ids(session, now, size, expired, lock=self.locks)
            jobs = self._claim(session, ids, expired, clock + lease) if ids else []
        jobs.sort(key=lambda job: (job.digest_id or 0, job.delivery_id))
        return jobs

    def record(self, outcomes: Sequence[Outcome], now: datetime) -> int:
        """One transaction: every outcome (where the claim is still ours), its refusal in
        the bounce ledger and what the bounce policy makes of it. Returns how many were
        written: fewer when another worker had taken rows over (our lease ran out)."""
        refused = [(o.job, o.event) for o in outcomes if o.event is not None]
        written = 0
        with self.sessions.begin() as session:
            here, ours = self._still_there(session, [job for job, _ in refused])
            if outcomes:
                values = [outcome.values() for outcome in outcomes]
                for row in values:
                    row["b_worker"] = self.worker.label
                written = self._write(session, values)
            for job, event in refused:
                if job.delivery_id in here and job.delivery_id not in ours:
                    continue  # another worker's now: it sends again and records its own
                # A reader who erased their data while the message was on the wire has no
                # rows left to name: the refusal is kept without them, and nobody to act on.
                known = job.delivery_id in here
                ledger.record(
                    session,
                    event,
                    delivery_id=job.delivery_id if known else None,
                    subscriber_id=job.subscriber_id if known else None,
                    now=now,
                )
        return written

    def _still_there(self, session: Session, jobs: list[Job]) -> tuple[set[int], set[int]]:
        """Which of these jobs' deliveries still exist, and which of those are still ours
        (claimed under the job's lease). On PostgreSQL their subscribers are held (KEY
        SHARE) until the transaction ends, taken first as an erasure takes them (the
        subscriber, then their rows): an erasure waits for this write, or this write for
        it, and neither for the other."""
        if not jobs:
            return set(), set()
        if self.locks:
            session.execute(
                select(_s.id)
                .where(among(session, _s.id, {job.subscriber_id for job in jobs}))
                .with_for_update(read=True, key_share=True)
            )
        leases = {job.delivery_id: job.lease for job in jobs}
        rows = session.execute(
            select(_d.id, _d.status, _d.claimed_by, _d.lease_expires_at).where(
                among(session, _d.id, list(leases))
            )
        ).all()
        ours = {
            row.id
            for row in rows
            if row.status == DeliveryStatus.SENDING
            and row.claimed_by == self.worker.label
            and row.lease_expires_at == leases[row.id]
        }
        return {row.id for row in rows}, ours

    def unsendable(self, jobs: Sequence[Job]) -> list[str | None]:
        """Why each job will not be sent (it is skipped), or None."""
        hashes = [email_hash(job.email) for job in jobs]
        with self.sessions() as session:
            suppressed = set(
                session.scalars(
                    select(SuppressionRow.email_hash).where(
                        among(session, SuppressionRow.email_hash, set(hashes))
                    )
                )
            )
        reasons: list[str | None] = []
        for job, hashed in zip(jobs, hashes, strict=True):
            if job.status != SubscriberStatus.ACTIVE:
                reasons.append(f"subscriber is {job.status}")
            elif not job.wanted:  # they chose otherwise after it was planned
                reasons.append(f"subscriber no longer takes the {job.kind}")
            elif hashed in suppressed:
                reasons.append("address is suppressed")
            elif job.digest_id is None:
                reasons.append("no content")
            else:
                reasons.append(None)
        return reasons

    def _dead_claims(self, session: Session) -> list[str]:
        """Claims of workers of this host that are gone (rows in flight are few)."""
        claimants = session.scalars(
            select(Delivery.claimed_by)
            .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_by.is_not(None))
            .distinct()
        )
        return [c for c in claimants if c is not None and self.worker.outlived(c)]

    def _give_up_looping(self, session: Session, expired: ColumnElement[bool]) -> None:
        session.execute(
            update(Delivery)
            .where(
                Delivery.status == DeliveryStatus.SENDING,
                expired,
                Delivery.attempts >= self.max_attempts,
            )
            .values(
                status=DeliveryStatus.FAILED,
                lease_expires_at=None,
                last_error=f"gave up: claimed {self.max_attempts} times and never finished "
                "(its worker died while sending it each time)",
            )
            .execution_options(synchronize_session=False)
        )

    # Implemented per database ------------------------------------------------------------

    locks = False  # SELECT ... FOR UPDATE SKIP LOCKED

    def database_clock(self, session: Session) -> datetime:
        raise NotImplementedError

    def _claim(
        self, session: Session, ids: list[int], expired: ColumnElement[bool], until: datetime
    ) -> list[Job]:
        raise NotImplementedError

    def _write(self, session: Session, rows: list[dict[str, Any]]) -> int:
        """Write the outcomes where the claim is still ours; how many rows that was."""
        raise NotImplementedError


def claimed_values(worker: Worker, until: datetime) -> dict[str, Any]:
    """What a claim writes: sending, under our lease, one more attempt."""
    return {
        "status": DeliveryStatus.SENDING,
        "lease_expires_at": until,
        "claimed_by": worker.label,
        "attempts": _d.attempts + 1,
    }


def claimable(
    expired: ColumnElement[bool], status: ColumnElement[str] = _d.status
) -> ColumnElement[bool]:
    """Rows a claim may take: queued, or sending under a claim that ended (``expired``).
    ``status``: how the statement reads the row's status."""
    return (status == DeliveryStatus.QUEUED) | ((status == DeliveryStatus.SENDING) & expired)


def due_ids(
    session: Session, now: datetime, size: int, expired: ColumnElement[bool], *, lock: bool
) -> list[int]:
    """Up to ``size`` claimable row ids, a dead worker's first (few, so checked first), then
    queued rows in claim order (ix_deliveries_claim_order: no sort, and a digest's readers
    land in one batch or two in a row). ``lock``: ``FOR UPDATE SKIP LOCKED``."""
    ids: list[int] = []
    for condition in (
        (_d.status == DeliveryStatus.SENDING) & expired,
        (_d.status == DeliveryStatus.QUEUED) & (_d.next_attempt_at <= now),
    ):
        query = (
            select(_d.id)
            .where(condition)
            .order_by(_d.next_attempt_at, _d.digest_id, _d.id)
            .limit(size - len(ids))
        )
        if lock:
            query = query.with_for_update(skip_locked=True)
        ids += session.connection().execute(query).scalars()
        if len(ids) >= size:
            break
    return ids

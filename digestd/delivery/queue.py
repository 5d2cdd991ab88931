"""The send queue in the database: claiming due rows under a lease, writing their outcomes.

Claiming: rows move ``queued → sending`` with a lease (``lease_expires_at``) in one
transaction; on PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED`` so workers
never wait on each other or take the same row. The lease value written by a claim is that
claim's fencing token: outcomes are written only ``WHERE lease_expires_at = <ours>``, so a
worker that stalled past its lease cannot overwrite the row its successor now owns.

Rows are claimed in (due time, digest, id) order, the order of the claim index: one
digest's readers come together, so each digest is rendered once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeEngine

from digestd.bulk import among, rows_table
from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
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


def claim(sessions: sessionmaker[Session], now: datetime, lease: timedelta, size: int) -> list[Job]:
    """Up to ``size`` due rows, now ``sending`` under a lease ending at ``now + lease``."""
    until = now + lease
    with sessions.begin() as session:
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
                # Served by ix_deliveries_claim_order (status, next_attempt_at, digest_id,
                # id): no sort, and a digest's readers land in one batch or two in a row.
                .order_by(Delivery.next_attempt_at, Delivery.digest_id, Delivery.id)
                .limit(size - len(ids))
            )
            if postgres:
                query = query.with_for_update(skip_locked=True)
            ids += session.scalars(query)
            if len(ids) >= size:
                break
        if not ids:
            return []
        # Guarded again: on SQLite another process may have claimed between our SELECT
        # and this UPDATE; only rows still claimable move, and only they carry our lease.
        claimable = (Delivery.status == DeliveryStatus.QUEUED) | (
            (Delivery.status == DeliveryStatus.SENDING) & (Delivery.lease_expires_at < now)
        )
        if postgres:
            # One statement moves the rows and returns what sending needs; the ids go as
            # one array (an IN list is a bind parameter per id to compile and convert).
            rows = session.execute(
                update(_DELIVERIES)
                .where(
                    among(session, Delivery.id, ids),
                    claimable,
                    Subscriber.id == Delivery.subscriber_id,
                    Edition.id == Delivery.edition_id,
                )
                .values(status=DeliveryStatus.SENDING, lease_expires_at=until)
                .returning(*_JOB_COLUMNS)
            ).all()
        else:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), claimable)
                .values(status=DeliveryStatus.SENDING, lease_expires_at=until)
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                select(*_JOB_COLUMNS)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(
                    Delivery.id.in_(ids),
                    Delivery.status == DeliveryStatus.SENDING,
                    Delivery.lease_expires_at == until,
                )
            ).all()
        jobs = [Job(*_fields(row)) for row in rows]
        jobs.sort(key=lambda job: (job.digest_id or 0, job.delivery_id))
        return jobs


_DELIVERIES = cast(Table, Delivery.__table__)


def _fields(row: Any) -> tuple[Any, ...]:
    return tuple(row)


_JOB_COLUMNS = (
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


def unsendable(session: Session, jobs: Sequence[Job]) -> list[str | None]:
    """Why each job will not be sent (it is skipped), or None."""
    hashes = {email_hash(job.email) for job in jobs}
    suppressed = set(
        session.scalars(
            select(Suppression.email_hash).where(among(session, Suppression.email_hash, hashes))
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


_columns = Delivery.__table__.c
# What each outcome row carries (``b_``: bound values, apart from the table's columns).
_OUTCOME_TYPES: dict[str, TypeEngine[Any]] = {
    "b_id": _columns.id.type,
    "b_lease": _columns.lease_expires_at.type,
    "b_status": _columns.status.type,
    "b_tried": Integer(),
    "b_next_attempt_at": _columns.next_attempt_at.type,
    "b_sent_at": _columns.sent_at.type,
    "b_smtp_reply": _columns.smtp_reply.type,
    "b_message_id": _columns.message_id.type,
    "b_last_error": _columns.last_error.type,
}


def write_outcomes(
    sessions: sessionmaker[Session],
    rows: list[dict[str, Any]],
    *,
    bounces: Sequence[tuple[int, bool]],
    now: datetime,
) -> None:
    """One transaction: each row's outcome (``b_``-prefixed values, made by
    ``digestd.delivery.sender``) and ``bounces``: (subscriber id, hard?) for each bounced
    message."""
    table = Delivery.__table__
    assert isinstance(table, Table)
    with sessions.begin() as session:
        # The lease guard makes it a no-op for rows another worker took over after our
        # lease ran out.
        if rows and session.get_bind().dialect.name == "postgresql":
            # One statement for the batch (an executemany is a statement per row there).
            outcome = rows_table(rows, _OUTCOME_TYPES).c
            session.execute(
                update(table)
                .where(
                    table.c.id == outcome["b_id"],
                    table.c.status == DeliveryStatus.SENDING,
                    table.c.lease_expires_at == outcome["b_lease"],
                )
                .values(
                    status=outcome["b_status"],
                    lease_expires_at=None,
                    attempts=table.c.attempts + outcome["b_tried"],
                    next_attempt_at=outcome["b_next_attempt_at"],
                    sent_at=outcome["b_sent_at"],
                    smtp_reply=outcome["b_smtp_reply"],
                    message_id=outcome["b_message_id"],
                    last_error=outcome["b_last_error"],
                )
            )
        elif rows:
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
        for subscriber_id, hard in bounces:
            if hard:
                suppress(session, subscriber_id, SubscriberStatus.BOUNCED, "hard-bounce", now)
            else:
                soft_bounce(session, subscriber_id, now)

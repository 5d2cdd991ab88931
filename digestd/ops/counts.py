"""Counts of the send queue and the list: the one place ``digestd stats``, ``/api/stats``,
``/admin`` and ``/metrics`` read them from.

Only counts that cost the same however long the history is: rows waiting or in flight
(``queued``, ``sending``: few, reached through the claim index whose first column is the
status), one edition's rows (through the (edition, status) index) and subscribers by
status. The history itself is read per UTC day, for recent editions only
(:mod:`digestd.ops.activity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from digestd.models import Delivery, DeliveryStatus, Edition, EditionKind, Subscriber

PENDING = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


@dataclass(frozen=True)
class EditionCounts:
    id: int
    kind: str
    period: str
    created_at: datetime
    deliveries: dict[str, int]  # status -> count

    def get(self, *statuses: str) -> int:
        return sum(self.deliveries.get(status, 0) for status in statuses)


def _grouped(session: Session, column: Any, *where: ColumnElement[bool]) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).where(*where).group_by(column)).all()
    return {str(key): int(count) for key, count in sorted(rows)}


def subscribers(session: Session) -> dict[str, int]:
    """Subscribers by status."""
    return _grouped(session, Subscriber.status)


def pending(session: Session) -> dict[tuple[str, str], int]:
    """Rows waiting or in flight, by (edition kind, status); zero where there are none."""
    rows = session.execute(
        select(Edition.kind, Delivery.status, func.count())
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(Delivery.status.in_(PENDING))
        .group_by(Edition.kind, Delivery.status)
    ).all()
    counts = {(str(kind), str(status)): 0 for kind in EditionKind for status in PENDING}
    counts.update({(str(kind), str(status)): int(n) for kind, status, n in rows})
    return counts


def oldest_queued(session: Session) -> datetime | None:
    """When the longest-waiting queued row was due."""
    oldest = session.scalar(
        select(func.min(Delivery.due_at)).where(Delivery.status == DeliveryStatus.QUEUED)
    )
    # min() bypasses the UTCDateTime type on SQLite (plain text comes back): read it here.
    if oldest is None:
        return None
    moment = datetime.fromisoformat(oldest) if isinstance(oldest, str) else oldest
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def waiting(session: Session, now: datetime, worker: str) -> int:
    """Messages a pass at ``now`` has still to settle: queued rows already due, and rows
    ``worker`` (a claim label) holds in flight. A tick's progress bar counts them once."""
    mine = (Delivery.status == DeliveryStatus.SENDING) & (Delivery.claimed_by == worker)
    due = (Delivery.status == DeliveryStatus.QUEUED) & (Delivery.next_attempt_at <= now)
    return int(session.scalar(select(func.count()).where(due | mine)) or 0)


def edition(session: Session, edition_id: int) -> dict[str, int]:
    """One edition's deliveries by status."""
    return _grouped(session, Delivery.status, Delivery.edition_id == edition_id)


def latest_editions(session: Session) -> list[EditionCounts]:
    """The newest edition of each kind that went to readers, with its counts; daily first.
    An edition with no queue row at all was made for the public archive alone (often after
    the readers' edition, for an earlier day): it is not "the last edition"."""
    found: list[EditionCounts] = []
    for kind in EditionKind:
        mailed = exists().where(Delivery.edition_id == Edition.id)
        last = session.execute(
            select(Edition.id, Edition.period, Edition.created_at)
            .where(Edition.kind == kind, mailed)
            .order_by(Edition.id.desc())
            .limit(1)
        ).first()
        if last is not None:
            counts = edition(session, last.id)
            found.append(EditionCounts(last.id, str(kind), last.period, last.created_at, counts))
    return found

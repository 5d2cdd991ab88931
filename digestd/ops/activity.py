"""What digestd has been doing: a snapshot of the counts right now (``digestd stats``,
``GET /api/stats``, the admin page; see :mod:`digestd.ops.counts`) and per-UTC-day series of
the last weeks (the admin page's charts).

Each series is one ``GROUP BY`` over a UTC calendar day. The day expression is compiled per
backend: SQLite stores naive UTC text, so ``date()`` is already the UTC day; PostgreSQL
stores ``timestamptz`` and ``date()`` would use the *session* time zone, so the value is
moved to UTC first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from digestd.ops import counts
from digestd.ops.counts import EditionCounts

# Suppressions that are mail being refused, as opposed to an erasure (a reader's request).
# "soft-bounce" is how versions before the enum spelled a run of soft bounces.
BOUNCE_REASONS = (*(str(r) for r in SuppressionReason if r.refused), "soft-bounce")
EDITION_MARGIN = timedelta(days=8)


# --- right now -------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    subscribers: dict[str, int]  # status -> count
    queue: dict[str, int]  # queued and sending (waiting and in flight) -> count
    oldest_queued_due_at: datetime | None  # the longest-waiting queued message
    last_editions: list[EditionCounts]  # the newest edition of each kind that exists

    def as_json(self) -> dict[str, Any]:
        return {
            "subscribers": self.subscribers,
            "queue": self.queue,
            "oldest_queued_due_at": utc_iso(self.oldest_queued_due_at),
            "last_editions": [
                {
                    "kind": e.kind,
                    "period": e.period,
                    "created_at": utc_iso(e.created_at),
                    "sent": e.get(DeliveryStatus.SENT),
                    "failed": e.get(DeliveryStatus.FAILED),
                    "skipped": e.get(DeliveryStatus.SKIPPED),
                    "pending": e.get(DeliveryStatus.QUEUED, DeliveryStatus.SENDING),
                }
                for e in self.last_editions
            ],
        }


def snapshot(session: Session) -> Snapshot:
    queue = {str(status): 0 for status in counts.PENDING}
    for (_, status), n in counts.pending(session).items():
        queue[status] += n
    return Snapshot(
        counts.subscribers(session),
        queue,
        counts.oldest_queued(session),
        counts.latest_editions(session),
    )


def utc_iso(value: datetime | None) -> str | None:
    """``2026-11-29T07:00:00Z``: how the admin API writes instants."""
    return value.isoformat().replace("+00:00", "Z") if value else None


# --- per day ---------------------------------------------------------------------------


class utc_day(FunctionElement[str]):
    """The UTC calendar day of a timestamp column, as ``YYYY-MM-DD`` text on every backend."""

    type = String()
    inherit_cache = True


@compiles(utc_day)
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@dataclass(frozen=True)
class Activity:
    days: list[date]  # oldest first, UTC days
    sent: list[int]
    skipped: list[int]
    unsubscribes: list[int]
    bounces: list[int]

    def series(self) -> dict[str, list[int]]:
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "unsubscribes": self.unsubscribes,
            "bounces": self.bounces,
        }


def daily_activity(session: Session, now: datetime, days: int = 30) -> Activity:
    """The last ``days`` UTC days up to and including today's (partial) one."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=UTC)
    end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=UTC)
    calendar = [first + timedelta(days=i) for i in range(days)]

    def per_day(column: InstrumentedAttribute[Any], *where: ColumnElement[bool]) -> list[int]:
        day = utc_day(column)
        rows = session.execute(
            select(day, func.count()).where(column >= start, column < end, *where).group_by(day)
        ).all()
        found = {date.fromisoformat(str(d)): int(n) for d, n in rows}
        return [found.get(d, 0) for d in calendar]

    # The deliveries table keeps every edition ever sent; its (edition_id, status) index
    # limits both scans to the recent editions. An edition is named by its local send date,
    # so anything sent or due inside the window belongs to one dated at most a few days
    # before it (retries stop at the catch-up window, hours after the due time).
    recent = Delivery.edition_id.in_(
        select(Edition.id).where(Edition.period >= (first - EDITION_MARGIN).isoformat())
    )
    return Activity(
        days=calendar,
        sent=per_day(Delivery.sent_at, recent, Delivery.status == DeliveryStatus.SENT),
        skipped=per_day(Delivery.due_at, recent, Delivery.status == DeliveryStatus.SKIPPED),
        unsubscribes=per_day(Subscriber.unsubscribed_at),
        bounces=per_day(Suppression.created_at, Suppression.reason.in_(BOUNCE_REASONS)),
    )

"""How fast mail has been going out, for ``digestd stats`` (read-only).

The latest edition's send rate, and recent throughput: messages of the latest editions
recorded as sent in the last minute, 15 minutes and hour. Counts by status come from
:mod:`digestd.ops.counts`; like them, nothing here reads more than the latest editions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digestd.models import Delivery, DeliveryStatus
from digestd.ops.counts import EditionCounts, latest_editions

WINDOWS = (timedelta(minutes=1), timedelta(minutes=15), timedelta(hours=1))


@dataclass
class QueueStats:
    last_edition: EditionCounts | None
    rate: float | None  # its messages per second between its first and last send
    recent: dict[timedelta, int] = field(default_factory=dict)

    def throughput_lines(self) -> list[str]:
        """What ``digestd stats`` adds to the counts: how fast mail has been going out."""
        out = []
        edition = self.last_edition
        if edition is not None and self.rate:
            # A rate, never read as a time ("sent at: 0 msg/s" was): one decimal when small.
            rate = f"{self.rate:,.0f}" if self.rate >= 10 else f"{self.rate:.1f}"
            out.append(
                f"last edition ({edition.kind} {edition.period}) went out at {rate} messages/s"
            )
        recent = ", ".join(
            f"{count} in the last {_span(window)} ({count / window.total_seconds():.1f}/s)"
            for window, count in self.recent.items()
        )
        out.append(f"sent recently: {recent}")
        return out


def _span(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return "hour" if minutes == 60 else "minute" if minutes == 1 else f"{minutes} minutes"


def queue_stats(session: Session, now: datetime) -> QueueStats:
    editions = latest_editions(session)
    ids = [e.id for e in editions]
    last = max(editions, key=lambda e: e.id, default=None)
    rate = None
    if last is not None:
        first_sent, last_sent = session.execute(
            select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
                Delivery.edition_id == last.id, Delivery.status == DeliveryStatus.SENT
            )
        ).one()
        if first_sent is not None and last_sent is not None and last_sent > first_sent:
            rate = last.get(DeliveryStatus.SENT) / (last_sent - first_sent).total_seconds()
    recent = {
        window: int(
            session.scalar(
                select(func.count()).where(
                    Delivery.edition_id.in_(ids),
                    Delivery.status == DeliveryStatus.SENT,
                    Delivery.sent_at >= now - window,
                )
            )
            or 0
        )
        for window in WINDOWS
    }
    return QueueStats(last, rate, recent)

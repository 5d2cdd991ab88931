"""How fast mail has been going out, for ``digestd stats`` (read-only).

The latest edition's outcome and send rate, and recent throughput (messages recorded as
sent in the last minute, 15 minutes and hour). Counts by status live in ``activity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digestd.models import Delivery, DeliveryStatus, Edition

WINDOWS = (timedelta(minutes=1), timedelta(minutes=15), timedelta(hours=1))


@dataclass
class EditionStats:
    kind: str
    period: str
    counts: dict[str, int]
    rate: float | None  # messages per second between its first and last send


@dataclass
class QueueStats:
    queue: dict[str, int]
    last_edition: EditionStats | None
    recent: dict[timedelta, int] = field(default_factory=dict)

    def throughput_lines(self) -> list[str]:
        """What ``digestd stats`` adds to the counts: how fast mail has been going out."""
        out = []
        edition = self.last_edition
        if edition is not None and edition.rate:
            out.append(
                f"last edition sent at: {edition.rate:,.0f} msg/s ({edition.kind} {edition.period})"
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
    queue = {
        str(status): int(count)
        for status, count in session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
    }
    last = session.execute(
        select(Edition.id, Edition.kind, Edition.period).order_by(Edition.id.desc()).limit(1)
    ).first()
    edition = None
    if last is not None:
        counts = {
            str(status): int(count)
            for status, count in session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == last.id)
                .group_by(Delivery.status)
            )
        }
        first_sent, last_sent = session.execute(
            select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
                Delivery.edition_id == last.id, Delivery.status == DeliveryStatus.SENT
            )
        ).one()
        rate = None
        if first_sent is not None and last_sent is not None and last_sent > first_sent:
            rate = counts.get("sent", 0) / (last_sent - first_sent).total_seconds()
        edition = EditionStats(last.kind, last.period, counts, rate)
    recent = {
        window: int(
            session.scalar(
                select(func.count()).where(
                    Delivery.status == DeliveryStatus.SENT, Delivery.sent_at >= now - window
                )
            )
            or 0
        )
        for window in WINDOWS
    }
    return QueueStats(queue, edition, recent)

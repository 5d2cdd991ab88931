"""Activity per UTC day (the admin page's charts) and the stats snapshot, on crafted rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.db import make_engine, make_sessions
from digestd.models import DeliveryStatus, SubscriberStatus
from digestd.ops.activity import daily_activity, snapshot
from tests.admin_seed import delivery, edition, reader, suppression

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    yield make_sessions(engine)
    engine.dispose()


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


def test_series_count_each_utc_day_and_leave_the_rest_at_zero(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        ann = reader(session, "ann@example.com", created_at=at(1, 0))
        bob = reader(session, "bob@example.com", created_at=at(1, 0))
        cy = reader(session, "cy@example.com", created_at=at(1, 0))
        # Sent just before and just after midnight UTC: two different days.
        d27 = edition(session, "daily", "2026-11-27", at(27, 7))
        delivery(session, ann, d27, DeliveryStatus.SENT, at(27, 23), sent_at=at(27, 23, 59, 59))
        delivery(session, bob, d27, DeliveryStatus.SENT, at(27, 23), sent_at=at(28, 0, 0, 0))
        delivery(session, cy, d27, DeliveryStatus.SKIPPED, at(27, 7))
        d28 = edition(session, "daily", "2026-11-28", at(28, 7))
        delivery(session, ann, d28, DeliveryStatus.FAILED, at(28, 7))  # neither sent nor skipped
        delivery(session, bob, d28, DeliveryStatus.SKIPPED, at(28, 7))
        delivery(session, cy, d28, DeliveryStatus.QUEUED, at(28, 7))
        # Sent on the window's first UTC day for an edition dated the day before (a reader
        # west of UTC): counted on the day it went out.
        d24 = edition(session, "daily", "2026-11-24", at(24, 17))
        delivery(session, cy, d24, DeliveryStatus.SENT, at(24, 17), sent_at=at(25, 0, 30))
        # Older than the window: not counted.
        old = edition(session, "daily", "2026-10-01", at(1, 7) - timedelta(days=31))
        delivery(
            session, ann, old, DeliveryStatus.SENT, at(1, 7), sent_at=at(1, 7) - timedelta(days=31)
        )
        gone = reader(
            session, "gone@example.com", status=SubscriberStatus.UNSUBSCRIBED, created_at=at(1, 0)
        )
        gone.unsubscribed_at = at(29, 8)
        suppression(session, "hard@example.com", "hard-bounce", at(26, 12))
        suppression(session, "soft@example.com", "soft-bounces", at(26, 13))
        suppression(session, "angry@example.com", "complaint", at(29, 1))
        suppression(session, "erased@example.com", "erased", at(29, 2))  # a request, not a bounce
    with sessions() as session:
        activity = daily_activity(session, NOW, days=5)
    assert activity.days == [date(2026, 11, d) for d in (25, 26, 27, 28, 29)]
    assert activity.sent == [1, 0, 1, 1, 0]
    assert activity.skipped == [0, 0, 1, 1, 0]
    assert activity.unsubscribes == [0, 0, 0, 0, 1]
    assert activity.bounces == [0, 2, 0, 0, 1]


def test_thirty_days_end_with_today(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        activity = daily_activity(session, NOW)
    assert len(activity.days) == 30
    assert activity.days[-1] == date(2026, 11, 29) and activity.days[0] == date(2026, 10, 31)
    assert set(activity.series()) == {"sent", "skipped", "unsubscribes", "bounces"}
    assert all(values == [0] * 30 for values in activity.series().values())


def test_snapshot_reports_the_oldest_queued_and_the_last_edition_of_each_kind(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        ann = reader(session, "ann@example.com", frequency="both", created_at=at(1, 0))
        bob = reader(
            session, "bob@example.com", status=SubscriberStatus.PAUSED, created_at=at(1, 0)
        )
        w = edition(session, "weekly", "2026-11-22", at(22, 8))
        delivery(session, ann, w, DeliveryStatus.SENT, at(22, 8), sent_at=at(22, 8, 1))
        delivery(session, bob, w, DeliveryStatus.FAILED, at(22, 8))
        d28 = edition(session, "daily", "2026-11-28", at(28, 7))
        delivery(session, ann, d28, DeliveryStatus.QUEUED, at(28, 7, 15))
        d29 = edition(session, "daily", "2026-11-29", at(29, 7))
        delivery(session, ann, d29, DeliveryStatus.QUEUED, at(29, 7))
    with sessions() as session:
        now = snapshot(session)
    assert now.subscribers == {"active": 1, "paused": 1}
    # The queue is what waits or is in flight; what was sent is history (the editions).
    assert now.queue == {"queued": 2, "sending": 0}
    assert now.oldest_queued_due_at == at(28, 7, 15)
    assert [(e.kind, e.period, e.deliveries) for e in now.last_editions] == [
        ("daily", "2026-11-29", {"queued": 1}),
        ("weekly", "2026-11-22", {"failed": 1, "sent": 1}),
    ]
    assert now.as_json()["last_editions"][1] == {
        "kind": "weekly",
        "period": "2026-11-22",
        "created_at": "2026-11-22T08:00:00Z",
        "sent": 1,
        "failed": 1,
        "skipped": 0,
        "pending": 0,
    }

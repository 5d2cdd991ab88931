"""Retention: settled history older than the window is pruned, in chunks; what is still
waiting, what the window holds, and the digests it refers to stay. Real databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.db import make_engine, make_sessions
from digestd.models import (
    ArchiveEdition,
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Digest,
    Edition,
    Subscriber,
    Suppression,
)
from digestd.ops import retention
from digestd.ops.retention import prune
from digestd.readers.bounce_policy import Kind
from digestd.readers.ledger import Event, record
from tests.admin_seed import delivery, edition, reader, suppression

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    yield make_sessions(engine)
    engine.dispose()


def _history(sessions: sessionmaker[Session], days: int) -> None:
    """One daily edition a day for ``days`` days, two readers each, a digest each."""
    with sessions.begin() as session:
        ann = reader(session, "ann@example.com", created_at=NOW - timedelta(days=days + 1))
        bob = reader(session, "bob@example.com", created_at=NOW - timedelta(days=days + 1))
        suppression(session, "gone@example.com", "hard-bounce", NOW - timedelta(days=days))
        for back in range(days):
            due = NOW - timedelta(days=back, hours=2)
            daily = edition(session, "daily", due.date().isoformat(), due)
            digest = Digest(edition_id=daily.id, content_key="k", layout={}, created_at=due)
            session.add(digest)
            session.flush()
            for who, status in ((ann, DeliveryStatus.SENT), (bob, DeliveryStatus.SKIPPED)):
                row = delivery(session, who, daily, status, due, sent_at=due)
                row.digest_id = digest.id


def _count(sessions: sessionmaker[Session], model: object, *where: object) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def test_settled_rows_older_than_the_window_go_with_their_digests_and_editions(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHUNK", 7)  # several chunks, each its own transaction
    _history(sessions, 120)
    with sessions.begin() as session:  # an old row still waiting: never pruned
        stuck = session.scalars(select(Delivery).where(Delivery.status == "skipped")).first()
        assert stuck is not None
        old = session.scalars(select(Edition).order_by(Edition.period)).first()
        assert old is not None
        stuck.status, stuck.edition_id = DeliveryStatus.QUEUED, old.id
    report = prune(sessions, NOW, days=90)
    # 120 days of 2 rows; days 0-89 back are inside the window (the edition 90 days back
    # is due 2 h before the cutoff).
    assert report.deliveries == 2 * 30 - 1
    assert _count(sessions, Delivery) == 2 * 90 + 1
    assert _count(sessions, Delivery, Delivery.status == DeliveryStatus.QUEUED) == 1
    # Editions are named by local dates: those of the last day before the window stay a day
    # longer (days 90 and 91 back), and the one holding the waiting row keeps its digest;
    # the 27 others before the window are gone.
    assert (report.digests, report.editions) == (27, 27)
    assert _count(sessions, Edition) == 93 and _count(sessions, Digest) == 93
    # Nothing but the history: readers and suppressions stay.
    assert _count(sessions, Subscriber) == 2 and _count(sessions, Suppression) == 1
    again = prune(sessions, NOW, days=90)
    assert (again.deliveries, again.digests, again.editions) == (0, 0, 0)


def test_a_digest_the_archive_shows_outlives_the_window_with_its_edition(
    sessions: sessionmaker[Session],
) -> None:
    _history(sessions, 120)
    old_day = (NOW - timedelta(days=100, hours=2)).date().isoformat()
    with sessions.begin() as session:
        old = session.scalars(select(Edition).where(Edition.period == old_day)).one()
        shown = Digest(edition_id=old.id, content_key="archived", layout={}, created_at=NOW)
        session.add(shown)
        session.flush()
        session.add(
            ArchiveEdition(
                category="ai", kind="daily", period=old_day, digest_id=shown.id, published_at=NOW
            )
        )
        shown_id, old_id = shown.id, old.id
    report = prune(sessions, NOW, days=90)
    assert report.digests == 28 and report.editions == 27  # as without it, but for its edition
    with sessions() as session:
        kept = session.scalars(select(Digest.id).where(Digest.edition_id == old_id)).all()
        archived = session.scalars(select(ArchiveEdition.digest_id)).all()
    assert kept == [shown_id]  # the readers' digest of that day went; the archive's stayed
    assert archived == [shown_id] and _count(sessions, Edition, Edition.id == old_id) == 1
    again = prune(sessions, NOW, days=90)
    assert (again.deliveries, again.digests, again.editions) == (0, 0, 0)


def _ledger(sessions: sessionmaker[Session], kind: Kind, days_ago: int, who: int | None) -> None:
    with sessions.begin() as session:
        record(
            session,
            Event(kind, "dsn", "lmtp", status="5.1.1", report_id=f"r-{kind}-{days_ago}-{who}"),
            delivery_id=None,
            subscriber_id=who,
            now=NOW - timedelta(days=days_ago),
        )


def test_unmatched_bounce_reports_older_than_the_window_go_and_reports_about_readers_stay(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone can mail the bounces address: its reports about nobody would pile up for ever.
    The ledger's rows about a reader are the evidence for suppressions and soft bounces."""
    monkeypatch.setattr(retention, "CHUNK", 4)  # several chunks, each its own transaction
    with sessions.begin() as session:
        ann = reader(session, "ann@example.com", created_at=NOW - timedelta(days=400)).id
    for days_ago in range(91, 101):
        _ledger(sessions, Kind.UNMATCHED, days_ago, None)
    _ledger(sessions, Kind.UNMATCHED, 89, None)  # inside the window
    _ledger(sessions, Kind.SOFT, 200, ann)
    _ledger(sessions, Kind.HARD, 300, ann)
    _ledger(sessions, Kind.NOTICE, 150, None)  # a reader's, whose row erasure emptied
    report = prune(sessions, NOW, days=90)
    assert report.unmatched == 10
    with sessions() as session:
        kept = session.execute(
            select(BounceEvent.kind, BounceEvent.subscriber_id).order_by(BounceEvent.created_at)
        ).all()
    assert [tuple(row) for row in kept] == [
        (Kind.HARD, ann),
        (Kind.SOFT, ann),
        (Kind.NOTICE, None),
        (Kind.UNMATCHED, None),
    ]
    assert prune(sessions, NOW, days=90).unmatched == 0


def test_pruning_reads_the_old_unmatched_reports_not_the_readers_rows_it_keeps(
    settings: Settings,
) -> None:
    """The ledger's rows about readers are kept for ever: an hourly pass that read them all
    would take longer every year."""
    from sqlalchemy import insert

    from tests.test_query_work import vm_steps

    if not settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite's query planner; PostgreSQL plans from its statistics")
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    steps = []
    for old_rows in (100, 3000):
        with sessions.begin() as session:
            session.execute(
                insert(BounceEvent),
                [
                    {
                        "kind": Kind.SOFT,
                        "source": "dsn",
                        "channel": "api",
                        "created_at": NOW - timedelta(days=200, minutes=n),
                    }
                    for n in range(old_rows)
                ],
            )
        with vm_steps(engine) as taken:
            prune(sessions, NOW, days=90)
        steps.append(taken.count)
    engine.dispose()
    assert steps[1] < steps[0] + 20, steps  # (hundreds of SQLite VM steps)


def test_the_retention_window_is_a_setting_of_at_least_nine_days(env: dict[str, str]) -> None:
    from digestd.config import load_settings
    from digestd.errors import ConfigError

    assert load_settings(env).retention_days == 90
    assert load_settings({**env, "DIGESTD_RETENTION_DAYS": "30"}).retention_days == 30
    for bad in ("8", "0", "-1", "nan", "ninety"):
        with pytest.raises(ConfigError, match="DIGESTD_RETENTION_DAYS"):
            load_settings({**env, "DIGESTD_RETENTION_DAYS": bad})

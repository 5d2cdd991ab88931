"""``digestd.db.update_rows`` and ``delete_rows``: a batch of rows written back or deleted by
their columns in one statement per shape of row, on both databases, and the same rows as
one statement a row would change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.db import delete_rows, make_engine, make_sessions, update_rows
from digestd.models import Digest, Edition, EditionKind, Subscriber, SubscriberCategory
from tests.seeding import Reader, add_readers

NOW = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        yield session
    engine.dispose()


def test_rows_of_several_shapes_are_written_back_by_their_key(session: Session) -> None:
    add_readers(session, [Reader(f"r{i}@example.com") for i in range(4)], NOW)
    session.flush()
    ids = list(session.scalars(select(Subscriber.id).order_by(Subscriber.id)))
    later = NOW + timedelta(days=1)
    update_rows(
        session,
        Subscriber.__table__,
        [
            {"id": ids[0], "timezone": "Asia/Tokyo", "wants_weekly": True, "next_daily_at": later},
            {"id": ids[1], "timezone": "Europe/Paris"},  # another shape: its own statement
            {
                "id": ids[2],
                "timezone": "Asia/Dubai",
                "wants_weekly": False,
                "next_daily_at": None,
            },
        ],
    )
    session.expire_all()
    rows = session.execute(
        select(
            Subscriber.timezone,
            Subscriber.wants_weekly,
            Subscriber.next_daily_at,
        ).order_by(Subscriber.id)
    ).all()
    assert [tuple(row) for row in rows[:3]] == [
        ("Asia/Tokyo", True, later),
        ("Europe/Paris", rows[1].wants_weekly, rows[1].next_daily_at),
        ("Asia/Dubai", False, None),
    ]
    assert rows[3].timezone == "UTC"  # not in the batch: untouched


def test_a_column_sqlalchemy_must_convert_is_written_too(session: Session) -> None:
    """JSON: neither a number, a text nor an instant (SQLAlchemy's own executemany)."""
    edition = Edition(kind=EditionKind.DAILY, period="2026-03-10", created_at=NOW)
    session.add(edition)
    session.flush()
    digest = Digest(edition_id=edition.id, content_key="k", layout={"old": 1}, created_at=NOW)
    session.add(digest)
    session.flush()
    update_rows(session, Digest.__table__, [{"id": digest.id, "layout": {"new": [1, 2]}}])
    session.expire_all()
    assert session.scalar(select(Digest.layout)) == {"new": [1, 2]}


def test_rows_are_deleted_by_all_their_columns(session: Session) -> None:
    add_readers(session, [Reader("a@example.com", categories=("ai", "robotics", "fintech"))], NOW)
    session.flush()
    reader = session.scalar(select(Subscriber.id))
    delete_rows(
        session,
        SubscriberCategory.__table__,
        [
            {"subscriber_id": reader, "category": "ai"},
            {"subscriber_id": reader, "category": "fintech"},
            {"subscriber_id": reader, "category": "quantum"},  # not there: nothing
        ],
    )
    delete_rows(session, SubscriberCategory.__table__, [])
    left = session.scalars(select(SubscriberCategory.category))
    assert list(left) == ["robotics"]

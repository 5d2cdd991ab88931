"""Set-based inserts (``digestd.db``): the rows a statement created, the conflicts it
skipped, and instants stored as the ORM reads them back, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.db import insert_ignoring_conflicts, make_engine, make_sessions
from digestd.models import Delivery, DeliveryStatus, Edition, EditionKind, Subscriber
from tests.seeding import Reader, add_readers

NOW = datetime(2026, 3, 10, 7, 0, 0, 123456, tzinfo=UTC)


def _row(subscriber_id: int, edition_id: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "subscriber_id": subscriber_id,
        "edition_id": edition_id,
        "digest_id": None,
        "status": DeliveryStatus.SKIPPED,
        "due_at": NOW - timedelta(minutes=1),
        "next_attempt_at": NOW,
        "attempts": 0,
        "created_at": NOW,
        "last_error": "nothing to send",
    }
    return {**row, **changes}


def _readers_and_edition(session: Session, count: int) -> tuple[list[int], int]:
    """``count`` readers' ids and a daily edition's, to hang queue rows on."""
    add_readers(session, [Reader(f"r{i}@example.com") for i in range(count)], NOW)
    ids = list(session.scalars(select(Subscriber.id).order_by(Subscriber.id)))
    session.add(Edition(kind=EditionKind.DAILY, period="2026-03-10", created_at=NOW))
    session.flush()
    return ids, session.scalars(select(Edition.id)).one()


def test_an_insert_returns_the_rows_it_created_and_skips_the_conflicts(
    database_url: str,
) -> None:
    sessions = make_sessions(make_engine(database_url))
    with sessions.begin() as session:
        ids, edition = _readers_and_edition(session, 3)
        first = insert_ignoring_conflicts(
            session, Delivery.__table__, [_row(ids[0], edition)], ["subscriber_id", "edition_id"]
        )
        assert first == []  # nothing asked back
        rows = [_row(i, edition, last_error=f"reader {i}") for i in ids]  # ids[0] is there
        rows[2] = dict(reversed(list(rows[2].items())))  # the same columns, in another order
        created = insert_ignoring_conflicts(
            session,
            Delivery.__table__,
            rows,
            ["subscriber_id", "edition_id"],
            returning=["subscriber_id", "last_error"],
        )
    assert sorted(tuple(row) for row in created) == [(i, f"reader {i}") for i in ids[1:]]
    with sessions() as session:
        stored = session.execute(
            select(
                Delivery.subscriber_id, Delivery.due_at, Delivery.created_at, Delivery.status
            ).order_by(Delivery.subscriber_id)
        ).all()
    assert [tuple(row) for row in stored] == [
        (i, NOW - timedelta(minutes=1), NOW, DeliveryStatus.SKIPPED) for i in ids
    ]


def test_a_naive_instant_is_refused_before_anything_is_written(database_url: str) -> None:
    sessions = make_sessions(make_engine(database_url))
    with sessions.begin() as session:
        (reader,), edition = _readers_and_edition(session, 1)
    with pytest.raises(Exception, match="naive datetime"), sessions.begin() as session:
        naive = _row(reader, edition, created_at=NOW.replace(tzinfo=None))
        insert_ignoring_conflicts(
            session, Delivery.__table__, [naive], ["subscriber_id", "edition_id"]
        )
    with sessions() as session:
        assert session.scalars(select(Delivery.id)).all() == []


def test_an_instant_given_in_any_zone_is_stored_as_that_instant(database_url: str) -> None:
    """Conversions to SQLite's text are cached by instant: the same instant in another zone
    reads back the same, the same wall time in another zone does not, nor the two 01:30s of
    the night New York's clocks go back."""
    plus_two = timezone(timedelta(hours=2))
    twice = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    sessions = make_sessions(make_engine(database_url))
    with sessions.begin() as session:
        ids, edition = _readers_and_edition(session, 5)
        given = [
            NOW,
            NOW.astimezone(plus_two),
            NOW.replace(tzinfo=plus_two),
            twice,
            twice.replace(fold=1),
        ]
        rows = [_row(i, edition, due_at=due) for i, due in zip(ids, given, strict=True)]
        insert_ignoring_conflicts(
            session, Delivery.__table__, rows, ["subscriber_id", "edition_id"]
        )
    with sessions() as session:
        stored = session.scalars(select(Delivery.due_at).order_by(Delivery.subscriber_id)).all()
    assert stored == [
        NOW,
        NOW,
        NOW - timedelta(hours=2),
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    ]

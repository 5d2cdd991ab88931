"""``digestd.bulk.among``: an IN list as one parameter, whatever its length, on both
databases; the same rows as a plain IN list, for ids, strings and none at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from digestd.bulk import among
from digestd.db import make_engine, make_sessions
from digestd.models import Subscriber
from tests.seeding import Reader, add_readers

NOW = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)


def _seeded(database_url: str, count: int) -> tuple[Session, list[int]]:
    engine = make_engine(database_url)
    session = make_sessions(engine)()
    add_readers(session, [Reader(f"r{i}@example.com") for i in range(count)], NOW)
    session.flush()
    return session, list(session.scalars(select(Subscriber.id).order_by(Subscriber.id)))


@pytest.mark.parametrize("missing", [0, 7, 1500])
def test_among_finds_what_a_plain_in_list_finds(database_url: str, missing: int) -> None:
    session, ids = _seeded(database_url, 40)
    with session:
        wanted = [*ids[::3], *range(10_000, 10_000 + missing)]  # every third, and strangers
        found = set(
            session.scalars(select(Subscriber.id).where(among(session, Subscriber.id, wanted)))
        )
        assert found == set(ids[::3])
        plain = session.scalars(select(Subscriber.id).where(Subscriber.id.in_(wanted)))
        assert found == set(plain)


def test_among_nothing_is_nothing(database_url: str) -> None:
    session, _ = _seeded(database_url, 3)
    with session:
        assert (
            session.scalars(select(Subscriber.id).where(among(session, Subscriber.id, []))).all()
            == []
        )


def test_among_matches_strings_and_sets(database_url: str) -> None:
    session, _ = _seeded(database_url, 5)
    with session:
        emails = {
            "r1@example.com",
            "r4@example.com",
            "nobody@example.com",
            "o'brien@example.com",
        }
        found = set(
            session.scalars(
                select(Subscriber.email).where(among(session, Subscriber.email, emails))
            )
        )
        assert found == {"r1@example.com", "r4@example.com"}


def test_among_on_sqlite_does_not_cut_text_at_a_nul(database_url: str) -> None:
    """SQLite's JSON functions end text at a NUL: such text goes as a plain IN list.
    (PostgreSQL refuses text with a NUL in any statement.)"""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL text cannot hold a NUL")
    session, _ = _seeded(database_url, 3)
    with session:
        wanted = ["r1@example.com", "r2@example.com\x00tail"]  # not r2
        found = session.scalars(
            select(Subscriber.email).where(among(session, Subscriber.email, wanted))
        ).all()
        assert found == ["r1@example.com"]


def test_among_is_one_parameter_however_many_values(database_url: str) -> None:
    """A thousand ids bound as a thousand parameters are compiled and converted one by one on
    every execution; the sender claims a thousand rows a batch."""
    session, ids = _seeded(database_url, 3)
    with session:
        seen: list[int] = []

        def count(
            conn: Connection, cursor: object, statement: str, parameters: object, *_: object
        ) -> None:
            seen.append(len(parameters) if isinstance(parameters, tuple | list | dict) else 1)

        event.listen(session.get_bind(), "before_cursor_execute", count)
        try:
            for size in (10, 1000):
                found = session.scalars(
                    select(Subscriber.id).where(
                        among(session, Subscriber.id, [*ids, *range(-size, 0)])
                    )
                ).all()
                assert sorted(found) == ids
        finally:
            event.remove(session.get_bind(), "before_cursor_execute", count)
        assert seen == [1, 1]

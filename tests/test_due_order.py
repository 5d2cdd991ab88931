"""The planner's "who is due" batches on PostgreSQL are read from the due index in its
order. Readers of one zone share a send instant: an index of (status, instant) alone made
PostgreSQL read and sort every reader of that instant for each batch of a thousand (50-140
ms a batch at 100 000 readers); with the id at its end (migration 0016) a batch is a
range of the index. Checked in the plan PostgreSQL makes, not in time. (SQLite's plans:
test_query_work.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import InstrumentedAttribute

from digestd.models import Subscriber
from digestd.planning.planner import due_batch
from tests.seeding import seed_daily_edition

SEND = datetime.fromisoformat("2026-03-10T07:00:00+00:00")
READERS = 3_000


@pytest.fixture(autouse=True)
def _postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's planner (SQLite's: test_query_work.py)")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _plan(engine: Engine, column: InstrumentedAttribute[datetime | None]) -> list[dict[str, Any]]:
    """The plan of the planner's second batch: after its first thousand readers."""
    with engine.connect() as connection:
        connection.execute(text("ANALYZE subscribers"))
        at, first = connection.execute(
            select(column, Subscriber.id).order_by(column, Subscriber.id).limit(1)
        ).one()
        query = due_batch(column, SEND, (at, first + 999), 1000, locking=True)
        compiled = query.compile(dialect=engine.dialect)
        explain = f"EXPLAIN (FORMAT JSON) {compiled}"
        (plan,) = connection.exec_driver_sql(explain, compiled.params).scalar_one()
        assert isinstance(plan, dict), json.dumps(plan)[:200]
        return list(_nodes(plan["Plan"]))


@pytest.mark.parametrize(
    ("column", "index"),
    [
        (Subscriber.next_daily_at, "ix_subscribers_status_next_daily_at"),
        (Subscriber.next_weekly_at, "ix_subscribers_status_next_weekly_at"),
    ],
)
def test_a_due_batch_is_a_range_of_the_due_index_never_sorted(
    database_url: str, column: InstrumentedAttribute[datetime | None], index: str
) -> None:
    engine, sessions = seed_daily_edition(database_url, READERS, SEND)
    if column is Subscriber.next_weekly_at:  # the same readers, due for a recap instead
        with sessions.begin() as session:
            session.execute(
                Subscriber.__table__.update().values(  # type: ignore[attr-defined]
                    wants_weekly=True, next_weekly_at=Subscriber.next_daily_at
                )
            )
    with sessions() as session:
        due = session.scalar(select(func.count()).where(column <= SEND))
        assert due == READERS  # one send instant for all: the case that was sorted
    try:
        nodes = _plan(engine, column)
    finally:
        engine.dispose()
    kinds = [node["Node Type"] for node in nodes]
    assert not {"Sort", "Incremental Sort"} & set(kinds), kinds
    scans = [node for node in nodes if node.get("Index Name")]
    assert [scan["Index Name"] for scan in scans] == [index], kinds
    assert "Seq Scan" not in kinds

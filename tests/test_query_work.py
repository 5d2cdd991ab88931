"""Statements run once per batch whose work must not grow with the tables: SQLite keeps no
statistics (digestd runs no ANALYZE), and given an equality on an indexed status or
edition it reads every row under it. Measured in SQLite virtual-machine steps (its
progress handler), not in time: a count does not depend on the machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from digestd.delivery.queue import Outcome
from digestd.delivery.queue_store import queue_store
from digestd.delivery.worker import Worker
from digestd.models import Delivery, DeliveryStatus, EditionKind, Subscriber
from digestd.planning.planner import enqueue_due
from digestd.planning.repeats import EarlierDailies
from tests.email_samples import MASTHEAD
from tests.seeding import policy_at, seed_daily_edition

SEND = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
READERS = 1_500


@pytest.fixture(autouse=True)
def _sqlite_only(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's query planner; PostgreSQL plans from its statistics")


@dataclass
class Steps:
    count: int = 0


@contextmanager
def vm_steps(engine: Engine) -> Iterator[Steps]:
    """Hundreds of SQLite VM instructions run by statements on ``engine`` meanwhile."""
    steps = Steps()

    def tick() -> int:
        steps.count += 1
        return 0  # go on

    attached: list[Any] = []

    def attach(connection: Any, *_: Any) -> None:
        driver = connection.connection.driver_connection
        driver.set_progress_handler(tick, 100)
        attached.append(driver)

    event.listen(engine, "before_cursor_execute", attach)
    try:
        yield steps
    finally:
        event.remove(engine, "before_cursor_execute", attach)
        for driver in attached:  # the handler stays with a connection until taken off
            driver.set_progress_handler(None, 0)


def _planned(url: str, send: datetime) -> tuple[Engine, sessionmaker[Session]]:
    """:data:`READERS` readers with their daily of ``send`` queued."""
    from digestd.mail.digests import DigestRenderer

    engine, sessions = seed_daily_edition(url, READERS, send)
    report = enqueue_due(sessions, policy_at(send), DigestRenderer(MASTHEAD), send)
    assert report.queued[EditionKind.DAILY] == READERS
    return engine, sessions


def test_a_claim_reads_its_rows_by_id_however_many_are_queued(database_url: str) -> None:
    engine, sessions = _planned(database_url, SEND)
    store = queue_store(sessions, Worker.this_process(), clock=lambda: SEND)
    with vm_steps(engine) as crowded:  # 1 490 rows stay queued
        first = store.claim(SEND, LEASE, 10)
    rest = store.claim(SEND, LEASE, READERS - 20)
    sent = [Outcome(j, DeliveryStatus.SENT, True, SEND, sent_at=SEND) for j in first + rest]
    store.record(sent, SEND)
    with vm_steps(engine) as alone:  # the last 10
        last = store.claim(SEND, LEASE, 10)
    engine.dispose()
    assert len(first) == len(last) == 10
    # Reading every queued row to find the ten would cost ~100 times as much here.
    assert crowded.count < 2 * alone.count


def test_the_repeat_check_reads_the_readers_rows_not_yesterdays_edition(
    database_url: str,
) -> None:
    yesterday = SEND - timedelta(days=1)
    engine, sessions = _planned(database_url, yesterday)
    with sessions.begin() as session:
        session.execute(update(Delivery).values(status=DeliveryStatus.SENT))
        readers = list(session.scalars(select(Subscriber.id).order_by(Subscriber.id)))
    earlier = EarlierDailies(SEND)
    with sessions() as session:
        earlier.sent_to(session, readers[:1])  # the editions and digests, looked up once a run
        with vm_steps(engine) as few:
            some = earlier.sent_to(session, readers[:10])
        with vm_steps(engine) as everyone:
            every = earlier.sent_to(session, readers)
    engine.dispose()
    assert len(some) == 10 and len(every) == READERS
    assert all(articles for articles in every.values())
    # Reading the whole edition for any batch would make the two about the same.
    assert few.count * 20 < everyone.count

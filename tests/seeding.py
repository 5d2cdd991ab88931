"""Fast test data for the delivery tests: articles and many active subscribers at once.

Rows go in through the ORM's bulk paths (no per-row flush), with each subscriber's next
send instants computed by the real :func:`digestd.readers.subscribers.reschedule`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.articles import ingest
from digestd.db import make_engine, make_sessions
from digestd.models import Subscriber, SubscriberCategory, SubscriberStatus
from digestd.planning.policy import Policy
from digestd.readers.subscribers import reschedule
from tests.helpers import article


@dataclass(frozen=True)
class Reader:
    email: str
    timezone: str = "UTC"
    categories: tuple[str, ...] = ("ai",)
    daily: bool = True
    weekly: bool = False


def add_articles(session: Session, items: Iterable[dict[str, Any]]) -> None:
    report = ingest(session, enumerate(items, start=1))
    assert not report.errors, report.errors


def hourly_articles(
    start: datetime, end: datetime, categories: Sequence[str] = ("ai",)
) -> list[dict[str, Any]]:
    # Ids carry the hour, so two calls never rewrite each other's articles.
    """One article an hour per category, each from its own source (so none is capped)."""
    items = []
    moment = start
    n = 0
    while moment < end:
        for category in categories:
            n += 1
            items.append(
                article(
                    f"{category}-{moment:%Y%m%d%H}", category, moment, score=5.0, source=f"S{n}"
                )
            )
        moment += timedelta(hours=1)
    return items


def add_readers(
    session: Session,
    readers: Sequence[Reader],
    now: datetime,
    daily_at: time = time(7),
    weekly_at: time = time(8),
) -> dict[str, int]:
    """Active subscribers, scheduled from ``now``; returns email -> id."""
    rows = []
    for reader in readers:
        subscriber = Subscriber(
            timezone=reader.timezone, wants_daily=reader.daily, wants_weekly=reader.weekly
        )
        reschedule(subscriber, now, daily_at, weekly_at)
        rows.append(
            {
                "public_id": secrets.token_urlsafe(16),
                "email": reader.email,
                "status": SubscriberStatus.ACTIVE,
                "timezone": reader.timezone,
                "wants_daily": reader.daily,
                "wants_weekly": reader.weekly,
                "next_daily_at": subscriber.next_daily_at,
                "next_weekly_at": subscriber.next_weekly_at,
                "created_at": now,
                "confirmed_at": now,
                "consent_at": now,
                "consent_source": "test",
                "soft_bounces": 0,
            }
        )
    session.execute(insert(Subscriber), rows)
    ids = dict(
        session.execute(
            select(Subscriber.email, Subscriber.id).where(
                Subscriber.email.in_([r.email for r in readers])
            )
        ).all()
    )
    session.execute(
        insert(SubscriberCategory),
        [
            {"subscriber_id": ids[r.email], "category": category}
            for r in readers
            for category in r.categories
        ],
    )
    return ids


def many_readers(
    session: Session,
    count: int,
    now: datetime,
    daily_at: time,
    domains: int = 20,
    topics: Sequence[tuple[str, ...]] = (("ai",),),
) -> None:
    """``count`` daily readers in UTC (r000000@d00.example.com ...), scheduled from ``now``;
    reader i follows ``topics[i % len(topics)]`` (one digest per distinct set)."""
    readers = [
        Reader(f"r{i:06d}@d{i % domains:02d}.example.com", "UTC", topics[i % len(topics)])
        for i in range(count)
    ]
    for start in range(0, count, 5000):
        add_readers(session, readers[start : start + 5000], now, daily_at)


READER_CATEGORY_SETS = [("ai",), ("robotics",), ("ai", "robotics"), ("fintech",), ("ai", "fintech")]


def seed_daily_edition(
    url: str, readers: int, send: datetime
) -> tuple[Engine, sessionmaker[Session]]:
    """A day of hourly articles up to ``send`` and ``readers`` daily readers (signed up the
    day before, five category sets in turn) whose daily is due at ``send``."""
    engine = make_engine(url)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        add_articles(
            session,
            hourly_articles(send - timedelta(hours=20), send, ("ai", "robotics", "fintech")),
        )
        add_readers(
            session,
            [
                Reader(f"r{i:05d}@example.com", categories=READER_CATEGORY_SETS[i % 5])
                for i in range(readers)
            ],
            send - timedelta(days=1),
        )
    return engine, sessions


def policy_at(send: datetime) -> Policy:
    """Dailies and recaps sent at ``send``'s time, ten and fifteen stories, three a source."""
    return Policy(
        daily_time=send.time(),
        weekly_time=send.time(),
        catchup=timedelta(hours=6),
        daily_limit=10,
        weekly_limit=15,
        per_source=3,
    )

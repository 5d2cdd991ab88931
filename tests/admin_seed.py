"""Rows for the admin tests, written straight into the real (migrated) database: readers,
deliveries spread over past days, unsubscribes and bounces."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from digestd.readers.subscribers import email_hash, new_subscriber, parse_preferences
from tests.conftest import ADMIN_TOKEN

TOKEN = ADMIN_TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def reader(
    session: Session,
    email: str,
    *,
    categories: str = "ai",
    frequency: str = "daily",
    timezone: str = "UTC",
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    created_at: datetime,
) -> Subscriber:
    subscriber = new_subscriber(
        email, parse_preferences(categories, frequency, timezone, "UTC"), status
    )
    subscriber.created_at = created_at
    if status is not SubscriberStatus.PENDING:
        subscriber.confirmed_at = created_at
    if status is SubscriberStatus.UNSUBSCRIBED:
        subscriber.unsubscribed_at = created_at
    session.add(subscriber)
    session.flush()
    return subscriber


def edition(session: Session, kind: str, period: str, created_at: datetime) -> Edition:
    found = Edition(kind=kind, period=period, created_at=created_at)
    session.add(found)
    session.flush()
    return found


def delivery(
    session: Session,
    subscriber: Subscriber,
    on: Edition,
    status: DeliveryStatus,
    due_at: datetime,
    sent_at: datetime | None = None,
) -> Delivery:
    row = Delivery(
        subscriber_id=subscriber.id,
        edition_id=on.id,
        status=status,
        due_at=due_at,
        next_attempt_at=due_at,
        attempts=1 if sent_at else 0,
        sent_at=sent_at,
        created_at=due_at,
    )
    session.add(row)
    return row


def suppression(session: Session, email: str, reason: str, at: datetime) -> None:
    session.add(Suppression(email_hash=email_hash(email), reason=reason, created_at=at))


def month_of_activity(session: Session, now: datetime, readers: int = 40) -> dict[str, int]:
    """30 days of a growing list, deterministic: a daily to the active readers each morning
    (07:00 UTC; fewer on weekends), every ninth one skipped, 0-4 unsubscribes and 0-3
    bounces or complaints a day. Returns the totals per series."""
    people = [
        reader(
            session,
            f"reader{i}@example.com",
            categories="ai,robotics" if i % 2 else "quantum",
            frequency="both" if i % 5 == 0 else "daily",
            created_at=now - timedelta(days=40),
        )
        for i in range(readers)
    ]
    totals = {"sent": 0, "skipped": 0, "unsubscribes": 0, "bounces": 0}
    for back in range(29, -1, -1):
        day = (now - timedelta(days=back)).replace(hour=7, minute=0, second=0, microsecond=0)
        if day > now:
            continue
        issue = edition(session, "daily", day.date().isoformat(), day)
        share = 0.7 + 0.3 * (29 - back) / 29 - (0.08 if day.weekday() >= 5 else 0)
        for n, person in enumerate(people[: round(readers * share)]):
            if (n + back) % 9 == 0:
                delivery(session, person, issue, DeliveryStatus.SKIPPED, day)
                totals["skipped"] += 1
            else:
                sent = day + timedelta(seconds=n)
                delivery(session, person, issue, DeliveryStatus.SENT, day, sent)
                totals["sent"] += 1
        for k in range(back * 7 % 5):
            leaver = reader(
                session,
                f"leaver{back}-{k}@example.com",
                status=SubscriberStatus.UNSUBSCRIBED,
                created_at=now - timedelta(days=60),
            )
            leaver.unsubscribed_at = day + timedelta(hours=3 + k)
            totals["unsubscribes"] += 1
        for k in range(back * 5 % 4):
            reason = "complaint" if k == 2 else "hard-bounce"
            at = day + timedelta(minutes=5 + k)
            suppression(session, f"gone{back}-{k}@example.net", reason, at)
            totals["bounces"] += 1
    session.flush()
    return totals

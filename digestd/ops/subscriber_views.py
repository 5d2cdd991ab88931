"""What the admin pages show of subscribers: a search (address fragment, status, category,
zone; newest first, a keyset page at a time) and one reader's record (their last editions
with how each went, and their bounces from the ledger).

Each read costs the same however long the list and the history are: the search walks the
primary key downwards from the page's last id, and a reader's rows are read through the
(subscriber, edition) and (subscriber, created_at) indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.models import BounceEvent, Delivery, Edition, Subscriber, SubscriberCategory

HISTORY = 20  # editions and bounces shown on a reader's page


@dataclass(frozen=True)
class Search:
    fragment: str = ""  # part of the address, lower case
    status: str | None = None
    category: str | None = None
    zone: str | None = None


def search(session: Session, wanted: Search, limit: int, before: int | None) -> list[Subscriber]:
    """Up to ``limit`` matching subscribers below id ``before``, newest first (with their
    categories loaded)."""
    statement = select(Subscriber).order_by(Subscriber.id.desc()).limit(limit)
    if wanted.fragment:
        # Addresses are stored lower-cased; autoescape keeps % and _ literal.
        statement = statement.where(Subscriber.email.contains(wanted.fragment, autoescape=True))
    if wanted.status:
        statement = statement.where(Subscriber.status == wanted.status)
    if wanted.zone:
        statement = statement.where(Subscriber.timezone == wanted.zone)
    if wanted.category:
        statement = statement.where(
            Subscriber.id.in_(
                select(SubscriberCategory.subscriber_id).where(
                    SubscriberCategory.category == wanted.category
                )
            )
        )
    if before is not None:
        statement = statement.where(Subscriber.id < before)
    return list(session.scalars(statement))


@dataclass(frozen=True)
class Received:
    """One of a reader's editions and how it went."""

    edition_id: int
    kind: str
    period: str
    status: str
    why: str | None  # why it failed or was skipped, or the last refusal before a retry
    sent_at: datetime | None
    digest_id: int | None


@dataclass(frozen=True)
class Bounce:
    at: datetime
    kind: str
    status: str | None
    diagnostic: str | None
    source: str
    channel: str


def received(session: Session, subscriber_id: int, limit: int = HISTORY) -> list[Received]:
    """The reader's last editions, newest first."""
    rows = session.execute(
        select(
            Edition.id,
            Edition.kind,
            Edition.period,
            Delivery.status,
            Delivery.last_error,
            Delivery.sent_at,
            Delivery.digest_id,
        )
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(Delivery.edition_id.desc())
        .limit(limit)
    ).all()
    return [Received(*row) for row in rows]


def bounces(session: Session, subscriber_id: int, limit: int = HISTORY) -> list[Bounce]:
    """The reader's bounces and complaints from the ledger, newest first."""
    rows = session.execute(
        select(
            BounceEvent.created_at,
            BounceEvent.kind,
            BounceEvent.status,
            BounceEvent.diagnostic,
            BounceEvent.source,
            BounceEvent.channel,
        )
        .where(BounceEvent.subscriber_id == subscriber_id)
        .order_by(BounceEvent.created_at.desc(), BounceEvent.id.desc())
        .limit(limit)
    ).all()
    return [Bounce(*row) for row in rows]

"""Stop mailing an address: hard bounces, complaints, repeated soft bounces (SPEC §7).

Only a hash of the address is kept in ``suppressions``, so an erased subscriber leaves no
address behind, yet an old import or a re-signup can still be refused.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digestd.db import insert_ignoring_conflicts
from digestd.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus, Suppression
from digestd.readers.subscribers import email_hash

log = logging.getLogger(__name__)

SOFT_BOUNCE_LIMIT = 3  # soft bounces in a row that suppress an address
# How a delivery's last_error marks it soft-bounced: retries ran out on 4xx answers, or a
# DSN reported a temporary failure after the relay had accepted the message.
SOFT_BOUNCE_MARK = "soft-bounce:"


def suppress(
    session: Session, subscriber_id: int, status: SubscriberStatus, reason: str, now: datetime
) -> None:
    """Mark the subscriber ``status`` (bounced, complained), unschedule, hash-suppress."""
    email = session.scalar(select(Subscriber.email).where(Subscriber.id == subscriber_id))
    if email is None:
        return
    values: dict[str, object] = {"status": status, "next_daily_at": None, "next_weekly_at": None}
    if status in (SubscriberStatus.COMPLAINED, SubscriberStatus.UNSUBSCRIBED):
        values["unsubscribed_at"] = now
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    insert_ignoring_conflicts(
        session,
        Suppression.__table__,
        [{"email_hash": email_hash(email), "reason": reason, "created_at": now}],
        ["email_hash"],
    )
    log.info("subscriber %s %s (%s): address suppressed", subscriber_id, status, reason)


def soft_bounce(session: Session, subscriber_id: int, now: datetime) -> bool:
    """Recount the subscriber's run of soft bounces after a delivery was marked one; the
    third in a row suppresses. True if it did.

    "In a row" is read from the deliveries themselves (newest first) rather than kept as
    a counter reset on success: a relay accepting a message (250) says nothing about the
    mailbox, and a DSN for it may arrive after the next edition was accepted.
    """
    recent = session.scalars(
        select(Delivery.last_error)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.status.in_([DeliveryStatus.SENT, DeliveryStatus.FAILED]),
        )
        .order_by(Delivery.due_at.desc())
        .limit(SOFT_BOUNCE_LIMIT)
    ).all()
    run = 0
    for last_error in recent:
        if not (last_error or "").startswith(SOFT_BOUNCE_MARK):
            break
        run += 1
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(soft_bounces=run)
        .execution_options(synchronize_session=False)
    )
    if run >= SOFT_BOUNCE_LIMIT:
        suppress(session, subscriber_id, SubscriberStatus.BOUNCED, "soft-bounces", now)
        return True
    return False

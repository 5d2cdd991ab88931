"""Stop mailing an address: hard bounces, complaints, repeated soft bounces (SPEC §7);
what counts as which is :mod:`digestd.readers.bounce_policy`, counted in ``readers.ledger``.

Only a hash of the address is kept in ``suppressions``, so an erased subscriber leaves no
address behind, yet an old import or a re-signup can still be refused.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digestd.db import insert_ignoring_conflicts
from digestd.models import Subscriber, SubscriberStatus, Suppression, SuppressionReason
from digestd.readers.subscribers import email_hash

log = logging.getLogger(__name__)


def suppress(
    session: Session,
    subscriber_id: int,
    status: SubscriberStatus,
    reason: SuppressionReason,
    now: datetime,
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

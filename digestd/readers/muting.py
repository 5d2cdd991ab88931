"""Muting a category from an email: the signed "mute {Category}" link of each section.

It only ever takes one category away from a reader who follows others: their last one is
never removed (that would stop every digest, which is unsubscribing and has its own page).
Works inside the caller's transaction, like :mod:`digestd.readers.lifecycle`.
"""

from __future__ import annotations

import enum
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from digestd.models import Subscriber, SubscriberCategory, SubscriberStatus
from digestd.readers.subscribers import by_public_id


class Muting(enum.StrEnum):
    MUTED = "muted"  # taken away (or, before acting: it would be)
    NOT_FOLLOWED = "not-followed"  # muted already (a second click), or never followed
    LAST_ONE = "last-one"  # their only category: refused
    NOT_RECEIVING = "not-receiving"  # unsubscribed, pending, bounced: nothing to mute


def muting(subscriber: Subscriber, category: str) -> Muting:
    """What muting ``category`` would do, changing nothing (for the page a GET shows)."""
    if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        return Muting.NOT_RECEIVING
    followed = subscriber.category_slugs
    if category not in followed:
        return Muting.NOT_FOLLOWED
    if len(followed) == 1:
        return Muting.LAST_ONE
    return Muting.MUTED


def reader_to_change(session: Session, public_id: str) -> Subscriber | None:
    """The reader, locked until the transaction ends, so that two mute links clicked at
    once see each other's change."""
    return by_public_id(session, public_id, lock=True)


def mute(session: Session, subscriber: Subscriber, category: str) -> Muting:
    """Stop ``category`` for this reader, unless :func:`muting` says otherwise.
    Idempotent: a repeat finds it :attr:`Muting.NOT_FOLLOWED` and changes nothing."""
    outcome = muting(subscriber, category)
    if outcome is not Muting.MUTED:
        return outcome
    # The count is taken again as the row goes: two links clicked at once, each for one of a
    # reader's two categories, must not leave them with none.
    followed = (
        select(func.count())
        .select_from(SubscriberCategory)
        .where(SubscriberCategory.subscriber_id == subscriber.id)
        .scalar_subquery()
    )
    gone = session.execute(
        delete(SubscriberCategory).where(
            SubscriberCategory.subscriber_id == subscriber.id,
            SubscriberCategory.category == category,
            followed > 1,
        ),
        execution_options={"synchronize_session": False},
    )
    session.expire(subscriber, ["categories"])
    return Muting.MUTED if cast(CursorResult[Any], gone).rowcount else Muting.LAST_ONE

"""What a reader can do to their subscription, independent of HTTP: sign up (double opt-in),
confirm, change preferences, pause, resume, unsubscribe, erase.

Each function works inside the caller's transaction and decides only from the database, so
the same rules hold whichever page or API calls it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from digestd.models import Subscriber, SubscriberStatus, Suppression
from digestd.readers.subscribers import (
    Preferences,
    apply_preferences,
    email_hash,
    erase,
    frequency_name,
    new_subscriber,
    reschedule,
)

# Shown beside the signup button and stored with each consent (GDPR art. 7(1)): bump it
# whenever the wording on the page changes.
CONSENT_WORDING = "signup-v1"
CONSENT_TEXT = (
    "We'll email you the digests you choose. Every email has a one-click unsubscribe link, "
    "and you can delete your data at any time."
)

# Suppressed for a reason the reader cannot undo by signing up again: mail would bounce or
# be reported as spam. An erased address may come back through a new double opt-in.
_BLOCKING_SUPPRESSIONS = frozenset({"hard-bounce", "complaint", "soft-bounces"})


@dataclass(frozen=True)
class Schedule:
    daily_at: time
    weekly_at: time


@dataclass(frozen=True)
class Consent:
    at: datetime
    ip: str | None
    user_agent: str | None
    source: str
    wording: str = CONSENT_WORDING


class Notice(enum.StrEnum):
    """Which email a signup triggers."""

    CONFIRM = "confirm"  # new, pending or unsubscribed: please confirm
    ALREADY = "already"  # active or paused: you are subscribed, here is how to manage it


@dataclass(frozen=True)
class SignupResult:
    notice: Notice | None  # None: send nothing (suppressed, throttled)
    public_id: str = ""
    email: str = ""
    categories: tuple[str, ...] = ()
    frequency: str = ""

    @classmethod
    def of(cls, subscriber: Subscriber, notice: Notice) -> SignupResult:
        return cls(
            notice,
            subscriber.public_id,
            subscriber.email,
            tuple(subscriber.category_slugs),
            frequency_name(subscriber),
        )


def request_signup(
    session: Session, email: str, prefs: Preferences, consent: Consent, throttle: timedelta
) -> SignupResult:
    """Record a signup request and say which email (if any) to send.

    An active subscriber's settings are never changed by this unauthenticated request;
    a pending or unsubscribed one's are replaced (they only take effect on confirmation).
    """
    suppression = session.get(Suppression, email_hash(email))
    if suppression is not None and suppression.reason in _BLOCKING_SUPPRESSIONS:
        return SignupResult(None)
    subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).first()
    if subscriber is None:
        subscriber = new_subscriber(email, prefs, SubscriberStatus.PENDING)
        _record_consent(subscriber, consent)
        session.add(subscriber)
        session.flush()
        notice = Notice.CONFIRM
    elif subscriber.status in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
        apply_preferences(subscriber, prefs)
        subscriber.status = SubscriberStatus.PENDING
        _record_consent(subscriber, consent)
        session.flush()
        notice = Notice.CONFIRM
    elif subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        notice = Notice.ALREADY
    else:  # bounced or complained
        return SignupResult(None)
    if not claim_confirmation(session, subscriber.id, consent.at, throttle):
        return SignupResult(None)
    return SignupResult.of(subscriber, notice)


def request_fresh_link(
    session: Session, public_id: str, now: datetime, throttle: timedelta
) -> SignupResult:
    """Another confirmation email for a pending subscriber whose link expired."""
    subscriber = by_public_id(session, public_id)
    if subscriber is None or subscriber.status != SubscriberStatus.PENDING:
        return SignupResult(None)
    if not claim_confirmation(session, subscriber.id, now, throttle):
        return SignupResult(None)
    return SignupResult.of(subscriber, Notice.CONFIRM)


def claim_confirmation(
    session: Session, subscriber_id: int, now: datetime, throttle: timedelta
) -> bool:
    """At most one confirmation email per address per ``throttle``, even with several
    processes: a guarded UPDATE, and only the request that moved the timestamp sends."""
    result = session.execute(
        update(Subscriber)
        .where(
            Subscriber.id == subscriber_id,
            or_(
                Subscriber.confirmation_sent_at.is_(None),
                Subscriber.confirmation_sent_at <= now - throttle,
            ),
        )
        .values(confirmation_sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def release_confirmation(session: Session, public_id: str, sent_at: datetime) -> None:
    """The email could not be sent: let the reader ask again at once."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.public_id == public_id, Subscriber.confirmation_sent_at == sent_at)
        .values(confirmation_sent_at=None)
        .execution_options(synchronize_session=False)
    )


def _record_consent(subscriber: Subscriber, consent: Consent) -> None:
    subscriber.consent_at = consent.at
    subscriber.consent_ip = consent.ip
    subscriber.consent_user_agent = consent.user_agent
    subscriber.consent_source = consent.source
    subscriber.consent_wording = consent.wording


class Confirmation(enum.StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already"  # clicked twice: nothing changes
    STALE = "stale"  # unsubscribed since the email was sent: an old link must not resubscribe
    GONE = "gone"  # erased, bounced or complained


def by_public_id(session: Session, public_id: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()


def confirm(session: Session, public_id: str, now: datetime, schedule: Schedule) -> Confirmation:
    subscriber = by_public_id(session, public_id)
    if subscriber is None:
        return Confirmation.GONE
    if subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        return Confirmation.ALREADY
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        return Confirmation.STALE
    if subscriber.status != SubscriberStatus.PENDING:
        return Confirmation.GONE
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)
    # A new double opt-in after an erasure lifts the erasure's suppression.
    suppression = session.get(Suppression, email_hash(subscriber.email))
    if suppression is not None and suppression.reason == "erased":
        session.delete(suppression)
    return Confirmation.CONFIRMED


def unsubscribe(subscriber: Subscriber, now: datetime) -> bool:
    """Stop every email. Idempotent: True only when this call changed something."""
    if subscriber.status not in (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.PAUSED,
        SubscriberStatus.PENDING,
    ):
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    subscriber.next_daily_at = subscriber.next_weekly_at = None
    return True


def change_preferences(
    subscriber: Subscriber, prefs: Preferences, now: datetime, schedule: Schedule
) -> None:
    apply_preferences(subscriber, prefs)
    if subscriber.status == SubscriberStatus.ACTIVE:
        reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)


def pause(subscriber: Subscriber) -> None:
    if subscriber.status == SubscriberStatus.ACTIVE:
        subscriber.status = SubscriberStatus.PAUSED
        subscriber.next_daily_at = subscriber.next_weekly_at = None


def resume(subscriber: Subscriber, now: datetime, schedule: Schedule) -> None:
    """Back to active from a pause or an unsubscription (the signed link proves the inbox)."""
    if subscriber.status in (SubscriberStatus.PAUSED, SubscriberStatus.UNSUBSCRIBED):
        subscriber.status = SubscriberStatus.ACTIVE
        subscriber.unsubscribed_at = None
        reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)


def erase_subscriber(session: Session, subscriber: Subscriber, now: datetime) -> None:
    erase(session, subscriber.email, now)

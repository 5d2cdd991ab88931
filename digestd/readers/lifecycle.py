"""What a reader can do to their subscription, independent of HTTP: confirm (double
opt-in, then a welcome), add offered topics, change preferences, pause, resume,
unsubscribe, erase. Which email a signup triggers is :mod:`digestd.readers.signups`.

Each function works inside the caller's transaction and decides only from the database and
the signed link, so the same rules hold whichever page or API calls it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, object_session

from digestd.db import on_commit
from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from digestd.planning.schedule import RECAP_INSTEAD, latest_slot
from digestd.readers import mailbox
from digestd.readers.signups import (
    CONSENT_WORDING,
    ConfirmLink,
    Held,
    Mode,
    Notice,
    SignupLimits,
    SignupRequest,
    SignupResult,
)
from digestd.readers.subscribers import (
    Preferences,
    apply_preferences,
    by_public_id,
    email_hash,
    erase,
    reschedule,
)
from digestd.readers.subscribers import Schedule as Schedule  # callers' one import
from digestd.readers.upcoming import upcoming

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Click:
    """The request that followed a confirmation link: the proof of consent."""

    at: datetime
    ip: str | None
    user_agent: str | None


class Confirmation(enum.StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already"  # clicked twice: nothing changes
    TOPICS_ADDED = "topics-added"
    STALE = "stale"  # unsubscribed since the email was sent: an old link must not resubscribe
    GONE = "gone"  # erased, bounced or complained


def confirm(
    session: Session, link: ConfirmLink, issued_at: datetime, click: Click, schedule: Schedule
) -> Confirmation:
    """Follow a confirmation link made at ``issued_at``: only now does its signup apply.

    The consent record is the click-through (its time, IP and user agent: the inbox owner
    acting), with the page the signup came from and the wording it showed, both carried in
    the link. A link made before the reader's last unsubscribe never resubscribes them.
    """
    # Locked: mail scanners open a link twice at once, and only one click may confirm
    # (and so send one welcome).
    subscriber = by_public_id(session, link.public_id, lock=True)
    if subscriber is None:
        log.info("confirm", extra={"outcome": Confirmation.GONE})
        return Confirmation.GONE
    outcome = _confirm(session, subscriber, link, issued_at, click, schedule)
    fields = {"outcome": outcome, **_who(subscriber)}
    on_commit(session, lambda: log.info("confirm", extra=fields))
    return outcome


def _confirm(
    session: Session,
    subscriber: Subscriber,
    link: ConfirmLink,
    issued_at: datetime,
    click: Click,
    schedule: Schedule,
) -> Confirmation:
    status = subscriber.status
    if status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        if link.mode is Mode.ADD_TOPICS and link.request is not None:
            return _add_topics(subscriber, link.request.prefs)
        return Confirmation.ALREADY
    if status not in (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED):
        return Confirmation.GONE
    left = subscriber.unsubscribed_at
    if link.mode is not Mode.SUBSCRIBE or (left is not None and issued_at <= left):
        return Confirmation.STALE
    _activate(session, subscriber, link, issued_at, click, schedule)
    return Confirmation.CONFIRMED


def _activate(
    session: Session,
    subscriber: Subscriber,
    link: ConfirmLink,
    issued_at: datetime,
    click: Click,
    schedule: Schedule,
) -> None:
    if link.request is not None:
        chosen = subscriber.preferences_at
        if chosen is None or chosen < issued_at:
            # The signup's choices, unless the reader chose again after this link was made
            # (their preferences page, reached from the same email): the later one stands.
            apply_preferences(subscriber, link.request.prefs)
        source, wording = link.request.source, link.request.wording
    else:  # an older link: the signup stored its preferences and source on the row
        source, wording = subscriber.consent_source, subscriber.consent_wording or CONSENT_WORDING
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = click.at
    subscriber.unsubscribed_at = None
    subscriber.consent_at = click.at
    subscriber.consent_ip = click.ip
    subscriber.consent_user_agent = click.user_agent
    subscriber.consent_source = source
    subscriber.consent_wording = wording
    reschedule(subscriber, click.at, schedule.daily_at, schedule.weekly_at)
    # A new double opt-in after an erasure lifts the erasure's suppression.
    suppression = session.get(Suppression, email_hash(subscriber.email))
    if suppression is not None and suppression.reason == SuppressionReason.ERASED:
        session.delete(suppression)


def topics_offered(
    subscriber: Subscriber | None, link: ConfirmLink
) -> tuple[Confirmation, list[str]]:
    """What following an "add these topics" link would do, and the topics it would add,
    changing nothing (for the page its GET shows; a POST acts, through :func:`confirm`)."""
    if subscriber is None or subscriber.status not in (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.PAUSED,
        SubscriberStatus.PENDING,
        SubscriberStatus.UNSUBSCRIBED,
    ):
        return Confirmation.GONE, []
    if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        return Confirmation.STALE, []
    new = _new_topics(subscriber, link.request.prefs) if link.request else []
    return (Confirmation.TOPICS_ADDED if new else Confirmation.ALREADY), new


def _new_topics(subscriber: Subscriber, prefs: Preferences) -> list[str]:
    current = set(subscriber.category_slugs)
    return [slug for slug in prefs.categories if slug not in current]


def _add_topics(subscriber: Subscriber, prefs: Preferences) -> Confirmation:
    new = _new_topics(subscriber, prefs)
    if not new:
        return Confirmation.ALREADY
    subscriber.categories = [
        *subscriber.categories,
        *(SubscriberCategory(category=slug) for slug in new),
    ]
    return Confirmation.TOPICS_ADDED


def welcome(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    limits: SignupLimits,
    schedule: Schedule,
) -> SignupResult:
    """The welcome email of a reader who has just confirmed.

    One per confirmation, and every confirmation is a click on a confirmation email that
    was itself claimed against the inbox's limits: so only the hourly cap of everyone
    together is claimed here. The inbox's 10-minute spacing would hold the welcome back
    behind the very email it follows.
    """
    coming = tuple(upcoming(subscriber, schedule))
    if not coming:  # nothing scheduled: nothing to welcome them to
        return SignupResult(None, held=Held.NOBODY)
    if not mailbox.claim(session, mailbox.EVERYONE, limits.everyone, now):
        return SignupResult(None, held=Held.HOURLY_CAP)
    return SignupResult(
        Notice.WELCOME,
        subscriber.public_id,
        subscriber.email,
        SignupRequest.of(subscriber, ""),
        sent_at=now,
        upcoming=coming,
    )


def unsubscribe(subscriber: Subscriber, now: datetime, *, via: str = "") -> bool:
    """Stop every email. Idempotent: True only when this call changed something.
    ``via`` says for the log how it came (link, preferences, mail, operator)."""
    if subscriber.status not in (
        SubscriberStatus.ACTIVE,
        SubscriberStatus.PAUSED,
        SubscriberStatus.PENDING,
    ):
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    subscriber.next_daily_at = subscriber.next_weekly_at = None
    fields = {**_who(subscriber), **({"via": via} if via else {})}
    on_commit(object_session(subscriber), lambda: log.info("unsubscribe", extra=fields))
    return True


def _who(subscriber: Subscriber) -> dict[str, object]:
    """Who an event is about, for its log line (the address is masked at INFO)."""
    return {"subscriber": subscriber.id, "email": subscriber.email}


def change_preferences(
    subscriber: Subscriber, prefs: Preferences, now: datetime, schedule: Schedule
) -> None:
    recap_dropped = subscriber.wants_weekly and not prefs.wants_weekly
    moved_from = subscriber.timezone
    apply_preferences(subscriber, prefs)
    subscriber.preferences_at = now
    if subscriber.paused_until is not None and subscriber.timezone != moved_from:
        subscriber.paused_until = _same_wall_clock(
            subscriber.paused_until, moved_from, subscriber.timezone
        )
    if subscriber.status != SubscriberStatus.ACTIVE:
        return
    if recap_dropped and subscriber.wants_daily:
        _reopen_sunday_daily(subscriber, now, schedule)
    reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)


def _same_wall_clock(instant: datetime, old_zone: str, new_zone: str) -> datetime:
    """A pause ends at midnight on the chosen date in the reader's zone: after a move the
    date is still the one they chose, so the end moves to that midnight in the new zone."""
    wall = instant.astimezone(ZoneInfo(old_zone)).replace(tzinfo=None)
    return wall.replace(tzinfo=ZoneInfo(new_zone)).astimezone(UTC)


def _reopen_sunday_daily(subscriber: Subscriber, now: datetime, schedule: Schedule) -> None:
    """A reader of both whose Sunday daily was skipped for the recap turns the recap off
    before it reached them: without this they would get neither that Sunday. The skipped
    row goes, and the daily is owed again from its send time (caught up on, like any).
    Only today's: their latest send time must be that Sunday's."""
    session = object_session(subscriber)
    if session is None or subscriber.id is None:
        return
    zone = ZoneInfo(subscriber.timezone)
    today = latest_slot(EditionKind.DAILY, now, zone, schedule.daily_at)
    skipped = session.execute(
        select(Delivery.id, Delivery.due_at, Edition.period)
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(
            Delivery.subscriber_id == subscriber.id,
            Edition.kind == EditionKind.DAILY,
            Delivery.status == DeliveryStatus.SKIPPED,
            Delivery.last_error == RECAP_INSTEAD,
        )
        .order_by(Delivery.due_at.desc())
        .limit(1)
    ).first()
    if skipped is None or skipped.period != today.period:
        return
    if _has_recap(session, subscriber.id, skipped.period):
        return
    session.execute(delete(Delivery).where(Delivery.id == skipped.id))
    subscriber.next_daily_at = skipped.due_at


def _has_recap(session: Session, subscriber_id: int, period: str) -> bool:
    found = session.scalar(
        select(Delivery.id)
        .join(Edition, Edition.id == Delivery.edition_id)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Edition.kind == EditionKind.WEEKLY,
            Edition.period == period,
        )
    )
    return found is not None


def pause(subscriber: Subscriber, until: datetime | None = None) -> bool:
    """No digests until ``until`` (then they resume by themselves: :func:`resume_ended`),
    or until the reader resumes them. False for a reader who gets none anyway (not
    confirmed, unsubscribed, bounced)."""
    if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        return False
    subscriber.status = SubscriberStatus.PAUSED
    subscriber.paused_until = until
    subscriber.next_daily_at = subscriber.next_weekly_at = None
    return True


def resume(
    subscriber: Subscriber, now: datetime, schedule: Schedule, *, ended: datetime | None = None
) -> bool:
    """Back to active from a pause (that ``ended`` at that instant, by itself). Not from an
    unsubscription: that takes a new confirmation email
    (:func:`digestd.readers.signups.request_signup`). True if resumed."""
    if subscriber.status != SubscriberStatus.PAUSED:
        return False
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.paused_until = None
    reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at, since=ended)
    return True


def resume_ended(session: Session, now: datetime, schedule: Schedule) -> int:
    """Resume every pause whose end has come; how many. Their next digest is the first
    send time from the pause's end: the day it ends, its digests come, caught up on like
    everyone's when digestd was down (the days of the pause are not)."""
    ended = session.scalars(
        select(Subscriber).where(
            Subscriber.status == SubscriberStatus.PAUSED,
            Subscriber.paused_until.is_not(None),
            Subscriber.paused_until <= now,
        )
    ).all()
    for subscriber in ended:
        resume(subscriber, now, schedule, ended=subscriber.paused_until)
    return len(ended)


def erase_subscriber(session: Session, subscriber: Subscriber, now: datetime) -> None:
    erase(session, subscriber.email, now)

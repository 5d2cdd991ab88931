"""Which email a signup (or a "send me a link" button) triggers, and what it carries.

A signup is an anonymous request: anyone can type anyone's address. So it changes nothing
about an address that exists. What it asked for (topics, frequency, timezone, where it came
from, the consent wording shown) travels in the signed link of the email it triggers, and
:func:`digestd.readers.lifecycle.confirm` applies it only when that link is followed:

- new or pending address: "please confirm" (a new address gets a pending row, nothing else);
- unsubscribed: "welcome back, confirm to resume" — the reader stays unsubscribed until then;
- active or paused: "you're already subscribed", with a link to add any new topics asked for;
- bounced, complained or suppressed: no email at all.

(Once a reader has confirmed, :func:`digestd.readers.lifecycle.welcome` says what comes.)
Every email here is claimed against the throttles of :mod:`digestd.readers.mailbox` first.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.db import on_commit
from digestd.models import Subscriber, SubscriberStatus, Suppression, SuppressionReason
from digestd.readers import mailbox
from digestd.readers.subscribers import (
    Preferences,
    by_public_id,
    email_hash,
    frequency_name,
    new_subscriber,
    parse_preferences,
)
from digestd.readers.upcoming import Upcoming

log = logging.getLogger(__name__)
# Shown beside the signup button and stored with each consent (GDPR art. 7(1)): bump it
# whenever the wording on the page changes.
CONSENT_WORDING = "signup-v1"
CONSENT_TEXT = (
    "We'll email you the digests you choose. Every email has a one-click unsubscribe link, "
    "and you can delete your data at any time."
)
# Where a signup came from, as carried in its link: enough to tell the page and the link,
# short enough that the link stays comfortably under 2 000 characters.
SOURCE_LIMIT = 300

# Suppressed for a reason the reader cannot undo by signing up again: mail would bounce or
# be reported as spam. An erased address may come back through a new double opt-in.
_BLOCKING_SUPPRESSIONS = frozenset(r for r in SuppressionReason if r.refused)
_MAILABLE = (
    SubscriberStatus.PENDING,
    SubscriberStatus.ACTIVE,
    SubscriberStatus.PAUSED,
    SubscriberStatus.UNSUBSCRIBED,
)
_MANAGEABLE = (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED, SubscriberStatus.UNSUBSCRIBED)


@dataclass(frozen=True)
class SignupRequest:
    """What a signup asked for: applied when its confirmation link is followed."""

    prefs: Preferences
    source: str
    wording: str = CONSENT_WORDING

    def fields(self) -> list[str]:
        return [
            ",".join(self.prefs.categories),
            frequency_name(self.prefs),
            self.prefs.timezone,
            self.wording,
            self.source[:SOURCE_LIMIT],
        ]

    @classmethod
    def from_fields(cls, fields: Sequence[str]) -> SignupRequest:
        """Raises :class:`~digestd.errors.ValidationError` if a category has gone since."""
        categories, frequency, timezone, wording, source = fields
        return cls(parse_preferences(categories, frequency, timezone, "UTC"), source, wording)

    @classmethod
    def of(cls, subscriber: Subscriber, source: str) -> SignupRequest:
        """Subscribe again with the preferences already stored (a "changed my mind")."""
        prefs = Preferences(
            tuple(subscriber.category_slugs),
            subscriber.wants_daily,
            subscriber.wants_weekly,
            subscriber.timezone,
        )
        return cls(prefs, source)


class Mode(enum.StrEnum):
    """What following a confirmation link does."""

    SUBSCRIBE = "s"  # activate with the link's preferences (also after an unsubscribe)
    ADD_TOPICS = "a"  # an active or paused reader adds the link's topics


@dataclass(frozen=True)
class ConfirmLink:
    """The fields of a confirmation token: the public id first, as in every token."""

    public_id: str
    mode: Mode
    request: SignupRequest | None  # None: a link from before links carried the request

    def fields(self) -> list[str]:
        request = self.request.fields() if self.request else []
        return [self.public_id, self.mode, *request]

    @classmethod
    def read(cls, fields: Sequence[str]) -> ConfirmLink:
        """Raises ValueError or ValidationError for fields digestd did not write."""
        if len(fields) == 1:
            return cls(fields[0], Mode.SUBSCRIBE, None)
        public_id, mode, *request = fields
        return cls(public_id, Mode(mode), SignupRequest.from_fields(request))


class Notice(enum.StrEnum):
    """Which email to send."""

    CONFIRM = "confirm"  # new or pending: please confirm
    WELCOME_BACK = "welcome-back"  # unsubscribed: confirm to resume
    ALREADY = "already"  # active or paused: how to manage it (and maybe: add these topics?)
    MANAGE_LINK = "manage-link"  # a fresh preferences link, the old one having expired
    WELCOME = "welcome"  # confirmed: what comes, exactly when


class Held(enum.StrEnum):
    """Why no email goes out (never shown to the requester)."""

    NOBODY = "nobody"  # suppressed, bounced, complained, or no such subscriber
    MAILBOX = "mailbox"  # this inbox had its share
    HOURLY_CAP = "hourly-cap"  # everyone together had theirs


@dataclass(frozen=True)
class SignupResult:
    notice: Notice | None  # None: send nothing (see ``held``)
    public_id: str = ""
    email: str = ""
    request: SignupRequest | None = None  # what the email describes and its link carries
    new_topics: tuple[str, ...] = ()  # ALREADY: topics the email offers to add
    # ALREADY: the reader's own preferences, for the email to say which frequency and zone
    # were asked for and left as they are (a signup form must not change them).
    current: Preferences | None = None
    sent_at: datetime | None = None  # the throttles' claim, to release if sending fails
    held: Held | None = None
    upcoming: tuple[Upcoming, ...] = ()  # WELCOME: the first digests, soonest first

    @property
    def link(self) -> ConfirmLink | None:
        if self.request is None or self.notice in (Notice.MANAGE_LINK, Notice.WELCOME):
            return None
        if self.notice is Notice.ALREADY:
            return ConfirmLink(self.public_id, Mode.ADD_TOPICS, self.request)
        return ConfirmLink(self.public_id, Mode.SUBSCRIBE, self.request)


@dataclass(frozen=True)
class SignupLimits:
    per_mailbox: mailbox.Limit
    everyone: mailbox.Limit


def request_signup(
    session: Session,
    email: str,
    request: SignupRequest,
    now: datetime,
    limits: SignupLimits,
) -> SignupResult:
    """Say which email a signup for ``email`` triggers, claiming it against the throttles.

    Stores nothing about an existing address; a new one gets a pending row (the link needs
    an id to carry), with no consent recorded until the link is followed.
    """
    result = _signup(session, email, request, now, limits)
    fields = {"email": email, "outcome": result.notice or result.held}
    on_commit(session, lambda: log.info("signup", extra=fields))
    return result


def _signup(
    session: Session, email: str, request: SignupRequest, now: datetime, limits: SignupLimits
) -> SignupResult:
    suppression = session.get(Suppression, email_hash(email))
    if suppression is not None and suppression.reason in _BLOCKING_SUPPRESSIONS:
        return SignupResult(None, held=Held.NOBODY)
    subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).first()
    if subscriber is not None and subscriber.status not in _MAILABLE:
        return SignupResult(None, held=Held.NOBODY)
    held = _claim(session, email, now, limits)
    if held is not None:
        return SignupResult(None, held=held)
    if subscriber is None:
        subscriber = new_subscriber(email, request.prefs, SubscriberStatus.PENDING)
        session.add(subscriber)
        session.flush()
    status = subscriber.status
    if status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        current = set(subscriber.category_slugs)
        new_topics = tuple(c for c in request.prefs.categories if c not in current)
        result = _result(subscriber, Notice.ALREADY, request, now, new_topics)
        return replace(result, current=SignupRequest.of(subscriber, "").prefs)
    notice = Notice.WELCOME_BACK if status == SubscriberStatus.UNSUBSCRIBED else Notice.CONFIRM
    return _result(subscriber, notice, request, now)


def request_fresh_confirmation(
    session: Session,
    public_id: str,
    request: SignupRequest | None,
    now: datetime,
    limits: SignupLimits,
) -> SignupResult:
    """An expired confirmation link asks for another: the same email a signup would get,
    to the address the link names. ``request`` None (an older link): the stored preferences."""
    subscriber = by_public_id(session, public_id)
    if subscriber is None:
        return SignupResult(None, held=Held.NOBODY)
    return request_signup(
        session,
        subscriber.email,
        request or SignupRequest.of(subscriber, "subscribe again"),
        now,
        limits,
    )


def request_manage_link(
    session: Session, public_id: str, now: datetime, limits: SignupLimits
) -> SignupResult:
    """A fresh preferences link, emailed, for a reader whose link expired."""
    return _manage_link(session, by_public_id(session, public_id), now, limits)


def request_manage_link_by_email(
    session: Session, email: str, now: datetime, limits: SignupLimits
) -> SignupResult:
    """The same for whoever has ``email``: the link goes to that address only, so asking
    for someone else's changes nothing but their inbox (within the same limits)."""
    found = session.scalars(select(Subscriber).where(Subscriber.email == email)).first()
    return _manage_link(session, found, now, limits)


def _manage_link(
    session: Session, subscriber: Subscriber | None, now: datetime, limits: SignupLimits
) -> SignupResult:
    if subscriber is None or subscriber.status not in _MANAGEABLE:
        return SignupResult(None, held=Held.NOBODY)
    held = _claim(session, subscriber.email, now, limits)
    if held is not None:
        return SignupResult(None, held=held)
    return _result(subscriber, Notice.MANAGE_LINK, None, now)


def release_email(session: Session, result: SignupResult) -> None:
    """The email could not be sent: let the reader ask again at once."""
    if result.sent_at is None:
        return
    mailbox.release(session, mailbox.EVERYONE, result.sent_at)
    if result.notice is not Notice.WELCOME:  # a welcome claims the hourly cap only
        mailbox.release(session, mailbox.mailbox_key(result.email), result.sent_at)


def _claim(session: Session, email: str, now: datetime, limits: SignupLimits) -> Held | None:
    # The global row first, always: every transaction locks the two rows in one order.
    if not mailbox.claim(session, mailbox.EVERYONE, limits.everyone, now):
        return Held.HOURLY_CAP
    mailbox.forget_old(session, now, limits.per_mailbox.window)
    if not mailbox.claim(session, mailbox.mailbox_key(email), limits.per_mailbox, now):
        mailbox.release(session, mailbox.EVERYONE, now)
        return Held.MAILBOX
    return None


def _result(
    subscriber: Subscriber,
    notice: Notice,
    request: SignupRequest | None,
    now: datetime,
    new_topics: tuple[str, ...] = (),
) -> SignupResult:
    return SignupResult(
        notice,
        subscriber.public_id,
        subscriber.email,
        request,
        new_topics,
        sent_at=now,
    )

"""Subscribers: address normalisation, preferences, activation (the CSV import builds on
them: :mod:`digestd.readers.importing`).

Preferences are validated here once for every entry point (CSV import, signup form, API).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session, object_session

from digestd.bulk import among
from digestd.content.categories import parse_categories
from digestd.errors import ValidationError
from digestd.models import (
    ClickInbox,
    Delivery,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from digestd.planning.schedule import next_slot

FREQUENCIES = ("daily", "weekly", "both")


def normalise_email(raw: str) -> str:
    """One canonical form per mailbox, so the unique index really means one row per reader.

    Internationalised domains are kept in Unicode (shown to people) and converted to
    IDNA when sending; non-ASCII local parts are refused because they need SMTPUTF8,
    which many receiving servers still lack.
    """
    if not isinstance(raw, str):
        raise ValidationError("email", "must be a string")
    if any(c in raw for c in "\r\n\0"):
        raise ValidationError("email", "must not contain line breaks or NUL characters")
    if len(raw) > 320:
        raise ValidationError("email", "is longer than 320 characters")
    try:
        info = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        address = raw.strip()
        raise ValidationError(
            "email", f"{address[:80]!r} is not a valid address: {address_problem(address)}"
        ) from exc
    return info.normalized.lower()


def address_problem(address: str) -> str:
    """What is wrong with an address email-validator refused, in words a reader knows: its
    own messages speak of "@-signs" and "special-use or reserved names"."""
    local, at, domain = address.rpartition("@")
    domain = domain.lower().rstrip(".")
    if not at:
        return "it needs an @, as in you@example.com"
    if not local:
        return "the part before the @ is missing, as in you@example.com"
    if not domain:
        return "the part after the @ is missing, as in you@example.com"
    if any(domain == d or domain.endswith(f".{d}") for d in SPECIAL_USE_DOMAIN_NAMES):
        return f"mail cannot reach {domain}, a name reserved for tests and local networks"
    if not local.isascii():
        return "we can only send to addresses written without accents before the @"
    if any(c.isspace() for c in address):
        return "an address has no spaces in it"
    if "." not in domain:
        return "the part after the @ needs a dot, as in example.com"
    return "check it for a typo; an address looks like you@example.com"


# RFC 5322 dot-atom, ASCII, at most 64 characters: the local parts email-validator accepts
# as they are (anything else goes through it whole, for its exact verdict and message).
_DOT_ATOM = re.compile(
    r"(?=.{1,64}$)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)


class Addresses:
    """:func:`normalise_email` for many addresses (an import): the same answers, with each
    domain checked by email-validator once rather than once per address (checking the
    domain is most of its cost, and a list has few domains). tests/test_subscribers.py
    holds the two to the same results."""

    def __init__(self) -> None:
        self._domains: dict[str, str | None] = {}  # as written -> normalised, or None: invalid

    def normalise(self, raw: str) -> str:
        text = raw.strip() if isinstance(raw, str) else ""
        local, at, domain = text.rpartition("@")
        if at and len(raw) <= 320 and len(text) <= 254 and _DOT_ATOM.fullmatch(local):
            normal = self._domain(domain)
            if normal is not None:
                return f"{local}@{normal}".lower()
        return normalise_email(raw)

    def _domain(self, domain: str) -> str | None:
        if domain not in self._domains:
            try:
                info = validate_email(
                    f"postmaster@{domain}", check_deliverability=False, allow_smtputf8=False
                )
                self._domains[domain] = info.domain
            except EmailNotValidError:
                self._domains[domain] = None  # the whole address goes through email-validator
        return self._domains[domain]


def email_hash(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()


# In the zone database but no zone a reader lives in: "localtime" is the host's own setting
# (another host reads it as another zone), "Factory" the placeholder for "not set yet".
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


# Browsers report zones through ICU, which still uses some pre-rename names (Chromium says
# Asia/Calcutta); store the current IANA name so a reader's zone reads as they expect.
RENAMED_ZONES = {
    "Asia/Calcutta": "Asia/Kolkata",
    "Asia/Saigon": "Asia/Ho_Chi_Minh",
    "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Rangoon": "Asia/Yangon",
    "Asia/Ulan_Bator": "Asia/Ulaanbaatar",
    "Europe/Kiev": "Europe/Kyiv",
    "America/Godthab": "America/Nuuk",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
    "Atlantic/Faeroe": "Atlantic/Faroe",
    "Pacific/Enderbury": "Pacific/Kanton",
    "Pacific/Truk": "Pacific/Chuuk",
    "Pacific/Ponape": "Pacific/Pohnpei",
}


_OFFSET = re.compile(r"(?:UTC|GMT)?\s*[+\-\u2212]\s*\d{1,2}(?::?\d{2})?", re.IGNORECASE)


def parse_timezone(raw: str | None, default: str, field_name: str = "timezone") -> str:
    name = (raw or "").strip() or default
    if name not in _zones() and name != "UTC":
        if _OFFSET.fullmatch(name):  # the offset of a place moves with its summer time
            raise ValidationError(
                field_name,
                f"{name[:16]!r} is an offset, not a timezone: give the place it is for "
                "(e.g. Asia/Kolkata for UTC+05:30)",
            )
        raise ValidationError(
            field_name, f"unknown IANA timezone {name[:64]!r} (e.g. Europe/Paris)"
        )
    current = RENAMED_ZONES.get(name, name)
    return current if current in _zones() else name


def parse_frequency(raw: str | None, field_name: str = "frequency") -> tuple[bool, bool]:
    """(wants_daily, wants_weekly) from daily|weekly|both."""
    value = (raw or "").strip().lower()
    if value not in FREQUENCIES:
        raise ValidationError(field_name, f"must be daily, weekly or both, got {value[:20]!r}")
    return value in ("daily", "both"), value in ("weekly", "both")


def frequency_name(subscriber: Subscriber | Preferences) -> str:
    if subscriber.wants_daily and subscriber.wants_weekly:
        return "both"
    return "daily" if subscriber.wants_daily else "weekly"


def by_public_id(session: Session, public_id: str, *, lock: bool = False) -> Subscriber | None:
    """``lock``: see :func:`locked` (for anything that changes the reader)."""
    where = Subscriber.public_id == public_id
    if lock:
        return locked(session, where)
    return session.scalars(select(Subscriber).where(where)).first()


def locked(session: Session, where: ColumnElement[bool]) -> Subscriber | None:
    """The reader, held until the transaction ends: two changes at once (a link clicked
    twice, two tabs, an unsubscribe and a pause) act one after the other, the second on
    what the first left. PostgreSQL locks the row. A SQLite transaction takes the write
    lock only at its first write, after this read, so the second change would overwrite
    the first from a stale read: it takes the lock first, writing the row unchanged."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Subscriber)
            .where(where)
            .values(status=Subscriber.status)
            .execution_options(synchronize_session=False)
        )
    query = select(Subscriber).where(where).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).first()


@dataclass(frozen=True)
class Schedule:
    """The local send times (DIGESTD_DAILY_HOUR, DIGESTD_WEEKLY_HOUR)."""

    daily_at: time
    weekly_at: time
    sunday_daily: bool = False  # DIGESTD_SUNDAY_DAILY: a reader of both gets Sunday's daily too


@dataclass(frozen=True)
class Preferences:
    categories: tuple[str, ...]
    wants_daily: bool
    wants_weekly: bool
    timezone: str


def parse_preferences(
    categories: str | Iterable[str], frequency: str | None, timezone: str | None, default_tz: str
) -> Preferences:
    daily, weekly = parse_frequency(frequency)
    return Preferences(
        categories=tuple(parse_categories(categories)),
        wants_daily=daily,
        wants_weekly=weekly,
        timezone=parse_timezone(timezone, default_tz),
    )


def erase(session: Session, email: str, now: datetime) -> bool:
    """Right to erasure: drop the subscriber and everything about them (categories and
    deliveries go with the row), keep a hash so the address is never mailed again by
    mistake (an old import, a list merge, a test send); a signup its owner confirms lifts
    it (``lifecycle.confirm``). True when there was a subscriber to drop."""
    # Clicks not settled yet name the queue row only (no key to cascade from).
    session.execute(
        delete(ClickInbox).where(
            ClickInbox.delivery_id.in_(
                select(Delivery.id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Subscriber.email == email)
            )
        )
    )
    found = session.scalars(
        delete(Subscriber).where(Subscriber.email == email).returning(Subscriber.id)
    ).all()
    if session.get(Suppression, email_hash(email)) is None:
        session.add(
            Suppression(
                email_hash=email_hash(email), reason=SuppressionReason.ERASED, created_at=now
            )
        )
    return bool(found)


def reschedule(
    subscriber: Subscriber,
    now: datetime,
    daily_at: time,
    weekly_at: time,
    *,
    since: datetime | None = None,
) -> None:
    """Point the next-due instants at the reader's next send times: on activation, a change
    of zone, frequency or categories, a resumed pause, a sunset step (:func:`next_instants`)."""
    had = _editions_had(subscriber, min(now, since or now))
    subscriber.next_daily_at, subscriber.next_weekly_at = next_instants(
        Wants(subscriber.timezone, subscriber.wants_daily, subscriber.wants_weekly),
        (subscriber.next_daily_at, subscriber.next_weekly_at),
        now,
        (daily_at, weekly_at),
        since=since,
        had=had,
    )


@dataclass(frozen=True)
class Wants:
    timezone: str
    daily: bool
    weekly: bool


def next_instants(
    wants: Wants,
    current: tuple[datetime | None, datetime | None],
    now: datetime,
    at: tuple[time, time],
    *,
    since: datetime | None = None,
    had: Container[tuple[EditionKind, str]] = (),
) -> tuple[datetime | None, datetime | None]:
    """A reader's next daily and weekly send instants (None: not wanted). ``current``: the
    instants they have, ``at``: the daily and weekly send times, ``had``: the editions
    they have a queue row for (:func:`editions_had`).

    A send time is the first after ``now``, or at or after ``since`` (the end of a pause
    that ended while digestd was down: that day's digests are caught up on), with two
    exceptions. One that has come but was not planned yet (the instant is already past,
    by less than a day, a week for the recap) is still owed and stays: saving preferences
    at 07:00:20, before the tick reached the reader, must not move today's daily to
    tomorrow. And one whose edition the reader already has is passed over: after a move
    west, the next 07:00 in the new zone can be on the date they were just sent, which the
    planner would skip while the preferences page and the welcome email promised it.
    """
    zone = ZoneInfo(wants.timezone)
    found: list[datetime | None] = []
    for kind, wanted, was, send_at in (
        (EditionKind.DAILY, wants.daily, current[0], at[0]),
        (EditionKind.WEEKLY, wants.weekly, current[1], at[1]),
    ):
        if not wanted:
            found.append(None)
            continue
        after = now
        if was is not None and now - _EVERY[kind] < was <= now:  # owed, not stale
            after = was - _JUST_BEFORE
        elif since is not None:
            after = since - _JUST_BEFORE
        slot = next_slot(kind, after, zone, send_at)
        while (kind, slot.period) in had:
            slot = next_slot(kind, slot.at, zone, send_at)
        found.append(slot.at)
    return found[0], found[1]


_EVERY = {EditionKind.DAILY: timedelta(days=1), EditionKind.WEEKLY: timedelta(days=7)}
_JUST_BEFORE = timedelta(microseconds=1)  # next_slot is strictly after: this makes it "at or after"


def _editions_had(subscriber: Subscriber, since: datetime) -> set[tuple[EditionKind, str]]:
    """(kind, period) of the editions the reader has a queue row for, from about a week
    before ``since``: the planner never gives them a second."""
    session = object_session(subscriber)
    if session is None or subscriber.id is None:  # a new reader has none
        return set()
    return editions_had(session, [subscriber.id], since).get(subscriber.id, set())


def editions_had(
    session: Session, subscriber_ids: Iterable[int], since: datetime
) -> dict[int, set[tuple[EditionKind, str]]]:
    """:func:`_editions_had` of many readers in one query (an import's chunk)."""
    earliest = (since - timedelta(days=9)).date().isoformat()
    rows = session.execute(
        select(Delivery.subscriber_id, Edition.kind, Edition.period)
        .join(Delivery, Delivery.edition_id == Edition.id)
        .where(among(session, Delivery.subscriber_id, subscriber_ids), Edition.period >= earliest)
    )
    found: dict[int, set[tuple[EditionKind, str]]] = {}
    for subscriber_id, kind, period in rows:
        found.setdefault(subscriber_id, set()).add((EditionKind(kind), period))
    return found


def apply_preferences(subscriber: Subscriber, prefs: Preferences) -> None:
    subscriber.wants_daily = prefs.wants_daily
    subscriber.wants_weekly = prefs.wants_weekly
    subscriber.timezone = prefs.timezone
    current = {c.category for c in subscriber.categories}
    wanted = set(prefs.categories)
    subscriber.categories = [c for c in subscriber.categories if c.category in wanted] + [
        SubscriberCategory(category=slug) for slug in prefs.categories if slug not in current
    ]


def new_subscriber(email: str, prefs: Preferences, status: SubscriberStatus) -> Subscriber:
    subscriber = Subscriber(
        public_id=secrets.token_urlsafe(16),
        email=email,
        status=status,
        categories=[],
        soft_bounces=0,
        consent_source="",
    )
    apply_preferences(subscriber, prefs)
    return subscriber

"""Subscribers: address normalisation, preferences, activation and CSV import.

Preferences are validated here once for every entry point (CSV import, signup form, API).
"""

from __future__ import annotations

import csv
import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import cache
from typing import TextIO
from zoneinfo import ZoneInfo, available_timezones

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digestd.content.categories import parse_categories
from digestd.errors import InputError, ValidationError
from digestd.models import (
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from digestd.planning.schedule import next_slot
from digestd.readers.spreadsheet import restore

FREQUENCIES = ("daily", "weekly", "both")
IMPORT_COLUMNS = ("email", "categories", "frequency", "timezone")


def normalise_email(raw: str) -> str:
    """One canonical form per mailbox, so the unique index really means one row per reader.

    Internationalised domains are kept in Unicode (shown to people) and converted to
    IDNA when sending; non-ASCII local parts are refused because they need SMTPUTF8,
    which many receiving servers still lack.
    """
    if not isinstance(raw, str):
        raise ValidationError("email", "must be a string")
    if any(c in raw for c in "\r\n\0"):
        raise ValidationError("email", "must not contain line breaks")
    if len(raw) > 320:
        raise ValidationError("email", "is longer than 320 characters")
    try:
        info = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValidationError(
            "email", f"{raw.strip()[:80]!r} is not a valid address: {exc}"
        ) from exc
    return info.normalized.lower()


def email_hash(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


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


def parse_timezone(raw: str | None, default: str, field_name: str = "timezone") -> str:
    name = (raw or "").strip() or default
    if name not in _zones() and name != "UTC":
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


def by_public_id(session: Session, public_id: str) -> Subscriber | None:
    return session.scalars(select(Subscriber).where(Subscriber.public_id == public_id)).first()


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
    mistake (an old import, a list merge). True when there was a subscriber to drop."""
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


def reschedule(subscriber: Subscriber, now: datetime, daily_at: time, weekly_at: time) -> None:
    """Point the next-due instants at the first local send time after ``now``.

    Called on activation and on any change of zone or frequency; an edition already queued
    for today stays unique through the deliveries table, so moving these never double-sends.
    """
    zone = ZoneInfo(subscriber.timezone)
    subscriber.next_daily_at = (
        next_slot(EditionKind.DAILY, now, zone, daily_at).at if subscriber.wants_daily else None
    )
    subscriber.next_weekly_at = (
        next_slot(EditionKind.WEEKLY, now, zone, weekly_at).at if subscriber.wants_weekly else None
    )


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


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.problem}"


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class ImportContext:
    now: datetime
    source: str
    default_timezone: str
    daily_at: time
    weekly_at: time


IMPORT_CHUNK = 1000


def import_csv(
    session: Session,
    stream: TextIO,
    ctx: ImportContext,
    advance: Callable[[int], None] = lambda lines: None,
) -> ImportReport:
    """Import ``email,categories,frequency,timezone`` rows as active subscribers.

    The operator vouches for consent, for new rows and for pending ones (a signup never
    confirmed), and the import's source is recorded as that consent. Nobody is activated
    who has not consented since they last left: an address that unsubscribed, bounced,
    complained or was erased, or a pending one that unsubscribed before, is rejected with
    its reason — re-subscribing them would mail people who asked us to stop. Rows are
    looked up and written a chunk at a time, so a
    100 000-row file costs a few hundred queries, not three per row. ``advance`` is told
    how many physical lines were read (for a progress bar).
    """
    reader = csv.DictReader(stream)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in IMPORT_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"the CSV header must be {','.join(IMPORT_COLUMNS)}; missing {', '.join(missing)}"
        )
    reader.fieldnames = header
    report = ImportReport()
    seen: set[str] = set()
    chunk: list[tuple[int, str, Preferences]] = []
    read = 1  # the header
    for row in reader:
        line = reader.line_num
        advance(line - read)
        read = line
        try:
            email = normalise_email(_cell(row, "email") or "")
            prefs = parse_preferences(
                _cell(row, "categories") or "",
                _cell(row, "frequency"),
                _cell(row, "timezone"),
                ctx.default_timezone,
            )
            if email in seen:
                raise ValidationError("email", "appears twice in this file")
            seen.add(email)
            chunk.append((line, email, prefs))
        except ValidationError as exc:
            report.errors.append(RowError(line, exc.field, exc.problem))
        if len(chunk) >= IMPORT_CHUNK:
            _import_chunk(session, chunk, ctx, report)
            chunk = []
    _import_chunk(session, chunk, ctx, report)
    report.errors.sort(key=lambda e: e.line)
    return report


def _cell(row: dict[str, str | None], name: str) -> str | None:
    """One column of a row, as exported before a spreadsheet-safe quote was put in front."""
    value = row.get(name)
    return restore(value) if isinstance(value, str) else None


def _import_chunk(
    session: Session,
    chunk: list[tuple[int, str, Preferences]],
    ctx: ImportContext,
    report: ImportReport,
) -> None:
    if not chunk:
        return
    emails = [email for _, email, _ in chunk]
    suppressed = set(
        session.scalars(
            select(Suppression.email_hash).where(
                Suppression.email_hash.in_(map(email_hash, emails))
            )
        )
    )
    existing = {
        s.email: s for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))
    }
    for line, email, prefs in chunk:
        try:
            if email_hash(email) in suppressed:
                raise ValidationError(
                    "email", "is on the suppression list (unsubscribed or bounced)"
                )
            _import_one(session, email, prefs, ctx, report, existing.get(email))
        except ValidationError as exc:
            report.errors.append(RowError(line, exc.field, exc.problem))
    session.flush()
    # Written (the transaction is still open): forget the objects so memory stays flat
    # however long the file is.
    session.expunge_all()


def _import_one(
    session: Session,
    email: str,
    prefs: Preferences,
    ctx: ImportContext,
    report: ImportReport,
    existing: Subscriber | None,
) -> None:
    if existing is not None:
        if existing.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
            raise ValidationError("email", f"is {existing.status}; not re-subscribed by import")
        if existing.status == SubscriberStatus.PENDING and existing.unsubscribed_at is not None:
            raise ValidationError(
                "email",
                f"unsubscribed on {existing.unsubscribed_at:%Y-%m-%d} and has not confirmed "
                "since; not re-subscribed by import",
            )
        apply_preferences(existing, prefs)
        if existing.status == SubscriberStatus.PENDING:
            _activate(existing, ctx)
        reschedule(existing, ctx.now, ctx.daily_at, ctx.weekly_at)
        report.updated += 1
    else:
        subscriber = new_subscriber(email, prefs, SubscriberStatus.ACTIVE)
        _activate(subscriber, ctx)
        reschedule(subscriber, ctx.now, ctx.daily_at, ctx.weekly_at)
        session.add(subscriber)
        report.added += 1


def _activate(subscriber: Subscriber, ctx: ImportContext) -> None:
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = ctx.now
    subscriber.consent_at = ctx.now
    subscriber.consent_source = ctx.source

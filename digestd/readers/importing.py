"""The subscriber CSV import (``digestd subscribers import``): rows checked one by one and
written a chunk at a time, set-based, so 100 000 rows take seconds, not minutes.

The operator vouches for consent, for new rows and for pending ones (a signup never
confirmed), and the import's source is recorded as that consent. Nobody is activated
who has not consented since they last left: an address that unsubscribed, bounced,
complained or was erased, or a pending one that unsubscribed before, is rejected with
its reason: re-subscribing them would mail people who asked us to stop. A ``status`` column
(an export edited and imported back) may say ``unsubscribed``: that reader is unsubscribed,
as ``digestd subscribers unsubscribe`` does. A new address said to have ``bounced`` or
``complained`` is not added (the list it came from suppressed it), one said to be
``paused`` is added paused; otherwise a status changes nothing by itself. A paused reader
keeps the pause and takes the row's preferences.

Each chunk of rows is written and committed on its own (``commit``), so the readers'
unsubscribes, signups and the sending go on during a long import (SQLite has one writer
at a time). An import cut short has imported its first chunks; running it again finishes
it (a row already imported changes nothing). A file refused whole (its header) imports
nothing; a line that is not UTF-8 is that row's error.

Per chunk of rows: one query for suppressed addresses, three for those already on the list
(the readers, their categories, the editions they have), an executemany of their new values
by primary key and of their categories dropped and added, one multi-row insert for the new
subscribers (``RETURNING`` their ids) and one for their categories.
"""

from __future__ import annotations

import csv
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, time
from operator import itemgetter
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.bulk import among
from digestd.content.categories import parse_categories
from digestd.db import delete_rows, insert_ignoring_conflicts, insert_rows, update_rows
from digestd.errors import InputError, ValidationError
from digestd.models import (
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
    Suppression,
)
from digestd.planning.schedule import next_slot
from digestd.readers.lifecycle import unsubscribe as stop_mail
from digestd.readers.spreadsheet import restore
from digestd.readers.subscribers import (
    Addresses,
    Preferences,
    Wants,
    editions_had,
    email_hash,
    next_instants,
    parse_preferences,
)

IMPORT_COLUMNS = ("email", "categories", "frequency", "timezone")
# Several categories in one cell: commas need the cell quoted, which a spreadsheet does but
# a hand-written file often does not, so ; and | separate them too.
CATEGORY_SEPARATORS = str.maketrans(";|", ",,")
SEVERAL_CATEGORIES = 'separate several with commas (quoted in CSV: "ai,robotics"), semicolons or |'
# Bytes that were not UTF-8, as the file's reader hands them on (surrogate escapes).
_UNDECODED = re.compile("[\udc80-\udcff]")
IMPORT_CHUNK = 1000


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
    unsubscribed: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True)
class ImportContext:
    now: datetime
    source: str
    default_timezone: str
    daily_at: time
    weekly_at: time


Row = tuple[int, str, Preferences, str]  # (line, email, preferences, the row's status)
# Statuses of readers who left in a way no import undoes: an address the file says this
# about is never added (it would be mailed: the list it came from suppressed it).
_LEFT = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


def import_csv(
    session: Session,
    stream: TextIO,
    ctx: ImportContext,
    advance: Callable[[int], None] = lambda lines: None,
    commit: Callable[[], None] = lambda: None,
) -> ImportReport:
    """Import ``email,categories,frequency,timezone`` rows as active subscribers; each bad
    row is reported by its line and the rest imported. ``advance`` hears how many physical
    lines were read (a progress bar); ``commit`` is called after each chunk is written."""
    reader = csv.reader(stream)
    # The first line with anything on it: blank lines before the header are no header.
    header = _header(next((row for row in reader if any(c.strip() for c in row)), []))
    report = ImportReport()
    writer = _Writer(session, ctx, report)
    seen: set[str] = set()
    addresses = Addresses()
    # Most rows share a handful of (categories, frequency, timezone): parse each once.
    preferences: dict[tuple[str | None, ...], Preferences] = {}
    chunk: list[Row] = []
    leaving: list[tuple[int, str]] = []  # (line, email) of rows whose status is unsubscribed
    read = reader.line_num  # the header's
    for cells in _rows(reader, report):
        # A row is reported by the line it starts on: a quote left open runs it on.
        first, line = read + 1, reader.line_num
        advance(line - read)
        read = line
        if not cells:
            continue  # a blank line
        row = dict(zip(header, cells, strict=False))
        try:
            if _UNDECODED.search("".join(cells)):
                raise ValidationError("row", "not UTF-8 text (save the file as UTF-8)")
            email = addresses.normalise(_cell(row, "email") or "")
            status = _status(row)
            if status == SubscriberStatus.UNSUBSCRIBED:
                if email in seen:
                    raise ValidationError("email", "appears twice in this file")
                seen.add(email)
                leaving.append((first, email))
                continue
            key = (_cell(row, "categories"), _cell(row, "frequency"), _cell(row, "timezone"))
            if key not in preferences:
                preferences[key] = _preferences(key, ctx.default_timezone)
            if email in seen:
                raise ValidationError("email", "appears twice in this file")
            seen.add(email)
            chunk.append((first, email, preferences[key], status))
        except ValidationError as exc:
            runs_on = f" (this row runs on to line {line}: a quote not closed?)"
            problem = exc.problem + (runs_on if line > first else "")
            report.errors.append(RowError(first, exc.field, problem))
        if len(chunk) >= IMPORT_CHUNK or len(leaving) >= IMPORT_CHUNK:
            writer.write_all(chunk, leaving)
            chunk, leaving = [], []
            commit()
    writer.write_all(chunk, leaving)
    report.errors.sort(key=lambda e: e.line)
    return report


def _preferences(cells: tuple[str | None, ...], default_timezone: str) -> Preferences:
    """A row's categories, frequency and timezone cells as preferences."""
    categories, frequency, timezone = cells
    cell = (categories or "").translate(CATEGORY_SEPARATORS)
    slugs = parse_categories(cell, how=SEVERAL_CATEGORIES)
    return parse_preferences(slugs, frequency, timezone, default_timezone)


def _status(row: dict[str, str]) -> str:
    """The row's ``status``: empty, or one the export writes (only ``unsubscribed`` acts).
    Anything else is the row's error, not a silent "active": it was meant to say something."""
    status = (_cell(row, "status") or "").strip().lower()
    if status and status not in set(SubscriberStatus):
        known = ", ".join(SubscriberStatus)
        raise ValidationError("status", f"unknown status {status[:40]!r} (know {known})")
    return status


def _rows(reader: Any, report: ImportReport) -> Iterator[list[str]]:
    """The reader's rows; a row the csv module cannot read (a field past its limit) is
    reported by its line and skipped, and reading goes on with the next."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.errors.append(RowError(reader.line_num, "row", f"not valid CSV ({exc})"))


def _header(cells: list[str]) -> list[str]:
    if not cells:
        raise InputError(
            f"the file is empty: its first line must be the header {','.join(IMPORT_COLUMNS)}"
        )
    header = [h.strip().lower() for h in cells]
    missing = [c for c in IMPORT_COLUMNS if c not in header]
    if missing:
        separated = (
            " (the file is separated by semicolons? use commas)" if ";" in "".join(cells) else ""
        )
        raise InputError(
            f"the CSV header must be {','.join(IMPORT_COLUMNS)}; missing {', '.join(missing)}"
            + separated
        )
    twice = sorted({c for c in IMPORT_COLUMNS if header.count(c) > 1})
    if twice:
        raise InputError(f"the CSV header names {', '.join(twice)} twice")
    return header


def _cell(row: dict[str, str], name: str) -> str | None:
    """One column of a row, as exported before a spreadsheet-safe quote was put in front."""
    value = row.get(name)
    return restore(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class _Known:
    """A reader already on the list, as the import reads them."""

    row: Any  # id, email, status, unsubscribed_at, next_daily_at, next_weekly_at
    categories: set[str]
    had: set[tuple[EditionKind, str]]


class _Writer:
    """Writes one chunk of valid rows at a time."""

    def __init__(self, session: Session, ctx: ImportContext, report: ImportReport) -> None:
        self.session, self.ctx, self.report = session, ctx, report
        self._updates: list[dict[str, Any]] = []  # readers' new values, by primary key
        self._dropped: list[dict[str, Any]] = []  # categories readers no longer take
        self._added: list[dict[str, Any]] = []  # categories they take now

    def write_all(self, chunk: list[Row], leaving: list[tuple[int, str]]) -> None:
        """A chunk of rows, and the rows that unsubscribe their readers."""
        self.write(chunk)
        self.unsubscribe(leaving)

    def write(self, chunk: list[Row]) -> None:
        if not chunk:
            return
        session = self.session
        emails = [email for _, email, _, _ in chunk]
        suppressed = {
            hashed: reason
            for hashed, reason in session.execute(
                select(Suppression.email_hash, Suppression.reason).where(
                    among(session, Suppression.email_hash, map(email_hash, emails))
                )
            )
        }
        known = self._known(emails)
        new: list[Row] = []
        for line, email, prefs, status in chunk:
            try:
                reason = suppressed.get(email_hash(email))
                if reason is not None:
                    raise ValidationError("email", f"is on the suppression list ({reason})")
                if email in known:
                    self._update(known[email], prefs)
                elif status in _LEFT:
                    raise ValidationError(
                        "status", f"{status}: an address that left so is not added by import"
                    )
                else:
                    new.append((line, email, prefs, status))
            except ValidationError as exc:
                self.report.errors.append(RowError(line, exc.field, exc.problem))
        self._write_updates()
        self._insert(new)

    def _known(self, emails: list[str]) -> dict[str, _Known]:
        """The chunk's readers already on the list, with their categories and the editions
        they have: three queries for the chunk, not a few a row."""
        session, s = self.session, Subscriber
        # Locked now, in the order of their ids, before their categories are read
        # (PostgreSQL; SQLite has one writer): two imports of one list at once (the page
        # and the command line) locked the same rows in their files' orders as they
        # updated them, and PostgreSQL ended one with "deadlock detected"; or both read a
        # reader's categories first and both added the same one (a duplicate key).
        rows = session.execute(
            select(s.id, s.email, s.status, s.unsubscribed_at, s.next_daily_at, s.next_weekly_at)
            .where(among(session, s.email, emails))
            .order_by(s.id)
            .with_for_update()
        ).all()
        ids = [row.id for row in rows]
        categories: dict[int, set[str]] = {i: set() for i in ids}
        for subscriber_id, slug in session.execute(
            select(SubscriberCategory.subscriber_id, SubscriberCategory.category).where(
                among(session, SubscriberCategory.subscriber_id, ids)
            )
        ):
            categories[subscriber_id].add(slug)
        had = editions_had(session, ids, self.ctx.now)
        return {row.email: _Known(row, categories[row.id], had.get(row.id, set())) for row in rows}

    def unsubscribe(self, rows: list[tuple[int, str]]) -> None:
        """Unsubscribe the readers of rows marked ``unsubscribed`` (one already gone stays
        so); an address nobody has is that row's error."""
        if not rows:
            return
        session = self.session
        emails = [email for _, email in rows]
        existing = {
            s.email: s
            for s in session.scalars(
                select(Subscriber).where(among(session, Subscriber.email, emails))
            )
        }
        for line, email in rows:
            if email not in existing:
                self.report.errors.append(
                    RowError(line, "status", "unsubscribed, but the address is not on the list")
                )
            elif stop_mail(existing[email], self.ctx.now, via="import"):
                self.report.unsubscribed += 1
        session.flush()
        session.expunge_all()

    def _update(self, known: _Known, prefs: Preferences) -> None:
        """A reader on the list takes the row's preferences (written by
        :meth:`_write_updates`); a pending one is activated, the operator vouching."""
        row, ctx = known.row, self.ctx
        status = row.status
        values: dict[str, Any] = {
            "id": row.id,
            "timezone": prefs.timezone,
            "wants_daily": prefs.wants_daily,
            "wants_weekly": prefs.wants_weekly,
        }
        if status == SubscriberStatus.PAUSED:  # new choices, kept for when the pause ends
            self._changes(known, prefs, values)
            return
        if status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING):
            raise ValidationError("email", f"is {status}; not re-subscribed by import")
        if status == SubscriberStatus.PENDING and row.unsubscribed_at is not None:
            raise ValidationError(
                "email",
                f"unsubscribed on {row.unsubscribed_at:%Y-%m-%d} and has not confirmed "
                "since; not re-subscribed by import",
            )
        if status == SubscriberStatus.PENDING:
            values.update(status=SubscriberStatus.ACTIVE.value, confirmed_at=ctx.now)
            values.update(consent_at=ctx.now, consent_source=ctx.source)
        wants = Wants(prefs.timezone, prefs.wants_daily, prefs.wants_weekly)
        values["next_daily_at"], values["next_weekly_at"] = next_instants(
            wants,
            (row.next_daily_at, row.next_weekly_at),
            ctx.now,
            (ctx.daily_at, ctx.weekly_at),
            had=known.had,
        )
        self._changes(known, prefs, values)

    def _changes(self, known: _Known, prefs: Preferences, values: dict[str, Any]) -> None:
        reader, wanted = known.row.id, set(prefs.categories)
        self._updates.append(values)
        gone = known.categories - wanted
        self._dropped += [{"subscriber_id": reader, "category": c} for c in gone]
        self._added += [{"subscriber_id": reader, "category": c} for c in wanted - known.categories]
        self.report.updated += 1

    def _write_updates(self) -> None:
        """The chunk's updates: one executemany a shape of row, one for the categories gone
        and one for those added, in the order of their keys (the readers' rows are locked
        already, see :meth:`_known`)."""
        session = self.session
        by_key = itemgetter("subscriber_id", "category")
        update_rows(session, Subscriber.__table__, sorted(self._updates, key=itemgetter("id")))
        delete_rows(session, SubscriberCategory.__table__, sorted(self._dropped, key=by_key))
        insert_rows(session, SubscriberCategory.__table__, sorted(self._added, key=by_key))
        self._updates, self._dropped, self._added = [], [], []

    def _insert(self, rows: list[Row]) -> None:
        """New subscribers in one statement, their categories in another. An address
        someone else added since the lookup (a signup meanwhile) is left to them."""
        if not rows:
            return
        # In the unique index's order: two imports adding the same new addresses in
        # opposite orders would each wait for the other's uncommitted insert.
        ordered = sorted(rows, key=itemgetter(1))
        created = insert_ignoring_conflicts(
            self.session,
            Subscriber.__table__,
            [self._values(email, prefs, status) for _, email, prefs, status in ordered],
            ["email"],
            returning=["id", "email"],
        )
        ids = {str(row.email): int(row.id) for row in created}
        categories = []
        for line, email, prefs, _ in rows:
            if email not in ids:
                problem = "was added by someone else during the import; import it again"
                self.report.errors.append(RowError(line, "email", problem))
                continue
            categories += [{"subscriber_id": ids[email], "category": c} for c in prefs.categories]
            self.report.added += 1
        insert_rows(self.session, SubscriberCategory.__table__, categories)

    def _values(self, email: str, prefs: Preferences, status: str) -> dict[str, Any]:
        """A new reader: active, or paused (until they resume) when the file says so."""
        now, paused = self.ctx.now, status == SubscriberStatus.PAUSED
        daily = prefs.wants_daily and not paused
        weekly = prefs.wants_weekly and not paused
        return {
            "public_id": secrets.token_urlsafe(16),
            "email": email,
            "status": SubscriberStatus.PAUSED.value if paused else SubscriberStatus.ACTIVE.value,
            "timezone": prefs.timezone,
            "wants_daily": prefs.wants_daily,
            "wants_weekly": prefs.wants_weekly,
            "next_daily_at": self._slot(EditionKind.DAILY, prefs) if daily else None,
            "next_weekly_at": self._slot(EditionKind.WEEKLY, prefs) if weekly else None,
            "created_at": now,
            "confirmed_at": now,
            "consent_at": now,
            "consent_source": self.ctx.source,
            "soft_bounces": 0,
        }

    def _slot(self, kind: EditionKind, prefs: Preferences) -> datetime:
        """The first send instant after the import in the reader's zone (as ``reschedule``
        computes it; ``next_slot`` remembers it for the zone's other readers)."""
        at = self.ctx.daily_at if kind is EditionKind.DAILY else self.ctx.weekly_at
        return next_slot(kind, self.ctx.now, ZoneInfo(prefs.timezone), at).at

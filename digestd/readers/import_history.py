"""The import history (``subscriber_imports``): each finished subscriber import, from the
command line or ``/admin/import``, with its counts and its first :data:`ERRORS_KEPT`
rejected lines, so the import page shows the same history in every process and after a
restart. The newest :data:`KEPT` imports are kept; each new one drops the older ones.

A rejected line is kept as its line, column and reason, without the values the reason
quotes from the file: those may be an address (a mistyped one, or one in the wrong
column), and erasure must leave no address behind in a history that outlives the file.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digestd.models import SubscriberImport
from digestd.readers.importing import SEVERAL_CATEGORIES, ImportReport, RowError

KEPT = 50  # imports kept, and listed on the page
ERRORS_KEPT = 100  # rejected lines kept of each import
NAME_CHARS = 200

# A value a reason quotes, as Python's repr quotes it (digestd's messages quote what they
# were given with !r), escapes included.
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")
# What digestd's own wording quotes (an example, not the file's): kept.
_WORDING = frozenset(_QUOTED.findall(SEVERAL_CATEGORIES))
LEFT_OUT = "…"
_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")  # what new_id makes, within the column
# What an import stopped part-way says (committed a thousand rows at a time, its first
# chunks stand); the import page tells such an import from a file refused whole by it.
PARTLY = "rows before it may have been imported: import the file again to finish"


class Channel(enum.StrEnum):
    """Where an import was started."""

    ADMIN = "admin"  # the admin page, /admin/import
    CLI = "cli"  # digestd subscribers import


@dataclass(frozen=True)
class Finished:
    """An import as it ended: its report, or why the file was refused as a whole."""

    id: str
    file_name: str
    channel: Channel
    started_at: datetime
    finished_at: datetime
    lines: int  # data lines read
    report: ImportReport | None
    problem: str | None = None


def new_id() -> str:
    """An import's id: random, so the page's URL of one says nothing about the others."""
    return secrets.token_urlsafe(9)


def reason(error: RowError) -> dict[str, Any]:
    """A rejected line as the history keeps it: the values quoted from the file left out."""
    problem = _QUOTED.sub(
        lambda quoted: quoted[0] if quoted[0] in _WORDING else LEFT_OUT, error.problem
    )
    return {"line": error.line, "field": error.field, "problem": problem}


def entry(done: Finished) -> SubscriberImport:
    """The history's row for ``done`` (not added to any session)."""
    report = done.report or ImportReport()
    return SubscriberImport(
        id=done.id,
        file_name=done.file_name[:NAME_CHARS],
        channel=done.channel.value,
        started_at=done.started_at,
        finished_at=done.finished_at,
        lines=done.lines,
        added=report.added,
        updated=report.updated,
        unsubscribed=report.unsubscribed,
        rejected=len(report.errors),
        problem=done.problem,
        errors=[reason(error) for error in report.errors[:ERRORS_KEPT]],
    )


def record(session: Session, row: SubscriberImport) -> None:
    """Add ``row`` and drop the imports older than the newest :data:`KEPT` (the caller
    commits). Two processes doing this at once each keep at least the newest KEPT."""
    session.add(row)
    session.flush()
    older = (
        select(SubscriberImport.id)
        .order_by(SubscriberImport.finished_at.desc(), SubscriberImport.id.desc())
        .offset(KEPT)
    )
    session.execute(delete(SubscriberImport).where(SubscriberImport.id.in_(older)))


def recent(session: Session) -> list[SubscriberImport]:
    """The kept imports, newest first."""
    newest = SubscriberImport.finished_at.desc(), SubscriberImport.id.desc()
    return list(session.scalars(select(SubscriberImport).order_by(*newest).limit(KEPT)))


def find(session: Session, import_id: str) -> SubscriberImport | None:
    """The import of that id; None for anything no id of :func:`new_id` can be (a NUL in a
    URL would be a database error on PostgreSQL, not a 404)."""
    if not _ID.fullmatch(import_id):
        return None
    return session.get(SubscriberImport, import_id)

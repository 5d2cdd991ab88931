"""``digestd subscribers import|export|unsubscribe|delete``."""

from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from digestd.commands.common import database
from digestd.config import Settings
from digestd.errors import DigestdError, InputError, ValidationError, first_line
from digestd.models import Subscriber
from digestd.ops.progress import progress

if TYPE_CHECKING:
    from digestd.readers.import_history import Finished
    from digestd.readers.importing import ImportReport

# Each command imports what only it uses: start-up time is paid by every run.


def import_(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.readers.import_history import PARTLY, Channel, Finished, new_id
    from digestd.readers.importing import ImportContext, import_csv

    stream, name = _csv_input(args.file)
    ctx = ImportContext(
        now=datetime.now(UTC),
        source=f"import:{name}",
        default_timezone=settings.default_timezone,
        daily_at=settings.daily_time,
        weekly_at=settings.weekly_time,
    )
    total = _count_lines(args.file)
    read = [0]  # data lines, for the history

    def finished(report: ImportReport | None, problem: str | None = None) -> Finished:
        at = datetime.now(UTC)
        return Finished(new_id(), name, Channel.CLI, ctx.now, at, read[0], report, problem)

    with (
        stream,
        _stopped_by_sigterm(),
        database(settings) as sessions,
        progress(f"Importing {name}", total) as advance,
        sessions() as session,
    ):

        def counted(lines: int) -> None:
            read[0] += lines
            advance(lines)

        try:
            # A chunk at a time, each committed: readers' unsubscribes and the sending
            # are not held up behind a long import (SQLite has one writer at a time).
            report = import_csv(session, stream, ctx, counted, commit=session.commit)
        except InputError as exc:  # the header: nothing imported
            _remember(session, finished(None, str(exc)))
            raise
        except csv.Error as exc:
            _remember(session, finished(None, f"not valid CSV: {exc}"))
            raise InputError(f"{args.file} is not valid CSV: {exc}") from exc
        except (KeyboardInterrupt, SQLAlchemyError) as exc:
            # Its first chunks are committed: the history must show it, stopped part-way.
            why = (
                "interrupted"
                if isinstance(exc, KeyboardInterrupt)
                else f"the database refused the import ({type(exc).__name__})"
            )
            _remember(session, finished(None, f"{why}; {PARTLY}"))
            raise
        session.commit()
        _remember(session, finished(report))
    for error in report.errors:
        print(f"rejected {error}", file=sys.stderr)
    print(
        f"subscribers: {report.added} added, {report.updated} updated, "
        + (f"{report.unsubscribed} unsubscribed, " if report.unsubscribed else "")
        + f"{len(report.errors)} rejected"
    )
    return 1 if report.errors else 0


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM (systemd, ``timeout``, a container stop) ends an import as Ctrl-C does: the
    chunks committed stay, and the history says it stopped part-way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remember(session: Session, done: Finished) -> None:
    """Add the import to the history the import page lists. The import stands if this
    fails: the operator is told on stderr, and the exit status stays the import's."""
    from digestd.readers.import_history import entry, record

    session.rollback()  # what a refused file left unwritten
    try:
        record(session, entry(done))
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        print(
            f"warning: the import is not in the import history: {first_line(exc)}", file=sys.stderr
        )


def _csv_input(path: str) -> tuple[TextIO, str]:
    """The file (``-``: standard input) as text, and the name the import is recorded by.
    Bytes that are not UTF-8 reach the import as they are (surrogate escapes), which
    rejects their rows by line."""
    if path == "-":
        stream = io.TextIOWrapper(
            sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        return stream, "standard input"
    try:
        opened = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    # A file name in another encoding than the system's (a Latin-1 "abonnés.csv"): shown
    # and recorded with a replacement character, never a crash.
    name = os.fsencode(Path(path).name).decode("utf-8", "replace")
    return opened, name


def _count_lines(path: str) -> int | None:
    """Physical lines after the header: the progress bar's total (cheap even at 1 M rows).
    None for what is not a regular file: a pipe read to count it would be used up."""
    try:
        if path == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return max(0, newlines - 1)
    except OSError:
        return None


def export(settings: Settings, args: argparse.Namespace) -> int:
    """CSV on stdout; the progress bar (a terminal only) on stderr."""
    from digestd.readers.export import export_csv

    with database(settings) as sessions, sessions() as session:
        total = session.scalar(select(func.count()).select_from(Subscriber))
        with progress("Exporting subscribers", total) as advance:
            header = 1
            for chunk in export_csv(session):
                sys.stdout.write(chunk)
                advance(chunk.count("\n") - header)
                header = 0
    sys.stdout.flush()
    return 0


def _address(raw: str) -> str:
    from digestd.readers.subscribers import normalise_email

    try:
        return normalise_email(raw)
    except ValidationError as exc:
        raise InputError(str(exc)) from exc  # "email: ... is not a valid address"


def unsubscribe(settings: Settings, args: argparse.Namespace) -> int:
    """Stop every email to one reader and keep the record (erasure is ``delete``)."""
    from digestd.readers.lifecycle import unsubscribe as stop_mail

    email = _address(args.email)
    now = datetime.now(UTC)
    with database(settings) as sessions, sessions.begin() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == email)).first()
        if subscriber is None:
            raise DigestdError(f"no subscriber {email}")
        changed = stop_mail(subscriber, now, via="operator")
        status = subscriber.status
    if changed:
        print(f"unsubscribed {email}: no more digests; the record is kept")
    else:
        print(f"{email} is already {status}: no digests go to them")
    return 0


def delete(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.readers.subscribers import erase

    email = _address(args.email)
    with database(settings) as sessions, sessions.begin() as session:
        found = erase(session, email, datetime.now(UTC))
    if found:
        print(
            "erased: personal data removed; the address is suppressed (kept only as a hash) "
            "until its owner signs up again and confirms"
        )
    else:  # still suppressed: the request holds against a later import or list merge
        print(f"no subscriber {email}; the address is suppressed (kept only as a hash)")
    return 0

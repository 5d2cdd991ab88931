"""What the commands share: the database at this digestd's schema, stdin or a file, --now."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.db import make_sessions, open_database
from digestd.errors import InputError, ValidationError
from digestd.instants import parse_instant


@contextmanager
def database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database, refused unless it is at this digestd's schema
    (:class:`digestd.errors.SchemaError`); no file is created."""
    engine = open_database(settings.database_url)
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()


def parse_now(raw: str | None) -> datetime:
    if raw is None:
        return datetime.now(UTC)
    try:
        return parse_instant("--now", raw)
    except ValidationError as exc:
        raise InputError(str(exc)) from exc


def read_input(path: str) -> str:
    """The whole file (or stdin) as text: UTF-8, a leading BOM dropped."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            stream = getattr(sys.stdin, "buffer", None)  # a test may hand over text
            data = stream.read() if stream is not None else sys.stdin.read().encode()
        else:
            data = Path(path).read_bytes()
        return data.decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeError as exc:  # invalid bytes, or text a test handed over that was not
        raise InputError(f"{name} is not UTF-8 text") from exc

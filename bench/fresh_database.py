"""What the benchmarks share: a fresh database for one run, and a free loopback port."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database(kind: str, workdir: Path, name: str) -> tuple[str, Callable[[], None]]:
    """A URL for a fresh database (``kind``: sqlite or postgresql), and a function that
    drops it. On PostgreSQL a new database ``digestd_NAME_<random>`` is created on the
    server named by ``DIGESTD_BENCH_DATABASE_URL`` (or ``DIGESTD_TEST_DATABASE_URL``)."""
    if kind == "sqlite":
        return f"sqlite:///{workdir}/{name}.db", lambda: None
    server = os.environ.get("DIGESTD_BENCH_DATABASE_URL") or os.environ.get(
        "DIGESTD_TEST_DATABASE_URL"
    )
    if not server:
        sys.exit("--db postgresql needs DIGESTD_BENCH_DATABASE_URL=postgresql://user@host:port/db")
    url = make_url(server).set(drivername="postgresql+psycopg")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    database_name = f"digestd_{name}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database_name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=database_name).render_as_string(hide_password=False), drop

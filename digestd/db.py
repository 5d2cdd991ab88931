"""Engine and sessions, built from settings (never at import), and schema migration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, Row, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from digestd.resources import migrations_dir


def make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web server read while the sender writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""
    command.upgrade(alembic_config(engine), revision)


def insert_ignoring_conflicts(
    session: Session,
    table: Any,
    rows: list[dict[str, Any]],
    conflict_columns: list[str],
    returning: Sequence[str] = (),
) -> list[Row[Any]]:
    """``INSERT ... ON CONFLICT DO NOTHING``: the unique key decides, so concurrent workers
    inserting the same row is harmless rather than an error. With ``returning``, the rows
    this statement inserted (not those another transaction had): who created a row."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from digestd.bulk import insert_ignoring_conflicts_pg

        return insert_ignoring_conflicts_pg(session, table, rows, conflict_columns, returning)
    if dialect != "sqlite":  # pragma: no cover - digestd supports SQLite and PostgreSQL
        raise NotImplementedError(dialect)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    if not returning:
        session.execute(statement, rows)
        return []
    return list(session.execute(statement.returning(*(table.c[c] for c in returning)), rows))

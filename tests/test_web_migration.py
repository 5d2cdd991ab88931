"""Migration 0002 (when the last confirmation email left) applies, reverts, and matches the
models (the whole schema, on SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from digestd.db import make_engine, migrate
from digestd.models import Base


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("subscribers")}


def test_0002_adds_and_removes_confirmation_sent_at(database_url: str) -> None:
    from alembic import command

    from digestd.db import alembic_config

    engine = make_engine(database_url)
    try:
        assert "confirmation_sent_at" in _columns(engine)
        command.downgrade(alembic_config(engine), "0001")
        assert "confirmation_sent_at" not in _columns(engine)
        migrate(engine, "0002")
        assert "confirmation_sent_at" in _columns(engine)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == "0002"
        migrate(engine)  # and on to the head
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()

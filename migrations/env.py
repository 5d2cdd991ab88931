"""Alembic environment: the database URL comes from digestd's own configuration."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, Engine

from digestd.config import load_settings
from digestd.db import make_engine, migration_transaction
from digestd.models import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine: Engine | None = config.attributes.get("engine")  # handed in by digestd.db.migrate
    if engine is not None:
        return engine
    return make_engine(load_settings(os.environ, dev_key="throwaway").database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=load_settings(os.environ, dev_key="throwaway").database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    handed: Connection | None = config.attributes.get("connection")  # digestd.db.migrate's
    if handed is not None:
        _run(handed)  # in the caller's transaction, which it commits
        return
    with migration_transaction(_engine()) as connection:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

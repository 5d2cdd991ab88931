"""Alembic environment: the database URL comes from digestd's own configuration."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine

from digestd.config import load_settings
from digestd.db import make_engine
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
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""The Alembic migrations are the schema: they match the models, and go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from digestd.content.categories import CATEGORIES
from digestd.db import alembic_config, make_engine, migrate
from digestd.models import Base, Category


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_categories_are_seeded_in_site_order(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(Category.slug, Category.name).order_by(Category.position))
        assert dict(rows.all()) == CATEGORIES
    engine.dispose()


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert "deliveries" in inspect(engine).get_table_names()
    migrate(engine)  # idempotent: running it on every start is safe
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from categories")).scalar() == 26
    engine.dispose()

"""Migrations 0002 (a per-address confirmation timestamp) and 0007 (which replaced it with
the shared mail throttle) apply and revert, and the head matches the models (on SQLite and
PostgreSQL)."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from digestd.db import alembic_config, make_engine, migrate
from digestd.models import Base


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("subscribers")}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_0002_and_0007_apply_and_revert(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert "confirmation_sent_at" not in _columns(engine)
        assert "mail_throttle" in _tables(engine)
        command.downgrade(alembic_config(engine), "0001")
        assert "confirmation_sent_at" not in _columns(engine)
        migrate(engine, "0002")
        assert "confirmation_sent_at" in _columns(engine)
        migrate(engine, "0006")
        assert "mail_throttle" not in _tables(engine)
        migrate(engine)  # and on to the head
        assert "confirmation_sent_at" not in _columns(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_0006_and_0007_keep_every_subscriber_delivery_and_digest(database_url: str) -> None:
    """Changing the columns of digests (0006) or subscribers (0007) must not rebuild the
    table: on SQLite a rebuild drops it, and ON DELETE CASCADE / SET NULL would take the
    deliveries, or their digests, with it."""
    engine = make_engine(database_url)
    try:
        command.downgrade(alembic_config(engine), "0005")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO subscribers (id, public_id, email, status, timezone, "
                    "wants_daily, wants_weekly, created_at, consent_source, soft_bounces) "
                    "VALUES (1, 'p1', 'a@example.com', 'active', 'UTC', true, false, "
                    "'2026-01-01 00:00:00', '', 0)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO editions (id, kind, period, created_at) "
                    "VALUES (1, 'daily', '2026-01-01', '2026-01-01 00:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO digests (id, edition_id, content_key, layout, created_at) "
                    "VALUES (1, 1, 'k', '{}', '2026-01-01 00:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, edition_id, digest_id, status, "
                    "due_at, next_attempt_at, attempts, created_at) VALUES (1, 1, 1, 1, 'sent', "
                    "'2026-01-01 07:00:00', '2026-01-01 07:00:00', 1, '2026-01-01 00:00:00')"
                )
            )
        migrate(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM subscribers")).scalar() == 1
            assert connection.execute(text("SELECT digest_id FROM deliveries")).all() == [(1,)]
    finally:
        engine.dispose()

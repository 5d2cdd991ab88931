"""The Alembic migrations are the schema: they match the models, and go down and up again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

from digestd.content.categories import CATEGORIES
from digestd.db import (
    SCHEMA_HEAD,
    LockWait,
    alembic_config,
    make_engine,
    migrate,
    schema_revision,
)
from digestd.errors import SchemaError
from digestd.models import Base, Category


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_no_index_only_repeats_the_start_of_another(database_url: str) -> None:
    """An index whose columns begin another index serves no query the longer one cannot,
    and every insert, and on PostgreSQL every update of an indexed column, writes to it."""
    engine = make_engine(database_url)
    inspector = inspect(engine)
    redundant = []
    for table in inspector.get_table_names():
        indexes = [
            (i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(table)
        ]
        indexes += [
            (u["name"], tuple(u["column_names"]), True)
            for u in inspector.get_unique_constraints(table)
        ]
        primary = inspector.get_pk_constraint(table)
        indexes.append((primary["name"], tuple(primary["constrained_columns"]), True))
        for name, columns, unique in indexes:
            longer = [
                other
                for other, more, _ in indexes
                if len(more) > len(columns) and more[: len(columns)] == columns
            ]
            if longer and not unique:  # a unique one says something of its own
                redundant.append((table, name, longer))
    engine.dispose()
    assert redundant == []


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


def test_0009_turns_soft_bounce_marks_into_ledger_rows(database_url: str) -> None:
    """Soft bounces recorded as a ``soft-bounce:`` prefix of ``last_error`` keep counting."""
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "0008")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (id, public_id, email, status, timezone, wants_daily, "
                "wants_weekly, created_at, consent_source, soft_bounces) VALUES (1, 'p1', "
                "'a@example.com', 'active', 'UTC', true, false, '2026-01-01 00:00:00', '', 1)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO editions (id, kind, period, created_at) "
                "VALUES (1, 'daily', '2026-01-01', '2026-01-01 00:00:00'), "
                "(2, 'daily', '2026-01-02', '2026-01-01 00:00:00')"
            )
        )
        for delivery, status, error in (
            (1, "failed", "soft-bounce: gave up after 6 attempts: 452 4.2.2 full"),
            (2, "sent", "bounced: 5.1.1"),  # a hard bounce's note is no soft bounce
        ):
            connection.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, edition_id, status, due_at, "
                    "next_attempt_at, attempts, last_error, created_at) VALUES (:id, 1, :id, "
                    ":status, '2026-01-01 07:00:00', '2026-01-01 07:00:00', 1, :error, "
                    "'2026-01-01 00:00:00')"
                ),
                {"id": delivery, "status": status, "error": error},
            )
    migrate(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT delivery_id, subscriber_id, kind, source FROM bounces")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [(1, 1, "soft", "smtp")]


def _seed_deliveries(engine: Engine, ids: tuple[int, ...]) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (id, public_id, email, status, timezone, wants_daily, "
                "wants_weekly, created_at, consent_source, soft_bounces) VALUES (1, 'p1', "
                "'a@example.com', 'active', 'UTC', true, false, '2026-01-01 00:00:00', '', 0)"
            )
        )
        for delivery in ids:
            connection.execute(
                text(
                    "INSERT INTO editions (id, kind, period, created_at) "
                    "VALUES (:id, 'daily', :period, '2026-01-01 00:00:00')"
                ),
                {"id": delivery, "period": f"2026-01-{delivery:02d}"},
            )
            connection.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, edition_id, status, due_at, "
                    "next_attempt_at, attempts, created_at) VALUES (:id, 1, :id, 'sent', "
                    "'2026-01-01 07:00:00', '2026-01-01 07:00:00', 1, '2026-01-01 00:00:00')"
                ),
                {"id": delivery},
            )
        if engine.dialect.name == "postgresql":  # explicit ids leave the sequence behind
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence('deliveries', 'id'), :n)"),
                {"n": max(ids)},
            )


def _next_delivery_id(engine: Engine) -> int:
    """The id the database gives a new queue row after the newest one was deleted."""
    with engine.begin() as connection:
        newest, edition = connection.execute(
            text("SELECT id, edition_id FROM deliveries ORDER BY id DESC LIMIT 1")
        ).one()
        connection.execute(text("DELETE FROM deliveries WHERE id = :id"), {"id": newest})
        connection.execute(
            text(
                "INSERT INTO deliveries (subscriber_id, edition_id, status, due_at, "
                "next_attempt_at, attempts, created_at) VALUES (1, :edition, 'queued', "
                "'2026-01-01 07:00:00', '2026-01-01 07:00:00', 0, '2026-01-01 00:00:00')"
            ),
            {"edition": edition},
        )
        return int(connection.execute(text("SELECT max(id) FROM deliveries")).scalar_one())


def _feed_ids_after_removing_the_newest(engine: Engine) -> list[int]:
    with engine.begin() as connection:
        for n in (1, 2, 3):
            if n == 3:
                connection.execute(text("DELETE FROM feeds WHERE id = 2"))
            connection.execute(
                text(
                    "INSERT INTO feeds (url, category, next_poll_at, failures, created_at) "
                    "VALUES (:url, 'ai', '2026-01-01 00:00:00', 0, '2026-01-01 00:00:00')"
                ),
                {"url": f"https://feeds.example.com/{n}.xml"},
            )
        return list(connection.execute(text("SELECT id FROM feeds ORDER BY id")).scalars())


def test_0015_queue_ids_are_never_handed_out_twice_and_no_row_is_lost(database_url: str) -> None:
    """An email names its queue row by id (bounce address, Message-ID, links): once that
    row is deleted (an erasure), no later row may take its id. On SQLite the table is built
    again; its click marks and the ledger's references to it come through."""
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "0014")
    _seed_deliveries(engine, (1, 2, 3))
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO click_marks VALUES (2, 0), (2, 3), (3, 0)"))
        connection.execute(
            text(
                "INSERT INTO bounces (delivery_id, subscriber_id, kind, diagnostic, source, "
                "channel, created_at) VALUES (3, 1, 'hard', '550 5.1.1', 'smtp', 'smtp', "
                "'2026-01-02 00:00:00')"
            )
        )
    migrate(engine)
    with engine.connect() as connection:
        marks = connection.execute(text("SELECT * FROM click_marks ORDER BY 1, 2")).all()
        ledger = connection.execute(text("SELECT delivery_id FROM bounces")).scalars().all()
        kept = connection.execute(text("SELECT id FROM deliveries ORDER BY id")).scalars().all()
    assert [tuple(m) for m in marks] == [(2, 0), (2, 3), (3, 0)] and ledger == [3]
    assert kept == [1, 2, 3]
    assert _next_delivery_id(engine) == 4  # 3 was deleted: the new row is 4, not 3 again
    assert _next_delivery_id(engine) == 5
    assert _feed_ids_after_removing_the_newest(engine) == [1, 3]
    assert compare_metadata(MigrationContext.configure(engine.connect()), Base.metadata) == []
    engine.dispose()


def _why_and_summary(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, why_it_matters, summary FROM articles"))
        return {row.id: (row.why_it_matters, row.summary) for row in rows}


def _add_articles(engine: Engine, ids: tuple[str, ...]) -> None:
    """Articles as 0020 stores them, each with a why_it_matters of its own."""
    with engine.begin() as connection:
        for article_id in ids:
            connection.execute(
                text(
                    "INSERT INTO articles (id, url, title, source, published_at, kind, "
                    "why_it_matters, key_takeaways, companies, analysis, score, created_at, "
                    "updated_at) VALUES (:id, 'https://news.example.com/a', 'A', '', "
                    "'2026-01-01 00:00:00', 'news', :why, '[]', '[]', '', 0, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"id": article_id, "why": f"Said of {article_id}."},
            )


def test_0021_moves_a_feed_items_description_to_its_summary_and_back(database_url: str) -> None:
    """Polls before 0021 stored a feed item's description as why_it_matters, which the
    digest labels "Why it matters:"; an article sent through the API keeps its own."""
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "0020")
    feed = "feed-0123456789abcdef0123456789abcdef"
    _add_articles(engine, (feed, "api-1", "FEED-api"))
    migrate(engine)
    assert _why_and_summary(engine) == {
        feed: ("", f"Said of {feed}."),
        "api-1": ("Said of api-1.", ""),
        "FEED-api": ("Said of FEED-api.", ""),
    }
    command.downgrade(alembic_config(engine), "0020")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, why_it_matters FROM articles")).all()
    assert {row.id: row.why_it_matters for row in rows} == {
        a: f"Said of {a}." for a in (feed, "api-1", "FEED-api")
    }
    engine.dispose()


def _readers_rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        categories = connection.execute(text("SELECT count(*) FROM subscriber_categories"))
        queue = connection.execute(text("SELECT count(*) FROM deliveries"))
        return int(categories.scalar_one()), int(queue.scalar_one())


def test_downgrades_dropping_a_readers_column_keep_their_categories_and_queue(
    database_url: str,
) -> None:
    """0019 and 0002 drop a column of subscribers: on SQLite a copy of the table dropped
    the original, and with it (ON DELETE CASCADE) every reader's topics and queue rows."""
    engine = make_engine(database_url)
    _seed_deliveries(engine, (1, 2, 3))
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO subscriber_categories VALUES (1, 'ai'), (1, 'robotics')")
        )
    command.downgrade(alembic_config(engine), "0018")
    assert _readers_rows(engine) == (2, 3)
    command.downgrade(alembic_config(engine), "0001")
    assert _readers_rows(engine) == (2, 3)
    migrate(engine)
    assert _readers_rows(engine) == (2, 3)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


_REFUSE_UPDATES = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE UPDATE ON articles BEGIN SELECT RAISE(ABORT, 'full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'full'; END $$",
        "CREATE TRIGGER refuse BEFORE UPDATE ON articles FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}


def test_a_migration_that_fails_partway_leaves_the_schema_as_it_was(database_url: str) -> None:
    """0021 adds a column, then moves text into it. On SQLite the driver committed the new
    column on its own: when the move failed (a full disk, a killed ``migrate``), the
    database stayed at 0020 with 0021's column, and every later migrate failed on it."""
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "0020")
    feed = "feed-0123456789abcdef0123456789abcdef"
    _add_articles(engine, (feed,))
    with engine.begin() as connection:
        for statement in _REFUSE_UPDATES[engine.dialect.name]:
            connection.exec_driver_sql(statement)
    with pytest.raises(DBAPIError, match="full"):
        migrate(engine)
    assert schema_revision(engine) == "0020"
    assert "summary" not in {c["name"] for c in inspect(engine).get_columns("articles")}
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "DROP TRIGGER refuse ON articles"
            if engine.dialect.name == "postgresql"
            else "DROP TRIGGER refuse"
        )
    assert migrate(engine).after == SCHEMA_HEAD
    assert _why_and_summary(engine) == {feed: ("", f"Said of {feed}.")}
    engine.dispose()


# The first migration a previous release keeps working on (0007 dropped a column of readers).
ROLLING_SINCE = 8


def _columns(engine: Engine) -> dict[tuple[str, str], tuple[str, bool, bool]]:
    """Each table's columns: (table, column) -> (type, nullable, has a server default)."""
    inspector = inspect(engine)
    return {
        (table, column["name"]): (str(column["type"]), column["nullable"], bool(column["default"]))
        for table in inspector.get_table_names()
        for column in inspector.get_columns(table)
    }


def test_each_migration_keeps_what_the_release_before_it_reads_and_writes(
    database_url: str,
) -> None:
    """Machines are upgraded one at a time (README, Upgrading): the ones still on the
    previous release keep sending on the new schema. So a migration keeps every column as
    it was, and a column it adds to a table the previous release writes takes a value
    without being named (nullable, or a server default)."""
    engine = make_engine(database_url)
    config = alembic_config(engine)
    command.downgrade(config, f"{ROLLING_SINCE - 1:04d}")
    before = _columns(engine)
    broken: list[str] = []
    for number in range(ROLLING_SINCE, int(SCHEMA_HEAD) + 1):
        command.upgrade(config, f"{number:04d}")
        after = _columns(engine)
        tables = {table for table, _ in before}
        broken += [f"{number:04d} changed {key}" for key in before if after.get(key) != before[key]]
        broken += [
            f"{number:04d} added {key}, required"
            for key, (_, nullable, default) in after.items()
            if key not in before and key[0] in tables and not (nullable or default)
        ]
        before = after
    engine.dispose()
    assert broken == []


def test_a_migration_waiting_for_a_lock_gives_up_and_changes_nothing(database_url: str) -> None:
    """0022 alters the bounce ledger. An older daemon's transaction that read it holds the
    ALTER back, and every query after the ALTER would queue behind it: the migration gives
    up after its lock timeout, tries again, then says why with nothing changed."""
    engine = make_engine(database_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("PostgreSQL's table locks; a SQLite migrate holds the write lock")
    command.downgrade(alembic_config(engine), "0021")
    wait = LockWait(seconds=0.2, attempts=2, pause=0)
    with engine.connect() as older, ThreadPoolExecutor(1) as thread:
        older.execute(text("SELECT count(*) FROM bounces"))  # its transaction stays open
        attempt = thread.submit(migrate, engine, "head", wait)
        try:
            error = attempt.exception(timeout=30)
        finally:
            older.rollback()  # the old code waited for this, then migrated
    assert isinstance(error, SchemaError), error
    assert "waited 2 times 0.2 s for a lock" in str(error)
    assert schema_revision(engine) == "0021"
    assert migrate(engine).after == SCHEMA_HEAD
    engine.dispose()

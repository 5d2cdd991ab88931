"""Only `migrate` and `run` change the schema or write files; every other command checks
the schema and refuses in one line (exit 2) when the database is missing, behind or ahead.
Concurrent `digestd migrate` take turns: under an advisory lock on PostgreSQL, SQLite's
write lock on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from digestd.db import SCHEMA_HEAD, alembic_config, make_engine, schema_revision
from digestd.models import Base
from tests.helpers import ROOT, one_line_error, run_digestd

# Every command but run and migrate, with arguments that would work on a ready database.
READERS = [
    ["stats"],
    ["articles", "add", "-"],
    ["subscribers", "import", "readers.csv"],
    ["subscribers", "export"],
    ["subscribers", "unsubscribe", "a@example.com"],
    ["subscribers", "delete", "a@example.com"],
    ["feeds", "list"],
    ["feeds", "remove", "1"],
    ["tick"],
    ["preview", "daily", "--categories", "ai"],
]


def _fresh(tmp_path: Path) -> dict[str, str]:
    """A new installation: nothing configured but where its data goes."""
    data = tmp_path / "var"
    return {"DIGESTD_DATA_DIR": str(data), "DIGESTD_DATABASE_URL": f"sqlite:///{data}/digestd.db"}


def _versions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(make_engine("sqlite://")))
    return sorted(r.revision for r in script.walk_revisions())


def test_the_schema_head_is_the_newest_migration_and_revisions_are_numbered() -> None:
    versions = _versions()
    assert versions[-1] == SCHEMA_HEAD
    assert all(len(v) == 4 and v.isdigit() for v in versions)  # a higher number is newer


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_on_a_new_installation_every_other_command_refuses_and_writes_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    env = _fresh(tmp_path)
    (tmp_path / "readers.csv").write_text("email,categories,frequency,timezone\n")
    line = one_line_error(run_digestd(env, *args, stdin=b"[]", cwd=tmp_path))
    assert line in (
        f"digestd: the database {tmp_path}/var/digestd.db does not exist: run digestd migrate",
        # tick and preview sign links: they need the key migrate makes (checked first)
        f"digestd: configuration error: DIGESTD_SECRET_KEYS: not set, and there is no "
        f"development key in {tmp_path}/var/secret.key: run digestd migrate first (it makes "
        "one), or set DIGESTD_SECRET_KEYS",
    )
    assert not (tmp_path / "var").exists()


def test_check_on_a_new_installation_reports_and_writes_nothing(tmp_path: Path) -> None:
    result = run_digestd(_fresh(tmp_path), "check", cwd=tmp_path)
    assert result.returncode == 1 and b"does not exist: run digestd migrate" in result.stdout
    assert not (tmp_path / "var").exists()


def test_migrate_says_what_it_did(tmp_path: Path) -> None:
    env = _fresh(tmp_path)
    created = run_digestd(env, "migrate", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    count = len(_versions())
    assert created.stdout.decode() == f"created the schema at {SCHEMA_HEAD}, {count} migrations\n"
    assert created.stderr == b""  # the summary is all it says (Alembic's lines: with -v)
    assert (tmp_path / "var" / "secret.key").is_file()  # the development key, made once
    again = run_digestd(env, "migrate", cwd=tmp_path)
    assert again.stdout.decode() == f"already at {SCHEMA_HEAD}\n"
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    command.downgrade(alembic_config(engine), "0003")
    upgraded = run_digestd(env, "migrate", cwd=tmp_path)
    later = len([v for v in _versions() if v > "0003"])
    assert upgraded.stdout.decode() == f"upgraded 0003 → {SCHEMA_HEAD}, {later} migrations\n"
    assert upgraded.stderr == b""
    assert schema_revision(engine) == SCHEMA_HEAD
    engine.dispose()


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_a_database_behind_is_refused_and_left_as_it_was(
    database_url: str, env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "0005")
    (tmp_path / "readers.csv").write_text("email,categories,frequency,timezone\n")
    result = run_digestd(env, *args, stdin=b"[]", cwd=tmp_path)
    assert one_line_error(result) == (
        f"digestd: the database is at 0005, this digestd needs {SCHEMA_HEAD}: run digestd migrate"
    )
    assert result.stdout == b""  # not even a header (feeds list printed its own)
    assert schema_revision(engine) == "0005"  # not upgraded behind the operator's back
    engine.dispose()


@pytest.mark.parametrize("args", [["stats"], ["migrate"], ["run"]], ids=" ".join)
def test_a_database_ahead_asks_for_a_newer_digestd(
    database_url: str, env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """After a downgrade of digestd: migrate (systemd's ExecStartPre) and run say so in one
    line too, and touch nothing."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    line = one_line_error(run_digestd(env, *args, cwd=tmp_path))
    assert line == (
        f"digestd: the database is at 9999, newer than this digestd knows ({SCHEMA_HEAD}): "
        "upgrade digestd"
    )
    assert schema_revision(engine) == "9999"
    engine.dispose()


@pytest.mark.parametrize("args", [["stats"], ["migrate"]], ids=" ".join)
def test_a_revision_no_digestd_wrote_is_named_as_such(
    database_url: str, env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ae1027a6acf'"))
    line = one_line_error(run_digestd(env, *args, cwd=tmp_path))
    assert line == (
        "digestd: the database is at 'ae1027a6acf', which is no digestd schema: "
        "is DIGESTD_DATABASE_URL the right database?"
    )
    assert schema_revision(engine) == "ae1027a6acf"
    engine.dispose()


@pytest.mark.parametrize("args", [["stats"], ["migrate"], ["run"]], ids=" ".join)
def test_a_file_that_is_no_database_is_named_with_its_variable(
    tmp_path: Path, args: list[str]
) -> None:
    env = _fresh(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"shopping: milk, eggs, " * 200)
    env["DIGESTD_DATABASE_URL"] = f"sqlite:///{notes}"
    line = one_line_error(run_digestd(env, *args, cwd=tmp_path))
    assert line == f"digestd: DIGESTD_DATABASE_URL: {notes} is not a SQLite database"
    assert notes.read_bytes() == b"shopping: milk, eggs, " * 200


def test_after_migrate_the_commands_that_sign_links_use_its_key(tmp_path: Path) -> None:
    env = _fresh(tmp_path)
    assert run_digestd(env, "migrate", cwd=tmp_path).returncode == 0
    key = (tmp_path / "var" / "secret.key").read_bytes()
    ticked = run_digestd(env, "tick", cwd=tmp_path)
    assert ticked.returncode == 0, ticked.stderr
    assert (tmp_path / "var" / "secret.key").read_bytes() == key
    assert sorted(p.name for p in (tmp_path / "var").iterdir() if p.suffix != ".db-wal") in (
        ["digestd.db", "digestd.db-shm", "secret.key"],
        ["digestd.db", "secret.key"],
    )  # tick wrote no file of its own (no mail to catch: nobody subscribed)


# --- PostgreSQL: two migrations at once -----------------------------------------------------


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    server = os.environ.get("DIGESTD_TEST_DATABASE_URL")
    if not server:
        pytest.skip("needs PostgreSQL (DIGESTD_TEST_DATABASE_URL)")
    admin = create_engine(
        make_url(server).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"digestd_fresh_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate_at_once(url: str, tmp_path: Path, processes: int) -> list[str]:
    """What each of ``processes`` concurrent ``digestd migrate`` of ``url`` said; each
    succeeded, and the schema is the models'."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DIGESTD_DATABASE_URL": url,
        "DIGESTD_SECRET_KEYS": "test-secret-key-0123456789abcdef",
        "DIGESTD_DATA_DIR": str(tmp_path / "var"),
    }
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "digestd", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in running]
    for (_, err), code in results:
        assert code == 0, err.decode()
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert schema_revision(engine) == SCHEMA_HEAD
    engine.dispose()
    return sorted(out.decode().strip() for (out, _), _ in results)


def test_two_migrations_of_one_fresh_postgresql_database_at_once_both_succeed(
    empty_postgres: str, tmp_path: Path
) -> None:
    said = _migrate_at_once(empty_postgres, tmp_path, 2)
    assert said[0] == f"already at {SCHEMA_HEAD}"  # the second waited, then found it done
    assert said[1].startswith(f"created the schema at {SCHEMA_HEAD}")


def test_migrations_of_one_fresh_sqlite_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Each migration was no transaction of its own on SQLite: the processes ran the same
    ones side by side, and all but one failed ("table articles already exists")."""
    said = _migrate_at_once(f"sqlite:///{tmp_path}/var/digestd.db", tmp_path, 3)
    assert said[:2] == [f"already at {SCHEMA_HEAD}"] * 2  # they waited, then found it done
    assert said[2].startswith(f"created the schema at {SCHEMA_HEAD}")

"""The import history: each finished import, the command line's or the admin page's, is a
row every process reads; the newest 50 are kept, each with its first 100 rejected lines,
and no address from the file is kept (erasure must leave none). Real databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import Settings
from digestd.db import make_engine, make_sessions
from digestd.models import SubscriberImport
from digestd.readers import import_history as history
from digestd.readers.importing import ImportReport, RowError
from tests.helpers import run_cli

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    yield make_sessions(engine)
    engine.dispose()


def _finished(n: int, errors: int = 0) -> history.Finished:
    report = ImportReport(added=n, errors=[RowError(i + 2, "email", "x") for i in range(errors)])
    at = NOW + timedelta(minutes=n)
    return history.Finished(f"import-{n:03d}", f"{n}.csv", history.Channel.CLI, at, at, n, report)


def test_the_newest_fifty_imports_are_kept_each_with_its_first_hundred_rejected_lines(
    sessions: sessionmaker[Session],
) -> None:
    for n in range(53):
        with sessions.begin() as session:
            history.record(session, history.entry(_finished(n, errors=150 if n == 52 else 0)))
    with sessions() as session:
        listed = history.recent(session)
        stored = session.scalar(select(func.count()).select_from(SubscriberImport))
        gone = history.find(session, "import-002")
    assert [row.id for row in listed] == [f"import-{n:03d}" for n in range(52, 2, -1)]
    assert stored == 50 and gone is None
    newest = listed[0]
    assert newest.rejected == 150 and len(newest.errors) == 100
    assert newest.errors[0] == {"line": 2, "field": "email", "problem": "x"}


def test_a_reason_leaves_out_what_it_quotes_from_the_file_but_keeps_its_own_example() -> None:
    quoted = [
        RowError(3, "email", "'<ann@example.com>' is not a valid address: check it for a typo"),
        RowError(4, "email", '"O\'Hara ann@example.com" is not a valid address: no spaces'),
        RowError(5, "categories", "unknown category 'ann@example.com', 'aii'; known: ai"),
        RowError(
            6,
            "categories",
            "choose at least one; separate several with commas "
            '(quoted in CSV: "ai,robotics"), semicolons or |',
        ),
        RowError(7, "frequency", r"must be daily, weekly or both, got 'it\'s ann@ex'"),
    ]
    assert [history.reason(e)["problem"] for e in quoted] == [
        "… is not a valid address: check it for a typo",
        "… is not a valid address: no spaces",
        "unknown category …, …; known: ai",
        'choose at least one; separate several with commas (quoted in CSV: "ai,robotics"), '
        "semicolons or |",
        "must be daily, weekly or both, got …",
    ]


# ann's address where each column's error quotes it, and once as an address mistyped.
FILE = """email,categories,frequency,timezone,status
ann@example.com,ai,daily,UTC,
<ann@example.com>,ai,daily,UTC,
"O'Hara ann@example.com",ai,daily,UTC,
bob@example.com,ann@example.com,daily,UTC,
carl@example.com,ai,ann@example.com,UTC,
dora@example.com,ai,daily,ann@example.com,
erin@example.com,ai,daily,UTC,ann@example.com
"""


def test_an_erased_readers_address_is_nowhere_in_the_history(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
) -> None:
    path = tmp_path / "spring.csv"
    path.write_text(FILE)
    with time_machine.travel(NOW, tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 1
        assert run_cli(monkeypatch, env, "subscribers", "delete", "ann@example.com") == 0
    with sessions() as session:
        (kept,) = history.recent(session)
    assert (kept.channel, kept.file_name, kept.lines, kept.added, kept.rejected) == (
        "cli",
        "spring.csv",
        7,
        1,
        6,
    )
    assert kept.started_at == kept.finished_at == NOW and kept.problem is None
    assert "ann" not in json.dumps(kept.errors)
    assert [(e["line"], e["field"]) for e in kept.errors] == [
        (3, "email"),
        (4, "email"),
        (5, "categories"),
        (6, "frequency"),
        (7, "timezone"),
        (8, "status"),
    ]
    assert kept.errors[0]["problem"].startswith("… is not a valid address: ")
    assert kept.errors[2]["problem"].startswith("unknown category …; separate several")


def test_a_file_the_command_line_refuses_whole_is_in_the_history_as_refused(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
) -> None:
    path = tmp_path / "wrong.csv"
    path.write_text("mail,topics\nann@example.com,ai\n")
    assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 2
    with sessions() as session:
        (kept,) = history.recent(session)
    assert kept.problem is not None and kept.problem.startswith("the CSV header must be")
    assert (kept.file_name, kept.added, kept.rejected, kept.errors) == ("wrong.csv", 0, 0, [])


def test_an_import_stopped_part_way_is_in_the_history_as_stopped(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
) -> None:
    """SIGTERM (a container stop, ``timeout``) or Ctrl-C after the first chunk: what was
    committed stays, and the import page says it stopped before the end (it said nothing:
    a thousand readers came in with no trace in the history)."""
    import os
    import signal

    from digestd.readers import importing

    real = importing.import_csv

    def stopped_after_one_chunk(*args: Any, **kwargs: Any) -> ImportReport:
        commit = kwargs.pop("commit")

        def commit_then_stop() -> None:
            commit()
            os.kill(os.getpid(), signal.SIGTERM)

        return real(*args, **{**kwargs, "commit": commit_then_stop})

    monkeypatch.setattr(importing, "import_csv", stopped_after_one_chunk)
    path = tmp_path / "long.csv"
    rows = "".join(f"reader{n}@example.com,ai,daily,UTC\n" for n in range(2500))
    path.write_text("email,categories,frequency,timezone\n" + rows)
    before = signal.getsignal(signal.SIGTERM)
    assert run_cli(monkeypatch, env, "subscribers", "import", str(path)) == 130
    assert signal.getsignal(signal.SIGTERM) == before
    with sessions() as session:
        (kept,) = history.recent(session)
    assert kept.problem is not None and kept.problem.startswith("interrupted; ")
    assert history.PARTLY in kept.problem and kept.lines >= 1000

"""Commands start quickly because they import only what they use: the HTTP server, the
scheduler, the SMTP client, the email renderer and the metrics load for the commands that
need them, never for `--version`, `stats` and the like (SPEC §10: < 0.5 s; timed in
bench/startup_bench.py, not here)."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from digestd import cli
from digestd.collector import COLLECT_EVERY
from digestd.db import make_engine, make_sessions
from tests.helpers import ROOT
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

HEAVY = (
    "mjml",
    "aiosmtplib",
    "uvicorn",
    "starlette",
    "apscheduler",
    "prometheus_client",
    "jinja2",
    "alembic",
    "httpx",
    "feedparser",
    "rich",
    "dkim",
)


def _imported(env: dict[str, str], *args: str) -> set[str]:
    """Top-level packages ``digestd ARGS`` imported (python -X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "digestd", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        input=b"[]",
        capture_output=True,
        timeout=120,
    )
    expected = 1 if args == ("check",) else 0  # check: 1, it finds no relay configured
    assert result.returncode == expected, result.stderr[-2000:]
    names = re.findall(rb"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", result.stderr, re.M)
    return {name.decode().strip().split(".")[0] for name in names}


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["stats"],
        ["feeds", "list"],
        ["subscribers", "export"],
        ["articles", "add", "-"],
        ["check"],
        ["migrate"],  # already at the head: every deploy's first step
    ],
    ids=" ".join,
)
def test_quick_commands_import_none_of_the_heavy_parts(
    env: dict[str, str], args: list[str]
) -> None:
    imported = _imported(env, *args)
    assert "digestd" in imported
    assert imported & set(HEAVY) == set()


# What a tick needs whatever it finds: the SMTP client and the metrics it keeps.
TICK_ALWAYS = {"aiosmtplib", "prometheus_client"}


def test_an_idle_tick_loads_no_renderer_feed_reader_or_signer(env: dict[str, str]) -> None:
    """Cron runs `digestd tick` each minute, nearly always with nothing to send: Jinja2,
    MJML, httpx and feedparser load only when a digest is rendered or a feed
    polled (timed in bench/startup_bench.py)."""
    _imported(env, "tick")  # the first publishes today's (empty) archive shelves and says so
    imported = _imported(env, "tick")
    assert imported & set(HEAVY) == TICK_ALWAYS


def test_a_tick_with_a_reader_due_loads_the_renderer(env: dict[str, str]) -> None:
    """The check above can see a heavy import when there is one."""
    now = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine).begin() as session:
        add_articles(session, hourly_articles(now - timedelta(hours=20), now))
        add_readers(session, [Reader("due@example.com")], now - timedelta(days=1))
    engine.dispose()
    imported = _imported(env, "tick", "--now", now.isoformat())
    assert {"mjml", "jinja2"} <= imported


def _observing_command(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], seen: dict[str, object]
) -> None:
    """`digestd stats` whose command only records the collector's state as it runs."""

    def command(settings: object, args: object) -> int:
        seen["enabled"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count()
        seen["threshold"] = gc.get_threshold()
        return 0

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["digestd", "stats"])
    monkeypatch.setattr(cli, "_load", lambda target: command)


def test_the_program_collects_garbage_while_its_command_runs(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """The collector is off for start-up only: a daemon's command runs with it on, less
    often than Python's default, and what start-up made is frozen out of its collections."""
    seen: dict[str, object] = {}
    _observing_command(monkeypatch, env, seen)
    threshold = gc.get_threshold()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.entry()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        gc.enable()
    assert exited.value.code == 0
    assert seen["enabled"] is True
    assert seen["threshold"] == COLLECT_EVERY != threshold
    frozen = seen["frozen"]
    assert isinstance(frozen, int) and frozen > 1000  # what start-up loaded: modules, classes


def test_main_called_in_another_program_leaves_its_collector_alone(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """A test or an embedding program calling main() keeps its collector as it was."""
    seen: dict[str, object] = {}
    _observing_command(monkeypatch, env, seen)
    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    assert cli.main() == 0
    assert seen == {"enabled": True, "frozen": frozen, "threshold": threshold}
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen

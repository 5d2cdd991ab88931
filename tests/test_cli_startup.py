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

import pytest

from digestd import cli
from tests.helpers import ROOT

HEAVY = (
    "premailer",
    "mjml",
    "cssutils",
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
    ],
    ids=" ".join,
)
def test_quick_commands_import_none_of_the_heavy_parts(
    env: dict[str, str], args: list[str]
) -> None:
    imported = _imported(env, *args)
    assert "digestd" in imported
    assert imported & set(HEAVY) == set()


def test_tick_does_load_what_it_sends_with(env: dict[str, str]) -> None:
    """The check above can see a heavy import when there is one."""
    assert {"aiosmtplib", "premailer"} <= _imported(env, "tick")


def _observing_command(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], seen: dict[str, int]
) -> None:
    """`digestd stats` whose command only records the collector's state as it runs."""

    def command(settings: object, args: object) -> int:
        seen["enabled"] = gc.isenabled()
        seen["frozen"] = gc.get_freeze_count()
        return 0

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["digestd", "stats"])
    monkeypatch.setattr(cli, "_load", lambda target: command)


def test_the_program_collects_garbage_while_its_command_runs(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """The collector is off for start-up only: a daemon's command runs with it on, and
    what start-up made is frozen out of its collections."""
    seen: dict[str, int] = {}
    _observing_command(monkeypatch, env, seen)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.entry()
    finally:
        gc.unfreeze()
        gc.enable()
    assert exited.value.code == 0
    assert seen["enabled"] == 1
    assert seen["frozen"] > 1000  # the modules, classes and functions start-up loaded


def test_main_called_in_another_program_leaves_its_collector_alone(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """A test or an embedding program calling main() keeps its collector as it was."""
    seen: dict[str, int] = {}
    _observing_command(monkeypatch, env, seen)
    frozen = gc.get_freeze_count()
    assert cli.main() == 0
    assert seen == {"enabled": 1, "frozen": frozen}
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen

"""The event loop of ``run`` and ``tick``: uvloop unless DIGESTD_EVENT_LOOP says asyncio."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop

from digestd.errors import ConfigError
from digestd.eventloop import run

ROOT = Path(__file__).resolve().parent.parent


async def _loop_kind() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGESTD_EVENT_LOOP", raising=False)
    assert run(_loop_kind()) is uvloop.Loop


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGESTD_EVENT_LOOP", " Asyncio ")
    assert not issubclass(run(_loop_kind()), uvloop.Loop)


def test_anything_else_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGESTD_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError) as refused:
        run(_loop_kind())
    assert refused.value.variable == "DIGESTD_EVENT_LOOP"


def test_tick_refuses_an_unknown_loop_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "digestd", "migrate"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "digestd", "tick"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "DIGESTD_EVENT_LOOP": "trio"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "digestd: configuration error: DIGESTD_EVENT_LOOP: 'trio' is not uvloop or asyncio"
    ]

"""Logs an operator can paste into a ticket: no secrets, no link tokens, no full addresses."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from digestd import logs
from tests.helpers import run_cli

TOKEN = "ImFiY2RlZmdoaWprbG1ub3AxMjMi.aXs2hQ.5mLq0oZ1Hn2b3c4d5e6f7g8h9i0"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _emit(fmt: str, stream: io.StringIO, level: int, message: str, *args: object) -> str:
    import sys

    real, sys.stderr = sys.stderr, stream
    try:
        logs.configure(fmt, logging.DEBUG)
        logging.getLogger("digestd.test").log(level, message, *args)
    finally:
        sys.stderr = real
    return stream.getvalue()


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_addresses_tokens_and_passwords_never_reach_info_logs(
    fmt: str, captured: io.StringIO
) -> None:
    out = _emit(
        fmt,
        captured,
        logging.INFO,
        "sent to %s via %s, link %s",
        "jane.doe@example.com",
        "smtp://user:hunter2@mail.example.com:587",
        f"https://digest.example.com/unsubscribe/{TOKEN}",
    )
    assert "jane.doe@example.com" not in out and "j***@example.com" in out
    assert "hunter2" not in out and "smtp://user:***@mail.example.com" in out
    assert TOKEN not in out and "/unsubscribe/***" in out


def test_debug_may_name_an_address_but_never_a_token(captured: io.StringIO) -> None:
    out = _emit(
        "text", captured, logging.DEBUG, "checking %s /preferences/%s", "jane@example.com", TOKEN
    )
    assert "jane@example.com" in out and TOKEN not in out


def test_json_lines_parse_and_logfmt_quotes_spaces(captured: io.StringIO) -> None:
    line = _emit("json", captured, logging.WARNING, "feed %s failed", "x").strip()
    record = json.loads(line)
    assert record["level"] == "warning" and record["msg"] == "feed x failed"
    assert record["logger"] == "digestd.test" and record["time"].endswith("+00:00")
    other = io.StringIO()
    text = _emit("logfmt", other, logging.INFO, "tick done").strip()
    assert 'msg="tick done"' in text and "level=info" in text


def test_a_bad_log_format_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, {**env, "DIGESTD_LOG_FORMAT": "xml"}, "stats") == 2
    assert "DIGESTD_LOG_FORMAT" in capsys.readouterr().err

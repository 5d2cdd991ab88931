"""The command line as an operator uses it: preview, tick, stats, run with the demo, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import SAMPLE_ARTICLE, article, parse, parts, run_cli

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


@pytest.fixture
def with_articles(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path) -> None:
    items = [dict(SAMPLE_ARTICLE, published_at="2026-11-30T05:00:00Z")] + [
        article(f"r-{i}", "robotics", NOW - timedelta(hours=i + 1), score=i) for i in range(3)
    ]
    (tmp_path / "a.json").write_text(json.dumps(items))
    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "a.json")) == 0


@pytest.mark.usefixtures("with_articles")
@pytest.mark.parametrize("fmt", ["html", "text", "eml"])
def test_preview_writes_the_edition_without_sending(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"preview.{fmt}"
    assert (
        run_cli(
            monkeypatch,
            env,
            "preview",
            "daily",
            "--categories",
            "ai,robotics",
            "--now",
            NOW.isoformat(),
            "--format",
            fmt,
            "-o",
            str(out),
        )
        == 0
    )
    data = out.read_bytes()
    if fmt == "eml":
        text, html = parts(parse(data))
    else:
        text = html = data.decode()
    assert "Meta's Internal Memo" in text.replace("&#39;", "'").replace("&#x27;", "'")
    assert "Story r-0" in html
    assert not (Path(env["DIGESTD_DATA_DIR"]) / "mail").exists()  # nothing sent


@pytest.mark.usefixtures("with_articles")
def test_preview_weekly_groups_by_category(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "weekly.txt"
    assert (
        run_cli(
            monkeypatch,
            env,
            "preview",
            "weekly",
            "--categories",
            "ai,robotics",
            "--now",
            NOW.isoformat(),
            "--format",
            "text",
            "-o",
            str(out),
        )
        == 0
    )
    text = out.read_text()
    assert "TOP STORY OF THE WEEK" in text and "== ROBOTICS ==" in text


@pytest.mark.usefixtures("with_articles")
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--categories", "gardening"], 2, "--categories: unknown category 'gardening'"),
        (["--categories", "ai", "--now", "2026-11-30T07:00:00"], 2, "--now: needs a timezone"),
        (["--categories", "ai", "--now", "tomorrow"], 2, "--now: not an ISO 8601"),
        (["--categories", "quantum"], 1, "nothing to send"),
    ],
)
def test_preview_bad_arguments(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    if "--now" not in args:
        args = [*args, "--now", NOW.isoformat()]
    assert run_cli(monkeypatch, env, "preview", "daily", *args) == code
    assert message in capsys.readouterr().err


def test_unknown_command_is_exit_2(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli(monkeypatch, env, "frobnicate")
    assert caught.value.code == 2


def test_stats_counts_the_queue(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    with_articles: None,
) -> None:
    (tmp_path / "r.csv").write_text(
        "email,categories,frequency,timezone\n"
        "a@example.com,ai,daily,UTC\nb@example.com,quantum,daily,UTC\n"
    )
    import time_machine

    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "r.csv"))
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "tick", "--now", NOW.isoformat()) == 0
    summary = capsys.readouterr().out
    assert "queued 1 (daily 1, weekly 0), skipped 1 empty + 0 late, sent 1" in summary
    assert run_cli(monkeypatch, env, "stats") == 0
    out = capsys.readouterr().out
    assert "subscribers: active 2" in out
    assert "queue: queued 0, sending 0" in out
    assert "last edition: daily 2026-11-30: sent 1, skipped 1" in out


def test_run_with_demo_catches_a_real_digest_and_stops_cleanly_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The Quick start's first command: a newcomer sees a digest in var/mail/ right away."""
    mail = Path(env["DIGESTD_DATA_DIR"]) / "mail"
    process = subprocess.Popen(
        [sys.executable, "-m", "digestd", "run", "--demo"],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(mail.glob("*.eml")) and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.2)  # waiting on another process, not on the clock under test
        caught = list(mail.glob("*.eml"))
        assert caught, "no digest caught within 60 s"
        message = parse(caught[0].read_bytes())
        assert message["To"] == "reader@example.com"
        text, _ = parts(message)
        assert "Daily digest" in text
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "stopped" in output and "Traceback" not in output


def _run(command: list[str], env: dict[str, str], terminal: bool) -> bytes:
    """stderr of ``command``, run with stderr on a pseudo-terminal or on a pipe."""
    import pty

    full_env = {**os.environ, **env}
    if not terminal:
        result = subprocess.run(command, env=full_env, capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stderr
    master, slave = pty.openpty()
    process = subprocess.Popen(
        command, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    assert process.wait(timeout=120) == 0, out
    return out


@pytest.mark.slow  # three digestd processes over 2 500 readers: ~5 s
def test_import_and_export_show_progress_on_a_terminal_and_stay_quiet_in_a_pipe(
    env: dict[str, str], tmp_path: Path
) -> None:
    csv_file = tmp_path / "many.csv"
    csv_file.write_text(
        "email,categories,frequency,timezone\n"
        + "".join(f"u{i}@example.com,ai,daily,UTC\n" for i in range(2500))
    )
    digestd = [sys.executable, "-m", "digestd"]
    shown = _run([*digestd, "subscribers", "import", str(csv_file)], env, terminal=True)
    assert b"Importing many.csv" in shown and b"2500/2500" in shown
    shown = _run([*digestd, "subscribers", "export"], env, terminal=True)
    assert b"Exporting subscribers" in shown and b"2500/2500" in shown
    quiet = _run([*digestd, "subscribers", "export"], env, terminal=False)
    assert quiet == b""


def test_tick_reports_progress_per_batch(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path, with_articles: None
) -> None:
    import asyncio

    import time_machine

    from digestd.config import load_settings
    from digestd.service import Service

    (tmp_path / "r.csv").write_text(
        "email,categories,frequency,timezone\n"
        + "".join(f"r{i}@example.com,ai,daily,UTC\n" for i in range(7))
    )
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "r.csv")) == 0
    service = Service.build(load_settings(env))
    batches: list[int] = []
    report = asyncio.run(service.tick(NOW, on_batch=batches.append))
    asyncio.run(service.close())
    assert report.delivered.sent == 7 and sum(batches) == 7

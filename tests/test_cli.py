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

from tests.faultsmtp import FaultySink, running
from tests.helpers import (
    ROOT,
    SAMPLE_ARTICLE,
    article,
    one_line_error,
    parse,
    parts,
    run_cli,
    run_digestd,
)

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


def test_config_and_verbose_may_follow_the_command(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`digestd stats --config FILE` reads FILE as `digestd --config FILE stats` does."""
    config = tmp_path / "digestd.toml"
    config.write_text(f"database_url = {env['DIGESTD_DATABASE_URL']!r}\n")
    without = {k: v for k, v in env.items() if k != "DIGESTD_DATABASE_URL"}
    monkeypatch.delenv("DIGESTD_DATABASE_URL", raising=False)
    assert run_cli(monkeypatch, without, "--config", str(config), "stats") == 0
    before = capsys.readouterr().out
    assert run_cli(monkeypatch, without, "stats", "--config", str(config), "-v") == 0
    assert capsys.readouterr().out == before and before.startswith("subscribers:")
    config.write_text("colour = 3\n")  # read from after the command too, so refused
    assert run_cli(monkeypatch, without, "stats", "--config", str(config)) == 2


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
    """The Quick start's first command: a newcomer sees a digest in var/mail/ right away.
    A misspelt variable (here the relay's: every email would stay in the catcher) is named
    in a warning with the setting it is most like."""
    mail = Path(env["DIGESTD_DATA_DIR"]) / "mail"
    process = subprocess.Popen(
        [sys.executable, "-m", "digestd", "run", "--demo"],
        env={**os.environ, **env, "DIGESTD_SMTP_ULR": "smtp://relay.example.com:587"},
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
        # A reader of both gets the recap alone on Sunday (the demo's zone is UTC).
        sunday = datetime.now(UTC).weekday() == 6
        assert ("Weekly recap" if sunday else "Daily digest") in text
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "stopped" in output and "Traceback" not in output
    warned = [line for line in output.splitlines() if "DIGESTD_SMTP_ULR" in line]
    assert len(warned) == 1 and "warning" in warned[0] and "DIGESTD_SMTP_URL" in warned[0]


def _run(
    command: list[str], env: dict[str, str], terminal: bool, stdout: Path | None = None
) -> bytes:
    """stderr of ``command``, run with stderr on a pseudo-terminal or on a pipe (and its
    stdout into ``stdout``, or nowhere)."""
    import pty

    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with open(stdout or os.devnull, "wb") as out_file:
        if not terminal:
            result = subprocess.run(
                command, env=full_env, stdout=out_file, stderr=subprocess.PIPE, timeout=120
            )
            assert result.returncode == 0, result.stderr
            return result.stderr
        master, slave = pty.openpty()
        process = subprocess.Popen(
            command, env=full_env, stdin=subprocess.DEVNULL, stdout=out_file, stderr=slave
        )
        os.close(slave)
        err = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            err += data
        os.close(master)
        assert process.wait(timeout=120) == 0, err
    return err


DIGESTD = [sys.executable, "-m", "digestd"]


def _readers_csv(path: Path, count: int, prefix: str = "u") -> Path:
    path.write_text(
        "email,categories,frequency,timezone\n"
        + "".join(f"{prefix}{i}@example.com,ai,daily,UTC\n" for i in range(count))
    )
    return path


def test_export_to_a_file_on_a_terminal_writes_every_row_and_the_bar_to_stderr(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`digestd subscribers export > out.csv` typed at a terminal: stdout is the file,
    stderr the terminal. Every row lands in the file; the bar, and only it, on the terminal."""
    readers = _readers_csv(tmp_path / "r.csv", 1500)
    _run([*DIGESTD, "subscribers", "import", str(readers)], env, terminal=False)
    out = tmp_path / "out.csv"
    shown = _run([*DIGESTD, "subscribers", "export"], env, terminal=True, stdout=out)
    rows = out.read_text().splitlines()
    assert rows[0].startswith("email,categories,frequency,timezone,status")
    assert sorted(row.split(",")[0] for row in rows[1:]) == sorted(
        f"u{i}@example.com" for i in range(1500)
    )
    assert b"Exporting subscribers" in shown and b"1500/1500" in shown
    assert b"@example.com" not in shown  # no CSV on the terminal
    quiet = _run([*DIGESTD, "subscribers", "export"], env, terminal=False, stdout=out)
    assert quiet == b"" and len(out.read_text().splitlines()) == 1501


def test_export_into_a_pipe_closed_early_stops_quietly(env: dict[str, str], tmp_path: Path) -> None:
    """`digestd subscribers export | head -1`: more rows than the pipe holds, and the
    reader gone after the first. No traceback, nothing on stderr."""
    readers = _readers_csv(tmp_path / "r.csv", 3000)  # ~100 KB, more than a pipe's 64 KB
    _run([*DIGESTD, "subscribers", "import", str(readers)], env, terminal=False)
    export = subprocess.Popen(
        [*DIGESTD, "subscribers", "export"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    assert export.stdout.readline().startswith(b"email,")
    export.stdout.close()
    assert export.wait(timeout=60) == 1
    assert export.stderr.read() == b""


@pytest.mark.parametrize(
    "args", [["subscribers", "import", "LIST"], ["stats"], ["subscribers", "export"]]
)
def test_a_closed_standard_output_is_refused_before_anything_is_done(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """``digestd ... >&-``: the import was stored, then a traceback writing its summary."""
    readers = _readers_csv(tmp_path / "r.csv", 3)
    argv = [str(readers) if a == "LIST" else a for a in args]
    closed = subprocess.run(
        [*DIGESTD, *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),  # the child's own standard output, closed
        timeout=60,
    )
    assert closed.returncode == 1
    assert closed.stderr == b"digestd: standard output is closed: nothing was done\n"
    exported = run_digestd(env, "subscribers", "export")
    assert exported.stdout.decode().splitlines()[1:] == []  # nobody imported


def test_an_interrupted_export_says_so(env: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C while the rows go out: the file has what was written, and the operator is
    told it is not the whole (before, nothing was said)."""
    readers = _readers_csv(tmp_path / "r.csv", 3000)
    _run([*DIGESTD, "subscribers", "import", str(readers)], env, terminal=False)
    export = subprocess.Popen(
        [*DIGESTD, "subscribers", "export"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    assert export.stdout.readline().startswith(b"email,")  # under way, and now blocked
    export.send_signal(signal.SIGINT)  # on a full pipe: nobody reads the rest
    assert export.wait(timeout=60) == 130
    assert export.stderr.read().decode().strip() == "digestd: interrupted"
    export.stdout.close()


@pytest.mark.parametrize("args", [["stats"], ["subscribers", "export"]], ids=" ".join)
def test_output_to_a_full_disk_is_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    migrated = run_digestd(env, "migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    with open("/dev/full", "wb") as full:  # every write: ENOSPC
        result = subprocess.run(
            [*DIGESTD, *args],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert "Traceback" not in result.stderr.decode()
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "digestd: No space left on device"


def test_a_tick_ahead_of_the_clock_is_refused_and_moves_nobody(
    env: dict[str, str], tmp_path: Path
) -> None:
    """One `tick --now 2199-…` stored every reader's next digest in 2200: no mail for
    anyone until then. An hour ahead is a clock's skew, and is taken."""
    from sqlalchemy import create_engine, text

    readers = _readers_csv(tmp_path / "r.csv", 3)
    _run([*DIGESTD, "subscribers", "import", str(readers)], env, terminal=False)
    engine = create_engine(env["DIGESTD_DATABASE_URL"])
    state = "SELECT email, next_daily_at, (SELECT count(*) FROM editions) FROM subscribers"
    try:
        with engine.connect() as connection:
            before = connection.execute(text(state)).all()
        line = one_line_error(run_digestd(env, "tick", "--now", "2199-12-31T23:59:59+02:00"))
        assert line.startswith("digestd: --now: 2199-12-31T21:59Z is ahead of the clock (")
        with engine.connect() as connection:
            assert connection.execute(text(state)).all() == before
        skewed = datetime.now(UTC) + timedelta(minutes=50)
        assert run_digestd(env, "tick", "--now", skewed.isoformat()).returncode == 0
    finally:
        engine.dispose()


def _tick_under_way(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    readers: int,
    sink: FaultySink,
    taken: int,
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``readers`` due at NOW, and ``digestd tick`` sending them one at a time to
    ``sink`` (running) until it has taken ``taken``; the tick and its environment."""
    import time_machine

    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        csv_file = _readers_csv(tmp_path / "r.csv", readers, prefix="t")
        assert run_cli(monkeypatch, env, "subscribers", "import", str(csv_file)) == 0
    smtp = {**env, "DIGESTD_SMTP_URL": sink.url, "DIGESTD_SMTP_POOL_SIZE": "1"}
    tick = subprocess.Popen(
        [*DIGESTD, "tick", "--now", NOW.isoformat()],
        env={**os.environ, "PYTHONPATH": str(ROOT), **smtp},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while sum(sink.delivered.values()) < taken:
        assert time.monotonic() < deadline and tick.poll() is None, "no mail went out"
        time.sleep(0.02)
    return tick, smtp


@pytest.mark.usefixtures("with_articles")
def test_a_tick_told_to_stop_records_what_left_and_keeps_the_rest_queued(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM (systemd, a timeout) in the middle of an edition: the messages the relay
    took are recorded sent, the rest stay queued, and the next tick sends each once.
    Killed at once before, the next tick sent the taken ones again."""
    from sqlalchemy import create_engine, text

    sink = FaultySink(data_delay=0.2)
    with running(sink):
        tick, smtp = _tick_under_way(monkeypatch, env, tmp_path, 12, sink, taken=2)
        tick.send_signal(signal.SIGTERM)
        _, err = tick.communicate(timeout=60)
        assert tick.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM; the rest stays queued" in err.decode()
        engine = create_engine(env["DIGESTD_DATABASE_URL"])
        count = "SELECT status, count(*) FROM deliveries GROUP BY status"
        with engine.connect() as connection:
            statuses = {str(status): int(n) for status, n in connection.execute(text(count))}
        taken = sum(sink.delivered.values())
        assert statuses == {"sent": taken, "queued": 12 - taken}, statuses
        later = NOW + timedelta(minutes=5)  # the next tick
        again = run_digestd(smtp, "tick", "--now", later.isoformat())
        assert again.returncode == 0, again.stderr
        engine.dispose()
    assert sorted(sink.delivered.values()) == [1] * 12  # each reader once


@pytest.mark.usefixtures("with_articles")
def test_a_tick_killed_behind_a_slow_relay_repeats_only_what_was_on_the_wire(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    """kill -9 while a content filter takes 0.6 s a message: each message the relay
    took is recorded within a fraction of a second, so the next tick repeats at most the
    one on the wire (and one just taken), not the whole unwritten chunk."""
    sink = FaultySink(data_delay=0.6)
    with running(sink):
        tick, smtp = _tick_under_way(monkeypatch, env, tmp_path, 8, sink, taken=5)
        tick.kill()
        tick.communicate(timeout=30)
        # The lease of a killed tick's claims ends at once for the next one on this host.
        later = NOW + timedelta(minutes=5)
        again = run_digestd(smtp, "tick", "--now", later.isoformat())
        assert again.returncode == 0, again.stderr
    copies = sorted(sink.delivered.values())
    assert len(copies) == 8 and sum(copies) - 8 <= 2, sink.delivered


@pytest.mark.slow  # two digestd processes over 2 500 readers: ~5 s
def test_import_shows_progress_on_a_terminal_and_stays_quiet_in_a_pipe(
    env: dict[str, str], tmp_path: Path
) -> None:
    csv_file = _readers_csv(tmp_path / "many.csv", 2500)
    shown = _run([*DIGESTD, "subscribers", "import", str(csv_file)], env, terminal=True)
    assert b"Importing many.csv" in shown and b"2500/2500" in shown
    (tmp_path / "again.csv").write_text(csv_file.read_text())
    assert _run([*DIGESTD, "subscribers", "import", str(tmp_path / "again.csv")], env, False) == b""


@pytest.mark.usefixtures("with_articles")
def test_the_ticks_bar_has_a_total_once_the_queue_is_known(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    import time_machine

    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        readers = _readers_csv(tmp_path / "r.csv", 7, prefix="r")
        assert run_cli(monkeypatch, env, "subscribers", "import", str(readers)) == 0
    for day in (0, 1):  # planning first, then beside the sender in a helper process
        now = NOW + timedelta(days=day)
        news = tmp_path / f"day{day}.json"
        news.write_text(json.dumps([article(f"d{day}", "ai", now - timedelta(hours=1))]))
        assert run_cli(monkeypatch, env, "articles", "add", str(news)) == 0
        shown = _run(
            [*DIGESTD, "tick", "--now", now.isoformat()],
            {**env, "DIGESTD_HELPER_PROCESSES": str(day)},
            terminal=True,
        )
        assert b"Sending" in shown and b"7/7" in shown, shown
        assert b"/?" not in shown.split(b"7/7")[-1]  # the last frames have the total


@pytest.mark.parametrize("helpers", ["0", "1"])
def test_tick_reports_the_queue_once_planned_then_progress_per_batch(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
    with_articles: None,
    helpers: str,
) -> None:
    """What the tick's bar hears: the messages to settle, once planning is over (from the
    helper process too), then each batch settled."""
    import asyncio

    import time_machine

    from digestd.config import load_settings
    from digestd.service import Service

    readers = _readers_csv(tmp_path / "r.csv", 7, prefix="r")
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(readers)) == 0
    settings = load_settings({**env, "DIGESTD_HELPER_PROCESSES": helpers})
    service = Service.build(settings)
    heard: list[tuple[str, int]] = []
    report = asyncio.run(
        service.tick(
            NOW,
            on_batch=lambda n: heard.append(("settled", n)),
            on_planned=lambda n: heard.append(("to settle", n)),
        )
    )
    asyncio.run(service.close())
    assert report.delivered.sent == 7
    planned = [n for what, n in heard if what == "to settle"]
    settled_before = sum(n for what, n in heard[: heard.index(("to settle", planned[0]))])
    assert len(planned) == 1 and settled_before + planned[0] == 7  # counted once, all of it
    assert sum(n for what, n in heard if what == "settled") == 7


def test_unsubscribe_stops_mail_keeps_the_record_and_is_idempotent(
    env: dict[str, str], tmp_path: Path
) -> None:
    from sqlalchemy import select

    from digestd.db import make_engine, make_sessions
    from digestd.models import Subscriber

    readers = _readers_csv(tmp_path / "r.csv", 2)
    _run([*DIGESTD, "subscribers", "import", str(readers)], env, terminal=False)
    first = run_digestd(env, "subscribers", "unsubscribe", " U0@Example.com ")
    assert first.returncode == 0, first.stderr
    assert first.stdout == b"unsubscribed u0@example.com: no more digests; the record is kept\n"
    again = run_digestd(env, "subscribers", "unsubscribe", "u0@example.com")
    assert again.returncode == 0
    assert again.stdout == b"u0@example.com is already unsubscribed: no digests go to them\n"
    assert "email: " in one_line_error(run_digestd(env, "subscribers", "unsubscribe", "nobody"))
    unknown = run_digestd(env, "subscribers", "unsubscribe", "stranger@example.com")
    assert one_line_error(unknown, 1) == "digestd: no subscriber stranger@example.com"
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    with make_sessions(engine)() as session:
        found = {s.email: s for s in session.scalars(select(Subscriber))}
    engine.dispose()
    assert found["u0@example.com"].status == "unsubscribed"
    assert found["u0@example.com"].next_daily_at is None
    assert found["u0@example.com"].category_slugs == ["ai"]  # the record is kept
    assert found["u1@example.com"].status == "active"  # nobody else touched

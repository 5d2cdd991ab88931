"""Logs an operator can graph and paste into a ticket: events with fields in logfmt and JSON,
a human text format, no secrets, no link tokens, no full addresses; a quiet daemon's ticks
only at DEBUG."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from digestd import logs
from digestd.daemon import Daemon
from digestd.models import Feed
from digestd.readers import ledger
from digestd.readers.bounce_policy import Kind
from tests.conftest import WebRig
from tests.helpers import ROOT, free_port, run_cli
from tests.log_lines import events, logfmt
from tests.seeding import Reader, add_articles, add_readers, hourly_articles
from tests.web_helpers import links_in, signup_form

TOKEN = "ImFiY2RlZmdoaWprbG1ub3AxMjMi.aXs2hQ.5mLq0oZ1Hn2b3c4d5e6f7g8h9i0"
SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
STRUCTURED = ["logfmt", "json"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _emit(
    fmt: str, stream: io.StringIO, level: int, message: str, *args: object, **extra: object
) -> str:
    real, sys.stderr = sys.stderr, stream
    try:
        logs.configure(fmt, logging.DEBUG)
        logging.getLogger("digestd.test").log(level, message, *args, extra=extra)
    finally:
        sys.stderr = real
    return stream.getvalue()


@pytest.fixture
def stderr_log(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str, int], None]]:
    """Set up the real logging in a format and level; the lines land in ``capsys``."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield logs.configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize("fmt", ["text", *STRUCTURED])
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
        email="john.roe@example.com",
        relay="smtp://user:hunter3@mail.example.com",
        feed="https://ghp_SECRETTOKEN0123456789@feeds.example.com/atom.xml",
    )
    assert "jane.doe@example.com" not in out and "j***@example.com" in out
    assert "john.roe@example.com" not in out and "j***@example.com" in out.split("email")[1]
    assert "hunter2" not in out and "smtp://user:***@mail.example.com" in out
    assert "hunter3" not in out
    assert "SECRETTOKEN" not in out and "https://***@feeds.example.com/atom.xml" in out
    assert TOKEN not in out and "/unsubscribe/***" in out


@pytest.mark.parametrize("fmt", ["text", *STRUCTURED])
def test_a_traceback_is_redacted_too(fmt: str, captured: io.StringIO) -> None:
    real, sys.stderr = sys.stderr, captured
    try:
        logs.configure(fmt, logging.INFO)
        try:
            raise ConnectionError("smtp://user:hunter2@mail.example.com refused ann@example.com")
        except ConnectionError:
            logging.getLogger("digestd.test").exception("tick failed")
    finally:
        sys.stderr = real
    out = captured.getvalue()
    assert "ConnectionError" in out and "Traceback" in out
    assert "hunter2" not in out and "ann@example.com" not in out and "a***@example.com" in out


def test_debug_may_name_an_address_but_never_a_token(captured: io.StringIO) -> None:
    out = _emit(
        "text", captured, logging.DEBUG, "checking %s /preferences/%s", "jane@example.com", TOKEN
    )
    assert "jane@example.com" in out and TOKEN not in out


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("ann@bücher.example", "a***@bücher.example"),  # kept in Unicode by signup
        ("sean.o'brien@example.com", "s***@example.com"),
        ("a/b{c}|d~e@example.org", "a***@example.org"),
        ("josé.garcía@correo.example", "j***@correo.example"),
        ("ann+newsletter-digest-2026@example.com", "a***@example.com"),
        # Not a signup's, but an LMTP sender's: an address literal.
        ("dave@[127.0.0.1]", "d***@[127.0.0.1]"),
        ("dave.smith@[IPv6:2001:db8::1]", "d***@[IPv6:2001:db8::1]"),
    ],
)
def test_every_address_signup_accepts_is_masked(
    address: str, masked: str, captured: io.StringIO
) -> None:
    out = _emit("logfmt", captured, logging.INFO, "signup", email=address)
    assert address not in out and address.split("@")[0][1:] not in out
    assert masked in out


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
def test_a_signed_mailbox_tag_or_link_never_reaches_a_log(
    level: int, captured: io.StringIO
) -> None:
    """The one-click ``mailto:`` tag unsubscribes whoever sends to it; mute, engage and
    click links act too."""
    tag = "7u2iTPq3rENdlJA8PpDXxQ.Vrjt90LJudJTbbVT"
    out = _emit(
        "logfmt",
        captured,
        level,
        "RCPT TO:<unsubscribe+%s@news.example.com> then /mute/%s /engage/%s /c/12.3.%s",
        tag,
        TOKEN,
        TOKEN,
        tag,
    )
    assert tag not in out and TOKEN not in out
    assert "/mute/***" in out and "/engage/***" in out and "/c/***" in out


def test_the_inbound_listeners_session_dump_stays_out_of_a_verbose_log(
    captured: io.StringIO,
) -> None:
    listener = logging.getLogger("mail.log")
    quieted = listener.level  # the test suite's own set-up quiets it
    listener.setLevel(logging.NOTSET)
    real, sys.stderr = sys.stderr, captured
    try:
        logs.configure("text", logging.DEBUG)
        listener.debug("_handle_client readline: b'DATA'")
        logging.getLogger("digestd.test").debug("digestd's own debug line")
    finally:
        sys.stderr = real
        listener.setLevel(quieted)
    out = captured.getvalue()
    assert "_handle_client" not in out and "digestd's own debug line" in out


def test_the_inbound_listeners_sessions_stay_out_of_an_ordinary_log(
    captured: io.StringIO,
) -> None:
    """Each LMTP session's peer, sender and recipients (aiosmtpd's INFO lines): a line per
    bounce or unsubscribe comes from digestd itself."""
    listener = logging.getLogger("mail.log")
    quieted = listener.level
    listener.setLevel(logging.NOTSET)
    real, sys.stderr = sys.stderr, captured
    try:
        logs.configure("text", logging.INFO)
        listener.info("Peer: ('127.0.0.1', 40000)")
        listener.warning("('127.0.0.1', 40000) too many bogus commands")
    finally:
        sys.stderr = real
        listener.setLevel(quieted)
    out = captured.getvalue()
    assert "Peer:" not in out and "too many bogus commands" in out


def test_an_event_carries_its_fields_in_json_and_in_logfmt(captured: io.StringIO) -> None:
    fields = {"queued": 2, "sent": 5, "seconds": 0.25, "paused": False, "note": 'two "words"'}
    record = json.loads(_emit("json", captured, logging.INFO, "tick", **fields))
    assert {key: record[key] for key in fields} == fields  # numbers stay numbers
    assert record["event"] == "tick" and record["level"] == "info"
    assert record["logger"] == "digestd.test" and record["time"].endswith("Z")
    line = _emit("logfmt", io.StringIO(), logging.INFO, "tick", **fields).strip()
    assert line.split(" ")[1:4] == ["level=info", "logger=digestd.test", "event=tick"]
    parsed = logfmt(line)
    assert parsed["queued"] == "2" and parsed["seconds"] == "0.25" and parsed["paused"] == "false"
    assert parsed["note"] == 'two "words"'


def test_prose_lines_parse_too(captured: io.StringIO) -> None:
    record = json.loads(_emit("json", captured, logging.WARNING, "feed %s failed", "x"))
    assert record["level"] == "warning" and record["event"] == "feed x failed"
    line = _emit("logfmt", io.StringIO(), logging.INFO, "tick done = ok\nnext").strip()
    assert "\n" not in line and logfmt(line)["event"] == "tick done = ok\\nnext"


def test_text_stays_one_human_line_with_the_fields(captured: io.StringIO) -> None:
    out = _emit("text", captured, logging.INFO, "tick", sent=5, failed=0)
    assert out.count("\n") == 1
    assert "[info" in out and "tick" in out and "sent=5 failed=0" in out
    assert "[digestd.test]" in out


def test_a_command_that_logs_nothing_never_imports_structlog() -> None:
    """structlog (and the rich it brings) costs a quick command more than it may spend."""
    code = (
        "import logging, sys; from digestd import logs; logs.configure('json'); "
        "assert 'structlog' not in sys.modules; "
        "logging.getLogger('x').warning('now'); assert 'structlog' in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stderr)["event"] == "now"


def test_a_bad_log_format_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, {**env, "DIGESTD_LOG_FORMAT": "xml"}, "stats") == 2
    assert "DIGESTD_LOG_FORMAT" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", STRUCTURED)
def test_signup_confirm_and_unsubscribe_are_events_with_masked_addresses(
    fmt: str,
    web: WebRig,
    stderr_log: Callable[[str, int], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stderr_log(fmt, logging.INFO)
    signup_form(web, "ann.reader@example.com")
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    one_click = {"List-Unsubscribe": "One-Click"}
    assert web.client.post(links["unsubscribe"], data=one_click).status_code == 200
    log = capsys.readouterr().err
    reader = web.subscriber("ann.reader@example.com")
    assert reader is not None and reader.status == "unsubscribed"
    masked = "a***@example.com"
    (signup,) = events(log, "signup", fmt)
    assert (signup["email"], signup["outcome"], signup["level"]) == (masked, "confirm", "info")
    (confirmed,) = events(log, "confirm", fmt)
    assert (confirmed["outcome"], confirmed["email"]) == ("confirmed", masked)
    assert str(confirmed["subscriber"]) == str(reader.id)
    (unsubscribed,) = events(log, "unsubscribe", fmt)
    assert (unsubscribed["via"], unsubscribed["email"]) == ("link", masked)
    assert "ann.reader@example.com" not in log


def test_a_bounce_is_an_event_with_what_it_did(
    web: WebRig, stderr_log: Callable[[str, int], None], capsys: pytest.CaptureFixture[str]
) -> None:
    stderr_log("json", logging.INFO)
    with web.service.sessions.begin() as session:
        ids = add_readers(session, [Reader("gone@example.com")], SEND)
        event = ledger.Event(Kind.HARD, "dsn", "lmtp", "5.1.1", "550 <gone@example.com> no")
        ledger.record(
            session, event, delivery_id=None, subscriber_id=ids["gone@example.com"], now=SEND
        )
    (bounce,) = events(capsys.readouterr().err, "bounce", "json")
    assert bounce["level"] == "info" and bounce["subscriber"] == ids["gone@example.com"]
    assert (bounce["kind"], bounce["source"], bounce["channel"]) == ("hard", "dsn", "lmtp")
    assert bounce["status"] == "5.1.1" and bounce["suppressed"] is True
    assert "delivery" not in bounce  # not known: left out rather than null
    assert web.status("gone@example.com") == "bounced"


def test_idle_ticks_log_at_debug_only_and_busy_ones_at_info(
    web: WebRig, stderr_log: Callable[[str, int], None], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon(web.service, lambda: SEND + timedelta(minutes=1))
    stderr_log("logfmt", logging.INFO)
    web.portal.call(daemon.tick)
    assert events(capsys.readouterr().err, "tick") == []
    stderr_log("logfmt", logging.DEBUG)
    web.portal.call(daemon.tick)
    (idle,) = events(capsys.readouterr().err, "tick")
    assert idle["level"] == "debug" and idle["queued"] == idle["sent"] == "0"

    with web.service.sessions.begin() as session:
        add_articles(session, hourly_articles(SEND - timedelta(days=1), SEND))
        add_readers(
            session, [Reader(f"r{i}@example.com") for i in range(3)], SEND - timedelta(hours=2)
        )
    stderr_log("logfmt", logging.INFO)
    web.portal.call(daemon.tick)
    (busy,) = events(capsys.readouterr().err, "tick")
    assert busy["level"] == "info"
    assert (busy["queued"], busy["queued_daily"], busy["sent"], busy["failed"]) == (
        "3",
        "3",
        "3",
        "0",
    )
    assert float(busy["seconds"]) >= 0 and busy["rendered"] != "0"


def test_a_feed_poll_is_one_event_with_its_counts(
    web: WebRig, stderr_log: Callable[[str, int], None], capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/feed.xml"  # nothing listens: refused at once
    with web.service.sessions.begin() as session:
        session.add(Feed(url=dead, category="ai", next_poll_at=SEND, failures=0, created_at=SEND))
    stderr_log("json", logging.INFO)
    web.portal.call(Daemon(web.service, lambda: SEND).poll_feeds)
    (polled,) = events(capsys.readouterr().err, "feeds", "json")
    assert (polled["polled"], polled["failed"], polled["articles"]) == (1, 1, 0)


def test_an_event_is_logged_only_once_its_change_is_committed(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsubscribe the database refused (a read-only file, a lost connection) left a line
    saying it happened; the line now waits for the commit."""
    from sqlalchemy import select

    from digestd.db import make_engine, make_sessions
    from digestd.models import Subscriber
    from digestd.readers.lifecycle import unsubscribe

    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        add_readers(session, [Reader("ann@example.com"), Reader("bob@example.com")], SEND)
    caplog.set_level(logging.INFO, logger="digestd.readers.lifecycle")

    def unsubscribe_one(email: str) -> None:
        with sessions.begin() as session:
            reader = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
            assert unsubscribe(reader, SEND, via="operator")
            assert not [r for r in caplog.records if r.getMessage() == "unsubscribe"]
            if email.startswith("ann"):
                raise RuntimeError("the database went away")

    try:
        with pytest.raises(RuntimeError):
            unsubscribe_one("ann@example.com")
        assert [r for r in caplog.records if r.getMessage() == "unsubscribe"] == []
        unsubscribe_one("bob@example.com")
        (line,) = [r for r in caplog.records if r.getMessage() == "unsubscribe"]
        assert line.email == "bob@example.com"  # type: ignore[attr-defined]
    finally:
        engine.dispose()

"""``digestd send-test daily|weekly --to EMAIL [--categories a,b]`` as an operator runs it:
today's edition reaches one address through a real SMTP server (aiosmtpd), marked as a
test, and uses up nobody's edition: no edition, digest or queue row is written and every
reader's next send time stays as it was. Bad input: exit 2 and one line naming it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.articles import ingest
from digestd.db import make_engine, make_sessions
from digestd.models import Delivery, Digest, Edition, Subscriber
from tests.admin_seed import reader
from tests.conftest import SmtpSink
from tests.helpers import article, one_line_error, parse, parts, run_cli, run_digestd

NOW = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)  # a Tuesday, before the 07:00 daily
DUE = NOW.replace(hour=7, minute=0)


@pytest.fixture
def sessions(env: dict[str, str]) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(env["DIGESTD_DATABASE_URL"])
    try:
        yield make_sessions(engine)
    finally:
        engine.dispose()


@pytest.fixture
def mail_env(
    env: dict[str, str], smtp_server: SmtpSink, sessions: sessionmaker[Session]
) -> dict[str, str]:
    """Three articles and three readers due at 07:00, mail to the real SMTP server."""
    items = [
        article(f"ai-{i}", "ai", NOW - timedelta(hours=i + 1), source=f"S{i}") for i in range(2)
    ] + [article("robo-1", "robotics", NOW - timedelta(hours=2))]
    with sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors
        for i in range(3):
            person = reader(session, f"reader{i}@example.com", created_at=NOW - timedelta(days=2))
            person.next_daily_at = DUE
    return {**env, "DIGESTD_SMTP_URL": smtp_server.url}


def _untouched(sessions: sessionmaker[Session]) -> None:
    """No reader's edition used up: no rows written, every send time as it was."""
    with sessions() as session:
        for table in (Edition, Digest, Delivery):
            assert session.scalar(select(func.count()).select_from(table)) == 0
        assert set(session.scalars(select(Subscriber.next_daily_at))) == {DUE}


def test_send_test_mails_the_edition_marked_as_a_test_and_uses_up_nobodys(
    mail_env: dict[str, str], smtp_server: SmtpSink, sessions: sessionmaker[Session]
) -> None:
    args = ["send-test", "daily", "--to", "Editor@Example.org", "--categories", "ai"]
    result = run_digestd(mail_env, *args, "--now", NOW.isoformat())
    assert result.returncode == 0, result.stderr.decode()
    (line,) = result.stdout.decode().splitlines()
    assert line.startswith("sent a test of the daily of 2026-12-01 to editor@example.org: 2")
    assert "<test.daily.2026-12-01." in line and "Message accepted for delivery" in line
    (mail,) = smtp_server.wait_for(1)
    assert mail.recipients == ["editor@example.org"]
    message = parse(mail.data)
    assert str(message["Subject"]).startswith("[Test] ")
    text, _ = parts(message)
    assert "Story ai-0" in text and "Story robo-1" not in text
    _untouched(sessions)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--to", "not an address"], "digestd: --to: "),
        (["--to", "a@example.com", "--categories", "cooking"], "digestd: --categories: "),
        (["--to", "a@example.com", "--now", "yesterday"], "digestd: --now: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    mail_env: dict[str, str],
    smtp_server: SmtpSink,
    sessions: sessionmaker[Session],
    args: list[str],
    problem: str,
) -> None:
    result = run_digestd(mail_env, "send-test", "daily", *args)
    assert one_line_error(result).startswith(problem)
    assert smtp_server.messages == []
    _untouched(sessions)


def test_a_kind_that_is_not_an_edition_is_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    mail_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_cli(monkeypatch, mail_env, "send-test", "hourly", "--to", "a@example.com")
    assert stopped.value.code == 2
    assert "invalid choice: 'hourly'" in capsys.readouterr().err


def test_nothing_to_send_and_a_refusing_server_are_exit_1_and_one_line(
    monkeypatch: pytest.MonkeyPatch,
    mail_env: dict[str, str],
    smtp_server: SmtpSink,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = ["--now", NOW.isoformat()]
    args = ["send-test", "weekly", "--to", "a@example.com", "--categories", "quantum", *now]
    assert run_cli(monkeypatch, mail_env, *args) == 1
    assert capsys.readouterr().err.strip() == (
        "nothing to send: no articles in those categories in the edition's window"
    )
    smtp_server.reject["blocked@example.com"] = "550 5.1.1 No such user"
    args = ["send-test", "daily", "--to", "blocked@example.com", *now]
    assert run_cli(monkeypatch, mail_env, *args) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("digestd: the mail server refused the test message: ")
    assert "550" in line
    assert smtp_server.messages == []
    _untouched(sessions)


def test_an_erased_address_gets_no_test_send(
    mail_env: dict[str, str], smtp_server: SmtpSink, sessions: sessionmaker[Session]
) -> None:
    """Erased readers are never mailed again, tests included (one was sent before)."""
    assert run_digestd(mail_env, "subscribers", "delete", "reader1@example.com").returncode == 0
    result = run_digestd(mail_env, "send-test", "daily", "--to", "Reader1@Example.com")
    assert one_line_error(result) == (
        "digestd: --to: is on the suppression list (erased): never mailed"
    )
    assert smtp_server.messages == []

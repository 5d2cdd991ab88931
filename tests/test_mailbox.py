"""No subscription bombing: signup emails limited per canonical mailbox and in total, in the
database (so every process shares the count), through the real app and SMTP server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.db import make_engine, make_sessions
from digestd.models import MailThrottle, Subscriber
from digestd.readers.mailbox import Limit, canonical_mailbox, claim, mailbox_key
from digestd.service import Service
from digestd.web.app import create_app
from digestd.web.context import WebPolicy
from tests.conftest import SmtpSink, WebRig
from tests.web_helpers import SIGNUP

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("victim@gmail.com", "victim@gmail.com"),
        ("victim+17@gmail.com", "victim@gmail.com"),
        ("v.i.c.t.i.m@googlemail.com", "victim@gmail.com"),
        ("V.ictim+a+b@GoogleMail.com", "victim@gmail.com"),
        ("ann+news@example.com", "ann@example.com"),
        ("a.n.n@example.com", "a.n.n@example.com"),  # dots matter elsewhere
        ("anna@bücher.example", "anna@bücher.example"),
    ],
)
def test_the_canonical_mailbox_is_the_inbox_an_address_reaches(address: str, mailbox: str) -> None:
    assert canonical_mailbox(address) == mailbox


@contextmanager
def _app(web_env: dict[str, str], policy: WebPolicy | None = None) -> Iterator[TestClient]:
    """Another digestd process on the same database and SMTP server."""
    service = Service.build(load_settings(web_env))
    app = create_app(service, policy)
    with TestClient(app, base_url="https://digest.example.com") as client:
        yield client
        assert client.portal is not None
        client.portal.call(service.transport.close)
    service.engine.dispose()


def _signup(client: TestClient, email: str) -> Any:
    answer = client.post("/subscribe", json={"email": email, **SIGNUP})
    assert answer.status_code == 202
    return answer


def test_twenty_signups_of_one_gmail_inbox_send_three_emails(web: WebRig) -> None:
    spellings = (
        [f"victim+{n}@gmail.com" for n in range(10)]
        + [
            "v.i.c.t.i.m@googlemail.com",
            "vic.tim@gmail.com",
            "VICTIM@googlemail.com",
            "victim+x@googlemail.com",
        ]
        * 2
        + ["v.ictim+9@gmail.com", "victim@gmail.com"]
    )
    assert len(spellings) == 20
    answers = []
    with time_machine.travel(NOW, tick=False) as clock:
        for address in spellings:
            answers.append(_signup(web.client, address).text)
            clock.shift(timedelta(minutes=6))  # two hours in all
    assert len(set(answers)) == 1
    # one at 0, 12 and 24 minutes (10 minutes apart at least), then three a day is the cap
    assert len(web.smtp.messages) == 3
    assert {canonical_mailbox(m.recipients[0]) for m in web.smtp.messages} == {"victim@gmail.com"}
    # The held-back requests stored nothing: one pending row per email that left.
    assert web.count(Subscriber) == 3
    with time_machine.travel(NOW + timedelta(hours=24, minutes=1), tick=False):
        _signup(web.client, "victim+again@gmail.com")
    assert len(web.smtp.messages) == 4


def test_the_mailbox_limit_holds_across_processes(web: WebRig, web_env: dict[str, str]) -> None:
    with time_machine.travel(NOW, tick=False) as clock, _app(web_env) as other:
        _signup(web.client, "victim+1@example.com")
        _signup(other, "victim+2@example.com")
        _signup(web.client, "victim@example.com")
        assert len(web.smtp.messages) == 1
        clock.shift(timedelta(minutes=10))
        _signup(other, "victim+3@example.com")
    assert len(web.smtp.messages) == 2


def test_the_hourly_cap_holds_back_emails_counts_them_and_logs_once(
    web_env: dict[str, str], smtp_server: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    policy = WebPolicy(signup_emails_per_hour=5)
    with time_machine.travel(NOW, tick=False) as clock, _app(web_env, policy) as client:
        with caplog.at_level(logging.WARNING, logger="digestd.web"):
            answers = {_signup(client, f"reader{n}@example.com").text for n in range(8)}
        assert len(answers) == 1
        assert len(smtp_server.messages) == 5
        capped = [r for r in caplog.records if "signup emails held back" in r.getMessage()]
        assert len(capped) == 1
        metrics = client.app.state.web.service.metrics.exposition().decode()  # type: ignore[attr-defined]
        assert "digestd_signup_emails_capped_total 3.0" in metrics
        clock.shift(timedelta(hours=1))
        _signup(client, "reader9@example.com")
    assert len(smtp_server.messages) == 6


def test_an_email_that_could_not_be_sent_does_not_count(web: WebRig) -> None:
    web.smtp.reject["ann@example.com"] = "550 5.1.1 mailbox unavailable"
    with time_machine.travel(NOW, tick=False):
        _signup(web.client, "ann@example.com")
        assert web.smtp.messages == []
        del web.smtp.reject["ann@example.com"]
        _signup(web.client, "ann@example.com")  # at once: the failed one was given back
    assert len(web.smtp.messages) == 1
    with web.service.sessions() as session:
        rows = {row.key: row.sent for row in session.query(MailThrottle)}
    assert sorted(rows.values()) == [1, 1]  # the inbox and everyone: one email each


def test_racing_claims_for_one_inbox_let_exactly_one_email_through(database_url: str) -> None:
    """Eight processes' worth of signups at the same instant: one claim wins, on SQLite and
    on PostgreSQL (the guarded UPDATE, or the INSERT of the first row, decides)."""
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    limit = Limit(3, timedelta(hours=24), timedelta(minutes=10))
    start = threading.Barrier(8)

    def one(n: int) -> bool:
        start.wait()
        with sessions.begin() as session:
            return claim(session, mailbox_key(f"victim+{n}@gmail.com"), limit, NOW)

    try:
        with ThreadPoolExecutor(8) as pool:
            won = list(pool.map(one, range(8)))
        assert won.count(True) == 1
        with sessions() as session:
            (row,) = session.query(MailThrottle).all()
            assert (row.sent, row.last_sent_at) == (1, NOW)
    finally:
        engine.dispose()


def test_the_hourly_count_takes_claims_in_any_order(database_url: str) -> None:
    """Signups from several threads or processes reach the total count in any order: one
    stamped a second after another's instant leaves room for that one (no interval here)."""
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    everyone = Limit(500, timedelta(hours=1))
    try:
        for at in (NOW + timedelta(seconds=1), NOW, NOW + timedelta(seconds=2)):
            with sessions.begin() as session:
                assert claim(session, "*", everyone, at), at
        with sessions() as session:
            (row,) = session.query(MailThrottle).all()
            assert row.sent == 3
    finally:
        engine.dispose()


def test_racing_first_claims_of_the_hourly_count_all_get_through(database_url: str) -> None:
    """Eight signups' emails at once on a fresh database: one inserts the count's row, the
    others find it there and count on it. On PostgreSQL the losers of the insert were held
    back as if the hourly cap of 500 were reached."""
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    everyone = Limit(500, timedelta(hours=1))
    start = threading.Barrier(8)

    def one(n: int) -> bool:
        start.wait()
        with sessions.begin() as session:
            return claim(session, "*", everyone, NOW)

    try:
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(8))) == [True] * 8
        with sessions() as session:
            (row,) = session.query(MailThrottle).all()
            assert row.sent == 8
    finally:
        engine.dispose()

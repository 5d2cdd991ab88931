"""Every report a real MTA wrote (tests/fixtures/bounces/<mta>/) gets the classification the
fixtures' README promises, and acts on the reader accordingly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.db import make_engine, make_sessions
from digestd.models import BounceEvent, Delivery, Edition, Subscriber, SubscriberStatus
from digestd.readers.bounces import Outcome, process_report
from digestd.tokens import Tokens
from tests.conftest import TEST_KEY
from tests.seeding import Reader, add_readers

HERE = Path(__file__).parent / "fixtures" / "bounces"
MTAS = {"Postfix 3.7.11": "postfix", "Exim 4.96": "exim", "OpenSMTPD 6.8.0p2": "opensmtpd"}
SENT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
RECIPIENTS = {
    "unknown-user": "gone@example.com",
    "unknown-user-idn": "gone@bücher.example",  # stored in Unicode, reported in punycode
    "mailbox-full": "full@example.com",
    "mailbox-full-expired": "quota@example.com",
    "content-refused": "content@example.com",
    "relay-refused": "relay@example.com",
    "delayed": "slow@example.com",
}
OUTCOMES = {
    "hard": Outcome.HARD_BOUNCE,
    "soft": Outcome.SOFT_BOUNCE,
    "failed-not-address": Outcome.FAILED,
    "notice": Outcome.IGNORED,
}


def _readme_table() -> dict[tuple[str, str], tuple[str, str]]:
    """(mta, scenario) -> (kind, code), as the README's table says."""
    lines = (HERE / "README.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| scenario"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("scenario", "---") or len(cells) < 3:
            continue
        for column, cell in zip(columns[2:], cells[2:], strict=True):
            kind, code = cell.rsplit(" ", 1)
            table[(MTAS[column], cells[0])] = (kind, code)
    return table


TABLE = _readme_table()


def test_the_table_covers_every_fixture_and_nothing_else() -> None:
    on_disk = {(p.parent.name, p.stem) for p in HERE.glob("*/*.eml")}
    assert on_disk == set(TABLE) and len(on_disk) == 21


def _one_delivery(sessions: sessionmaker[Session], email: str) -> int:
    """Delivery 1 (the one the fixtures' VERP and Message-ID name), sent to ``email``."""
    with sessions.begin() as session:
        ids = add_readers(session, [Reader(email)], SENT - timedelta(days=1))
        edition = session.scalar(
            insert(Edition).values(kind="daily", period="2026-03-10").returning(Edition.id)
        )
        session.execute(
            insert(Delivery).values(
                id=1,
                subscriber_id=ids[email],
                edition_id=edition,
                status="sent",
                due_at=SENT,
                next_attempt_at=SENT,
                sent_at=SENT,
                attempts=1,
            )
        )
        return ids[email]


@pytest.mark.parametrize(("mta", "scenario"), sorted(TABLE))
def test_each_real_report_is_classified_as_the_readme_says(
    database_url: str, mta: str, scenario: str
) -> None:
    kind, code = TABLE[(mta, scenario)]
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    subscriber_id = _one_delivery(sessions, RECIPIENTS[scenario])
    raw = (HERE / mta / f"{scenario}.eml").read_bytes()
    with sessions.begin() as session:
        result = process_report(session, raw, Tokens([TEST_KEY]), SENT + timedelta(hours=1))
    with sessions() as session:
        event = session.scalars(select(BounceEvent)).one()
        reader = session.get(Subscriber, subscriber_id)
    engine.dispose()
    assert (result.outcome, result.status) == (OUTCOMES[kind], code)
    assert (result.matched_by, result.delivery_id) == ("verp", 1)
    assert (event.kind, event.status, event.source) == (kind, code, "dsn")
    assert event.reporting_mta == "mta.example.test" and event.subscriber_id == subscriber_id
    assert reader is not None
    if kind == "hard":
        assert result.suppressed and reader.status == SubscriberStatus.BOUNCED
    else:
        assert not result.suppressed and reader.status == SubscriberStatus.ACTIVE
    assert reader.soft_bounces == (1 if kind == "soft" else 0)


@pytest.mark.parametrize("mta", sorted(set(MTAS.values())))
def test_an_idn_recipient_matches_its_message_id_in_either_form(
    database_url: str, mta: str
) -> None:
    """Without a VERP to go by, the report's recipient (punycode) must agree with the
    reader's address (stored in Unicode)."""
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    _one_delivery(sessions, "gone@bücher.example")
    raw = (HERE / mta / "unknown-user-idn.eml").read_bytes()
    tag = Tokens([TEST_KEY]).bounce_tag(1).encode()
    without_verp = re.sub(rb"bounces\+" + re.escape(tag), b"bounces", raw)
    with sessions.begin() as session:
        result = process_report(session, without_verp, Tokens([TEST_KEY]), SENT)
    assert (result.outcome, result.matched_by) == (Outcome.HARD_BOUNCE, "message-id")
    # the same report naming somebody else's address proves nothing about this reader
    other = without_verp.replace(b"xn--bcher-kva.example", b"elsewhere.example")
    with sessions.begin() as session:
        assert process_report(session, other, Tokens([TEST_KEY]), SENT).matched_by is None
    engine.dispose()

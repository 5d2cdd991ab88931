"""DSN and ARF reports through ``process_report``: found, classified, acted on once."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from digestd.config import Settings
from digestd.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus, Suppression
from digestd.readers.bounces import Outcome, ReportError, ReportResult, process_report
from digestd.readers.subscribers import email_hash, erase
from digestd.service import Service
from digestd.tokens import Tokens
from tests.conftest import TEST_KEY
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

FIXTURES = Path(__file__).parent / "fixtures"
POSTFIX_DSN = (FIXTURES / "postfix-dsn-550.eml").read_bytes()
ARF = (FIXTURES / "arf-abuse.eml").read_bytes()
FIRST = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
TAG_1 = Tokens([TEST_KEY]).bounce_tag(1)
FORGED_TAG = b"1.forgedsignatureAAAAAAAAAAAA"
SEQUENTIAL_ID = b"<daily.2026-03-10.1@news.example.com>"  # as the fixture has it


def _deliver_days(settings: Settings, emails: list[str], days: int = 1) -> Service:
    """Each reader gets a daily on ``days`` consecutive days (into the mail catcher)."""
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(FIRST - timedelta(days=1), FIRST + timedelta(days=4)))
        add_readers(session, [Reader(e) for e in emails], FIRST - timedelta(hours=1))

    async def run() -> None:
        for day in range(days):
            report = await service.tick(FIRST + timedelta(days=day, minutes=1))
            assert report.delivered.sent == len(emails)

    asyncio.run(run())
    return service


def _next_daily(service: Service, day: int) -> int:
    """Tick on the morning of ``day`` (0 = FIRST); the id of the delivery it sent."""
    report = asyncio.run(service.tick(FIRST + timedelta(days=day, minutes=1)))
    assert report.delivered.sent == 1
    with service.sessions() as session:
        newest = session.scalar(select(Delivery.id).order_by(Delivery.due_at.desc()).limit(1))
        assert newest is not None
        return newest


def _subscriber(service: Service, address: str) -> Subscriber:
    with service.sessions() as session:
        found = session.scalars(select(Subscriber).where(Subscriber.email == address)).one()
        return found


def _suppressed(service: Service, address: str) -> bool:
    with service.sessions() as session:
        return session.get(Suppression, email_hash(address)) is not None


def _process(service: Service, raw: bytes, tokens: Tokens | None = None) -> ReportResult:
    with service.sessions.begin() as session:
        return process_report(session, raw, tokens or service.tokens, FIRST + timedelta(days=3))


def test_a_real_postfix_dsn_hard_bounce_suppresses_the_address_found_by_verp(
    settings: Settings,
) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    result = _process(service, POSTFIX_DSN)
    assert result == ReportResult(
        outcome=Outcome.HARD_BOUNCE,
        report_type="delivery-status",
        delivery_id=1,
        subscriber_id=_subscriber(service, "gone@example.com").id,
        recipient="gone@example.com",
        status="5.1.1",
        diagnostic="smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown",
        matched_by="verp",
        suppressed=True,
    )
    subscriber = _subscriber(service, "gone@example.com")
    assert subscriber.status == SubscriberStatus.BOUNCED
    assert subscriber.next_daily_at is None
    assert _suppressed(service, "gone@example.com")
    # the same report again changes nothing and says so consistently
    again = _process(service, POSTFIX_DSN)
    assert again.outcome is Outcome.HARD_BOUNCE and again.suppressed
    # and the address is never queued again
    asyncio.run(service.tick(FIRST + timedelta(days=1, minutes=1)))
    with service.sessions() as session:
        assert len(session.scalars(select(Delivery)).all()) == 1


def test_a_bounce_from_where_a_reader_forwards_their_mail_reaches_that_reader_by_verp(
    settings: Settings,
) -> None:
    """The reader's mailbox forwards to another address, which is gone: the DSN names the
    forwarding target, not the reader, and VERP alone says whose delivery failed."""
    service = _deliver_days(settings, ["gone@example.com", "other@example.com"])
    forwarded = (
        POSTFIX_DSN.replace(b"rfc822; gone@example.com", b"rfc822; old.box@forward.example.net")
        .replace(b"<gone@example.com>", b"<old.box@forward.example.net>")
        .replace(b"Original-Recipient: rfc822;gone@example.com\r\n", b"")  # optional (RFC 3464)
    )
    assert b"gone@example.com" in forwarded.split(b"Return-Path:")[1]  # only the original
    result = _process(service, forwarded)
    assert result.outcome is Outcome.HARD_BOUNCE and result.matched_by == "verp"
    assert result.recipient == "old.box@forward.example.net"
    assert _subscriber(service, "gone@example.com").status == SubscriberStatus.BOUNCED
    assert _subscriber(service, "other@example.com").status == SubscriberStatus.ACTIVE
    assert not _suppressed(service, "old.box@forward.example.net")


def _sent_message_id(service: Service, delivery_id: int) -> bytes:
    with service.sessions() as session:
        sent = session.scalar(select(Delivery.message_id).where(Delivery.id == delivery_id))
    assert sent is not None
    return sent.encode()


def test_without_a_valid_verp_the_delivery_is_found_by_its_exact_message_id(
    settings: Settings,
) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    sent = _sent_message_id(service, 1)
    # sequential id, then a keyed part: the same for a repeat, unguessable for others
    assert re.fullmatch(rb"<daily\.2026-03-10\.1\.[A-Za-z0-9_-]{16}@news\.example\.com>", sent)
    report = POSTFIX_DSN.replace(TAG_1.encode(), FORGED_TAG).replace(SEQUENTIAL_ID, sent)
    result = _process(service, report)
    assert (result.matched_by, result.delivery_id) == ("message-id", 1)
    assert result.outcome is Outcome.HARD_BOUNCE and result.suppressed
    assert _subscriber(service, "gone@example.com").status == SubscriberStatus.BOUNCED
    # after a key rotation the old key still recognises its Message-IDs
    rotated = Tokens(["a-newer-key-0123456789abcdef", TEST_KEY])
    assert _process(service, report, rotated).matched_by == "message-id"


def _weaker(service: Service, case: str) -> bytes:
    """A report about gone@example.com's delivery without proof that it saw the message."""
    forged = POSTFIX_DSN.replace(TAG_1.encode(), FORGED_TAG)
    if case == "forged-verp":  # and the Message-ID as an older digestd made it
        return forged
    if case == "recipient-only":  # no VERP at all, no Message-ID: only the address
        return POSTFIX_DSN.replace(b"bounces+" + TAG_1.encode(), b"bounces").replace(
            SEQUENTIAL_ID, b"<x@elsewhere.example>"
        )
    if case == "guessed-message-id":
        guess = b"<daily.2026-03-10.1.AAAAAAAAAAAAAAAA@news.example.com>"
        return forged.replace(SEQUENTIAL_ID, guess)
    assert case == "another-readers-message-id"  # real, but not this recipient's
    victim = _subscriber(service, "victim@example.com")
    with service.sessions() as session:
        theirs = session.scalar(select(Delivery.id).where(Delivery.subscriber_id == victim.id))
    assert theirs is not None
    return forged.replace(SEQUENTIAL_ID, _sent_message_id(service, theirs))


@pytest.mark.parametrize(
    "case", ["forged-verp", "recipient-only", "guessed-message-id", "another-readers-message-id"]
)
def test_weaker_evidence_is_unmatched_and_changes_no_one(
    settings: Settings, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = _deliver_days(settings, ["gone@example.com", "victim@example.com"])
    with caplog.at_level(logging.WARNING, logger="digestd.readers.bounces"):
        result = _process(service, _weaker(service, case))
    assert result.outcome is Outcome.UNMATCHED
    assert (result.delivery_id, result.subscriber_id, result.matched_by) == (None, None, None)
    assert not result.suppressed
    for address in ("gone@example.com", "victim@example.com"):
        assert _subscriber(service, address).status == SubscriberStatus.ACTIVE
        assert not _suppressed(service, address)
    with service.sessions() as session:
        assert session.scalars(select(Delivery.last_error)).all() == [None, None]
    assert "unmatched delivery-status report" in caplog.text
    assert "gone@example.com" not in caplog.text  # the domain is enough to look into it


def test_an_arf_complaint_without_proof_is_unmatched(settings: Settings) -> None:
    service = _deliver_days(settings, ["reader@example.com"])
    result = _process(service, ARF.replace(TAG_1.encode(), FORGED_TAG))
    assert result.outcome is Outcome.UNMATCHED and not result.suppressed
    assert _subscriber(service, "reader@example.com").status == SubscriberStatus.ACTIVE


def test_an_arf_complaint_unsubscribes_and_suppresses(settings: Settings) -> None:
    service = _deliver_days(settings, ["reader@example.com"])
    result = _process(service, ARF)
    assert result.outcome is Outcome.COMPLAINT
    assert result.report_type == "feedback-report" and result.status == "abuse"
    assert result.matched_by == "verp" and result.delivery_id == 1
    subscriber = _subscriber(service, "reader@example.com")
    assert subscriber.status == SubscriberStatus.COMPLAINED
    assert subscriber.unsubscribed_at is not None
    assert _suppressed(service, "reader@example.com")


def _soft_dsn(service: Service, delivery_id: int, status: bytes = b"4.2.2") -> bytes:
    return (
        POSTFIX_DSN.replace(TAG_1.encode(), service.tokens.bounce_tag(delivery_id).encode())
        .replace(b"Status: 5.1.1", b"Status: " + status)
        .replace(b"550 5.1.1", b"452 " + status)
    )


def test_three_soft_bounces_in_a_row_suppress_and_a_repeated_report_counts_once(
    settings: Settings,
) -> None:
    service = _deliver_days(settings, ["full@example.com"])
    ids = [1]
    first = _process(service, _soft_dsn(service, ids[0]))
    assert first.outcome is Outcome.SOFT_BOUNCE and not first.suppressed
    repeat = _process(service, _soft_dsn(service, ids[0]))
    assert repeat.outcome is Outcome.SOFT_BOUNCE and repeat.repeated
    assert _subscriber(service, "full@example.com").soft_bounces == 1
    ids.append(_next_daily(service, 1))
    # "mailbox full" reported as 5.2.2 is soft too (RFC 3463: a persistent-transient state)
    second = _process(service, _soft_dsn(service, ids[1], b"5.2.2"))
    assert second.outcome is Outcome.SOFT_BOUNCE and not second.suppressed
    assert _subscriber(service, "full@example.com").status == SubscriberStatus.ACTIVE
    assert _subscriber(service, "full@example.com").soft_bounces == 2
    ids.append(_next_daily(service, 2))
    third = _process(service, _soft_dsn(service, ids[2]))
    assert third.outcome is Outcome.SOFT_BOUNCE and third.suppressed
    assert _subscriber(service, "full@example.com").status == SubscriberStatus.BOUNCED
    assert _suppressed(service, "full@example.com")


def test_soft_bounces_not_in_a_row_do_not_suppress(settings: Settings) -> None:
    service = _deliver_days(settings, ["flaky@example.com"], days=3)
    with service.sessions() as session:
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.due_at)))
    _process(service, _soft_dsn(service, ids[0]))
    _process(service, _soft_dsn(service, ids[2]))  # the middle one was fine
    assert _subscriber(service, "flaky@example.com").soft_bounces == 1
    assert _subscriber(service, "flaky@example.com").status == SubscriberStatus.ACTIVE


def test_a_delay_notice_changes_nothing(settings: Settings) -> None:
    service = _deliver_days(settings, ["slow@example.com"])
    delayed = POSTFIX_DSN.replace(b"Action: failed", b"Action: delayed").replace(
        b"Status: 5.1.1", b"Status: 4.4.1"
    )
    result = _process(service, delayed)
    assert result.outcome is Outcome.IGNORED and not result.suppressed
    with service.sessions() as session:
        (delivery,) = session.scalars(select(Delivery)).all()
        assert delivery.status == DeliveryStatus.SENT and delivery.last_error is None
    assert _subscriber(service, "slow@example.com").status == SubscriberStatus.ACTIVE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Subject: hello\r\n\r\nnot a report\r\n",
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nread\r\n--b--\r\n",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nno status part\r\n--b--\r\n",
    ],
)
def test_something_that_is_not_a_report_is_refused_and_changes_nothing(
    settings: Settings, raw: bytes
) -> None:
    service = _deliver_days(settings, ["reader@example.com"])
    with pytest.raises(ReportError):
        _process(service, raw)
    assert _subscriber(service, "reader@example.com").status == SubscriberStatus.ACTIVE


def test_the_ledger_keeps_no_mailbox_name_even_one_a_report_gives_without_its_domain(
    settings: Settings,
) -> None:
    """Postfix's local delivery says ``unknown user: "name"``; an apostrophe is part of a
    name. After the reader erases themselves, no row holds any of it."""
    address = "sean.o'brien@example.com"
    service = _deliver_days(settings, [address])
    raw = POSTFIX_DSN.replace(b"gone@example.com", address.encode()).replace(
        b"Diagnostic-Code: smtp; 550 5.1.1 <",
        b'Diagnostic-Code: X-Postfix; unknown user: "SEAN.O\'BRIEN" (was <',
    )
    assert _process(service, raw).outcome is Outcome.HARD_BOUNCE
    with service.sessions.begin() as session:
        erase(session, address, FIRST + timedelta(days=4))
    with service.engine.connect() as connection:
        rows = [
            " ".join(map(str, row)) for row in connection.execute(text("SELECT * FROM bounces"))
        ]
    assert len(rows) == 1 and "unknown user" in rows[0] and "@example.com" in rows[0]
    assert "sean" not in rows[0].lower() and "brien" not in rows[0].lower(), rows[0]


UNZUSTELLBAR = "Unzustellbar: Tägliche Übersicht".encode()  # 8-bit, as a German MTA writes it


def test_a_plain_bounce_with_an_8bit_subject_is_read(settings: Settings) -> None:
    """compat32 hands such a header out as a Header object, on which the reading failed:
    a 500 on the API, a 451 over LMTP at every retry, and the address never suppressed."""
    service = _deliver_days(settings, ["gone@example.com"])
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces+"
        + TAG_1.encode()
        + b"@news.example.com\r\nSubject: "
        + UNZUSTELLBAR
        + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"<gone@example.com>: host mx said: 550 5.1.1 user unknown\r\n"
    )
    result = _process(service, raw)
    assert (result.outcome, result.status, result.delivery_id) == (Outcome.HARD_BOUNCE, "5.1.1", 1)


def test_a_delay_notice_without_action_and_an_8bit_subject_is_a_notice(settings: Settings) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    """Without Action, a 4.x.x report is a delay if its Subject says so: read as text."""
    subject = "Verzögert: Delayed Mail (still being retried)".encode()
    raw = POSTFIX_DSN.replace(b"Undelivered Mail Returned to Sender", subject)
    raw = raw.replace(b"Action: failed\r\n", b"").replace(b"Status: 5.1.1", b"Status: 4.2.2")
    raw = raw.replace(b"550 5.1.1", b"452 4.2.2")
    assert b"Action:" not in raw.split(b"message/delivery-status")[1].split(b"--CEFA")[0]
    result = _process(service, raw)
    assert result.outcome is Outcome.IGNORED and not result.suppressed


def test_a_complaint_with_8bit_fields_and_returned_headers_is_read_as_text(
    settings: Settings,
) -> None:
    service = _deliver_days(settings, ["reader@example.com"])
    raw = ARF.replace(b"User-Agent: SomeGenerator/1.0", "User-Agent: Ünicode UA/1".encode())
    raw = raw.replace(b"To: reader@example.com", "To: Rëader <reader@example.com>".encode())
    raw = raw.replace(b"Original-Rcpt-To: <reader@example.com>\r\n", b"")
    result = _process(service, raw)
    assert result.outcome is Outcome.COMPLAINT and result.recipient == "reader@example.com"
    assert result.diagnostic == "Ünicode UA/1"


def test_an_unmatched_report_with_an_8bit_message_id_is_recorded_unmatched(
    settings: Settings,
) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    raw = POSTFIX_DSN.replace(TAG_1.encode(), b"not-a-tag")  # no VERP: the Message-ID is looked up
    raw = re.sub(rb"Message-I[Dd]: <daily[^>]*>", "Message-ID: <x@exämple.com>".encode(), raw)
    result = _process(service, raw)
    assert result.outcome is Outcome.UNMATCHED

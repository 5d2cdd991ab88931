"""Reports as the real world writes them: comments in fields, Action synonyms, status parts
anywhere in the MIME tree, bounces that are no report, and honest answers.

Each variant starts from the real Postfix DSN (tests/fixtures/postfix-dsn-550.eml) and
changes what another MTA or appliance does differently, named in each case.
"""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select

from digestd.config import Settings
from digestd.models import BounceEvent
from digestd.readers.bounces import Outcome, ReportError
from digestd.service import Service
from tests.test_bounces import (
    FORGED_TAG,
    POSTFIX_DSN,
    TAG_1,
    _deliver_days,
    _process,
    _subscriber,
    _suppressed,
)

VERP = b"bounces+" + TAG_1.encode() + b"@news.example.com"


def _variant(old: bytes, new: bytes, raw: bytes = POSTFIX_DSN) -> bytes:
    assert old in raw, old
    return raw.replace(old, new)


@pytest.mark.parametrize(
    ("raw", "outcome", "status"),
    [
        # Status and Action with RFC 5322 comments (several appliances; Domino)
        (_variant(b"Action: failed", b"Action: failed (Bad destination mailbox address)"),
         Outcome.HARD_BOUNCE, "5.1.1"),
        (_variant(b"Status: 5.1.1", b"Status: 5.2.2 (Remote SMTP server has responded: full)")
         .replace(b"550 5.1.1", b"552 5.2.2"), Outcome.SOFT_BOUNCE, "5.2.2"),
        # Action synonyms and no Action at all
        (_variant(b"Action: failed", b"Action: failure"), Outcome.HARD_BOUNCE, "5.1.1"),
        (_variant(b"Action: failed", b"Action: FAILED"), Outcome.HARD_BOUNCE, "5.1.1"),
        (_variant(b"Action: failed\r\n", b""), Outcome.HARD_BOUNCE, "5.1.1"),
        (_variant(b"Action: failed", b"Action: expired").replace(b"Status: 5.1.1",
         b"Status: 4.2.2").replace(b"550 5.1.1", b"452 4.2.2"), Outcome.SOFT_BOUNCE, "4.2.2"),
        (_variant(b"Action: failed", b"Action: delayed").replace(b"Status: 5.1.1",
         b"Status: 4.4.1"), Outcome.IGNORED, "4.4.1"),
        # A policy refusal is no bounce of the address
        (_variant(b"Status: 5.1.1", b"Status: 5.7.1").replace(b"550 5.1.1", b"554 5.7.1"),
         Outcome.FAILED, "5.7.1"),
        # Exim: an unspecific Status, the precise code in the diagnostic
        (_variant(b"Status: 5.1.1", b"Status: 5.0.0"), Outcome.HARD_BOUNCE, "5.1.1"),
        # a reporter's 5.0.0 with a bare 550 quoted: the bare code rules
        (_variant(b"Status: 5.1.1", b"Status: 5.0.0").replace(b"550 5.1.1 <", b"550 <"),
         Outcome.HARD_BOUNCE, "550"),
    ],
)  # fmt: skip
def test_fields_are_read_as_real_mtas_write_them(
    settings: Settings, raw: bytes, outcome: Outcome, status: str
) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    result = _process(service, raw)
    assert (result.outcome, result.status, result.matched_by) == (outcome, status, "verp")
    assert result.suppressed is (outcome is Outcome.HARD_BOUNCE)
    assert _suppressed(service, "gone@example.com") is (outcome is Outcome.HARD_BOUNCE)


def _report_type_dropped() -> bytes:
    return _variant(
        b"Content-Type: multipart/report; report-type=delivery-status;",
        b"Content-Type: multipart/mixed;",
    )


def _nested_in_mixed() -> bytes:
    """A gateway that wraps the report in a multipart/mixed with its own note."""
    head, _, body = POSTFIX_DSN.partition(b"\r\n\r\n")
    inner_type = head[head.index(b"Content-Type:") : head.index(b"Content-Transfer-Encoding")]
    outer = (
        b"From: postmaster@gateway.example\r\nTo: " + VERP + b"\r\nSubject: Returned mail\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\nContent-Type: text/plain\r\n\r\nThe attached report came back.\r\n"
        b"--outer\r\n" + inner_type + b"\r\n" + body + b"\r\n--outer--\r\n"
    )
    return outer


def _base64_status_part(encoded: bytes | None = None) -> bytes:
    """An appliance that base64-encodes the delivery-status part."""
    start = POSTFIX_DSN.index(b"Reporting-MTA:")
    end = POSTFIX_DSN.index(b"\r\n--", start)
    if encoded is None:
        encoded = base64.encodebytes(POSTFIX_DSN[start:end]).replace(b"\n", b"\r\n")
    return (
        POSTFIX_DSN[:start].replace(
            b"Content-Type: message/delivery-status\r\n",
            b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n",
        )
        + encoded
        + POSTFIX_DSN[end:]
    )


@pytest.mark.parametrize(
    "raw",
    [_report_type_dropped(), _nested_in_mixed(), _base64_status_part()],
    ids=["no-report-type", "nested-in-mixed", "base64-status-part"],
)
def test_the_delivery_status_part_is_found_wherever_it_sits(settings: Settings, raw: bytes) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    result = _process(service, raw)
    assert (result.outcome, result.status, result.matched_by) == (
        Outcome.HARD_BOUNCE,
        "5.1.1",
        "verp",
    )


QMAIL_STYLE = (
    b"Return-Path: <>\r\nDelivered-To: " + VERP + b"\r\n"
    b"From: MAILER-DAEMON@mx.example.net\r\nTo: " + VERP + b"\r\n"
    b"Subject: failure notice\r\n\r\n"
    b"Hi. This is the qmail-send program at mx.example.net.\r\n"
    b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
    b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
    b"<gone@example.com>:\r\n192.0.2.7 does not like recipient.\r\n"
    b"Remote host said: 550 5.1.1 <gone@example.com>: Recipient address rejected\r\n"
    b"Giving up on 192.0.2.7.\r\n\r\n--- Below this line is a copy of the message.\r\n\r\n"
    b"Subject: Your daily digest\r\n\r\n550 readers liked this story.\r\n"
)


def test_a_bounce_that_is_no_report_is_matched_by_its_verp_address(settings: Settings) -> None:
    """qmail and some gateways send plain text: the VERP address it came to names the
    delivery, the SMTP reply it quotes says what happened."""
    service = _deliver_days(settings, ["gone@example.com"])
    result = _process(service, QMAIL_STYLE)
    assert (result.outcome, result.status, result.matched_by) == (
        Outcome.HARD_BOUNCE,
        "5.1.1",
        "verp",
    )
    assert result.report_type == "bounce" and _suppressed(service, "gone@example.com")


def test_a_policy_refusal_quoted_by_qmail_keeps_the_reader(settings: Settings) -> None:
    """qmail puts the enhanced code last, "(#5.7.1)": a refusal of our sender, not of the
    address, which read as a bare 553 (the address) before."""
    service = _deliver_days(settings, ["gone@example.com"])
    refused = QMAIL_STYLE.replace(
        b"550 5.1.1 <gone@example.com>: Recipient address rejected",
        b"553 sorry, your envelope sender has been denied (#5.7.1)",
    )
    result = _process(service, refused)
    assert (result.outcome, result.status) == (Outcome.FAILED, "5.7.1")
    assert _subscriber(service, "gone@example.com").status == "active"


@pytest.mark.parametrize(
    "raw",
    [
        # a reply to the digest from a mail system's own address, quoting a "550"
        b"From: Mail Delivery Subsystem <postmaster@example.com>\r\nTo: " + VERP + b"\r\n"
        b"Subject: Re: Your AI digest\r\n\r\nReference: 550 Main Street office hours\r\n",
        # an out-of-office answer to the envelope sender
        b"From: Gone Reader <gone@example.com>\r\nTo: " + VERP + b"\r\n"
        b"Auto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\n"
        b"I am away until Monday. 550 emails to read when I am back.\r\n",
        # a person replying to the bounce address
        b"From: gone@example.com\r\nTo: " + VERP + b"\r\nSubject: Re: digest\r\n\r\nThanks!\r\n",
    ],
    ids=["a-reply-from-postmaster", "auto-reply", "a-person"],
)
def test_an_auto_reply_or_a_person_at_the_bounce_address_changes_nothing(
    settings: Settings, raw: bytes
) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    result = _process(service, raw)
    assert (result.outcome, result.matched_by) == (Outcome.IGNORED, "verp")
    assert _subscriber(service, "gone@example.com").status == "active"


def test_a_plain_message_without_a_verp_address_is_no_report(settings: Settings) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    forged = QMAIL_STYLE.replace(TAG_1.encode(), FORGED_TAG)
    with pytest.raises(ReportError, match="not a report"):
        _process(service, forged)
    with service.sessions() as session:
        assert session.scalars(select(BounceEvent)).all() == []


def test_an_unmatched_report_says_so_and_is_kept_in_the_ledger(settings: Settings) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    result = _process(service, POSTFIX_DSN.replace(TAG_1.encode(), FORGED_TAG))
    assert result.outcome is Outcome.UNMATCHED and not result.suppressed
    assert _subscriber(service, "gone@example.com").status == "active"
    with service.sessions() as session:
        event = session.scalars(select(BounceEvent)).one()
    assert (event.kind, event.delivery_id, event.subscriber_id) == ("unmatched", None, None)
    assert (event.status, event.reporting_mta, event.channel) == (
        "5.1.1",
        "mta.example.test",
        "api",
    )
    assert event.diagnostic is not None and "gone@" not in event.diagnostic


def _deeply_nested(levels: int) -> bytes:
    opening = b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
    return b"".join(opening % (i, i) for i in range(levels)) + b"Content-Type: text/plain\r\n\r\nx"


@pytest.mark.parametrize(
    "raw",
    [
        _base64_status_part(b"A"),  # not base64 at all
        _variant(b"Final-Recipient: rfc822; gone@example.com\r\n", b"").replace(
            b"Original-Recipient: rfc822;gone@example.com\r\n", b""
        ),  # a status part naming nobody
        _deeply_nested(5000),  # would exhaust the email package's recursion
        b"Content-Type: message/rfc822\r\n\r\n" * 3000 + b"x",  # so would messages in messages
        bytes(range(256)) * 100,
    ],
    ids=["bad-base64", "no-recipient", "nested-5000-deep", "messages-3000-deep", "binary"],
)
def test_hostile_reports_get_one_clear_error_and_change_nothing(
    settings: Settings, raw: bytes
) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    with pytest.raises(ReportError):
        _process(service, raw)
    assert _subscriber(service, "gone@example.com").status == "active"
    with service.sessions() as session:
        assert session.scalars(select(BounceEvent)).all() == []


def _ledger(service: Service) -> list[tuple[str, int | None, int | None]]:
    with service.sessions() as session:
        rows = session.execute(
            select(BounceEvent.kind, BounceEvent.delivery_id, BounceEvent.subscriber_id)
        ).all()
    return [(row.kind, row.delivery_id, row.subscriber_id) for row in rows]


def test_a_report_on_a_readers_other_mail_handed_over_twice_counts_once(
    settings: Settings,
) -> None:
    """A soft bounce of a confirmation or sunset email names the reader, not a delivery:
    delivered again by the MTA (its LMTP reply lost), it is the same report, and a later
    day's copy must not count as a second day of soft bounces."""
    service = _deliver_days(settings, ["full@example.com"])
    reader = _subscriber(service, "full@example.com")
    tag = service.tokens.reader_bounce_tag(reader.public_id).encode()
    soft = (
        POSTFIX_DSN.replace(TAG_1.encode(), tag)
        .replace(b"Status: 5.1.1", b"Status: 4.2.2")
        .replace(b"550 5.1.1", b"452 4.2.2")
    )
    first = _process(service, soft)
    assert (first.outcome, first.delivery_id, first.repeated) == (Outcome.SOFT_BOUNCE, None, False)
    again = _process(service, soft)
    assert again.outcome is Outcome.SOFT_BOUNCE and again.repeated
    assert _ledger(service) == [("soft", None, reader.id)]
    other = _variant(b"Message-Id: <20261129004432.", b"Message-Id: <20261130004432.", soft)
    assert not _process(service, other).repeated  # another report about the same reader
    assert _ledger(service) == [("soft", None, reader.id)] * 2


def test_an_unmatched_report_handed_over_twice_is_kept_once(settings: Settings) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    forged = POSTFIX_DSN.replace(TAG_1.encode(), FORGED_TAG)
    assert not _process(service, forged).repeated
    again = _process(service, forged)
    assert again.outcome is Outcome.UNMATCHED and again.repeated
    assert _ledger(service) == [("unmatched", None, None)]

"""Reports crafted by a stranger, sent to a real ``digestd run`` over LMTP: anyone can mail
the bounce and complaint addresses, so a report must be read in time that grows with its
size, and one that can never be recorded is refused (554), never deferred (451) for the
sending MTA to retry for days. The daemon is a process of its own, so a reading that holds
it (a quadratic regex holds the GIL for hours at these sizes) fails the test by a timeout."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from digestd.config import load_settings
from digestd.models import BounceEvent, SubscriberStatus
from digestd.readers.ledger import DIAGNOSTIC_CHARS
from digestd.readers.reports import MAX_REPORT_BYTES
from digestd.service import Service
from tests.helpers import daemon_taking_mail, free_port
from tests.test_bounces import ARF, POSTFIX_DSN, TAG_1, _deliver_days, _subscriber
from tests.test_inbound import DOMAIN, _with_listener, lmtp_session

WAIT = 60.0  # seconds for a report's reply; a linear reading takes well under one


@dataclass(frozen=True)
class Sent:
    reply: bytes
    log: str  # the daemon's
    service: Service  # on the same database, to read what was stored


def _send(env: dict[str, str], tmp_path: Path, recipient: str, data: bytes) -> Sent:
    """``data`` sent to ``recipient`` of a ``digestd run``, after a daily went to
    gone@example.com (delivery 1: TAG_1)."""
    lmtp_port = free_port()
    env = {**env, "DIGESTD_INBOUND_LISTEN": f"127.0.0.1:{lmtp_port}"}
    service = _deliver_days(load_settings(env), ["gone@example.com"])
    with daemon_taking_mail(env, tmp_path, WAIT) as daemon:
        session = lmtp_session(lmtp_port, "", [recipient], data)
        rcpt, finals = asyncio.run(asyncio.wait_for(session, WAIT))
    assert rcpt[0].startswith(b"250"), rcpt
    return Sent(finals[0], daemon.log, service)


def _event(service: Service) -> BounceEvent:
    with service.sessions() as session:
        return session.scalars(select(BounceEvent)).one()


def _blank_lines_bounce() -> bytes:
    head = (
        b"From: MAILER-DAEMON@mta.example.test\r\nSubject: Undelivered Mail\r\n"
        b"Content-Type: text/plain\r\n\r\nx\r\n"
    )
    return head + b"\r\n" * ((MAX_REPORT_BYTES - len(head)) // 2 - 100)


def _long_diagnostic_dsn() -> bytes:
    status = b"Reporting-MTA: dns; mx.example.test\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\n"
    status += b"Action: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 550 " + b"a" * 1_200_000
    encoded = base64.encodebytes(status)  # no line-length limit once decoded
    return (
        b"From: MAILER-DAEMON@mx.example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n"
        b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"--b--\r\n"
    )


def test_a_plain_bounce_of_blank_lines_is_read_in_time(env: dict[str, str], tmp_path: Path) -> None:
    """Two megabytes of empty lines to the shared bounce address: read once, refused."""
    sent = _send(env, tmp_path, f"bounces@{DOMAIN}", _blank_lines_bounce())
    assert sent.reply.startswith(b"554 5.6.0"), sent.reply


def test_a_diagnostic_of_a_megabyte_is_cut_before_it_is_redacted(
    env: dict[str, str], tmp_path: Path
) -> None:
    sent = _send(env, tmp_path, f"complaints@{DOMAIN}", _long_diagnostic_dsn())
    assert sent.reply.startswith(b"250 2.0.0"), sent.reply
    diagnostic = _event(sent.service).diagnostic
    assert diagnostic is not None and len(diagnostic) == DIAGNOSTIC_CHARS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"Reporting-MTA: dns; mta.example.test", b"Reporting-MTA: dns; mta.example\x00.test"),
        (b"rejected: User unknown", b"rejected: User\x00 unknown"),
    ],
)
def test_a_nul_in_a_genuine_bounce_does_not_keep_it_from_being_recorded(
    env: dict[str, str], tmp_path: Path, field: bytes, value: bytes
) -> None:
    """PostgreSQL text cannot hold NUL: the bounce got 451 at every retry and its reader
    was never suppressed. Stored without it (on SQLite too)."""
    assert field in POSTFIX_DSN
    raw = POSTFIX_DSN.replace(field, value)
    sent = _send(env, tmp_path, f"bounces+{TAG_1}@{DOMAIN}", raw)
    assert sent.reply.startswith(b"250 2.0.0") and b"hard-bounce" in sent.reply, sent.log
    assert _subscriber(sent.service, "gone@example.com").status == SubscriberStatus.BOUNCED
    event = _event(sent.service)
    stored = [event.status, event.diagnostic, event.reporting_mta]
    assert all(text is not None and "\x00" not in text for text in stored), stored


def test_a_complaint_with_a_nul_in_its_feedback_type_is_recorded(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert b"Feedback-Type: abuse" in ARF
    raw = ARF.replace(b"Feedback-Type: abuse", b"Feedback-Type: abuse\x00")
    sent = _send(env, tmp_path, f"complaints@{DOMAIN}", raw)
    assert sent.reply.startswith(b"250 2.0.0"), sent.log
    assert "\x00" not in (_event(sent.service).status or "")


def _nested(depth: int) -> bytes:
    """Multiparts ``depth`` deep, each inside the last: as base64, parse()'s count of
    boundaries in the raw message cannot see them."""
    inner = b"x\r\n"
    for level in range(depth):
        inner = (
            # No blank line after the header: a delivery-status part is split at blank
            # lines into field blocks, and this way all of it is one block.
            f'Content-Type: multipart/mixed; boundary="n{level}"\r\n--n{level}\r\n'.encode()
            + inner
            + f"\r\n--n{level}--\r\n".encode()
        )
    return base64.encodebytes(inner)


@pytest.mark.parametrize("part", ["text/rfc822-headers", "message/delivery-status"])
def test_multiparts_nested_inside_an_encoded_part_are_refused_not_deferred(
    env: dict[str, str], tmp_path: Path, part: str
) -> None:
    """They exhausted the email package's recursion: a traceback and 451, for ever."""
    raw = (
        b"From: MAILER-DAEMON@mx.example.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n"
        + f"Content-Type: {part}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
        + _nested(3000)
        + b"--b--\r\n"
    )
    sent = _send(env, tmp_path, f"bounces@{DOMAIN}", raw)
    assert sent.reply[:3] in (b"250", b"554"), sent.reply
    assert "Traceback" not in sent.log and "[error" not in sent.log, sent.log


def _in_process(env: dict[str, str], recipients: list[str], data: bytes) -> list[bytes]:
    """The replies to ``data`` (the RCPT replies, then those to the content) from a listener
    in this process: for what the protocol answers, not how long reading takes."""
    service = _deliver_days(load_settings(env), ["gone@example.com"])

    async def run(port: int) -> list[bytes]:
        session = lmtp_session(port, "", recipients, data)
        rcpt, finals = await asyncio.wait_for(session, WAIT)
        return rcpt + finals

    return _with_listener(service, run)


@pytest.mark.parametrize(
    ("content", "refusal"),
    [
        (b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2100, b"552 "),
        (b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n", b"500 "),
    ],
    ids=["too-much-data", "line-too-long"],
)
def test_content_refused_whole_gets_a_reply_for_each_recipient(
    env: dict[str, str], content: bytes, refusal: bytes
) -> None:
    """LMTP answers the content once per recipient: with one reply, the MTA waited for the
    others until its timeout."""
    assert len(content) > MAX_REPORT_BYTES or refusal == b"500 "
    recipients = [f"bounces@{DOMAIN}", f"complaints@{DOMAIN}", f"bounces+{TAG_1}@{DOMAIN}"]
    replies = _in_process(env, recipients, content)
    assert [r[:4] for r in replies] == [b"250 "] * 3 + [refusal] * 3, replies


def test_recipients_past_fifty_are_told_to_come_again(env: dict[str, str]) -> None:
    """Each recipient's copy is read on its own: a 2 MB report to hundreds of them outlasted
    the session, and the MTA sent it all again, and again."""
    replies = _in_process(env, [f"complaints@{DOMAIN}"] * 52, ARF)
    rcpt, finals = replies[:52], replies[52:]
    assert [r[:3] for r in rcpt] == [b"250"] * 50 + [b"452"] * 2, rcpt
    assert len(finals) == 50 and all(r.startswith(b"250 2.0.0") for r in finals)

"""Asynchronous bounces and complaints: find the delivery a report is about, record it in
the bounce ledger, act as the bounce policy says.

:func:`process_report` is the whole unit behind ``POST /api/bounces`` and the inbound LMTP
listener. Reading the report is :mod:`digestd.readers.reports`; what it means for the
reader is :mod:`digestd.readers.bounce_policy`; recording and acting is
:mod:`digestd.readers.ledger`.

Finding the delivery takes proof that the reporter saw the message: the VERP envelope
sender ``bounces+<id>.<signature>@domain`` the report was addressed to (signed), or the
Message-ID of the returned original (``<kind.period.id.<keyed tag>@domain>``, recomputed
and compared), whose recipient must then match the report's (an internationalised domain
in either form). Anything weaker — a recipient address alone, a forged or absent VERP, a
guessed Message-ID — is ``unmatched``: kept in the ledger, logged, answered as such, and
it changes no one (anybody can write a report naming an address). A report processed
twice is recorded and acted on once.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

import idna
from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.models import Delivery, Subscriber
from digestd.readers import ledger
from digestd.readers.bounce_policy import Kind
from digestd.readers.report_parts import ReportError
from digestd.readers.reports import MAX_REPORT_BYTES, Report, parse, read
from digestd.tokens import BadToken, BounceTarget, Tokens

__all__ = ["MAX_REPORT_BYTES", "Outcome", "ReportError", "ReportResult", "process_report"]

log = logging.getLogger(__name__)

_VERP = re.compile(rb"bounces\+((?:[0-9]+|r[A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+)@", re.IGNORECASE)
_MESSAGE_ID = re.compile(
    r"<(?:daily|weekly)\.\d{4}-\d{2}-\d{2}\.(\d{1,18})\.([A-Za-z0-9_-]{16})@[^>]+>"
)
# Where a bounce that is no report carries the address it was sent to.
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


class Outcome(enum.StrEnum):
    HARD_BOUNCE = "hard-bounce"
    SOFT_BOUNCE = "soft-bounce"
    COMPLAINT = "complaint"
    FAILED = "failed-not-address"  # the message failed for a reason that is not the address
    IGNORED = "ignored"  # a delay or delivery notice, not-spam feedback, an auto-reply
    UNMATCHED = "unmatched"  # no proof it is about a message digestd sent: nobody changed


_OUTCOME = {
    Kind.HARD: Outcome.HARD_BOUNCE,
    Kind.SOFT: Outcome.SOFT_BOUNCE,
    Kind.COMPLAINT: Outcome.COMPLAINT,
    Kind.FAILED: Outcome.FAILED,
    Kind.NOTICE: Outcome.IGNORED,
    Kind.UNMATCHED: Outcome.UNMATCHED,
}


@dataclass(frozen=True)
class ReportResult:
    outcome: Outcome
    report_type: str  # "delivery-status", "feedback-report" or "bounce"
    delivery_id: int | None  # None: the report is about nothing digestd sent
    subscriber_id: int | None
    recipient: str | None
    status: str | None  # the code the outcome rests on (5.1.1, 550) or ARF Feedback-Type
    diagnostic: str | None
    matched_by: str | None  # "verp" or "message-id"
    suppressed: bool  # the address is suppressed after this report
    repeated: bool = False  # the same report was processed before: nothing more changed


def process_report(
    session: Session,
    raw: bytes,
    tokens: Tokens,
    now: datetime,
    *,
    channel: str = "api",
    envelope_to: Sequence[str] = (),
) -> ReportResult:
    """Read one raw DSN, ARF report or bounce and apply it. ``envelope_to``: the addresses
    it was delivered to, when known (LMTP). Raises :class:`ReportError` if ``raw`` is not a
    report, nor a bounce sent to a VERP address digestd made."""
    message = parse(raw)
    report = read(message)
    verp = _verp(tokens, [*envelope_to, *_envelope_headers(message)])
    if report.source == "mail" and verp is None:
        raise ReportError(
            "not a report: no delivery-status or feedback-report part, and not addressed "
            "to a bounce address digestd made"
        )
    found = _locate(session, raw, report, tokens, verp)
    identity = report_id(message, raw)
    if found is None:
        if ledger.report_seen(session, identity, None, None):
            return _result(report, Outcome.UNMATCHED, None, False, repeated=True)
        log.warning(
            "unmatched %s report (%s, recipient domain %s): no valid VERP address or "
            "digestd Message-ID in it; nobody changed",
            report.report_type,
            report.status or "no status",
            (report.recipient or "").rpartition("@")[2] or "unknown",
        )
        event = _event(report, Kind.UNMATCHED, channel, identity)
        ledger.record(session, event, delivery_id=None, subscriber_id=None, now=now)
        return _result(report, Outcome.UNMATCHED, None, False)
    delivery_id, subscriber_id, _ = found
    # Handed over again (an LMTP delivery retried, a report posted twice): by what it is
    # about for a digest, by which report it is for a reader's other mail.
    repeat = (
        delivery_id is not None
        and ledger.already_recorded(session, delivery_id, report.kind, report.source)
    ) or ledger.report_seen(session, identity, delivery_id, subscriber_id)
    if repeat:
        suppressed = ledger.is_suppressed(session, subscriber_id)
        return _result(report, _OUTCOME[report.kind], found, suppressed, repeated=True)
    suppressed = ledger.record(
        session,
        _event(report, report.kind, channel, identity),
        delivery_id=delivery_id,
        subscriber_id=subscriber_id,
        now=now,
    )
    return _result(report, _OUTCOME[report.kind], found, suppressed)


def report_id(message: Message, raw: bytes) -> str:
    """Which report this is, however often it is handed over: its Message-ID (the MTA that
    writes a report gives it its own), else its bytes."""
    given = " ".join(str(message.get("Message-ID") or "").split())
    return hashlib.sha256(given.encode("utf-8", "replace") if given else raw).hexdigest()[:32]


def _event(report: Report, kind: Kind, channel: str, identity: str) -> ledger.Event:
    return ledger.Event(
        kind=kind,
        source=report.source,
        channel=channel,
        status=report.status,
        diagnostic=report.diagnostic,
        reporting_mta=report.reporting_mta,
        report_id=identity,
    )


def _result(
    report: Report,
    outcome: Outcome,
    found: tuple[int | None, int, str] | None,
    suppressed: bool,
    *,
    repeated: bool = False,
) -> ReportResult:
    delivery_id, subscriber_id, matched_by = found or (None, None, None)
    return ReportResult(
        outcome=outcome,
        report_type=report.report_type,
        delivery_id=delivery_id,
        subscriber_id=subscriber_id,
        recipient=report.recipient,
        status=report.status,
        diagnostic=report.diagnostic,
        matched_by=matched_by,
        suppressed=suppressed,
        repeated=repeated,
    )


# --- finding the delivery --------------------------------------------------------------


def _envelope_headers(message: Message) -> list[str]:
    return [str(v) for name in _ENVELOPE_HEADERS for v in (message.get_all(name) or [])]


def _targets(tokens: Tokens, text: bytes) -> list[BounceTarget]:
    """Whom each valid VERP address in ``text`` names, in order."""
    found = []
    for match in _VERP.finditer(text):
        try:
            found.append(tokens.read_bounce_target(match.group(1).decode("ascii")))
        except BadToken:
            continue
    return found


def _verp(tokens: Tokens, addresses: Sequence[str]) -> BounceTarget | None:
    """Whom the first valid VERP address among ``addresses`` names."""
    for address in addresses:
        for target in _targets(tokens, address.encode("utf-8", "replace")):
            return target
    return None


def _locate(
    session: Session, raw: bytes, report: Report, tokens: Tokens, verp: BounceTarget | None
) -> tuple[int | None, int, str] | None:
    """(delivery id, subscriber id, how) for a report that proves which message it is about;
    no delivery id for mail that is no digest (its VERP address names the reader)."""
    # 1. VERP: the envelope address the bounce came to, else wherever it appears in the
    # report (X-Postfix-Sender, ARF Original-Mail-From, the original's Return-Path); its
    # signature is checked. The report's recipient is not compared with the reader's: a
    # reader whose mail is forwarded gets bounces naming the forwarding target, and which
    # delivery they are about is exactly what VERP tells where the recipient cannot.
    given = [verp] if verp is not None else []
    for target in [*given, *_targets(tokens, raw)]:
        if target.delivery_id is None:
            reader = session.scalar(
                select(Subscriber.id).where(Subscriber.public_id == target.public_id)
            )
        else:
            reader = session.scalar(
                select(Delivery.subscriber_id).where(Delivery.id == target.delivery_id)
            )
        if reader is not None:
            return target.delivery_id, reader, "verp"
    # 2. The Message-ID digestd gave the original: its keyed tag must be the one digestd
    # makes for that delivery, and the recipients must agree.
    if report.original is None:
        return None
    found = _MESSAGE_ID.search(report.original.get("Message-ID") or "")
    if not found or not tokens.is_message_tag(int(found.group(1)), found.group(2)):
        return None
    row = session.execute(
        select(Delivery.id, Subscriber.id, Subscriber.email)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id == int(found.group(1)))
    ).first()
    if row is None or not (report.recipient is None or same_address(report.recipient, row[2])):
        return None
    return row[0], row[1], "message-id"


def address_forms(address: str) -> set[str]:
    """An address with its domain as written, in IDNA (punycode) and in Unicode form."""
    local, _, domain = address.strip().lower().rpartition("@")
    forms = {f"{local}@{domain}"}
    for convert in (idna.encode, idna.decode):
        try:
            converted = convert(domain, uts46=True)
        except (idna.IDNAError, UnicodeError, ValueError):
            continue
        text = converted.decode("ascii") if isinstance(converted, bytes) else converted
        forms.add(f"{local}@{text.lower()}")
    return forms


def same_address(a: str, b: str) -> bool:
    """Whether two addresses name the same mailbox, whichever form their domains take."""
    return bool(address_forms(a) & address_forms(b))

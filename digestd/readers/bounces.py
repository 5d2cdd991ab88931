"""Asynchronous bounces and complaints: RFC 3464 DSNs and RFC 5965 ARF reports.

:func:`process_report` is the whole unit behind ``POST /api/bounces``: parse the raw
report, find the delivery it is about, classify it, and act:

- hard bounce (``Action: failed`` with a 5.x.x status, except 5.2.2 "mailbox full")
  → the subscriber is ``bounced`` and the address suppressed;
- soft bounce (4.x.x failures, 5.2.2) → the delivery is marked; three in a row suppress;
- complaint (ARF ``abuse``/``fraud``/``virus``/``other``) → ``complained``, unsubscribed,
  suppressed;
- ``delayed``/``delivered``/``relayed`` notices and ``not-spam`` feedback change nothing.

Finding the delivery takes proof that the reporter saw the message: the VERP envelope
sender ``bounces+<id>.<signature>@domain`` the report was addressed to (signed), or the
Message-ID of the returned original (``<kind.period.id.<keyed tag>@domain>``, recomputed
and compared), whose recipient must then match the report's. Anything weaker — a recipient
address alone, a forged or absent VERP, a guessed Message-ID — is ``unmatched``: logged,
answered as such, and it changes no one (anybody can write a report naming an address).
Processing the same report twice changes nothing more.
"""

from __future__ import annotations

import email
import email.policy
import enum
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digestd.errors import InputError
from digestd.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from digestd.readers.suppression import SOFT_BOUNCE_MARK, soft_bounce, suppress
from digestd.tokens import BadToken, Tokens

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 2_000_000
_VERP = re.compile(rb"bounces\+([0-9]+\.[A-Za-z0-9_-]+)@", re.IGNORECASE)
_MESSAGE_ID = re.compile(
    r"<(?:daily|weekly)\.\d{4}-\d{2}-\d{2}\.(\d{1,18})\.([A-Za-z0-9_-]{16})@[^>]+>"
)
_COMPLAINTS = {"abuse", "fraud", "virus", "other"}


class ReportError(InputError):
    """Not a delivery-status or feedback report digestd can read."""


class Outcome(enum.StrEnum):
    HARD_BOUNCE = "hard-bounce"
    SOFT_BOUNCE = "soft-bounce"
    COMPLAINT = "complaint"
    IGNORED = "ignored"  # delayed/delivered notice, not-spam feedback, or already handled
    UNMATCHED = "unmatched"  # no proof it is about a message digestd sent: nobody changed


@dataclass(frozen=True)
class ReportResult:
    outcome: Outcome
    report_type: str  # "delivery-status" or "feedback-report"
    delivery_id: int | None  # None: the report is about nothing digestd sent
    subscriber_id: int | None
    recipient: str | None
    status: str | None  # DSN status code (5.1.1) or ARF Feedback-Type (abuse)
    diagnostic: str | None
    matched_by: str | None  # "verp" or "message-id"
    suppressed: bool  # the address is suppressed after this report


@dataclass(frozen=True)
class _Parsed:
    report_type: str
    outcome: Outcome
    recipient: str | None
    status: str | None
    diagnostic: str | None
    original: Message | None


def process_report(session: Session, raw: bytes, tokens: Tokens, now: datetime) -> ReportResult:
    """Read one raw DSN or ARF report and apply it. Raises :class:`ReportError` if ``raw``
    is not such a report; a report about nothing digestd sent changes nothing."""
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportError(f"report is larger than {MAX_REPORT_BYTES} bytes")
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    parsed = _parse(message)
    found = _locate(session, raw, parsed, tokens)
    delivery_id, subscriber_id, matched_by = found or (None, None, None)
    suppressed = False
    outcome = parsed.outcome
    if found is None:
        outcome = Outcome.UNMATCHED
        log.warning(
            "unmatched %s report (%s, recipient domain %s): no valid VERP address or "
            "digestd Message-ID in it; nobody changed",
            parsed.report_type,
            parsed.status or "no status",
            (parsed.recipient or "").rpartition("@")[2] or "unknown",
        )
    elif subscriber_id is not None and outcome is not Outcome.IGNORED:
        outcome, suppressed = _apply(session, outcome, delivery_id, subscriber_id, parsed, now)
    elif subscriber_id is not None:
        suppressed = _is_suppressed(session, subscriber_id)
    return ReportResult(
        outcome=outcome,
        report_type=parsed.report_type,
        delivery_id=delivery_id,
        subscriber_id=subscriber_id,
        recipient=parsed.recipient,
        status=parsed.status,
        diagnostic=parsed.diagnostic,
        matched_by=matched_by,
        suppressed=suppressed,
    )


# --- parsing ---------------------------------------------------------------------------


def _parse(message: Message) -> _Parsed:
    if message.get_content_type() != "multipart/report":
        raise ReportError("not a report: expected Content-Type multipart/report")
    report_type = (message.get_param("report-type") or "").lower()  # type: ignore[union-attr]
    parts = list(message.walk())
    original = _original(parts)
    if report_type == "delivery-status":
        return _parse_dsn(parts, original)
    if report_type == "feedback-report":
        return _parse_arf(parts, original)
    raise ReportError(f"unsupported report-type {report_type!r}")


def _fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parsed the blocks already
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    blocks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [email.message_from_string(b + "\n", policy=email.policy.compat32) for b in blocks]


def _address(value: str | None) -> str | None:
    """``rfc822; a@b`` → ``a@b``."""
    if not value:
        return None
    address = value.split(";", 1)[-1].strip().strip("<>").strip()
    return address.lower() or None


def _one_line(value: str | None) -> str | None:
    return " ".join(value.split()) if value else None


def _parse_dsn(parts: list[Message], original: Message | None) -> _Parsed:
    status_part = next(
        (p for p in parts if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        raise ReportError("delivery-status report without a message/delivery-status part")
    blocks = _fields(status_part)
    recipients = [b for b in blocks if b.get("Final-Recipient") or b.get("Original-Recipient")]
    if not recipients:
        raise ReportError("delivery-status report names no recipient")
    # digestd sends one recipient per message: the first failed one is the one.
    block = next((b for b in recipients if (b.get("Action") or "").lower() == "failed"), None)
    block = block or recipients[0]
    action = (block.get("Action") or "").strip().lower()
    status = (block.get("Status") or "").strip() or None
    if action == "failed":
        hard = bool(status and status.startswith("5") and status != "5.2.2")
        outcome = Outcome.HARD_BOUNCE if hard else Outcome.SOFT_BOUNCE
    else:
        outcome = Outcome.IGNORED  # delayed, delivered, relayed, expanded
    return _Parsed(
        report_type="delivery-status",
        outcome=outcome,
        recipient=_address(block.get("Original-Recipient"))
        or _address(block.get("Final-Recipient")),
        status=status,
        diagnostic=_one_line(block.get("Diagnostic-Code")),
        original=original,
    )


def _parse_arf(parts: list[Message], original: Message | None) -> _Parsed:
    part = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if part is None:
        raise ReportError("feedback report without a message/feedback-report part")
    fields: dict[str, str] = {}
    for block in _fields(part):
        for name, value in block.items():
            fields.setdefault(name.lower(), str(value))
    feedback = fields.get("feedback-type", "").strip().lower()
    if not feedback:
        raise ReportError("feedback report without Feedback-Type")
    recipient = _address(fields.get("original-rcpt-to"))
    if recipient is None and original is not None:
        recipient = _address(original.get("To"))
    return _Parsed(
        report_type="feedback-report",
        outcome=Outcome.COMPLAINT if feedback in _COMPLAINTS else Outcome.IGNORED,
        recipient=recipient,
        status=feedback,
        diagnostic=_one_line(fields.get("user-agent")),
        original=original,
    )


def _original(parts: Iterable[Message]) -> Message | None:
    """The returned message (or its headers), if the report carries it."""
    for part in parts:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text, policy=email.policy.compat32)
    return None


# --- finding the delivery --------------------------------------------------------------


def _locate(
    session: Session, raw: bytes, parsed: _Parsed, tokens: Tokens
) -> tuple[int, int, str] | None:
    """(delivery id, subscriber id, how) for a report that proves which message it is about."""
    # 1. VERP: wherever it appears (To/Delivered-To of the report, X-Postfix-Sender,
    # ARF Original-Mail-From, the original's Return-Path), its signature is checked.
    for match in _VERP.finditer(raw):
        try:
            delivery_id = tokens.read_bounce_tag(match.group(1).decode("ascii"))
        except BadToken:
            continue
        subscriber_id = session.scalar(
            select(Delivery.subscriber_id).where(Delivery.id == delivery_id)
        )
        if subscriber_id is not None:
            return delivery_id, subscriber_id, "verp"
    # 2. The Message-ID digestd gave the original: its keyed tag must be the one digestd
    # makes for that delivery, and the recipients must agree.
    if parsed.original is not None:
        found = _MESSAGE_ID.search(parsed.original.get("Message-ID") or "")
        if found and tokens.is_message_tag(int(found.group(1)), found.group(2)):
            row = session.execute(
                select(Delivery.id, Subscriber.id, Subscriber.email)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.id == int(found.group(1)))
            ).first()
            if row is not None and parsed.recipient in (None, row.email.lower()):
                return row[0], row[1], "message-id"
    return None


# --- acting ----------------------------------------------------------------------------


def _is_suppressed(session: Session, subscriber_id: int) -> bool:
    status = session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id))
    return status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


def _apply(
    session: Session,
    outcome: Outcome,
    delivery_id: int | None,
    subscriber_id: int,
    parsed: _Parsed,
    now: datetime,
) -> tuple[Outcome, bool]:
    detail = parsed.diagnostic or parsed.status or ""
    if outcome is Outcome.COMPLAINT:
        status = session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id))
        if status != SubscriberStatus.COMPLAINED:
            suppress(session, subscriber_id, SubscriberStatus.COMPLAINED, "complaint", now)
        return outcome, True
    if outcome is Outcome.HARD_BOUNCE:
        if delivery_id is not None:
            _note(session, delivery_id, f"bounced: {detail}")
        if not _is_suppressed(session, subscriber_id):
            suppress(session, subscriber_id, SubscriberStatus.BOUNCED, "hard-bounce", now)
        return outcome, True
    # Soft: one mark per delivery, so a report processed twice counts once.
    if delivery_id is None:
        return Outcome.IGNORED, _is_suppressed(session, subscriber_id)
    previous = session.scalar(select(Delivery.last_error).where(Delivery.id == delivery_id))
    if previous and previous.startswith(SOFT_BOUNCE_MARK):
        return Outcome.IGNORED, _is_suppressed(session, subscriber_id)
    _note(session, delivery_id, f"{SOFT_BOUNCE_MARK} {detail}")
    suppressed = soft_bounce(session, subscriber_id, now)
    return outcome, suppressed or _is_suppressed(session, subscriber_id)


def _note(session: Session, delivery_id: int, text: str) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.SENT)
        .values(last_error=text[:1000])
        .execution_options(synchronize_session=False)
    )

"""Reading bounce reports as real mail systems write them: RFC 3464 DSNs, RFC 5965 ARF
complaints, and bounces that are neither.

What real MTAs and appliances send, and this reader takes:

- the delivery-status part anywhere in the MIME tree: inside ``multipart/mixed``, without
  ``report-type`` (OpenSMTPD, several appliances), as ``message/global-delivery-status``
  (RFC 6533), base64-encoded;
- comments in fields: ``Status: 5.2.2 (Remote SMTP server has responded ...)``,
  ``Action: failed (Bad destination mailbox address)``;
- Action synonyms (``failure``, ``expired``, ``bounced``) and a missing Action (read from the
  Status class);
- a reporter's unspecific ``Status: 5.0.0`` (Exim) next to a precise
  ``Diagnostic-Code: smtp; 550 5.1.1 ...``: the precise code wins;
- a plain-text bounce (qmail, some gateways), read for the SMTP reply it quotes; it counts
  only when the message comes from a mailer daemon, never from an auto-reply.

What a report means is the bounce policy's call (:mod:`digestd.readers.bounce_policy`).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import quopri
import re
from dataclasses import dataclass
from email.message import Message

from digestd.errors import InputError
from digestd.readers.bounce_policy import (
    Kind,
    Stage,
    classify,
    codes_in,
    normal_status,
    unspecific,
)

MAX_REPORT_BYTES = 2_000_000
MAX_MULTIPARTS = 50
DSN_TYPES = {
    "message/delivery-status",
    "message/global-delivery-status",
    "text/delivery-status",
}
_COMPLAINTS = {"abuse", "fraud", "virus", "other"}
_FAILED = {"failed", "failure", "fail", "expired", "bounced", "undeliverable", "undelivered"}
_DELAYED = {"delayed", "delay", "deferred", "warning", "transient"}
_DAEMON = re.compile(r"mailer[-_ ]?daemon|postmaster|mail delivery", re.IGNORECASE)
_AUTO_REPLY = re.compile(
    r"out of (the )?office|auto(matic)?[- ]?reply|autoreply|vacation|abwesenheit", re.IGNORECASE
)
_BOUNDARY = re.compile(rb"boundary\s*\*?[0-9]*\*?\s*=", re.IGNORECASE)
_BODY_REPLY = re.compile(r"(?m)(?:^\s*|:\s+)([45]\d\d)[ -]+(?:([45]\.\d{1,3}\.\d{1,3})\b)?")


class ReportError(InputError):
    """Not a delivery-status or feedback report digestd can read."""


@dataclass(frozen=True)
class Report:
    source: str  # dsn | arf | mail (a bounce that is no report)
    kind: Kind  # what the policy makes of it (never UNMATCHED: that is about finding it)
    recipient: str | None  # as the report names it, lower-cased
    status: str | None  # the code the kind rests on (5.1.1, a bare 550) or a Feedback-Type
    diagnostic: str | None
    reporting_mta: str | None
    original: Message | None  # the returned message or its headers

    @property
    def report_type(self) -> str:
        return {"dsn": "delivery-status", "arf": "feedback-report"}.get(self.source, "bounce")


def parse(raw: bytes) -> Message:
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportError(f"report is larger than {MAX_REPORT_BYTES} bytes")
    # Reports nest two or three levels; thousands would exhaust the email package's
    # recursion (walk, as_string) on a crafted message.
    if len(_BOUNDARY.findall(raw)) > MAX_MULTIPARTS:
        raise ReportError(f"report has more than {MAX_MULTIPARTS} multipart parts")
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def read(message: Message) -> Report:
    """What ``message`` reports. A message with neither a delivery-status nor a feedback
    part is read as a plain bounce (the caller decides whether to believe it)."""
    parts = list(message.walk())
    original = _original(parts)
    status_part = next((p for p in parts if p.get_content_type() in DSN_TYPES), None)
    if status_part is not None:
        return _dsn(message, status_part, original)
    feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback is not None:
        return _arf(feedback, original)
    return _plain_bounce(message, original)


# --- RFC 3464 --------------------------------------------------------------------------


def _blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, field names lower-cased, values unfolded."""
    payload = part.get_payload()
    encoded = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if isinstance(payload, list) and encoded in ("base64", "quoted-printable"):
        # Parsed as field blocks though it is encoded (an appliance): decode it first.
        text = "".join(p.as_string() for p in payload if isinstance(p, Message))
        try:
            data = base64.b64decode(text) if encoded == "base64" else quopri.decodestring(text)
        except (binascii.Error, ValueError) as exc:
            raise ReportError(f"the delivery-status part is not valid {encoded}") from exc
        text = data.decode("utf-8", "replace")
    elif isinstance(payload, list) and part.get_content_type() == "message/delivery-status":
        return [_fields(block.items()) for block in payload if isinstance(block, Message)]
    elif isinstance(payload, list):  # another message/* type, parsed as a message
        text = "".join(str(p) for p in payload if isinstance(p, Message))
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [
        _fields(email.message_from_string(b + "\n", policy=email.policy.compat32).items())
        for b in blocks
    ]


def _fields(items: list[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in items:
        fields.setdefault(name.lower(), " ".join(str(value).split()))
    return fields


def _dsn(message: Message, part: Message, original: Message | None) -> Report:
    blocks = _blocks(part)
    recipients = [b for b in blocks if "final-recipient" in b or "original-recipient" in b]
    if not recipients:
        raise ReportError("delivery-status report names no recipient")
    per_message = blocks[0] if blocks and blocks[0] not in recipients else {}
    # digestd sends one recipient per message: a failed one first, then a delayed one.
    actions = [_action(b, message) for b in recipients]
    index = next(
        (i for want in ("failed", "delayed") for i, a in enumerate(actions) if a == want), 0
    )
    block, action = recipients[index], actions[index]
    recipient = _address(block.get("original-recipient")) or _address(block.get("final-recipient"))
    # OpenSMTPD writes no Diagnostic-Code: the reply is in its text, after the address.
    diagnostic = block.get("diagnostic-code") or _quoted_reply(own_text(message), recipient)
    code, status = _codes(block.get("status"), diagnostic)
    if action == "delayed" and (status or "").endswith(".4.7"):
        action = "failed"  # "delivery time expired": the reporter gave up (OpenSMTPD 6.8)
    if action == "failed":
        kind = classify(_stage(own_text(message)), code, status).kind
    else:
        kind = Kind.NOTICE  # delayed, delivered, relayed, expanded
    return Report(
        source="dsn",
        kind=kind,
        recipient=recipient,
        status=status or (str(code) if code else None),
        diagnostic=diagnostic,
        reporting_mta=_mta(per_message.get("reporting-mta") or block.get("remote-mta")),
        original=original,
    )


def _action(block: dict[str, str], message: Message) -> str:
    """failed, delayed, delivered, relayed or expanded, whatever the reporter wrote."""
    words = _uncommented(block.get("action", "")).lower().split()
    word = words[0] if words else ""
    if word in _FAILED:
        return "failed"
    if word in _DELAYED:
        return "delayed"
    if word:
        return word
    status = normal_status(_uncommented(block.get("status", ""))) or ""
    if status.startswith("2"):
        return "delivered"
    if status.startswith("4") and "delay" in (message.get("Subject") or "").lower():
        return "delayed"
    return "failed"  # no Action: a report of a failure, as appliances that omit it mean


def _codes(status_field: str | None, diagnostic: str | None) -> tuple[int | None, str | None]:
    """The reply code and enhanced status the verdict rests on: the Status field, unless
    it only gives the class (``5.0.0``) and the diagnostic quotes something precise."""
    status = normal_status(_uncommented(status_field or ""))
    code, quoted = codes_in(diagnostic or "")
    if not unspecific(status):
        return code, status
    if quoted is not None and not unspecific(quoted):
        return code, quoted
    if code is not None and quoted is None and (status is None or str(code)[0] == status[0]):
        return code, None  # the reporter's X.0.0 adds nothing to a bare reply code
    return code, status or quoted


def _quoted_reply(text: str, recipient: str | None) -> str | None:
    """``gone@example.com: 550 5.1.1 <...>: User unknown`` in a report's text → the reply."""
    if not recipient:
        return None
    for line in text.splitlines():
        before, found, _ = line.lower().partition(recipient)
        if not found:
            continue
        reply = line[len(before) + len(recipient) :].lstrip(">").lstrip(":").strip()
        if codes_in(reply)[0] is not None:
            return " ".join(reply.split())
    return None


def _stage(text: str) -> Stage:
    """Which command the remote server refused, when the human-readable part says
    (Postfix: "in reply to end of DATA command"; Exim: "after end of data")."""
    text = " ".join(text.split()).lower()
    if "in reply to end of data command" in text or "after end of data" in text:
        return Stage.END
    if "in reply to data command" in text or "after data:" in text:
        return Stage.DATA
    return Stage.REPORT


# --- RFC 5965 --------------------------------------------------------------------------


def _arf(part: Message, original: Message | None) -> Report:
    fields: dict[str, str] = {}
    for block in _blocks(part):
        for name, value in block.items():
            fields.setdefault(name, value)
    feedback = _uncommented(fields.get("feedback-type", "")).lower()
    if not feedback:
        raise ReportError("feedback report without Feedback-Type")
    recipient = _address(fields.get("original-rcpt-to"))
    if recipient is None and original is not None:
        recipient = _address(original.get("To"))
    return Report(
        source="arf",
        kind=Kind.COMPLAINT if feedback in _COMPLAINTS else Kind.NOTICE,
        recipient=recipient,
        status=feedback[:20],
        diagnostic=fields.get("user-agent"),
        reporting_mta=_mta(fields.get("reporting-mta")) or fields.get("source-ip"),
        original=original,
    )


# --- neither -----------------------------------------------------------------------------


def _plain_bounce(message: Message, original: Message | None) -> Report:
    """A bounce without a report part: the SMTP reply it quotes, if a mailer daemon sent
    it. An auto-reply or a person's answer to the bounce address is a notice."""
    sender = message.get("From") or ""
    subject = message.get("Subject") or ""
    daemon = bool(_DAEMON.search(sender)) and not _AUTO_REPLY.search(subject)
    found = _BODY_REPLY.search(text := own_text(message)) if daemon else None
    kind, status, diagnostic = Kind.NOTICE, None, " ".join(subject.split())[:300] or None
    if found is not None:
        code, enhanced = int(found.group(1)), normal_status(found.group(2))
        kind = classify(Stage.REPORT, code, enhanced).kind
        status = enhanced or str(code)
        line_end = text.find("\n", found.start(1))
        diagnostic = " ".join(text[found.start(1) : line_end if line_end > 0 else None].split())
    return Report(
        source="mail",
        kind=kind,
        recipient=None,
        status=status,
        diagnostic=diagnostic,
        reporting_mta=_mta(sender.rpartition("@")[2].strip(" >")) or None,
        original=original,
    )


# --- shared ------------------------------------------------------------------------------


def _uncommented(value: str) -> str:
    """The value without RFC 5322 comments: ``5.2.2 (mailbox full)`` → ``5.2.2``."""
    return re.sub(r"\([^()]*\)", " ", value).strip()


def _address(value: str | None) -> str | None:
    """``rfc822; a@b`` (or ``utf-8; a@b``) → ``a@b``."""
    if not value:
        return None
    address = _uncommented(value.split(";", 1)[-1]).strip().strip("<>").strip()
    return address.lower() or None


def _mta(value: str | None) -> str | None:
    """``dns; mx.example.com`` → ``mx.example.com``."""
    if not value:
        return None
    return _uncommented(value.split(";", 1)[-1]).strip()[:255] or None


def own_text(message: Message) -> str:
    """The text/plain the reporter wrote: not the returned message's (a digest quoting
    "550 readers" must not read as a refusal)."""
    if message.get_content_maintype() == "message":
        return ""
    if message.is_multipart():
        payload = message.get_payload()
        assert isinstance(payload, list)
        return "\n".join(own_text(part) for part in payload if isinstance(part, Message))
    if message.get_content_type() != "text/plain":
        return ""
    data = message.get_payload(decode=True)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _original(parts: list[Message]) -> Message | None:
    """The returned message (or its headers), if the report carries it."""
    for part in parts:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind in ("text/rfc822-headers", "message/global-headers"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text, policy=email.policy.compat32)
    return None

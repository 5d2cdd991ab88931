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
  ``Diagnostic-Code: smtp; 550 5.1.1 ...``: the precise code wins; no Diagnostic-Code at
  all (OpenSMTPD): the reply quoted after the recipient in the reporter's text;
- an expiry reported as ``Action: delayed`` with ``Status: 4.4.7`` (OpenSMTPD 6.8): a failure;
- a plain-text bounce (qmail, some gateways), read for the SMTP reply it quotes; it counts
  only when the message comes from a mailer daemon, never from an auto-reply.

What a report means is the bounce policy's call (:mod:`digestd.readers.bounce_policy`).
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import parseaddr

from digestd.readers.bounce_policy import (
    Kind,
    Stage,
    classify,
    codes_in,
    normal_status,
    unspecific,
)
from digestd.readers.report_parts import (
    REPORT_POLICY,
    ReportError,
    address_of,
    field_blocks,
    mta_of,
    original_of,
    own_text,
    uncommented,
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
# A reply to the digest ("Re: ...") is a person's or their autoresponder's, never a bounce.
_AUTO_REPLY = re.compile(
    r"out of (the )?office|auto(matic)?[- ]?reply|autoreply|vacation|abwesenheit|^\s*re:",
    re.IGNORECASE,
)
_BOUNDARY = re.compile(rb"boundary\s*\*?[0-9]*\*?\s*=", re.IGNORECASE)
_MESSAGE_PART = re.compile(rb"content-type:\s*message/", re.IGNORECASE)
# Within a line ([ \t], not \s): a run of blank lines would otherwise be scanned again from
# each of them, quadratic in a report's size (100 KB of empty lines held the daemon 46 s).
_BODY_REPLY = re.compile(r"(?m)(?:^[ \t]*|:[ \t]+)([45]\d\d)[ -]+(?:([45]\.\d{1,3}\.\d{1,3})\b)?")


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
    # recursion (parsing, walk, as_string) on a crafted message: multiparts, or messages
    # (message/rfc822) each inside the last.
    if len(_BOUNDARY.findall(raw)) + len(_MESSAGE_PART.findall(raw)) > MAX_MULTIPARTS:
        raise ReportError(f"report has more than {MAX_MULTIPARTS} multipart or message parts")
    return email.message_from_bytes(raw, policy=REPORT_POLICY)


def read(message: Message) -> Report:
    """What ``message`` reports. A message with neither a delivery-status nor a feedback
    part is read as a plain bounce (the caller decides whether to believe it)."""
    parts = list(message.walk())
    original = original_of(parts)
    status_part = next((p for p in parts if p.get_content_type() in DSN_TYPES), None)
    if status_part is not None:
        return _dsn(message, status_part, original)
    feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback is not None:
        return _arf(feedback, original)
    return _plain_bounce(message, original)


# --- RFC 3464 --------------------------------------------------------------------------


def _dsn(message: Message, part: Message, original: Message | None) -> Report:
    blocks = field_blocks(part)
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
    recipient = address_of(block.get("original-recipient")) or address_of(
        block.get("final-recipient")
    )
    # OpenSMTPD writes no Diagnostic-Code: the reply is in its text, after the address.
    diagnostic = block.get("diagnostic-code") or _quoted_reply(own_text(message), recipient)
    code, status = _codes(block.get("status"), diagnostic)
    if action == "delayed" and (status or "").endswith(".4.7"):
        action = "failed"  # "delivery time expired": the reporter gave up (OpenSMTPD 6.8)
    if action == "failed":
        kind = classify(_stage(own_text(message)), code, status, diagnostic or "").kind
    else:
        kind = Kind.NOTICE  # delayed, delivered, relayed, expanded
    return Report(
        source="dsn",
        kind=kind,
        recipient=recipient,
        status=status or (str(code) if code else None),
        diagnostic=diagnostic,
        reporting_mta=mta_of(per_message.get("reporting-mta") or block.get("remote-mta")),
        original=original,
    )


def _action(block: dict[str, str], message: Message) -> str:
    """failed, delayed, delivered, relayed or expanded, whatever the reporter wrote."""
    words = uncommented(block.get("action", "")).lower().split()
    word = words[0] if words else ""
    if word in _FAILED:
        return "failed"
    if word in _DELAYED:
        return "delayed"
    if word:
        return word
    status = normal_status(uncommented(block.get("status", ""))) or ""
    if status.startswith("2"):
        return "delivered"
    if status.startswith("4") and "delay" in (message.get("Subject") or "").lower():
        return "delayed"
    return "failed"  # no Action: a report of a failure, as appliances that omit it mean


def _codes(status_field: str | None, diagnostic: str | None) -> tuple[int | None, str | None]:
    """The reply code and enhanced status the verdict rests on: the Status field, unless
    it only gives the class (``5.0.0``) and the diagnostic quotes something precise."""
    status = normal_status(uncommented(status_field or ""))
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
    for block in field_blocks(part):
        for name, value in block.items():
            fields.setdefault(name, value)
    feedback = uncommented(fields.get("feedback-type", "")).lower()
    if not feedback:
        raise ReportError("feedback report without Feedback-Type")
    recipient = address_of(fields.get("original-rcpt-to"))
    if recipient is None and original is not None:
        # A header, not a report field: "Reader <reader@example.com>" as often as not.
        recipient = parseaddr(original.get("To") or "")[1].lower() or None
    return Report(
        source="arf",
        kind=Kind.COMPLAINT if feedback in _COMPLAINTS else Kind.NOTICE,
        recipient=recipient,
        status=feedback[:20],
        diagnostic=fields.get("user-agent"),
        reporting_mta=mta_of(fields.get("reporting-mta")) or fields.get("source-ip"),
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
        line_end = text.find("\n", found.start(1))
        diagnostic = " ".join(text[found.start(1) : line_end if line_end > 0 else None].split())
        # The whole line, read as a Diagnostic-Code is: qmail's enhanced code comes last.
        code, enhanced = codes_in(f"smtp; {diagnostic}")
        kind = classify(Stage.REPORT, code, enhanced, diagnostic).kind
        status = enhanced or str(code)
    return Report(
        source="mail",
        kind=kind,
        recipient=None,
        status=status,
        diagnostic=diagnostic,
        reporting_mta=mta_of(sender.rpartition("@")[2].strip(" >")) or None,
        original=original,
    )

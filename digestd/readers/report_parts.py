"""Taking a report message apart: the field blocks of its status part (however encoded),
the text its reporter wrote, the returned original, and field values without comments.
The reading of what they say is :mod:`digestd.readers.reports`."""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import Compat32

from digestd.errors import InputError


class ReportError(InputError):
    """Not a delivery-status or feedback report digestd can read."""


class _ReportPolicy(Compat32):
    """The email package's compat32 parsing, but every header value is text: compat32 hands
    a header with 8-bit bytes in it (a German MTA's "Unzustellbar: Tägliche Übersicht") out
    as a ``Header`` object, on which every string operation of the reading failed, and the
    bounce was never recorded. Its bytes are read as UTF-8 (anything else: U+FFFD)."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


REPORT_POLICY = _ReportPolicy()


def field_blocks(part: Message) -> list[dict[str, str]]:
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
        # As bytes: as a string, a field with 8-bit text in it comes out as an encoded word.
        text = b"".join(p.as_bytes() for p in payload if isinstance(p, Message)).decode(
            "utf-8", "replace"
        )
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [_fields(_HEADERS.parsestr(b + "\n").items()) for b in blocks]


def _fields(items: list[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in items:
        fields.setdefault(name.lower(), " ".join(str(value).split()))
    return fields


def uncommented(value: str) -> str:
    """The value without RFC 5322 comments: ``5.2.2 (mailbox full)`` → ``5.2.2``."""
    return re.sub(r"\([^()]*\)", " ", value).strip()


def address_of(value: str | None) -> str | None:
    """``rfc822; a@b`` (or ``utf-8; a@b``) → ``a@b``."""
    if not value:
        return None
    address = uncommented(value.split(";", 1)[-1]).strip().strip("<>").strip()
    return address.lower() or None


def mta_of(value: str | None) -> str | None:
    """``dns; mx.example.com`` → ``mx.example.com``."""
    if not value:
        return None
    return uncommented(value.split(";", 1)[-1]).strip()[:255] or None


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


def original_of(parts: list[Message]) -> Message | None:
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
                return _BYTES_HEADERS.parsebytes(text)
    return None


# Decoded parts (a base64 status part, returned headers) are read as headers and nothing
# more: parsed as messages, a body nested thousands of multiparts deep inside them, hidden
# from parse()'s count by the encoding, would exhaust the email package's recursion.
_HEADERS = HeaderParser(policy=REPORT_POLICY)
_BYTES_HEADERS = BytesHeaderParser(policy=REPORT_POLICY)

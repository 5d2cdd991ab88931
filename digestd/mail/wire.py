"""Bytes as SMTP's DATA carries them: quoted-printable text in chunks that end on a line,
header lines folded and encoded, addresses in their ASCII form. What
:class:`~digestd.mail.template.MessageTemplate` is made of, per digest and per recipient.
"""

from __future__ import annotations

import binascii
import functools
import re
from email.header import Header
from email.policy import SMTP

import idna

CRLF = b"\r\n"


class WireBytes(bytes):
    """A message already in the form SMTP's DATA carries it (RFC 5321 §4.5.2): every line
    ends in CRLF and none starts with ".", so there is nothing to dot-stuff.

    :class:`MessageTemplate` makes only such messages, so the transport sends them as they
    are instead of scanning 20 KB per recipient for bare line ends and dot lines (those
    scans cost more than the rest of the SMTP conversation). The type carries what was
    established once per digest.
    """


def _escape_dot_lines(encoded: bytes) -> bytes:
    """Quoted-printable lines that start with "." get it as ``=2E`` (same decoded text),
    re-wrapped to stay within 76 characters without splitting an ``=XX`` escape."""
    out: list[bytes] = []
    for line in encoded.split(CRLF):
        while line.startswith(b"."):
            line = b"=2E" + line[1:]
            if len(line) <= 76:
                break
            cut = 75  # room for the soft break's "="
            if line[cut - 1 : cut] == b"=":
                cut -= 1
            elif line[cut - 2 : cut - 1] == b"=":
                cut -= 2
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return CRLF.join(out)


_HTML_SPECIAL = re.compile(r"[&<>\"']")
# What quoted-printable leaves as it is ("=", spaces and non-ASCII need encoding): the
# characters of a link, which is what is encoded per recipient.
_QP_PLAIN = re.compile(r"[A-Za-z0-9_./:?&%#~+,;@!$*()'-]+")


def needs_no_escaping(text: str) -> bool:
    """Text (a URL) that quoted-printable and HTML both leave as it is."""
    return bool(_QP_PLAIN.fullmatch(text)) and not _HTML_SPECIAL.search(text)


def qp_lines(data: bytes) -> bytes:
    """ASCII with nothing quoted-printable escapes (a link, encoded for every recipient) and
    no "." every 75th byte, as quoted-printable: cut into lines of 75 and a soft break, which
    is all binascii would do, a few times faster."""
    return b"".join([data[i : i + 75] + b"=\r\n" for i in range(0, len(data), 75)])


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends; a chunk not ending a line ends in a soft break."""
    if not text:
        return b""
    if _QP_PLAIN.fullmatch(text) and "." not in text[::75]:
        return qp_lines(text.encode("ascii"))
    # b2a_qp passes a lone CR through as is and keeps a CRLF text's CRLFs: only LF in,
    # so that every line end comes out as CRLF.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\n", CRLF)
    if not encoded.endswith(CRLF):
        # binascii lets a last line run to 76 characters: room must be left for the "="
        start = encoded.rfind(CRLF) + 2 if CRLF in encoded else 0
        if len(encoded) - start > 75:
            cut = start + 75
            if encoded[cut - 1 : cut] == b"=":
                cut -= 1
            elif encoded[cut - 2 : cut - 1] == b"=":
                cut -= 2
            encoded = encoded[:cut] + b"=" + CRLF + encoded[cut:]
        encoded += b"=" + CRLF
    if encoded.startswith(b".") or b"\n." in encoded:
        encoded = _escape_dot_lines(encoded)
    return encoded


@functools.lru_cache(maxsize=1024)
def header(name: str, value: str) -> bytes:
    """One header line, folded and RFC 2047-encoded as needed; CR/LF can never get through.
    Cached: every digest repeats From and List-Id, and the email package's folding is a
    tenth of a render."""
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
    if "=?" in value:
        # Text that reads like an RFC 2047 encoded-word would be decoded (by the parser
        # below and by mail clients): "=0D=0A" in it would be a line break, a header of
        # the writer's choosing. Encoded as a whole, it reads as the text it is.
        words = Header(value, "utf-8", header_name=name).encode(linesep="\r\n", maxlinelen=78)
        return f"{name}: {words}\r\n".encode("ascii")
    # header_factory parses and RFC 2047-encodes; fold_binary alone passes non-ASCII through.
    folded: str = SMTP.header_factory(name, value).fold(policy=SMTP)
    return folded.encode("ascii")


def _plain_header(name: str, value: str) -> bytes:
    """Fast path for per-recipient headers whose values digestd builds itself (ASCII, no CR/LF).

    The email package's folding costs tens of microseconds a call; here a long
    List-Unsubscribe is folded at its comma instead.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in {name} header")
    line = f"{name}: {value}"
    if len(line) > 78 and ", " in value:
        line = line.replace(", ", ",\r\n ")
    return line.encode("ascii") + CRLF


def ascii_address(address: str) -> str:
    """The address as it goes on the wire: an internationalised domain in IDNA form."""
    local, _, domain = address.rpartition("@")
    try:
        domain.encode("ascii")
    except UnicodeEncodeError:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    return f"{local}@{domain}"

"""MIME bytes for one recipient, made by substitution into bytes prepared once per digest.

A digest is rendered once (:mod:`digestd.mail.render`); :class:`MessageTemplate` then encodes its
text and HTML as quoted-printable *around* the per-recipient link placeholders, so each
recipient's message is a join of prepared byte chunks plus a few freshly encoded links.
Every chunk ends on a line boundary (a QP soft break where the text did not end a line),
so the result is valid QP with lines ≤ 76 characters whatever the links' lengths.
"""

from __future__ import annotations

import binascii
import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.policy import SMTP

import idna

from digestd.mail.presentation import LINK_PLACEHOLDERS
from digestd.mail.render import RenderedEmail

CRLF = b"\r\n"
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in LINK_PLACEHOLDERS.values()))
_NAME_OF = {placeholder: name for name, placeholder in LINK_PLACEHOLDERS.items()}


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


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends; a chunk not ending a line ends in a soft break."""
    if not text:
        return b""
    # b2a_qp passes a lone CR through as is and keeps a CRLF text's CRLFs: only LF in,
    # so that every line end comes out as CRLF.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\n", CRLF)
    if not encoded.endswith(CRLF):
        encoded += b"=" + CRLF
    if encoded.startswith(b".") or b"\n." in encoded:
        encoded = _escape_dot_lines(encoded)
    return encoded


def _split(text: str) -> tuple[list[bytes], list[str]]:
    """Static QP chunks and, between them, the names of the links to substitute."""
    if not text.endswith("\n"):
        text += "\n"  # the CRLF before a boundary belongs to the boundary (RFC 2046)
    chunks: list[bytes] = []
    names: list[str] = []
    position = 0
    for match in _PLACEHOLDER_RE.finditer(text):
        chunks.append(_qp(text[position : match.start()]))
        names.append(_NAME_OF[match.group()])
        position = match.end()
    chunks.append(_qp(text[position:]))
    return chunks, names


def header(name: str, value: str) -> bytes:
    """One header line, folded and RFC 2047-encoded as needed; CR/LF can never get through."""
    value = " ".join(value.replace("\r", " ").replace("\n", " ").split())
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


@dataclass(frozen=True)
class Personal:
    """What differs between two recipients of the same digest."""

    to: str  # ASCII form
    message_id: str
    date: str  # RFC 5322 date
    links: Mapping[str, str]  # unsubscribe, preferences, view: full URLs
    unsubscribe_mailto: str


class MessageTemplate:
    def __init__(
        self, rendered: RenderedEmail, *, from_header: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.subject = rendered.subject
        # Derived from the content, so a digest renders to the same bytes wherever it is
        # rendered (a worker process or the sender). "=_" can never occur in quoted-printable
        # text (a literal "=" is encoded "=3D"), so the boundary cannot collide with a body.
        digest = hashlib.sha256(
            "\0".join((rendered.subject, rendered.text, rendered.html)).encode()
        ).hexdigest()
        boundary = "=_digestd_" + digest[:24]
        self._head = b"".join(
            [header("From", from_header), header("Subject", rendered.subject)]
            + [header(name, value) for name, value in headers]
            + [
                b"MIME-Version: 1.0\r\n",
                f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'.encode(),
            ]
        )
        part_head = (
            "--{b}\r\nContent-Type: text/{sub}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        self._text_head = (
            b"\r\nThis is a multi-part message in MIME format.\r\n\r\n"
            + part_head.format(b=boundary, sub="plain").encode()
        )
        self._html_head = part_head.format(b=boundary, sub="html").encode()
        self._tail = f"--{boundary}--\r\n".encode()
        self._text_chunks, self._text_links = _split(rendered.text)
        self._html_chunks, self._html_links = _split(rendered.html)

    def compose(self, personal: Personal) -> WireBytes:
        links = personal.links
        unsubscribe = f"<{links['unsubscribe']}>, <mailto:{personal.unsubscribe_mailto}>"
        out = [
            self._head,
            _plain_header("To", personal.to),
            _plain_header("Date", personal.date),
            _plain_header("Message-ID", personal.message_id),
            _plain_header("List-Unsubscribe", unsubscribe),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            self._text_head,
        ]
        # Each link appears several times (text and HTML): encoded once per message.
        text = {name: _qp(links[name]) for name in links}
        escaped = {name: html.escape(value) for name, value in links.items()}
        in_html = {
            name: text[name] if escaped[name] == links[name] else _qp(escaped[name])
            for name in links
        }
        _interleave(out, self._text_chunks, [text[n] for n in self._text_links])
        out.append(self._html_head)
        _interleave(out, self._html_chunks, [in_html[n] for n in self._html_links])
        out.append(self._tail)
        # Every part is CRLF-terminated; header lines start with a name or (folded) a
        # space, body lines come from _qp: so no line starts with ".".
        return WireBytes(b"".join(out))


def _interleave(out: list[bytes], chunks: list[bytes], values: list[bytes]) -> None:
    for chunk, value in zip(chunks, values, strict=False):
        out.append(chunk)
        out.append(value)
    out.append(chunks[-1])

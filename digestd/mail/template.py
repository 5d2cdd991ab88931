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
import json
import re
import secrets
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from email.policy import SMTP
from functools import cached_property

import idna

from digestd.mail.render import RenderedEmail

CRLF = b"\r\n"


class LinkSlots:
    """Placeholders for the links each recipient's copy fills in, unguessable per render.

    A placeholder is letters, digits and underscores only, so it passes unchanged through
    Jinja escaping, MJML, premailer and quoted-printable. Its random part means text from
    an article can never be taken for one.
    """

    def __init__(self) -> None:
        self._prefix = f"__digestd{secrets.token_hex(6)}_"
        self._pattern = re.compile(re.escape(self._prefix) + r"([a-z0-9_]+?)__")

    def placeholder(self, name: str) -> str:
        return f"{self._prefix}{name}__"

    def links(self, names: Iterable[str]) -> dict[str, str]:
        return {name: self.placeholder(name) for name in names}

    def split(self, text: str) -> tuple[list[bytes], list[str]]:
        """Static QP chunks of ``text`` and, between them, the names of the links."""
        if not text.endswith("\n"):
            text += "\n"  # the CRLF before a boundary belongs to the boundary (RFC 2046)
        chunks: list[bytes] = []
        names: list[str] = []
        position = 0
        for match in self._pattern.finditer(text):
            chunks.append(_qp(text[position : match.start()]))
            names.append(match.group(1))
            position = match.end()
        chunks.append(_qp(text[position:]))
        return chunks, names


NO_SLOTS = LinkSlots()  # for emails rendered with their real links (nothing to fill in)


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


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends; a chunk not ending a line ends in a soft break."""
    if not text:
        return b""
    if _QP_PLAIN.fullmatch(text) and "." not in text[::75]:
        # A link, encoded for every recipient: cut into lines of 75 and a soft break, which
        # is all binascii would do, a few times faster.
        data = text.encode("ascii")
        return b"".join([data[i : i + 75] + b"=\r\n" for i in range(0, len(data), 75)])
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
    unsubscribe_mailto: str  # the reader's own unsubscribe address (composer.Links.mailto)


TEMPLATE_FORMAT = 1  # bump when the stored form changes; older ones are rendered again


class TemplateFormatError(ValueError):
    """Stored template bytes this version cannot read."""


@dataclass(frozen=True)
class MessageTemplate:
    """A rendered email, QP-encoded once, with the names of the links each recipient's copy
    fills in between its chunks. Stored with each digest (:meth:`dump`) and composed per
    recipient by :meth:`compose`."""

    subject: str
    head: bytes  # From, Subject, fixed headers, MIME-Version, Content-Type
    text_head: bytes
    html_head: bytes
    tail: bytes
    text_chunks: tuple[bytes, ...]
    text_links: tuple[str, ...]
    html_chunks: tuple[bytes, ...]
    html_links: tuple[str, ...]

    @classmethod
    def build(
        cls,
        rendered: RenderedEmail,
        *,
        from_header: str,
        headers: Sequence[tuple[str, str]] = (),
        slots: LinkSlots = NO_SLOTS,
    ) -> MessageTemplate:
        # Derived from the content, so a digest renders to the same bytes wherever it is
        # rendered. "=_" can never occur in quoted-printable text (a literal "=" is encoded
        # "=3D"), so the boundary cannot collide with a body.
        digest = hashlib.sha256(
            "\0".join((rendered.subject, rendered.text, rendered.html)).encode()
        ).hexdigest()
        boundary = "=_digestd_" + digest[:24]
        head = b"".join(
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
        text_chunks, text_links = slots.split(rendered.text)
        html_chunks, html_links = slots.split(rendered.html)
        return cls(
            subject=rendered.subject,
            head=head,
            text_head=b"\r\nThis is a multi-part message in MIME format.\r\n\r\n"
            + part_head.format(b=boundary, sub="plain").encode(),
            html_head=part_head.format(b=boundary, sub="html").encode(),
            tail=f"--{boundary}--\r\n".encode(),
            text_chunks=tuple(text_chunks),
            text_links=tuple(text_links),
            html_chunks=tuple(html_chunks),
            html_links=tuple(html_links),
        )

    def retitled(self, subject: str) -> MessageTemplate:
        """The same message under another subject (a test send's "[Test] ..." one)."""
        old = header("Subject", self.subject)
        if old not in self.head:
            raise TemplateFormatError("the template's head has no Subject of its own")
        head = self.head.replace(old, header("Subject", subject), 1)
        return replace(self, subject=subject, head=head)

    @cached_property
    def link_names(self) -> frozenset[str]:
        """The names of the links each recipient's copy fills in."""
        return frozenset(self.text_links + self.html_links)

    def compose(self, personal: Personal) -> WireBytes:
        links = personal.links
        unsubscribe = f"<{links['unsubscribe']}>, <mailto:{personal.unsubscribe_mailto}>"
        out = [
            self.head,
            _plain_header("To", personal.to),
            _plain_header("Date", personal.date),
            _plain_header("Message-ID", personal.message_id),
            _plain_header("List-Unsubscribe", unsubscribe),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            self.text_head,
        ]
        # Each link appears several times (text and HTML): encoded once per message, and
        # once more for the HTML only when it has characters to escape (links rarely do).
        text = {name: _qp(value) for name, value in links.items()}
        in_html = {
            name: _qp(html.escape(value)) if _HTML_SPECIAL.search(value) else text[name]
            for name, value in links.items()
        }
        _interleave(out, self.text_chunks, [text[n] for n in self.text_links])
        out.append(self.html_head)
        _interleave(out, self.html_chunks, [in_html[n] for n in self.html_links])
        out.append(self.tail)
        # Every part is CRLF-terminated; header lines start with a name or (folded) a
        # space, body lines come from _qp: so no line starts with ".".
        return WireBytes(b"".join(out))

    def text(self, links: Mapping[str, str]) -> str:
        """The text part (decoded) with these ``links``."""
        out: list[bytes] = []
        _interleave(out, self.text_chunks, [_qp(links[n]) for n in self.text_links])
        return binascii.a2b_qp(b"".join(out)).decode("utf-8")

    def html(self, links: Mapping[str, str], *, personal: str | None = None) -> str:
        """The HTML part (decoded) with these ``links``. With ``personal`` (HTML), a copy for
        the web, which must not carry a reader's own links: each stretch between the
        ``personal_begin`` and ``personal_end`` slots is taken out, and the last one (the
        footer's) is replaced by ``personal``."""
        out: list[bytes] = []
        skipping = False
        begins = [i for i, name in enumerate(self.html_links) if name == "personal_begin"]
        last = begins[-1] if begins else -1
        for index, (chunk, name) in enumerate(
            zip(self.html_chunks, (*self.html_links, None), strict=True)
        ):
            if not skipping:
                out.append(chunk)
            if personal is not None and name == "personal_begin":
                skipping = True
                if index == last:
                    out.append(_qp(personal))
            elif personal is not None and name == "personal_end":
                skipping = False
            elif name is not None and not skipping:
                out.append(_qp(html.escape(links[name])))
        return binascii.a2b_qp(b"".join(out)).decode("utf-8")

    def dump(self) -> bytes:
        """The stored form: versioned, compressed (a digest's 20-90 KB become a few KB)."""
        data = {
            "format": TEMPLATE_FORMAT,
            "subject": self.subject,
            **{name: getattr(self, name).decode("ascii") for name in _BYTES_FIELDS},
            **{name: [c.decode("ascii") for c in getattr(self, name)] for name in _CHUNKS},
            **{name: list(getattr(self, name)) for name in _NAMES},
        }
        return zlib.compress(json.dumps(data, separators=(",", ":")).encode("ascii"), 6)

    @classmethod
    def load(cls, stored: bytes) -> MessageTemplate:
        try:
            data = json.loads(zlib.decompress(stored))
        except (zlib.error, ValueError) as exc:
            raise TemplateFormatError(f"not a stored template: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != TEMPLATE_FORMAT:
            raise TemplateFormatError("stored by another version of digestd")
        return cls(
            subject=data["subject"],
            head=data["head"].encode("ascii"),
            text_head=data["text_head"].encode("ascii"),
            html_head=data["html_head"].encode("ascii"),
            tail=data["tail"].encode("ascii"),
            text_chunks=tuple(c.encode("ascii") for c in data["text_chunks"]),
            text_links=tuple(data["text_links"]),
            html_chunks=tuple(c.encode("ascii") for c in data["html_chunks"]),
            html_links=tuple(data["html_links"]),
        )


_BYTES_FIELDS = ("head", "text_head", "html_head", "tail")
_CHUNKS = ("text_chunks", "html_chunks")
_NAMES = ("text_links", "html_links")


def _interleave(out: list[bytes], chunks: Sequence[bytes], values: list[bytes]) -> None:
    for chunk, value in zip(chunks, values, strict=False):
        out.append(chunk)
        out.append(value)
    out.append(chunks[-1])

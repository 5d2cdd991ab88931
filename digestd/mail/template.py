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
from functools import cached_property
from itertools import chain

from digestd.mail.render import RenderedEmail
from digestd.mail.wire import (
    _HTML_SPECIAL,
    WireBytes,
    _plain_header,
    _qp,
    header,
    qp_lines,
)


class LinkSlots:
    """Placeholders for the links each recipient's copy fills in, unguessable per render.

    A placeholder is letters, digits and underscores only, so it passes unchanged through
    Jinja escaping, MJML and quoted-printable. Its random part means text from
    an article can never be taken for one.
    """

    def __init__(self) -> None:
        self._token = secrets.token_hex(6)
        self._prefix = f"__digestd{self._token}_"

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
        for match in _SLOT.finditer(text):
            if match[1] != self._token:
                continue  # another render's placeholder (quoted in an article?): text
            chunks.append(_qp(text[position : match.start()]))
            names.append(match[2])
            position = match.end()
        chunks.append(_qp(text[position:]))
        return chunks, names


# Any render's placeholder: one pattern compiled once, not one per render (the re module's
# cache holds 512, and an edition renders thousands).
_SLOT = re.compile(r"__digestd([0-9a-f]{12})_([a-z0-9_]+?)__")
NO_SLOTS = LinkSlots()  # for emails rendered with their real links (nothing to fill in)


@dataclass(frozen=True)
class TrackedLinks:
    """One message's tracked article links: ``{head}{n}.{tag}`` for n = 1, 2, ... where
    ``head`` is the base URL, ``/c/`` and the delivery (the form
    :meth:`digestd.tokens.Tokens.read_click` reads) and ``tags`` has 8 characters a link."""

    head: bytes
    tags: bytes
    # The base URL is ASCII with nothing to escape in HTML (decided once, by the composer):
    # each link can go in as it is.
    plain: bool = False

    def urls(self) -> list[str]:
        head = self.head.decode("ascii")
        tags = self.tags.decode("ascii")
        return [f"{head}{i // 8 + 1}.{tags[i : i + 8]}" for i in range(0, len(tags), 8)]


@dataclass(frozen=True)
class Personal:
    """What differs between two recipients of the same digest."""

    to: str  # ASCII form
    message_id: str
    date: str  # RFC 5322 date
    links: Mapping[str, str]  # unsubscribe, preferences, view: full URLs
    unsubscribe_mailto: str  # the reader's own unsubscribe address (composer.Links.mailto)
    # The tracked article links (``/c/...``); None: the articles' own URLs (a preview, a
    # test send).
    clicks: TrackedLinks | None = None


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
    # With tracked links, each article's own URL, in the email's order: the value of its
    # ``click_<n>`` link wherever no reader's link goes (view in browser, the archive).
    article_urls: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        rendered: RenderedEmail,
        *,
        from_header: str,
        headers: Sequence[tuple[str, str]] = (),
        slots: LinkSlots = NO_SLOTS,
        article_urls: Sequence[str] = (),
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
            article_urls=tuple(article_urls),
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
        """The names of the links each recipient's copy fills in (tracked links aside)."""
        return frozenset(self.text_links + self.html_links) - set(self.click_names)

    @property
    def clicks(self) -> int:
        """How many tracked article links each copy fills in (0: the links are plain)."""
        return len(self.article_urls)

    @cached_property
    def click_names(self) -> tuple[str, ...]:
        return tuple(click_name(n) for n in range(1, len(self.article_urls) + 1))

    @cached_property
    def _click_numbers(self) -> tuple[bytes, ...]:
        return tuple(b"%d." % n for n in range(1, len(self.article_urls) + 1))

    @cached_property
    def _plain_clicks(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Each article's own URL in place of its tracked link, encoded for text and HTML."""
        urls = dict(zip(self.click_names, self.article_urls, strict=True))
        return (
            {name: _qp(url) for name, url in urls.items()},
            {name: _qp(html.escape(url)) for name, url in urls.items()},
        )

    def _with_plain(self, links: Mapping[str, str]) -> Mapping[str, str]:
        if not self.article_urls or self.click_names[0] in links:
            return links
        return {**dict(zip(self.click_names, self.article_urls, strict=True)), **links}

    def compose(self, personal: Personal) -> WireBytes:
        links = personal.links
        unsubscribe = f"<{links['unsubscribe']}>, <mailto:{personal.unsubscribe_mailto}>"
        out = [
            self.head,
            personal_headers(personal.to, personal.date, personal.message_id, unsubscribe),
            self.text_head,
        ]
        # Each link appears several times (text and HTML): encoded once per message, and
        # once more for the HTML only when it has characters to escape (links rarely do).
        text = {name: _qp(value) for name, value in links.items()}
        in_html = {
            name: _qp(html.escape(value)) if _HTML_SPECIAL.search(value) else text[name]
            for name, value in links.items()
        }
        if self.article_urls:
            self._add_clicks(personal.clicks, text, in_html)
        _interleave(out, self.text_chunks, list(map(text.__getitem__, self.text_links)))
        out.append(self.html_head)
        _interleave(out, self.html_chunks, list(map(in_html.__getitem__, self.html_links)))
        out.append(self.tail)
        # Every part is CRLF-terminated; header lines start with a name or (folded) a
        # space, body lines come from _qp: so no line starts with ".".
        return WireBytes(b"".join(out))

    @cached_property
    def _whole(self) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        """The message as static chunks and, between them, what each copy fills in: the
        per-recipient header lines (:data:`HEADER_LINES`), then every link of the text
        part and of the HTML part, in order. What :meth:`compose_encoded` joins."""
        static: list[bytes] = [self.head]
        slots: list[str] = [HEADER_LINES]
        pending = b""
        for head, chunks, names in (
            (self.text_head, self.text_chunks, self.text_links),
            (self.html_head, self.html_chunks, self.html_links),
        ):
            pending += head
            for chunk, name in zip(chunks, names, strict=False):
                static.append(pending + chunk)
                slots.append(name)
                pending = b""
            pending += chunks[-1]
        static.append(pending + self.tail)
        return tuple(static), tuple(slots)

    def compose_encoded(self, values: Mapping[str, bytes]) -> WireBytes:
        """A copy from values already in their wire form, one for each slot name (the same
        in the text and the HTML part): :data:`HEADER_LINES` (CRLF-terminated lines) and
        each link as :func:`encoded_link` makes it. The sending hot path's :meth:`compose`,
        for links with nothing to escape in HTML."""
        static, slots = self._whole
        filled = map(values.__getitem__, slots)
        parts = list(chain.from_iterable(zip(static, filled, strict=False)))
        parts.append(static[-1])
        return WireBytes(b"".join(parts))

    def encoded_clicks(self, clicks: TrackedLinks) -> dict[str, bytes] | None:
        """Each tracked link's wire form, the same in both parts; None when one would not
        fit on one line of quoted-printable (:meth:`compose` then encodes them)."""
        head, tags, names = clicks.head, clicks.tags, self.click_names
        if not clicks.plain or len(head) + len(self._click_numbers[-1]) + 8 > 75:
            return None
        return {
            name: head + number + tags[i : i + 8] + b"=\r\n"
            for name, i, number in zip(
                names, range(0, 8 * len(names), 8), self._click_numbers, strict=True
            )
        }

    def _add_clicks(
        self, clicks: TrackedLinks | None, text: dict[str, bytes], in_html: dict[str, bytes]
    ) -> None:
        if clicks is None:
            plain_text, plain_html = self._plain_clicks
            text.update(plain_text)
            in_html.update(plain_html)
            return
        encoded = self.encoded_clicks(clicks)
        if encoded is None:
            urls = clicks.urls()
            names = self.click_names
            text.update((n, _qp(u)) for n, u in zip(names, urls, strict=True))
            in_html.update((n, _qp(html.escape(u))) for n, u in zip(names, urls, strict=True))
            return
        text.update(encoded)
        in_html.update(encoded)

    def text(self, links: Mapping[str, str]) -> str:
        """The text part (decoded) with these ``links`` (articles' own URLs unless given)."""
        links = self._with_plain(links)
        out: list[bytes] = []
        _interleave(out, self.text_chunks, [_qp(links[n]) for n in self.text_links])
        return binascii.a2b_qp(b"".join(out)).decode("utf-8")

    def html(self, links: Mapping[str, str], *, personal: str | None = None) -> str:
        """The HTML part (decoded) with these ``links``. With ``personal`` (HTML), a copy for
        the web, which must not carry a reader's own links: each stretch between the
        ``personal_begin`` and ``personal_end`` slots is taken out, and the last one (the
        footer's) is replaced by ``personal``. Tracked links not in ``links`` get the
        articles' own URLs."""
        links = self._with_plain(links)
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
            "article_urls": list(self.article_urls),
        }
        # Level 1: a fifth larger than 6 (5.2 KB a daily against 4.4) in under half the time,
        # 0.4 ms less for each of the thousands of digests an edition plans in a hurry.
        return zlib.compress(json.dumps(data, separators=(",", ":")).encode("ascii"), 1)

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
            article_urls=tuple(data.get("article_urls", ())),
        )


# The slot of the per-recipient header lines (To, Date, Message-ID, List-Unsubscribe...)
# in :meth:`MessageTemplate.compose_encoded`; no link can be named so (names are [a-z0-9_]).
HEADER_LINES = "Header-Lines"


def personal_headers(to: str, date: str, message_id: str, unsubscribe: str) -> bytes:
    """The header lines that differ between two copies of a digest (``to`` in ASCII form,
    ``unsubscribe`` the List-Unsubscribe value)."""
    return b"".join(
        [
            _plain_header("To", to),
            _plain_header("Date", date),
            _plain_header("Message-ID", message_id),
            _plain_header("List-Unsubscribe", unsubscribe),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
    )


def encoded_link(url: bytes) -> bytes:
    """A link of digestd's own (ASCII, nothing quoted-printable or HTML would escape) in
    its wire form: what :func:`digestd.mail.wire._qp` makes of it, without the pattern
    match that function needs for text of unknown origin."""
    if b"." in url[::75]:  # a line would start with "." (escaped by _qp): rare
        return _qp(url.decode("ascii"))
    return qp_lines(url)


def click_name(number: int) -> str:
    """The link slot of the ``number``-th article (1: the lead) when links are tracked."""
    return f"click_{number}"


_BYTES_FIELDS = ("head", "text_head", "html_head", "tail")
_CHUNKS = ("text_chunks", "html_chunks")
_NAMES = ("text_links", "html_links")


def _interleave(out: list[bytes], chunks: Sequence[bytes], values: list[bytes]) -> None:
    # chunk, value, chunk, value, ..., chunk; zip and chain in C: a digest with tracked
    # links has some thirty of each.
    out.extend(chain.from_iterable(zip(chunks, values, strict=False)))
    out.append(chunks[-1])

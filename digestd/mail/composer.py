"""One recipient's copy of a rendered digest: their links, the per-message headers, DKIM.

Everything here runs once per message on the sending hot path, so tokens are made with
keys derived once (:meth:`Tokens.fast_byte_maker`) and the Date header is formatted once per
second; the digest itself was rendered once, when it was planned.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from typing import TYPE_CHECKING

from digestd.config import Settings
from digestd.mail.presentation import MUTE
from digestd.mail.template import (
    HEADER_LINES,
    MessageTemplate,
    Personal,
    TrackedLinks,
    encoded_link,
    personal_headers,
)
from digestd.mail.wire import WireBytes, ascii_address, needs_no_escaping
from digestd.tokens import SAMPLE_READERS, Purpose, Tokens

if TYPE_CHECKING:
    from digestd.mail.dkim import DkimSigner


class Links:
    """The per-recipient URLs of one email."""

    def __init__(
        self, settings: Settings, tokens: Tokens, clock: Callable[[], float] = time.time
    ) -> None:
        self.base = settings.base_url
        self.tokens = tokens
        self.domain = settings.from_domain
        self._click_base = f"{self.base}/c/".encode()
        # Nothing in the base URL for quoted-printable or HTML to escape (the usual case):
        # each link, tracked ones too, goes into both parts as it is, cut into lines.
        self.plain = needs_no_escaping(self.base)
        self._make = {
            purpose: (f"{self.base}/{purpose}/".encode(), tokens.fast_byte_maker(purpose, clock))
            for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.VIEW, Purpose.MUTE)
        }

    def url(self, purpose: Purpose, payload: str) -> str:
        if purpose in self._make:
            return self.url_bytes(purpose, payload).decode("ascii")
        return f"{self.base}/{purpose}/{self.tokens.make(purpose, payload)}"

    def url_bytes(self, purpose: Purpose, payload: str) -> bytes:
        """:meth:`url` as ASCII bytes, for the purposes every email carries."""
        prefix, make = self._make[purpose]
        return prefix + make(payload)

    def clicks(self, delivery_id: int, count: int) -> TrackedLinks:
        """The tracked links of a delivery's ``count`` articles: ``/c/{delivery}.{n}.{tag}``
        (the route finds the article through the delivery's digest; no URL rides along)."""
        head = self._click_base + b"%d." % delivery_id
        return TrackedLinks(head, self.tokens.click_tag_bytes(delivery_id, count), self.plain)

    def mailto(self, public_id: str) -> str:
        """The reader's own unsubscribe address, for ``List-Unsubscribe: <mailto:...>``: mail
        to it unsubscribes them (digestd's LMTP listener, :mod:`digestd.inbound`)."""
        tag = self.tokens.mailto_tag(public_id)
        return f"unsubscribe+{tag}@{self.domain}?subject=unsubscribe"

    def for_subscriber(
        self, public_id: str, delivery_id: int | None = None, names: Iterable[str] = ()
    ) -> dict[str, str]:
        """A value for every personal link of an email: ``presentation.PERSONAL_LINKS``, and
        the mute link when ``names`` (those of the email's template) has it."""
        links = {
            "unsubscribe": self.url(Purpose.UNSUBSCRIBE, public_id),
            "preferences": self.url(Purpose.PREFERENCES, public_id),
            "view": "",
            "personal_begin": "",
            "personal_end": "",
        }
        if delivery_id is not None:
            links["view"] = self.url(Purpose.VIEW, f"{public_id}/{delivery_id}")
        elif public_id in SAMPLE_READERS:  # a test send: its link says what it would open
            links["view"] = self.url(Purpose.VIEW, f"{public_id}/0")
        if MUTE in names:
            links[MUTE] = self.url(Purpose.MUTE, public_id)
        return links


class Composer:
    """Makes each recipient's bytes from a digest's template by substitution."""

    def __init__(
        self, settings: Settings, tokens: Tokens, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.links = Links(settings, tokens, clock)
        self.from_header = formataddr((settings.from_name, settings.from_address))
        self.dkim: DkimSigner | None = None
        if settings.dkim:
            from digestd.mail.dkim import DkimSigner  # dkimpy and dnspython: when it signs

            self.dkim = DkimSigner(settings.dkim)
        self._clock = clock
        self._date: tuple[int, str] = (-1, "")

    def message_id(self, kind: str, period: str, delivery_id: int) -> str:
        """Deterministic per delivery: a repeat after a crash carries the same Message-ID,
        so receivers that deduplicate on it show one message. Its keyed part makes it
        unguessable, so a bounce report quoting it proves it saw the message."""
        tag = self.tokens.message_tag(delivery_id)
        return f"<{kind}.{period}.{delivery_id}.{tag}@{self.settings.from_domain}>"

    def compose(
        self,
        template: MessageTemplate,
        *,
        message_id: str,
        public_id: str,
        email: str,
        delivery_id: int,
    ) -> bytes:
        if self.links.plain:
            encoded = self._encoded(template, message_id, public_id, email, delivery_id)
            if encoded is not None:
                return self._signed(template.compose_encoded(encoded))
        personal = Personal(
            to=ascii_address(email),
            message_id=message_id,
            date=self._date_header(),
            links=self.links.for_subscriber(public_id, delivery_id, template.link_names),
            unsubscribe_mailto=self.links.mailto(public_id),
            clicks=self.links.clicks(delivery_id, template.clicks) if template.clicks else None,
        )
        return self._signed(template.compose(personal))

    def _encoded(
        self,
        template: MessageTemplate,
        message_id: str,
        public_id: str,
        email: str,
        delivery_id: int,
    ) -> dict[str, bytes] | None:
        """Every slot of ``template`` in its wire form, for a base URL with nothing to
        escape: the same bytes :meth:`MessageTemplate.compose` makes (tests compare them),
        with each link encoded once for both parts. None: the tracked links do not fit
        that form (the general path then encodes them)."""
        links = self.links
        encoded = {"personal_begin": b"", "personal_end": b""}
        if template.clicks:
            clicks = template.encoded_clicks(links.clicks(delivery_id, template.clicks))
            if clicks is None:
                return None
            encoded.update(clicks)
        unsubscribe = links.url_bytes(Purpose.UNSUBSCRIBE, public_id)
        encoded["unsubscribe"] = encoded_link(unsubscribe)
        encoded["preferences"] = encoded_link(links.url_bytes(Purpose.PREFERENCES, public_id))
        encoded["view"] = encoded_link(links.url_bytes(Purpose.VIEW, f"{public_id}/{delivery_id}"))
        if MUTE in template.link_names:
            encoded[MUTE] = encoded_link(links.url_bytes(Purpose.MUTE, public_id))
        encoded[HEADER_LINES] = personal_headers(
            email if email.isascii() else ascii_address(email),
            self._date_header(),
            message_id,
            f"<{unsubscribe.decode('ascii')}>, <mailto:{links.mailto(public_id)}>",
        )
        return encoded

    def notice_id(self, kind: str) -> str:
        """A Message-ID for a message that is no queued delivery: ``<kind.random@domain>``."""
        return f"<{kind}.{secrets.token_hex(12)}@{self.settings.from_domain}>"

    def notice(
        self,
        template: MessageTemplate,
        *,
        message_id: str,
        email: str,
        public_id: str,
        now: datetime,
    ) -> bytes:
        """A message that is no queued delivery (a confirmation, a welcome, a sunset notice,
        a test send): the reader's own links and headers, and signed like every digest, so
        a domain with a strict DMARC policy receives these too."""
        personal = Personal(
            to=ascii_address(email),
            message_id=message_id,
            date=format_datetime(now),
            links=self.links.for_subscriber(public_id, None, template.link_names),
            unsubscribe_mailto=self.links.mailto(public_id),
        )
        return self._signed(template.compose(personal))

    def _signed(self, data: bytes) -> bytes:
        # The DKIM header is CRLF-terminated and folds with spaces: still wire-ready.
        return WireBytes(self.dkim.sign(data)) if self.dkim else data

    def _date_header(self) -> str:
        second = int(self._clock())
        if self._date[0] != second:
            moment = datetime.fromtimestamp(second, UTC)
            self._date = (second, format_datetime(moment))
        return self._date[1]

    def envelope_from(self, delivery_id: int) -> str:
        """VERP: a bounce names the delivery it is about, signed so it cannot be forged."""
        return f"bounces+{self.tokens.bounce_tag(delivery_id)}@{self.settings.from_domain}"

    def reader_envelope_from(self, public_id: str) -> str:
        """VERP for a reader's mail that is no digest: a bounce names the reader (a signup
        for an address that bounces at once is then suppressed like a digest's)."""
        if not public_id:
            return f"bounces@{self.settings.from_domain}"
        tag = self.tokens.reader_bounce_tag(public_id)
        return f"bounces+{tag}@{self.settings.from_domain}"

"""From a queued delivery to the bytes that go on the wire: links, headers, DKIM.

:class:`Composer` renders each digest once (cached per digest) and makes each recipient's
message by substitution (:class:`digestd.compose.MessageTemplate`). Everything done per
recipient here is on the sending hot path, so tokens are made with keys derived once
(:meth:`Tokens.fast_maker`) and the Date header is formatted once per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.utils import format_datetime, formataddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.compose import MessageTemplate, Personal, WireBytes, ascii_address
from digestd.config import Settings
from digestd.dkim import DkimSigner
from digestd.editions import article_ids
from digestd.models import Article, Digest, EditionKind
from digestd.presentation import Site, digest_context
from digestd.render import Renderer
from digestd.tokens import Purpose, Tokens


class Links:
    """The per-recipient URLs of one email."""

    def __init__(self, settings: Settings, tokens: Tokens) -> None:
        self.base = settings.base_url
        self.tokens = tokens
        self.mailto = f"unsubscribe@{settings.from_domain}"
        self._make = {
            purpose: tokens.fast_maker(purpose)
            for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.VIEW)
        }

    def url(self, purpose: Purpose, payload: str) -> str:
        make = self._make.get(purpose)
        token = make(payload) if make else self.tokens.make(purpose, payload)
        return f"{self.base}/{purpose}/{token}"

    def for_subscriber(self, public_id: str, delivery_id: int | None = None) -> dict[str, str]:
        links = {
            "unsubscribe": self.url(Purpose.UNSUBSCRIBE, public_id),
            "preferences": self.url(Purpose.PREFERENCES, public_id),
            "view": "",
        }
        if delivery_id is not None:
            links["view"] = self.url(Purpose.VIEW, f"{public_id}/{delivery_id}")
        return links


class Composer:
    """Renders each digest once (cached) and makes each recipient's bytes by substitution."""

    def __init__(
        self,
        settings: Settings,
        tokens: Tokens,
        renderer: Renderer | None = None,
        cache_size: int = 2048,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.links = Links(settings, tokens)
        self.renderer = renderer or Renderer()
        self.site = Site(settings.site_name, settings.base_url, settings.postal_address)
        self.from_header = formataddr((settings.from_name, settings.from_address))
        self.dkim = DkimSigner(settings.dkim) if settings.dkim else None
        self._templates: dict[int, MessageTemplate] = {}
        self._cache_size = cache_size
        self._mailto = f"{self.links.mailto}?subject=unsubscribe"
        self._clock = clock
        self._date: tuple[int, str] = (-1, "")

    def template(self, session: Session, digest_id: int, kind: str, period: str) -> MessageTemplate:
        template = self._templates.get(digest_id)
        if template is None:
            digest = session.get(Digest, digest_id)
            assert digest is not None
            articles = {
                a.id: a
                for a in session.scalars(
                    select(Article).where(Article.id.in_(article_ids(digest.layout)))
                )
            }
            context = digest_context(
                EditionKind(kind), date.fromisoformat(period), digest.layout, articles, self.site
            )
            rendered = self.renderer.render(kind, context)
            template = MessageTemplate(
                rendered,
                from_header=self.from_header,
                headers=[("List-Id", self.settings.list_id)],
            )
            if len(self._templates) >= self._cache_size:
                self._templates.pop(next(iter(self._templates)))
            self._templates[digest_id] = template
        return template

    def message_id(self, kind: str, period: str, delivery_id: int) -> str:
        """Deterministic per delivery: a repeat after a crash carries the same Message-ID,
        so receivers that deduplicate on it show one message."""
        return f"<{kind}.{period}.{delivery_id}@{self.settings.from_domain}>"

    def compose(
        self,
        template: MessageTemplate,
        *,
        delivery_id: int,
        public_id: str,
        email: str,
        kind: str,
        period: str,
    ) -> bytes:
        personal = Personal(
            to=ascii_address(email),
            message_id=self.message_id(kind, period, delivery_id),
            date=self._date_header(),
            links=self.links.for_subscriber(public_id, delivery_id),
            unsubscribe_mailto=self._mailto,
        )
        data = template.compose(personal)
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

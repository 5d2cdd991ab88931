"""From a queued delivery to the bytes that go on the wire: links, headers, DKIM.

:class:`Composer` renders each digest once and makes each recipient's message by
substitution (:class:`digestd.mail.template.MessageTemplate`). Everything done per recipient here
is on the sending hot path, so tokens are made with keys derived once
(:meth:`Tokens.fast_maker`) and the Date header is formatted once per second.

Rendered digests are kept in an LRU cache (:data:`TEMPLATE_CACHE`): the sender claims a
digest's readers together (ordered by digest), and the cache's size, not the number of
subscribers, bounds the memory it takes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from digestd.config import Settings
from digestd.mail.dkim import DkimSigner
from digestd.mail.prerender import ArticleFields, DigestSource, build_template
from digestd.mail.presentation import Site
from digestd.mail.render import Renderer
from digestd.mail.template import MessageTemplate, Personal, WireBytes, ascii_address
from digestd.models import Article, Digest
from digestd.planning.planner import article_ids
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


# Rendered digests kept by the sender (20-90 KB each: at most ~45 MB, whatever the list
# size). Claims come in digest order, but while an edition is still being enqueued each
# claim takes the lowest digests queued so far, and the popular ones are queued again and
# again: with 64, an edition of 1 000 000 readers rendered its 2 913 digests 55 714 times.
TEMPLATE_CACHE = 512


class Composer:
    """Renders each digest once (cached) and makes each recipient's bytes by substitution."""

    def __init__(
        self,
        settings: Settings,
        tokens: Tokens,
        renderer: Renderer | None = None,
        cache_size: int = TEMPLATE_CACHE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.links = Links(settings, tokens)
        self.renderer = renderer or Renderer()
        self.site = Site(settings.site_name, settings.base_url, settings.postal_address)
        self.from_header = formataddr((settings.from_name, settings.from_address))
        self.dkim = DkimSigner(settings.dkim) if settings.dkim else None
        self._templates: OrderedDict[int, MessageTemplate] = OrderedDict()
        self._cache_size = cache_size
        self._mailto = f"{self.links.mailto}?subject=unsubscribe"
        self._clock = clock
        self._date: tuple[int, str] = (-1, "")

    def template(self, session: Session, digest_id: int, kind: str, period: str) -> MessageTemplate:
        """The digest's template, rendered here unless it is cached."""
        template = self.cached(digest_id)
        if template is None:
            (source,) = self.sources(session, {digest_id: (kind, period)})
            template = self.build(source)
            self.remember(digest_id, template)
        return template

    def cached(self, digest_id: int) -> MessageTemplate | None:
        template = self._templates.get(digest_id)
        if template is not None:
            self._templates.move_to_end(digest_id)
        return template

    def remember(self, digest_id: int, template: MessageTemplate) -> None:
        self._templates[digest_id] = template
        self._templates.move_to_end(digest_id)
        while len(self._templates) > self._cache_size:
            self._templates.popitem(last=False)

    def sources(
        self, session: Session, digests: Mapping[int, tuple[str, str]]
    ) -> list[DigestSource]:
        """What rendering each digest needs (``digests``: id -> (kind, period)), read in two
        queries. Plain data, so it can be rendered in another process."""
        layouts: dict[int, dict[str, Any]] = {
            digest_id: layout
            for digest_id, layout in session.execute(
                select(Digest.id, Digest.layout).where(Digest.id.in_(digests))
            )
        }
        wanted = {a for layout in layouts.values() for a in article_ids(layout)}
        rows = session.execute(
            select(
                Article.id,
                Article.url,
                Article.title,
                Article.source,
                Article.published_at,
                Article.image_url,
                Article.why_it_matters,
                Article.key_takeaways,
                Article.companies,
            ).where(Article.id.in_(wanted))
        )
        articles = {row[0]: ArticleFields(*row[1:]) for row in rows}
        headers = (("List-Id", self.settings.list_id),)
        return [
            DigestSource(
                digest_id=digest_id,
                kind=kind,
                period=period,
                layout=layouts[digest_id],
                articles={a: articles[a] for a in article_ids(layouts[digest_id])},
                site=self.site,
                from_header=self.from_header,
                headers=headers,
            )
            for digest_id, (kind, period) in digests.items()
        ]

    def build(self, source: DigestSource) -> MessageTemplate:
        """Render in this process (the sender's, when no render worker is used)."""
        return build_template(self.renderer, source)

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

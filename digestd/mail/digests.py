"""A digest's content read from the database, rendered once into a stored template.

The planner renders each digest when it creates it (:meth:`DigestRenderer.render`) and
stores the result with the digest row (``digests.template``); the sender, "view in
browser" and previews read that same template (:func:`stored_templates`), so what a page
shows is the email that was sent, however the articles were edited since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digestd.config import Settings
from digestd.db import insert_ignoring_conflicts
from digestd.mail.layout import Layout
from digestd.mail.presentation import FITS, Site, digest_context, personal_links
from digestd.mail.render import Renderer
from digestd.mail.template import LinkSlots, MessageTemplate, TemplateFormatError, click_name
from digestd.models import Article, Digest, DigestLink, Edition, EditionKind

log = logging.getLogger(__name__)

K = TypeVar("K")  # how a caller names the digests it renders: an id, or a key not stored yet


@dataclass(frozen=True)
class ArticleFields:
    """What an email shows of one article (see :func:`digestd.mail.presentation.article_view`)."""

    url: str
    title: str
    source: str
    published_at: datetime
    image_url: str | None
    why_it_matters: str
    key_takeaways: list[str]
    companies: list[dict[str, str]]
    kind: str = "news"  # news|deals|social|blogs|videos|podcasts: a badge unless news
    summary: str = ""  # the publisher's: shown, unlabelled, when there is no why_it_matters


def load_articles(session: Session, ids: Iterable[str]) -> dict[str, ArticleFields]:
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
            Article.kind,
            Article.summary,
        ).where(Article.id.in_(set(ids)))
    )
    return {
        row.id: ArticleFields(
            row.url,
            row.title,
            row.source,
            row.published_at,
            row.image_url,
            row.why_it_matters,
            row.key_takeaways,
            row.companies,
            row.kind,
            row.summary,
        )
        for row in rows
    }


@dataclass(frozen=True)
class Masthead:
    """What every digest carries from the settings (plain data: it crosses processes)."""

    site: Site
    from_header: str
    list_id: str
    tracked: bool = False  # article links go through /c/ (DIGESTD_TRACK_CLICKS not off)

    @classmethod
    def from_settings(cls, settings: Settings) -> Masthead:
        from email.utils import formataddr

        return cls(
            Site(settings.site_name, settings.base_url, settings.postal_address),
            formataddr((settings.from_name, settings.from_address)),
            settings.list_id,
            settings.tracks_clicks,
        )


# Decoded HTML a digest may have before each copy's links are put in (a few kilobytes more):
# Gmail clips a message whose HTML passes ~102 KB, hiding the footer and its unsubscribe link.
HTML_BUDGET = 92_000


class Failures:
    """The render errors a process has logged with their traceback: a broken template fails
    every digest of an edition, and thousands of identical tracebacks would bury the first."""

    REMEMBERED = 256  # distinct errors; then the memory starts again

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def first(self, error: str) -> bool:
        """Whether ``error`` is new here (and now remembered)."""
        if error in self._seen:
            return False
        if len(self._seen) >= self.REMEMBERED:
            self._seen.clear()
        self._seen.add(error)
        return True


class DigestRenderer:
    """Renders a digest (Jinja2 → MJML → quoted-printable chunks) into the
    template stored with it."""

    def __init__(self, masthead: Masthead, directory: Path | None = None) -> None:
        self.masthead = masthead
        self.failures = Failures()
        self.renderer = Renderer(directory)
        self.directory = self.renderer.directory

    def render(
        self,
        kind: EditionKind,
        period: str,
        layout: Layout,
        articles: Mapping[str, ArticleFields],
    ) -> MessageTemplate:
        """Raises KeyError when an article of the layout is not in ``articles``. With
        tracked links, each article's link is a slot (``click_<n>``, numbered as the email
        numbers its stories) that each copy fills with the reader's ``/c/`` link."""
        slots = LinkSlots()
        names = personal_links(kind, layout)
        urls = [articles[a].url for a in layout.article_ids()] if self.masthead.tracked else []
        names += tuple(click_name(n) for n in range(1, len(urls) + 1))
        links = slots.links(names)
        day = date.fromisoformat(period)
        site = self.masthead.site
        for fit in range(len(FITS)):  # the fullest that Gmail will not clip
            context = digest_context(kind, day, layout, articles, site, links, fit=fit)
            rendered = self.renderer.render(str(kind), context)
            if len(rendered.html.encode()) <= HTML_BUDGET:
                break
        else:  # URLs of thousands of characters, with links not tracked
            size = len(rendered.html.encode())
            log.warning(
                "digest.too_large", extra={"kind": str(kind), "period": period, "bytes": size}
            )
        return MessageTemplate.build(
            rendered,
            from_header=self.masthead.from_header,
            headers=(("List-Id", self.masthead.list_id),),
            slots=slots,
            article_urls=urls,
        )


@dataclass(frozen=True)
class StoredDigest:
    """A digest's template as stored, or why there is none."""

    template: MessageTemplate | None
    error: str | None  # why it could not be rendered; both None: not rendered yet


def stored_templates(session: Session, ids: Iterable[int]) -> dict[int, StoredDigest]:
    """The stored template of each digest in ``ids`` (those that exist)."""
    found: dict[int, StoredDigest] = {}
    rows = session.execute(
        select(Digest.id, Digest.template, Digest.render_error).where(Digest.id.in_(set(ids)))
    )
    for digest_id, stored, error in rows:
        if stored is None:
            found[digest_id] = StoredDigest(None, error)
            continue
        try:
            found[digest_id] = StoredDigest(MessageTemplate.load(stored), None)
        except TemplateFormatError as exc:
            found[digest_id] = StoredDigest(None, f"its stored template is unreadable: {exc}")
    return found


def ready_templates(
    session: Session, renderer: DigestRenderer, ids: Iterable[int]
) -> dict[int, StoredDigest]:
    """:func:`stored_templates`, after rendering (and storing) any digest planned before
    templates were stored, so a queue that spans an upgrade is still sent."""
    found = stored_templates(session, ids)
    legacy = [i for i, d in found.items() if d.template is None and d.error is None]
    if legacy:
        found.update(render_and_store(session, renderer, unrendered(session, legacy)))
    return found


def shown_template(
    session: Session, renderer: DigestRenderer, digest_id: int
) -> MessageTemplate | None:
    """The email a digest went out as, for a page to show: its stored template, or, for a
    digest planned before templates were stored, a render that is not stored (showing a page
    writes nothing). None when there is no such digest, it failed to render, or an article
    it holds was removed since (it cannot be shown whole)."""
    stored = stored_templates(session, [digest_id]).get(digest_id)
    if stored is None or stored.template is not None or stored.error is not None:
        return stored.template if stored is not None else None
    digest = unrendered(session, [digest_id])[digest_id]
    articles = load_articles(session, digest.layout.article_ids())
    try:
        return renderer.render(digest.kind, digest.period, digest.layout, articles)
    except KeyError:
        return None


@dataclass(frozen=True)
class Unrendered:
    """A digest to render: what its edition is and what it holds."""

    kind: EditionKind
    period: str
    layout: Layout


@dataclass(frozen=True)
class Rendering:
    """A digest rendered and not yet stored: its template and numbered links, or why it
    failed."""

    template: MessageTemplate | None
    stored: bytes | None  # the template as its row holds it, made here: writing is brief
    error: str | None
    links: list[dict[str, Any]]  # its ``digest_links`` rows, without the digest's id


def render_digests(
    session: Session, renderer: DigestRenderer, digests: Mapping[K, Unrendered]
) -> dict[K, Rendering]:
    """Render each digest (reads only: the articles). A digest that fails to render fails
    alone: its deliveries end ``failed`` with the reason and the rest of the edition goes on."""
    articles = load_articles(session, (a for d in digests.values() for a in d.layout.article_ids()))
    results: dict[K, Rendering] = {}
    for key, digest in digests.items():
        try:
            template = renderer.render(digest.kind, digest.period, digest.layout, articles)
        except Exception as exc:  # any cause (an article gone, a template error): this one only
            reason = f"{exc.__class__.__name__}: {exc}"
            results[key] = Rendering(
                None, None, f"could not render the digest: {reason}"[:1000], []
            )
            if renderer.failures.first(reason):  # the tick's line counts the others
                log.warning("digest %s could not be rendered", key, exc_info=True)
        else:
            links = digest_links(digest.layout, articles)
            results[key] = Rendering(template, template.dump(), None, links)
    return results


def store_renderings(
    session: Session, renderings: Mapping[int, Rendering]
) -> dict[int, StoredDigest]:
    """Store each digest's template (or why it failed) in its row, by digest id."""
    rows = [
        {"id": digest_id, "template": r.stored, "render_error": r.error}
        for digest_id, r in renderings.items()
    ]
    if rows:
        session.execute(update(Digest), rows)  # by primary key, one statement for all
    numbered = [
        {"digest_id": digest_id, **link} for digest_id, r in renderings.items() for link in r.links
    ]
    insert_ignoring_conflicts(session, DigestLink.__table__, numbered, ["digest_id", "position"])
    return {digest_id: StoredDigest(r.template, r.error) for digest_id, r in renderings.items()}


def render_and_store(
    session: Session, renderer: DigestRenderer, digests: Mapping[int, Unrendered]
) -> dict[int, StoredDigest]:
    """Render each digest and store it in its row (:func:`render_digests`)."""
    return store_renderings(session, render_digests(session, renderer, digests))


def digest_links(layout: Layout, articles: Mapping[str, ArticleFields]) -> list[dict[str, Any]]:
    """The ``digest_links`` rows of a digest, but its id: its articles numbered as its email
    numbers them (1: the lead), each with the category its card shows."""
    entries = [entry for section in layout.sections for entry in section.entries]
    return [
        {
            "position": number,
            "article_id": entry.article_id,
            "category": entry.category,
            "source": articles[entry.article_id].source[:200],
        }
        for number, entry in enumerate(entries, start=1)
    ]


def unrendered(session: Session, ids: Iterable[int]) -> dict[int, Unrendered]:
    """Digests among ``ids`` planned before templates were stored: neither a template nor an
    error (see migration 0006)."""
    rows = session.execute(
        select(Digest.id, Edition.kind, Edition.period, Digest.layout)
        .join(Edition, Edition.id == Digest.edition_id)
        .where(Digest.id.in_(set(ids)), Digest.template.is_(None), Digest.render_error.is_(None))
    )
    return {
        digest_id: Unrendered(EditionKind(kind), period, Layout.from_json(layout))
        for digest_id, kind, period, layout in rows
    }

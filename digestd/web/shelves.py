"""Reading the public archive: each *shelf* (a category, or ``all`` for All Technology) holds
its published daily and weekly editions (``archive_editions`` rows with a digest).

Every query here is answered from the (category, kind, period) key: a shelf's editions of
one kind are an index range, so a page of both kinds is two ranges merged, never a sort of
the shelf's whole history.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from digestd.content.categories import ALL, ALL_NAME, CATEGORIES
from digestd.mail.digests import load_articles
from digestd.mail.layout import Layout
from digestd.mail.presentation import long_date
from digestd.models import ArchiveEdition, Article, Digest, EditionKind

KIND_WORDS = {EditionKind.DAILY: "daily", EditionKind.WEEKLY: "weekly recap"}


def shelf_name(shelf: str) -> str:
    return ALL_NAME if shelf == ALL else CATEGORIES[shelf]


def is_shelf(name: str) -> bool:
    return name == ALL or name in CATEGORIES


def subscribe_path(shelf: str, kind: EditionKind) -> str:
    """The signup page prefilled for this shelf, or for slugs joined by commas (``all`` is
    a signup's word for every category too)."""
    return f"/subscribe?categories={shelf}&frequency={kind}"


@dataclass(frozen=True)
class Shelved:
    """One published archive edition."""

    category: str
    kind: EditionKind
    period: str  # the local ISO date of the send (a weekly: its Sunday)
    digest_id: int
    published_at: datetime

    @property
    def path(self) -> str:
        return f"/archive/{self.category}/{self.kind}/{self.period}"

    @property
    def day(self) -> date:
        return date.fromisoformat(self.period)

    @property
    def short_day(self) -> str:
        """ "Mon 30 Nov 2026"."""
        return f"{self.day:%a} {self.day.day} {self.day:%b %Y}"

    @property
    def long_day(self) -> str:
        return long_date(self.day)

    @property
    def title(self) -> str:
        """ "AI daily · Monday 30 November 2026", "AI weekly recap · week to Sunday …"."""
        when = long_date(self.day)
        if self.kind is EditionKind.WEEKLY:
            when = f"week to {when}"
        return f"{shelf_name(self.category)} {KIND_WORDS[self.kind]} · {when}"


def _find(
    session: Session,
    shelf: str,
    kind: EditionKind,
    *where: ColumnElement[bool],
    newest_first: bool = True,
    limit: int | None = None,
) -> list[Shelved]:
    """The shelf's editions of ``kind`` matching ``where``, in date order: a range of the
    (category, kind, period) key."""
    by_date = ArchiveEdition.period
    rows = session.execute(
        select(
            ArchiveEdition.period,
            ArchiveEdition.digest_id,
            ArchiveEdition.published_at,
        )
        .where(
            ArchiveEdition.category == shelf,
            ArchiveEdition.kind == kind,
            ArchiveEdition.digest_id.is_not(None),
            *where,
        )
        .order_by(by_date.desc() if newest_first else by_date)
        .limit(limit)
    )
    return [
        Shelved(shelf, kind, period, digest_id, published_at)
        for period, digest_id, published_at in rows
        if digest_id is not None
    ]


def _first(found: list[Shelved]) -> Shelved | None:
    return found[0] if found else None


def latest(session: Session, shelf: str, kind: EditionKind) -> Shelved | None:
    return _first(_find(session, shelf, kind, limit=1))


def latest_for_reader(
    session: Session, categories: list[str], kinds: list[EditionKind], limit: int = 3
) -> list[Shelved]:
    """The latest public edition of each of a reader's topics (All Technology's, for a
    reader of every category), of the first of ``kinds`` that has one: at most ``limit``."""
    topics = [ALL] if set(categories) >= set(CATEGORIES) else categories
    found: list[Shelved] = []
    for shelf in topics:
        newest = next((e for kind in kinds if (e := latest(session, shelf, kind))), None)
        if newest is not None:
            found.append(newest)
        if len(found) == limit:
            break
    return found


def editions(session: Session, shelf: str, limit: int, before: str | None = None) -> list[Shelved]:
    """The shelf's newest ``limit`` editions of both kinds (before the date ``before``),
    newest first; on one date the weekly comes first."""
    where = [] if before is None else [ArchiveEdition.period < before]
    ranges = [_find(session, shelf, kind, *where, limit=limit) for kind in EditionKind]
    merged = heapq.merge(*ranges, key=lambda e: (e.period, e.kind), reverse=True)
    return list(merged)[:limit]


def edition(session: Session, shelf: str, kind: EditionKind, period: str) -> Shelved | None:
    return _first(_find(session, shelf, kind, ArchiveEdition.period == period))


def neighbours(session: Session, shown: Shelved) -> tuple[Shelved | None, Shelved | None]:
    """The shelf's previous and next edition of the same kind."""
    shelf, kind, period = shown.category, shown.kind, ArchiveEdition.period
    previous = _find(session, shelf, kind, period < shown.period, limit=1)
    following = _find(session, shelf, kind, period > shown.period, newest_first=False, limit=1)
    return _first(previous), _first(following)


@dataclass(frozen=True)
class Headline:
    title: str
    url: str
    source: str
    updated_at: datetime  # the article's last change: a page listing it changed then too


def headlines(session: Session, digest_ids: Iterable[int]) -> dict[int, list[Headline]]:
    """Each digest's stories in the order it shows them (articles removed since are left out)."""
    layouts = {
        digest_id: Layout.from_json(layout)
        for digest_id, layout in session.execute(
            select(Digest.id, Digest.layout).where(Digest.id.in_(set(digest_ids)))
        )
    }
    ids = {a for lay in layouts.values() for a in lay.article_ids()}
    articles = load_articles(session, ids)
    changes = session.execute(select(Article.id, Article.updated_at).where(Article.id.in_(ids)))
    updated = {article_id: when for article_id, when in changes}
    return {
        digest_id: [
            Headline(articles[a].title, articles[a].url, articles[a].source, updated[a])
            for a in layout.article_ids()
            if a in articles and a in updated
        ]
        for digest_id, layout in layouts.items()
    }


def began(session: Session, shelf: str) -> datetime | None:
    """When the archive first decided an edition of ``shelf``, published or with nothing
    to send: since then the shelf exists, even one that has never had an edition. None
    before the archive's first send time."""
    return session.scalar(
        select(func.min(ArchiveEdition.published_at)).where(ArchiveEdition.category == shelf)
    )


def changed_at(
    editions: Iterable[Shelved], stories: Mapping[int, list[Headline]] | None = None
) -> datetime | None:
    """When a page listing ``editions`` (with ``stories``' headlines) last changed: the
    newest publication or edit of a story shown, for ``Last-Modified`` and Atom's
    ``updated``; None when it lists nothing."""
    instants = [e.published_at for e in editions]
    instants += [h.updated_at for shown in (stories or {}).values() for h in shown]
    return max(instants, default=None)

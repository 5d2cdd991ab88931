"""The articles that may go into an edition, ranked once per content window.

Held articles are never candidates. Pinned ones are, while their pin runs at the slot's
time, even when published before the window: a pin says "lead with this until then".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from digestd.models import Article, ArticleCategory, EditionKind
from digestd.planning.schedule import Slot, content_window
from digestd.planning.selection import HALF_LIFE_HOURS, Candidate, order


class Ranking:
    """Every reader of one slot chooses from the same ranked list: computed once a slot."""

    def __init__(self, kind: EditionKind) -> None:
        self.kind = kind
        self._ranked: dict[tuple[datetime, datetime], list[Candidate]] = {}

    def ranked(self, session: Session, slot: Slot) -> list[Candidate]:
        window = content_window(slot)
        if window not in self._ranked:
            start, end = window
            self._ranked[window] = order(
                candidates(session, start, end), end, HALF_LIFE_HOURS[self.kind]
            )
        return self._ranked[window]


def candidates(session: Session, start: datetime, end: datetime) -> Iterable[Candidate]:
    """Articles published in [start, end) and articles pinned beyond ``end`` (the slot's
    time) published before it, each with all its categories; none that is held."""
    # Two queries, not one with OR: each keeps to its own index (published_at, pinned_until).
    in_window = _rows(session, Article.published_at >= start, Article.published_at < end)
    pinned_earlier = _rows(session, Article.pinned_until > end, Article.published_at < start)
    merged: dict[str, tuple[Any, set[str]]] = {}
    for article_id, source, published_at, score, title, pinned_until, updated, category in (
        *in_window,
        *pinned_earlier,
    ):
        pinned = pinned_until is not None and pinned_until > end
        fields = (source, published_at, score, title, pinned, updated.isoformat())
        merged.setdefault(article_id, (fields, set()))[1].add(category)
    return [
        Candidate(article_id, source, published_at, score, frozenset(cats), title, pinned, version)
        for article_id, ((source, published_at, score, title, pinned, version), cats) in (
            merged.items()
        )
    ]


def _rows(session: Session, *where: ColumnElement[bool]) -> list[Any]:
    return list(
        session.execute(
            select(
                Article.id,
                Article.source,
                Article.published_at,
                Article.score,
                Article.title,
                Article.pinned_until,
                Article.updated_at,
                ArticleCategory.category,
            )
            .join(ArticleCategory, ArticleCategory.article_id == Article.id)
            .where(Article.held.is_(False), *where)
        ).all()
    )

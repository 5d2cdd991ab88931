"""The articles that may go into an edition, ranked once per content window."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from digestd.models import Article, ArticleCategory, EditionKind
from digestd.planning.schedule import Slot, content_window
from digestd.planning.selection import HALF_LIFE_HOURS, Candidate, order


class Ranking:
    """Every reader of one slot chooses from the same ranked list: computed once a slot."""

    def __init__(self, kind: EditionKind) -> None:
        self.kind = kind
        self._ranked: dict[datetime, list[Candidate]] = {}

    def ranked(self, session: Session, slot: Slot) -> list[Candidate]:
        if slot.at not in self._ranked:
            start, end = content_window(self.kind, slot)
            self._ranked[slot.at] = order(
                candidates(session, start, end), slot.at, HALF_LIFE_HOURS[self.kind]
            )
        return self._ranked[slot.at]


def candidates(session: Session, start: datetime, end: datetime) -> Iterable[Candidate]:
    """Articles published in [start, end), each with all its categories."""
    rows = session.execute(
        select(
            Article.id,
            Article.source,
            Article.published_at,
            Article.score,
            Article.title,
            ArticleCategory.category,
        )
        .join(ArticleCategory, ArticleCategory.article_id == Article.id)
        .where(and_(Article.published_at >= start, Article.published_at < end))
    ).all()
    merged: dict[str, tuple[Any, set[str]]] = {}
    for article_id, source, published_at, score, title, category in rows:
        merged.setdefault(article_id, ((source, published_at, score, title), set()))[1].add(
            category
        )
    return [
        Candidate(article_id, source, published_at, score, frozenset(cats), title)
        for article_id, ((source, published_at, score, title), cats) in merged.items()
    ]

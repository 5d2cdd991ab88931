"""Editors' say over an article: **pin** it (it leads every edition whose reader follows
one of its categories, until a set time) or **hold** it (it goes in no edition). The
selection honours both (:mod:`digestd.planning.selection`).

The latest decision wins: pinning an article releases a hold on it, holding it ends its
pin. Neither touches an edition already planned: digests are rendered when planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from digestd.content.articles import MAX_ID
from digestd.content.text import first_unshowable
from digestd.errors import ValidationError
from digestd.models import Article

# A pin is for a story of the moment; a year ahead is a typo (a year in the date), not a plan.
LONGEST_PIN = timedelta(days=366)


@dataclass(frozen=True)
class Standing:
    """What editors decided about one article."""

    id: str
    pinned_until: datetime | None
    held: bool

    def pinned_at(self, moment: datetime) -> bool:
        return self.pinned_until is not None and self.pinned_until > moment

    def as_json(self) -> dict[str, Any]:
        until = self.pinned_until
        return {
            "id": self.id,
            "pinned_until": until.isoformat().replace("+00:00", "Z") if until else None,
            "held": self.held,
        }


def standing(article: Article) -> Standing:
    return Standing(article.id, article.pinned_until, article.held)


def pin_until(until: datetime, now: datetime) -> datetime:
    """``until`` if it makes a pin: aware, in the future, within :data:`LONGEST_PIN`."""
    if until.tzinfo is None:
        raise ValidationError("until", "give a time zone (e.g. 2026-12-01T18:00:00Z)")
    if until <= now:
        raise ValidationError("until", "must be in the future")
    if until - now > LONGEST_PIN:
        raise ValidationError("until", f"at most {LONGEST_PIN.days} days ahead")
    return until


def pin(session: Session, article_id: str, until: datetime | None, now: datetime) -> Standing:
    """Pin the article until ``until`` (None: unpin). Raises ValidationError naming
    ``until`` for a time that makes no pin, ``id`` for an unknown article."""
    article = _article(session, article_id)
    if until is None:
        article.pinned_until = None
    else:
        article.pinned_until = pin_until(until, now)
        article.held = False
    session.flush()
    return standing(article)


def hold(session: Session, article_id: str, held: bool) -> Standing:
    """Hold the article out of every edition (False: release it)."""
    article = _article(session, article_id)
    article.held = held
    if held:
        article.pinned_until = None
    session.flush()
    return standing(article)


def _article(session: Session, article_id: str) -> Article:
    # An id no article can have (a NUL, which PostgreSQL refuses as text, or too long) is
    # not looked up: the same "no article" on either database.
    stored = len(article_id) <= MAX_ID and first_unshowable(article_id) is None
    article = session.get(Article, article_id) if stored else None
    if article is None:
        raise ValidationError("id", f"no article {article_id[:80]!r}")
    return article

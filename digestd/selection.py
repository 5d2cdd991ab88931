"""Which articles go into one subscriber's edition. Pure functions over plain data.

Ranking (SPEC §4): ``rank = (1 + score) * 0.5 ** (age_hours / half_life_hours)`` where
age is measured from the edition's send time. The ``1 +`` lets unscored articles still
order by recency; the half-life (24 h for the daily, 72 h for the weekly) makes a fresh
article overtake an older one whose score is at most 2x higher after one half-life.
Ties go to the newest, then to the id, so the result is deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

HALF_LIFE_HOURS = {"daily": 24.0, "weekly": 72.0}


@dataclass(frozen=True)
class Candidate:
    id: str
    source: str
    published_at: datetime
    score: float
    categories: frozenset[str]


def rank(candidate: Candidate, now: datetime, half_life_hours: float) -> float:
    age_hours = max(0.0, (now - candidate.published_at).total_seconds() / 3600)
    decay: float = 0.5 ** (age_hours / half_life_hours)
    return (1.0 + candidate.score) * decay


def order(
    candidates: Iterable[Candidate], now: datetime, half_life_hours: float
) -> list[Candidate]:
    """Best first; computed once per edition window and shared by every subscriber."""
    return sorted(
        candidates,
        key=lambda c: (-rank(c, now, half_life_hours), -c.published_at.timestamp(), c.id),
    )


def pick(
    ranked: Sequence[Candidate],
    categories: frozenset[str],
    *,
    limit: int,
    per_source: int,
    exclude: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """The top ``limit`` of ``ranked`` in ``categories``: each article once, ``per_source`` cap."""
    chosen: list[Candidate] = []
    by_source: Counter[str] = Counter()
    for candidate in ranked:
        if candidate.id in exclude or not candidate.categories & categories:
            continue
        source = candidate.source.casefold()
        if source and by_source[source] >= per_source:
            continue
        by_source[source] += 1
        chosen.append(candidate)
        if len(chosen) == limit:
            break
    return chosen

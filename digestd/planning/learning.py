"""What a reader's clicks teach their digest (``DIGESTD_TRACK_CLICKS=reader``; README,
"Learning from clicks"). Pure functions over plain data.

From the stories a reader opened in the last :data:`LEARN_DAYS` (each story once, never a
link scanner's burst, only in categories they follow), with ``n`` such stories in all::

    category boost = floor(10 * 0.5  * stories in that category  / (n + 4)) / 10
    source boost   = floor(10 * 0.25 * stories from that source  / (n + 4)) / 10
    personal rank  = rank * (1 + best category boost of the story + its source's boost)

The ``+ 4`` is a prior: one click is 1/5 of the evidence, a boost of 0.1, so it only
reorders near ties; the boosts approach 0.5 and 0.25 and never reach them, so a story needs
at least 1.6 times another's rank (editorial score with recency decay) to be overtaken by
it whatever the reader clicked. Only the best :data:`WINDOW` × the digest's length of the
site's own order in the reader's categories are reordered: clicks choose among what the
editors ranked near the top, never from the bottom, and never add a category (selection
still takes only the reader's own). Boosts are in tenths, so readers with like habits keep
sharing one digest (each distinct digest is rendered once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from digestd.planning.selection import Candidate, rank, source_key

LEARN_DAYS = 90
CATEGORY_WEIGHT = 0.5
SOURCE_WEIGHT = 0.25
PRIOR = 4  # clicks' worth of "no preference"
WINDOW = 3  # times the digest's length: how deep into the site's order clicks reach


@dataclass(frozen=True)
class Profile:
    """A reader's boosts, in tenths: (category or source key, tenths), sorted."""

    categories: tuple[tuple[str, int], ...] = ()
    sources: tuple[tuple[str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.categories or self.sources)

    def multiplier(self, candidate: Candidate) -> float:
        categories = dict(self.categories)
        best = max((categories.get(c, 0) for c in candidate.categories), default=0)
        return 1 + (best + dict(self.sources).get(source_key(candidate.source), 0)) / 10


def _tenths(weight: float, count: int, total: int) -> int:
    # Integer arithmetic: a boost never lands a hair under a step by rounding.
    return int(round(weight * 100) * 10 * count // (100 * (total + PRIOR)))


def profile(
    by_category: Mapping[str, int], by_source: Mapping[str, int], followed: Sequence[str]
) -> Profile:
    """The boosts of a reader who opened ``by_category`` stories per category and
    ``by_source`` per source (counted over the categories they follow)."""
    counts = {c: n for c, n in by_category.items() if c in followed and n > 0}
    total = sum(counts.values())
    if not total:
        return Profile()
    categories = {c: _tenths(CATEGORY_WEIGHT, n, total) for c, n in counts.items()}
    sources = {s: _tenths(SOURCE_WEIGHT, n, total) for s, n in by_source.items() if n > 0}
    return Profile(
        tuple(sorted((c, t) for c, t in categories.items() if t)),
        tuple(sorted((s, t) for s, t in sources.items() if t)),
    )


def personal_order(
    ranked: Sequence[Candidate],
    categories: frozenset[str],
    exclude: frozenset[str],
    reader: Profile,
    *,
    now: datetime,
    half_life_hours: float,
    limit: int,
) -> list[Candidate]:
    """``ranked`` (the site's order) as this reader's: the first ``WINDOW * limit`` stories
    they may get reordered by personal rank (ties: the site's order), the rest after."""
    head: list[Candidate] = []
    cut = len(ranked)
    for index, candidate in enumerate(ranked):
        # what pick() may take: theirs, not sent before unless pinned (a pin leads again)
        if candidate.categories & categories and (candidate.id not in exclude or candidate.pinned):
            head.append(candidate)
            if len(head) == WINDOW * limit:
                cut = index + 1
                break
    site = {c.id: i for i, c in enumerate(head)}

    def key(c: Candidate) -> tuple[bool, float, int]:
        # A pinned story (an editor's call) leads whatever the reader clicked.
        return (not c.pinned, -rank(c, now, half_life_hours) * reader.multiplier(c), site[c.id])

    return sorted(head, key=key) + list(ranked[cut:])

"""Which articles go into one subscriber's edition. Pure functions over plain data.

Ranking (SPEC §4)::

    rank = (1 + score) * 0.5 ** (age_hours / half_life_hours)

where age is measured from the edition's send time. The ``1 +`` lets unscored articles
still order by recency. The half-life is 24 h for the daily and 72 h for the weekly: an
article one half-life older than another needs twice its ``1 + score`` to stay ahead
(e.g. for the daily, a score-19 story from yesterday morning ties a score-9 story from
this morning). Ties go to the newest, then to the id, so the result is deterministic.

The same story from two sources (near-identical titles) is collapsed into the better-
ranked copy, which then counts for the categories of both.

Editors have the last word (SPEC §4): a *pinned* article (its pin not run out at the
slot's time) leads every edition whose reader follows one of its categories, before any
ranked article, even one it was in before; a *held* one is never a candidate at all
(:mod:`digestd.planning.candidates` leaves it out).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

HALF_LIFE_HOURS = {"daily": 24.0, "weekly": 72.0}
# Two titles are the same story when their word sets overlap this much (Jaccard index).
NEAR_DUPLICATE = 0.7
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    _WORD.findall(
        "a an and are as at be by for from has have in is it its of on or that the to was "
        "were will with after over new says said"
    )
)


@dataclass(frozen=True)
class Candidate:
    id: str
    source: str
    published_at: datetime
    score: float
    categories: frozenset[str]
    title: str = ""
    pinned: bool = False  # pinned at the slot's time: leads, see order() and pick()
    version: str = ""  # when its text last changed: part of a digest's key (a correction)


def rank(candidate: Candidate, now: datetime, half_life_hours: float) -> float:
    age_hours = max(0.0, (now - candidate.published_at).total_seconds() / 3600)
    decay: float = 0.5 ** (age_hours / half_life_hours)
    return (1.0 + candidate.score) * decay


def source_key(name: str) -> str:
    """A source's name as the per-source cap and the learned boosts count it: "The Verge",
    "the  verge", "The\u00a0Verge" and "The Verge." are one source."""
    words = unicodedata.normalize("NFKC", name).casefold().split()
    return " ".join(words).strip(".,;:·-– ")


def title_words(title: str) -> frozenset[str]:
    text = unicodedata.normalize("NFKC", title).casefold()
    return frozenset(w for w in _WORD.findall(text) if w not in _STOPWORDS)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def collapse_near_duplicates(ranked: Sequence[Candidate]) -> list[Candidate]:
    """Keep the first (best-ranked) copy of each story; it inherits the others' categories.

    An inverted index of title words keeps this near-linear: a candidate is compared only
    with kept stories sharing a word, not with every kept story.
    """
    kept: list[Candidate] = []
    words_of: list[frozenset[str]] = []
    index: dict[str, list[int]] = defaultdict(list)
    for candidate in ranked:
        words = title_words(candidate.title)
        shared: Counter[int] = Counter(i for w in words for i in index.get(w, ()))
        duplicate_of = next(
            (
                i
                for i, _ in shared.most_common()
                if similarity(words, words_of[i]) >= NEAR_DUPLICATE
            ),
            None,
        )
        if duplicate_of is not None:
            original = kept[duplicate_of]
            kept[duplicate_of] = replace(
                original, categories=original.categories | candidate.categories
            )
            continue
        for w in words:
            index[w].append(len(kept))
        kept.append(candidate)
        words_of.append(words)
    return kept


def order(
    candidates: Iterable[Candidate], now: datetime, half_life_hours: float
) -> list[Candidate]:
    """Pinned first, then best first, near-duplicates collapsed (into the pinned copy when
    there is one); computed once per edition window and shared by every subscriber of it."""
    ranked = sorted(
        candidates,
        key=lambda c: (
            not c.pinned,
            # To 12 digits: ranks equal by the formula can differ in the last bit of a float
            # (score 1 one half-life older than score 0), and then the newer must win.
            -float(f"{rank(c, now, half_life_hours):.12g}"),
            -c.published_at.timestamp(),
            c.id,
        ),
    )
    return collapse_near_duplicates(ranked)


def pick(
    ranked: Sequence[Candidate],
    categories: frozenset[str],
    *,
    limit: int,
    per_source: int,
    exclude: frozenset[str] = frozenset(),
) -> list[Candidate]:
    """The top ``limit`` of ``ranked`` in ``categories``: each article once, ``per_source`` cap.
    A pinned article is taken even if ``exclude`` names it (it leads every edition while
    pinned) and whatever its source; it counts towards its source's cap."""
    chosen: list[Candidate] = []
    by_source: Counter[str] = Counter()
    for candidate in ranked:
        if not candidate.categories & categories:
            continue
        if candidate.id in exclude and not candidate.pinned:
            continue
        source = source_key(candidate.source)
        if source and by_source[source] >= per_source and not candidate.pinned:
            continue
        by_source[source] += 1
        chosen.append(candidate)
        if len(chosen) == limit:
            break
    return chosen

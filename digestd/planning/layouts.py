"""How a reader's chosen articles are laid out in their digest (see :mod:`digestd.mail.layout`).

Both editions lead with their top story. The daily then lists the rest in rank order; the
weekly groups the rest by the reader's categories, in the site's order. Each card shows the
first of the article's categories that the reader follows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from digestd.content.categories import CATEGORIES
from digestd.mail.layout import Entry, Layout, Section
from digestd.models import EditionKind
from digestd.planning.selection import Candidate

SITE_ORDER = {slug: i for i, slug in enumerate(CATEGORIES)}


def in_site_order(categories: Sequence[str]) -> list[str]:
    return sorted(categories, key=SITE_ORDER.__getitem__)


def layout_of(kind: EditionKind, chosen: Sequence[Candidate], categories: Sequence[str]) -> Layout:
    """``chosen`` best first; ``categories`` the reader's, in the site's order."""
    followed = set(categories)

    def entry(candidate: Candidate) -> Entry:
        shown = min((c for c in candidate.categories if c in followed), key=SITE_ORDER.__getitem__)
        return Entry(candidate.id, shown)

    lead = Section(None, (entry(chosen[0]),), lead=True)
    if kind is EditionKind.DAILY:
        rest = tuple(entry(c) for c in chosen[1:])
        return Layout(tuple(categories), (lead, Section(None, rest)) if rest else (lead,))
    grouped: dict[str, list[Entry]] = defaultdict(list)
    for candidate in chosen[1:]:
        card = entry(candidate)
        grouped[card.category].append(card)
    by_category = [Section(slug, tuple(grouped[slug])) for slug in in_site_order(list(grouped))]
    return Layout(tuple(categories), (lead, *by_category))

"""From a digest's layout and its articles to the template context of one email.

Per-recipient links are placeholders here (:class:`~digestd.mail.template.LinkSlots`): a
digest is rendered once and each recipient's copy is made by substitution.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from digestd.content.categories import CATEGORIES
from digestd.mail.layout import Entry, Layout
from digestd.mail.template import click_name
from digestd.models import EditionKind

# What each recipient's copy of a digest fills in. The reader's own links sit between
# ``personal_begin`` and ``personal_end`` (empty in an email): a copy shown on the web
# (view in browser) takes those stretches out, so a shared page carries no reader's links.
PERSONAL_LINKS = ("unsubscribe", "preferences", "view", "personal_begin", "personal_end")
# A digest for a reader who follows several categories offers to mute each one it shows:
# one personal link, ``mute``, with the category in its query (:func:`mute_url`).
MUTE = "mute"

# Limits keep a card short enough to skim (the lead story shows more) and an edition under
# Gmail's ~102 KB clip; an edition of long fields (or of text that takes three bytes a
# character) that would pass it anyway is rendered again with the compact limits.
TITLE_CHARS = 200
PREHEADER_CHARS = 140
# Article kinds as the site labels them; news, the usual kind, gets no badge.
KIND_LABELS = {
    "deals": "Deal",
    "social": "Social",
    "blogs": "Blog",
    "videos": "Video",
    "podcasts": "Podcast",
}


@dataclass(frozen=True)
class Limits:
    why: int  # characters of "why it matters" (or of the summary shown in its place)
    takeaways: int  # how many key takeaways
    takeaway: int  # characters of each
    companies: int = 6  # how many companies
    name: int = 60  # characters of a company's name, of the source's
    title: int = TITLE_CHARS
    image: bool = True  # the lead's image (a card never has one)


LEAD = Limits(why=480, takeaways=4, takeaway=220)
CARD = Limits(why=280, takeaways=3, takeaway=160)
# (lead, card) from the fullest to the tightest; :class:`digestd.mail.digests.DigestRenderer`
# takes the first whose email fits.
FITS = (
    (LEAD, CARD),
    (
        Limits(why=240, takeaways=2, takeaway=140, companies=3, name=40, image=False),
        Limits(why=140, takeaways=1, takeaway=100, companies=2, name=30, title=120),
    ),
    (
        Limits(why=140, takeaways=0, takeaway=0, companies=0, name=30, title=120, image=False),
        Limits(why=0, takeaways=0, takeaway=0, companies=0, name=24, title=90),
    ),
)


@dataclass(frozen=True)
class Site:
    name: str
    url: str
    postal_address: str


def shorten(text: str, limit: int) -> str:
    """Cut at a word boundary and mark the cut; never mid-word unless one word is too long."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def long_date(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def short_date(moment: datetime) -> str:
    return f"{moment.day} {moment:%b}"  # within the last week: the year goes without saying


def companies_line(companies: list[dict[str, str]], limits: Limits = CARD) -> str:
    shown = [
        f"{shorten(c['name'], limits.name)} ({shorten(c['ticker'], 12)})"
        if c.get("ticker")
        else shorten(c["name"], limits.name)
        for c in companies[: limits.companies]
    ]
    return ", ".join(shown)


def mute_url(links: Mapping[str, str], category: str) -> str:
    """The reader's link that mutes ``category``."""
    return f"{links[MUTE]}?category={category}"


def article_view(
    article: Any,
    category: str,
    number: int,
    limits: Limits = CARD,
    links: Mapping[str, str] | None = None,
    *,
    dated: bool = True,
) -> dict[str, Any]:
    """What a card shows; its link is the tracked one from ``links`` when there is one.
    ``dated``: the byline says the day it was published."""
    source = shorten(article.source, limits.name)
    day = short_date(article.published_at) if dated else ""
    why = shorten(article.why_it_matters, limits.why) if limits.why else ""
    # The publisher's summary (a feed's description) takes its place, but is no editor's
    # "why it matters": the templates show it without that label.
    summary = "" if why or not limits.why else shorten(article.summary, limits.why)
    return {
        "number": number,
        "anchor": f"story-{number}",
        "url": (links or {}).get(click_name(number), article.url),
        "title": shorten(article.title, limits.title),
        "source": source,
        "category_name": CATEGORIES.get(category, category),
        "kind_label": KIND_LABELS.get(getattr(article, "kind", "news"), ""),
        "byline": " · ".join(p for p in (source, day) if p),
        "image_url": article.image_url if limits.image else None,
        "why_it_matters": why,
        "summary": summary,
        "key_takeaways": [
            shorten(t, limits.takeaway) for t in article.key_takeaways[: limits.takeaways]
        ],
        "companies": companies_line(article.companies, limits),
    }


_SITE_ORDER = {slug: place for place, slug in enumerate(CATEGORIES)}


def names_of(categories: list[str]) -> str:
    """ "AI, Quantum and Robotics": in the site's (alphabetical) order wherever topics are
    named, whatever order the reader picked them in."""
    ordered = sorted(categories, key=lambda c: _SITE_ORDER.get(c, len(_SITE_ORDER)))
    names = [CATEGORIES.get(c, c) for c in ordered]
    if len(names) == len(CATEGORIES):
        return "All Technology"
    if len(names) > 4:
        return f"{', '.join(names[:3])} and {len(names) - 3} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _lead_and_groups(layout: Layout) -> tuple[Entry, list[tuple[str | None, list[Entry]]]]:
    """The lead story and the groups of cards after it. A daily planned before dailies had
    a lead section is led by its first card."""
    groups = [(s.category, list(s.entries)) for s in layout.sections if not s.lead]
    leads = [e for s in layout.sections if s.lead for e in s.entries]
    if not leads:
        leads = [groups[0][1].pop(0)]
    return leads[0], [(category, entries) for category, entries in groups if entries]


def muted_categories(kind: EditionKind, layout: Layout) -> list[str]:
    """The categories a digest offers to mute, in the site's order: none when the reader
    follows only one (muting it would stop their digests); else each of the weekly's
    category sections, or every category on a daily's cards."""
    if len(layout.categories) < 2:
        return []
    lead, groups = _lead_and_groups(layout)
    if kind is EditionKind.WEEKLY:
        shown = {category for category, _ in groups}
    else:
        shown = {lead.category, *(e.category for _, entries in groups for e in entries)}
    return [slug for slug in CATEGORIES if slug in shown]


def personal_links(kind: EditionKind, layout: Layout) -> tuple[str, ...]:
    """Every link a recipient's copy of this digest fills in."""
    return PERSONAL_LINKS + ((MUTE,) if muted_categories(kind, layout) else ())


def _preheader(kind: EditionKind, lead: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """What an inbox shows after the subject (which names the lead): the next headlines,
    or, for a lone story, why it matters (or its summary)."""
    if not others:
        return shorten(lead["why_it_matters"] or lead["summary"] or lead["title"], PREHEADER_CHARS)
    also = "Also this week" if kind is EditionKind.WEEKLY else "Also today"
    return shorten(f"{also}: " + " · ".join(a["title"] for a in others[:3]), PREHEADER_CHARS)


def digest_context(
    kind: EditionKind,
    local_date: date,
    layout: Layout,
    articles: Mapping[str, Any],
    site: Site,
    links: Mapping[str, str],
    *,
    fit: int = 0,
) -> dict[str, Any]:
    """Template context for a digest; ``links`` has a value for each of
    :func:`personal_links`, and for each article's ``click_<n>`` when links are tracked.
    ``fit``: which of :data:`FITS` (tighter limits, for an edition that would be clipped)."""
    lead_limits, card_limits = FITS[fit]
    lead_entry, groups = _lead_and_groups(layout)
    # A daily's stories are all of the last day: a date would only mislead, since it is the
    # day in UTC (the digest is rendered once for readers in every zone) and, for a story
    # from a Los Angeles evening, the next day. The recap's week needs them.
    view = functools.partial(article_view, links=links, dated=kind is EditionKind.WEEKLY)
    lead = view(articles[lead_entry.article_id], lead_entry.category, 1, lead_limits)
    muted = muted_categories(kind, layout)
    sections: list[dict[str, Any]] = []
    number = 1
    for category, entries in groups:
        views = []
        for entry in entries:
            number += 1
            views.append(view(articles[entry.article_id], entry.category, number, card_limits))
        mute = mute_url(links, category) if category in muted else ""
        name = CATEGORIES.get(category, category) if category else ""
        sections.append({"heading": name, "articles": views, "mute": mute})
    others = [a for s in sections for a in s["articles"]]
    topics = names_of(list(layout.categories))
    if kind is EditionKind.DAILY:
        heading = f"Daily digest · {long_date(local_date)}"
        reason = f"You receive the {site.name} daily digest for {topics}."
        mutes = [{"name": CATEGORIES[slug], "link": mute_url(links, slug)} for slug in muted]
    else:
        heading = f"Weekly recap · week to {long_date(local_date)}"
        reason = f"You receive the {site.name} weekly recap for {topics}."
        mutes = []  # each category section carries its own
    return {
        "kind": str(kind),
        "site": site,
        "heading": heading,
        "preheader": _preheader(kind, lead, others),
        "lead": lead,
        "lead_heading": "Top story" if kind is EditionKind.DAILY else "Top story of the week",
        "sections": sections,
        "top": lead,
        "count": number,
        "mutes": mutes,
        "footer_reason": reason,
        "links": dict(links),
    }

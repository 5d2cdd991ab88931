"""From a digest's layout and its articles to the template context of one email.

Per-recipient links are placeholders here (:class:`~digestd.mail.template.LinkSlots`): a
digest is rendered once and each recipient's copy is made by substitution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from digestd.content.categories import CATEGORIES
from digestd.mail.layout import Layout
from digestd.models import EditionKind

# What each recipient's copy of a digest fills in. The reader's own links sit between
# ``personal_begin`` and ``personal_end`` (empty in an email): a copy shown on the web
# (view in browser) replaces that stretch, so a shared page carries no reader's links.
PERSONAL_LINKS = ("unsubscribe", "preferences", "view", "personal_begin", "personal_end")

# Card limits keep the largest edition (15 articles, long fields) under Gmail's ~102 KB clip.
TITLE_CHARS = 200
WHY_CHARS = 480
TAKEAWAYS = 4
TAKEAWAY_CHARS = 220
COMPANIES = 6


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
    return f"{moment.day} {moment:%b %Y}"


def companies_line(companies: list[dict[str, str]]) -> str:
    shown = [
        f"{c['name']} ({c['ticker']})" if c.get("ticker") else c["name"]
        for c in companies[:COMPANIES]
    ]
    return ", ".join(shown)


def article_view(article: Any, category: str, number: int) -> dict[str, Any]:
    return {
        "number": number,
        "url": article.url,
        "title": shorten(article.title, TITLE_CHARS),
        "source": article.source,
        "category_name": CATEGORIES.get(category, category),
        "byline": " · ".join(p for p in (article.source, short_date(article.published_at)) if p),
        "image_url": article.image_url,
        "why_it_matters": shorten(article.why_it_matters, WHY_CHARS),
        "key_takeaways": [shorten(t, TAKEAWAY_CHARS) for t in article.key_takeaways[:TAKEAWAYS]],
        "companies": companies_line(article.companies),
    }


def names_of(categories: list[str]) -> str:
    names = [CATEGORIES.get(c, c) for c in categories]
    if len(names) == len(CATEGORIES):
        return "All Technology"
    if len(names) > 4:
        return f"{', '.join(names[:3])} and {len(names) - 3} more"
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def digest_context(
    kind: EditionKind,
    local_date: date,
    layout: Layout,
    articles: Mapping[str, Any],
    site: Site,
    links: Mapping[str, str],
) -> dict[str, Any]:
    """Template context for a digest; ``links`` has a value for each of PERSONAL_LINKS."""
    sections: list[dict[str, Any]] = []
    number = 0
    for section in layout.sections:
        views: list[dict[str, Any]] = []
        for entry in section.entries:
            number += 1
            views.append(article_view(articles[entry.article_id], entry.category, number))
        heading = (
            "Top story of the week" if section.lead else CATEGORIES.get(section.category or "", "")
        )
        sections.append({"heading": heading, "articles": views})
    flat = [a for s in sections for a in s["articles"]]
    topics = names_of(list(layout.categories))
    if kind is EditionKind.DAILY:
        heading = f"Daily digest · {long_date(local_date)}"
        story_word = "story" if number == 1 else f"{number} stories"
        intro = f"Good morning! Today's top {story_word} in {topics}."
        reason = f"You receive the {site.name} daily digest for {topics}."
    else:
        heading = f"Weekly recap · week to {long_date(local_date)}"
        intro = f"The week's most important stories in {topics}, led by the top story of the week."
        reason = f"You receive the {site.name} weekly recap for {topics}."
    preheader = shorten(" · ".join(a["title"] for a in flat[:3]), 140)
    return {
        "kind": str(kind),
        "site": site,
        "heading": heading,
        "intro": intro,
        "preheader": preheader,
        "sections": sections,
        "top": flat[0],
        "count": number,
        "footer_reason": reason,
        "links": dict(links),
    }

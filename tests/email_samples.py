"""Editions built straight from crafted articles (no database), for rendering tests and the
render benchmark: long titles, Unicode, emoji, right-to-left text and hostile strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from digestd.mail.digests import ArticleFields, DigestRenderer, Masthead
from digestd.mail.layout import Layout
from digestd.mail.presentation import Site, digest_context
from digestd.mail.template import MessageTemplate
from digestd.models import EditionKind
from digestd.ops.demo import demo_articles
from digestd.planning.layouts import in_site_order, layout_of
from digestd.planning.selection import Candidate

SEND = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
SITE = Site(
    "Tech Pulse",
    "https://news.example.com",
    "Tech Pulse Ltd · 1 Market Street · San Francisco, CA 94105",
)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert("pwned")</script>'
TITLES = [
    "Meta's Internal Memo Signals AI Comeback After Rocky Year",
    "Ünïcödé everywhere: Zürich's quantum lab hits 99.9 % fidelity — 量子コンピュータ 🚀",
    "مختبرات الذكاء الاصطناعي في دبي تطلق نموذجاً جديداً للغة العربية",
    "חברת רובוטיקה ישראלית מגייסת 200 מיליון דולר",
    "A very long headline about the chip industry, export rules, a merger that regulators "
    "may block, two lawsuits, a product launch slipping to next year, and what it all "
    "means for the price of the laptop you were going to buy for the holidays this winter",
    HOSTILE,
    "Stablecoin bill clears committee with bipartisan support",
    "Passkeys become the default sign-in for a major email provider 🔐",
    "Grid batteries overtake gas peakers in evening supply",
    "Booster catch succeeds on the first try at the new tower",
]
PROSE = (
    "The deal gives the company a foothold in a market it has tried to enter twice, and it "
    "puts pressure on rivals that have relied on cheap capital to fund their growth so far."
)
CATEGORY_CYCLE = [
    "ai",
    "quantum",
    "ai",
    "robotics",
    "fintech",
    "ai",
    "fintech",
    "cybersecurity",
    "climatetech",
    "spacetech",
]

KIND_CYCLE = ["news", "deals", "news", "videos", "news", "podcasts", "blogs", "social"]


@dataclass
class SampleArticle:
    """Quacks like models.Article for presentation.article_view."""

    id: str
    url: str
    title: str
    source: str
    published_at: datetime
    why_it_matters: str
    key_takeaways: list[str]
    companies: list[dict[str, str]]
    image_url: str | None
    categories: list[str] = field(default_factory=list)
    kind: str = "news"


def sample_articles(count: int) -> list[SampleArticle]:
    articles = []
    for i in range(count):
        title = TITLES[i % len(TITLES)]
        articles.append(
            SampleArticle(
                id=f"a{i}",
                url=f"https://news.example.com/story/{i}?ref=digest&amp=1",
                title=title if i < len(TITLES) else f"{title} (part {i})",
                source=["THE DECODER", "Ars Technica", "Reuters", "الجزيرة", "IEEE Spectrum"][
                    i % 5
                ],
                published_at=SEND - timedelta(hours=i + 1),
                why_it_matters=(HOSTILE + " " if i == 5 else "") + " ".join([PROSE] * 4),
                key_takeaways=[f"Point {k}: {PROSE}" for k in range(6)]
                + ([HOSTILE] if i == 5 else []),
                companies=[{"name": f"Company {k}", "ticker": f"C{k}"} for k in range(8)],
                image_url=f"https://cdn.example.com/img/{i}.jpg" if i % 3 == 0 else None,
                categories=[CATEGORY_CYCLE[i % len(CATEGORY_CYCLE)]],
                kind=KIND_CYCLE[i % len(KIND_CYCLE)],
            )
        )
    return articles


# A reader's own links, as the composer fills them in.
SAMPLE_LINKS = {
    "unsubscribe": "https://digest.example.com/unsubscribe/abc.def.ghi",
    "preferences": "https://digest.example.com/preferences/abc.def.ghi",
    "view": "https://digest.example.com/view/abc.def.ghi",
    "personal_begin": "",
    "personal_end": "",
    "mute": "https://digest.example.com/mute/abc.def.ghi",
}
MASTHEAD = Masthead(
    SITE, "Tech Pulse <digest@news.example.com>", "Tech Pulse digests <digest.news.example.com>"
)


def typical_articles(count: int) -> list[SampleArticle]:
    """Stories as the site writes them (the demo's: a sentence of why it matters, two short
    takeaways, a company or two), of several kinds, the lead with an image."""
    articles = []
    for i, story in enumerate(demo_articles(SEND)[:count]):
        articles.append(
            SampleArticle(
                id=story["id"],
                url=story["url"],
                title=story["title"],
                source=story["source"],
                published_at=datetime.fromisoformat(story["published_at"]),
                why_it_matters=story["why_it_matters"],
                key_takeaways=story["key_takeaways"],
                companies=story["companies"],
                image_url="https://cdn.example.com/img/lead.png" if i == 0 else None,
                categories=story["categories"],
                kind=KIND_CYCLE[(i + 1) % len(KIND_CYCLE)],
            )
        )
    return articles


def typical_context(kind: EditionKind, count: int) -> dict[str, Any]:
    """A typical edition's template context, with a reader's links filled in."""
    layout, articles = sample_layout(kind, count, typical=True)
    return digest_context(kind, date(2026, 11, 29), layout, articles, SITE, SAMPLE_LINKS)


def sample_layout(
    kind: EditionKind, count: int, categories: list[str] | None = None, *, typical: bool = False
) -> tuple[Layout, dict[str, SampleArticle]]:
    articles = typical_articles(count) if typical else sample_articles(count)
    chosen = categories or in_site_order(list({a.categories[0] for a in articles}))
    candidates = [
        Candidate(a.id, a.source, a.published_at, 10.0 - i, frozenset(a.categories), a.title)
        for i, a in enumerate(articles)
    ]
    return layout_of(kind, candidates, chosen), {a.id: a for a in articles}


def sample_context(
    kind: EditionKind,
    count: int,
    categories: list[str] | None = None,
    links: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The template context of a sample edition, with a reader's links filled in."""
    layout, articles = sample_layout(kind, count, categories)
    return digest_context(kind, date(2026, 11, 29), layout, articles, SITE, links or SAMPLE_LINKS)


def sample_template(kind: EditionKind, count: int) -> MessageTemplate:
    """A sample edition rendered the way the planner renders a digest."""
    layout, articles = sample_layout(kind, count)
    fields = {
        a.id: ArticleFields(
            a.url,
            a.title,
            a.source,
            a.published_at,
            a.image_url,
            a.why_it_matters,
            a.key_takeaways,
            a.companies,
            a.kind,
        )
        for a in articles.values()
    }
    return DigestRenderer(MASTHEAD).render(kind, "2026-11-29", layout, fields)

"""Render-once-and-substitute versus rendering per recipient, for 10 000 readers.

Readers pick 1-4 categories with a Zipf-like popularity (AI and a few others are far more
popular than NanoTech), as on a real signup page. The daily's selection runs over a pool of
articles; readers whose selection comes out the same share one digest. We then time:

* ``render``: Jinja2 + MJML for one digest (the expensive part);
* ``shared``: render each distinct digest once, then compose every reader's MIME bytes by
  substitution (what digestd does);
* ``per-recipient``: render for every reader (measured on a sample, extrapolated: doing all
  10 000 would take minutes and prove nothing more).

Run:  .venv/bin/python bench/render_bench.py [--readers 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.mail.composer import Links
from digestd.mail.digests import ArticleFields, DigestRenderer, Masthead
from digestd.mail.layout import Layout
from digestd.mail.presentation import Site
from digestd.mail.template import MessageTemplate, Personal
from digestd.models import EditionKind
from digestd.planning.layouts import layout_of
from digestd.planning.selection import Candidate, order, pick
from digestd.tokens import Tokens

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
SLUGS = list(CATEGORIES)


class _Article:
    def __init__(self, i: int, category: str, rng: random.Random) -> None:
        self.id = f"a{i}"
        self.url = f"https://news.example.com/{category}/{i}"
        self.title = f"Story {i} about {CATEGORIES[category]}: what changed this week and why"
        self.source = f"Outlet {rng.randrange(40)}"
        self.published_at = SEND - timedelta(minutes=rng.randrange(24 * 60))
        self.why_it_matters = "A realistic two-sentence explanation of why this story matters. " * 3
        self.key_takeaways = [
            "First takeaway of the story",
            "Second takeaway, a bit longer",
            "Third takeaway",
        ]
        self.companies = [{"name": "Acme", "ticker": "ACME"}, {"name": "Globex"}]
        self.image_url = None
        self.categories = [category]
        self.score = rng.random() * 20


def readers(count: int, rng: random.Random) -> list[frozenset[str]]:
    weights = [1 / (rank + 1) for rank in range(len(SLUGS))]  # Zipf-like popularity
    choices = []
    for _ in range(count):
        k = rng.choice([1, 1, 2, 2, 2, 3, 3, 4])
        picked: set[str] = set()
        while len(picked) < k:
            picked.add(rng.choices(SLUGS, weights)[0])
        choices.append(frozenset(picked))
    return choices


@dataclass(frozen=True)
class Mail:
    """What rendering a digest and composing a reader's message from it need."""

    renderer: DigestRenderer
    by_id: dict[str, ArticleFields]
    links: Links
    now: str

    def render(self, layout: Layout) -> MessageTemplate:
        return self.renderer.render(EditionKind.DAILY, "2026-11-30", layout, self.by_id)

    def personal(self, n: int, template: MessageTemplate) -> Personal:
        return Personal(
            to=f"reader{n}@example.com",
            message_id=f"<daily.{n}@news.example.com>",
            date=self.now,
            links=self.links.for_subscriber(f"pub{n}", n, template.link_names),
            unsubscribe_mailto="unsubscribe@news.example.com?subject=unsubscribe",
        )


@dataclass(frozen=True)
class Timings:
    readers: int
    digests: int
    selection_s: float
    render_s: float
    compose_s: float
    size: int  # bytes of all the messages composed
    per_recipient_s: float
    sampled: int  # per-recipient renders timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--articles-per-category", type=int, default=6)
    parser.add_argument("--sample", type=int, default=200, help="per-recipient renders timed")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    articles = [
        _Article(i, SLUGS[i % len(SLUGS)], rng)
        for i in range(args.articles_per_category * len(SLUGS))
    ]
    ranked = ranking(articles)
    mail = mail_for(articles)

    started = time.perf_counter()
    digests, plan = plan_digests(readers(args.readers, rng), ranked)
    selection_s = time.perf_counter() - started

    render_s, compose_s, size = time_shared(mail, digests, plan)
    sample = plan[: args.sample]
    per_recipient_each = time_per_recipient(mail, digests, sample)
    report(
        Timings(
            readers=len(plan),
            digests=len(digests),
            selection_s=selection_s,
            render_s=render_s,
            compose_s=compose_s,
            size=size,
            per_recipient_s=per_recipient_each * len(plan),
            sampled=len(sample),
        )
    )


def ranking(articles: list[_Article]) -> list[Candidate]:
    return order(
        [
            Candidate(a.id, a.source, a.published_at, a.score, frozenset(a.categories), a.title)
            for a in articles
        ],
        SEND,
        24,
    )


def mail_for(articles: list[_Article]) -> Mail:
    by_id = {
        a.id: ArticleFields(
            a.url,
            a.title,
            a.source,
            a.published_at,
            a.image_url,
            a.why_it_matters,
            a.key_takeaways,
            a.companies,
        )
        for a in articles
    }
    site = Site("Tech Pulse", "https://news.example.com", "Tech Pulse Ltd · 1 Market Street")
    renderer = DigestRenderer(
        Masthead(
            site, "Tech Pulse <digest@news.example.com>", "Tech Pulse <digest.news.example.com>"
        )
    )
    settings = load_settings(
        {
            "DIGESTD_BASE_URL": "https://digest.example.com",
            "DIGESTD_FROM": "Tech Pulse <digest@news.example.com>",
            "DIGESTD_SECRET_KEYS": "bench-key-0123456789abcdef",
        }
    )
    links = Links(settings, Tokens(settings.secret_keys))
    return Mail(renderer, by_id, links, format_datetime(SEND))


def plan_digests(
    choices: list[frozenset[str]], ranked: list[Candidate]
) -> tuple[dict[tuple[str, ...], Layout], list[tuple[int, tuple[str, ...]]]]:
    """The distinct digests, and which one each reader gets."""
    digests: dict[tuple[str, ...], Layout] = {}
    plan: list[tuple[int, tuple[str, ...]]] = []
    for n, categories in enumerate(choices):
        cats = sorted(categories, key=SLUGS.index)
        chosen = pick(ranked, categories, limit=10, per_source=3)
        layout = layout_of(EditionKind.DAILY, chosen, cats)
        key = tuple(layout.article_ids()) + tuple(cats)
        digests.setdefault(key, layout)
        plan.append((n, key))
    return digests, plan


def time_shared(
    mail: Mail,
    digests: dict[tuple[str, ...], Layout],
    plan: list[tuple[int, tuple[str, ...]]],
) -> tuple[float, float, int]:
    """Seconds to render each distinct digest once, seconds to compose every reader's
    message from it, and the bytes composed."""
    started = time.perf_counter()
    templates = {key: mail.render(layout) for key, layout in digests.items()}
    render_s = time.perf_counter() - started
    started = time.perf_counter()
    size = 0
    for n, key in plan:
        template = templates[key]
        size += len(template.compose(mail.personal(n, template)))
    compose_s = time.perf_counter() - started
    return render_s, compose_s, size


def time_per_recipient(
    mail: Mail,
    digests: dict[tuple[str, ...], Layout],
    sample: list[tuple[int, tuple[str, ...]]],
) -> float:
    """Seconds to render and compose one reader's message on its own, on average."""
    started = time.perf_counter()
    for n, key in sample:
        template = mail.render(digests[key])
        template.compose(mail.personal(n, template))
    return (time.perf_counter() - started) / len(sample)


def report(t: Timings) -> None:
    shared_s = t.render_s + t.compose_s
    print(f"readers                     {t.readers:>10,}")
    sharing = t.readers / t.digests
    print(f"distinct digests            {t.digests:>10,}  ({sharing:.1f} readers each)")
    print(f"selection                   {t.selection_s:>10.2f} s")
    print(f"renders/s (Jinja2+MJML)     {t.digests / t.render_s:>10.1f}")
    average = t.size // t.readers
    print(f"compose/s (substitution)    {t.readers / t.compose_s:>10,.0f}  (avg {average:,} bytes)")
    print(f"render once + substitute    {shared_s:>10.2f} s  ({t.readers / shared_s:,.0f} msg/s)")
    per_recipient_s = t.per_recipient_s
    print(f"render per recipient        {per_recipient_s:>10.2f} s  (from {t.sampled} timed)")
    print(f"speed-up                    {per_recipient_s / shared_s:>10.1f}x")


if __name__ == "__main__":
    main()

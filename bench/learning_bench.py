"""What learning from clicks costs the planner: how many more distinct digests (each one a
render) when every reader's clicks reorder their digest, with the boosts in tenths (what
digestd does) and, for comparison, in hundredths; and the selection's time per reader.

Readers pick 1-4 categories with a Zipf-like popularity, as in ``render_bench.py``, over the
daily's 156 articles (6 per category, 40 outlets). A share of them (``--clickers``) has a
click history: 1 + a geometric number of stories opened (mean ``--mean-clicks``), each in
one of their categories drawn with a leaning of their own, from an outlet they favour half
the time. Selection and layout are digestd's own (``order``, ``personal_order``, ``pick``,
``layout_of``); a sample of distinct digests is rendered to price each extra one.

Run:  .venv/bin/python bench/learning_bench.py [--readers 10000] [--clickers 0.6] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.mail.digests import ArticleFields, DigestRenderer, Masthead
from digestd.models import EditionKind
from digestd.planning import learning
from digestd.planning.layouts import in_site_order, layout_of
from digestd.planning.learning import Profile, personal_order
from digestd.planning.selection import Candidate, order, pick

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
SLUGS = list(CATEGORIES)
OUTLETS = [f"Outlet {i}" for i in range(40)]
LIMIT, PER_SOURCE, HALF_LIFE = 10, 3, 24.0


@dataclass(frozen=True)
class Fine(Profile):
    """The same boosts in hundredths: what sharing would look like without tenths."""

    def multiplier(self, candidate: Candidate) -> float:
        categories = dict(self.categories)
        best = max((categories.get(c, 0) for c in candidate.categories), default=0)
        return 1 + (best + dict(self.sources).get(candidate.source.casefold(), 0)) / 100


def fine(by_category: Counter[str], by_source: Counter[str], followed: list[str]) -> Profile:
    total = sum(n for c, n in by_category.items() if c in followed)
    if not total:
        return Profile()

    def step(weight: float, n: int) -> int:
        return int(100 * weight * n / (total + learning.PRIOR))

    cats = {c: step(learning.CATEGORY_WEIGHT, n) for c, n in by_category.items() if c in followed}
    srcs = {s: step(learning.SOURCE_WEIGHT, n) for s, n in by_source.items()}
    return Fine(
        tuple(sorted((c, t) for c, t in cats.items() if t)),
        tuple(sorted((s, t) for s, t in srcs.items() if t)),
    )


def readers(count: int, rng: random.Random) -> list[list[str]]:
    weights = [1 / (rank + 1) for rank in range(len(SLUGS))]
    chosen = []
    for _ in range(count):
        k = rng.choice([1, 1, 2, 2, 2, 3, 3, 4])
        picked: set[str] = set()
        while len(picked) < k:
            picked.add(rng.choices(SLUGS, weights)[0])
        chosen.append(in_site_order(list(picked)))
    return chosen


def history(
    categories: list[str], rng: random.Random, share: float, mean: float
) -> tuple[Counter[str], Counter[str]]:
    by_category: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    if rng.random() > share:
        return by_category, by_source
    leaning = [rng.random() ** 2 for _ in categories]
    favourite = rng.choice(OUTLETS).casefold()
    clicks = 1
    while rng.random() < 1 - 1 / mean:
        clicks += 1
    for _ in range(clicks):
        by_category[rng.choices(categories, leaning)[0]] += 1
        by_source[favourite if rng.random() < 0.5 else rng.choice(OUTLETS).casefold()] += 1
    return by_category, by_source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--clickers", type=float, default=0.6, help="share with a history")
    parser.add_argument("--mean-clicks", type=float, default=8.0)
    parser.add_argument("--sample", type=int, default=100, help="digests rendered to time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    fields, candidates = daily_articles(rng)
    ranked = order(candidates, SEND, HALF_LIFE)
    people = readers(args.readers, rng)
    histories = [history(c, rng, args.clickers, args.mean_clicks) for c in people]

    results: dict[str, tuple[int, float, set[str]]] = {}
    for name in ("site order", "learning, tenths", "learning, hundredths"):
        started = time.perf_counter()
        keys = distinct_digests(name, ranked, people, histories)
        seconds = time.perf_counter() - started
        results[name] = (len(keys), seconds / args.readers * 1e6, keys)

    per_render, rendered = time_renders(ranked, people, fields, args.sample)

    base = results["site order"][0]
    clickers = sum(1 for by_category, _ in histories if by_category)
    print(f"{args.readers:,} readers, {clickers:,} with clicks (mean {args.mean_clicks:g})")
    print(f"render: {per_render * 1000:.1f} ms a digest ({rendered} timed)")
    for name, (distinct, micros, _) in results.items():
        extra = distinct - base
        print(
            f"{name:>22}: {distinct:6,} distinct digests ({distinct / base:.2f}x, "
            f"{extra:+,} renders = {extra * per_render:+.1f} s), "
            f"selection {micros:.0f} us a reader"
        )


def daily_articles(rng: random.Random) -> tuple[dict[str, ArticleFields], list[Candidate]]:
    """The daily's 156 articles: what a digest shows of them, and what selection weighs."""
    fields: dict[str, ArticleFields] = {}
    candidates = []
    for i in range(6 * len(SLUGS)):
        slug, source = SLUGS[i % len(SLUGS)], rng.choice(OUTLETS)
        published = SEND - timedelta(minutes=rng.randrange(24 * 60))
        fields[f"a{i}"] = ArticleFields(
            f"https://news.example.com/{slug}/{i}",
            f"Story {i} about {CATEGORIES[slug]}: what changed this week and why",
            source,
            published,
            None,
            "A realistic two-sentence explanation of why this story matters. " * 3,
            ["First takeaway", "Second takeaway, a bit longer", "Third"],
            [{"name": "Acme", "ticker": "ACME"}],
        )
        candidates.append(
            Candidate(f"a{i}", source, published, rng.random() * 20, frozenset([slug]), f"S{i}")
        )
    return fields, candidates


def distinct_digests(
    name: str,
    ranked: list[Candidate],
    people: list[list[str]],
    histories: list[tuple[Counter[str], Counter[str]]],
) -> set[str]:
    """The content keys of every reader's digest, ordered as ``name`` says."""
    keys: set[str] = set()
    for followed, (by_category, by_source) in zip(people, histories, strict=True):
        mine = ranked
        if name != "site order":
            make = learning.profile if name.endswith("tenths") else fine
            boosts = make(by_category, by_source, followed)
            if boosts:
                mine = personal_order(
                    ranked,
                    frozenset(followed),
                    frozenset(),
                    boosts,
                    now=SEND,
                    half_life_hours=HALF_LIFE,
                    limit=LIMIT,
                )
        chosen = pick(mine, frozenset(followed), limit=LIMIT, per_source=PER_SOURCE)
        keys.add(layout_of(EditionKind.DAILY, chosen, followed).content_key())
    return keys


def time_renders(
    ranked: list[Candidate],
    people: list[list[str]],
    fields: dict[str, ArticleFields],
    sample: int,
) -> tuple[float, int]:
    """Seconds a render takes, on average over up to ``sample`` distinct digests; how many."""
    settings = load_settings({"DIGESTD_SECRET_KEYS": "bench-secret-key-0123456789abcdef"})
    renderer = DigestRenderer(Masthead.from_settings(settings))
    layouts = []
    for followed in people[: sample * 5]:
        chosen = pick(ranked, frozenset(followed), limit=LIMIT, per_source=PER_SOURCE)
        layouts.append(layout_of(EditionKind.DAILY, chosen, followed))
    distinct = list({layout.content_key(): layout for layout in layouts}.values())[:sample]
    started = time.perf_counter()
    for layout in distinct:
        renderer.render(EditionKind.DAILY, "2026-11-30", layout, fields)
    return (time.perf_counter() - started) / len(distinct), len(distinct)


if __name__ == "__main__":
    main()

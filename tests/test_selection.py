"""Selection on crafted data: decay, ties, one appearance per article, the source cap,
near-duplicate collapse, no repeats across dailies, and the weekly's top story."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from digestd.planning.selection import (
    Candidate,
    collapse_near_duplicates,
    order,
    pick,
    rank,
    source_key,
)
from tests.helpers import article, parse, parts, run_cli

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def c(
    cid: str,
    *,
    hours: float = 1,
    score: float = 0,
    source: str = "S",
    cats: str = "ai",
    title: str = "",
) -> Candidate:
    return Candidate(
        cid,
        source,
        NOW - timedelta(hours=hours),
        score,
        frozenset(cats.split(",")),
        title or f"Unique headline {cid}",
    )


def ids(candidates: list[Candidate]) -> list[str]:
    return [x.id for x in candidates]


def test_recency_decay_overtakes_a_stale_high_score_at_the_documented_rate() -> None:
    # One half-life (24 h) older needs twice the (1 + score) to tie.
    fresh = c("fresh", hours=0, score=9)  # 1 + 9 = 10
    stale_tie = c("stale-tie", hours=24, score=19)  # 20 * 0.5 = 10
    assert rank(fresh, NOW, 24) == pytest.approx(rank(stale_tie, NOW, 24))
    stale_less = c("stale-less", hours=24, score=18.9)
    stale_more = c("stale-more", hours=24, score=19.1)
    assert ids(order([stale_less, fresh], NOW, 24)) == ["fresh", "stale-less"]
    assert ids(order([fresh, stale_more], NOW, 24)) == ["stale-more", "fresh"]
    # after two half-lives the same score ratio is no longer enough
    assert ids(order([c("older", hours=48, score=19), fresh], NOW, 24)) == ["fresh", "older"]


def test_ties_go_to_the_newest_then_the_id() -> None:
    a = c("a", hours=2, score=0)
    b = c("b", hours=1, score=0)
    same_time = c("c", hours=1, score=0)
    assert ids(order([a, same_time, b], NOW, 24)) == ["b", "c", "a"]


def test_ties_by_the_formula_go_to_the_newest_whatever_the_floats_say() -> None:
    """Score 1 one weekly half-life (72 h) older than score 0 is the same rank; computed,
    the older came out one unit in the last place ahead."""
    older = c("older", hours=77, score=1)
    newer = c("newer", hours=5, score=0)
    assert rank(older, NOW, 72) != rank(newer, NOW, 72)  # the floats disagree
    assert rank(older, NOW, 72) == pytest.approx(rank(newer, NOW, 72))
    assert ids(order([older, newer], NOW, 72)) == ["newer", "older"]


def test_only_the_readers_categories_and_each_article_once() -> None:
    ranked = order(
        [
            c("both", cats="ai,robotics", score=5),
            c("ai", cats="ai"),
            c("fin", cats="fintech", score=9),
        ],
        NOW,
        24,
    )
    chosen = pick(ranked, frozenset({"ai", "robotics"}), limit=10, per_source=9)
    assert ids(chosen) == ["both", "ai"]


def test_at_most_three_from_one_source() -> None:
    ranked = order(
        [c(f"wire-{i}", source="Wire", score=10 - i) for i in range(5)]
        + [c("other", source="Other")],
        NOW,
        24,
    )
    chosen = pick(ranked, frozenset({"ai"}), limit=10, per_source=3)
    assert ids(chosen) == ["wire-0", "wire-1", "wire-2", "other"]


def test_one_source_however_its_name_is_spaced_or_cased_counts_once() -> None:
    names = ["The Verge", "the verge", "The  Verge", "The\u00a0Verge", "The Verge.", " THE VERGE"]
    ranked = order(
        [c(f"v{i}", source=name, score=10 - i) for i, name in enumerate(names)]
        + [c("other", source="Other")],
        NOW,
        24,
    )
    chosen = pick(ranked, frozenset({"ai"}), limit=10, per_source=3)
    assert ids(chosen) == ["v0", "v1", "v2", "other"]
    assert source_key("The\u00a0 Verge.") == source_key("THE VERGE") == "the verge"


def test_limit_is_respected() -> None:
    ranked = order([c(f"a{i}", source=f"S{i}") for i in range(30)], NOW, 24)
    assert len(pick(ranked, frozenset({"ai"}), limit=10, per_source=3)) == 10


def test_near_duplicate_titles_collapse_into_the_better_ranked_copy() -> None:
    original = c(
        "verge",
        score=8,
        source="The Verge",
        cats="ai",
        title="OpenAI releases GPT-6 with a new reasoning engine",
    )
    copy = c(
        "wired",
        score=3,
        source="Wired",
        cats="robotics",
        title="OpenAI Releases GPT-6, With New Reasoning Engine",
    )
    other = c("other", score=1, title="OpenAI hires a new chief scientist from Google")
    kept = collapse_near_duplicates(order([copy, original, other], NOW, 24))
    assert ids(kept) == ["verge", "other"]
    # the kept copy now reaches readers of either story's category
    assert kept[0].categories == frozenset({"ai", "robotics"})
    assert ids(pick(kept, frozenset({"robotics"}), limit=10, per_source=3)) == ["verge"]


def _edition_urls(data: bytes) -> list[str]:
    import re

    text, _ = parts(parse(data))
    # each story's link stands on a line of its own, in the order of the stories
    return re.findall(r"^ *(https://news\.example\.com/\S+)\r?$", text, re.M)


def test_no_repeats_across_consecutive_dailies_and_the_weekly_keeps_the_top_story(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Path
) -> None:
    """Saturday's star story was in Saturday's daily; a catch-up window overlapping it must not
    repeat it in Sunday's daily, yet Sunday's weekly recap still leads with it (and a reader
    of both gets that recap alone on Sunday)."""
    env = {**env, "DIGESTD_TRACK_CLICKS": "off"}  # stories told apart by their own URLs
    saturday = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    star = article("star", "ai", saturday - timedelta(hours=1), score=100, source="Big")
    items = [star] + [
        article(f"d{i}", "ai", saturday + timedelta(hours=20, minutes=i), score=1, source=f"S{i}")
        for i in range(3)
    ]
    (tmp_path / "a.json").write_text(json.dumps(items))
    (tmp_path / "r.csv").write_text(
        "email,categories,frequency,timezone\n"
        "ann@example.com,ai,both,UTC\ndan@example.com,ai,daily,UTC\n"
    )
    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "a.json")) == 0
    with time_machine.travel(saturday - timedelta(hours=3), tick=False):
        assert run_cli(monkeypatch, env, "subscribers", "import", str(tmp_path / "r.csv")) == 0
    mail = Path(env["DIGESTD_DATA_DIR"]) / "mail"

    assert run_cli(monkeypatch, env, "tick", "--now", saturday.isoformat()) == 0
    first = set(mail.glob("*.eml"))
    assert len(first) == 2
    assert all(_edition_urls(p.read_bytes())[0].endswith("/star") for p in first)

    # The star is re-sent by the site with a later published_at (an update): it now falls in
    # Sunday's window too, but Sunday's daily must not repeat it.
    (tmp_path / "a.json").write_text(
        json.dumps([dict(star, published_at=(saturday + timedelta(hours=10)).isoformat())])
    )
    assert run_cli(monkeypatch, env, "articles", "add", str(tmp_path / "a.json")) == 0
    sunday = saturday + timedelta(days=1)
    assert (
        run_cli(monkeypatch, env, "tick", "--now", (sunday + timedelta(hours=1)).isoformat()) == 0
    )
    new = {str(parse(p.read_bytes())["To"]): p for p in set(mail.glob("*.eml")) - first}
    assert set(new) == {"ann@example.com", "dan@example.com"}  # one message each
    daily_urls = _edition_urls(new["dan@example.com"].read_bytes())
    assert daily_urls and not any(u.endswith("/star") for u in daily_urls)
    weekly_text = parts(parse(new["ann@example.com"].read_bytes()))[0]
    assert "Weekly recap" in weekly_text
    assert weekly_text.index("TOP STORY OF THE WEEK") < weekly_text.index("Story star")
    assert _edition_urls(new["ann@example.com"].read_bytes())[0].endswith("/star")

"""What a reader's clicks teach their digest (``DIGESTD_TRACK_CLICKS=reader``): within their
own categories, the stories like those they open rise, boundedly; a reader without clicks
gets the site's order; nothing outside their categories ever comes in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from digestd.db import make_engine, make_sessions
from digestd.models import Click, Edition
from digestd.planning.interests import profiles
from digestd.planning.learning import Profile, personal_order, profile
from digestd.planning.selection import Candidate, order, rank
from tests.click_helpers import ADMIN, SENT, settle, sign_up, tracked_links
from tests.conftest import WebRig
from tests.helpers import article, parse, parts
from tests.seeding import Reader, add_readers

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def c(cid: str, score: float, cats: str = "ai", source: str = "") -> Candidate:
    return Candidate(cid, source or f"S-{cid}", NOW, score, frozenset(cats.split(",")), cid)


def mine(ranked: list[Candidate], reader: Profile, cats: str = "ai,robotics") -> list[str]:
    ordered = personal_order(
        ranked,
        frozenset(cats.split(",")),
        frozenset(),
        reader,
        now=NOW,
        half_life_hours=24,
        limit=10,
    )
    return [x.id for x in ordered]


def test_one_click_is_a_tenth_and_only_reorders_near_ties() -> None:
    one = profile({"robotics": 1}, {"s-r": 1}, ["ai", "robotics"])
    assert one == Profile((("robotics", 1),), ())  # +10 %, the source not yet
    ranked = order([c("a", 9.5), c("r", 9, "robotics"), c("b", 8)], NOW, 24)
    assert mine(ranked, one) == ["r", "a", "b"]  # 10 x 1.1 = 11 > 10.5
    ranked = order([c("a", 10), c("r", 9, "robotics")], NOW, 24)
    assert mine(ranked, one) == ["a", "r"]  # 11 is not more than 11


def test_boosts_grow_with_the_evidence_and_stay_under_their_bounds() -> None:
    steps = [profile({"robotics": n}, {"wire": n}, ["ai", "robotics"]) for n in (1, 3, 10, 1000)]
    assert [dict(p.categories)["robotics"] for p in steps] == [1, 2, 3, 4]
    assert [dict(p.sources).get("wire", 0) for p in steps] == [0, 1, 1, 2]
    # whatever the clicks, a story with 1.6 times another's rank stays ahead of it
    extreme = steps[-1]
    lead, challenger = c("lead", 15), c("r", 9, "robotics", "Wire")
    assert rank(lead, NOW, 24) == pytest.approx(1.6 * rank(challenger, NOW, 24))
    assert extreme.multiplier(challenger) == pytest.approx(1.6)
    assert mine(order([lead, challenger], NOW, 24), extreme)[0] == "lead"


def test_clicks_never_add_a_category_nor_reach_below_the_window() -> None:
    # Clicks in a category the reader has left teach nothing.
    assert not profile({"crypto": 9}, {}, ["ai"])
    ranked = order(
        [c("q", 50, "quantum"), *(c(f"a{i}", 40 - i) for i in range(30)), c("r", 1, "robotics")],
        NOW,
        24,
    )
    fan = profile({"robotics": 1000}, {}, ["ai", "robotics"])
    ordered = mine(ranked, fan)
    assert "q" not in ordered[:30]  # not theirs: left where pick will skip it
    # "r" is 31st of the reader's stories, beyond 3 x 10: the boost does not reach it
    assert ordered.index("r") > ordered.index("a29")


def test_a_reader_without_clicks_gets_the_sites_order() -> None:
    ranked = order([c("a", 5), c("r", 4, "robotics"), c("b", 3)], NOW, 24)
    assert mine(ranked, Profile()) == [x.id for x in ranked]


# --- through the running app ----------------------------------------------------------

DAY1 = [
    *(
        article(f"a{i}", "ai", SENT - timedelta(hours=9), score=9 - i, source=f"A{i}")
        for i in range(3)
    ),
    *(
        article(f"r{i}", "robotics", SENT - timedelta(hours=9), score=6 - i, source=f"R{i}")
        for i in range(3)
    ),
]
SENT2 = SENT + timedelta(days=1)
DAY2 = [
    # The site's order alternates: r1 (11), a1 (10.5), r2 (10), a2 (9.5), r3 (9), a3 (8.5).
    *(
        article(f"r{i}x", "robotics", SENT2 - timedelta(hours=9), score=11 - i, source=f"R{i}x")
        for i in range(1, 4)
    ),
    *(
        article(f"a{i}x", "ai", SENT2 - timedelta(hours=9), score=10.5 - i, source=f"A{i}x")
        for i in range(1, 4)
    ),
    # Everyone's best story by far, in a category none of them follows.
    article("quantum-1", "quantum", SENT2 - timedelta(hours=9), score=99),
]


def stories_in_order(digest: bytes) -> list[str]:
    """The ids of the stories in the email, in its order (its "In this edition" list)."""
    text, _ = parts(parse(digest))
    numbered: dict[int, str] = {}
    for number, story in re.findall(r"^ *(\d+)\. Story (\S+)", text, re.M):
        numbered.setdefault(int(number), story)
    return [numbered[n] for n in sorted(numbered)]


@pytest.fixture
def reader_mode(web_env: dict[str, str]) -> Iterator[dict[str, str]]:
    web_env["DIGESTD_TRACK_CLICKS"] = "reader"
    yield web_env


def test_two_readers_with_different_clicks_get_different_orders(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    assert web.client.post("/api/articles", json=DAY1, headers=ADMIN).status_code == 200
    readers = ("robo@example.com", "ai@example.com", "none@example.com")
    for email in readers:
        sign_up(web, email, categories=["ai", "robotics"])
    before = len(web.smtp.messages)
    web.portal.call(web.service.tick, SENT)
    first = {m.recipients[0]: m.data for m in web.smtp.messages[before:]}
    assert len({tuple(stories_in_order(d)) for d in first.values()}) == 1  # one digest for all
    with time_machine.travel(SENT + timedelta(hours=1), tick=False) as clock:
        for email, prefix in (("robo@example.com", "r"), ("ai@example.com", "a")):
            order_ = stories_in_order(first[email])
            links = tracked_links(first[email])
            for story, link in zip(order_, links, strict=True):
                if story.startswith(prefix):
                    assert web.client.get(link).status_code == 303
                    clock.shift(timedelta(minutes=1))  # a person reading, not a scanner
    settle(web, SENT + timedelta(hours=2))

    assert web.client.post("/api/articles", json=DAY2, headers=ADMIN).status_code == 200
    before = len(web.smtp.messages)
    report = web.portal.call(web.service.tick, SENT2)
    second = {m.recipients[0]: stories_in_order(m.data) for m in web.smtp.messages[before:]}
    assert second["none@example.com"] == ["r1x", "a1x", "r2x", "a2x", "r3x", "a3x"]  # the site's
    assert second["robo@example.com"] == ["r1x", "r2x", "r3x", "a1x", "a2x", "a3x"]
    assert second["ai@example.com"] == ["a1x", "a2x", "r1x", "a3x", "r2x", "r3x"]
    assert report.enqueued.rendered == 3  # one digest per order


def test_a_pinned_story_still_leads_whatever_the_reader_clicked() -> None:
    from dataclasses import replace

    pinned = replace(c("pin", 1), pinned=True)
    ranked = order([pinned, c("a", 5), c("r", 4, "robotics")], NOW, 24)
    fan = profile({"robotics": 1000}, {}, ["ai", "robotics"])
    assert mine(ranked, fan)[:2] == ["pin", "r"]
    # even one sent in an earlier daily, as pick() takes it
    ordered = personal_order(
        ranked,
        frozenset({"ai", "robotics"}),
        frozenset({"pin"}),
        fan,
        now=NOW,
        half_life_hours=24,
        limit=10,
    )
    assert ordered[0].id == "pin"


def test_a_story_opened_in_several_emails_counts_once(database_url: str) -> None:
    """A pinned story leads four dailies and the reader opens it in each; with one other
    story opened once, that is two stories, one per category: too little to move anything
    (the README's "each story once"), not four to one for AI."""
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        reader = add_readers(
            session, [Reader("ann@example.com", categories=("ai", "robotics"))], NOW
        )
        ann = reader["ann@example.com"]
        editions = [
            Edition(kind="daily", period=f"2026-11-{day}", created_at=NOW)
            for day in (26, 27, 28, 29)
        ]
        session.add_all(editions)
        session.flush()

        def opened(edition: Edition, story: str, category: str, source: str) -> Click:
            return Click(
                edition_id=edition.id, subscriber_id=ann, article_id=story, position=1,
                category=category, source=source, clicked_at=NOW - timedelta(days=1),
                first_of_article=True, first_of_edition=True,
            )  # fmt: skip

        session.add_all(opened(e, "pinned-ai", "ai", "P") for e in editions)
        session.add(opened(editions[0], "robo-1", "robotics", "R"))
    with sessions() as session:
        assert profiles(session, {ann: ["ai", "robotics"]}, NOW) == {}
        assert profile({"ai": 4, "robotics": 1}, {"p": 4}, ["ai", "robotics"])  # as it was
    engine.dispose()

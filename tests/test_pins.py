"""Editors' pins and holds (SPEC §4): a pinned article leads every edition whose reader
follows one of its categories until its pin runs out; a held one goes in no edition. The
rules on crafted candidates first, then through the real planner on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.config import load_settings
from digestd.content.editorial import hold, pin
from digestd.errors import ValidationError
from digestd.mail.layout import Layout
from digestd.models import Article, Delivery, Digest, Subscriber
from digestd.planning.candidates import candidates
from digestd.planning.planner import enqueue_due
from digestd.planning.selection import Candidate, order, pick
from digestd.service import Service
from tests.helpers import article
from tests.seeding import Reader, add_articles, add_readers

NOW = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def c(cid: str, *, hours: float = 1, score: float = 0, source: str = "", **kw: object) -> Candidate:
    cats = str(kw.pop("cats", "ai"))
    return Candidate(
        cid,
        source or f"Source {cid}",
        NOW - timedelta(hours=hours),
        score,
        frozenset(cats.split(",")),
        str(kw.pop("title", f"Unique headline {cid}")),
        bool(kw.pop("pinned", False)),
    )


def ids(chosen: list[Candidate]) -> list[str]:
    return [x.id for x in chosen]


# --- the rules ---------------------------------------------------------------------------


def test_a_pinned_article_leads_whatever_its_rank() -> None:
    ranked = order(
        [c("star", score=50), c("pinned", hours=20, score=0, pinned=True), c("fresh", score=5)],
        NOW,
        24,
    )
    assert ids(ranked) == ["pinned", "star", "fresh"]
    assert ids(pick(ranked, frozenset({"ai"}), limit=2, per_source=3)) == ["pinned", "star"]


def test_several_pins_lead_in_rank_order() -> None:
    ranked = order(
        [c("low", pinned=True), c("high", score=9, pinned=True), c("top", score=90)], NOW, 24
    )
    assert ids(ranked) == ["high", "low", "top"]


def test_a_pin_reaches_only_readers_of_its_categories() -> None:
    ranked = order(
        [c("pinned", cats="quantum,ai", pinned=True), c("robot", cats="robotics")], NOW, 24
    )
    assert ids(pick(ranked, frozenset({"robotics"}), limit=10, per_source=3)) == ["robot"]
    assert ids(pick(ranked, frozenset({"quantum"}), limit=10, per_source=3)) == ["pinned"]


def test_a_pinned_article_leads_again_for_a_reader_who_had_it_in_an_earlier_daily() -> None:
    ranked = order([c("pinned", pinned=True), c("sent-before", score=9), c("new")], NOW, 24)
    earlier = frozenset({"pinned", "sent-before"})
    chosen = pick(ranked, frozenset({"ai"}), limit=10, per_source=3, exclude=earlier)
    assert ids(chosen) == ["pinned", "new"]


def test_a_pin_passes_the_source_cap_and_counts_towards_it() -> None:
    wire = [c(f"wire-{i}", source="Wire", score=9 - i) for i in range(3)]
    ranked = order([*wire, c("pinned", source="Wire", pinned=True)], NOW, 24)
    chosen = pick(ranked, frozenset({"ai"}), limit=10, per_source=3)
    assert ids(chosen) == ["pinned", "wire-0", "wire-1"]


def test_a_near_duplicate_collapses_into_the_pinned_copy() -> None:
    copy = c("copy", score=40, cats="robotics", title="OpenAI releases GPT-6 with a new engine")
    pinned = c("pinned", pinned=True, title="OpenAI Releases GPT-6, With New Engine")
    ranked = order([copy, pinned], NOW, 24)
    assert ids(ranked) == ["pinned"]
    assert ranked[0].categories == frozenset({"ai", "robotics"}) and ranked[0].pinned


# --- editors' actions ----------------------------------------------------------------------


@pytest.fixture
def service(env: dict[str, str]) -> Iterator[Service]:
    built = Service.build(load_settings(env))
    yield built
    built.engine.dispose()


def _stored(sessions: sessionmaker[Session], article_id: str) -> tuple[datetime | None, bool]:
    with sessions() as session:
        found = session.get(Article, article_id)
        assert found is not None
        return found.pinned_until, found.held


def test_pin_and_hold_replace_each_other_and_refuse_what_makes_no_pin(service: Service) -> None:
    sessions = service.sessions
    with sessions.begin() as session:
        add_articles(session, [article("a1", "ai", NOW - timedelta(hours=2))])
    until = NOW + timedelta(days=1)
    with sessions.begin() as session:
        hold(session, "a1", True)
        assert pin(session, "a1", until, NOW).as_json() == {
            "id": "a1",
            "pinned_until": "2026-12-01T07:00:00Z",
            "held": False,
        }
    assert _stored(sessions, "a1") == (until, False)
    with sessions.begin() as session:
        assert hold(session, "a1", True).pinned_until is None
    assert _stored(sessions, "a1") == (None, True)
    for bad, named in (
        (NOW - timedelta(minutes=1), "until"),
        (NOW, "until"),
        (NOW + timedelta(days=400), "until"),
        (datetime(2026, 12, 1, 7, 0), "until"),  # no zone
    ):
        with sessions.begin() as session, pytest.raises(ValidationError) as caught:
            pin(session, "a1", bad, NOW)
        assert caught.value.field == named
    with sessions.begin() as session, pytest.raises(ValidationError) as caught:
        pin(session, "no-such-article", until, NOW)
    assert caught.value.field == "id"
    assert _stored(sessions, "a1") == (None, True)  # nothing changed by the refusals


def test_re_sending_an_article_keeps_its_pin(service: Service) -> None:
    sessions = service.sessions
    item = article("a1", "ai", NOW - timedelta(hours=2))
    with sessions.begin() as session:
        add_articles(session, [item])
        pin(session, "a1", NOW + timedelta(hours=5), NOW)
    with sessions.begin() as session:
        add_articles(session, [dict(item, title="Updated headline")])
    assert _stored(sessions, "a1") == (NOW + timedelta(hours=5), False)


# --- through the planner -------------------------------------------------------------------


def _seed_week(sessions: sessionmaker[Session]) -> None:
    """Fresh AI and robotics stories, an old AI story (three days) and one to hold."""
    items = [
        article(f"fresh-{i}", "ai", NOW - timedelta(hours=1 + i), score=20, source=f"S{i}")
        for i in range(4)
    ]
    items += [
        article("robot", "robotics", NOW - timedelta(hours=2), score=3, source="R"),
        dict(
            article("old-ai", "ai", NOW - timedelta(days=3), score=0), categories=["ai", "quantum"]
        ),
        article("held", "ai", NOW - timedelta(hours=1), score=99, source="H"),
    ]
    with sessions.begin() as session:
        add_articles(session, items)


def test_candidates_leave_out_held_articles_and_bring_in_running_pins(service: Service) -> None:
    sessions = service.sessions
    _seed_week(sessions)
    with sessions.begin() as session:
        hold(session, "held", True)
        pin(session, "old-ai", NOW + timedelta(hours=1), NOW - timedelta(days=1))
        pin(session, "robot", NOW, NOW - timedelta(days=1))  # runs out at the slot itself
    with sessions() as session:
        found = {x.id: x for x in candidates(session, NOW - timedelta(days=1), NOW)}
    assert "held" not in found
    assert found["old-ai"].pinned and found["old-ai"].categories == {"ai", "quantum"}
    assert not found["robot"].pinned
    with sessions() as session:  # the same pin, an hour later: over
        later = {x.id for x in candidates(session, NOW, NOW + timedelta(hours=1, seconds=1))}
    assert "old-ai" not in later


def _digests(sessions: sessionmaker[Session]) -> dict[str, tuple[int, list[str]]]:
    with sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Digest.id, Digest.layout)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .join(Digest, Digest.id == Delivery.digest_id)
        ).all()
    return {email: (did, Layout.from_json(layout).article_ids()) for email, did, layout in rows}


def test_a_pinned_article_leads_every_edition_of_its_categories_and_a_held_one_none(
    service: Service,
) -> None:
    sessions = service.sessions
    _seed_week(sessions)
    with sessions.begin() as session:
        hold(session, "held", True)
        pin(session, "old-ai", NOW + timedelta(days=2), NOW - timedelta(hours=1))
        add_readers(
            session,
            [
                Reader("ann@example.com", categories=("ai",)),
                Reader("bob@example.com", categories=("ai",)),
                Reader("qui@example.com", categories=("quantum",)),
                Reader("rob@example.com", categories=("robotics",)),
                Reader("wes@example.com", categories=("ai", "robotics"), daily=False, weekly=True),
            ],
            NOW - timedelta(days=1),
        )
    sunday = NOW.replace(day=29, hour=8)  # 2026-11-29 is a Sunday
    assert sunday.weekday() == 6
    enqueue_due(sessions, service.policy, service.renderer, sunday)  # the weekly
    enqueue_due(sessions, service.policy, service.renderer, NOW)  # Monday's daily
    digests = _digests(sessions)
    assert digests["ann@example.com"][1][0] == "old-ai"
    assert digests["qui@example.com"][1] == ["old-ai"]  # the pin alone: nothing else there
    assert digests["rob@example.com"][1] == ["robot"]
    assert digests["wes@example.com"][1][0] == "old-ai"  # the weekly's lead
    assert all("held" not in chosen for _, chosen in digests.values())
    # Readers of the same categories still share one digest, rendered once.
    assert digests["ann@example.com"][0] == digests["bob@example.com"][0]

"""What a digest shows, from its stored layout: the lead, the cards, the preheader, the
mute links each reader's copy gets, and dailies stored before they had a lead section."""

from __future__ import annotations

import re
from datetime import date

from digestd.mail.layout import Entry, Layout, Section
from digestd.mail.presentation import MUTE, digest_context, muted_categories, personal_links
from digestd.models import EditionKind
from tests.email_samples import SAMPLE_LINKS, SITE, sample_context, sample_layout

DAY = date(2026, 11, 29)


def test_the_daily_leads_with_its_top_story_and_stays_readable_from_old_json() -> None:
    layout, articles = sample_layout(EditionKind.DAILY, 10)
    stored = layout.to_json()
    assert stored["sections"][0] == {"lead": True, "category": None, "articles": [["a0", "ai"]]}
    assert Layout.from_json(stored) == layout
    # A daily stored before dailies had a lead section: one list, led by its first card.
    old = {"categories": stored["categories"], "sections": [{"category": None, "articles": []}]}
    old["sections"][0]["articles"] = [e for s in stored["sections"] for e in s["articles"]]
    then = digest_context(
        EditionKind.DAILY, DAY, Layout.from_json(old), articles, SITE, SAMPLE_LINKS
    )
    now = digest_context(EditionKind.DAILY, DAY, layout, articles, SITE, SAMPLE_LINKS)
    assert then == now
    assert now["lead"]["number"] == 1 and now["lead"]["url"].endswith("/story/0?ref=digest&amp=1")
    assert [a["number"] for s in now["sections"] for a in s["articles"]] == list(range(2, 11))


def test_the_preheader_names_the_next_headlines_not_the_subjects() -> None:
    layout, articles = sample_layout(EditionKind.DAILY, 10)
    context = digest_context(EditionKind.DAILY, DAY, layout, articles, SITE, SAMPLE_LINKS)
    preheader = context["preheader"]
    assert preheader.startswith("Also today: Ünïcödé everywhere")
    assert context["lead"]["title"] not in preheader and len(preheader) <= 140
    alone, one = sample_layout(EditionKind.WEEKLY, 1)
    single = digest_context(EditionKind.WEEKLY, DAY, alone, one, SITE, SAMPLE_LINKS)
    assert single["preheader"].startswith("The deal gives the company")  # why it matters


def test_mute_links_one_per_category_shown_and_none_for_a_single_topic() -> None:
    daily, articles = sample_layout(EditionKind.DAILY, 10)
    shown = sorted({e.category for s in daily.sections for e in s.entries})
    assert sorted(muted_categories(EditionKind.DAILY, daily)) == shown
    context = digest_context(EditionKind.DAILY, DAY, daily, articles, SITE, SAMPLE_LINKS)
    mute = SAMPLE_LINKS[MUTE]
    assert sorted(m["link"] for m in context["mutes"]) == [f"{mute}?category={c}" for c in shown]
    weekly, articles = sample_layout(EditionKind.WEEKLY, 15)
    sections = {s.category for s in weekly.sections if not s.lead}
    assert set(muted_categories(EditionKind.WEEKLY, weekly)) == sections
    context = digest_context(EditionKind.WEEKLY, DAY, weekly, articles, SITE, SAMPLE_LINKS)
    assert {s["mute"].split("=")[1] for s in context["sections"]} == sections
    assert context["mutes"] == []  # each section carries its own
    # one personal link for all of them: one token per email, however many categories
    assert personal_links(EditionKind.WEEKLY, weekly).count(MUTE) == 1
    only_ai = Layout(
        ("ai",),
        (Section(None, (Entry("a0", "ai"),), lead=True), Section(None, (Entry("a2", "ai"),))),
    )
    assert muted_categories(EditionKind.DAILY, only_ai) == []
    assert MUTE not in personal_links(EditionKind.DAILY, only_ai)


def test_a_daily_names_no_day_a_recap_does() -> None:
    """A daily's stories are all of the last day, and the UTC day of a story from a Los
    Angeles evening is tomorrow there: only the recap dates its stories."""
    daily = sample_context(EditionKind.DAILY, 4)
    bylines = [daily["lead"]["byline"]] + [
        a["byline"] for s in daily["sections"] for a in s["articles"]
    ]
    assert bylines and all(" · " not in b and not re.search(r"\d", b) for b in bylines)
    weekly = sample_context(EditionKind.WEEKLY, 4)
    dated = [a["byline"] for s in weekly["sections"] for a in s["articles"]]
    assert dated and all(re.search(r" · \d{1,2} [A-Z][a-z]{2}$", b) for b in dated)

"""What a digest shows, from its stored layout: the lead, the cards, the preheader, the
mute links each reader's copy gets, and dailies stored before they had a lead section."""

from __future__ import annotations

from datetime import date

from digestd.mail.layout import Entry, Layout, Section
from digestd.mail.presentation import (
    digest_context,
    mute_link,
    muted_categories,
    muted_category,
    personal_links,
)
from digestd.models import EditionKind
from tests.email_samples import SAMPLE_LINKS, SITE, sample_layout

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
    daily, _ = sample_layout(EditionKind.DAILY, 10)
    shown = sorted({e.category for s in daily.sections for e in s.entries})
    assert sorted(muted_categories(EditionKind.DAILY, daily)) == shown
    weekly, _ = sample_layout(EditionKind.WEEKLY, 15)
    sections = {s.category for s in weekly.sections if not s.lead}
    assert set(muted_categories(EditionKind.WEEKLY, weekly)) == sections
    names = personal_links(EditionKind.WEEKLY, weekly)
    assert {muted_category(n) for n in names} - {None} == sections
    only_ai = Layout(
        ("ai",),
        (Section(None, (Entry("a0", "ai"),), lead=True), Section(None, (Entry("a2", "ai"),))),
    )
    assert muted_categories(EditionKind.DAILY, only_ai) == []
    assert "mute" not in " ".join(personal_links(EditionKind.DAILY, only_ai))


def test_mute_link_names_survive_placeholders_and_give_the_category_back() -> None:
    for slug in ("ai", "b2b-growth", "consumer-tech", "digital-marketing"):
        name = mute_link(slug)
        assert name.replace("_", "").isalnum() and "__" not in name
        assert muted_category(name) == slug
    assert muted_category("unsubscribe") is None

"""What the newsroom reads (SPEC §11): per edition and per article, sent, failed, bounced,
unsubscribed, clicks, unique clickers and click-through rate; the week's top stories; clicks
per day; through the admin API, from clicks made on the running app."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import time_machine

from tests.click_helpers import ADMIN, SENT, edition_with_clicks
from tests.conftest import WebRig

AUTH = ADMIN


def _by_id(stories: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {story["id"]: story for story in stories}


def test_an_edition_reports_its_emails_and_clicks_per_article(web: WebRig) -> None:
    edition_with_clicks(web)
    listed = web.client.get("/api/engagement/editions", headers=AUTH)
    assert listed.status_code == 200 and listed.json()["tracking"] == "aggregate"
    daily = next(e for e in listed.json()["editions"] if e["kind"] == "daily")
    expected = {"sent": 3, "failed": 0, "bounced": 0, "unsubscribed": 1}
    assert {k: daily[k] for k in expected} == expected
    assert (daily["clicks"], daily["unique_clickers"], daily["scanner_clicks"]) == (4, 2, 4)
    assert daily["click_through_rate"] == round(2 / 3, 4)

    one = web.client.get(f"/api/engagement/editions/{daily['id']}", headers=AUTH).json()
    articles = _by_id(one["articles"])
    lead = articles["ai-0"]
    assert (lead["sent"], lead["clicks"], lead["unique_clickers"]) == (3, 3, 2)
    assert lead["click_through_rate"] == round(2 / 3, 4) and lead["scanner_clicks"] == 1
    robots = articles["robots-1"]
    assert (robots["sent"], robots["unique_clickers"], robots["category"]) == (2, 1, "robotics")
    assert articles["ai-3"]["unique_clickers"] == 0 and articles["ai-3"]["sent"] == 3
    assert one["articles"][0]["id"] == "ai-0"  # most clicked first
    assert lead["title"] == "Story ai-0" and lead["url"] == "https://news.example.com/ai-0"


def test_top_stories_and_clicks_per_day(web: WebRig) -> None:
    edition_with_clicks(web)
    with time_machine.travel(SENT + timedelta(days=1), tick=False):
        top = web.client.get("/api/engagement/top?limit=2", headers=AUTH).json()
        days = web.client.get("/api/engagement/days?days=3", headers=AUTH).json()
    assert [s["id"] for s in top["stories"]] == ["ai-0", "robots-1"]
    assert top["stories"][0]["sent"] == 3 and top["stories"][0]["unique_clickers"] == 2
    assert days["days"] == ["2026-11-29", "2026-11-30", "2026-12-01"]
    assert days["clicks"] == [0, 4, 0] and days["clickers"] == [0, 2, 0]
    assert days["scanner_clicks"] == [0, 4, 0]
    with time_machine.travel(SENT + timedelta(days=9), tick=False):
        assert web.client.get("/api/engagement/top", headers=AUTH).json()["stories"] == []


def test_the_reports_refuse_bad_parameters_and_want_the_token(web: WebRig) -> None:
    for path, field in (
        ("/api/engagement/editions?limit=0", "limit"),
        ("/api/engagement/top?days=400", "days"),
        ("/api/engagement/days?days=x", "days"),
        ("/api/engagement/top?dayz=3", "dayz"),
        ("/api/engagement/editions/abc", "id"),
        ("/api/engagement/editions/2147483648", "id"),  # past any id: PostgreSQL's 500 before
        ("/api/engagement/editions/99999999999999", "id"),
        # digits to str.isdigit, not to int(): a 500 before
        ("/api/engagement/editions?limit=%C2%B2", "limit"),
        ("/api/engagement/top?days=%C2%B2", "days"),
        ("/api/engagement/days?days=%EF%BC%93", "days"),  # full-width three
        ("/api/engagement/editions/%C2%B2", "id"),
        ("/api/engagement/editions/%D9%A3", "id"),
    ):
        answer = web.client.get(path, headers=AUTH)
        assert answer.status_code == 400 and answer.json()["field"] == field, path
    assert web.client.get("/api/engagement/editions/99", headers=AUTH).status_code == 404
    assert web.client.get("/api/engagement/editions").status_code == 401

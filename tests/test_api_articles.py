"""Pin and hold through the admin API: ``POST``/``DELETE /api/articles/{id}/pin|hold``.
Each answers the article's standing and changes only that; bad input is a 4xx naming the
field and changes nothing. An article's ``summary`` beside its ``why_it_matters``: sent
through ``POST /api/articles``, shown in the edition without the "Why it matters" label."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from digestd.content.articles import ingest
from digestd.models import Article
from tests.admin_seed import AUTH
from tests.conftest import WebRig
from tests.helpers import article

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


def _add(web: WebRig, *ids: str) -> None:
    items = [
        dict(article(i, "ai", NOW - timedelta(hours=1)), url=f"https://news.example.com/{n}")
        for n, i in enumerate(ids)
    ]
    with web.service.sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors


def _stored(web: WebRig, article_id: str) -> tuple[datetime | None, bool]:
    with web.service.sessions() as session:
        found = session.get(Article, article_id)
        assert found is not None
        return found.pinned_until, found.held


def test_pin_unpin_hold_release_answer_the_standing_and_store_it(web: WebRig) -> None:
    _add(web, "a1", "odd/id with space")
    pinned = web.client.post(
        "/api/articles/a1/pin", json={"until": "2026-11-30T18:00:00+01:00"}, headers=AUTH
    )
    assert pinned.status_code == 200, pinned.text
    assert pinned.json() == {"id": "a1", "pinned_until": "2026-11-30T17:00:00Z", "held": False}
    assert _stored(web, "a1") == (datetime(2026, 11, 30, 17, tzinfo=UTC), False)

    held = web.client.post("/api/articles/a1/hold", headers=AUTH)
    assert held.json() == {"id": "a1", "pinned_until": None, "held": True}
    assert _stored(web, "a1") == (None, True)
    released = web.client.delete("/api/articles/a1/hold", headers=AUTH)
    assert released.json()["held"] is False and _stored(web, "a1") == (None, False)

    web.client.post("/api/articles/a1/pin", json={"until": "2026-12-01T00:00:00Z"}, headers=AUTH)
    unpinned = web.client.delete("/api/articles/a1/pin", headers=AUTH)
    assert unpinned.json()["pinned_until"] is None and _stored(web, "a1") == (None, False)

    # An id with a slash and a space, URL-encoded, is the article's own id.
    odd = web.client.post("/api/articles/odd%2Fid%20with%20space/hold", headers=AUTH)
    assert odd.status_code == 200 and odd.json()["id"] == "odd/id with space"
    assert _stored(web, "odd/id with space") == (None, True)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"until": "2026-11-29T08:00:00Z"}, 400, "until"),  # in the past
        ({"until": "2026-11-30T08:00:00"}, 400, "until"),  # no zone
        ({"until": "tomorrow"}, 400, "until"),
        ({"until": "2028-01-01T00:00:00Z"}, 400, "until"),  # beyond a year
        ({}, 400, "until"),
        ({"until": "2026-11-30T08:00:00Z", "pinned": True}, 400, "pinned"),
    ],
)
def test_a_pin_that_makes_no_sense_is_a_400_naming_the_field_and_changes_nothing(
    web: WebRig, body: dict[str, Any], status: int, field: str
) -> None:
    _add(web, "a1")
    answer = web.client.post("/api/articles/a1/pin", json=body, headers=AUTH)
    assert answer.status_code == status
    assert answer.json()["field"] == field
    assert _stored(web, "a1") == (None, False)


def test_an_unknown_article_is_a_404_and_bodies_must_be_json(web: WebRig) -> None:
    _add(web, "a1")
    for method, path in (("POST", "/hold"), ("DELETE", "/hold"), ("DELETE", "/pin")):
        answer = web.client.request(method, "/api/articles/nope" + path, headers=AUTH)
        assert answer.status_code == 404 and answer.json()["field"] == "id"
    missing = web.client.post(
        "/api/articles/nope/pin", json={"until": "2026-11-30T08:00:00Z"}, headers=AUTH
    )
    assert missing.status_code == 404
    form = web.client.post("/api/articles/a1/pin", data={"until": "x"}, headers=AUTH)
    assert form.status_code == 415
    assert _stored(web, "a1") == (None, False)


@pytest.mark.parametrize(
    "raw", ["%00", "a%00b", "x" * 201, "%07bell"], ids=["nul", "nul-in", "long", "bel"]
)
def test_an_id_no_article_can_have_is_a_404_on_either_database(web: WebRig, raw: str) -> None:
    """PostgreSQL refuses a NUL in text: the lookup raised, a 500 (SQLite said 404)."""
    _add(web, "a1")
    for method, path in (("POST", "/hold"), ("DELETE", "/pin")):
        answer = web.client.request(method, f"/api/articles/{raw}{path}", headers=AUTH)
        assert answer.status_code == 404, answer.text
        assert answer.json()["field"] == "id"
    pin = web.client.post(
        f"/api/articles/{raw}/pin", json={"until": "2026-11-30T08:00:00Z"}, headers=AUTH
    )
    assert pin.status_code == 404
    assert _stored(web, "a1") == (None, False)


def _preview(web: WebRig, fmt: str) -> str:
    answer = web.client.get(
        "/api/editions/preview",
        params={"kind": "daily", "categories": "ai", "now": NOW.isoformat(), "format": fmt},
        headers=AUTH,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.text)


@pytest.mark.parametrize("lead", ["edited", "summed"])
def test_why_it_matters_keeps_its_label_and_a_summary_alone_is_shown_without_it(
    web: WebRig, lead: str
) -> None:
    """The lead (HTML and text) and a card (text) alike: only the editor's why_it_matters
    is "Why it matters:"; an article with only the publisher's summary shows it bare."""
    edited = article("edited", "ai", NOW - timedelta(hours=1), score=2 if lead == "edited" else 1)
    edited["summary"] = "Not shown: the editor said why."
    summed = article("summed", "ai", NOW - timedelta(hours=2), score=2 if lead == "summed" else 1)
    del summed["why_it_matters"]
    summed["summary"] = "The publisher's own summary."
    answer = web.client.post("/api/articles", json=[edited, summed], headers=AUTH)
    assert answer.status_code == 200 and answer.json()["added"] == 2, answer.text
    text, html = _preview(web, "text"), _preview(web, "html")
    assert text.count("Why it matters:") == 1
    assert "Why it matters: Why edited matters." in text
    assert re.search(r"^ *The publisher's own summary\.\r?$", text, re.MULTILINE), text
    assert '<span dir="auto">The publisher&#39;s own summary.</span>' in html
    labelled = '<strong>Why it matters:</strong> <span dir="auto">Why edited matters.</span>'
    assert html.count("Why it matters:") == (1 if lead == "edited" else 0)
    assert (labelled in html) == (lead == "edited")
    assert "Not shown" not in text and "Not shown" not in html


@pytest.mark.parametrize(
    ("summary", "problem"),
    [(42, "must be a string"), ("a\u0000b", "NUL"), ("x" * 20_001, "longer than")],
    ids=["number", "nul", "long"],
)
def test_a_summary_no_article_can_have_is_a_422_naming_it_and_stores_nothing(
    web: WebRig, summary: object, problem: str
) -> None:
    item = dict(article("a1", "ai", NOW - timedelta(hours=1)), summary=summary)
    answer = web.client.post("/api/articles", json=item, headers=AUTH)
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["field"] == "summary" and problem in error["problem"]
    assert web.count(Article) == 0

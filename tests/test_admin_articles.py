"""``/admin/articles`` over HTTP: the recent articles found by title, category, kind, source
and standing, a keyset page at a time; pin (until a time), unpin, hold and release from
the page, with the stored article after each; bad input is a 400 naming the field and
changes nothing."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import time_machine

from digestd.content.articles import ingest
from digestd.models import Article
from tests.admin_client import form_csrf, sign_in, submit
from tests.conftest import WebRig
from tests.helpers import article
from tests.web_helpers import text_of

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
PAGE = "/admin/articles"


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def seeded(web: WebRig) -> None:
    items = [
        article("ai-1", "ai", NOW - timedelta(hours=1), score=7.5, source="Wire A"),
        article("robo-2", "robotics", NOW - timedelta(hours=2), source="Robot Weekly"),
        article("q-3", "quantum", NOW - timedelta(hours=3), score=2, kind="podcasts"),
    ]
    items[1]["categories"] = ["robotics", "ai"]
    with web.service.sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors
    sign_in(web.client)


def _shown(web: WebRig, query: str = "") -> list[str]:
    answer = web.client.get(PAGE + query)
    assert answer.status_code == 200, answer.text
    return re.findall(r'<li data-article="([^"]+)">', answer.text)


def _stored(web: WebRig, article_id: str) -> Article:
    with web.service.sessions() as session:
        found = session.get(Article, article_id)
        assert found is not None
        session.expunge(found)
        return found


def test_the_list_shows_categories_score_and_source_newest_first(web: WebRig, seeded: None) -> None:
    answer = web.client.get(PAGE)
    words = text_of(answer.text)
    assert _shown(web) == ["ai-1", "robo-2", "q-3"]
    assert "Story ai-1 Wire A · news · ai · score 7.5 · 2026-11-29 08:30 UTC" in words
    assert "Robot Weekly · news · ai, robotics · score 1.0" in words


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?q=ROBO", ["robo-2"]),
        ("?category=ai", ["ai-1", "robo-2"]),
        ("?kind=podcasts", ["q-3"]),
        ("?source=weekly", ["robo-2"]),
        ("?q=%25", []),  # a LIKE wildcard is a literal
    ],
)
def test_search_by_title_category_kind_and_source(
    web: WebRig, seeded: None, query: str, expected: list[str]
) -> None:
    assert _shown(web, query) == expected


def test_pin_until_a_time_then_unpin_from_the_page(web: WebRig, seeded: None) -> None:
    answer = submit(
        web.client, PAGE, f"{PAGE}/q-3", action="pin", until="2026-12-01T18:00", back=PAGE
    )
    assert answer.status_code == 303 and answer.headers["location"] == f"{PAGE}?done=pinned"
    assert _stored(web, "q-3").pinned_until == datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
    page = web.client.get(answer.headers["location"])
    assert "Pinned: it leads every edition" in text_of(page.text)
    assert "pinned until 2026-12-01 18:00 UTC" in text_of(page.text)
    assert _shown(web, "?state=pinned") == ["q-3"]

    answer = submit(web.client, PAGE, f"{PAGE}/q-3", action="unpin")
    assert answer.status_code == 303
    assert _stored(web, "q-3").pinned_until is None


def test_hold_and_release_from_the_page_keep_the_list_filters(web: WebRig, seeded: None) -> None:
    answer = submit(
        web.client, PAGE, f"{PAGE}/ai-1", action="hold", back=f"{PAGE}?category=ai&evil=1"
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PAGE}?category=ai&done=held"
    assert _stored(web, "ai-1").held is True
    assert _shown(web, "?state=held") == ["ai-1"]
    answer = submit(web.client, PAGE, f"{PAGE}/ai-1", action="release")
    assert answer.status_code == 303 and _stored(web, "ai-1").held is False


def test_an_article_whose_id_reads_like_a_path_is_held_from_its_own_form(web: WebRig) -> None:
    """Ids come from the site (the API): the form must post where a browser, which folds
    "/../" away, still reaches this article."""
    odd = "odd/../../subscribers/1?x=<b>\"'"
    with web.service.sessions.begin() as session:
        assert not ingest(session, [(1, article(odd, "ai", NOW - timedelta(hours=1)))]).errors
    sign_in(web.client)
    page = web.client.get(PAGE).text
    [action] = re.findall(r'<form method="post" action="(/admin/articles/[^"]+)"', page)
    action = html.unescape(action)
    assert action == "/admin/articles/" + quote(odd, safe="")
    token = form_csrf(page, action)
    answer = web.client.post(action, data={"csrf": token, "action": "hold"})
    assert answer.status_code == 303, answer.text
    assert _stored(web, odd).held is True


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"action": "pin", "until": ""}, 400, "until"),
        ({"action": "pin", "until": "tomorrow"}, 400, "until"),
        ({"action": "pin", "until": "2029-01-01T00:00"}, 400, "until"),  # over a year ahead
        ({"action": "pin", "until": "2026-11-28T00:00"}, 400, "until"),  # over already
        ({"action": "delete"}, 400, "action"),
    ],
)
def test_a_bad_action_is_a_400_naming_the_field_and_changes_nothing(
    web: WebRig, seeded: None, fields: dict[str, str], status: int, field: str
) -> None:
    answer = submit(web.client, PAGE, f"{PAGE}/ai-1", **fields)
    assert answer.status_code == status, answer.text
    assert f"{field}" in text_of(answer.text)
    stored = _stored(web, "ai-1")
    assert stored.pinned_until is None and stored.held is False


def test_a_refusal_in_the_console_leads_back_to_it_not_to_the_signup_page(
    web: WebRig, seeded: None
) -> None:
    """A form refused before its page can show it (a hostile value) and a missing admin
    page answer with the console's way back: the operator is no reader to be signed up."""
    for answer in (
        submit(web.client, PAGE, f"{PAGE}/ai-1", action="pin", until="x" * 5000),
        submit(web.client, PAGE, f"{PAGE}/ai-1", action="explode"),
        web.client.get("/admin/import/no-such-import"),
    ):
        assert answer.status_code in (400, 404), answer.text
        assert 'href="/admin"' in answer.text and "Back to the admin console" in answer.text
        assert "Go to the signup page" not in answer.text
    signup = web.client.get("/confirm/not-a-token")
    assert signup.status_code == 400 and "Go to the signup page" in signup.text


def test_a_forms_token_acts_on_its_own_article_only(web: WebRig, seeded: None) -> None:
    page = web.client.get(PAGE)
    csrf = form_csrf(page.text, f"{PAGE}/ai-1")
    answer = web.client.post(f"{PAGE}/q-3", data={"csrf": csrf, "action": "hold"})
    assert answer.status_code == 403
    assert _stored(web, "q-3").held is False


def test_an_article_removed_since_the_page_was_shown_is_a_404(web: WebRig, seeded: None) -> None:
    page = web.client.get(PAGE)
    csrf = form_csrf(page.text, f"{PAGE}/q-3")
    with web.service.sessions.begin() as session:
        session.delete(session.get(Article, "q-3"))
    answer = web.client.post(f"{PAGE}/q-3", data={"csrf": csrf, "action": "hold"})
    assert answer.status_code == 404


def test_actions_need_the_forms_csrf_token_and_a_signed_in_operator(
    web: WebRig, seeded: None
) -> None:
    assert web.client.post(f"{PAGE}/ai-1", data={"action": "hold"}).status_code == 403
    web.client.cookies.clear()
    assert web.client.post(f"{PAGE}/ai-1", data={"action": "hold"}).status_code in (401, 403)
    assert "Operator sign-in" in web.client.get(PAGE).text
    assert _stored(web, "ai-1").held is False


def test_the_list_pages_through_many_articles(web: WebRig) -> None:
    items = [article(f"a{i:02d}", "ai", NOW - timedelta(minutes=i)) for i in range(53)]
    with web.service.sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors
    sign_in(web.client)
    first = web.client.get(PAGE + "?category=ai")
    assert len(re.findall(r"<li data-article=", first.text)) == 50
    link = re.search(r'href="(/admin/articles\?[^"]+)" rel="next"', first.text)
    assert link is not None
    second = _shown(web, link.group(1).replace("&amp;", "&")[len(PAGE) :])
    assert second == ["a50", "a51", "a52"]
    assert web.client.get(PAGE + "?cursor=forged").status_code == 400

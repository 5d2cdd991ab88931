"""``/admin/feeds`` over HTTP against a real HTTP server on loopback: each feed's health,
adding one after a test fetch (what is not a feed is refused with the reason in the
form and nothing stored), removing one (its articles stay) and polling one now."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from digestd.content.feed_polling import INTERVAL
from digestd.content.feeds import register_feed
from digestd.models import Article, Feed
from tests.admin_client import form_csrf, sign_in, submit
from tests.conftest import WebRig
from tests.feed_server import FeedServer, serving
from tests.web_helpers import text_of

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
PAGE = "/admin/feeds"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serving() as server:
        yield server


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def _feeds(web: WebRig) -> list[Feed]:
    with web.service.sessions() as session:
        found = list(session.scalars(select(Feed).order_by(Feed.id)))
        session.expunge_all()
        return found


def _articles(web: WebRig) -> int:
    with web.service.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Article)) or 0)


def test_add_fetches_once_then_lists_the_feed_with_its_health(
    web: WebRig, feed_server: FeedServer
) -> None:
    sign_in(web.client)
    url = feed_server.url("rss.xml")
    answer = submit(web.client, PAGE, PAGE, url=url, category="robotics")
    # The feed server is on loopback: the notice says the feed may redirect inside.
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PAGE}?n=3&stored=2&done=added-inside"
    assert feed_server.fetches("rss.xml") == 1
    # The test fetch was the first poll: its items are stored, it is the last success, and
    # the next poll is an interval after it (not "now", in the past by the time one looks).
    (feed,) = _feeds(web)
    assert (feed.url, feed.category) == (url, "robotics")
    assert (feed.last_success_at, feed.next_poll_at) == (NOW, NOW + INTERVAL)
    assert (feed.stored_last_run, feed.rejected_last_run, _articles(web)) == (2, 1, 2)
    listed = web.client.get(answer.headers["location"]).text
    words = text_of(listed)
    assert (
        "Added: the test fetch found a feed (items in it now: 3, stored as articles: 2) "
        "on a server inside" in words
    )
    assert feed.server_inside is True
    assert "Robot Report & Friends OK Robotics" in words or "Robot Report & Friends ok" in words
    assert "Last success never" not in words and "Stored last run 2" in words
    # Headings go down one level at a time: the page's title, the list, each feed.
    levels = [int(level) for level in re.findall(r"<h([1-6])\b", listed)]
    assert levels[:3] == [1, 2, 3], levels
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing.xml", "answered HTTP 404, not a feed"),
        ("notafeed.html", "is not a readable feed"),
        ("garbage.bin", "is not a readable feed"),
    ],
)
def test_what_is_not_a_feed_is_refused_in_the_form_and_nothing_is_stored(
    web: WebRig, feed_server: FeedServer, name: str, problem: str
) -> None:
    sign_in(web.client)
    url = feed_server.url(name)
    answer = submit(web.client, PAGE, PAGE, url=url, category="ai")
    assert answer.status_code == 400
    words = text_of(answer.text)
    assert f"URL: {url} {problem}" in words
    assert f'value="{url}"' in answer.text  # kept in the form to correct it
    assert _feeds(web) == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"url": "ftp://example.com/feed", "category": "ai"}, "URL: expected an http(s) feed URL"),
        ({"url": "https://example.com/feed", "category": "cooking"}, "Category: unknown"),
        ({"url": "", "category": "ai"}, "url is required"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    web: WebRig, feed_server: FeedServer, fields: dict[str, str], problem: str
) -> None:
    sign_in(web.client)
    answer = submit(web.client, PAGE, PAGE, **fields)
    assert answer.status_code == 400 and problem in text_of(answer.text)
    assert _feeds(web) == [] and feed_server.requests == []


def test_a_feed_already_registered_is_refused(web: WebRig, feed_server: FeedServer) -> None:
    url = feed_server.url("atom.xml")
    with web.service.sessions.begin() as session:
        register_feed(session, url, "quantum", NOW)
    sign_in(web.client)
    answer = submit(web.client, PAGE, PAGE, url=url, category="ai")
    assert answer.status_code == 400 and "is already registered" in text_of(answer.text)
    assert [f.category for f in _feeds(web)] == ["quantum"]


def test_poll_now_stores_the_items_and_the_health(web: WebRig, feed_server: FeedServer) -> None:
    with web.service.sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("bad_items.xml"), "ai", NOW).id
        session.get_one(Feed, feed_id).next_poll_at = NOW + timedelta(hours=1)  # not due
    sign_in(web.client)
    path = f"{PAGE}/{feed_id}"
    answer = submit(web.client, PAGE, path, action="poll")
    assert answer.status_code == 303 and answer.headers["location"] == f"{PAGE}?n=1&done=polled"
    (feed,) = _feeds(web)
    assert (feed.stored_last_run, feed.rejected_last_run, feed.failures) == (1, 2, 0)
    assert feed.last_success_at == NOW and feed.next_poll_at == NOW + INTERVAL
    assert _articles(web) == 1
    words = text_of(web.client.get(answer.headers["location"]).text)
    assert "Polled. Articles stored or updated: 1." in words
    assert "Stored last run 1 Rejected last run 2" in words
    assert "Last item refused: item 3: url: must be an absolute http(s) URL" in words


def test_a_failing_poll_is_counted_and_shown(web: WebRig, feed_server: FeedServer) -> None:
    with web.service.sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("gone.xml"), "ai", NOW).id
    sign_in(web.client)
    answer = submit(web.client, PAGE, f"{PAGE}/{feed_id}", action="poll")
    assert answer.headers["location"] == f"{PAGE}?n=0&done=poll-failed"
    (feed,) = _feeds(web)
    assert feed.failures == 1 and feed.last_error == "ValueError: HTTP 404"
    words = text_of(web.client.get(PAGE).text)
    assert "FAILING" in words.upper() and "Last failure: ValueError: HTTP 404" in words


def test_remove_stops_polling_and_keeps_the_articles(web: WebRig, feed_server: FeedServer) -> None:
    with web.service.sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("rss.xml"), "robotics", NOW).id
    sign_in(web.client)
    path = f"{PAGE}/{feed_id}"
    assert submit(web.client, PAGE, path, action="poll").status_code == 303
    stored = _articles(web)
    assert stored == 2  # the third item has no guid or link
    page = web.client.get(PAGE)
    csrf = form_csrf(page.text, path)
    answer = web.client.post(path, data={"csrf": csrf, "action": "remove"})
    assert answer.status_code == 303 and answer.headers["location"] == f"{PAGE}?done=removed"
    assert _feeds(web) == [] and _articles(web) == stored
    again = web.client.post(path, data={"csrf": csrf, "action": "remove"})
    assert again.status_code == 404
    assert re.search(r"No feed yet", web.client.get(PAGE).text)


def test_actions_need_the_forms_token(web: WebRig, feed_server: FeedServer) -> None:
    with web.service.sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("rss.xml"), "ai", NOW).id
        other = register_feed(session, feed_server.url("atom.xml"), "ai", NOW).id
    sign_in(web.client)
    page = web.client.get(PAGE)
    csrf = form_csrf(page.text, f"{PAGE}/{feed_id}")
    refused = web.client.post(f"{PAGE}/{other}", data={"csrf": csrf, "action": "remove"})
    assert refused.status_code == 403
    assert (
        web.client.post(PAGE, data={"url": "https://x.example/f", "category": "ai"}).status_code
        == 403
    )
    bad = web.client.post(f"{PAGE}/{feed_id}", data={"csrf": csrf, "action": "explode"})
    assert bad.status_code == 400
    assert len(_feeds(web)) == 2 and feed_server.requests == []

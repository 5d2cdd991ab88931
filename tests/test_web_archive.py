"""The public archive over HTTP: the index, each shelf's pages, one page per edition, the
Atom feeds (parsed by feedparser, every edition present), conditional answers, and no
personal data anywhere. Editions are published by the real tick."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import feedparser
import pytest
import time_machine
from sqlalchemy import select, update

from digestd.models import ArchiveEdition, Article
from digestd.web import archive
from tests.conftest import ADMIN_TOKEN, WebRig
from tests.helpers import article, parse, parts
from tests.web_helpers import links_in, signup_form, text_of

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ATOM = "{http://www.w3.org/2005/Atom}"
FIRST, LAST = 23, 30  # dailies of Monday 23 to Monday 30 November 2026; the weekly of the 29th


def _day(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _publish(web: WebRig, first: int = FIRST, last: int = LAST) -> None:
    """Stories for AI and Robotics each day, and a tick after each day's send time."""
    for day in range(first, last + 1):
        items = [
            article(f"ai-{day}", "ai", _day(day - 1, 20), score=5, source="Wire A"),
            article(
                f"ai-{day}-b", "ai", _day(day, 1), score=2, source="Wire B", title=f"Models {day}"
            ),
            article(f"bot-{day}", "robotics", _day(day, 3), score=1, source="Wire C"),
        ]
        with time_machine.travel(_day(day, 4), tick=False):  # in before the morning's send
            assert web.client.post("/api/articles", json=items, headers=ADMIN).status_code == 200
        web.portal.call(web.service.tick, _day(day, 7) + timedelta(minutes=5))


def _shelved(web: WebRig) -> list[tuple[str, str, str]]:
    with web.service.sessions() as session:
        rows = session.execute(
            select(ArchiveEdition.category, ArchiveEdition.kind, ArchiveEdition.period).where(
                ArchiveEdition.digest_id.is_not(None)
            )
        )
        return sorted((c, k, p) for c, k, p in rows)


def _paths(page: str) -> list[str]:
    return re.findall(r'href="(/archive/[a-z-]+/(?:daily|weekly)/[0-9-]+)"', page)


def test_the_index_lists_all_technology_and_each_category_with_their_latest_editions(
    web: WebRig,
) -> None:
    _publish(web)
    page = web.client.get("/archive")
    assert page.status_code == 200
    words = text_of(page.text)
    assert words.index("All Technology") < words.index("AI") < words.index("Robotics")
    assert "Quantum No editions yet" in words  # every category is listed
    # Each shelf's latest daily and weekly, latest first.
    assert _paths(page.text)[:2] == [
        "/archive/all/daily/2026-11-30",
        "/archive/all/weekly/2026-11-29",
    ]
    assert "/archive/ai/daily/2026-11-30" in page.text and 'href="/archive/ai.atom"' in page.text
    assert '<link rel="canonical" href="https://digest.example.com/archive">' in page.text
    assert "noindex" not in page.text  # public: search engines may list it


def test_a_shelf_lists_its_editions_newest_first_in_pages_that_keep_a_date_together(
    web: WebRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(web)
    expected = [f"/archive/ai/{k}/{p}" for c, k, p in _shelved(web) if c == "ai"]
    assert len(expected) == 9
    monkeypatch.setattr(archive, "PAGE", 2)
    seen: list[str] = []
    url: str | None = "/archive/ai"
    while url is not None:
        page = web.client.get(url)
        assert page.status_code == 200
        found = _paths(page.text)
        assert 1 <= len(found) <= 2
        seen += found
        older = re.search(r'href="(/archive/ai\?before=[0-9-]+)"', page.text)
        url = older.group(1) if older else None
    assert len(seen) == len(set(seen)) and set(seen) == set(expected)
    assert seen[:3] == [  # newest first; the 29th's weekly and daily on one page
        "/archive/ai/daily/2026-11-30",
        "/archive/ai/weekly/2026-11-29",
        "/archive/ai/daily/2026-11-29",
    ]
    first = web.client.get("/archive/ai").text
    assert "Story ai-30 + 1 more" in text_of(first)  # each edition's top story
    assert 'href="/subscribe?categories=ai&amp;frequency=daily"' in first


def test_an_edition_page_is_the_digest_a_reader_of_that_category_was_sent(web: WebRig) -> None:
    _publish(web, FIRST, 28)
    with time_machine.travel(_day(28, 9), tick=False):
        signup_form(web, "ann@example.com", categories=["ai"], timezone="UTC")
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
    _publish(web, 29, LAST)
    view = web.client.get(links_in(web.smtp.messages[-1].data)["view"]).text
    page = web.client.get("/archive/ai/daily/2026-11-30")
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]
    # The same stored digest: the email's body, byte for byte, between the heading (each
    # page's own) and the footer that replaces the reader's links.
    body = view.split("</h1>", 1)[1].split("This is a web copy")[0]
    assert body in page.text
    words = text_of(page.text)
    assert "Story ai-30" in words and "Models 30" in words and "Story bot-30" not in words
    # The email's "You receive the ... digest" is the reader's: a web copy is nobody's.
    assert "You receive the" not in words and "You receive the" not in text_of(view)
    assert "You receive the Tech Pulse daily digest" in text_of(
        parts(parse(web.smtp.messages[-1].data))[1]
    )
    assert (
        '<link rel="canonical" href="https://digest.example.com/archive/ai/daily/2026-11-30">'
        in page.text
    )
    assert '<a rel="prev" href="/archive/ai/daily/2026-11-29"' in page.text
    assert 'rel="next"' not in page.text  # the newest
    assert "<title>AI daily · Monday 30 November 2026 · Tech Pulse</title>" in page.text
    assert "Get the AI daily by email" in words and "The AI archive" in words
    middle = web.client.get("/archive/ai/daily/2026-11-27").text
    assert 'rel="prev" href="/archive/ai/daily/2026-11-26"' in middle
    assert 'rel="next" href="/archive/ai/daily/2026-11-28"' in middle
    weekly = web.client.get("/archive/all/weekly/2026-11-29").text
    assert "TOP STORY OF THE WEEK" in text_of(weekly) and "ROBOTICS" in text_of(weekly)
    assert '<a rel="prev"' not in weekly  # the first weekly the archive has


def test_latest_redirects_to_the_newest_edition_of_that_kind(web: WebRig) -> None:
    _publish(web)
    daily = web.client.get("/archive/ai/daily/latest")
    assert daily.status_code == 302
    assert daily.headers["location"] == "/archive/ai/daily/2026-11-30"
    assert daily.headers["cache-control"].startswith("public")
    assert web.client.get("/archive/all/weekly/latest").headers["location"].endswith("/2026-11-29")
    assert web.client.get("/archive/quantum/daily/latest").status_code == 404


@pytest.mark.parametrize(
    ("path", "status", "field", "says"),
    [
        ("/archive/artificial-intelligence", 404, None, "no archive called"),
        ("/archive/nope.atom", 404, None, "no archive called"),
        ("/archive/ai/monthly/2026-11-30", 404, "kind", "daily and weekly editions only"),
        ("/archive/ai/daily/2026-11-01", 404, None, "no daily edition of 2026-11-01"),
        ("/archive/ai/daily/30-11-2026", 400, "date", "YYYY-MM-DD"),
        ("/archive/ai/daily/2026-02-30", 400, "date", "YYYY-MM-DD"),
        ("/archive/ai/daily/20261130", 400, "date", "YYYY-MM-DD"),
        ("/archive/ai?before=last-week", 400, "before", "YYYY-MM-DD"),
        ("/archive/ai?before=", 400, "before", "YYYY-MM-DD"),
    ],
)
def test_unknown_or_malformed_addresses_get_one_clear_answer_and_change_nothing(
    web: WebRig, path: str, status: int, field: str | None, says: str
) -> None:
    _publish(web, 29, 30)
    before = _shelved(web)
    page = web.client.get(path)
    assert page.status_code == status and says in text_of(page.text)
    assert "Traceback" not in page.text
    answer = web.client.get(path, headers={"Accept": "application/json"})
    assert answer.status_code == status and answer.json().get("field") == field
    assert _shelved(web) == before


def test_a_category_typed_in_capitals_is_sent_to_its_archive(web: WebRig) -> None:
    _publish(web, 29, 30)
    for typed, meant in [
        ("/archive/AI", "/archive/ai"),
        ("/archive/Robotics/daily/2026-11-30", "/archive/robotics/daily/2026-11-30"),
        ("/archive/AI?before=2026-11-30", "/archive/ai?before=2026-11-30"),
    ]:
        answer = web.client.get(typed, follow_redirects=False)
        assert answer.status_code == 308 and answer.headers["location"] == meant
        assert web.client.get(typed, follow_redirects=True).status_code == 200


def _required(document: bytes) -> list[str]:
    """What RFC 4287 requires (and the W3C validator checks) that this feed lacks."""
    root = ET.fromstring(document)
    missing = []
    if root.tag != f"{ATOM}feed":
        return ["feed"]
    for name in ("id", "title", "updated"):
        if root.find(f"{ATOM}{name}") is None:
            missing.append(f"feed/{name}")
    links = {link.get("rel"): link for link in root.findall(f"{ATOM}link")}
    if "self" not in links or links["self"].get("type") != "application/atom+xml":
        missing.append("feed/link[rel=self]")
    if "alternate" not in links:
        missing.append("feed/link[rel=alternate]")
    feed_author = root.find(f"{ATOM}author/{ATOM}name") is not None
    date = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
    for entry in root.findall(f"{ATOM}entry"):
        for name in ("id", "title", "updated", "summary"):
            if entry.find(f"{ATOM}{name}") is None:
                missing.append(f"entry/{name}")
        if not date.match(entry.findtext(f"{ATOM}updated") or ""):
            missing.append("entry/updated as RFC 3339")
        if entry.find(f"{ATOM}link[@rel='alternate']") is None:
            missing.append("entry/link[rel=alternate]")
        if not feed_author and entry.find(f"{ATOM}author") is None:
            missing.append("entry/author")
    ids = [e.findtext(f"{ATOM}id") for e in root.findall(f"{ATOM}entry")]
    if len(ids) != len(set(ids)):
        missing.append("unique entry ids")
    return missing


@pytest.mark.parametrize("shelf", ["all", "ai", "robotics", "quantum"])
def test_each_atom_feed_parses_with_every_edition_present(web: WebRig, shelf: str) -> None:
    _publish(web)
    # Edited after its digest was rendered, as an older digestd stored it (the API now
    # refuses these characters): the feed's headlines are read from the articles, and
    # XML 1.0 cannot carry them.
    with web.service.sessions.begin() as session:
        edited = session.scalars(
            update(Article)
            .where(Article.id == "ai-29")
            .values(title="Control \x01\x1f\ufffe chars & <tags> in a title", source="Wire\x0bA")
            .returning(Article.id)
        ).all()
        assert edited == ["ai-29"]
    answer = web.client.get(f"/archive/{shelf}.atom")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert _required(answer.content) == []
    parsed: Any = feedparser.parse(answer.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    editions = [
        f"https://digest.example.com/archive/{shelf}/{k}/{p}"
        for c, k, p in _shelved(web)
        if c == shelf
    ]
    assert sorted(entry.id for entry in parsed.entries) == sorted(editions)
    assert [entry.link for entry in parsed.entries] == [entry.id for entry in parsed.entries]
    assert parsed.feed.links[0].href == f"https://digest.example.com/archive/{shelf}.atom"
    if shelf == "ai":
        newest = parsed.entries[0]
        assert newest.title == "AI daily · Monday 30 November 2026"
        assert (
            "Story ai-30" in newest.summary and "https://news.example.com/ai-30" in newest.summary
        )
        odd = next(e for e in parsed.entries if e.id.endswith("/daily/2026-11-29"))
        assert "Control  chars &amp; &lt;tags&gt; in a title</a> (WireA)" in odd.summary
    if shelf == "quantum":  # no edition yet: updated is when the archive began it
        assert parsed.entries == [] and parsed.feed.updated == "2026-11-23T07:05:00Z"


def test_an_empty_shelfs_feed_is_dated_from_when_the_shelf_began_and_stays_so(
    web: WebRig,
) -> None:
    """Quantum never had an edition: its feed says since when the archive has held it (the
    first tick that decided its editions), the same on every request and after later
    ticks, so a feed reader's conditional request gets a 304."""
    _publish(web, 23, 24)
    first = web.client.get("/archive/quantum.atom")
    updated = ET.fromstring(first.content).findtext(f"{ATOM}updated")
    assert updated == "2026-11-23T07:05:00Z"
    assert first.headers["last-modified"] == "Mon, 23 Nov 2026 07:05:00 GMT"
    _publish(web, 25, 26)  # other shelves grow; this one stays empty
    again = web.client.get(
        "/archive/quantum.atom", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert web.client.get("/archive/quantum.atom").content == first.content


def test_a_feed_holds_the_latest_editions_only(
    web: WebRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(web)
    monkeypatch.setattr(archive, "FEED_ENTRIES", 3)
    parsed: Any = feedparser.parse(web.client.get("/archive/ai.atom").content)
    assert [e.id.split("/archive/ai/")[1] for e in parsed.entries] == [
        "daily/2026-11-30",
        "weekly/2026-11-29",
        "daily/2026-11-29",
    ]


ARCHIVE_PAGES = [
    "/archive",
    "/archive/ai",
    "/archive/ai.atom",
    "/archive/ai/daily/2026-11-29",
]


@pytest.mark.parametrize("path", ARCHIVE_PAGES)
def test_archive_answers_are_public_cacheable_and_conditional(web: WebRig, path: str) -> None:
    _publish(web, 28, 29)
    first = web.client.get(path)
    assert first.status_code == 200
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert modified == "Sun, 29 Nov 2026 07:05:00 GMT"
    assert first.headers["cache-control"].startswith("public, max-age=")
    assert "set-cookie" not in first.headers
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-Modified-Since": modified},
        {"If-Modified-Since": "Mon, 30 Nov 2026 00:00:00 GMT"},
    ):
        again = web.client.get(path, headers=headers)
        assert again.status_code == 304, headers
        assert again.content == b"" and again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
    for headers in (
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": "Sat, 28 Nov 2026 00:00:00 GMT"},
        {"If-Modified-Since": "not a date"},
        {"If-None-Match": '"other"', "If-Modified-Since": modified},  # the ETag decides
    ):
        assert web.client.get(path, headers=headers).status_code == 200, headers
    assert web.client.get(path).headers["etag"] == etag  # the same bytes, the same tag


@pytest.mark.parametrize("path", ARCHIVE_PAGES)
@pytest.mark.parametrize(
    "since",
    ["Mon, 07 Dec 2026 12:12:43 +99999999999999", "Mon, 07 Dec 99999999999 12:12:43 GMT"],
    ids=["huge-offset", "huge-year"],
)
def test_an_if_modified_since_that_is_no_date_is_ignored(
    web: WebRig, path: str, since: str
) -> None:
    """Python's date parser overflows on these (500 and a traceback before): ignored, as an
    invalid date must be (RFC 9110 §13.1.3)."""
    _publish(web, 28, 29)
    answer = web.client.get(path, headers={"If-Modified-Since": since})
    assert answer.status_code == 200
    assert answer.headers["etag"] == web.client.get(path).headers["etag"]


@pytest.mark.parametrize("path", ["/archive/ai", "/archive/ai.atom"])
def test_a_story_corrected_after_publication_changes_the_pages_that_list_it(
    web: WebRig, path: str
) -> None:
    """The shelf's page and feed show each edition's headlines as the articles read now: a
    correction is a change, for a client revalidating by date as much as by ETag."""
    _publish(web, 28, 29)
    before = web.client.get(path)
    modified = before.headers["last-modified"]
    corrected = article("ai-29", "ai", _day(28, 20), score=5, source="Wire A", title="Fixed")
    with time_machine.travel(_day(30, 9), tick=False):
        assert web.client.post("/api/articles", json=[corrected], headers=ADMIN).status_code == 200
    after = web.client.get(path, headers={"If-Modified-Since": modified})
    assert after.status_code == 200 and "Fixed" in after.text and "Fixed" not in before.text
    assert after.headers["last-modified"] == "Mon, 30 Nov 2026 09:00:00 GMT"
    assert after.headers["etag"] != before.headers["etag"]
    if path.endswith(".atom"):
        parsed: Any = feedparser.parse(after.content)
        assert parsed.feed.updated == "2026-11-30T09:00:00Z"
        updated = {e.id.split("/archive/ai/")[1]: e.updated for e in parsed.entries}
        assert updated["daily/2026-11-29"] == "2026-11-30T09:00:00Z"
        assert updated["daily/2026-11-28"] == "2026-11-28T07:05:00Z"  # lists no corrected story


def test_a_new_edition_changes_the_pages_it_shows_on(web: WebRig) -> None:
    _publish(web, 28, 29)
    before = {p: web.client.get(p).headers["etag"] for p in ARCHIVE_PAGES}
    _publish(web, 30, 30)
    for path, etag in before.items():
        answer = web.client.get(path, headers={"If-None-Match": etag})
        # The 29th's page gains its "next" link; lists and the feed gain the 30th.
        assert answer.status_code == 200, path
        assert answer.headers["last-modified"] == format_datetime(
            _day(30, 7) + timedelta(minutes=5), usegmt=True
        )
    old = web.client.get("/archive/ai/daily/2026-11-28")
    assert old.headers["last-modified"] == "Sun, 29 Nov 2026 07:05:00 GMT"  # unchanged


TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{16,}")


def test_no_archive_page_nor_a_view_in_browser_page_carries_personal_data(web: WebRig) -> None:
    _publish(web, FIRST, 28)
    with time_machine.travel(_day(28, 9), tick=False):
        signup_form(web, "ann.reader@example.com", categories=["ai", "robotics"], timezone="UTC")
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
    _publish(web, 29, LAST)
    links = links_in(web.smtp.messages[-1].data)
    reader = web.subscriber("ann.reader@example.com")
    assert reader is not None and set(links) >= {"unsubscribe", "preferences", "view"}
    pages = {links["view"]: web.client.get(links["view"])}
    queue = ["/archive"]
    while queue:  # every archive page, found by following the archive's own links
        path = queue.pop()
        if path in pages:
            continue
        pages[path] = answer = web.client.get(path)
        assert answer.status_code == 200, path
        for found in re.findall(
            r'href="((?:https://digest\.example\.com)?/archive[^"#]*)"', answer.text
        ):
            queue.append(found.replace("https://digest.example.com", "").replace("&amp;", "&"))
    assert len(pages) > 60  # the index, 27 shelves and their feeds, every edition
    tokens = [value.rsplit("/", 1)[1] for value in links.values()]
    for path, answer in pages.items():
        text = answer.text
        for personal in (
            "ann.reader",
            "ann.reader%40",
            "/unsubscribe/",
            "/preferences/",
            "/view/",
            "/confirm/",
            reader.public_id,
            *tokens,
        ):
            assert personal not in text, (path, personal)
        assert not TOKEN_SHAPED.search(text), (path, TOKEN_SHAPED.search(text))
        assert "set-cookie" not in answer.headers, path
        assert "__digestd" not in text  # no link placeholder left
    view_words = text_of(pages[links["view"]].text)
    assert "Past editions: AI · Robotics" in view_words  # "view in browser" leads to the archive
    assert 'href="https://digest.example.com/archive/ai"' in pages[links["view"]].text

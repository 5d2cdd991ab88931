"""Feeds against a real local HTTP server: RSS and Atom, HTML in titles, relative links,
missing dates, malformed XML, 304 Not Modified, failures backed off and retried; and
``digestd feeds add|list|remove`` as an operator runs them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.feed_polling import INTERVAL, poll_due
from digestd.content.feeds import RedirectGuard, http_fetch, register_feed
from digestd.db import make_engine, make_sessions
from digestd.errors import InputError
from digestd.models import Article, Feed
from tests.feed_server import FeedServer, serving
from tests.helpers import one_line_error, parse, parts, run_cli, run_digestd

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serving() as server:
        yield server


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessions(engine)
    engine.dispose()


def _register(sessions: sessionmaker[Session], url: str, category: str) -> int:
    with sessions.begin() as session:
        return int(register_feed(session, url, category, NOW).id)


def _articles(sessions: sessionmaker[Session]) -> dict[str, Article]:
    with sessions() as session:
        found = {a.url: a for a in session.scalars(select(Article))}
        for a in found.values():
            _ = a.categories
        return found


def _feeds(sessions: sessionmaker[Session]) -> list[Feed]:
    with sessions() as session:
        return list(session.scalars(select(Feed).order_by(Feed.id)))


def test_rss_items_become_articles_with_plain_titles_absolute_links_and_dates(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, feed_server.url("rss.xml"), "robotics")
    report = poll_due(sessions, NOW)
    # The third item has neither guid nor link: rejected, and counted.
    assert (report.polled, report.failed, report.articles, report.rejected) == (1, 0, 2, 1)
    articles = _articles(sessions)
    shift = articles["https://robots.example.com/2026/11/humanoids-full-shift"]  # was relative
    assert shift.title == "Humanoids clock a full shift"  # HTML stripped
    assert (shift.summary, shift.why_it_matters) == ("A full eight-hour shift.", "")
    assert shift.source == "Robot Report & Friends"
    assert shift.published_at == datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
    assert [c.category for c in shift.categories] == ["robotics"]
    undated = articles["https://robots.example.com/2026/11/surgical-robot"]
    assert undated.published_at == NOW  # no date: first seen now


def test_a_feed_items_description_is_shown_in_the_digest_but_not_as_why_it_matters(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A feed's description is the publisher's summary: labelled "Why it matters:" it read
    as the editor's word, on the lead and on every card."""
    _register(sessions, feed_server.url("rss.xml"), "robotics")
    assert poll_due(sessions, NOW).articles == 2
    out = tmp_path / "daily.eml"
    at = (NOW + timedelta(hours=1)).isoformat()
    args = ("preview", "daily", "--categories", "robotics", "--now", at, "--format", "eml")
    assert run_cli(monkeypatch, env, *args, "-o", str(out)) == 0
    text, html = parts(parse(out.read_bytes()))
    for description in ("A full eight-hour shift.", "No publication date on this one."):
        assert description in text and f'<span dir="auto">{description}</span>' in html
    assert "Why it matters" not in text and "Why it matters" not in html


def test_atom_entries_with_xml_base_and_html_titles(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, feed_server.url("atom.xml"), "quantum")
    assert poll_due(sessions, NOW).articles == 2
    articles = _articles(sessions)
    qubits = articles["https://quantum.example.org/blog/posts/logical-qubits"]
    assert qubits.title == "Logical qubits outlive physical ones"
    assert qubits.source == "Quantum Weekly"
    photonic = articles["https://quantum.example.org/blog/posts/photonic-series-d"]
    assert photonic.published_at == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def test_unchanged_feed_costs_a_304_and_repolling_never_duplicates(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, feed_server.url("rss.xml"), "robotics")
    poll_due(sessions, NOW)
    assert poll_due(sessions, NOW + timedelta(minutes=1)).polled == 0  # not due yet
    later = NOW + INTERVAL
    report = poll_due(sessions, later)
    assert (report.polled, report.unchanged, report.articles) == (1, 1, 0)
    assert feed_server.requests[-1][1] is not None  # the ETag was sent back
    # Without the ETag (say the server lost it) the same items update, not duplicate.
    with sessions.begin() as session:
        feed = session.scalars(select(Feed)).one()
        feed.etag = None
    report = poll_due(sessions, later + INTERVAL)
    assert report.articles == 2
    assert len(_articles(sessions)) == 2


def test_a_not_well_formed_feed_keeps_the_items_that_parse(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, feed_server.url("malformed.xml"), "ai")
    report = poll_due(sessions, NOW)
    assert (report.failed, report.articles) == (0, 1)
    (only,) = _articles(sessions).values()
    assert only.title == "Chips & models: a recovered item"


def test_characters_no_email_can_show_are_dropped_from_feed_text(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
) -> None:
    """A feed that is not well-formed XML can carry U+0001 and the like, which would fail
    every digest of the category (or be refused as an article): the item is kept without."""
    _register(sessions, feed_server.url("controls.xml"), "ai")
    report = poll_due(sessions, NOW)
    assert (report.failed, report.articles, report.rejected) == (0, 1, 0)
    (item,) = _articles(sessions).values()
    assert item.title == "Foundry output [1mdoubles"
    assert item.summary == "Yield is up."
    assert item.source == "ChipWire"


@pytest.mark.parametrize("name", ["notafeed.html", "missing.xml", "error"])
def test_a_failing_feed_is_backed_off_and_retried_without_stopping_others(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
    name: str,
) -> None:
    """A feed that worked when it was added and broke later (feeds add refuses these)."""
    feed_server.status["error"] = 500
    bad = _register(sessions, feed_server.url(name), "ai")
    _register(sessions, feed_server.url("atom.xml"), "quantum")
    report = poll_due(sessions, NOW)
    assert (report.polled, report.failed, report.articles) == (2, 1, 2)
    with sessions() as session:
        feed = session.get(Feed, bad)
        assert feed is not None and feed.failures == 1 and feed.last_error
        assert feed.last_success_at is None
        first_retry = feed.next_poll_at
    assert first_retry > NOW + INTERVAL  # backed off beyond the normal interval
    poll_due(sessions, first_retry - timedelta(seconds=1))
    assert feed_server.fetches(name) == 1  # not retried early
    poll_due(sessions, first_retry)
    assert feed_server.fetches(name) == 2
    with sessions() as session:
        feed = session.get(Feed, bad)
        assert feed is not None and feed.failures == 2
        assert feed.next_poll_at - first_retry > first_retry - NOW  # grows each time


def test_an_unreachable_host_is_a_logged_failure(sessions: sessionmaker[Session]) -> None:
    _register(sessions, "http://127.0.0.1:9/feed.xml", "ai")  # discard port: refused
    report = poll_due(sessions, NOW)
    assert report.failed == 1 and "127.0.0.1:9" in report.errors[0]


# --- the command line -----------------------------------------------------------------------


def _feed_count(database_url: str) -> int:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        count = int(connection.scalar(select(func.count()).select_from(Feed)) or 0)
    engine.dispose()
    return count


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing.xml", "answered HTTP 404, not a feed"),
        ("notafeed.html", "is not a readable feed"),
        ("garbage.bin", "is not a readable feed"),
        ("error", "answered HTTP 500, not a feed"),
    ],
)
def test_feeds_add_refuses_what_is_not_a_feed_in_one_line(
    feed_server: FeedServer, env: dict[str, str], name: str, problem: str
) -> None:
    feed_server.status["error"] = 500
    url = feed_server.url(name)
    result = run_digestd(env, "feeds", "add", url, "--category", "ai")
    line = one_line_error(result)
    assert line.startswith(f"digestd: URL: {url}") and problem in line
    assert feed_server.fetches(name) == 1  # fetched once
    assert _feed_count(env["DIGESTD_DATABASE_URL"]) == 0  # nothing stored


def test_feeds_add_fetches_once_then_stores_and_lists_the_feed(
    feed_server: FeedServer, env: dict[str, str]
) -> None:
    url = feed_server.url("rss.xml")
    added = run_digestd(env, "feeds", "add", url, "--category", "Robotics")
    assert added.returncode == 0, added.stderr
    assert (
        b"feed 1 registered for robotics: Robot Report & Friends "
        b"(3 items in it now, 2 stored as articles; polled every 15 minutes" in added.stdout
    )
    assert feed_server.fetches("rss.xml") == 1
    again = run_digestd(env, "feeds", "add", url, "--category", "robotics")
    assert "is already registered" in one_line_error(again)
    assert feed_server.fetches("rss.xml") == 1  # refused before fetching
    for args, expected in [
        (["ftp://x", "--category", "ai"], "http(s) feed URL"),
        ([url + "?2", "--category", "cooking"], "unknown category 'cooking'"),
    ]:
        assert expected in one_line_error(run_digestd(env, "feeds", "add", *args))
    listed = run_digestd(env, "feeds", "list")
    assert listed.returncode == 0
    header, row = listed.stdout.decode().splitlines()
    assert header.split("\t") == [
        "id", "category", "state", "last success", "stored", "rejected", "url", "problem"
    ]  # fmt: skip
    # The test fetch was its first poll: a success, its items stored.
    cells = row.split("\t")
    assert cells[:3] == ["1", "robotics", "ok"] and cells[3] != "-"
    assert cells[4:7] == ["2", "1", url]  # one item has neither a guid nor a link


def test_a_feed_is_one_feed_whatever_its_fragment_and_its_title_is_bounded(
    feed_server: FeedServer, env: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    """A title of 5 600 characters (entities in a feed's DTD can make one of a megabyte) is
    cut to 200; a fragment never reaches the server, so a URL with one is the same feed."""
    url = feed_server.url("long_title.xml")
    added = run_digestd(env, "feeds", "add", url + "#top", "--category", "ai")
    assert added.returncode == 0, added.stderr
    assert len(added.stdout.splitlines()[0]) < 400  # the line naming the feed
    (feed,) = _feeds(sessions)
    assert feed.url == url and feed.title == " ".join(["Endless"] * 700)[:200]
    again = run_digestd(env, "feeds", "add", url + "#other", "--category", "ai")
    assert "is already registered" in one_line_error(again)


def test_a_feed_is_one_feed_however_its_url_is_spelt(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Each spelling would poll the feed again and store each item once more."""
    port = feed_server.port
    with sessions.begin() as session:  # as a digestd before URLs were normalised stored it
        session.add(
            Feed(
                url=f"HTTP://LocalHost:{port}/atom.xml",
                category="ai",
                next_poll_at=NOW,
                failures=0,
                created_at=NOW,
            )
        )
    _register(sessions, f"http://127.0.0.1:{port}/rss.xml", "ai")
    for spelling in (
        f"HTTP://127.0.0.1:{port}/rss.xml",
        f"http://127.0.0.1:0{port}/rss.xml",
        f"http://127.0.0.1:{port}/./feeds/../rss.xml",
        f"http://localhost:{port}/atom.xml",
    ):
        with pytest.raises(InputError, match="already registered"):
            _register(sessions, spelling, "ai")
    with sessions.begin() as session:
        assert register_feed(session, "http://Example.com:80", "ai", NOW).url == (
            "http://example.com/"
        )
    assert len(_feeds(sessions)) == 3


def test_feeds_list_shows_each_feeds_health(
    feed_server: FeedServer, env: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    feed_server.status["error"] = 503
    _register(sessions, feed_server.url("bad_items.xml"), "fintech")
    _register(sessions, feed_server.url("error"), "ai")
    poll_due(sessions, NOW)
    listed = run_digestd(env, "feeds", "list")
    rows = [line.split("\t") for line in listed.stdout.decode().splitlines()[1:]]
    assert rows[0][:6] == ["1", "fintech", "ok", "2026-11-30 06:00 UTC", "1", "2"]
    assert rows[0][7] == "item 3: url: must be an absolute http(s) URL, got 'javascript:alert(1)'"
    assert rows[1][:6] == ["2", "ai", "failing (1 in a row)", "-", "0", "0"]
    assert rows[1][7] == "ValueError: HTTP 503"


def test_feeds_remove_stops_polling_and_keeps_the_articles(
    feed_server: FeedServer, env: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    feed_id = _register(sessions, feed_server.url("atom.xml"), "quantum")
    poll_due(sessions, NOW)
    removed = run_digestd(env, "feeds", "remove", str(feed_id))
    assert removed.returncode == 0, removed.stderr
    assert b"is no longer polled (its articles stay)" in removed.stdout
    assert _feeds(sessions) == [] and len(_articles(sessions)) == 2
    assert poll_due(sessions, NOW + timedelta(days=1)).polled == 0
    assert "no feed 1" in one_line_error(run_digestd(env, "feeds", "remove", "1"), 1)
    for bad in ("one", "-1"):
        refused = run_digestd(env, "feeds", "remove", bad)
        assert refused.returncode == 2 and b"Traceback" not in refused.stderr
        assert "argument id: not an id (see feeds list)" in refused.stderr.decode()
    for past in ("2147483648", "9" * 23):  # past any id (PostgreSQL could not even compare)
        assert f"no feed {past}" in one_line_error(run_digestd(env, "feeds", "remove", past), 1)


def _trickling_server(stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """Answers headers at once, then a byte of body every 0.1 s for as long as it is read:
    no single read ever waits long enough to time out."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n\r\n<rss")
            while not stop.wait(0.1):  # the server's pace, not the test's clock
                try:
                    connection.sendall(b" ")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_feed_that_trickles_is_given_up_once_the_whole_fetch_takes_too_long() -> None:
    stop = threading.Event()
    listener, thread = _trickling_server(stop)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/feed.xml"
    started = time.monotonic()
    try:
        with pytest.raises(ValueError, match="still arriving after 1 s"):
            http_fetch(url, {}, timeout=5.0, total=1.0)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert time.monotonic() - started < 4  # the deadline, not the 5 s read timeout


def _redirect(origin: str, target: str) -> httpx.Response:
    """A 302 from ``origin`` to ``target`` as httpx hands it to a response hook when it
    follows redirects: the Location header, no ``next_request`` yet."""
    return httpx.Response(
        302,
        headers={"Location": f"http://{target}/feed.xml"},
        request=httpx.Request("GET", f"http://{origin}/feed.xml"),
    )


@pytest.mark.parametrize(
    "inside",
    [
        "127.0.0.1",
        "localhost",
        "10.0.0.8",
        "192.168.1.1",
        "169.254.169.254",
        "[::1]",
        "2130706433",  # 127.0.0.1 as one number
        "[::ffff:a9fe:a9fe]",  # 169.254.169.254 inside IPv6
    ],
)
def test_a_feed_on_the_internet_cannot_redirect_the_poller_inside(inside: str) -> None:
    """The cloud's metadata service or an admin port would be fetched and mailed out as
    articles. A feed the operator registered inside may redirect anywhere."""
    guard = RedirectGuard("93.184.216.34")
    with pytest.raises(ValueError, match="inside address"):
        guard(_redirect("93.184.216.34", inside))
    guard(_redirect("93.184.216.34", "93.184.216.35"))  # outside to outside: followed
    RedirectGuard("127.0.0.1")(_redirect("127.0.0.1", inside))  # inside already


class _Reached:
    """The network stream of a response, as far as the guard reads it: whom it reached."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, info: str) -> object:
        return (self.address, 80) if info == "server_addr" else None


def _reached(address: str, response: httpx.Response) -> httpx.Response:
    response.extensions["network_stream"] = _Reached(address)
    return response


def test_a_name_that_turns_inside_between_check_and_connect_is_caught_by_its_address() -> None:
    """DNS rebinding: the redirect's host resolved outside when the guard looked it up, and
    inside when the client connected. The address the response came from gives it away,
    before its body is read."""
    guard = RedirectGuard("feed.example.com")
    guard(_reached("93.184.216.34", _redirect("feed.example.com", "93.184.216.35")))
    with pytest.raises(ValueError, match="inside address"):
        guard(_reached("169.254.169.254", _redirect("rebound.example.com", "93.184.216.36")))

    inside = RedirectGuard("feed.example.com")  # a feed whose own server is inside
    inside(_reached("10.0.0.8", _redirect("feed.example.com", "93.184.216.35")))
    inside(_reached("127.0.0.1", _redirect("anywhere.example.com", "10.0.0.9")))


def _answer(host: str) -> httpx.Response:
    return httpx.Response(200, request=httpx.Request("GET", f"http://{host}/feed.xml"))


def test_a_feed_once_on_the_internet_is_refused_when_its_name_answers_from_inside() -> None:
    """DNS rebinding at the feed's own name: its owner (or whoever took the domain over)
    points it at 127.0.0.1 or the metadata service. Once its server was reached outside,
    the first answer from inside is refused, before its body is read."""
    for inside in ("127.0.0.1", "10.0.0.8", "169.254.169.254", "::1"):
        guard = RedirectGuard("feed.example.com", outside=True)
        with pytest.raises(ValueError, match="now answers from an inside address"):
            guard(_reached(inside, _answer("feed.example.com")))
    still_outside = RedirectGuard("feed.example.com", outside=True)
    still_outside(_reached("93.184.216.34", _answer("feed.example.com")))
    assert still_outside.feed_inside is False
    # Without that memory the same answer is a feed inside, which may redirect anywhere.
    unknown = RedirectGuard("feed.example.com")
    unknown(_reached("127.0.0.1", _answer("feed.example.com")))
    assert unknown.feed_inside is True
    unknown(_reached("127.0.0.1", _redirect("feed.example.com", "10.0.0.9")))


def test_a_location_that_is_no_url_is_left_to_httpx_to_refuse() -> None:
    guard = RedirectGuard("93.184.216.34")
    response = _redirect("93.184.216.34", "93.184.216.35")
    response.headers["Location"] = "http://a\x7fb/feed.xml"
    guard(response)  # no error of its own: httpx will not follow it (RemoteProtocolError)


def test_whether_a_feed_is_inside_is_where_its_server_was_reached_not_what_its_name_says(
    feed_server: FeedServer,
) -> None:
    """The guard reads the address of a real connection: a feed server reached on loopback
    is inside, whatever name it was asked under, so it may redirect inside."""
    feed_server.redirects["old.xml"] = feed_server.url("rss.xml")
    guard = RedirectGuard("93.184.216.34")  # a name that would say "outside"
    with httpx.Client(follow_redirects=True, event_hooks={"response": [guard]}) as client:
        response = client.get(feed_server.url("old.xml"))
    assert response.status_code == 200
    assert [str(r.url) for r in response.history] == [feed_server.url("old.xml")]


def test_adding_a_feed_that_redirects_where_nobody_can_follow_is_one_clear_error(
    feed_server: FeedServer, env: dict[str, str]
) -> None:
    feed_server.redirects["moved.xml"] = "javascript:alert(1)//x"
    added = run_digestd(env, "feeds", "add", feed_server.url("moved.xml"), "--category", "ai")
    assert added.returncode == 2, added.stderr
    assert "URL: cannot fetch" in one_line_error(added)


def test_a_feed_registered_inside_may_redirect_inside(
    feed_server: FeedServer, env: dict[str, str]
) -> None:
    feed_server.redirects["old.xml"] = feed_server.url("rss.xml")
    added = run_digestd(env, "feeds", "add", feed_server.url("old.xml"), "--category", "ai")
    assert added.returncode == 0, added.stderr
    assert b"its server is inside this network" in added.stdout

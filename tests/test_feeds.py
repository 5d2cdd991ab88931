"""Feeds against a real local HTTP server: RSS and Atom, HTML in titles, relative links,
missing dates, malformed XML, 304 Not Modified, failures backed off and retried."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.feeds import INTERVAL, add_feed, poll_due
from digestd.db import make_engine, make_sessions
from digestd.models import Article, Feed
from tests.helpers import run_cli

FILES = Path(__file__).parent / "feeds"
NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@dataclass
class FeedServer:
    """Serves tests/feeds/*.xml with an ETag; answers 304 to a matching If-None-Match."""

    port: int = 0
    status: dict[str, int] = field(default_factory=dict)  # path -> forced status
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, If-None-Match)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    state = FeedServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            state.requests.append((name, self.headers.get("If-None-Match")))
            if name in state.status:
                self.send_response(state.status[name])
                self.end_headers()
                return
            path = FILES / name
            if not path.is_file():
                self.send_error(404)
                return
            etag = f'"{path.stat().st_mtime_ns}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessions(engine)
    engine.dispose()


def _register(sessions: sessionmaker[Session], url: str, category: str) -> int:
    with sessions.begin() as session:
        return int(add_feed(session, url, category, NOW).id)


def _articles(sessions: sessionmaker[Session]) -> dict[str, Article]:
    with sessions() as session:
        found = {a.url: a for a in session.scalars(select(Article))}
        for a in found.values():
            _ = a.categories
        return found


def test_rss_items_become_articles_with_plain_titles_absolute_links_and_dates(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
) -> None:
    _register(sessions, feed_server.url("rss.xml"), "robotics")
    report = poll_due(sessions, NOW)
    assert (report.polled, report.failed, report.articles) == (1, 0, 2)
    articles = _articles(sessions)
    shift = articles["https://robots.example.com/2026/11/humanoids-full-shift"]  # was relative
    assert shift.title == "Humanoids clock a full shift"  # HTML stripped
    assert shift.why_it_matters == "A full eight-hour shift."
    assert shift.source == "Robot Report & Friends"
    assert shift.published_at == datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
    assert [c.category for c in shift.categories] == ["robotics"]
    undated = articles["https://robots.example.com/2026/11/surgical-robot"]
    assert undated.published_at == NOW  # no date: first seen now


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


@pytest.mark.parametrize("name", ["notafeed.html", "missing.xml", "error"])
def test_a_failing_feed_is_backed_off_and_retried_without_stopping_others(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
    name: str,
) -> None:
    feed_server.status["error"] = 500
    bad = _register(sessions, feed_server.url(name), "ai")
    _register(sessions, feed_server.url("atom.xml"), "quantum")
    report = poll_due(sessions, NOW)
    assert (report.polled, report.failed, report.articles) == (2, 1, 2)
    with sessions() as session:
        feed = session.get(Feed, bad)
        assert feed is not None and feed.failures == 1 and feed.last_error
        first_retry = feed.next_poll_at
    assert first_retry > NOW + INTERVAL  # backed off beyond the normal interval
    poll_due(sessions, first_retry - timedelta(seconds=1))
    assert [path for path, _ in feed_server.requests].count(name) == 1  # not retried early
    poll_due(sessions, first_retry)
    assert [path for path, _ in feed_server.requests].count(name) == 2
    with sessions() as session:
        feed = session.get(Feed, bad)
        assert feed is not None and feed.failures == 2
        assert feed.next_poll_at - first_retry > first_retry - NOW  # grows each time


def test_an_unreachable_host_is_a_logged_failure(sessions: sessionmaker[Session]) -> None:
    _register(sessions, "http://127.0.0.1:9/feed.xml", "ai")  # discard port: refused
    report = poll_due(sessions, NOW)
    assert report.failed == 1 and "127.0.0.1:9" in report.errors[0]


def test_feeds_add_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://robots.example.com/feed.xml"
    assert run_cli(monkeypatch, env, "feeds", "add", url, "--category", "robotics") == 0
    assert run_cli(monkeypatch, env, "feeds", "add", url, "--category", "robotics") == 2
    assert run_cli(monkeypatch, env, "feeds", "add", "ftp://x", "--category", "ai") == 2
    assert run_cli(monkeypatch, env, "feeds", "add", url + "2", "--category", "cooking") == 2
    err = capsys.readouterr().err
    assert "already registered" in err and "http(s) feed URL" in err
    assert "unknown category 'cooking'" in err
    assert run_cli(monkeypatch, env, "feeds", "list") == 0
    assert capsys.readouterr().out.count("robots.example.com") == 1

"""Polling feeds from several workers at once, each feed's health, and the failures that
must stay with one item or one feed: against a real local HTTP server and real databases."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.feed_polling import FETCHERS, LEASE, PollReport, claim, poll_due
from digestd.content.feeds import Fetched, http_fetch, register_feed
from digestd.db import make_engine, make_sessions
from digestd.models import Article, Feed
from tests.feed_server import FeedServer, serving
from tests.helpers import ROOT, run_digestd

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
FEEDS = 12  # half RSS, half Atom; two good items each


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serving() as server:
        yield server


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessions(engine)


def _register_many(sessions: sessionmaker[Session], server: FeedServer) -> list[str]:
    """FEEDS feeds (one file, many URLs): the paths the server will see."""
    paths = [f"{'rss' if i % 2 else 'atom'}.xml?feed={i}" for i in range(FEEDS)]
    with sessions.begin() as session:
        for path in paths:
            register_feed(session, server.url(path), "ai", NOW)
    return paths


def _article_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Article)) or 0)


def test_a_bad_item_is_rejected_alone_counted_logged_and_kept_in_the_feeds_health(
    feed_server: FeedServer,
    sessions: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("bad_items.xml"), "fintech", NOW).id
    with caplog.at_level(logging.WARNING, logger="digestd.content.feed_polling"):
        report = poll_due(sessions, NOW)
    assert (report.polled, report.failed, report.articles, report.rejected) == (1, 0, 1, 2)
    with sessions() as session:
        (article,) = session.scalars(select(Article))
        assert article.title == "Card networks cut interchange for small merchants"
        feed = session.get(Feed, feed_id)
        assert feed is not None
        assert (feed.failures, feed.stored_last_run, feed.rejected_last_run) == (0, 1, 2)
        assert feed.last_success_at == NOW and feed.next_poll_at > NOW
        assert feed.last_item_error is not None and feed.last_item_error.startswith("item 3: url")
    (line,) = caplog.messages
    assert "bad_items.xml: 2 items rejected, the rest stored (last: item 3: url" in line


def _refuse_poison(engine: Engine) -> None:
    """A trigger that makes the database refuse one title, as PostgreSQL refuses some text."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.title = 'POISON' THEN RAISE EXCEPTION 'poison refused'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON articles "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON articles "
                    "WHEN NEW.title = 'POISON' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
                )
            )


def test_a_database_error_fails_that_feed_alone_and_the_run_goes_on(
    feed_server: FeedServer,
    engine: Engine,
    sessions: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _refuse_poison(engine)
    with sessions.begin() as session:
        poisoned = register_feed(session, feed_server.url("poison.xml"), "ai", NOW).id
        register_feed(session, feed_server.url("atom.xml"), "quantum", NOW)
    with caplog.at_level(logging.WARNING):
        report = poll_due(sessions, NOW)
    assert (report.polled, report.failed, report.articles) == (2, 1, 2)
    assert _article_count(sessions) == 2  # the later feed's items, none of the poisoned one
    with sessions() as session:
        feed = session.get(Feed, poisoned)
        assert feed is not None and feed.failures == 1 and feed.last_success_at is None
        assert feed.last_error is not None and "poison refused" in feed.last_error
        assert feed.last_error.startswith("database error: ")
    assert not any(record.exc_info for record in caplog.records)  # a line, no traceback
    assert any("poison.xml failed (1 in a row): database error" in m for m in caplog.messages)


def test_a_feed_claimed_by_one_worker_is_skipped_by_another(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("rss.xml"), "ai", NOW).id
    # The other worker read the feed as due at NOW and claimed it first.
    assert claim(sessions, feed_id, NOW, NOW + LEASE)
    assert not claim(sessions, feed_id, NOW, NOW + LEASE)  # this one's update changes nothing
    assert poll_due(sessions, NOW).polled == 0
    assert feed_server.fetches("rss.xml") == 0
    # A poller that died leaves its lease: the feed comes back when the lease ends.
    assert poll_due(sessions, NOW + LEASE).polled == 1


def test_two_workers_polling_the_same_feeds_store_each_item_once(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    paths = _register_many(sessions, feed_server)
    feed_server.delay = 0.02  # answers take a moment, so the two runs overlap
    start = threading.Barrier(2)
    reports: list[PollReport] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait(timeout=10)
            reports.append(poll_due(sessions, NOW))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(r.polled for r in reports) == FEEDS  # each feed polled by one worker
    assert all(feed_server.fetches(path) == 1 for path in paths)
    assert sum(r.articles for r in reports) == 2 * FEEDS
    assert _article_count(sessions) == 2 * FEEDS
    assert sum(r.failed for r in reports) == 0


def test_a_hung_feed_holds_one_fetcher_while_the_others_are_fetched_and_stored(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A feed that answers only at its deadline does not hold back the feeds after it."""
    paths = _register_many(sessions, feed_server)
    hung = feed_server.url(paths[0])  # registered first: first in the polling order
    others_fetched = threading.Semaphore(0)

    def fetch(url: str, headers: dict[str, str], *, outside: bool = False) -> Fetched:
        if url == hung:  # answers once every other feed was fetched, or fails the run
            for _ in paths[1:]:
                if not others_fetched.acquire(timeout=10):
                    raise AssertionError("the other feeds waited behind the hung one")
        fetched = http_fetch(url, headers, outside=outside)
        if url != hung:
            others_fetched.release()
        return fetched

    report = poll_due(sessions, NOW, fetch)
    assert (report.polled, report.failed, report.articles) == (FEEDS, 0, 2 * FEEDS)
    assert _article_count(sessions) == 2 * FEEDS
    with sessions() as session:
        assert all(f.last_success_at == NOW for f in session.scalars(select(Feed)))


def test_once_told_to_stop_no_further_feed_is_claimed_and_those_left_stay_due(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """SIGTERM during a run of slow feeds: the fetches under way finish, the rest wait for
    the next run instead of holding the daemon's exit for minutes."""
    _register_many(sessions, feed_server)
    stopping = threading.Event()

    def fetch(url: str, headers: dict[str, str], *, outside: bool = False) -> Fetched:
        stopping.set()  # the signal comes while the first fetches are under way
        return http_fetch(url, headers, outside=outside)

    report = poll_due(sessions, NOW, fetch, should_stop=stopping.is_set)
    assert 1 <= report.polled <= FETCHERS < FEEDS
    with sessions() as session:
        due = session.scalars(select(Feed).where(Feed.next_poll_at <= NOW)).all()
    assert len(due) == FEEDS - report.polled  # never claimed: due as they were
    assert poll_due(sessions, NOW).polled == FEEDS - report.polled  # the next run takes them


def test_tick_polls_the_due_feeds_for_cron_users(
    feed_server: FeedServer, sessions: sessionmaker[Session], env: dict[str, str]
) -> None:
    with sessions.begin() as session:
        register_feed(session, feed_server.url("atom.xml"), "quantum", NOW)
    now = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    ticked = run_digestd(env, "tick", "--now", now)
    assert ticked.returncode == 0, ticked.stderr
    (line,) = ticked.stdout.decode().splitlines()  # still one summary line
    assert line.endswith(
        "; feeds: 1 polled (0 unchanged, 0 failed), 2 articles stored, 0 items rejected"
    )
    assert _article_count(sessions) == 2


@pytest.mark.slow  # two digestd processes, each polling a dozen slow feeds: ~5 s
def test_two_digestd_ticks_at_once_store_each_item_once_without_a_traceback(
    feed_server: FeedServer, sessions: sessionmaker[Session], env: dict[str, str]
) -> None:
    """Cron users get feed articles from `digestd tick`; two at once share the feeds."""
    paths = _register_many(sessions, feed_server)
    feed_server.delay = 0.1
    now = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    command = [sys.executable, "-m", "digestd", "tick", "--now", now]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    processes = [
        subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert b"Traceback" not in err and b"Error" not in err, err
    polled = [
        int(out.split(b"feeds: ")[1].split()[0]) if b"feeds: " in out else 0 for out, _ in outputs
    ]
    assert sum(polled) == FEEDS, outputs
    assert all(feed_server.fetches(path) == 1 for path in paths)
    assert _article_count(sessions) == 2 * FEEDS


def test_a_zero_date_is_that_items_error_and_an_undated_item_keeps_its_first_seen_date(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("dates.xml"), "ai", NOW).id
    first = poll_due(sessions, NOW)
    assert (first.failed, first.articles, first.rejected) == (0, 2, 1)
    later = NOW + timedelta(days=3)
    with sessions.begin() as session:  # due again; the file is served afresh (no 304)
        feed = session.get(Feed, feed_id)
        assert feed is not None
        feed.next_poll_at, feed.etag = later, None
    assert poll_due(sessions, later).articles == 2
    with sessions() as session:
        dates = dict(session.execute(select(Article.title, Article.published_at)).all())
        feed = session.get(Feed, feed_id)
        assert feed is not None and feed.last_item_error is not None
        assert feed.last_item_error.startswith("item 1: published_at: is no date")
    assert dates == {
        "A post that carries no date at all": NOW,  # first seen, not re-dated to ``later``
        "A post dated like any other": datetime(2026, 11, 29, 11, 0, tzinfo=UTC),
    }


def test_a_feed_that_declares_xml_entities_is_not_read(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        feed_id = register_feed(session, feed_server.url("entities.xml"), "ai", NOW).id
    report = poll_due(sessions, NOW)
    assert (report.failed, report.articles) == (1, 0) and _article_count(sessions) == 0
    with sessions() as session:
        feed = session.get(Feed, feed_id)
        assert feed is not None and feed.last_error is not None
        assert "declares XML entities" in feed.last_error


def test_a_feed_whose_server_was_on_the_internet_is_not_fetched_from_inside(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """Its name now leads to this machine (the feed server on loopback): the poll fails
    naming why, stores nothing, and the feed stays known as outside."""
    with sessions.begin() as session:
        url = feed_server.url("rss.xml")
        feed_id = register_feed(session, url, "ai", NOW, server_inside=False).id
    report = poll_due(sessions, NOW)
    assert (report.polled, report.failed, report.articles) == (1, 1, 0)
    assert _article_count(sessions) == 0
    with sessions() as session:
        feed = session.get(Feed, feed_id)
        assert feed is not None and feed.server_inside is False
        assert feed.last_error is not None
        assert "now answers from an inside address (127.0.0.1)" in feed.last_error


def test_a_feed_learns_where_its_server_is_and_never_moves_it_inside(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """A feed added before feeds remembered it learns at its first poll that works; one
    whose server was inside and is now reached outside is outside from then on."""
    with sessions.begin() as session:
        learning = register_feed(session, feed_server.url("rss.xml"), "ai", NOW).id
        moved = register_feed(session, "https://moved.example.com/feed.xml", "ai", NOW, None, True)
        moved_id = moved.id
    told: dict[str, bool] = {}

    def fetch(url: str, headers: dict[str, str], *, outside: bool = False) -> Fetched:
        told[url] = outside
        if "moved" not in url:
            return http_fetch(url, headers, outside=outside)
        atom = (ROOT / "tests" / "feeds" / "atom.xml").read_bytes()
        return Fetched(200, atom, url, None, None, inside=False)

    assert poll_due(sessions, NOW, fetch).failed == 0
    assert not any(told.values())
    with sessions() as session:
        assert session.get(Feed, learning).server_inside is True  # type: ignore[union-attr]
        assert session.get(Feed, moved_id).server_inside is False  # type: ignore[union-attr]
    later = NOW + timedelta(days=1)
    assert poll_due(sessions, later, fetch).polled == 2
    assert told == {feed_server.url("rss.xml"): False, "https://moved.example.com/feed.xml": True}


def test_a_feed_removed_while_it_is_fetched_is_neither_stored_nor_counted_failed(
    sessions: sessionmaker[Session],
) -> None:
    """An operator removes a feed (admin, `feeds remove`) while a poll is fetching it: its
    fetch's outcome, items or failure, belongs to nobody, and the run reports none."""
    with sessions.begin() as session:
        gone = register_feed(session, "https://gone.example.com/feed.xml", "ai", NOW).id
        failing = register_feed(session, "https://failing.example.com/feed.xml", "ai", NOW).id

    def fetch(url: str, headers: dict[str, str], *, outside: bool = False) -> Fetched:
        with sessions.begin() as session:  # removed meanwhile, as feeds remove does
            session.delete(session.get(Feed, gone if "gone" in url else failing))
        if "failing" in url:
            raise OSError("connection reset")
        return Fetched(200, (ROOT / "tests" / "feeds" / "atom.xml").read_bytes(), url, None, None)

    report = poll_due(sessions, NOW, fetch)
    assert (report.polled, report.failed, report.articles, report.errors) == (2, 0, 0, [])
    assert _article_count(sessions) == 0


def test_a_redirect_nobody_can_follow_is_one_failed_poll_not_the_end_of_the_pass(
    feed_server: FeedServer, sessions: sessionmaker[Session]
) -> None:
    """httpx refuses it with an error that is no HTTPError: it went through the poll pass,
    and in `digestd tick` ended the tick before its edition was planned."""
    feed_server.redirects["moved.xml"] = "javascript:alert(1)//x"
    with sessions.begin() as session:
        bad = register_feed(session, feed_server.url("moved.xml"), "ai", NOW).id
        good = register_feed(session, feed_server.url("rss.xml"), "ai", NOW).id
    report = poll_due(sessions, NOW)
    assert (report.polled, report.failed) == (2, 1)
    with sessions() as session:
        failed, fine = session.get(Feed, bad), session.get(Feed, good)
        assert failed is not None and failed.failures == 1 and failed.last_error
        assert fine is not None and fine.failures == 0 and fine.last_success_at == NOW


def test_a_validator_that_cannot_go_back_into_a_header_is_not_kept(
    sessions: sessionmaker[Session],
) -> None:
    """An ETag of 8-bit bytes, stored, made every later poll fail before its request went
    out (it cannot be encoded into a header), for ever: it is dropped, and one stored
    before is not sent."""
    with sessions.begin() as session:
        register_feed(session, "https://fresh.example.com/feed.xml", "ai", NOW)
        stored = register_feed(session, "https://stored.example.com/feed.xml", "ai", NOW)
        stored.etag, stored.last_modified = '"\u00c3\u00a9t\u00ffag"', "Sun, 29 Nov 2026\x01"
    sent: dict[str, dict[str, str]] = {}

    def fetch(url: str, headers: dict[str, str], *, outside: bool = False) -> Fetched:
        sent[url] = headers
        atom = (ROOT / "tests" / "feeds" / "atom.xml").read_bytes()
        return Fetched(200, atom, url, '"\u00c3\u00a9t\u00ffag"', "Sun, 29 Nov 2026 \u00e9")

    assert poll_due(sessions, NOW, fetch).failed == 0
    assert sent["https://stored.example.com/feed.xml"] == {}
    with sessions() as session:
        for feed in session.scalars(select(Feed)):
            assert (feed.etag, feed.last_modified) == (None, None), feed.url

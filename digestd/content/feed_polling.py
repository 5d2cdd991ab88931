"""Polling the due feeds into articles, safely from several workers at once, and each
feed's health (``digestd feeds list``).

Each due feed is claimed with an optimistic update: ``next_poll_at`` moves from the value
this worker read to a lease, and only the worker whose update changed the row polls it. A
worker that dies mid-poll leaves the lease, and the feed comes back when it ends (a poll
repeated, never skipped; re-polling only updates the same articles). The fetch happens
outside any transaction; the feed's items and health are then written in one
transaction of their own, so a database error (a value PostgreSQL refuses, a lost
connection) fails that feed alone and the run goes on. A bad item is rejected alone,
counted, logged, and kept in the feed's health.

Up to ``FETCHERS`` feeds are fetched at once, so a slow or hung feed holds one fetcher for
its deadline, not every feed after it (``digestd tick`` polls before it plans the
edition). What the fetches bring is written one feed at a time: on SQLite two threads
each reading then writing would fail one of them, where waiting costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.articles import ingest
from digestd.errors import first_line
from digestd.models import Feed

if TYPE_CHECKING:
    from digestd.content.documents import Undecodable
    from digestd.content.feeds import Fetched, Fetcher

log = logging.getLogger(__name__)

INTERVAL = timedelta(minutes=15)
MAX_BACKOFF = timedelta(hours=6)
LEASE = timedelta(minutes=10)  # a claimed feed returns after this if its poller died
ERROR_CHARS = 500
FETCHERS = 8  # feeds fetched at once


@dataclass
class PollReport:
    polled: int = 0
    unchanged: int = 0
    failed: int = 0
    articles: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: PollReport) -> None:
        self.polled += other.polled
        self.unchanged += other.unchanged
        self.failed += other.failed
        self.articles += other.articles
        self.rejected += other.rejected
        self.errors.extend(other.errors)

    def summary(self) -> str:
        return (
            f"feeds: {self.polled} polled ({self.unchanged} unchanged, {self.failed} failed), "
            f"{self.articles} articles stored, {self.rejected} items rejected"
        )


def poll_due(
    sessions: sessionmaker[Session],
    now: datetime,
    fetch: Fetcher | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PollReport:
    """Poll every feed due at ``now`` that no other worker has claimed, several at once.
    Once ``should_stop`` says so (SIGTERM), no further feed is claimed: those left stay due
    for the next run, and only the fetches under way finish (each within its deadline)."""
    with sessions() as session:
        due = [
            (feed_id, seen)
            for feed_id, seen in session.execute(
                select(Feed.id, Feed.next_poll_at)
                .where(Feed.next_poll_at <= now)
                .order_by(Feed.next_poll_at, Feed.id)
            )
        ]
    writing = threading.Lock()

    def poll(feed: tuple[int, datetime]) -> PollReport:
        feed_id, seen = feed
        report = PollReport()
        if not should_stop() and claim(sessions, feed_id, seen, now + LEASE):
            poll_one(sessions, feed_id, now, fetch, report, writing)
        return report

    report = PollReport()
    if not due:
        return report
    with ThreadPoolExecutor(min(FETCHERS, len(due)), thread_name_prefix="feed") as pool:
        for one in pool.map(poll, due):
            report.add(one)
    return report


def claim(sessions: sessionmaker[Session], feed_id: int, seen: datetime, lease: datetime) -> bool:
    """True when this worker moved ``next_poll_at`` from ``seen`` to ``lease``: the feed is
    its to poll. False: another worker got there first (or the feed was removed)."""
    with sessions.begin() as session:
        result = session.execute(
            update(Feed)
            .where(Feed.id == feed_id, Feed.next_poll_at == seen)
            .values(next_poll_at=lease)
            .execution_options(synchronize_session=False)
        )
        return cast(CursorResult[Any], result).rowcount == 1


@dataclass(frozen=True)
class _Request:
    url: str
    category: str
    headers: dict[str, str]
    outside: bool  # its server was on the internet when last fetched


def poll_one(
    sessions: sessionmaker[Session],
    feed_id: int,
    now: datetime,
    fetch: Fetcher | None,
    report: PollReport,
    writing: AbstractContextManager[Any] | None = None,
) -> None:
    """Fetch one claimed feed (over HTTP unless ``fetch`` is given), then store its items
    and health in one transaction, inside ``writing`` (held by one poll at a time when
    several run at once)."""
    # httpx and feedparser (~70 ms to import) load when a feed is due, not with every tick:
    # cron runs an idle `digestd tick` each minute.
    from digestd.content.feeds import FETCH_ERRORS, http_fetch

    writing = writing or nullcontext()
    with sessions() as session:
        feed = session.get(Feed, feed_id)
        if feed is None:
            return
        headers = {}
        if etag := _validator(feed.etag):  # (one stored before they were checked)
            headers["If-None-Match"] = etag
        if last_modified := _validator(feed.last_modified):
            headers["If-Modified-Since"] = last_modified
        request = _Request(feed.url, feed.category, headers, feed.server_inside is False)
    report.polled += 1
    try:
        fetched = (fetch or http_fetch)(request.url, request.headers, outside=request.outside)
        if fetched.status not in (200, 304):
            raise ValueError(f"HTTP {fetched.status}")
        with writing, sessions.begin() as session:
            _store(session, feed_id, request, fetched, now, report)
    except FETCH_ERRORS as exc:
        with writing:
            _failed(sessions, feed_id, request.url, f"{exc.__class__.__name__}: {exc}", now, report)
    except SQLAlchemyError as exc:
        problem = f"database error: {exc.__class__.__name__}: {first_line(exc)}"
        with writing:
            _failed(sessions, feed_id, request.url, problem, now, report)
    except Exception as exc:
        # One feed's surprise must not end the pass (and in `digestd tick` the edition after
        # it): a failed poll like any, with its traceback in the log.
        log.exception("feed %s: unexpected error", request.url)
        with writing:
            _failed(sessions, feed_id, request.url, f"{exc.__class__.__name__}: {exc}", now, report)


def _store(
    session: Session,
    feed_id: int,
    request: _Request,
    fetched: Fetched,
    now: datetime,
    report: PollReport,
) -> None:
    feed = session.get(Feed, feed_id)
    if feed is None:  # removed while it was being fetched
        return
    parsed = None
    if fetched.status != 304:
        from digestd.content.feeds import parse_feed  # loaded by poll_one

        parsed = parse_feed(fetched, request.url, request.category)
    record_success(session, feed, fetched, parsed, now, report)


def record_success(
    session: Session,
    feed: Feed,
    fetched: Fetched,
    parsed: tuple[list[dict[str, Any] | Undecodable], str] | None,
    now: datetime,
    report: PollReport,
) -> None:
    """A fetch of ``feed`` that worked: its items (``parsed`` by ``parse_feed``; None for a
    304) stored as articles, its health, and its next poll one interval on."""
    stored = rejected = 0
    if parsed is None:
        report.unchanged += 1
    else:
        from digestd.content.feeds import date_undated  # loaded with parse_feed

        items, title = parsed
        date_undated(session, items, now)
        result = ingest(session, enumerate(items, start=1))
        stored, rejected = result.added + result.updated, len(result.errors)
        feed.title = title or feed.title
        feed.etag, feed.last_modified = _validator(fetched.etag), _validator(fetched.last_modified)
        feed.last_item_error = str(result.errors[-1])[:ERROR_CHARS] if result.errors else None
        if result.errors:
            log.warning(
                "feed %s: %d item%s rejected, the rest stored (last: %s)",
                feed.url,
                rejected,
                "" if rejected == 1 else "s",
                feed.last_item_error,
            )
    report.articles += stored
    report.rejected += rejected
    feed.stored_last_run, feed.rejected_last_run = stored, rejected
    feed.failures, feed.last_error = 0, None
    feed.last_success_at = now
    if fetched.inside is not None and feed.server_inside is not False:
        feed.server_inside = fetched.inside  # inside may become outside, never the reverse
    feed.next_poll_at = now + INTERVAL


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified to send back, if it can be: one with bytes that are not
    ASCII or printable could not go into the next request's header, and every poll after
    would fail before it was sent, never getting the fixed one the server may have now."""
    if value is None or not value.isascii() or not value.isprintable():
        return None
    return value


def _failed(
    sessions: sessionmaker[Session],
    feed_id: int,
    url: str,
    problem: str,
    now: datetime,
    report: PollReport,
) -> None:
    """Count a failed poll on the feed and back it off (exponentially, up to MAX_BACKOFF).
    A feed removed while it was fetched failed for nobody: nothing is counted."""
    try:
        with sessions.begin() as session:
            feed = session.get(Feed, feed_id)
            if feed is None:
                return
            feed.failures += 1
            feed.last_error = problem[:ERROR_CHARS]
            delay = min(MAX_BACKOFF, INTERVAL * 2 ** min(feed.failures, 10))
            feed.next_poll_at = now + delay
            failures = feed.failures
    except SQLAlchemyError as exc:  # the database is away: the lease brings the feed back
        log.error("feed %s failed (%s), and so did recording it: %s", url, problem, first_line(exc))
    else:
        log.warning(
            "feed %s failed (%d in a row): %s; next try in %s", url, failures, problem, delay
        )
    report.failed += 1
    report.errors.append(f"{url}: {problem}")

"""Adding a feed (``digestd feeds add``, ``/admin/feeds``): one fetch that must find RSS or
Atom, then the feed registered with that fetch recorded as its first poll.

Its own module because it joins the two others: registering and parsing
(:mod:`digestd.content.feeds`) and a poll's record (:mod:`digestd.content.feed_polling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from digestd.content.feed_polling import PollReport, record_success
from digestd.content.feeds import (
    FETCH_ERRORS,
    Fetcher,
    feed_category,
    feed_url,
    http_fetch,
    is_registered,
    parse_feed,
    register_feed,
)
from digestd.errors import InputError
from digestd.models import Feed


@dataclass(frozen=True)
class Added:
    feed: Feed
    items: int  # entries the test fetch found
    stored: int  # articles stored or updated from them
    rejected: int  # entries that could not be articles


def add_feed(
    sessions: sessionmaker[Session],
    url: str,
    category: str,
    now: datetime,
    fetch: Fetcher = http_fetch,
) -> Added:
    """Fetch ``url`` once and register it if it is an RSS or Atom feed; anything else (an
    error status, a web page, garbage) is an InputError naming it, and nothing is stored.
    No transaction is open during the fetch.

    The test fetch is the feed's first poll: its items are stored with the feed and it
    counts as a success, so its health says so and its next poll is an interval on (it
    showed "last success: never" and a next poll already past, which polled the same items
    again at the next tick)."""
    url, slug = feed_url(url), feed_category(category)
    with sessions() as session:
        if is_registered(session, url):
            raise InputError(f"URL: {url!r} is already registered")
    try:
        fetched = fetch(url, {})
    except FETCH_ERRORS as exc:
        raise InputError(f"URL: cannot fetch {url}: {exc.__class__.__name__}: {exc}") from exc
    if fetched.status != 200:
        raise InputError(f"URL: {url} answered HTTP {fetched.status}, not a feed")
    try:
        items, title = parse_feed(fetched, url, slug)
    except ValueError as exc:
        raise InputError(f"URL: {url} is {exc}") from exc
    report = PollReport()
    with sessions.begin() as session:
        feed = register_feed(session, url, slug, now, title or None, fetched.inside)
        record_success(session, feed, fetched, (items, title), now, report)
    return Added(feed, len(items), report.articles, report.rejected)

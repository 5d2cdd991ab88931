"""RSS 2.0 / Atom feeds registered with a category, polled on an interval into articles.

Polite polling: conditional GET (ETag / Last-Modified) so an unchanged feed costs a 304;
items keep a stable id derived from their guid (or link), so re-polling updates instead of
duplicating. A failing feed is logged, backed off exponentially and retried; it never
stops the daemon or the other feeds.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
from calendar import timegm
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.articles import ingest
from digestd.content.categories import CATEGORIES
from digestd.errors import InputError
from digestd.models import Feed

log = logging.getLogger(__name__)

INTERVAL = timedelta(minutes=15)
MAX_BACKOFF = timedelta(hours=6)
MAX_BYTES = 5_000_000
SUMMARY_CHARS = 600
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Fetched:
    status: int
    content: bytes
    url: str  # after redirects: the base for relative links
    etag: str | None
    last_modified: str | None


Fetcher = Callable[[str, dict[str, str]], Fetched]


def http_fetch(url: str, headers: dict[str, str], timeout: float = 20.0) -> Fetched:
    """GET with conditional headers; a body larger than MAX_BYTES is refused."""
    request_headers = {"User-Agent": "digestd feed poller", **headers}
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        client.stream("GET", url, headers=request_headers) as response,
    ):
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BYTES:
                raise ValueError(f"feed larger than {MAX_BYTES} bytes")
            chunks.append(chunk)
        return Fetched(
            status=response.status_code,
            content=b"".join(chunks),
            url=str(response.url),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
        )


def add_feed(session: Session, url: str, category: str, now: datetime) -> Feed:
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # "http://[::1": an unclosed IPv6 literal
        parts = urlsplit("")
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(ord(c) <= 32 or ord(c) == 127 for c in url.strip())
    ):
        raise InputError(f"URL: expected an http(s) feed URL, got {url[:200]!r}")
    slug = category.strip().lower()
    if slug not in CATEGORIES:
        raise InputError(f"--category: unknown category {category!r}")
    feed = Feed(url=url.strip(), category=slug, next_poll_at=now, failures=0, created_at=now)
    session.add(feed)
    try:
        session.flush()
    except IntegrityError as exc:
        raise InputError(f"URL: {url!r} is already registered") from exc
    return feed


@dataclass
class PollReport:
    polled: int = 0
    unchanged: int = 0
    failed: int = 0
    articles: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


def poll_due(
    sessions: sessionmaker[Session], now: datetime, fetch: Fetcher = http_fetch
) -> PollReport:
    report = PollReport()
    with sessions() as session:
        due = list(session.scalars(select(Feed.id).where(Feed.next_poll_at <= now)))
    for feed_id in due:
        with sessions.begin() as session:
            feed = session.get(Feed, feed_id)
            if feed is not None:
                poll_one(session, feed, now, fetch, report)
    return report


def poll_one(
    session: Session, feed: Feed, now: datetime, fetch: Fetcher, report: PollReport
) -> None:
    report.polled += 1
    headers = {}
    if feed.etag:
        headers["If-None-Match"] = feed.etag
    if feed.last_modified:
        headers["If-Modified-Since"] = feed.last_modified
    try:
        fetched = fetch(feed.url, headers)
        if fetched.status == 304:
            report.unchanged += 1
        elif fetched.status != 200:
            raise ValueError(f"HTTP {fetched.status}")
        else:
            items, title = parse_feed(fetched, feed.url, feed.category, now)
            feed.title = title or feed.title
            result = ingest(session, enumerate(items, start=1))
            report.articles += result.added + result.updated
            report.rejected += len(result.errors)
            feed.etag, feed.last_modified = fetched.etag, fetched.last_modified
    except (httpx.HTTPError, ValueError, OSError) as exc:
        feed.failures += 1
        feed.last_error = f"{exc.__class__.__name__}: {exc}"[:500]
        delay = min(MAX_BACKOFF, INTERVAL * 2 ** min(feed.failures, 10))
        feed.next_poll_at = now + delay
        report.failed += 1
        report.errors.append(f"{feed.url}: {feed.last_error}")
        log.warning(
            "feed %s failed (%d in a row): %s; next try in %s",
            feed.url,
            feed.failures,
            feed.last_error,
            delay,
        )
        return
    feed.failures = 0
    feed.last_error = None
    feed.next_poll_at = now + INTERVAL


def plain(text: str | None) -> str:
    """Feed titles and summaries may carry HTML: keep only the words, entities decoded."""
    return " ".join(html.unescape(_TAG.sub(" ", text or "")).split())


def _published(entry: Any, fallback: datetime) -> datetime:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            return datetime.fromtimestamp(timegm(parsed), UTC)
    return fallback  # no date: first seen now


def parse_feed(
    fetched: Fetched, feed_url: str, category: str, now: datetime
) -> tuple[list[dict[str, Any]], str]:
    """(article dicts for :func:`articles.validate`, the feed's title)."""
    parsed = feedparser.parse(fetched.content)
    if not parsed.entries and (parsed.bozo or not parsed.version):
        problem = parsed.get("bozo_exception") or "no RSS or Atom content"
        raise ValueError(f"not a readable feed: {problem}")
    if parsed.bozo:  # feedparser's lenient parser recovered what it could
        log.info(
            "feed %s is not well-formed (%s); using the items that parse",
            feed_url,
            parsed.get("bozo_exception"),
        )
    title = plain(parsed.feed.get("title")) or (urlsplit(fetched.url).hostname or "")
    # RSS has no xml:base: readers resolve relative item links against the channel's link,
    # then the feed's own URL (Atom's xml:base is already applied by feedparser).
    base = parsed.feed.get("link") or fetched.url
    items = []
    for entry in parsed.entries:
        key = entry.get("id") or entry.get("link") or ""
        if not key:
            continue
        items.append(
            {
                "id": "feed-" + hashlib.sha256(f"{feed_url}\n{key}".encode()).hexdigest()[:32],
                "url": urljoin(base, entry.get("link") or "") if entry.get("link") else None,
                "title": plain(entry.get("title")),
                "source": title[:200],
                "published_at": _published(entry, now).isoformat(),
                "categories": [category],
                "kind": "news",
                "why_it_matters": plain(entry.get("summary"))[:SUMMARY_CHARS],
            }
        )
    return items, title

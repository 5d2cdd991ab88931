"""RSS 2.0 / Atom feeds registered with a category: fetching, parsing, registering.

Polite fetching: conditional GET (ETag / Last-Modified), so an unchanged feed costs a 304.
Items keep a stable id derived from the feed and the item's guid (or link), so re-polling
updates instead of duplicating. Polling itself (who polls which feed, and the feed's
health) is :mod:`digestd.content.feed_polling`; adding a feed, which fetches it once as its
first poll, is :mod:`digestd.content.feed_adding`.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import logging
import re
import socket
import time
from calendar import timegm
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digestd.content.categories import CATEGORIES
from digestd.content.documents import Undecodable
from digestd.content.text import showable
from digestd.errors import InputError
from digestd.models import MAX_ID, Article, Feed

log = logging.getLogger(__name__)

MAX_BYTES = 5_000_000
# A whole fetch, redirects and all: a server that trickles a byte a second never times out a
# single read, and a tick (or the daemon's poller) would wait on it without end.
FETCH_SECONDS = 30.0
SUMMARY_CHARS = 600
# An entity declared in the feed itself can be referenced a million times within MAX_BYTES
# (gigabytes once expanded); feeds have no use for one. In each encoding expat reads.
_ENTITY_DECLARATIONS = tuple(
    "<!ENTITY".encode(codec)
    for codec in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
)
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Fetched:
    status: int
    content: bytes
    url: str  # after redirects: the base for relative links
    etag: str | None
    last_modified: str | None
    inside: bool | None = None  # the feed's own server was reached inside (None: not known)


class Fetcher(Protocol):
    """What polling calls to fetch a feed (:func:`http_fetch`, or a test's stand-in).
    ``outside``: the feed's server was on the internet when last fetched, so an answer
    from an inside address is refused (:class:`RedirectGuard`)."""

    def __call__(self, url: str, headers: dict[str, str], *, outside: bool = False) -> Fetched: ...


# What a fetch that went wrong raises: the network, the HTTP layer, a refused body.
# (httpx.InvalidURL: a redirect to a Location it cannot follow, ``javascript:…`` say.)
FETCH_ERRORS = (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError)


def http_fetch(
    url: str,
    headers: dict[str, str],
    timeout: float = 10.0,
    total: float = FETCH_SECONDS,
    *,
    outside: bool = False,
) -> Fetched:
    """GET with conditional headers; a body larger than MAX_BYTES, or one that takes longer
    than ``total`` seconds to arrive, is refused, and so are the addresses
    :class:`RedirectGuard` refuses."""
    deadline = time.monotonic() + total
    request_headers = {"User-Agent": "digestd feed poller", **headers}
    guard = RedirectGuard(httpx.URL(url).host, outside=outside)
    with (
        httpx.Client(
            timeout=timeout, follow_redirects=True, event_hooks={"response": [guard]}
        ) as client,
        client.stream("GET", url, headers=request_headers) as response,
    ):
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BYTES:
                raise ValueError(f"feed larger than {MAX_BYTES} bytes")
            if time.monotonic() > deadline:
                raise ValueError(f"feed still arriving after {total:g} s")
            chunks.append(chunk)
        return Fetched(
            status=response.status_code,
            content=b"".join(chunks),
            url=str(response.url),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            inside=guard.feed_inside,
        )


def inward(host: str) -> bool:
    """Whether ``host`` is (or resolves to) an address not reachable from the internet:
    loopback, private, link-local (cloud metadata), unspecified."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False  # cannot resolve: the fetch itself will say so
    return any(_inside(address) for address in addresses)


def _inside(address: object) -> bool:
    return not ipaddress.ip_address(str(address).split("%")[0]).is_global


def _peer_inside(response: httpx.Response) -> bool | None:
    """Whether the server that sent ``response`` was reached at an inside address (None:
    unknown, e.g. a response not read from a socket)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    return _inside(peer[0]) if isinstance(peer, tuple) and peer else None


class RedirectGuard:
    """A response hook: a feed on the internet may not redirect to the inside (a
    ``Location: http://169.254.169.254/…`` would make digestd fetch, and mail out as
    articles, what only the server can reach). A feed the operator put inside may.

    Two checks, since a name can resolve one way when checked and another when connected
    to (DNS rebinding: a TTL of 0 and an attacker's name server): before a redirect is
    followed, its host's addresses; and on each response, the address the connection
    actually reached, against the first response's (the feed's own server). Names are
    looked up only when a redirect comes: most fetches have none.

    ``outside``: the feed's server was on the internet when it was last fetched. Its name
    then answering from inside is refused at the first response, before its body is read:
    a feed's server does not move inside, its name's owner (or a new one) can point it
    there. An operator whose feed did move adds it again.
    """

    def __init__(self, origin: str, *, outside: bool = False) -> None:
        self.origin = origin
        self.outside = outside
        self.feed_inside: bool | None = None  # known from the first response

    def __call__(self, response: httpx.Response) -> None:
        reached = _peer_inside(response)
        if self.feed_inside is None:
            self.feed_inside = inward(self.origin) if reached is None else reached
            if self.feed_inside and self.outside:
                raise ValueError(
                    f"the feed's server now answers from an inside address "
                    f"({response.url.host}), and was on the internet before: remove the "
                    "feed and add it again if it really moved inside"
                )
        elif reached and not self.feed_inside:
            raise ValueError(f"feed redirected to an inside address ({response.url.host})")
        # httpx calls the hook before it builds the next request: the target is read from
        # the Location header (relative: the same host, whose address was checked above).
        if not response.has_redirect_location or self.feed_inside:
            return
        try:
            target = response.url.join(response.headers["Location"]).host
        except httpx.InvalidURL:
            return  # httpx refuses to follow it, and says why
        if target and inward(target):
            raise ValueError(f"feed redirected to an inside address ({target})")


# --- registering ---------------------------------------------------------------------------


def feed_url(url: str) -> str:
    """An http(s) URL in one spelling (scheme and host in lower case, no default port, no
    ``./`` or ``../``, no fragment): "HTTP://Host:80/./feed" is the feed "http://host/feed"
    already registered. InputError naming URL otherwise."""
    text = url.strip()
    bad = InputError(f"URL: expected an http(s) feed URL, got {url[:200]!r}")
    if any(ord(c) <= 32 or ord(c) == 127 for c in text):
        raise bad
    try:
        normal = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:  # an unclosed IPv6 literal, a bad port
        raise bad from exc
    if normal.scheme not in ("http", "https") or not normal.host:
        raise bad
    # The fragment never reaches the server: with it, one feed could be registered twice.
    return str(normal.copy_with(fragment=None, path=normal.path or "/"))


def is_registered(session: Session, url: str) -> bool:
    """Whether ``url`` is a feed already, however that one was spelt when it was added."""
    for stored in session.scalars(select(Feed.url)):
        try:
            if feed_url(stored) == url:
                return True
        except InputError:
            continue
    return False


def feed_category(category: str) -> str:
    slug = category.strip().lower()
    if slug not in CATEGORIES:
        raise InputError(f"--category: unknown category {category!r}")
    return slug


def register_feed(
    session: Session,
    url: str,
    category: str,
    now: datetime,
    title: str | None = None,
    server_inside: bool | None = None,
) -> Feed:
    """Store a feed, first polled at ``now`` (no fetch here: ``feed_adding.add_feed`` fetches
    it first, and records that fetch as its first poll); ``server_inside``: where the test
    fetch reached its server (None: not fetched)."""
    url, slug = feed_url(url), feed_category(category)
    if is_registered(session, url):
        raise InputError(f"URL: {url!r} is already registered")
    feed = Feed(
        url=url,
        category=slug,
        title=title,
        next_poll_at=now,
        failures=0,
        created_at=now,
        server_inside=server_inside,
    )
    session.add(feed)
    try:
        session.flush()
    except IntegrityError as exc:
        raise InputError(f"URL: {url!r} is already registered") from exc
    return feed


def remove_feed(session: Session, feed_id: int) -> Feed | None:
    """Stop polling a feed; the articles it brought stay. None when there is no such feed."""
    feed = session.get(Feed, feed_id) if 0 < feed_id <= MAX_ID else None
    if feed is not None:
        session.delete(feed)
    return feed


# --- parsing -------------------------------------------------------------------------------


def plain(text: str | None) -> str:
    """Feed titles and summaries may carry HTML: keep only the words, entities decoded, and
    none of the characters no email can show (``&#1;`` decodes to one)."""
    return " ".join(showable(html.unescape(_TAG.sub(" ", text or ""))).split())


def _published(entry: Any) -> datetime | None:
    """The item's own date; None when it has none. ValueError for one no calendar has
    (a blog's ``0000-00-00``)."""
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime.fromtimestamp(timegm(parsed), UTC)
            except (OverflowError, OSError) as exc:
                raise ValueError(str(exc)) from exc
    return None


def date_undated(
    session: Session, items: list[dict[str, Any] | Undecodable], now: datetime
) -> None:
    """Items without a date of their own are dated when first seen (``now``), and keep that
    date on later polls: re-dated at each poll, one would lead every digest for months."""
    undated = [i for i in items if isinstance(i, dict) and i["published_at"] is None]
    if not undated:
        return
    seen = dict(
        session.execute(
            select(Article.id, Article.published_at).where(
                Article.id.in_([i["id"] for i in undated])
            )
        ).all()
    )
    for item in undated:
        item["published_at"] = seen.get(item["id"], now).isoformat()


def parse_feed(
    fetched: Fetched, feed_url: str, category: str
) -> tuple[list[dict[str, Any] | Undecodable], str]:
    """(one article dict for :func:`articles.validate` per entry, or why it cannot be one;
    the feed's title). ValueError when the content is no feed at all. An undated item's
    ``published_at`` is None: :func:`date_undated` fills it in."""
    if any(declaration in fetched.content for declaration in _ENTITY_DECLARATIONS):
        raise ValueError("not read: the feed declares XML entities (<!ENTITY)")
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
    # Bounded: a feed's entities can expand a few hundred bytes to a megabyte of title.
    title = (plain(parsed.feed.get("title")) or (urlsplit(fetched.url).hostname or ""))[:200]
    # RSS has no xml:base: readers resolve relative item links against the channel's link,
    # then the feed's own URL (Atom's xml:base is already applied by feedparser).
    base = parsed.feed.get("link") or fetched.url
    items: list[dict[str, Any] | Undecodable] = []
    for entry in parsed.entries:
        key = entry.get("id") or entry.get("link") or ""
        if not key:
            items.append(Undecodable("item", "has neither a guid/id nor a link"))
            continue
        try:
            published = _published(entry)
        except ValueError as exc:
            items.append(Undecodable("published_at", f"is no date: {exc}"))
            continue
        items.append(
            {
                "id": "feed-" + hashlib.sha256(f"{feed_url}\n{key}".encode()).hexdigest()[:32],
                "url": urljoin(base, entry.get("link") or "") if entry.get("link") else None,
                "title": plain(entry.get("title")),
                "source": title,
                "published_at": published.isoformat() if published else None,
                "categories": [category],
                "kind": "news",
                # The publisher's summary, not an editor's "why it matters" (never labelled so).
                "summary": plain(entry.get("summary"))[:SUMMARY_CHARS],
            }
        )
    return items, title

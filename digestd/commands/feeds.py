"""``digestd feeds add|list|remove``: the RSS/Atom feeds polled for articles."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sqlalchemy import select

from digestd.commands.common import database
from digestd.config import Settings
from digestd.errors import DigestdError
from digestd.models import Feed

COLUMNS = ("id", "category", "state", "last success", "stored", "rejected", "url", "problem")


def add(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.content.feed_adding import add_feed  # httpx and feedparser: for add only
    from digestd.content.feed_polling import INTERVAL

    with database(settings) as sessions:
        added = add_feed(sessions, args.url, args.category, datetime.now(UTC))
    feed = added.feed
    minutes = int(INTERVAL.total_seconds() // 60)
    print(
        f"feed {feed.id} registered for {feed.category}: {feed.title or feed.url} "
        f"({added.items} items in it now, {added.stored} stored as articles; polled every "
        f"{minutes} minutes by digestd run or digestd tick)"
    )
    if feed.server_inside:
        print("its server is inside this network: it may redirect to other addresses inside")
    return 0


def list_(settings: Settings, args: argparse.Namespace) -> int:
    """One tab-separated line per feed, under a header: its health at a glance."""
    with database(settings) as sessions, sessions() as session:
        print("\t".join(COLUMNS))  # once the database is known to be digestd's
        for feed in session.scalars(select(Feed).order_by(Feed.id)):
            print("\t".join(_health(feed)))
    return 0


def _health(feed: Feed) -> list[str]:
    if feed.failures:
        state, problem = f"failing ({feed.failures} in a row)", feed.last_error or ""
    elif feed.last_success_at is None:
        state, problem = "not polled yet", ""
    else:
        state, problem = "ok", feed.last_item_error or ""
    success = feed.last_success_at.strftime("%Y-%m-%d %H:%M UTC") if feed.last_success_at else "-"
    return [
        str(feed.id),
        feed.category,
        state,
        success,
        str(feed.stored_last_run),
        str(feed.rejected_last_run),
        feed.url,
        " ".join(problem.split()) or "-",
    ]


def remove(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.content.feeds import remove_feed

    with database(settings) as sessions, sessions.begin() as session:
        feed = remove_feed(session, args.id)
        if feed is None:
            raise DigestdError(f"no feed {args.id} (digestd feeds list shows them)")
        url = feed.url
    print(f"feed {args.id} removed: {url} is no longer polled (its articles stay)")
    return 0

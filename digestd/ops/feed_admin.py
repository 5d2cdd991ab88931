"""What the admin page reads and does with feeds beyond adding and removing one
(:func:`~digestd.content.feed_adding.add_feed`, :func:`~digestd.content.feeds.remove_feed`):
each feed's health, and polling one now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digestd.content.feed_polling import LEASE, PollReport, claim, poll_one
from digestd.content.feeds import Fetcher, http_fetch
from digestd.models import Feed


@dataclass(frozen=True)
class FeedHealth:
    id: int
    url: str
    title: str | None
    category: str
    next_poll_at: datetime
    last_success_at: datetime | None
    failures: int  # failed polls in a row
    last_error: str | None
    stored_last_run: int
    rejected_last_run: int
    last_item_error: str | None

    @property
    def state(self) -> str:
        """``ok``, ``failing`` or ``new`` (never polled yet)."""
        if self.failures:
            return "failing"
        return "ok" if self.last_success_at else "new"


def health(session: Session) -> list[FeedHealth]:
    """Every feed, by category then id."""
    return [
        FeedHealth(
            f.id,
            f.url,
            f.title,
            f.category,
            f.next_poll_at,
            f.last_success_at,
            f.failures,
            f.last_error,
            f.stored_last_run,
            f.rejected_last_run,
            f.last_item_error,
        )
        for f in session.scalars(select(Feed).order_by(Feed.category, Feed.id))
    ]


def poll_now(
    sessions: sessionmaker[Session], feed_id: int, now: datetime, fetch: Fetcher = http_fetch
) -> PollReport | None:
    """Poll one feed at once, due or not. It is claimed as the daemon claims a due feed, so
    two clicks at once poll it once (the other's report polled nothing); a poll of the
    daemon's at the same moment only updates the same articles. None: no such feed."""
    with sessions() as session:
        seen = session.scalar(select(Feed.next_poll_at).where(Feed.id == feed_id))
    if seen is None:
        return None
    report = PollReport()
    if claim(sessions, feed_id, seen, now + LEASE):
        poll_one(sessions, feed_id, now, fetch, report)
    return report

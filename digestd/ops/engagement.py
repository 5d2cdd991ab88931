"""What the digests sold (SPEC §11): per edition and per article, sent, failed, bounced,
unsubscribed, clicks, unique clickers and click-through rate; the week's top stories; clicks
per day for the charts.

*Clicks* are the clicks that looked like a person's (a link scanner's burst is counted
apart, as ``scanner``); *unique clickers* counts each email once (per article: each email
that clicked it); the click-through rate is unique clickers over emails sent. Every figure
is read through one edition's rows or one window of ``clicks.clicked_at``, never the whole
history.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Integer, Select, cast, func, select
from sqlalchemy.orm import Session

from digestd.models import (
    Article,
    BounceEvent,
    Click,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestLink,
    Edition,
    Subscriber,
    SubscriberStatus,
)
from digestd.ops.activity import utc_day
from digestd.readers.bounce_policy import BOUNCES

TOP_STORIES = 10


@dataclass
class Tally:
    clicks: int = 0  # clicks that looked like a person's
    unique: int = 0  # emails that clicked
    scanner: int = 0  # clicks in a link scanner's burst


def rate(unique: int, sent: int) -> float | None:
    """Click-through rate: unique clickers over emails sent (None with nothing sent)."""
    return round(unique / sent, 4) if sent else None


@dataclass
class StoryStats:
    """One article's figures in an edition (or in the week's top stories)."""

    article_id: str
    title: str
    url: str
    category: str
    source: str
    sent: int = 0  # emails sent that carried it
    tally: Tally = field(default_factory=Tally)

    @property
    def click_through(self) -> float | None:
        return rate(self.tally.unique, self.sent)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.article_id,
            "title": self.title,
            "url": self.url,
            "category": self.category,
            "source": self.source,
            "sent": self.sent,
            "clicks": self.tally.clicks,
            "unique_clickers": self.tally.unique,
            "scanner_clicks": self.tally.scanner,
            "click_through_rate": self.click_through,
        }


@dataclass
class EditionStats:
    id: int
    kind: str
    period: str
    sent: int = 0
    failed: int = 0
    bounced: int = 0  # its emails' bounces and complaints in the ledger (BOUNCES)
    unsubscribed: int = 0  # readers sent it who unsubscribed after it reached them
    tally: Tally = field(default_factory=Tally)
    stories: list[StoryStats] = field(default_factory=list)  # most clicked first

    @property
    def click_through(self) -> float | None:
        return rate(self.tally.unique, self.sent)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "period": self.period,
            "sent": self.sent,
            "failed": self.failed,
            "bounced": self.bounced,
            "unsubscribed": self.unsubscribed,
            "clicks": self.tally.clicks,
            "unique_clickers": self.tally.unique,
            "scanner_clicks": self.tally.scanner,
            "click_through_rate": self.click_through,
            "articles": [story.as_json() for story in self.stories],
        }


def _tallies(statement: Select[Any]) -> Select[Any]:
    """``statement`` (grouped) with clicks, unique clickers and scanner clicks."""
    person = cast(~Click.scanner, Integer)
    return statement.add_columns(
        func.coalesce(func.sum(person), 0),
        func.coalesce(func.sum(cast(Click.first_of_article, Integer)), 0),
        func.coalesce(func.sum(cast(Click.first_of_edition, Integer)), 0),
        func.coalesce(func.sum(cast(Click.scanner, Integer)), 0),
    )


def editions(session: Session, ids: list[int]) -> list[EditionStats]:
    """The totals of these editions (no per-article rows), in the order given."""
    found = {
        e.id: EditionStats(e.id, e.kind, e.period)
        for e in session.scalars(select(Edition).where(Edition.id.in_(ids)))
    }
    for edition_id, status, n in session.execute(
        select(Delivery.edition_id, Delivery.status, func.count())
        .where(Delivery.edition_id.in_(found), Delivery.status.in_(("sent", "failed")))
        .group_by(Delivery.edition_id, Delivery.status)
    ):
        setattr(found[edition_id], str(status), int(n))
    for edition_id, n in session.execute(
        select(Delivery.edition_id, func.count())
        .join(BounceEvent, BounceEvent.delivery_id == Delivery.id)
        .where(Delivery.edition_id.in_(found), BounceEvent.kind.in_(BOUNCES))
        .group_by(Delivery.edition_id)
    ):
        found[edition_id].bounced = int(n)
    for edition_id, n in session.execute(
        select(Delivery.edition_id, func.count())
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(
            Delivery.edition_id.in_(found),
            Delivery.status == DeliveryStatus.SENT,
            Subscriber.status == SubscriberStatus.UNSUBSCRIBED,
            Subscriber.unsubscribed_at >= Delivery.sent_at,
        )
        .group_by(Delivery.edition_id)
    ):
        found[edition_id].unsubscribed = int(n)
    statement = _tallies(select(Click.edition_id).where(Click.edition_id.in_(found)))
    for edition_id, clicks, _, unique, scanner in session.execute(
        statement.group_by(Click.edition_id)
    ):
        found[edition_id].tally = Tally(int(clicks), int(unique), int(scanner))
    return [found[i] for i in ids if i in found]


def recent_editions(session: Session, limit: int = 30) -> list[EditionStats]:
    """The newest ``limit`` editions with their totals, newest first."""
    ids = list(session.scalars(select(Edition.id).order_by(Edition.id.desc()).limit(limit)))
    return editions(session, ids)


def edition(session: Session, edition_id: int) -> EditionStats | None:
    """One edition with a row per article it carried, most clicked first."""
    found = editions(session, [edition_id])
    if not found:
        return None
    stats = found[0]
    sent, shown = _carried(session, {edition_id}, None)
    tallies = _story_tallies(session, Click.edition_id == edition_id)
    stats.stories = _stories(session, sent, shown, tallies)
    return stats


def _carried(
    session: Session, edition_ids: set[int], only: dict[str, set[int]] | None
) -> tuple[Counter[str], dict[str, tuple[str, str]]]:
    """How many emails of these editions carried each article (``only``: just these
    articles, each counted in its own editions), and the category and source it showed."""
    sent_by_digest = {
        digest_id: int(n)
        for digest_id, n in session.execute(
            select(Delivery.digest_id, func.count())
            .where(Delivery.edition_id.in_(edition_ids), Delivery.status == DeliveryStatus.SENT)
            .group_by(Delivery.digest_id)
        )
    }
    statement = (
        select(
            Digest.edition_id,
            DigestLink.digest_id,
            DigestLink.article_id,
            DigestLink.category,
            DigestLink.source,
        )
        .join(Digest, Digest.id == DigestLink.digest_id)
        .where(Digest.edition_id.in_(edition_ids))
    )
    if only is not None:
        statement = statement.where(DigestLink.article_id.in_(list(only)))
    sent: Counter[str] = Counter()
    shown: dict[str, tuple[str, str]] = {}
    for edition_id, digest_id, article_id, category, source in session.execute(statement):
        if only is not None and edition_id not in only[article_id]:
            continue
        sent[article_id] += int(sent_by_digest.get(digest_id, 0))
        shown.setdefault(article_id, (category, source))
    return sent, shown


def _story_tallies(session: Session, *where: Any) -> dict[str, Tally]:
    statement = _tallies(select(Click.article_id).where(*where)).group_by(Click.article_id)
    return {
        article_id: Tally(int(clicks), int(unique), int(scanner))
        for article_id, clicks, unique, _, scanner in session.execute(statement)
    }


def _stories(
    session: Session,
    sent: Counter[str],
    shown: dict[str, tuple[str, str]],
    tallies: dict[str, Tally],
) -> list[StoryStats]:
    ids = set(sent) | set(tallies)
    articles = {
        a.id: a
        for a in session.execute(
            select(Article.id, Article.title, Article.url, Article.source).where(
                Article.id.in_(ids)
            )
        )
    }
    stories = []
    for article_id in ids:
        article = articles.get(article_id)
        category, source = shown.get(article_id, ("", article.source if article else ""))
        stories.append(
            StoryStats(
                article_id,
                article.title if article else article_id,
                article.url if article else "",
                category,
                source,
                sent[article_id],
                tallies.get(article_id, Tally()),
            )
        )
    stories.sort(key=lambda s: (-s.tally.unique, -s.tally.clicks, -s.sent, s.article_id))
    return stories


def top_stories(
    session: Session, now: datetime, days: int = 7, limit: int = TOP_STORIES
) -> list[StoryStats]:
    """The stories with the most unique clickers over the last ``days``, with how many
    emails carried them in the editions those clicks came from."""
    since = now - timedelta(days=days)
    tallies = _story_tallies(session, Click.clicked_at >= since, Click.clicked_at <= now)
    best = sorted(tallies, key=lambda a: (-tallies[a].unique, -tallies[a].clicks, a))[:limit]
    editions_of: dict[str, set[int]] = defaultdict(set)
    for article_id, edition_id in session.execute(
        select(Click.article_id, Click.edition_id)
        .where(Click.clicked_at >= since, Click.clicked_at <= now, Click.article_id.in_(best))
        .distinct()
    ):
        editions_of[article_id].add(edition_id)
    sent, shown = _carried(session, set().union(*editions_of.values()), editions_of)
    stories = _stories(session, sent, shown, {a: tallies[a] for a in best})
    return stories[:limit]


@dataclass(frozen=True)
class ClickDays:
    days: list[date]  # oldest first, UTC days
    clicks: list[int]
    clickers: list[int]  # emails whose first counted click fell that day
    scanner: list[int]


def click_days(session: Session, now: datetime, days: int = 30) -> ClickDays:
    """Clicks per UTC day over the last ``days`` (today's partial day included)."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=UTC)
    day = utc_day(Click.clicked_at)
    rows = session.execute(
        _tallies(select(day)).where(Click.clicked_at >= start).group_by(day)
    ).all()
    found = {date.fromisoformat(str(d)): row for d, *row in rows}
    calendar = [first + timedelta(days=i) for i in range(days)]

    def column(index: int) -> list[int]:
        return [int(found[d][index]) if d in found else 0 for d in calendar]

    return ClickDays(calendar, column(0), column(2), column(3))

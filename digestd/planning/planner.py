"""Enqueue every due edition: who is due, what goes into their digest, one queue row each.

``Subscriber.next_daily_at``/``next_weekly_at`` hold the next local send instant, so "who
is due" is one indexed query. For each due subscriber the most recent slot is taken: within
``DIGESTD_CATCHUP_HOURS`` it is queued, later it is recorded as skipped (never sent a day
late). The deliveries' unique (subscriber, edition) key is the exactly-once guard: a second
worker, a restart or a clock jumping back inserts nothing new (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from digestd.bulk import among
from digestd.config import Settings
from digestd.content.categories import CATEGORIES
from digestd.db import insert_ignoring_conflicts
from digestd.models import (
    Article,
    ArticleCategory,
    Delivery,
    DeliveryStatus,
    Digest,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
)
from digestd.planning.schedule import Slot, content_window, latest_slot, next_slot
from digestd.planning.selection import HALF_LIFE_HOURS, Candidate, order, pick

BATCH = 1000
# A daily never repeats an article from an earlier daily; content windows are 24 h, so
# looking a few days back covers catch-ups and timezone changes.
REPEAT_LOOKBACK = timedelta(days=8)
SITE_ORDER = {slug: i for i, slug in enumerate(CATEGORIES)}


@dataclass
class EnqueueReport:
    queued: Counter[str] = field(default_factory=Counter)
    empty: int = 0
    late: int = 0


@dataclass(frozen=True)
class Policy:
    """The parts of Settings that decide what is due and what goes in."""

    daily_time: time
    weekly_time: time
    catchup: timedelta
    daily_limit: int
    weekly_limit: int
    per_source: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            daily_time=settings.daily_time,
            weekly_time=settings.weekly_time,
            catchup=timedelta(hours=settings.catchup_hours),
            daily_limit=settings.daily_limit,
            weekly_limit=settings.weekly_limit,
            per_source=settings.per_source_limit,
        )

    def send_time(self, kind: EditionKind) -> time:
        return self.daily_time if kind is EditionKind.DAILY else self.weekly_time

    def limit(self, kind: EditionKind) -> int:
        return self.daily_limit if kind is EditionKind.DAILY else self.weekly_limit


def enqueue_due(sessions: sessionmaker[Session], policy: Policy, now: datetime) -> EnqueueReport:
    report = EnqueueReport()
    for kind in EditionKind:
        planner = _Planner(kind, policy, now)
        while True:
            with sessions.begin() as session:
                if not planner.plan_batch(session, report):
                    break
    return report


def enqueue_now(
    sessions: sessionmaker[Session],
    policy: Policy,
    kind: EditionKind,
    subscriber_ids: list[int],
    now: datetime,
) -> EnqueueReport:
    """Queue an edition for these subscribers as of ``now`` instead of their send time
    (operator's "send now", the demo). Still one per local date: a reader who already had
    today's edition gets nothing more."""
    report = EnqueueReport()
    planner = _Planner(kind, policy, now, on_demand=True)
    for start in range(0, len(subscriber_ids), BATCH):
        with sessions.begin() as session:
            rows = session.execute(
                select(Subscriber.id, Subscriber.timezone).where(
                    Subscriber.id.in_(subscriber_ids[start : start + BATCH]),
                    Subscriber.status == SubscriberStatus.ACTIVE,
                )
            ).all()
            planner.plan(session, [(r.id, r.timezone) for r in rows], report)
    return report


def preview_layout(
    session: Session,
    policy: Policy,
    kind: EditionKind,
    categories: list[str],
    now: datetime,
    timezone: str,
) -> tuple[Slot, dict[str, Any] | None]:
    """What a reader of ``categories`` would get as of ``now``; reads only, writes nothing."""
    planner = _Planner(kind, policy, now, on_demand=True)
    slot = planner.slot_for(ZoneInfo(timezone))
    ordered = sorted(categories, key=SITE_ORDER.__getitem__)
    chosen = pick(
        planner.ranked_for(session, slot),
        frozenset(ordered),
        limit=policy.limit(kind),
        per_source=policy.per_source,
    )
    return slot, layout_of(kind, chosen, ordered) if chosen else None


def layout_of(kind: EditionKind, chosen: list[Candidate], categories: list[str]) -> dict[str, Any]:
    """The digest's structure: the daily is one list; the weekly leads with the week's top
    story and groups the rest by the reader's categories (in the site's order)."""
    chosen_set = set(categories)

    def shown_category(candidate: Candidate) -> str:
        return min((c for c in candidate.categories if c in chosen_set), key=SITE_ORDER.__getitem__)

    if kind is EditionKind.DAILY:
        sections: list[dict[str, Any]] = [
            {"category": None, "articles": [[c.id, shown_category(c)] for c in chosen]}
        ]
    else:
        lead, rest = chosen[0], chosen[1:]
        grouped: dict[str, list[list[str]]] = defaultdict(list)
        for c in rest:
            grouped[shown_category(c)].append([c.id, shown_category(c)])
        sections = [{"lead": True, "category": None, "articles": [[lead.id, shown_category(lead)]]}]
        sections += [
            {"category": slug, "articles": grouped[slug]}
            for slug in sorted(grouped, key=SITE_ORDER.__getitem__)
        ]
    return {"categories": categories, "sections": sections}


def article_ids(layout: dict[str, Any]) -> list[str]:
    return [article_id for s in layout["sections"] for article_id, _ in s["articles"]]


class _Planner:
    """Plans one kind of edition in batches, caching what subscribers share (windows, digests)."""

    def __init__(
        self, kind: EditionKind, policy: Policy, now: datetime, *, on_demand: bool = False
    ) -> None:
        self.kind = kind
        self.policy = policy
        self.now = now
        self.on_demand = on_demand
        self.column = (
            Subscriber.next_daily_at if kind is EditionKind.DAILY else Subscriber.next_weekly_at
        )
        self.ranked: dict[datetime, list[Candidate]] = {}
        self.editions: dict[str, int] = {}
        self.digests: dict[tuple[int, str], int] = {}
        self.digest_articles: dict[int, frozenset[str]] = {}
        self.recent_dailies: list[int] | None = None
        self.after: tuple[datetime | None, int] | None = None  # the last reader planned
        # Per zone, the slot and the one after it: the same for every reader of a zone.
        self.zone_slots: dict[str, tuple[Slot, datetime]] = {}
        # (chosen article ids, categories) -> (layout, content key): hashing once per combo.
        self.layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[dict[str, Any], str]] = {}
        self.pending: dict[tuple[int, str], dict[str, Any]] = {}  # digests not inserted yet

    def plan_batch(self, session: Session, report: EnqueueReport) -> bool:
        query = (
            select(Subscriber.id, Subscriber.timezone, self.column)
            .where(Subscriber.status == SubscriberStatus.ACTIVE, self.column <= self.now)
            .order_by(self.column, Subscriber.id)
            .limit(BATCH)
        )
        if self.after is not None:
            # Past the batches planned already. Their readers are no longer due, but the
            # index entries of their old send instants stay until a vacuum: starting from
            # the beginning would step over all of them again, batch after batch.
            at, subscriber_id = self.after
            query = query.where(
                self.column >= at, tuple_(self.column, Subscriber.id) > tuple_(at, subscriber_id)
            )
        due = session.execute(query).all()
        if not due:
            return False
        self.after = (due[-1][2], due[-1].id)
        self.plan(session, [(row.id, row.timezone) for row in due], report)
        return True

    def slot_for(self, zone: ZoneInfo) -> Slot:
        if self.on_demand:
            return Slot(self.kind, self.now.astimezone(zone).date(), self.now)
        return latest_slot(self.kind, self.now, zone, self.policy.send_time(self.kind))

    def plan(
        self, session: Session, subscribers: list[tuple[int, str]], report: EnqueueReport
    ) -> None:
        ids = [subscriber_id for subscriber_id, _ in subscribers]
        categories = self._categories(session, ids)
        already_sent = self._already_sent(session, ids) if self.kind is EditionKind.DAILY else {}
        deliveries: list[dict[str, Any]] = []
        next_due: list[dict[str, Any]] = []
        for subscriber_id, tz_name in subscribers:
            slot, following = self._zone_slots(tz_name)
            next_due.append({"sid": subscriber_id, "next": following})
            row = self._delivery(
                session,
                subscriber_id,
                slot,
                categories.get(subscriber_id, []),
                already_sent.get(subscriber_id, frozenset()),
                report,
            )
            deliveries.append(row)
        self._insert_pending_digests(session)
        for row in deliveries:
            key = row.pop("digest_key", None)
            if key is not None:
                row["digest_id"] = self.digests[key]
        deliveries.sort(key=lambda row: row["digest_id"] or 0)
        insert_ignoring_conflicts(
            session, Delivery.__table__, deliveries, ["subscriber_id", "edition_id"]
        )
        if self.on_demand:
            return  # the regular schedule is left as it was
        # Readers of one zone share their next send instant: one UPDATE per zone in the
        # batch, not one per reader (a statement per row is slow on PostgreSQL).
        by_instant: dict[datetime, list[int]] = defaultdict(list)
        for row in next_due:
            by_instant[row["next"]].append(row["sid"])
        for instant, ids in by_instant.items():
            session.execute(
                update(Subscriber)
                .where(among(session, Subscriber.id, ids))
                .values({self.column.key: instant})
                .execution_options(synchronize_session=False)
            )

    def _delivery(
        self,
        session: Session,
        subscriber_id: int,
        slot: Slot,
        categories: list[str],
        exclude: frozenset[str],
        report: EnqueueReport,
    ) -> dict[str, Any]:
        edition_id = self._edition(session, slot)
        row: dict[str, Any] = {
            "subscriber_id": subscriber_id,
            "edition_id": edition_id,
            "digest_id": None,
            "status": DeliveryStatus.QUEUED,
            "due_at": slot.at,
            "next_attempt_at": self.now,
            "attempts": 0,
            "created_at": self.now,
            "last_error": None,
        }
        if not self.on_demand and self.now - slot.at > self.policy.catchup:
            report.late += 1
            row.update(
                status=DeliveryStatus.SKIPPED,
                last_error=f"missed: due {slot.at:%Y-%m-%d %H:%M}Z, beyond the catch-up window",
            )
            return row
        chosen = pick(
            self.ranked_for(session, slot),
            frozenset(categories),
            limit=self.policy.limit(self.kind),
            per_source=self.policy.per_source,
            exclude=exclude,
        )
        if not chosen:
            report.empty += 1
            row.update(status=DeliveryStatus.SKIPPED, last_error="nothing new to send")
            return row
        row["digest_key"] = self._digest_key(edition_id, chosen, categories)
        report.queued[self.kind] += 1
        return row

    def _zone_slots(self, tz_name: str) -> tuple[Slot, datetime]:
        found = self.zone_slots.get(tz_name)
        if found is None:
            zone = ZoneInfo(tz_name)
            slot = self.slot_for(zone)
            following = next_slot(
                self.kind, max(slot.at, self.now), zone, self.policy.send_time(self.kind)
            )
            found = self.zone_slots[tz_name] = (slot, following.at)
        return found

    def _digest_key(
        self, edition_id: int, chosen: list[Candidate], categories: list[str]
    ) -> tuple[int, str]:
        """The digest's (edition, content key); new digests wait in ``pending`` so a batch
        inserts them with one statement instead of two round trips each."""
        combo = (tuple(c.id for c in chosen), tuple(categories))
        known = self.layouts.get(combo)
        if known is None:
            layout = layout_of(self.kind, chosen, categories)
            key = hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()
            known = self.layouts[combo] = (layout, key)
        layout, key = known
        if (edition_id, key) not in self.digests:
            self.pending[(edition_id, key)] = layout
        return edition_id, key

    def _insert_pending_digests(self, session: Session) -> None:
        if not self.pending:
            return
        insert_ignoring_conflicts(
            session,
            Digest.__table__,
            [
                {"edition_id": e, "content_key": k, "layout": layout, "created_at": self.now}
                for (e, k), layout in self.pending.items()
            ],
            ["edition_id", "content_key"],
        )
        by_edition: dict[int, list[str]] = defaultdict(list)
        for edition_id, key in self.pending:
            by_edition[edition_id].append(key)
        for edition_id, keys in by_edition.items():
            for start in range(0, len(keys), 500):
                rows = session.execute(
                    select(Digest.id, Digest.content_key).where(
                        Digest.edition_id == edition_id,
                        Digest.content_key.in_(keys[start : start + 500]),
                    )
                )
                for digest_id, key in rows:
                    self.digests[(edition_id, key)] = digest_id
        self.pending.clear()

    def _categories(self, session: Session, ids: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = defaultdict(list)
        rows = session.execute(
            select(SubscriberCategory.subscriber_id, SubscriberCategory.category).where(
                among(session, SubscriberCategory.subscriber_id, ids)
            )
        )
        for subscriber_id, category in rows:
            found[subscriber_id].append(category)
        return {sid: sorted(cats, key=SITE_ORDER.__getitem__) for sid, cats in found.items()}

    def _already_sent(self, session: Session, ids: list[int]) -> dict[int, frozenset[str]]:
        earlier = self._recent_dailies(session)
        if not earlier:
            return {}
        # By (subscriber, edition) and no join: the unique key's index answers it whatever
        # the statistics say. Joining editions let PostgreSQL pick a scan of the editions'
        # rows while this edition's rows were being inserted (stale statistics), 0.5 s a batch.
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.digest_id).where(
                among(session, Delivery.subscriber_id, ids),
                Delivery.edition_id.in_(earlier),
                Delivery.digest_id.is_not(None),
                Delivery.status.in_(
                    [DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.SENT]
                ),
                Delivery.due_at >= self.now - REPEAT_LOOKBACK,
            )
        ).all()
        missing = {digest_id for _, digest_id in rows if digest_id not in self.digest_articles}
        if missing:
            for digest_id, layout in session.execute(
                select(Digest.id, Digest.layout).where(Digest.id.in_(missing))
            ):
                self.digest_articles[digest_id] = frozenset(article_ids(layout))
        sent: dict[int, set[str]] = defaultdict(set)
        for subscriber_id, digest_id in rows:
            if digest_id is not None:
                sent[subscriber_id] |= self.digest_articles[digest_id]
        return {sid: frozenset(articles) for sid, articles in sent.items()}

    def _recent_dailies(self, session: Session) -> list[int]:
        """Daily editions that can hold a reader's earlier daily, looked up once a run.

        Periods are local dates: a day of margin covers zones ahead of UTC. An edition this
        run queues into may be among them; a reader's row in it is never earlier than itself
        (one row per reader and edition), so that is harmless.
        """
        if self.recent_dailies is None:
            oldest = (self.now - REPEAT_LOOKBACK - timedelta(days=1)).date().isoformat()
            self.recent_dailies = list(
                session.scalars(
                    select(Edition.id).where(
                        Edition.kind == EditionKind.DAILY, Edition.period >= oldest
                    )
                )
            )
        return self.recent_dailies

    def ranked_for(self, session: Session, slot: Slot) -> list[Candidate]:
        if slot.at not in self.ranked:
            start, end = content_window(self.kind, slot)
            self.ranked[slot.at] = order(
                _candidates(session, start, end), slot.at, HALF_LIFE_HOURS[self.kind]
            )
        return self.ranked[slot.at]

    def _edition(self, session: Session, slot: Slot) -> int:
        if slot.period not in self.editions:
            insert_ignoring_conflicts(
                session,
                Edition.__table__,
                [{"kind": self.kind, "period": slot.period, "created_at": self.now}],
                ["kind", "period"],
            )
            self.editions[slot.period] = session.scalars(
                select(Edition.id).where(Edition.kind == self.kind, Edition.period == slot.period)
            ).one()
        return self.editions[slot.period]


def _candidates(session: Session, start: datetime, end: datetime) -> Iterable[Candidate]:
    rows = session.execute(
        select(
            Article.id,
            Article.source,
            Article.published_at,
            Article.score,
            Article.title,
            ArticleCategory.category,
        )
        .join(ArticleCategory, ArticleCategory.article_id == Article.id)
        .where(and_(Article.published_at >= start, Article.published_at < end))
    ).all()
    merged: dict[str, tuple[Any, set[str]]] = {}
    for article_id, source, published_at, score, title, category in rows:
        merged.setdefault(article_id, ((source, published_at, score, title), set()))[1].add(
            category
        )
    return [
        Candidate(article_id, source, published_at, score, frozenset(cats), title)
        for article_id, ((source, published_at, score, title), cats) in merged.items()
    ]

"""Plan every due edition: who is due, what goes into their digest, one queue row each.

``Subscriber.next_daily_at``/``next_weekly_at`` hold the next local send instant, so "who
is due" is one indexed query. For each due subscriber the most recent slot is taken: within
``DIGESTD_CATCHUP_HOURS`` it is queued, later it is recorded as skipped (never sent a day
late). The deliveries' unique (subscriber, edition) key is the exactly-once guard: a second
worker, a restart or a clock jumping back inserts nothing new (``ON CONFLICT DO NOTHING``).

A batch of readers is planned in two steps: first everything is decided from reads alone
(slots, selections, layouts), then one short run of writes creates the editions and the
digests it needs (each new digest rendered once, see :mod:`digestd.planning.digests`),
the queue rows and the readers' next send instants, and commits.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select, tuple_, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from digestd.bulk import among
from digestd.db import insert_ignoring_conflicts
from digestd.mail.digests import DigestRenderer
from digestd.mail.layout import Layout
from digestd.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberCategory,
    SubscriberStatus,
)
from digestd.planning.candidates import Ranking
from digestd.planning.digests import DigestBook
from digestd.planning.interests import profiles
from digestd.planning.layouts import in_site_order, layout_of
from digestd.planning.learning import Profile, personal_order
from digestd.planning.policy import EnqueueReport, Policy
from digestd.planning.repeats import EarlierDailies
from digestd.planning.schedule import (
    RECAP_INSTEAD,
    SUNDAY,
    Slot,
    catchup_window,
    latest_slot,
    next_slot,
)
from digestd.planning.selection import HALF_LIFE_HOURS, pick


class Timing(enum.Enum):
    """Which edition a planning run gives each reader."""

    SCHEDULED = "scheduled"  # their latest send time, if within the catch-up window
    NOW = "now"  # as of now, named by their local date (previews, the demo)
    TRIGGER = "trigger"  # an operator's "send now": the current edition, once its time came


BATCH = 1000
# The first batches of an edition are small: nearly every digest in them is new and is
# rendered before they commit, and the sender has nothing to send until the first does.
FIRST_BATCH = 100
MISSED = "missed:"  # how a skipped row says it was due beyond the catch-up window


def enqueue_due(
    sessions: sessionmaker[Session],
    policy: Policy,
    renderer: DigestRenderer,
    now: datetime,
    progress: Callable[[], None] = lambda: None,
    report: EnqueueReport | None = None,
) -> EnqueueReport:
    """Plan every edition due at ``now``, a batch of readers per transaction; ``progress``
    hears of each batch. ``report`` counts what is committed as it goes: a caller stopped
    mid-edition still knows what it queued."""
    report = EnqueueReport() if report is None else report
    # The recap first: a Sunday daily is skipped for it only if it can still come.
    for kind in (EditionKind.WEEKLY, EditionKind.DAILY):
        planner = Planner(kind, policy, renderer, now)
        rendered_before = report.rendered
        while True:
            with sessions.begin() as session:
                if not planner.plan_due_batch(session, report):
                    break
            report.rendered = rendered_before + planner.book.rendered
            progress()
    return report


def anything_due(session: Session, now: datetime) -> bool:
    """Whether any reader's daily or recap is due at ``now``: the question an idle tick
    answers without starting the planner's helper process."""
    return any(
        session.execute(select(Subscriber.id).where(*_due(column, now)).limit(1)).first()
        for column in (Subscriber.next_weekly_at, Subscriber.next_daily_at)
    )


def _due(column: InstrumentedAttribute[datetime | None], now: datetime) -> tuple[Any, ...]:
    """Who is due for the edition ``column`` schedules: one range of its (status, column)
    index."""
    return (Subscriber.status == SubscriberStatus.ACTIVE, column <= now)


def due_batch(
    column: InstrumentedAttribute[datetime | None],
    now: datetime,
    after: tuple[datetime | None, int] | None,
    limit: int,
    *,
    locking: bool,
) -> Select[int, str, datetime | None]:
    """The next ``limit`` readers due for the edition ``column`` schedules, after ``after``
    (the send instant and id of the last reader planned), in the order of its due index
    (status, instant, id): read from the index, never sorted. ``locking`` (PostgreSQL):
    each row locked, and rows another worker holds skipped."""
    query = (
        select(Subscriber.id, Subscriber.timezone, column)
        .where(*_due(column, now))
        .order_by(column, Subscriber.id)
        .limit(limit)
    )
    if after is not None:
        # Past the batches planned already. Their readers are no longer due, but the index
        # entries of their old send instants stay until a vacuum: starting from the
        # beginning would step over all of them again, batch after batch.
        at, subscriber_id = after
        query = query.where(column >= at, tuple_(column, Subscriber.id) > tuple_(at, subscriber_id))
    if locking:
        # Readers another worker is planning right now are skipped, not planned twice: the
        # lock lasts until that worker's batch commits, and by then they are no longer due
        # (their next send instant moved in the same transaction).
        query = query.with_for_update(skip_locked=True, of=Subscriber)
    return query


def enqueue_now(
    sessions: sessionmaker[Session],
    policy: Policy,
    renderer: DigestRenderer,
    kind: EditionKind,
    subscriber_ids: list[int],
    now: datetime,
    timing: Timing = Timing.NOW,
) -> EnqueueReport:
    """Queue an edition for these subscribers as of ``now`` instead of their send time
    (``timing``: the demo's "today's daily now", or an operator's trigger). Still one per
    local date (week): a reader who already had that edition gets nothing more."""
    report = EnqueueReport()
    planner = Planner(kind, policy, renderer, now, timing)
    for start in range(0, len(subscriber_ids), BATCH):
        with sessions.begin() as session:
            rows = session.execute(
                select(Subscriber.id, Subscriber.timezone).where(
                    Subscriber.id.in_(subscriber_ids[start : start + BATCH]),
                    Subscriber.status == SubscriberStatus.ACTIVE,
                )
            ).all()
            planner.plan(session, [(r.id, r.timezone) for r in rows], report)
    report.rendered += planner.book.rendered
    return report


@dataclass(frozen=True)
class _Decision:
    """What one reader gets, decided from reads alone."""

    subscriber_id: int
    slot: Slot | None  # None: not yet (left for later by a trigger)
    following: datetime  # their next send instant after this one
    layout: Layout | None  # None: skipped (see ``why``)
    key: str = ""  # the layout's content key
    why: str = ""


def _recap_instead(decision: _Decision) -> _Decision:
    """A Sunday daily for a reader of both: skipped, the weekly recap goes instead."""
    slot = decision.slot
    if slot is None or slot.local_date.weekday() != SUNDAY or decision.layout is None:
        return decision
    return _Decision(decision.subscriber_id, slot, decision.following, None, why=RECAP_INSTEAD)


class Planner:
    """Plans one kind of edition in batches, caching what readers share (slots per zone,
    rankings per window, layouts, editions and digests)."""

    def __init__(
        self,
        kind: EditionKind,
        policy: Policy,
        renderer: DigestRenderer,
        now: datetime,
        timing: Timing = Timing.SCHEDULED,
    ) -> None:
        self.kind = kind
        self.policy = policy
        self.now = now
        self.timing = timing
        self.column = (
            Subscriber.next_daily_at if kind is EditionKind.DAILY else Subscriber.next_weekly_at
        )
        self.ranking = Ranking(kind)
        self.earlier = EarlierDailies(now)
        self.book = DigestBook(kind, renderer, now)
        self._editions: dict[str, int] = {}  # period -> edition id
        self._zone_slots: dict[str, tuple[Slot | None, datetime]] = {}
        # (chosen article ids, categories) -> (layout, content key): hashed once per combo.
        self._layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[Layout, str]] = {}
        # (slot, categories, articles to leave out) -> layout, for readers with no profile.
        self._shared: dict[
            tuple[Slot, tuple[str, ...], frozenset[str]], tuple[Layout, str] | None
        ] = {}
        self._after: tuple[datetime | None, int] | None = None  # the last reader planned
        self._batch = FIRST_BATCH  # readers in the next batch: growing to BATCH

    def plan_due_batch(self, session: Session, report: EnqueueReport) -> bool:
        """Plan the next batch of due readers; False when there is none left."""
        postgres = session.get_bind().dialect.name == "postgresql"
        query = due_batch(self.column, self.now, self._after, self._batch, locking=postgres)
        self._batch = min(BATCH, self._batch * 2)
        due = session.execute(query).all()
        if not due:
            return False
        self._after = (due[-1][2], due[-1].id)
        self.plan(session, [(row.id, row.timezone) for row in due], report)
        return True

    def plan(
        self, session: Session, subscribers: list[tuple[int, str]], report: EnqueueReport
    ) -> None:
        ids = [subscriber_id for subscriber_id, _ in subscribers]
        categories = self._categories(session, ids)
        sent = self.earlier.sent_to(session, ids) if self.kind is EditionKind.DAILY else {}
        learned = profiles(session, categories, self.now) if self.policy.learns else {}
        decisions = [
            self._decide(
                session,
                sid,
                zone,
                categories.get(sid, []),
                sent.get(sid, frozenset()),
                learned.get(sid),
            )
            for sid, zone in subscribers
        ]
        recap = self._sunday_recap_readers(session, decisions)
        decisions = [_recap_instead(d) if d.subscriber_id in recap else d for d in decisions]
        self._write(session, decisions, report)

    def _sunday_recap_readers(self, session: Session, decisions: list[_Decision]) -> set[int]:
        """Readers of the daily who take the weekly too: on Sundays the recap, which covers
        the week, goes out instead of a daily repeating it (DIGESTD_SUNDAY_DAILY). Not
        those whose recap of that Sunday was already skipped (missed while digestd was
        down, when the daily comes later in the day than the recap): the daily is all
        they can still get that day."""
        sundays = {
            d.subscriber_id: d.slot.period
            for d in decisions
            if d.slot is not None and d.slot.local_date.weekday() == SUNDAY
        }
        if self.kind is not EditionKind.DAILY or self.policy.sunday_daily or not sundays:
            return set()
        ids = list(sundays)
        both = set(
            session.scalars(
                select(Subscriber.id).where(
                    among(session, Subscriber.id, ids), Subscriber.wants_weekly.is_(True)
                )
            )
        )
        if not both:
            return both
        skipped = session.execute(
            select(Delivery.subscriber_id, Edition.period)
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(
                among(session, Delivery.subscriber_id, list(both)),
                Edition.kind == EditionKind.WEEKLY,
                Edition.period.in_(set(sundays.values())),
                Delivery.status == DeliveryStatus.SKIPPED,
            )
        ).all()
        return both - {sid for sid, period in skipped if sundays[sid] == period}

    def slot_for(self, zone: ZoneInfo) -> Slot | None:
        """The edition a reader of ``zone`` gets from this run; None: not yet (a trigger
        before their send time)."""
        at = self.policy.send_time(self.kind)
        if self.timing is Timing.NOW:
            return Slot(self.kind, self.now.astimezone(zone).date(), self.now)
        latest = latest_slot(self.kind, self.now, zone, at)
        if self.timing is Timing.SCHEDULED:
            return latest
        # A trigger sends the edition the reader's schedule is on now (a weekly is named
        # by its Sunday), with the content as of now; a daily whose send time has not come
        # today is left for later, never sent as tomorrow's from tonight.
        if self.kind is EditionKind.DAILY and latest.local_date != self.now.astimezone(zone).date():
            return None
        return Slot(self.kind, latest.local_date, self.now)

    def layout_for(
        self,
        session: Session,
        slot: Slot,
        categories: list[str],
        exclude: frozenset[str],
        reader: Profile | None = None,
    ) -> tuple[Layout, str] | None:
        """The reader's layout and its content key; None when there is nothing to send.
        ``reader``: what their clicks taught (:mod:`digestd.planning.learning`)."""
        if reader:
            return self._select(session, slot, categories, exclude, reader)
        # Without a profile the layout is a function of these alone, which most readers
        # share (a few topic sets, one yesterday's digest each): selected once per combination.
        shared = (slot, tuple(categories), exclude)
        if shared not in self._shared:
            self._shared[shared] = self._select(session, slot, categories, exclude, None)
        return self._shared[shared]

    def _select(
        self,
        session: Session,
        slot: Slot,
        categories: list[str],
        exclude: frozenset[str],
        reader: Profile | None,
    ) -> tuple[Layout, str] | None:
        ranked = self.ranking.ranked(session, slot)
        if reader:
            ranked = personal_order(
                ranked,
                frozenset(categories),
                exclude,
                reader,
                now=slot.at,
                half_life_hours=HALF_LIFE_HOURS[self.kind],
                limit=self.policy.limit(self.kind),
            )
        chosen = pick(
            ranked,
            frozenset(categories),
            limit=self.policy.limit(self.kind),
            per_source=self.policy.per_source,
            exclude=exclude,
        )
        if not chosen:
            return None
        combo = (tuple(c.id for c in chosen), tuple(categories))
        known = self._layouts.get(combo)
        if known is None:
            layout = layout_of(self.kind, chosen, categories)
            versions = {c.id: c.version for c in chosen}
            known = self._layouts[combo] = (layout, layout.content_key(versions))
        return known

    def _decide(
        self,
        session: Session,
        subscriber_id: int,
        zone: str,
        categories: list[str],
        exclude: frozenset[str],
        reader: Profile | None = None,
    ) -> _Decision:
        slot, following = self._slots(zone)
        if slot is None:
            return _Decision(subscriber_id, None, following, None, why="not yet")
        late = self.now - slot.at > catchup_window(self.kind, self.policy.catchup)
        if self.timing is Timing.SCHEDULED and late:
            why = f"{MISSED} due {slot.at:%Y-%m-%d %H:%M}Z, beyond the catch-up window"
            return _Decision(subscriber_id, slot, following, None, why=why)
        found = self.layout_for(session, slot, categories, exclude, reader)
        if found is None:
            return _Decision(subscriber_id, slot, following, None, why="nothing new to send")
        return _Decision(subscriber_id, slot, following, found[0], key=found[1])

    def _slots(self, zone_name: str) -> tuple[Slot | None, datetime]:
        """The reader's slot and the send instant after it: the same for a whole zone."""
        found = self._zone_slots.get(zone_name)
        if found is None:
            zone = ZoneInfo(zone_name)
            slot = self.slot_for(zone)
            at = self.policy.send_time(self.kind)
            after = max(slot.at, self.now) if slot is not None else self.now
            found = self._zone_slots[zone_name] = (slot, next_slot(self.kind, after, zone, at).at)
        return found

    def _write(self, session: Session, decisions: list[_Decision], report: EnqueueReport) -> None:
        report.later += sum(d.slot is None for d in decisions)
        planned = [(d, d.slot) for d in decisions if d.slot is not None]
        editions = self.edition_ids(session, {slot.period for _, slot in planned})
        wanted = {
            (editions[slot.period], d.key): d.layout for d, slot in planned if d.layout is not None
        }
        self.book.provide(session, wanted, {e: p for p, e in editions.items()})
        rows = [self._row(d, slot, editions[slot.period]) for d, slot in planned]
        rows.sort(key=lambda row: row["digest_id"] or 0)
        # Counted from what was inserted: a row another worker (or an earlier run) made for
        # the same reader and edition is not planned again, and not reported again.
        inserted = insert_ignoring_conflicts(
            session,
            Delivery.__table__,
            rows,
            ["subscriber_id", "edition_id"],
            returning=["status", "last_error"],
        )
        for row in inserted:
            self._count(report, row.status, row.last_error)
        if self.timing is Timing.SCHEDULED:  # an edition on demand leaves the schedule be
            self._move_next_send(session, decisions)

    def _row(self, decision: _Decision, slot: Slot, edition_id: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "subscriber_id": decision.subscriber_id,
            "edition_id": edition_id,
            "digest_id": None,
            "status": DeliveryStatus.SKIPPED,
            "due_at": slot.at,
            "next_attempt_at": self.now,
            "attempts": 0,
            "created_at": self.now,
            "last_error": decision.why,
        }
        if decision.layout is not None:
            digest_id, error = self.book.get((edition_id, decision.key))
            row.update(digest_id=digest_id, status=DeliveryStatus.QUEUED, last_error=None)
            if error is not None:
                row.update(status=DeliveryStatus.FAILED, last_error=error)
        return row

    def _count(self, report: EnqueueReport, status: str, why: str | None) -> None:
        if status == DeliveryStatus.QUEUED:
            report.queued[self.kind] += 1
        elif status == DeliveryStatus.FAILED:
            report.unrenderable += 1
        elif (why or "").startswith(MISSED):
            report.late += 1
        elif why == RECAP_INSTEAD:
            report.instead += 1
        else:
            report.empty += 1

    def _move_next_send(self, session: Session, decisions: list[_Decision]) -> None:
        # Readers of one zone share their next send instant: one UPDATE per zone in the
        # batch, not one per reader (a statement per row is slow on PostgreSQL).
        by_instant: dict[datetime, list[int]] = defaultdict(list)
        for decision in decisions:
            by_instant[decision.following].append(decision.subscriber_id)
        for instant, ids in by_instant.items():
            session.execute(
                update(Subscriber)
                .where(among(session, Subscriber.id, ids))
                .values({self.column.key: instant})
                .execution_options(synchronize_session=False)
            )

    def _categories(self, session: Session, ids: list[int]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = defaultdict(list)
        rows = session.execute(
            select(SubscriberCategory.subscriber_id, SubscriberCategory.category).where(
                among(session, SubscriberCategory.subscriber_id, ids)
            )
        )
        for subscriber_id, category in rows:
            found[subscriber_id].append(category)
        return {sid: in_site_order(cats) for sid, cats in found.items()}

    def edition_ids(self, session: Session, periods: set[str]) -> dict[str, int]:
        """The id of this kind's edition of each period, created if need be."""
        for period in sorted(periods - self._editions.keys()):  # in one order: see DigestBook
            found = select(Edition.id).where(Edition.kind == self.kind, Edition.period == period)
            edition_id = session.scalars(found).first()
            if edition_id is None:  # looked up first: on SQLite even an ignored insert locks
                insert_ignoring_conflicts(
                    session,
                    Edition.__table__,
                    [{"kind": self.kind, "period": period, "created_at": self.now}],
                    ["kind", "period"],
                )
                edition_id = session.scalars(found).one()
            self._editions[period] = edition_id
        return {period: self._editions[period] for period in periods}

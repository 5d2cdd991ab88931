"""The sunset of a silent reader, never silent itself (SPEC §11, ``DIGESTD_TRACK_CLICKS=
reader``): after ``DIGESTD_SUNSET_WEEKS`` without a click, one email asks whether they still
want their digests (keep daily, switch to weekly, unsubscribe); :data:`ASKED_FOR` later,
still without a click, a daily reader moves to the weekly recap; :data:`WEEKLY_FOR` after
that, their digests pause and an email says so, with one link to resume. Each step is a
``sunset_steps`` row; a click at any time restores them as they were (:func:`restore`),
and so does their answer to the email (:func:`answer`).

Silence is counted from the latest of their last click, their confirmation, their last
sunset step or answer, and the moment reader clicks began to be recorded (an operator who
turns ``reader`` on does not have the whole list asked at once), and only for a reader
who was sent a digest that long ago since then: weeks with no news send no digest, and are
no silence.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from digestd.bulk import among
from digestd.db import insert_ignoring_conflicts
from digestd.models import (
    Delivery,
    DeliveryStatus,
    SettingSince,
    Subscriber,
    SubscriberStatus,
    SunsetStep,
)
from digestd.readers.lifecycle import Schedule, pause, resume
from digestd.readers.subscribers import by_public_id, reschedule

ASKED_FOR = timedelta(weeks=2)  # from the email to the move to weekly
WEEKLY_FOR = timedelta(weeks=4)  # from the move to weekly to the pause
BATCH = 500  # readers per step per pass
TRACKING = "track_clicks"


class Stage(enum.StrEnum):
    ASKED = "asked"
    WEEKLY = "weekly"
    PAUSED = "paused"


class Step(enum.StrEnum):
    """What ``sunset_steps`` records."""

    ASKED = "asked"  # the re-engagement email went out
    WEEKLY = "weekly"  # moved from the daily to the weekly recap
    PAUSED = "paused"  # digests paused (and an email said so)
    RESTORED = "restored"  # a click brought them back as they were
    KEPT = "kept"  # they answered: keep my digests as they are
    SWITCHED = "switched"  # they answered: the weekly recap only
    RESUMED = "resumed"  # they resumed from the pause email


def tracking_since(session: Session, mode: str, now: datetime) -> datetime | None:
    """Since when reader clicks have been recorded (None: they are not); notes a change
    of ``DIGESTD_TRACK_CLICKS``."""
    if session.get(SettingSince, TRACKING) is None:
        # Two ticks at once both find no row: one insert takes, the other finds it.
        first = {"name": TRACKING, "value": mode, "since": now}
        insert_ignoring_conflicts(session, SettingSince.__table__, [first], ["name"])
    row = session.get(SettingSince, TRACKING)
    assert row is not None
    if row.value != mode:
        row.value, row.since = mode, now
    return row.since if mode == "reader" else None


def _record(session: Session, subscriber: Subscriber, step: Step, now: datetime) -> None:
    session.add(SunsetStep(subscriber_id=subscriber.id, step=step, at=now))


def to_ask(session: Session, now: datetime, weeks: int, since: datetime) -> list[int]:
    """Active readers silent for ``weeks`` since a digest they were sent: silence counts
    from a digest they could have clicked, not from days that sent them nothing."""
    cutoff = now - timedelta(weeks=weeks)
    if since > cutoff:
        return []
    candidates = session.execute(
        select(
            Subscriber.id,
            Subscriber.last_click_at,
            Subscriber.confirmed_at,
            Subscriber.sunset_at,
        )
        .where(
            Subscriber.status == SubscriberStatus.ACTIVE,
            Subscriber.sunset_stage.is_(None),
            or_(Subscriber.last_click_at.is_(None), Subscriber.last_click_at < cutoff),
            or_(Subscriber.confirmed_at.is_(None), Subscriber.confirmed_at < cutoff),
            or_(Subscriber.sunset_at.is_(None), Subscriber.sunset_at < cutoff),
        )
        .order_by(Subscriber.id)
        .limit(BATCH)
    ).all()
    if not candidates:
        return []
    # The latest digest sent before the cutoff: the reader has had ``weeks`` to click it.
    # A digest sent since then is not enough: weeks with no news send nothing, and the
    # first digest after such a stretch must not be followed at once by the question.
    sent_by_cutoff = {
        subscriber_id: sent_at
        for subscriber_id, sent_at in session.execute(
            select(Delivery.subscriber_id, func.max(Delivery.sent_at))
            .where(
                among(session, Delivery.subscriber_id, [c.id for c in candidates]),
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at <= cutoff,
            )
            .group_by(Delivery.subscriber_id)
        )
    }
    asked = []
    for c in candidates:
        silent_from = max(t for t in (c.last_click_at, c.confirmed_at, c.sunset_at, since) if t)
        sent = sent_by_cutoff.get(c.id)
        if sent is not None and sent > silent_from:
            asked.append(c.id)
    return asked


def mark_asked(
    session: Session, subscriber_id: int, now: datetime, weeks: int
) -> Subscriber | None:
    """Claim one reader for the email (None: another process did, or they clicked)."""
    subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
    cutoff = now - timedelta(weeks=weeks)
    if subscriber is None or subscriber.sunset_stage is not None:
        return None
    if subscriber.last_click_at is not None and subscriber.last_click_at >= cutoff:
        return None
    subscriber.sunset_stage, subscriber.sunset_at = Stage.ASKED, now
    _record(session, subscriber, Step.ASKED, now)
    return subscriber


def unmark_asked(session: Session, subscriber_id: int, asked_at: datetime) -> None:
    """The email could not be sent: as if it had not been tried (the next pass tries)."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is not None and subscriber.sunset_stage == Stage.ASKED:
        subscriber.sunset_stage = None
        subscriber.sunset_at = None
        session.execute(
            delete(SunsetStep).where(
                SunsetStep.subscriber_id == subscriber_id,
                SunsetStep.step == Step.ASKED,
                SunsetStep.at == asked_at,
            )
        )


def _in_stage(session: Session, stage: Stage, before: datetime) -> list[Subscriber]:
    return list(
        session.scalars(
            select(Subscriber)
            .where(
                Subscriber.status == SubscriberStatus.ACTIVE,
                Subscriber.sunset_stage == stage,
                Subscriber.sunset_at <= before,
            )
            .order_by(Subscriber.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    )


def move_to_weekly(session: Session, now: datetime, schedule: Schedule) -> list[Subscriber]:
    """Readers asked :data:`ASKED_FOR` ago without a click since: the daily stops (a
    weekly-only reader only moves on to the pause's countdown)."""
    moved = _in_stage(session, Stage.ASKED, now - ASKED_FOR)
    for subscriber in moved:
        subscriber.sunset_had_daily = subscriber.wants_daily
        if subscriber.wants_daily:
            subscriber.wants_daily, subscriber.wants_weekly = False, True
            reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)
            _record(session, subscriber, Step.WEEKLY, now)
        subscriber.sunset_stage, subscriber.sunset_at = Stage.WEEKLY, now
    return moved


def to_pause(session: Session, now: datetime) -> list[Subscriber]:
    """Readers on the weekly step for :data:`WEEKLY_FOR` without a click: paused here;
    the caller emails them."""
    paused = _in_stage(session, Stage.WEEKLY, now - WEEKLY_FOR)
    for subscriber in paused:
        pause(subscriber)
        subscriber.sunset_stage, subscriber.sunset_at = Stage.PAUSED, now
        _record(session, subscriber, Step.PAUSED, now)
    return paused


def _back(subscriber: Subscriber, now: datetime, schedule: Schedule) -> None:
    """As they were before the sunset: not paused, the daily again if they had it."""
    if subscriber.sunset_stage == Stage.PAUSED:
        resume(subscriber, now, schedule)
    if subscriber.sunset_had_daily and not subscriber.wants_daily:
        subscriber.wants_daily = True
        if subscriber.status == SubscriberStatus.ACTIVE:
            reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)
    subscriber.sunset_stage, subscriber.sunset_at, subscriber.sunset_had_daily = None, now, None


def end_by_hand(subscriber: Subscriber, now: datetime) -> None:
    """The reader chose for themselves (their preferences page): the sunset stops where it
    is, a later click changes nothing back, and silence counts from now."""
    subscriber.sunset_stage, subscriber.sunset_at, subscriber.sunset_had_daily = None, now, None


def restore(
    session: Session, latest: dict[int, datetime], now: datetime, schedule: Schedule
) -> int:
    """Readers whose click came after their last sunset step: back as they were."""
    restored = 0
    for subscriber in _with_stage(session, latest):
        if latest[subscriber.id] >= (subscriber.sunset_at or latest[subscriber.id]):
            _back(subscriber, now, schedule)
            _record(session, subscriber, Step.RESTORED, now)
            restored += 1
    return restored


def _with_stage(session: Session, ids: Iterable[int]) -> list[Subscriber]:
    return list(
        session.scalars(
            select(Subscriber).where(
                among(session, Subscriber.id, list(ids)), Subscriber.sunset_stage.is_not(None)
            )
        )
    )


class Answer(enum.StrEnum):
    """The choices the emails offer (the unsubscribe link is the usual one)."""

    KEEP = "keep"
    WEEKLY = "weekly"
    RESUME = "resume"


@dataclass(frozen=True)
class Answered:
    done: bool  # False: nothing to change (already so, or unsubscribed meanwhile)
    wants_daily: bool
    wants_weekly: bool


def answer(
    session: Session, public_id: str, choice: Answer, now: datetime, schedule: Schedule
) -> Answered | None:
    """What a reader chose from a sunset email; None when they are gone."""
    subscriber = by_public_id(session, public_id, lock=True)
    if subscriber is None:
        return None
    if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED) or (
        subscriber.status == SubscriberStatus.PAUSED and subscriber.sunset_stage != Stage.PAUSED
    ):
        return Answered(False, subscriber.wants_daily, subscriber.wants_weekly)
    if choice is Answer.WEEKLY:
        _back(subscriber, now, schedule)
        subscriber.wants_daily, subscriber.wants_weekly = False, True
        reschedule(subscriber, now, schedule.daily_at, schedule.weekly_at)
        _record(session, subscriber, Step.SWITCHED, now)
    else:
        staged = subscriber.sunset_stage is not None
        _back(subscriber, now, schedule)
        if staged:
            _record(session, subscriber, Step.KEPT if choice is Answer.KEEP else Step.RESUMED, now)
    return Answered(True, subscriber.wants_daily, subscriber.wants_weekly)


def steps(session: Session, subscriber_id: int) -> list[tuple[str, datetime]]:
    """A reader's sunset steps, oldest first (their admin page)."""
    rows = session.execute(
        select(SunsetStep.step, SunsetStep.at)
        .where(SunsetStep.subscriber_id == subscriber_id)
        .order_by(SunsetStep.at, SunsetStep.id)
    )
    return [(str(step), at) for step, at in rows]

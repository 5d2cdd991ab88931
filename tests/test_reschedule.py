"""A reader's next send times after they change something (preferences, a pause ending),
through the real tick: nothing owed is lost, and nothing promised is a date they have.

Time is injected: each tick runs at a chosen ``now``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from digestd.config import Settings
from digestd.models import Delivery, Edition, Subscriber
from digestd.planning.planner import enqueue_due
from digestd.readers.lifecycle import Schedule, change_preferences, pause
from digestd.readers.subscribers import frequency_name, parse_preferences
from digestd.readers.upcoming import upcoming
from digestd.service import Service
from tests.seeding import Reader, add_articles, add_readers, hourly_articles


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class _Rig:
    def __init__(self, settings: Settings, readers: list[Reader], since: datetime) -> None:
        self.service = Service.build(settings)
        self.schedule = Schedule(settings.daily_time, settings.weekly_time)
        with self.service.sessions.begin() as session:
            add_articles(
                session, hourly_articles(since - timedelta(days=8), since + timedelta(days=14))
            )
            add_readers(session, readers, since)
        self.loop = asyncio.new_event_loop()

    def ticks(self, *moments: str) -> None:
        for moment in moments:
            self.loop.run_until_complete(self.service.tick(_utc(moment)))

    def close(self) -> None:
        self.loop.run_until_complete(self.service.close())
        self.loop.close()

    def save(
        self,
        email: str,
        at: str,
        *,
        categories: list[str] | None = None,
        zone: str = "",
        frequency: str = "",
    ) -> None:
        """What the preferences page's "save" does with the form."""
        with self.service.sessions.begin() as session:
            reader = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
            prefs = parse_preferences(
                categories or reader.category_slugs,
                frequency or frequency_name(reader),
                zone or reader.timezone,
                reader.timezone,
            )
            change_preferences(reader, prefs, _utc(at), self.schedule)

    def promised(self, email: str) -> list[str]:
        with self.service.sessions() as session:
            reader = session.scalars(select(Subscriber).where(Subscriber.email == email)).one()
            return [f"{u.name} {u.when}" for u in upcoming(reader, self.schedule)]

    def editions(self, email: str) -> list[tuple[str, str]]:
        """(period, status) of each edition the reader has a row for, in order."""
        with self.service.sessions() as session:
            rows = session.execute(
                select(Edition.period, Delivery.status)
                .join(Delivery, Delivery.edition_id == Edition.id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Subscriber.email == email)
                .order_by(Edition.period)
            )
            return [(period, str(status)) for period, status in rows]


@pytest.fixture
def rig(settings: Settings) -> Iterator[Callable[[list[Reader]], _Rig]]:
    """Builds the test's rig for its readers (scheduled from noon on 9 March) and closes it."""
    made: list[_Rig] = []

    def build(readers: list[Reader]) -> _Rig:
        made.append(_Rig(settings, readers, _utc("2026-03-09T12:00")))
        return made[-1]

    yield build
    for each in made:
        each.close()


Build = Callable[[list[Reader]], _Rig]


def test_saving_preferences_after_the_send_time_before_the_tick_keeps_todays_daily(
    rig: Build,
) -> None:
    """07:00 has come; the tick that plans it runs at 07:01 (or, after an outage, hours
    later). A save in between, changed or not, must not push the daily to tomorrow."""
    town = rig([Reader("same@example.com"), Reader("more@example.com"), Reader("idle@example.com")])
    town.save("same@example.com", "2026-03-10T07:00:20")
    town.save("more@example.com", "2026-03-10T08:30:00", categories=["ai", "robotics"])
    assert town.promised("same@example.com") == ["daily digest Tuesday 10 March, 07:00 UTC"]
    town.ticks("2026-03-10T09:00")  # a late tick, within the catch-up window
    for email in ("same@example.com", "more@example.com", "idle@example.com"):
        assert town.editions(email) == [("2026-03-10", "sent")], email
    assert town.promised("more@example.com") == ["daily digest Wednesday 11 March, 07:00 UTC"]


def test_a_move_west_after_todays_daily_promises_the_next_date_they_do_not_have(
    rig: Build,
) -> None:
    """Tokyo's daily of 10 March goes at 22:00Z on the 9th; the reader then moves to Los
    Angeles, where it is still the 9th. LA's next 07:00 is on the 10th, a date they have:
    the page must not promise it (the planner would skip it), but the 11th."""
    town = rig([Reader("r@example.com", "Asia/Tokyo")])
    town.ticks("2026-03-09T22:00")
    town.save("r@example.com", "2026-03-09T23:00", zone="America/Los_Angeles")
    assert town.promised("r@example.com") == [
        "daily digest Wednesday 11 March, 07:00 America/Los_Angeles"
    ]
    town.ticks("2026-03-10T14:00", "2026-03-11T14:00")
    assert town.editions("r@example.com") == [("2026-03-10", "sent"), ("2026-03-11", "sent")]


def test_a_pause_that_ends_while_digestd_is_down_is_caught_up_on(rig: Build) -> None:
    """Paused until 11 March (00:00 UTC); digestd is down from 23:00 on the 10th to 07:30 on
    the 11th, within the catch-up window: that day's daily comes, as everyone else's does."""
    town = rig([Reader("paused@example.com"), Reader("active@example.com")])
    with town.service.sessions.begin() as session:
        reader = session.scalars(
            select(Subscriber).where(Subscriber.email == "paused@example.com")
        ).one()
        pause(reader, _utc("2026-03-11T00:00"))
    town.ticks("2026-03-10T07:00", "2026-03-10T22:59", "2026-03-11T07:30")
    assert town.editions("active@example.com") == [("2026-03-10", "sent"), ("2026-03-11", "sent")]
    assert town.editions("paused@example.com") == [("2026-03-11", "sent")]


def test_a_paused_reader_who_moves_east_gets_their_digests_from_the_date_they_chose(
    rig: Build,
) -> None:
    """Paused in Los Angeles until 12 March (its midnight: 07:00Z), then moved to Tokyo: the
    pause still ends on the 12th, now Tokyo's (15:00Z on the 11th), so Tokyo's 07:00 daily
    of the 12th comes. Left at LA's midnight, the pause outlasted that daily."""
    town = rig([Reader("r@example.com", "America/Los_Angeles")])
    with town.service.sessions.begin() as session:
        reader = session.scalars(select(Subscriber)).one()
        pause(reader, _utc("2026-03-12T07:00"))
    town.save("r@example.com", "2026-03-10T12:00", zone="Asia/Tokyo")
    assert town.promised("r@example.com") == ["daily digest Thursday 12 March, 07:00 Asia/Tokyo"]
    town.ticks("2026-03-11T15:00", "2026-03-11T22:00", "2026-03-12T22:00")
    assert town.editions("r@example.com") == [("2026-03-12", "sent"), ("2026-03-13", "sent")]


def test_a_daily_planned_before_the_reader_chose_weekly_only_is_not_sent(rig: Build) -> None:
    """Planned at 07:00, sent a moment later (or, behind a slow relay, hours later): a reader
    who switched to the weekly recap in between is not sent the daily they turned off."""
    town = rig([Reader("weekly.now@example.com"), Reader("stays@example.com")])
    enqueue_due(
        town.service.sessions, town.service.policy, town.service.renderer, _utc("2026-03-10T07:00")
    )
    with town.service.sessions.begin() as session:
        reader = session.scalars(
            select(Subscriber).where(Subscriber.email == "weekly.now@example.com")
        ).one()
        prefs = parse_preferences(reader.category_slugs, "weekly", "UTC", "UTC")
        change_preferences(reader, prefs, _utc("2026-03-10T07:00:05"), town.schedule)
    town.ticks("2026-03-10T07:01")
    assert town.editions("stays@example.com") == [("2026-03-10", "sent")]
    assert town.editions("weekly.now@example.com") == [("2026-03-10", "skipped")]
    with town.service.sessions() as session:
        why = session.scalar(
            select(Delivery.last_error)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == "weekly.now@example.com")
        )
    assert why == "subscriber no longer takes the daily"


def test_turning_the_recap_off_on_sunday_before_it_came_brings_back_that_days_daily(
    rig: Build,
) -> None:
    """A reader of both gets no daily on Sunday: the 08:00 recap goes instead. Turning the
    recap off at 07:30 must not leave them with neither: the skipped daily is owed again."""
    town = rig([Reader("both@example.com", daily=True, weekly=True)])
    town.ticks("2026-03-15T07:00")  # Sunday
    assert town.editions("both@example.com") == [("2026-03-15", "skipped")]
    town.save("both@example.com", "2026-03-15T07:30", frequency="daily")
    town.ticks("2026-03-15T07:31", "2026-03-15T08:00", "2026-03-16T07:00")
    assert town.editions("both@example.com") == [("2026-03-15", "sent"), ("2026-03-16", "sent")]
    # After the recap went out, turning it off changes nothing about that Sunday.
    town.save("both@example.com", "2026-03-16T09:00", frequency="both")
    town.ticks("2026-03-22T07:00", "2026-03-22T08:00")
    town.save("both@example.com", "2026-03-22T08:30", frequency="daily")
    town.ticks("2026-03-22T08:31")
    with town.service.sessions() as session:
        kinds = session.execute(
            select(Edition.kind, Edition.period, Delivery.status)
            .join(Delivery, Delivery.edition_id == Edition.id)
            .where(Edition.period == "2026-03-22")
            .order_by(Edition.kind)
        ).all()
    assert [(str(k), p, str(st)) for k, p, st in kinds] == [
        ("daily", "2026-03-22", "skipped"),
        ("weekly", "2026-03-22", "sent"),
    ]

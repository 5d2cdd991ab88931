"""When digests go out, in every kind of zone: pure slot maths, then simulated fortnights.

The simulations drive the real enqueue and delivery code (one database, many readers,
the development mail catcher) with a scheduler tick every simulated minute, and check the
result against an oracle that knows nothing of digestd: it walks the same fortnight
minute by minute in each reader's zone and notes the first minute whose wall clock shows
the send time on each local date.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from digestd.config import load_settings
from digestd.mail.layout import Layout
from digestd.mail.presentation import long_date
from digestd.models import Delivery, DeliveryStatus, Digest, Edition, EditionKind, Subscriber
from digestd.planning.planner import enqueue_due
from digestd.planning.schedule import content_window, latest_slot, next_slot
from digestd.service import Service
from tests.helpers import article
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

ZONES = [
    "UTC",
    "Europe/London",  # EU DST: gap 01:00-02:00 on 29 Mar, overlap on 25 Oct
    "Europe/Berlin",  # gap 02:00-03:00 on 29 Mar, overlap 02:00-03:00 on 25 Oct
    "America/New_York",  # overlap 01:00-02:00 on 1 Nov
    "America/Santiago",  # southern: DST ends 5 Apr (overlap 23:00-24:00 on 4 Apr)
    "Australia/Sydney",  # southern: overlap 02:00-03:00 on 5 Apr
    "Australia/Lord_Howe",  # a half-hour DST shift: overlap 01:30-02:00 on 5 Apr
    "Pacific/Auckland",  # overlap 02:00-03:00 on 5 Apr
    "Pacific/Chatham",  # +12:45/+13:45, overlap 02:45-03:45 on 5 Apr
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Pacific/Kiritimati",  # UTC+14: its local date is a day ahead of most of the world
    "Etc/GMT+12",  # UTC-12
]


# --- pure slot maths -------------------------------------------------------------------


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected_utc"),
    [
        # a DST gap: 02:30 does not exist, the slot is the instant the clock jumps
        ("Europe/Berlin", date(2026, 3, 29), time(2, 30), "2026-03-29T01:00"),
        ("America/New_York", date(2026, 3, 8), time(2, 0), "2026-03-08T07:00"),
        ("Australia/Lord_Howe", date(2026, 10, 4), time(2, 15), "2026-10-03T15:30"),
        # an overlap: 02:30 happens twice, the first one counts
        ("Australia/Sydney", date(2026, 4, 5), time(2, 30), "2026-04-04T15:30"),
        ("America/New_York", date(2026, 11, 1), time(1, 30), "2026-11-01T05:30"),
        # fractional and extreme offsets
        ("Asia/Kolkata", date(2026, 3, 10), time(7), "2026-03-10T01:30"),
        ("Asia/Kathmandu", date(2026, 3, 10), time(7), "2026-03-10T01:15"),
        ("Pacific/Chatham", date(2026, 6, 10), time(7), "2026-06-09T18:15"),
        ("Pacific/Kiritimati", date(2026, 3, 10), time(7), "2026-03-09T17:00"),
        ("Etc/GMT+12", date(2026, 3, 10), time(7), "2026-03-10T19:00"),
    ],
)
def test_a_daily_slot_is_the_first_instant_the_local_clock_shows_the_send_time(
    zone: str, day: date, at: time, expected_utc: str
) -> None:
    before = datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)) - timedelta(hours=1)
    slot = next_slot(EditionKind.DAILY, before, ZoneInfo(zone), at)
    assert slot.local_date == day
    assert slot.at == _utc(expected_utc)
    assert latest_slot(EditionKind.DAILY, slot.at, ZoneInfo(zone), at) == slot
    assert latest_slot(EditionKind.DAILY, slot.at - timedelta(seconds=1), ZoneInfo(zone), at) != (
        slot
    )


def test_the_weekly_slot_is_on_the_readers_local_sunday_even_when_utc_is_still_saturday() -> None:
    slot = next_slot(
        EditionKind.WEEKLY, _utc("2026-03-25T00:00"), ZoneInfo("Pacific/Kiritimati"), time(8)
    )
    assert slot.local_date == date(2026, 3, 29) and slot.local_date.weekday() == 6
    assert slot.at == _utc("2026-03-28T18:00")  # Saturday in UTC


@pytest.mark.parametrize(
    ("kind", "zone", "at", "slot_utc", "window_opens_utc"),
    [
        # New York falls back on 1 Nov: 25 hours between two 07:00s, 7 days and an hour
        # between two Sunday 08:00s. The window reaches back to the previous send time.
        (EditionKind.DAILY, "America/New_York", time(7), "2026-11-01T12:00", "2026-10-31T11:00"),
        (EditionKind.WEEKLY, "America/New_York", time(8), "2026-11-01T13:00", "2026-10-25T12:00"),
        # Lord Howe falls back half an hour on 5 Apr.
        (EditionKind.DAILY, "Australia/Lord_Howe", time(7), "2026-04-04T20:30", "2026-04-03T20:00"),
        # 23 hours since the last 07:00 (spring forward): still the 24 h before the send.
        (EditionKind.DAILY, "America/New_York", time(7), "2026-03-08T11:00", "2026-03-07T11:00"),
        (EditionKind.DAILY, "Europe/Berlin", time(2, 30), "2026-03-29T01:00", "2026-03-28T01:00"),
        # An ordinary day.
        (EditionKind.DAILY, "Asia/Kathmandu", time(7), "2026-03-10T01:15", "2026-03-09T01:15"),
    ],
)
def test_no_hour_of_articles_falls_between_two_editions_when_the_clocks_change(
    kind: EditionKind, zone: str, at: time, slot_utc: str, window_opens_utc: str
) -> None:
    slot = latest_slot(kind, _utc(slot_utc), ZoneInfo(zone), at)
    assert slot.at == _utc(slot_utc)
    assert content_window(slot) == (_utc(window_opens_utc), slot.at)
    before = latest_slot(kind, slot.at - timedelta(seconds=1), ZoneInfo(zone), at)
    assert content_window(before)[1] <= content_window(slot)[0] + timedelta(hours=1)
    assert content_window(before)[1] >= content_window(slot)[0]  # no gap between the two


def test_a_story_published_in_the_hour_the_clocks_gave_back_is_in_the_next_daily(
    env: dict[str, str],
) -> None:
    """New York, 31 Oct 07:00 EDT (11:00Z) then 1 Nov 07:00 EST (12:00Z): a story from
    11:30Z came after the first daily and more than 24 h before the second."""
    service = Service.build(load_settings(env))
    saturday = _utc("2026-10-31T11:00")
    with service.sessions.begin() as session:
        joined = saturday - timedelta(hours=1)
        add_readers(session, [Reader("ny@example.com", "America/New_York")], joined)
        add_articles(
            session,
            [
                article("before-saturday", "ai", _utc("2026-10-31T10:30"), source="A"),
                article("extra-hour", "ai", _utc("2026-10-31T11:30"), source="B"),
                article("sunday", "ai", _utc("2026-11-01T09:00"), source="C"),
            ],
        )
    enqueue_due(service.sessions, service.policy, service.renderer, saturday)
    enqueue_due(service.sessions, service.policy, service.renderer, _utc("2026-11-01T12:00"))
    with service.sessions() as session:
        rows = session.execute(
            select(Edition.period, Digest.layout)
            .join(Delivery, Delivery.edition_id == Edition.id)
            .join(Digest, Digest.id == Delivery.digest_id)
        ).all()
    service.engine.dispose()
    sent = {period: Layout.from_json(layout).article_ids() for period, layout in rows}
    assert sent == {"2026-10-31": ["before-saturday"], "2026-11-01": ["sunday", "extra-hour"]}


# --- the simulation --------------------------------------------------------------------


@dataclass
class Outcome:
    service: Service
    readers: dict[str, Reader]
    mail_dir: Path
    ticks: int


def _next_work(service: Service) -> datetime | None:
    """The earliest instant at which a tick could find anything to do."""
    with service.sessions() as session:
        candidates = [
            session.scalar(select(func.min(Subscriber.next_daily_at))),
            session.scalar(select(func.min(Subscriber.next_weekly_at))),
            session.scalar(
                select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.status == DeliveryStatus.QUEUED
                )
            ),
        ]
    found = [c for c in candidates if c is not None]
    return min(found) if found else None


def simulate(
    env: dict[str, str],
    start: datetime,
    end: datetime,
    *,
    hours: tuple[str, str] = ("7", "8"),
    outages: Sequence[tuple[datetime, datetime]] = (),
    zones: list[str] = ZONES,
) -> Outcome:
    """Tick every minute from ``start`` to ``end`` (except during ``outages``).

    A tick at which nothing is due and nothing is queued reads two empty index ranges and
    changes nothing, so the loop jumps straight to the first minute at which something
    is: the sends are exactly those of a tick every minute, in a fraction of the time.
    """
    settings = load_settings(
        {**env, "DIGESTD_DAILY_HOUR": hours[0], "DIGESTD_WEEKLY_HOUR": hours[1]}
    )
    service = Service.build(settings)
    readers = {
        f"{kind}.{zone.replace('/', '_').lower()}@example.com": Reader(
            f"{kind}.{zone.replace('/', '_').lower()}@example.com",
            zone,
            daily=kind in ("daily", "both"),
            weekly=kind in ("weekly", "both"),
        )
        for zone in zones
        for kind in ("daily", "both", "weekly")
    }
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(start - timedelta(days=8), end))
        add_readers(
            session, list(readers.values()), start, settings.daily_time, settings.weekly_time
        )

    def down(moment: datetime) -> bool:
        return any(a <= moment < b for a, b in outages)

    async def run() -> int:
        ticks = 0
        now = start
        while now <= end:
            if not down(now):
                await service.tick(now)
                ticks += 1
            upcoming = _next_work(service)
            step = now + timedelta(minutes=1)
            if upcoming is not None and upcoming > step:
                # the first whole minute at or after it (ticks fall on minutes)
                minutes = -(-(upcoming - start) // timedelta(minutes=1))
                step = start + timedelta(minutes=minutes)
            for a, b in outages:
                if a <= step < b:
                    step = b if b > step else step
            now = step if upcoming is not None else end + timedelta(minutes=1)
        await service.close()
        return ticks

    ticks = asyncio.run(run())
    return Outcome(service, readers, settings.mail_dir, ticks)


def oracle(
    zone: str, start: datetime, end: datetime, at: time, sundays: bool
) -> dict[date, datetime]:
    """Local date -> the first minute in [start, end] at which the wall clock reaches ``at``
    (shows it or, across a gap, jumps past it) on that date."""
    tz = ZoneInfo(zone)
    found: dict[date, datetime] = {}
    previous = (start - timedelta(minutes=1)).astimezone(tz)
    moment = start
    while moment <= end:
        local = moment.astimezone(tz)
        day = local.date()
        reached = local.time() >= at and (previous.date() != day or previous.time() < at)
        if reached and day not in found and (not sundays or day.weekday() == 6):
            found[day] = moment
        previous = local
        moment += timedelta(minutes=1)
    return found


def _sent(outcome: Outcome) -> dict[tuple[str, str], list[tuple[str, datetime, datetime]]]:
    """(email, kind) -> [(period, due_at, sent_at)] of sent deliveries."""
    with outcome.service.sessions() as session:
        rows = session.execute(
            select(
                Subscriber.email, Edition.kind, Edition.period, Delivery.due_at, Delivery.sent_at
            )
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(Delivery.status == DeliveryStatus.SENT)
        ).all()
    found: dict[tuple[str, str], list[tuple[str, datetime, datetime]]] = defaultdict(list)
    for row in rows:
        assert row.sent_at is not None
        found[(row.email, row.kind)].append((row.period, row.due_at, row.sent_at))
    return found


def _caught(outcome: Outcome) -> Counter[tuple[str, str]]:
    """(recipient, heading date) of every message the mail catcher holds."""
    seen: Counter[tuple[str, str]] = Counter()
    for path in outcome.mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = message.get_body(("plain",))
        assert text is not None
        heading = re.search(
            r"(Daily digest|Weekly recap) · (week to )?(\w+ \d+ \w+ \d{4})", text.get_content()
        )
        assert heading is not None
        seen[(str(message["To"]), heading.group(3))] += 1
    return seen


FORTNIGHTS = {
    # Both hemispheres: Europe springs forward on 29 Mar, the south falls back on 5 Apr;
    # at 02:30 Berlin's daily and weekly fall in the gap, Sydney's and Auckland's in the
    # overlap, both on Sundays.
    "spring-0230": (_utc("2026-03-22T00:00"), _utc("2026-04-06T00:00"), ("02:30", "02:30")),
    "spring-default": (_utc("2026-03-22T00:00"), _utc("2026-04-06T00:00"), ("7", "8")),
    # Europe and New York fall back (25 Oct, 1 Nov): 01:30 is in London's and New York's
    # overlap; Santiago and Auckland have sprung forward in September.
    "autumn-0130": (_utc("2026-10-19T00:00"), _utc("2026-11-03T00:00"), ("01:30", "01:30")),
}


@pytest.mark.slow  # a fortnight of minutes: ~10 s each on SQLite
@pytest.mark.parametrize("name", list(FORTNIGHTS))
def test_a_fortnight_brings_one_daily_per_local_date_and_one_weekly_per_sunday_on_time(
    env: dict[str, str], name: str
) -> None:
    start, end, hours = FORTNIGHTS[name]
    outcome = simulate(env, start, end, hours=hours)
    sent = _sent(outcome)
    # Readers were scheduled from `start`: the first slot counted is the first after it.
    first = start + timedelta(minutes=1)
    expected_messages: Counter[tuple[str, str]] = Counter()
    for address, reader in outcome.readers.items():
        for kind, wanted, at in (
            ("daily", reader.daily, _hour(hours[0])),
            ("weekly", reader.weekly, _hour(hours[1])),
        ):
            got = sent.get((address, kind), [])
            if not wanted:
                assert got == [], (address, kind)
                continue
            slots = oracle(reader.timezone, first, end, at, sundays=kind == "weekly")
            if kind == "daily" and reader.weekly:  # on Sundays the recap goes instead
                slots = {day: at for day, at in slots.items() if day.weekday() != 6}
            periods = [period for period, _, _ in got]
            assert Counter(periods) == Counter(d.isoformat() for d in slots), (address, kind)
            for period, due_at, sent_at in got:
                expected = slots[date.fromisoformat(period)]
                assert due_at == expected, (address, kind, period)
                assert timedelta(0) <= sent_at - expected < timedelta(minutes=1), (address, period)
                expected_messages[(address, long_date(date.fromisoformat(period)))] += 1
    assert _caught(outcome) == expected_messages
    assert sum(expected_messages.values()) > 13 * 2 * 14  # dailies alone, about a fortnight each


def _hour(raw: str) -> time:
    return time.fromisoformat(raw) if ":" in raw else time(int(raw))


def test_after_a_3_hour_outage_the_edition_is_sent_after_10_hours_it_is_skipped(
    env: dict[str, str],
) -> None:
    start = _utc("2026-03-09T00:00")
    # Down from 06:00 to 10:00 on the 10th (07:00 missed by 3 h: caught up), and from
    # 06:00 to 17:00 on the 11th (missed by 10 h: beyond the 6 h window, skipped).
    outages = [
        (_utc("2026-03-10T06:00"), _utc("2026-03-10T10:00")),
        (_utc("2026-03-11T06:00"), _utc("2026-03-11T17:00")),
    ]
    outcome = simulate(env, start, _utc("2026-03-13T00:00"), outages=outages, zones=["UTC"])
    with outcome.service.sessions() as session:
        rows = session.execute(
            select(Edition.period, Delivery.status, Delivery.sent_at, Delivery.last_error)
            .join(Edition, Edition.id == Delivery.edition_id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == "daily.utc@example.com")
            .order_by(Edition.period)
        ).all()
    by_period = {row.period: row for row in rows}
    assert list(by_period) == ["2026-03-09", "2026-03-10", "2026-03-11", "2026-03-12"]
    assert by_period["2026-03-09"].sent_at.replace(second=0, microsecond=0) == _utc(
        "2026-03-09T07:00"
    )
    assert by_period["2026-03-10"].status == DeliveryStatus.SENT
    assert by_period["2026-03-10"].sent_at.replace(second=0, microsecond=0) == _utc(
        "2026-03-10T10:00"
    )
    assert by_period["2026-03-11"].status == DeliveryStatus.SKIPPED
    assert "beyond the catch-up window" in by_period["2026-03-11"].last_error
    assert by_period["2026-03-12"].status == DeliveryStatus.SENT
    assert _caught(outcome)[("daily.utc@example.com", "Wednesday 11 March 2026")] == 0
    assert _caught(outcome)[("daily.utc@example.com", "Tuesday 10 March 2026")] == 1


def test_the_longest_catch_up_window_still_never_sends_a_daily_a_day_late(
    env: dict[str, str],
) -> None:
    """DIGESTD_CATCHUP_HOURS may be a week (for the recap); a daily still goes out before
    the next one is due. Two readers: one whose daily was planned before digestd stopped
    (its row waits in the queue), one not planned at all; digestd is back at 06:30 the
    next morning, 23.5 h late."""
    service = Service.build(load_settings({**env, "DIGESTD_CATCHUP_HOURS": "168"}))
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(_utc("2026-03-08T00:00"), _utc("2026-03-12T00:00")))
        add_readers(
            session,
            [Reader("queued@example.com", "UTC"), Reader("unplanned@example.com", "Asia/Tokyo")],
            _utc("2026-03-09T12:00"),
        )
    # Planned (not sent) for UTC at 07:00 on the 10th; Tokyo's 07:00 (22:00Z on the 9th)
    # is not reached by this run: it had been down since 21:00Z.
    enqueue_due(service.sessions, service.policy, service.renderer, _utc("2026-03-09T21:00"))
    enqueue_due(service.sessions, service.policy, service.renderer, _utc("2026-03-10T07:00"))

    async def back() -> None:
        await service.tick(_utc("2026-03-11T06:30"))  # UTC 10th: 23.5 h late
        await service.tick(_utc("2026-03-11T07:01"))
        await service.close()

    asyncio.run(back())
    with service.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Edition.period, Delivery.status, Delivery.last_error)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .join(Edition, Edition.id == Delivery.edition_id)
            .order_by(Subscriber.email, Edition.period)
        ).all()
    service.engine.dispose()
    got = [(email, period, str(status)) for email, period, status, _ in rows]
    assert got == [
        ("queued@example.com", "2026-03-10", "skipped"),
        ("queued@example.com", "2026-03-11", "sent"),
        ("unplanned@example.com", "2026-03-10", "skipped"),
        ("unplanned@example.com", "2026-03-11", "sent"),
    ]
    assert all("beyond the catch-up window" in (row.last_error or "") for row in rows[::2])


def test_a_reader_of_both_whose_recap_was_missed_still_gets_sundays_later_daily(
    env: dict[str, str],
) -> None:
    """Recap at 08:00, daily at 09:00 (an operator's choice); digestd is down on Sunday
    from 07:00 to 14:30. The recap is 6.5 h late (missed), the daily 5.5 h (within the
    window): the daily comes, as it does for a reader of the daily alone."""
    settings = load_settings({**env, "DIGESTD_DAILY_HOUR": "9", "DIGESTD_WEEKLY_HOUR": "8"})
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(_utc("2026-03-29T00:00"), _utc("2026-04-05T07:00")))
        add_readers(
            session,
            [Reader("both@example.com", weekly=True), Reader("daily@example.com")],
            _utc("2026-04-04T12:00"),
            daily_at=time(9),
            weekly_at=time(8),
        )

    async def back() -> None:
        await service.tick(_utc("2026-04-05T14:30"))
        await service.close()

    asyncio.run(back())
    with service.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Edition.kind, Delivery.status)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .join(Edition, Edition.id == Delivery.edition_id)
            .order_by(Subscriber.email, Edition.kind)
        ).all()
    service.engine.dispose()
    assert [(e, str(k), str(s)) for e, k, s in rows] == [
        ("both@example.com", "daily", "sent"),
        ("both@example.com", "weekly", "skipped"),
        ("daily@example.com", "daily", "sent"),
    ]

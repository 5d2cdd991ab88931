"""What a reader gets next, and when, in their own zone (readers/upcoming.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from digestd.models import EditionKind, Subscriber, SubscriberStatus
from digestd.readers.lifecycle import Schedule
from digestd.readers.subscribers import reschedule
from digestd.readers.upcoming import arrival_day, local_when, upcoming

SCHEDULE = Schedule(time(7), time(8))
TUESDAY = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # 09:00 in New York


def _reader(
    daily: bool, weekly: bool, zone: str = "America/New_York", **extra: object
) -> Subscriber:
    reader = Subscriber(
        status=SubscriberStatus.ACTIVE, timezone=zone, wants_daily=daily, wants_weekly=weekly
    )
    reschedule(reader, TUESDAY, SCHEDULE.daily_at, SCHEDULE.weekly_at)
    for name, value in extra.items():
        setattr(reader, name, value)
    return reader


def test_the_first_digest_is_named_with_its_day_time_and_zone() -> None:
    (first,) = upcoming(_reader(True, False), SCHEDULE)
    assert first.kind is EditionKind.DAILY
    assert first.at == datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert first.when == "Wednesday 2 December, 07:00 America/New_York"
    assert first.name == "daily digest"


def test_both_lists_the_daily_then_the_recap() -> None:
    found = upcoming(_reader(True, True, "Asia/Kathmandu"), SCHEDULE)
    assert [(u.kind, u.when) for u in found] == [
        (EditionKind.DAILY, "Wednesday 2 December, 07:00 Asia/Kathmandu"),
        (EditionKind.WEEKLY, "Sunday 6 December, 08:00 Asia/Kathmandu"),
    ]


def test_a_sunday_daily_of_a_reader_of_both_is_the_recap_instead() -> None:
    saturday_night = datetime(2026, 12, 5, 22, 0, tzinfo=UTC)
    reader = _reader(True, True, "Europe/Paris")
    reschedule(reader, saturday_night, time(7), time(8))
    assert reader.next_daily_at is not None
    assert reader.next_daily_at.astimezone(ZoneInfo("Europe/Paris")).weekday() == 6
    found = upcoming(reader, SCHEDULE)
    assert [u.when for u in found] == [
        "Sunday 6 December, 08:00 Europe/Paris",  # the recap comes first, alone
        "Monday 7 December, 07:00 Europe/Paris",
    ]
    with_sunday_daily = upcoming(reader, Schedule(time(7), time(8), sunday_daily=True))
    assert with_sunday_daily[0].when == "Sunday 6 December, 07:00 Europe/Paris"


def test_a_pause_with_an_end_is_read_from_its_end() -> None:
    until = datetime(2026, 12, 19, 5, 0, tzinfo=UTC)  # midnight in New York
    reader = _reader(
        True, False, status=SubscriberStatus.PAUSED, paused_until=until, next_daily_at=None
    )
    (first,) = upcoming(reader, SCHEDULE)
    assert first.when == "Saturday 19 December, 07:00 America/New_York"
    open_ended = _reader(True, False, status=SubscriberStatus.PAUSED, next_daily_at=None)
    assert upcoming(open_ended, SCHEDULE) == []
    assert upcoming(_reader(True, False, status=SubscriberStatus.PENDING), SCHEDULE) == []


def test_half_hour_and_far_zones_read_their_own_clock() -> None:
    at = datetime(2026, 12, 1, 20, 30, tzinfo=UTC)
    assert local_when(at, "Asia/Kolkata") == "Wednesday 2 December, 02:00 Asia/Kolkata"
    assert local_when(at, "Pacific/Kiritimati") == "Wednesday 2 December, 10:30 Pacific/Kiritimati"


# (zone, the moment the words are written, the send, what they say)
NEAR = [
    # 06:52 in Paris, its 07:00: today
    ("Europe/Paris", "2026-12-07T05:52Z", "2026-12-07T06:00Z", "today at 07:00"),
    # 22:00 on Sunday in New York, the 7th in UTC as the send is: tomorrow
    ("America/New_York", "2026-12-07T03:00Z", "2026-12-07T12:00Z", "tomorrow at 07:00"),
    # 01:00 on Monday at UTC+14, Sunday in UTC: today
    ("Pacific/Kiritimati", "2026-12-06T11:00Z", "2026-12-06T17:00Z", "today at 07:00"),
    # 23:00 on Sunday at UTC-11, Monday in UTC: tomorrow
    ("Pacific/Pago_Pago", "2026-12-07T10:00Z", "2026-12-07T18:00Z", "tomorrow at 07:00"),
    # midnight on the dot is the new day
    ("Asia/Kolkata", "2026-12-06T18:30Z", "2026-12-07T01:30Z", "today at 07:00"),
    # 23:30 before the spring change: the 07:00 after a 23-hour day is tomorrow's
    ("America/New_York", "2027-03-14T04:30Z", "2027-03-14T11:00Z", "tomorrow at 07:00"),
    # two days on: the weekday and the date
    ("Europe/Paris", "2026-12-05T05:52Z", "2026-12-07T06:00Z", "Monday 7 December"),
    # a send already past keeps its date
    ("Europe/Paris", "2026-12-08T05:52Z", "2026-12-07T06:00Z", "Monday 7 December"),
]


@pytest.mark.parametrize(("zone", "now", "at", "said"), NEAR)
def test_a_send_today_or_tomorrow_in_the_readers_zone_is_named_so(
    zone: str, now: str, at: str, said: str
) -> None:
    now_at, send_at = datetime.fromisoformat(now), datetime.fromisoformat(at)
    assert arrival_day(send_at, zone, now_at) == said
    expected = f"{said} {zone}" if " at " in said else f"{said}, 07:00 {zone}"
    assert local_when(send_at, zone, now_at) == expected
    assert local_when(send_at, zone).endswith(f", 07:00 {zone}")  # said at no moment: dated

"""What a reader gets next, and when, in their own zone (readers/upcoming.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from digestd.models import EditionKind, Subscriber, SubscriberStatus
from digestd.readers.lifecycle import Schedule
from digestd.readers.subscribers import reschedule
from digestd.readers.upcoming import local_when, upcoming

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

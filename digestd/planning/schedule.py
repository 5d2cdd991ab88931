"""When an edition is due, in the subscriber's own zone. Pure functions, no database.

A *slot* is the UTC instant of a local send time: 07:00 every day for the daily, 08:00 on
Sundays for the weekly (configurable). The slot is the first instant at which
the reader's wall clock shows the send time on that date (or later): a time that happens
twice (a DST overlap) means its first occurrence; a time that does not exist (a DST gap)
means the instant the gap ends, when the clock jumps past it (as cron does). Either way
there is exactly one slot per local date, and it never falls on another local date.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digestd.models import EditionKind

SUNDAY = 6
# Why a reader of both gets no daily on Sunday (DIGESTD_SUNDAY_DAILY=false): the recap
# covers the week. Also how a preference change finds that skipped daily again.
RECAP_INSTEAD = "Sunday: the weekly recap goes out instead"


@dataclass(frozen=True)
class Slot:
    kind: EditionKind
    local_date: date  # the subscriber's local date of the send; names the edition
    at: datetime  # the instant, aware UTC
    # The previous slot of this kind in the same zone (None for a send triggered by hand).
    # A DST change can put 25 hours between two 07:00s; the content window then reaches
    # back to it, so the articles of that extra hour are in an edition.
    previous: datetime | None = None

    @property
    def period(self) -> str:
        return self.local_date.isoformat()


def _instant(local_day: date, at: time, zone: ZoneInfo) -> datetime:
    wall = datetime.combine(local_day, at)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        # Exists; in an overlap fold=0 is already the earlier of the two occurrences.
        return first
    # A gap: fold=0 read the wall time with the offset before the jump, fold=1 with the
    # offset after it; the jump itself lies between the two. Find it to the second.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)  # before the jump
    high = first  # after the jump
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def _is_send_day(kind: EditionKind, day: date) -> bool:
    return kind is EditionKind.DAILY or day.weekday() == SUNDAY


def _slot(kind: EditionKind, day: date, at: time, zone: ZoneInfo) -> Slot:
    previous = _instant(day - _span(kind), at, zone)
    return Slot(kind, day, _instant(day, at, zone), previous)


def _span(kind: EditionKind) -> timedelta:
    return timedelta(days=1) if kind is EditionKind.DAILY else timedelta(days=7)


def latest_slot(kind: EditionKind, now: datetime, zone: ZoneInfo, at: time) -> Slot:
    """The most recent slot at or before ``now``."""
    day = now.astimezone(zone).date()
    # Eight days back covers a week, plus a zone's offset moving the local date.
    for back in range(9):
        candidate = day - timedelta(days=back)
        if _is_send_day(kind, candidate):
            slot = _slot(kind, candidate, at, zone)
            if slot.at <= now:
                return slot
    raise AssertionError("unreachable: a slot exists within any 9 days")


# Remembered: readers share a few zones and send times, and an import or a change of
# settings asks the same question for thousands of them (a slot is immutable).
@functools.lru_cache(maxsize=4096)
def next_slot(kind: EditionKind, after: datetime, zone: ZoneInfo, at: time) -> Slot:
    """The first slot strictly after ``after``."""
    day = after.astimezone(zone).date() - timedelta(days=1)
    for forward in range(10):
        candidate = day + timedelta(days=forward)
        if _is_send_day(kind, candidate):
            slot = _slot(kind, candidate, at, zone)
            if slot.at > after:
                return slot
    raise AssertionError("unreachable: a slot exists within any 10 days")


# However long DIGESTD_CATCHUP_HOURS allows, an edition goes out before the next one of its
# kind is due: never a day late, never two dailies on one local date (SPEC §4). The next
# daily is 23 hours away at the least (the day the clocks go forward).
_LONGEST_CATCHUP = {
    EditionKind.DAILY: timedelta(hours=23),
    EditionKind.WEEKLY: timedelta(days=6, hours=23),
}


def catchup_window(kind: EditionKind | str, catchup: timedelta) -> timedelta:
    """How long after its send time an edition of ``kind`` may still go out."""
    return min(catchup, _LONGEST_CATCHUP[EditionKind(kind)])


def content_window(slot: Slot) -> tuple[datetime, datetime]:
    """Articles published in this half-open interval belong to the edition: the 24 hours
    (7 days) before the send time (SPEC §4), or since the previous send time when that is
    longer ago. A day of 23 hours overlaps the one before by an hour (an article in both
    is still sent once: repeats are left out)."""
    start = slot.at - _span(slot.kind)
    if slot.previous is not None and slot.previous < start:
        start = slot.previous
    return start, slot.at

"""What a reader gets next, and exactly when, in their own zone: "the daily digest,
Wednesday 2 December, 07:00 America/New_York" — for the page after confirming, the welcome
email and the preferences page.

The page after confirming and the welcome email, read as soon as they are made, say "today
at 07:00 America/New_York" or "tomorrow at 07:00 …" when the send falls on the reader's
local date at that moment (``now``, passed in, never the wall clock) or the next.

Read from the stored schedule (``next_daily_at``, ``next_weekly_at``), as the planner reads
it, with the planner's Sunday rule: a reader of both gets the recap on Sunday, not the
daily (unless ``DIGESTD_SUNDAY_DAILY``). A pause with an end is read from its end: the
digests it resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from digestd.models import EditionKind, Subscriber, SubscriberStatus
from digestd.planning.schedule import SUNDAY, next_slot
from digestd.readers.subscribers import Schedule

NAMES = {EditionKind.DAILY: "daily digest", EditionKind.WEEKLY: "weekly recap"}


@dataclass(frozen=True)
class Upcoming:
    """One edition to come: its kind and send instant (UTC), in the reader's zone."""

    kind: EditionKind
    at: datetime
    zone: str

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    @property
    def when(self) -> str:
        """ "Wednesday 2 December, 07:00 America/New_York"."""
        return local_when(self.at, self.zone)

    def when_from(self, now: datetime) -> str:
        """:attr:`when` as said at ``now``: "tomorrow at 07:00 America/New_York"."""
        return local_when(self.at, self.zone, now)


def local_when(at: datetime, zone: str, now: datetime | None = None) -> str:
    """ "Wednesday 2 December, 07:00 America/New_York"; "today at 07:00 …" or "tomorrow at
    07:00 …" when ``now`` falls on that local date or the one before."""
    local = at.astimezone(ZoneInfo(zone))
    near = _near_day(local, now)
    if near:
        return f"{near} at {local:%H:%M} {zone}"
    return f"{local:%A} {local.day} {local:%B}, {local:%H:%M} {zone}"


def arrival_day(at: datetime, zone: str, now: datetime) -> str:
    """A subject's short form: "today at 07:00", "tomorrow at 07:00", else "Monday 7
    December" (the zone is in the email, and a subject has no room for it)."""
    local = at.astimezone(ZoneInfo(zone))
    near = _near_day(local, now)
    return f"{near} at {local:%H:%M}" if near else f"{local:%A} {local.day} {local:%B}"


def _near_day(local: datetime, now: datetime | None) -> str:
    """ "today" or "tomorrow" by the reader's calendar, not by hours to go: at 22:00 the
    07:00 send nine hours away is tomorrow's, and the UTC date of either says nothing."""
    if now is None:
        return ""
    days = (local.date() - now.astimezone(local.tzinfo).date()).days
    return {0: "today", 1: "tomorrow"}.get(days, "")


def local_day(at: datetime, zone: str) -> str:
    """ "Saturday 12 December"."""
    local = at.astimezone(ZoneInfo(zone))
    return f"{local:%A} {local.day} {local:%B}"


def upcoming(subscriber: Subscriber, schedule: Schedule) -> list[Upcoming]:
    """The reader's next daily and next weekly (those they take), soonest first; none
    for a reader who gets nothing (pending, unsubscribed, paused with no end)."""
    zone = ZoneInfo(subscriber.timezone)
    nexts: dict[EditionKind, datetime | None]
    if subscriber.status == SubscriberStatus.ACTIVE:
        nexts = {
            EditionKind.DAILY: subscriber.next_daily_at,
            EditionKind.WEEKLY: subscriber.next_weekly_at,
        }
    elif subscriber.status == SubscriberStatus.PAUSED and subscriber.paused_until is not None:
        resumed = subscriber.paused_until
        nexts = {
            EditionKind.DAILY: next_slot(EditionKind.DAILY, resumed, zone, schedule.daily_at).at
            if subscriber.wants_daily
            else None,
            EditionKind.WEEKLY: next_slot(EditionKind.WEEKLY, resumed, zone, schedule.weekly_at).at
            if subscriber.wants_weekly
            else None,
        }
    else:
        return []
    daily = nexts[EditionKind.DAILY]
    recap_instead = subscriber.wants_weekly and not schedule.sunday_daily
    if daily is not None and recap_instead and daily.astimezone(zone).weekday() == SUNDAY:
        daily = next_slot(EditionKind.DAILY, daily, zone, schedule.daily_at).at
    found = [
        Upcoming(kind, at, subscriber.timezone)
        for kind, at in (
            (EditionKind.DAILY, daily),
            (EditionKind.WEEKLY, nexts[EditionKind.WEEKLY]),
        )
        if at is not None
    ]
    return sorted(found, key=lambda u: u.at)

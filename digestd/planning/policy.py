"""The settings that decide what is due and what goes in, and what a planning run did."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import time, timedelta

from digestd.config import Settings
from digestd.models import EditionKind


@dataclass(frozen=True)
class Policy:
    """The parts of Settings that decide what is due and what goes in (plain data: it is
    handed to the planner's helper process)."""

    daily_time: time
    weekly_time: time
    catchup: timedelta
    daily_limit: int
    weekly_limit: int
    per_source: int
    sunday_daily: bool = False  # a reader on both gets Sunday's daily as well as the recap
    learns: bool = False  # readers' clicks reorder their digests (DIGESTD_TRACK_CLICKS=reader)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            daily_time=settings.daily_time,
            weekly_time=settings.weekly_time,
            catchup=timedelta(hours=settings.catchup_hours),
            daily_limit=settings.daily_limit,
            weekly_limit=settings.weekly_limit,
            per_source=settings.per_source_limit,
            sunday_daily=settings.sunday_daily,
            learns=settings.tracks_readers,
        )

    def send_time(self, kind: EditionKind) -> time:
        return self.daily_time if kind is EditionKind.DAILY else self.weekly_time

    def limit(self, kind: EditionKind) -> int:
        return self.daily_limit if kind is EditionKind.DAILY else self.weekly_limit


@dataclass
class EnqueueReport:
    queued: Counter[str] = field(default_factory=Counter)  # by edition kind
    empty: int = 0  # nothing new to send
    late: int = 0  # due beyond the catch-up window
    instead: int = 0  # Sunday dailies of readers of both: the recap goes out instead
    rendered: int = 0  # digests rendered (each distinct digest once)
    unrenderable: int = 0  # deliveries failed because their digest could not be rendered
    later: int = 0  # left for later: a trigger before the reader's send time

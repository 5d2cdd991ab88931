"""How long a pause lasts, as the preferences and unsubscribe pages offer it: 1, 2 or 4
weeks, or until a chosen date. A pause ends at the start of its last day in the reader's
zone (local midnight): that day's digests come, and the tick resumes them by itself
(:func:`digestd.readers.lifecycle.resume_ended`).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digestd.errors import ValidationError

WEEKS = {"1w": 1, "2w": 2, "4w": 4}
CHOICES = (*WEEKS, "date")
LABELS = {"1w": "1 week", "2w": "2 weeks", "4w": "4 weeks", "date": "Until a date"}
LONGEST = timedelta(days=365)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def today(zone: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(zone)).date()


def pause_end(choice: str, chosen_day: str, zone: str, now: datetime) -> datetime:
    """The instant (UTC) digests start again. Raises ValidationError naming ``pause_for``
    or ``pause_until``."""
    first = today(zone, now)
    if choice in WEEKS:
        day = first + timedelta(weeks=WEEKS[choice])
    elif choice == "date":
        day = _chosen(chosen_day, first)
    else:
        raise ValidationError("pause_for", "choose 1, 2 or 4 weeks, or a date")
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _chosen(text: str, first: date) -> date:
    if not text:
        raise ValidationError("pause_until", "choose the date your digests start again")
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(
            "pause_until", f"write the date as YYYY-MM-DD, e.g. {first + timedelta(days=10)}"
        ) from exc
    if day <= first:
        raise ValidationError("pause_until", "choose a date after today")
    if day - first > LONGEST:
        raise ValidationError("pause_until", "a pause lasts a year at most; choose an earlier date")
    return day


def current_choice(paused: bool, ends: datetime | None, zone: str, now: datetime) -> str:
    """The choice to preselect: for a paused reader, the one giving the pause they have
    ("1w" while it ends a week from today, else "date"; none for a pause with no end, or
    one ending today), so changing it starts from what it is; for anyone else, 2 weeks."""
    if not paused:
        return "2w"
    first = today(zone, now)
    day = today(zone, ends) if ends else first
    if day <= first:
        return ""
    return next((c for c, n in WEEKS.items() if day == first + timedelta(weeks=n)), "date")

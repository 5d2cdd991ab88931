"""Instants people type or send (``--now``, ``published_at``, ``?now=``): ISO 8601 with a
timezone, within the years digestd can compute with.

Python's datetime ends at years 1 and 9999; converting 0001-01-01T00:00+01:00 to UTC, or
adding a week to 9999-12-31, overflows. No article, schedule or edition is near those ends,
so anything outside :data:`EARLIEST`..:data:`LATEST` is refused as a typo would be.
"""

from __future__ import annotations

from datetime import UTC, datetime

from digestd.errors import ValidationError

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_instant(field: str, raw: str) -> datetime:
    """``raw`` as an aware UTC datetime, or :class:`ValidationError` naming ``field``."""
    shown = repr(raw[:64])
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValidationError(field, f"not an ISO 8601 date-time: {shown}") from exc
    if moment.tzinfo is None:
        raise ValidationError(field, f"needs a timezone such as Z or +02:00, got {shown}")
    outside = ValidationError(
        field, f"must be between the years {EARLIEST.year} and {LATEST.year - 1}, got {shown}"
    )
    try:
        moment = moment.astimezone(UTC)
    except OverflowError as exc:  # the offset moved it past year 1 or 9999
        raise outside from exc
    if not EARLIEST <= moment < LATEST:
        raise outside
    return moment

"""The timezone picker of the signup and preferences pages: a text field with a list of
zone names and their UTC offsets to search (``<input list>`` + ``<datalist>``: typing
"new" or "UTC+05:30" narrows it, and it works without script), read leniently — case and
spaces forgiven — and validated by :func:`digestd.readers.subscribers.parse_timezone`.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

from digestd.readers.subscribers import RENAMED_ZONES

# Old aliases kept by the zone database for compatibility ("US/Eastern"): still accepted
# when typed, but not offered beside the Region/City names they duplicate.
_LEGACY = ("Etc/", "SystemV/", "US/", "Canada/", "Brazil/", "Chile/", "Mexico/")


@cache
def zone_names() -> tuple[str, ...]:
    """Region/City names (what browsers report and people recognise), plus UTC: the
    database's own zones, not its aliases (Asia/Chungking for Asia/Shanghai)."""
    canonical = _canonical()
    zones = sorted(
        z
        for z in available_timezones()
        if "/" in z
        and not z.startswith(_LEGACY)
        and z not in RENAMED_ZONES
        and (canonical is None or z in canonical)
    )
    return (*zones, "UTC")


@cache
def _canonical() -> frozenset[str] | None:
    """The zones of the database zoneinfo reads, aliases left out: the "Z" lines of its
    tzdata.zi, and the zones of zone.tab, since a database built without backzone makes
    some a country names links (Europe/Amsterdam to Europe/Brussels). None: neither file
    is there, and every name is offered."""
    zones = {
        line.split()[1] for line in _zone_file("tzdata.zi").splitlines() if line.startswith("Z ")
    }
    for line in _zone_file("zone.tab").splitlines():
        columns = line.split("\t")
        if len(columns) >= 3 and not line.startswith("#"):
            zones.add(columns[2])
    return frozenset(zones) or None


def same_zone(one: str, other: str) -> bool:
    """Whether two names are one zone: an alias and the zone it names ("Asia/Chungking"
    and "Asia/Shanghai", "US/Pacific" and "America/Los_Angeles") are; two zones a country
    each is known by are not, though a database built without backzone links them
    (Europe/Amsterdam to Europe/Brussels)."""
    return _zone_of(one) == _zone_of(other)


def _zone_of(name: str) -> str:
    name = RENAMED_ZONES.get(name, name)
    canonical = _canonical()
    links = _links()
    for _ in range(len(links)):  # an alias of an alias, in a database that has them
        if name not in links or (canonical is not None and name in canonical):
            break
        name = links[name]
    return name


@cache
def _links() -> dict[str, str]:
    """Each alias of the database zoneinfo reads and what it names: its tzdata.zi's "L
    target alias" lines."""
    found = {}
    for line in _zone_file("tzdata.zi").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "L":
            found[fields[2]] = fields[1]
    return found


def _zone_file(name: str) -> str:
    """A file of the zone database where zoneinfo looks: the system's, then the tzdata
    package's ("" when neither has it)."""
    for directory in zoneinfo.TZPATH:
        path = Path(directory) / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    try:
        return resources.files("tzdata.zoneinfo").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, OSError):
        return ""


@cache
def _by_folded_name() -> dict[str, str]:
    found = {_fold(name): name for name in available_timezones()}
    found.update({_fold(old): new for old, new in RENAMED_ZONES.items()})
    return found


@cache
def _by_city() -> dict[str, str]:
    """The offered zones by their city alone ("los_angeles"), where only one has it; then
    an alias's city no offered zone has ("montreal"), as typing it worked before aliases
    left the list."""
    found = _unique_cities(zone_names())
    aliases = (z for z in available_timezones() if "/" in z and not z.startswith(_LEGACY))
    return _unique_cities(sorted(aliases)) | found


def _unique_cities(names: Iterable[str]) -> dict[str, str]:
    found: dict[str, str | None] = {}
    for name in names:
        city = _fold(name.rpartition("/")[2])
        found[city] = None if city in found else name
    return {city: name for city, name in found.items() if name is not None}


def _fold(text: str) -> str:
    return "_".join(text.split()).casefold()


def find_zone(text: str) -> str:
    """The zone a person meant by ``text`` ("america/new york" is America/New_York, and
    "Paris" or "los angeles" alone, as the picker's hint suggests, the one zone of that
    city); the text itself when no zone has that name, for the validation to refuse it."""
    text = text.strip()
    folded = _fold(text)
    return _by_folded_name().get(folded) or _by_city().get(folded, text)


def offset(zone: str, at: datetime) -> str:
    """ "UTC+05:30", "UTC-03:00", "UTC+00:00" at the instant ``at``."""
    delta = at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def zone_options(now: datetime) -> list[tuple[str, str]]:
    """(name, its UTC offset now) for the picker; offsets move with DST, so they are
    worked out once an hour."""
    return _options(now.replace(minute=0, second=0, microsecond=0))


@lru_cache(maxsize=2)
def _options(hour: datetime) -> list[tuple[str, str]]:
    return [(name, offset(name, hour)) for name in zone_names()]

"""The timezone picker's list: the zone database's zones, not its aliases, read from the
files of the database zoneinfo itself reads."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from digestd.web import zones

# A database built without backzone (the tzdata package's kind): Europe/Amsterdam is a link
# there, though zone.tab names it as the Netherlands' zone.
TZDATA_ZI = """# version 2025b
Z Europe/Brussels 0:17:30 - LMT 1880
Z Asia/Shanghai 8:5:43 - LMT 1901
L Europe/Brussels Europe/Amsterdam
L Asia/Shanghai Asia/Chungking
"""
ZONE_TAB = """# tzdb timezone descriptions
BE\t+5050+00420\tEurope/Brussels
NL\t+5222+00454\tEurope/Amsterdam
CN\t+3114+12128\tAsia/Shanghai\tBeijing Time
"""


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "tzdata.zi").write_text(TZDATA_ZI, encoding="utf-8")
    (tmp_path / "zone.tab").write_text(ZONE_TAB, encoding="utf-8")
    zoneinfo.reset_tzpath([str(tmp_path)])
    zones._canonical.cache_clear()
    yield tmp_path
    zoneinfo.reset_tzpath()
    zones._canonical.cache_clear()


def test_zones_and_the_zones_of_countries_are_offered_and_aliases_not(database: Path) -> None:
    assert zones._canonical() == frozenset({"Europe/Brussels", "Asia/Shanghai", "Europe/Amsterdam"})

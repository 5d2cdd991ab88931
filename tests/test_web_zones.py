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
    zones._links.cache_clear()
    yield tmp_path
    zoneinfo.reset_tzpath()
    zones._canonical.cache_clear()
    zones._links.cache_clear()


def test_zones_and_the_zones_of_countries_are_offered_and_aliases_not(database: Path) -> None:
    assert zones._canonical() == frozenset({"Europe/Brussels", "Asia/Shanghai", "Europe/Amsterdam"})


def test_an_alias_is_the_zone_it_names_and_a_countrys_zone_is_its_own(database: Path) -> None:
    assert zones.same_zone("Asia/Chungking", "Asia/Shanghai")
    assert zones.same_zone("Asia/Shanghai", "Asia/Chungking")
    assert zones.same_zone("Asia/Calcutta", "Asia/Kolkata")  # a rename browsers still say
    # Linked in this database, yet the Netherlands' zone in zone.tab: a reader asking for
    # Amsterdam did not ask for Brussels.
    assert not zones.same_zone("Europe/Amsterdam", "Europe/Brussels")
    assert not zones.same_zone("Asia/Shanghai", "Europe/Brussels")

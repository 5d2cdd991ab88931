"""The preferences page's pause (1, 2 or 4 weeks, or until a date), its timezone picker,
and "what you'll get next" after every change, in the reader's own zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from digestd.models import SubscriberStatus
from tests.conftest import WebRig
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)  # Sunday; 10:00 in Paris


def _reader(web: WebRig) -> str:
    signup_form(web, "ann@example.com")  # AI and Robotics, daily, Europe/Paris
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    return links["preferences"]


def _post(web: WebRig, url: str, **data: Any) -> Any:
    token = csrf_of(web.client.get(url).text)
    return web.client.post(url, data={"csrf": token, **data})


def _stored(web: WebRig) -> tuple[object, ...]:
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    return (
        reader.status,
        reader.paused_until,
        reader.category_slugs,
        reader.wants_daily,
        reader.wants_weekly,
        reader.timezone,
        reader.next_daily_at,
        reader.next_weekly_at,
    )


@pytest.mark.parametrize(
    ("choice", "until", "day"),
    [
        ("1w", datetime(2026, 12, 5, 23, 0, tzinfo=UTC), "Sunday 6 December"),
        ("2w", datetime(2026, 12, 12, 23, 0, tzinfo=UTC), "Sunday 13 December"),
        ("4w", datetime(2026, 12, 26, 23, 0, tzinfo=UTC), "Sunday 27 December"),
    ],
)
def test_a_pause_of_weeks_ends_at_local_midnight_and_says_what_comes_then(
    web: WebRig, choice: str, until: datetime, day: str
) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        answer = _post(web, url, action="pause", pause_for=choice)
    assert answer.status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.PAUSED
    assert reader.paused_until == until  # midnight in Paris (UTC+1)
    assert reader.next_daily_at is None
    words = text_of(answer.text)
    assert f"Paused until {day}: your digests start again by themselves that day." in words
    # The notice does not say it again, without the date, right above.
    assert "Your digests are paused. They start again" not in words
    assert f"What you'll get next The daily digest: {day}, 07:00 Europe/Paris" in words


def _checked(page: str) -> list[str]:
    return re.findall(r'name="pause_for" value="(\w+)" checked', page)


def test_changing_a_pause_starts_from_the_pause_the_reader_has(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        url = _reader(web)
        assert _checked(web.client.get(url).text) == ["2w"]  # the usual offer
        _post(web, url, action="pause", pause_for="1w")
        page = web.client.get(url).text
        assert "Change the pause" in text_of(page) and _checked(page) == ["1w"]
        assert 'name="pause_until" min="2026-11-30" max="2027-11-29">' in page  # no date
        clock.shift(timedelta(days=2))  # a week from then is now 5 days away: a date
        page = web.client.get(url).text
        assert _checked(page) == ["date"]
        assert 'min="2026-12-02" max="2027-12-01" value="2026-12-06"' in page
        with web.service.sessions.begin() as session:  # a pause with no end (an operator's)
            reader = web.subscriber("ann@example.com")
            assert reader is not None
            session.merge(reader).paused_until = None
        assert _checked(web.client.get(url).text) == []


def test_a_pause_until_a_chosen_date(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        page = web.client.get(url).text
        # The first date the server takes (it refuses today: "choose a date after today")
        assert 'type="date" id="pause_until" name="pause_until" min="2026-11-30"' in page
        answer = _post(web, url, action="pause", pause_for="date", pause_until="2027-01-04")
    assert answer.status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    assert reader.paused_until == datetime(2027, 1, 3, 23, 0, tzinfo=UTC)
    assert "The daily digest: Monday 4 January, 07:00 Europe/Paris" in text_of(answer.text)


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"pause_for": "date", "pause_until": "2026-11-29"}, "pause_until", "after today"),
        ({"pause_for": "date", "pause_until": "2026-11-01"}, "pause_until", "after today"),
        ({"pause_for": "date", "pause_until": "2027-12-01"}, "pause_until", "a year at most"),
        ({"pause_for": "date", "pause_until": "2026-13-01"}, "pause_until", "YYYY-MM-DD"),
        ({"pause_for": "date", "pause_until": "tomorrow"}, "pause_until", "YYYY-MM-DD"),
        ({"pause_for": "date"}, "pause_until", "choose the date"),
        ({"pause_for": "date", "pause_until": "2" * 5000}, "pause_until", "longer than 10"),
        ({"pause_for": "forever"}, "pause_for", "1, 2 or 4 weeks"),
        ({}, "pause_for", "1, 2 or 4 weeks"),
        ({"pause_for": "2w\r\nX: y"}, "pause_for", "line breaks"),
    ],
)
def test_a_bad_pause_is_refused_by_its_field_and_changes_nothing(
    web: WebRig, fields: dict[str, str], field: str, says: str
) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        before = _stored(web)
        answer = _post(web, url, action="pause", **fields)
    assert answer.status_code == 400
    assert f'<p class="field-error" id="{field}-error">' in answer.text
    assert says.lower() in text_of(answer.text).lower()
    assert _stored(web) == before


def test_saving_says_what_comes_next_in_the_new_zone(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        answer = _post(
            web,
            url,
            action="save",
            categories=["ai"],
            frequency="both",
            timezone="asia/tokyo",  # typed as people type it
        )
    assert answer.status_code == 200
    words = text_of(answer.text)
    assert "Your preferences are saved." in words
    # 18:00 in Tokyo now: Monday's daily, then Sunday's recap
    assert (
        "What you'll get next The daily digest: Monday 30 November, 07:00 Asia/Tokyo "
        "The weekly recap: Sunday 6 December, 08:00 Asia/Tokyo "
        "A day with no new stories in your topics sends nothing" in words
    )
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.timezone == "Asia/Tokyo"


@pytest.mark.parametrize("zone", ["Atlantis/Capital", "Europe/" + "x" * 100, "<b>UTC</b>"])
def test_a_bad_timezone_is_shown_by_its_field_with_the_choices_kept(web: WebRig, zone: str) -> None:
    with time_machine.travel(NOW, tick=False):
        url = _reader(web)
        before = _stored(web)
        answer = _post(
            web, url, action="save", categories=["quantum"], frequency="weekly", timezone=zone
        )
    assert answer.status_code == 400
    assert '<p class="field-error" id="timezone-error">' in answer.text
    assert 'value="quantum" class="cat" checked' in answer.text
    assert 'value="weekly" checked' in answer.text
    assert "<b>UTC</b>" not in answer.text
    assert _stored(web) == before


def test_resuming_a_pause_says_when_the_next_digest_comes(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        url = _reader(web)
        _post(web, url, action="pause", pause_for="4w")
        clock.shift(timedelta(days=2))
        answer = _post(web, url, action="resume")
    assert "Your digests are back on." in text_of(answer.text)
    assert "The daily digest: Wednesday 2 December, 07:00 Europe/Paris" in text_of(answer.text)
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.paused_until is None

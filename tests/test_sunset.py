"""The sunset of a silent reader over simulated weeks (``DIGESTD_TRACK_CLICKS=reader``, the
tick's clock injected): one "still want these?" email after DIGESTD_SUNSET_WEEKS without a
click, then the weekly recap only, then paused with an email saying so, each step recorded;
a click at any time, or an answer to the email, brings them back as they were."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import time_machine

from digestd.models import SubscriberStatus
from digestd.readers.sunset import steps
from tests.admin_client import sign_in
from tests.click_helpers import ADMIN, SENT, settle, sign_up, stories, tracked_links
from tests.conftest import WebRig
from tests.helpers import article, parse, parts
from tests.web_helpers import csrf_of, text_of

WEEK = timedelta(weeks=1)
ASK = SENT + 12 * WEEK + timedelta(hours=1)


@pytest.fixture
def reader_mode(web_env: dict[str, str]) -> Iterator[dict[str, str]]:
    web_env["DIGESTD_TRACK_CLICKS"] = "reader"
    yield web_env


def _first_daily(web: WebRig) -> bytes:
    """Ann (AI and Robotics, daily) is sent one daily; reader clicks recorded from before."""
    assert web.client.post("/api/articles", json=stories(), headers=ADMIN).status_code == 200
    sign_up(web, "ann@example.com")
    web.portal.call(web.service.tick, SENT - timedelta(hours=2))  # reader mode noted
    before = len(web.smtp.messages)
    web.portal.call(web.service.tick, SENT)
    assert len(web.smtp.messages) == before + 1
    return web.smtp.messages[-1].data


def _tick(web: WebRig, at: datetime) -> list[bytes]:
    """The tick at ``at``; the sunset emails it sent."""
    before = len(web.smtp.messages)
    web.portal.call(web.service.tick, at)
    return [m.data for m in web.smtp.messages[before:] if b"sunset." in m.data]


def _ann(web: WebRig) -> tuple[str, bool, bool, str | None]:
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    return reader.status, reader.wants_daily, reader.wants_weekly, reader.sunset_stage


def _steps(web: WebRig) -> list[str]:
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    with web.service.sessions() as session:
        return [step for step, _ in steps(session, reader.id)]


def _subject(mail: bytes) -> str:
    return str(parse(mail)["Subject"])


def test_ask_once_then_weekly_then_paused_and_a_click_restores_the_daily(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    links = tracked_links(_first_daily(web))
    assert _tick(web, ASK - 2 * WEEK) == []  # ten weeks of silence: nothing yet

    (asked,) = _tick(web, ASK)
    assert _subject(asked) == "Still want your Tech Pulse digests?"
    text, html = parts(parse(asked))
    assert "for 12 weeks" in text and "only the weekly recap" in text
    choices = re.findall(r"https://digest\.example\.com(/engage/\S+\?choice=(\w+))", text)
    assert [c for _, c in choices] == ["keep", "weekly"]
    assert all(f'href="https://digest.example.com{path}"' in html for path, _ in choices)
    assert re.search(r"Unsubscribe:\r?\nhttps://digest\.example\.com/unsubscribe/", text)
    assert parse(asked)["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert _ann(web) == (SubscriberStatus.ACTIVE, True, False, "asked")
    ann = web.subscriber("ann@example.com")  # a bounce of this email names her (VERP)
    tag = web.smtp.messages[-1].envelope_from.removeprefix("bounces+").partition("@")[0]
    assert ann is not None and web.service.tokens.read_bounce_target(tag) == (None, ann.public_id)
    assert _tick(web, ASK + timedelta(hours=2)) == [] and _tick(web, ASK + WEEK) == []  # once

    assert _tick(web, ASK + 2 * WEEK + timedelta(hours=1)) == []
    assert _ann(web) == (SubscriberStatus.ACTIVE, False, True, "weekly")
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.next_daily_at is None and reader.next_weekly_at

    (paused,) = _tick(web, ASK + 6 * WEEK + timedelta(hours=2))
    assert _subject(paused) == "We've paused your Tech Pulse digests"
    assert "?choice=resume" in parts(parse(paused))[0]
    assert _ann(web) == (SubscriberStatus.PAUSED, False, True, "paused")
    assert _steps(web) == ["asked", "weekly", "paused"]

    clicked = ASK + 7 * WEEK
    with time_machine.travel(clicked, tick=False):
        assert web.client.get(links[1]).status_code == 303  # a story from the first daily
    settle(web, clicked + timedelta(minutes=1))
    assert _ann(web) == (SubscriberStatus.ACTIVE, True, True, None)
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.next_daily_at is not None
    assert _steps(web) == ["asked", "weekly", "paused", "restored"]
    assert _tick(web, clicked + 2 * WEEK) == []  # silence counts again from the click
    with time_machine.travel(clicked + timedelta(minutes=5), tick=False):  # on their admin page
        sign_in(web.client)
        assert reader is not None
        page = web.client.get(f"/admin/subscribers/{reader.id}").text
    clicks = text_of(page.split('id="reader-clicks"', 1)[1].split("</dl>", 1)[0])
    assert "Last click 2027-04-12 07:00 UTC" in clicks and "Sunset none" in clicks
    steps = page.split('id="sunset-steps"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>(\w+)</td>", steps) == ["asked", "weekly", "paused", "restored"]


def test_keep_from_the_email_ends_the_sunset_and_weekly_switches(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    _first_daily(web)
    (asked,) = _tick(web, ASK)
    text = parts(parse(asked))[0]
    keep = re.search(r"https://digest\.example\.com(/engage/\S+\?choice=keep)", text)
    assert keep is not None
    with time_machine.travel(ASK + timedelta(days=1), tick=False):
        page = web.client.get(keep.group(1))  # a scanner, or the reader looking
        assert page.status_code == 200 and _ann(web)[3] == "asked"
        done = web.client.post(keep.group(1), data={"csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "daily digest" in done.text
    assert _ann(web) == (SubscriberStatus.ACTIVE, True, False, None)
    assert _tick(web, ASK + 3 * WEEK) == []  # no move to weekly, no second email
    assert _ann(web)[1] is True and _steps(web) == ["asked", "kept"]

    weekly = keep.group(1).replace("choice=keep", "choice=weekly")
    with time_machine.travel(ASK + 3 * WEEK, tick=False):
        page = web.client.get(weekly)
        web.client.post(weekly, data={"csrf": csrf_of(page.text)})
        assert _ann(web) == (SubscriberStatus.ACTIVE, False, True, None)
        assert web.client.get(weekly.replace("choice=weekly", "choice=never")).status_code == 400
        forged = weekly.replace("/engage/", "/engage/x")
        assert web.client.post(forged, data={"csrf": csrf_of(page.text)}).status_code == 400
    with time_machine.travel(ASK + 10 * WEEK, tick=False):
        assert web.client.get(weekly).status_code == 400  # expired after 60 days


def test_turning_reader_mode_on_does_not_ask_the_whole_list_at_once(
    web_env: dict[str, str], web: WebRig
) -> None:
    """A list on aggregate for months, then reader: silence counts from the switch."""
    _first_daily(web)  # aggregate: nothing per reader
    assert not web.service.settings.tracks_readers
    from dataclasses import replace

    web.service.settings = replace(web.service.settings, track_clicks="reader")
    web.service._sunset = None
    assert _tick(web, ASK) == []  # reader clicks only began now
    day = ASK + timedelta(days=1)
    news = article("later-1", "ai", day - timedelta(hours=3), score=5)
    assert web.client.post("/api/articles", json=[news], headers=ADMIN).status_code == 200
    before = len(web.smtp.messages)
    web.portal.call(web.service.tick, day)  # a digest since the switch
    assert len(web.smtp.messages) == before + 1
    assert _tick(web, ASK + 12 * WEEK + timedelta(days=2))  # twelve weeks after the switch


def test_aggregate_mode_never_sunsets(web: WebRig) -> None:
    _first_daily(web)
    assert _tick(web, ASK) == [] and _tick(web, ASK + 10 * WEEK) == []
    assert _ann(web) == (SubscriberStatus.ACTIVE, True, False, None) and _steps(web) == []


@pytest.mark.parametrize(("weeks", "says"), [(1, "for 1 week."), (12, "for 12 weeks.")])
def test_the_question_counts_its_weeks_in_english(web: WebRig, weeks: int, says: str) -> None:
    """With DIGESTD_SUNSET_WEEKS=1 it asked about a silence "for 1 weeks"."""
    from dataclasses import replace

    from digestd.ops.sunset import Reader, Sunset

    service = web.service
    settings = replace(service.settings, sunset_weeks=weeks)
    sunset = Sunset(settings, service.sessions, service.composer, service.transport)
    reader = Reader(1, "ann@example.com", "p" * 22, ["ai"], True)
    text, html = parts(parse(sunset.message(reader, "asked", SENT)))
    assert says in " ".join(text.split()) and says in text_of(html)


def test_a_quiet_stretch_without_digests_is_no_silence(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    """Weeks with no news send nothing: the reader had nothing to click. Their first digest
    after such a stretch starts the silence; the question waits for a silence that long."""
    sign_up(web, "ann@example.com")
    assert _tick(web, SENT - timedelta(hours=2)) == []  # reader mode noted; no news
    day = SENT + 13 * WEEK
    _tick(web, day - timedelta(days=1))  # the schedule moves past the days with no digest
    news = article("later-1", "ai", day - timedelta(hours=3), score=5)
    assert web.client.post("/api/articles", json=[news], headers=ADMIN).status_code == 200
    before = len(web.smtp.messages)
    assert _tick(web, day) == []
    assert len(web.smtp.messages) == before + 1  # the first digest in thirteen weeks
    assert _tick(web, day + timedelta(hours=1)) == []
    assert _tick(web, day + 11 * WEEK) == []
    assert _ann(web)[3] is None
    assert len(_tick(web, day + 12 * WEEK + timedelta(hours=1))) == 1
    assert _steps(web) == ["asked"]

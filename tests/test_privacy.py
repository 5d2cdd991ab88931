"""What is kept of clicks, for whom and how long: the preferences page says whether a
reader's clicks shape their digest and lets them switch it off (their clicks then stop
naming them); retention prunes clicks and sunset steps; erasure takes a reader's clicks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine
from sqlalchemy import select

from digestd.models import Click, ClickInbox, Edition, SubscriberStatus, SunsetStep, Suppression
from digestd.ops.retention import prune
from digestd.planning.interests import profiles
from tests.click_helpers import ADMIN, SENT, count, send_daily, settle, sign_up, tracked_links
from tests.conftest import WebRig
from tests.web_helpers import csrf_of, links_in, text_of


@pytest.fixture
def reader_mode(web_env: dict[str, str]) -> Iterator[dict[str, str]]:
    web_env["DIGESTD_TRACK_CLICKS"] = "reader"
    yield web_env


def _clicks_section(page: str) -> str:
    words = text_of(page)
    return words[words.index("Your clicks") : words.index("Delete my data")]


def _post(web: WebRig, url: str, **data: str) -> httpx.Response:
    token = csrf_of(web.client.get(url).text)
    answer: httpx.Response = web.client.post(url, data={"csrf": token, **data})
    return answer


def test_the_page_says_clicks_are_counted_without_the_reader_by_default(web: WebRig) -> None:
    preferences = links_in(send_daily(web))["preferences"]
    section = _clicks_section(web.client.get(preferences).text)
    assert "Your clicks do not shape your digest" in section
    assert "never with your address" in section and "Let my clicks" not in section


def test_turning_learning_off_stops_clicks_naming_the_reader(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    digest = send_daily(web)
    preferences, links = links_in(digest)["preferences"], tracked_links(digest)
    section = _clicks_section(web.client.get(preferences).text)
    assert "Your clicks shape your digest" in section and "Let my clicks shape" in section
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        web.client.get(links[4])
    settle(web, SENT + timedelta(hours=2))
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    assert count(web, Click, Click.subscriber_id == reader.id) == 1
    with web.service.sessions() as session:
        assert profiles(session, {reader.id: ["ai", "robotics"]}, SENT + timedelta(days=1))

    answer = _post(web, preferences, action="learning")  # the box unticked
    assert answer.status_code == 200 and "do not shape" in _clicks_section(answer.text)
    assert count(web, Click, Click.subscriber_id == reader.id) == 0
    assert count(web, Click) == 1  # still counted for its edition
    with time_machine.travel(SENT + timedelta(hours=3), tick=False):
        web.client.get(links[1])
    settle(web, SENT + timedelta(hours=4))
    assert count(web, Click) == 2 and count(web, Click, Click.subscriber_id.is_not(None)) == 0
    with web.service.sessions() as session:
        assert profiles(session, {reader.id: ["ai", "robotics"]}, SENT + timedelta(days=1)) == {}
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.learns is False
    assert reader.last_click_at == SENT + timedelta(hours=3)  # the date only, for the sunset

    _post(web, preferences, action="learning", learns="yes")
    assert "Your clicks shape" in _clicks_section(web.client.get(preferences).text)


@pytest.fixture
def off_mode(web_env: dict[str, str]) -> Iterator[dict[str, str]]:
    web_env["DIGESTD_TRACK_CLICKS"] = "off"
    yield web_env


def test_with_tracking_off_the_page_says_nothing_is_counted(
    off_mode: dict[str, str], web: WebRig
) -> None:
    preferences = links_in(send_daily(web))["preferences"]
    assert "we count nothing" in _clicks_section(web.client.get(preferences).text)


def test_retention_prunes_clicks_and_sunset_steps_older_than_the_window(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    send_daily(web)
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    now = datetime(2027, 6, 1, tzinfo=UTC)
    with web.service.sessions.begin() as session:
        recent = Edition(kind="daily", period="2027-05-30", created_at=now)
        session.add(recent)
        session.flush()
        edition_id = recent.id
        for age in (100, 80):  # the clicks of an edition still kept, one of them old
            at = now - timedelta(days=age)
            session.add(
                Click(
                    edition_id=edition_id,
                    subscriber_id=reader.id,
                    article_id="ai-0",
                    position=1,
                    category="ai",
                    source="S0",
                    clicked_at=at,
                )
            )
            session.add(SunsetStep(subscriber_id=reader.id, step="asked", at=at))
        session.add(ClickInbox(delivery_id=1, position=1, clicked_at=now - timedelta(days=2)))
    report = prune(web.service.sessions, now, 90)
    assert report.clicks == 1
    with web.service.sessions() as session:
        kept = session.scalars(select(Click.clicked_at)).all()
        steps = session.scalars(select(SunsetStep.at)).all()
    assert kept == [now - timedelta(days=80)] and steps == [now - timedelta(days=80)]
    assert count(web, ClickInbox) == 0


def test_erasure_takes_the_readers_clicks_and_steps(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    digest = send_daily(web)
    with time_machine.travel(SENT + timedelta(hours=1), tick=False):
        web.client.get(tracked_links(digest)[0])
    settle(web, SENT + timedelta(hours=2))
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    with web.service.sessions.begin() as session:
        session.add(SunsetStep(subscriber_id=reader.id, step="asked", at=SENT))
    assert count(web, Click) == 1
    preferences = links_in(digest)["preferences"]
    done = _post(web, preferences, action="delete", confirm_delete="yes")
    assert done.status_code == 200
    assert count(web, Click) == 0 and count(web, SunsetStep) == 0


BOUNCE = """From: MAILER-DAEMON@mx.example.com
To: {verp}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; ann@example.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <ann@example.com>: User unknown

--B--
"""


def test_an_erased_readers_old_email_acts_for_nobody_else(
    reader_mode: dict[str, str], web: WebRig
) -> None:
    """Ann is sent the newest queue row, clicks, and erases herself; Bob's daily is planned
    next. Her email's bounce address and links named her row by id: they must not name
    Bob's (SQLite used to give his row her id), and her click not yet counted goes too."""
    digest = send_daily(web)
    ann_bounces_to = web.smtp.messages[-1].envelope_from
    with time_machine.travel(SENT + timedelta(minutes=30), tick=False):
        web.client.get(tracked_links(digest)[0])
    sign_up(web, "bob@example.com", timezone="America/New_York")
    erased = _post(web, links_in(digest)["preferences"], action="delete", confirm_delete="yes")
    assert erased.status_code == 200 and count(web, ClickInbox) == 0
    web.portal.call(web.service.tick, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))  # Bob's 07:00
    assert web.smtp.messages[-1].envelope_from != ann_bounces_to
    with time_machine.travel(SENT + timedelta(hours=7), tick=False):
        web.client.get(tracked_links(digest)[1])  # someone with Ann's old email clicks
        report = web.client.post(
            "/api/bounces",
            content=BOUNCE.format(verp=ann_bounces_to).encode(),
            headers={**ADMIN, "Content-Type": "message/rfc822"},
        )
    assert report.status_code == 200, report.text
    settle(web, SENT + timedelta(hours=8))
    bob = web.subscriber("bob@example.com")
    assert bob is not None and bob.status == SubscriberStatus.ACTIVE
    assert bob.last_click_at is None and count(web, Click, Click.subscriber_id == bob.id) == 0
    assert count(web, Suppression) == 1  # Ann's erasure, nobody's bounce

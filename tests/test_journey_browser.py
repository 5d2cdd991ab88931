"""A new reader's whole journey in real Chromium, against the app served by uvicorn, mail
over a real (in-process) SMTP server, the service's tick driven with an injected clock:

signup link with topics prefilled → empty email: the error inline, every choice kept →
subscribe → confirm → the welcome email with the exact first send time → the Sunday of a
reader of both brings one email → pause for 2 weeks: no mail, then resumed by itself →
mute a category from an email → the unsubscribe page's alternatives, and the one-click
POST still working with no cookies. Stored state is asserted at every step; screenshots
land in test-artifacts/journey/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize, expect
from sqlalchemy import select

from digestd.config import load_settings
from digestd.models import Delivery, Edition, SubscriberStatus
from digestd.service import Service
from tests.browser import ARTIFACTS, chromium, ticks
from tests.conftest import AppRig, SmtpSink
from tests.helpers import article, parse, parts
from tests.live_server import LiveServer
from tests.seeding import add_articles
from tests.web_helpers import links_in

OUT = ARTIFACTS / "journey"
EMAIL = "reader@example.com"
TUESDAY = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # 09:00 in New York (UTC-5)
SUNDAY = datetime(2026, 12, 6, tzinfo=UTC)
PHONE: ViewportSize = {"width": 375, "height": 667}


@dataclass
class Clock:
    """The web app's clock, moved by the test."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Journey:
    base: str
    env: dict[str, str]
    rig: AppRig
    clock: Clock
    page: Page

    @property
    def mail(self) -> list[Any]:
        return self.rig.smtp.messages

    def stored(self) -> Any:
        reader = self.rig.subscriber(EMAIL)
        assert reader is not None
        return reader

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base}{path}")

    def ticks(self, *instants: datetime) -> None:
        ticks(self.env, *instants)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def _articles() -> list[dict[str, Any]]:
    """Four stories a day in each of the reader's topics, from the week before to the end."""
    items = []
    moment = datetime(2026, 11, 24, tzinfo=UTC)
    while moment < datetime(2026, 12, 22, tzinfo=UTC):
        for n, category in enumerate(("ai", "robotics", "quantum")):
            key = f"{category}-{moment:%m%d%H}"
            items.append(article(key, category, moment, score=5 - n, source=f"Wire {key}"))
        moment += timedelta(hours=6)
    return items


@pytest.fixture
def journey(web_env: dict[str, str], smtp_server: SmtpSink) -> Iterator[Journey]:
    OUT.mkdir(parents=True, exist_ok=True)
    clock = Clock(TUESDAY - timedelta(hours=2))
    service = Service.build(load_settings(web_env))
    with service.sessions.begin() as session:
        add_articles(session, _articles())
    with LiveServer(service, clock=clock) as server, chromium() as browser:
        context = browser.new_context(timezone_id="America/New_York", viewport=PHONE)
        page = context.new_page()
        yield Journey(server.url, web_env, AppRig(service, smtp_server), clock, page)
        context.close()
    service.engine.dispose()


@pytest.mark.slow  # a browser and three weeks of ticks: ~20 s
def test_a_new_readers_journey(journey: Journey) -> None:
    # Tuesday's editions are in the public archive (published at 07:00 UTC).
    journey.ticks(TUESDAY.replace(hour=7, minute=5))
    journey.clock.now = TUESDAY
    _signup_with_a_mistake_first(journey)
    _confirm_and_welcome(journey)
    _sunday_brings_one_email(journey)
    _pause_for_two_weeks_then_resumed(journey)
    _mute_a_category_from_an_email(journey)
    _unsubscribe_alternatives_and_one_click(journey)


def _signup_with_a_mistake_first(j: Journey) -> None:
    page = j.page
    j.goto("/subscribe?categories=ai,robotics&frequency=both")
    expect(page.locator("#topics-summary")).to_have_text("AI, Robotics")
    assert page.locator("#timezone").input_value() == "America/New_York"  # from Intl
    # On a phone, the address and the button fit the first screen.
    button = page.get_by_role("button", name="Subscribe").bounding_box()
    assert button is not None and button["y"] + button["height"] <= PHONE["height"]
    assert not page.locator("input.cat[value=quantum]").is_visible()  # the tiles are folded
    j.shot("signup-375")
    page.set_viewport_size({"width": 1280, "height": 800})
    j.shot("signup-1280")
    page.set_viewport_size(PHONE)

    page.get_by_text("· change").click()  # open the 26 tiles and add one
    page.get_by_label("Quantum").check()
    expect(page.locator("#topics-summary")).to_have_text("AI, Quantum, Robotics")
    page.get_by_role("button", name="Subscribe").click()  # no address yet
    error = page.locator("#email-error")
    expect(error).to_have_text("Enter your email address, e.g. you@example.com.")
    email_box, error_box = page.locator("#email").bounding_box(), error.bounding_box()
    assert email_box and error_box and 0 <= error_box["y"] - email_box["y"] < 100  # next to it
    for slug in ("ai", "quantum", "robotics"):
        assert page.is_checked(f"input.cat[value={slug}]")
    assert page.is_checked("input[name=frequency][value=both]")
    assert page.locator("#timezone").input_value() == "America/New_York"
    assert j.rig.subscriber(EMAIL) is None and j.mail == []
    j.shot("signup-error-375")

    page.get_by_label("Your email").fill(EMAIL)
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    j.rig.smtp.wait_for(1)  # the signup's work runs after the answer; its email comes last
    reader = j.stored()
    assert reader.status == SubscriberStatus.PENDING and reader.consent_at is None
    assert reader.category_slugs == ["ai", "quantum", "robotics"]
    assert (reader.wants_daily, reader.wants_weekly, reader.timezone) == (
        True,
        True,
        "America/New_York",
    )


def _confirm_and_welcome(j: Journey) -> None:
    confirm = links_in(j.rig.smtp.wait_for(1)[0].data)["confirm"]
    j.goto(confirm)
    j.page.get_by_role("heading", name="You're subscribed").wait_for()
    first = j.page.locator("#first-digest")
    expect(first).to_contain_text(
        "Your first daily digest arrives tomorrow at 07:00 America/New_York."
    )
    expect(j.page.get_by_role("link", name="AI daily · Tuesday 1 December 2026")).to_have_attribute(
        "href", "/archive/ai/daily/2026-12-01"
    )
    j.shot("confirmed-375")
    reader = j.stored()
    assert reader.status == SubscriberStatus.ACTIVE and reader.consent_at == TUESDAY
    assert reader.next_daily_at == datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert reader.next_weekly_at == datetime(2026, 12, 6, 13, 0, tzinfo=UTC)

    welcome = parse(j.rig.smtp.wait_for(2)[1].data)
    assert welcome["Subject"] == (
        "Welcome to Tech Pulse: your first digest arrives tomorrow at 07:00"
    )
    text, _ = parts(welcome)
    assert "Your daily digest arrives tomorrow at 07:00 America/New_York." in " ".join(text.split())
    assert "https://digest.example.com/archive/ai/daily/2026-12-01" in text


def _deliveries(j: Journey, period: str) -> list[tuple[str, str, str | None]]:
    with j.rig.service.sessions() as session:
        rows = session.execute(
            select(Edition.kind, Delivery.status, Delivery.last_error)
            .join(Delivery, Delivery.edition_id == Edition.id)
            .where(Edition.period == period)
            .order_by(Edition.kind)
        )
        return [(kind, status, why) for kind, status, why in rows]


def _sunday_brings_one_email(j: Journey) -> None:
    # Wednesday to Saturday: a daily each morning, 07:00 in New York.
    j.ticks(*(datetime(2026, 12, day, 12, 0, tzinfo=UTC) for day in (2, 3, 4, 5)))
    assert len(j.rig.smtp.wait_for(6)) == 6  # confirmation, welcome, four dailies
    j.ticks(SUNDAY.replace(hour=12), SUNDAY.replace(hour=13))  # the daily's time, the recap's
    sunday = j.rig.smtp.wait_for(7)[6:]
    assert len(sunday) == 1
    assert parse(sunday[0].data)["Subject"].startswith("Week in review")
    assert _deliveries(j, "2026-12-06") == [
        ("daily", "skipped", "Sunday: the weekly recap goes out instead"),
        ("weekly", "sent", None),
    ]


def _pause_for_two_weeks_then_resumed(j: Journey) -> None:
    j.clock.now = SUNDAY.replace(hour=14)  # 09:00 in New York
    j.goto(links_in(j.mail[-1].data)["preferences"])
    expect(j.page.locator("#next")).to_contain_text("The daily digest: Monday 7 December, 07:00")
    j.page.get_by_label("2 weeks").check()
    j.page.get_by_role("button", name="Pause digests").click()
    expect(j.page.locator("#paused")).to_contain_text("Paused until Sunday 20 December")
    j.shot("preferences-paused-375")
    reader = j.stored()
    assert reader.status == SubscriberStatus.PAUSED
    assert reader.paused_until == datetime(2026, 12, 20, 5, 0, tzinfo=UTC)  # midnight there

    sent = len(j.mail)
    days = [SUNDAY + timedelta(days=n, hours=12) for n in range(1, 14)]
    j.ticks(*days, datetime(2026, 12, 13, 13, 0, tzinfo=UTC))  # and the Sunday between
    assert len(j.mail) == sent and j.stored().status == SubscriberStatus.PAUSED
    # The pause's end, then Sunday 20 December: resumed by itself, one email (the recap).
    j.ticks(reader.paused_until, datetime(2026, 12, 20, 12, 0, tzinfo=UTC))
    assert j.stored().status == SubscriberStatus.ACTIVE and j.stored().paused_until is None
    j.ticks(datetime(2026, 12, 20, 13, 0, tzinfo=UTC))
    back = j.rig.smtp.wait_for(sent + 1)[sent:]
    assert len(back) == 1 and parse(back[0].data)["Subject"].startswith("Week in review")


def _mute_a_category_from_an_email(j: Journey) -> None:
    mute = links_in(j.mail[-1].data)["mute"]
    assert mute.endswith("?category=ai")
    j.goto(mute)
    assert j.stored().category_slugs == ["ai", "quantum", "robotics"]  # a GET changes nothing
    j.page.get_by_role("button", name="Mute AI").click()
    j.page.get_by_role("heading", name="AI is muted").wait_for()
    assert j.stored().category_slugs == ["quantum", "robotics"]


def _unsubscribe_alternatives_and_one_click(j: Journey) -> None:
    unsubscribe = links_in(j.mail[-1].data)["unsubscribe"]
    j.goto(unsubscribe)
    for name in ("Unsubscribe", "Weekly recap instead", "Pause for a while", "Fewer topics"):
        expect(j.page.get_by_role("button", name=name, exact=True)).to_be_visible()
    j.shot("unsubscribe-375")
    assert j.stored().status == SubscriberStatus.ACTIVE  # the page changed nothing
    # A mail provider's RFC 8058 POST: no cookie, no token, no browser.
    with httpx.Client(base_url=j.base) as provider:
        answer = provider.post(
            unsubscribe,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200 and "set-cookie" not in answer.headers
    assert "cookie" not in answer.request.headers
    reader = j.stored()
    assert reader.status == SubscriberStatus.UNSUBSCRIBED
    assert reader.next_daily_at is None and reader.next_weekly_at is None

"""After confirming: the page and a welcome email (sent once) say exactly when the first
digest comes, in the reader's zone, and link the latest public editions of their topics.
An "add these topics" link acts only on its page's POST. Real app, real SMTP server,
editions published by the real tick."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.models import MailThrottle
from digestd.readers.mailbox import EVERYONE, mailbox_key
from digestd.service import Service
from digestd.web.app import create_app
from digestd.web.context import WebPolicy
from tests.conftest import ADMIN_TOKEN, CLIENT_IP, SmtpSink, WebRig
from tests.helpers import article, parse, parts
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

TUESDAY = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # 09:00 in New York
NEW_YORK = {"timezone": "America/New_York", "categories": ["ai", "robotics"]}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _publish_tuesdays_archive(web: WebRig) -> None:
    items = [
        article("ai-1", "ai", TUESDAY - timedelta(hours=12), score=5),
        article("bot-1", "robotics", TUESDAY - timedelta(hours=10), score=3),
    ]
    assert web.client.post("/api/articles", json=items, headers=ADMIN).status_code == 200
    web.portal.call(web.service.tick, TUESDAY.replace(hour=7, minute=5))


def test_the_page_and_the_welcome_say_when_the_first_digest_comes(web: WebRig) -> None:
    _publish_tuesdays_archive(web)
    with time_machine.travel(TUESDAY, tick=False):
        signup_form(web, "ann@example.com", **NEW_YORK)
        confirm = links_in(web.smtp.messages[0].data)["confirm"]
        page = web.client.get(confirm)
        again = web.client.get(confirm)
    assert page.status_code == 200
    words = text_of(page.text).replace(" .", ".")  # after the time's <strong>
    assert "You're subscribed" in words
    # 09:00 on Tuesday in New York: Wednesday's 07:00 is tomorrow's
    assert "Your first daily digest arrives tomorrow at 07:00 America/New_York." in words
    assert 'href="/archive/ai/daily/2026-12-01"' in page.text
    assert 'href="/archive/robotics/daily/2026-12-01"' in page.text
    assert "Already confirmed" in text_of(again.text)

    assert len(web.smtp.messages) == 2  # the confirmation and one welcome, however many clicks
    welcome = parse(web.smtp.messages[1].data)
    assert (
        welcome["Subject"] == "Welcome to Tech Pulse: your first digest arrives tomorrow at 07:00"
    )
    assert welcome["To"] == "ann@example.com"
    assert welcome["List-Unsubscribe"].startswith("<https://digest.example.com/unsubscribe/")
    text, html = parts(welcome)
    one_line = " ".join(text.split())
    assert "Your daily digest arrives tomorrow at 07:00 America/New_York." in one_line
    # A promise kept: a day with nothing new in their topics sends no digest.
    quiet = "A day with no new stories in your topics sends nothing, rather than an empty email."
    assert quiet in one_line and quiet in words
    assert "on its way" not in one_line
    assert "covering AI and Robotics" in one_line
    for url in (
        "https://digest.example.com/archive/ai/daily/2026-12-01",
        "https://digest.example.com/archive/robotics/daily/2026-12-01",
    ):
        assert url in text and f'href="{url}"' in html
    assert "tomorrow at 07:00 America/New_York" in html
    assert max(len(line) for line in text.splitlines() if "://" not in line) <= 78
    links = links_in(web.smtp.messages[1].data)
    assert set(links) == {"preferences", "unsubscribe"}  # no confirmation link in a welcome


def test_a_reader_of_both_who_confirms_on_saturday_hears_of_sundays_recap_first(
    web: WebRig,
) -> None:
    saturday = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
    with time_machine.travel(saturday, tick=False):
        signup_form(web, "ann@example.com", frequency="both", timezone="Europe/Paris")
        page = web.client.get(links_in(web.smtp.messages[0].data)["confirm"])
    words = text_of(page.text).replace(" .", ".")
    assert (
        "Your first weekly recap arrives tomorrow at 08:00 Europe/Paris. "
        "Then the daily digest, Monday 7 December, 07:00 Europe/Paris." in words
    )
    assert "no edition" not in words and "Read the latest" not in words  # none published yet
    text, _ = parts(parse(web.smtp.messages[1].data))
    assert "Your weekly recap arrives tomorrow at 08:00 Europe/Paris." in " ".join(text.split())


@pytest.mark.parametrize(
    ("zone", "clicked", "day"),
    [
        # 06:52 on Monday 7 December in Paris: 07:00 is today's
        ("Europe/Paris", datetime(2026, 12, 7, 5, 52, tzinfo=UTC), "today"),
        # 23:40 on Sunday in Los Angeles, already the 7th in UTC: tomorrow's all the same
        ("America/Los_Angeles", datetime(2026, 12, 7, 7, 40, tzinfo=UTC), "tomorrow"),
        # 00:10 on Monday at UTC+14, still Sunday in UTC: today's
        ("Pacific/Kiritimati", datetime(2026, 12, 6, 10, 10, tzinfo=UTC), "today"),
    ],
)
def test_the_first_digest_of_the_readers_own_today_or_tomorrow_is_named_so(
    web: WebRig, zone: str, clicked: datetime, day: str
) -> None:
    """The subject, the email and the page say the same day, by the reader's calendar at
    the click (the welcome is composed then)."""
    with time_machine.travel(clicked, tick=False):
        signup_form(web, "ann@example.com", timezone=zone)
        page = web.client.get(links_in(web.smtp.messages[0].data)["confirm"])
    said = f"{day} at 07:00 {zone}"
    assert f"Your first daily digest arrives {said}." in text_of(page.text).replace(" .", ".")
    welcome = parse(web.smtp.messages[1].data)
    assert welcome["Subject"] == f"Welcome to Tech Pulse: your first digest arrives {day} at 07:00"
    text, html = parts(welcome)
    assert f"Your daily digest arrives {said}." in " ".join(text.split())
    assert f"<strong>{said}</strong>" in html
    assert f"Your first daily digest arrives {said}." in html  # the preheader


@pytest.fixture
def capped(web_env: dict[str, str], smtp_server: SmtpSink) -> Iterator[WebRig]:
    """The app with room for one signup email an hour, everyone together."""
    service = Service.build(load_settings(web_env))
    app = create_app(service, WebPolicy(signup_emails_per_hour=1))
    with TestClient(
        app, base_url="https://digest.example.com", client=(CLIENT_IP, 50000)
    ) as client:
        rig = WebRig(service, smtp_server, client)
        yield rig
        rig.portal.call(service.transport.close)
    service.engine.dispose()


def test_the_welcome_goes_through_the_signup_emails_hourly_cap(capped: WebRig) -> None:
    with time_machine.travel(TUESDAY, tick=False):
        signup_form(capped, "ann@example.com")
        page = capped.client.get(links_in(capped.smtp.messages[0].data)["confirm"])
    assert page.status_code == 200 and "You're subscribed" in text_of(page.text)
    assert len(capped.smtp.messages) == 1  # the cap held the welcome back
    assert capped.service.metrics.signup_emails_capped._value.get() == 1


def test_a_welcome_that_fails_gives_back_only_its_own_claim(web: WebRig) -> None:
    with time_machine.travel(TUESDAY, tick=False):
        signup_form(web, "ann@example.com")
        web.smtp.reject["ann@example.com"] = "550 5.1.1 No such user"
        assert web.client.get(links_in(web.smtp.messages[0].data)["confirm"]).status_code == 200
    assert len(web.smtp.messages) == 1
    with web.service.sessions() as session:
        everyone = session.get(MailThrottle, EVERYONE)
        inbox = session.get(MailThrottle, mailbox_key("ann@example.com"))
        assert everyone is not None and everyone.sent == 1  # the confirmation's, kept
        assert inbox is not None and inbox.sent == 1  # the welcome never counted here


def _offer(web: WebRig, clock: time_machine.Traveller) -> tuple[str, list[str]]:
    signup_form(web, "ann@example.com")
    web.client.get(links_in(web.smtp.messages[0].data)["confirm"])
    clock.shift(timedelta(minutes=11))
    web.client.post(
        "/subscribe",
        json={"email": "ann@example.com", "categories": ["quantum"], "frequency": "daily"},
    )
    link = links_in(web.smtp.messages[-1].data)["confirm"]
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    return link, reader.category_slugs


def test_forged_altered_and_wrong_links_add_no_topic(web: WebRig) -> None:
    with time_machine.travel(TUESDAY, tick=False) as clock:
        link, before = _offer(web, clock)
        csrf = csrf_of(web.client.get(link).text)
        token = link.rsplit("/", 1)[1]
        payload, stamp, signature = token.split(".")
        own_confirm = links_in(web.smtp.messages[0].data)["confirm"]
        for bad in (
            f"/confirm/{token[:-4]}AAAA",  # the signature tampered with
            f"/confirm/{payload[:-2]}xx.{stamp}.{signature}",  # the topics altered
            f"/confirm/{token[: len(token) // 2]}",  # cut short
            own_confirm,  # a "please confirm" link: it acts when opened, never by POST
        ):
            answer = web.client.post(bad, data={"csrf": csrf})
            assert answer.status_code in (400, 403), (bad, answer.status_code)
        assert web.client.post(link, data={"csrf": csrf[:-3] + "abc"}).status_code == 403
        clock.shift(timedelta(days=8))
        expired = web.client.post(link, data={"csrf": csrf})
        assert expired.status_code == 400 and "expired" in text_of(expired.text)
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.category_slugs == before == ["ai", "robotics"]


def test_coming_back_with_other_topics_shows_them_all_and_the_one_left_out(
    web: WebRig,
) -> None:
    with time_machine.travel(TUESDAY, tick=False) as clock:
        signup_form(web, "ann@example.com", categories=["quantum", "robotics"])
        first = links_in(web.smtp.messages[0].data)
        web.client.get(first["confirm"])
        web.client.post(first["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        clock.shift(timedelta(minutes=11))
        signup_form(web, "ann@example.com", categories=["ai", "cybersecurity", "robotics"])
        page = web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
    words = text_of(page.text)
    assert "You're subscribed" in words and "now includes" not in words
    assert "You'll get stories on AI, Cybersecurity and Robotics." in words
    assert "Quantum is no longer included." in words
    text, html = parts(parse(web.smtp.messages[-1].data))  # the welcome
    assert "covering AI, Cybersecurity and Robotics" in " ".join(text.split())
    assert "AI, Cybersecurity and Robotics" in html

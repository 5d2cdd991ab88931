"""A signup for an address that exists changes nothing stored until the link in the email
it triggers is followed (SPEC §6): through the real app, a real SMTP server and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from digestd.models import Delivery, SubscriberStatus, Suppression, SuppressionReason
from digestd.readers.subscribers import email_hash
from digestd.readers.suppression import suppress
from tests.conftest import CLIENT_IP, WebRig
from tests.helpers import parse, parts, run_cli
from tests.web_helpers import SIGNUP, csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
STRANGER = {
    "categories": ["quantum"],
    "frequency": "weekly",
    "timezone": "America/New_York",
}


def _stored(web: WebRig, email: str = "ann@example.com") -> dict[str, Any]:
    """Everything a signup must not change about a reader."""
    reader = web.subscriber(email)
    assert reader is not None
    return {
        "status": reader.status,
        "categories": reader.category_slugs,
        "frequency": (reader.wants_daily, reader.wants_weekly),
        "timezone": reader.timezone,
        "consent": (
            reader.consent_at,
            reader.consent_ip,
            reader.consent_user_agent,
            reader.consent_source,
            reader.consent_wording,
        ),
        "confirmed_at": reader.confirmed_at,
        "unsubscribed_at": reader.unsubscribed_at,
        "next": (reader.next_daily_at, reader.next_weekly_at),
    }


def _stranger_signs_up(web: WebRig, email: str = "ann@example.com") -> Any:
    answer = web.client.post(
        "/subscribe",
        json={"email": email, **STRANGER},
        headers={"User-Agent": "StrangerBot/1.0"},
    )
    assert answer.status_code == 202
    return answer


def _active(web: WebRig, email: str = "ann@example.com", **fields: Any) -> dict[str, str]:
    signup_form(web, email, **fields)
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    return links


def test_an_unsubscribed_reader_stays_so_until_the_welcome_back_link_is_followed(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        first = _active(web)
        web.client.post(first["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        before = _stored(web)
        assert before["status"] == SubscriberStatus.UNSUBSCRIBED
        clock.shift(timedelta(minutes=11))
        _stranger_signs_up(web)
        assert _stored(web) == before

        mail = parse(web.smtp.messages[-1].data)
        assert mail["Subject"] == "Confirm to resume your Tech Pulse digests"
        text, _ = parts(mail)
        assert "Quantum" in text and "stay unsubscribed until you confirm" in text
        # Following the link moves their mornings to the zone asked for: the email says so.
        html = parts(mail)[1]
        for shown in (" ".join(text.split()), html):  # the text is wrapped at 72 columns
            assert "the weekly recap every Sunday (America/New_York time)" in shown
        # The first confirmation link predates the unsubscribe: it must not resubscribe.
        assert web.client.get(first["confirm"]).status_code == 410
        assert _stored(web) == before

        clock.shift(timedelta(hours=1))
        welcome_back = links_in(web.smtp.messages[-1].data)["confirm"]
        head = web.client.head(welcome_back)
        assert head.status_code == 200
        assert _stored(web) == before  # HEAD (a link checker) subscribes nobody
        page = web.client.get(welcome_back, headers={"User-Agent": "Reader/3"})
    assert page.status_code == 200 and "You're subscribed" in text_of(page.text)
    after = _stored(web)
    assert after["status"] == SubscriberStatus.ACTIVE
    assert after["categories"] == ["quantum"]
    assert after["frequency"] == (False, True) and after["timezone"] == "America/New_York"
    assert after["unsubscribed_at"] is None
    moment = NOW + timedelta(minutes=71)
    assert after["consent"][:3] == (moment, CLIENT_IP, "Reader/3")
    assert after["consent"][4] == "signup-v1"


@pytest.mark.parametrize("status", [SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED])
def test_bounced_and_complained_readers_stay_so_and_get_no_mail(
    web: WebRig, status: SubscriberStatus
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        _active(web)
        with web.service.sessions.begin() as session:
            reader = web.subscriber("ann@example.com")
            assert reader is not None
            reason = (
                SuppressionReason.HARD_BOUNCE
                if status == SubscriberStatus.BOUNCED
                else SuppressionReason.COMPLAINT
            )
            suppress(session, reader.id, status, reason, NOW)
        before = _stored(web)
        clock.shift(timedelta(hours=1))
        answer = _stranger_signs_up(web)
        new = web.client.post("/subscribe", json={"email": "new@example.com", **STRANGER})
    assert answer.text == new.text  # the same words whoever the address belongs to
    assert _stored(web) == before
    # ann's confirmation and welcome, then only the newcomer's confirmation
    assert [m.recipients for m in web.smtp.messages] == [
        ["ann@example.com"],
        ["ann@example.com"],
        ["new@example.com"],
    ]


def test_a_strangers_signup_overwrites_nothing_of_a_pending_reader(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        signup_form(web, "ann@example.com")
        before = _stored(web)
        assert before["consent"] == (None, None, None, "", None)
        clock.shift(timedelta(minutes=11))
        _stranger_signs_up(web)
        assert _stored(web) == before
        own, strangers = (links_in(m.data)["confirm"] for m in web.smtp.messages)
        assert "Quantum" in parts(parse(web.smtp.messages[1].data))[0]
        web.client.get(own)
        clock.shift(timedelta(minutes=1))
        # The stranger's link, followed later, does not change an active reader either.
        assert web.client.get(strangers).status_code == 200
    after = _stored(web)
    assert after["status"] == SubscriberStatus.ACTIVE
    assert after["categories"] == ["ai", "robotics"]
    assert after["frequency"] == (True, False) and after["timezone"] == "Europe/Paris"


def test_an_active_reader_is_offered_new_topics_and_gets_them_only_by_clicking(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        _active(web)
        before = _stored(web)
        clock.shift(timedelta(minutes=11))
        web.client.post("/subscribe", json={"email": "ann@example.com", **SIGNUP})
        same_topics = parse(web.smtp.messages[-1].data)
        assert same_topics["Subject"] == "You're already subscribed to Tech Pulse digests"
        assert "confirm" not in links_in(web.smtp.messages[-1].data)
        clock.shift(timedelta(minutes=11))
        web.client.post(
            "/subscribe", json={"email": "ann@example.com", **SIGNUP, "categories": ["quantum"]}
        )
        assert _stored(web) == before
        offer = web.smtp.messages[-1].data
        text, html = parts(parse(offer))
        assert "You asked for Quantum too" in text and "Add Quantum" in html
        link = links_in(offer)["confirm"]
        # Opening the link (a mail scanner does) shows what it would do and changes nothing.
        for _ in range(2):
            page = web.client.get(link)
            assert page.status_code == 200
            assert "Add Quantum to your digest?" in text_of(page.text)
            assert _stored(web) == before
        assert web.client.post(link, data={"csrf": ""}).status_code == 403  # needs the page
        assert _stored(web) == before
        answer = web.client.post(link, data={"csrf": csrf_of(page.text)})
        again = web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 200 and "Topics added" in text_of(answer.text)
    assert "now includes Quantum" in text_of(answer.text)
    assert again.status_code == 200 and "Already confirmed" in text_of(again.text)
    after = _stored(web)
    assert sorted(after["categories"]) == ["ai", "quantum", "robotics"]
    assert {k: v for k, v in after.items() if k != "categories"} == {
        k: v for k, v in before.items() if k != "categories"
    }


def test_an_offer_of_topics_followed_after_unsubscribing_resubscribes_nobody(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        clock.shift(timedelta(minutes=11))
        web.client.post("/subscribe", json={"email": "ann@example.com", **STRANGER})
        offer = links_in(web.smtp.messages[-1].data)["confirm"]
        clock.shift(timedelta(minutes=1))
        web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        before = _stored(web)
        assert web.client.get(offer).status_code == 410
    assert _stored(web) == before


def test_head_on_a_confirmation_link_activates_nothing(web: WebRig) -> None:
    signup_form(web, "ann@example.com")
    confirm = links_in(web.smtp.messages[0].data)["confirm"]
    for _ in range(3):
        assert web.client.head(confirm).status_code == 200
    assert _stored(web)["status"] == SubscriberStatus.PENDING
    assert web.client.get(confirm).status_code == 200
    assert _stored(web)["status"] == SubscriberStatus.ACTIVE


def test_an_import_after_a_strangers_signup_does_not_resubscribe_someone_who_left(
    web: WebRig, web_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's chain: unsubscribe, anonymous signup, then an import listing the address."""
    with time_machine.travel(NOW, tick=False) as clock:
        links = _active(web)
        web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        clock.shift(timedelta(minutes=11))
        _stranger_signs_up(web)
        before = _stored(web)
        csv = tmp_path / "list.csv"
        csv.write_text("email,categories,frequency,timezone\nann@example.com,ai,daily,UTC\n")
        assert run_cli(monkeypatch, web_env, "subscribers", "import", str(csv)) == 1
    assert _stored(web) == before
    assert web.count(Delivery) == 0
    with web.service.sessions() as session:
        assert session.get(Suppression, email_hash("ann@example.com")) is None


def test_already_subscribed_says_which_frequency_and_zone_were_asked_for_and_left(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        _active(web, frequency="weekly", timezone="UTC")
        before = _stored(web)
        clock.shift(timedelta(minutes=11))
        asked = {
            "categories": ["ai", "cybersecurity", "robotics"],
            "frequency": "both",
            "timezone": "America/Los_Angeles",
        }
        web.client.post("/subscribe", json={"email": "ann@example.com", **asked})
    assert _stored(web) == before
    text, html = parts(parse(web.smtp.messages[-1].data))
    said, shown = " ".join(text.split()), text_of(html)
    for words in (said, shown):
        assert "You asked for Cybersecurity too" in words
        asked_also = "You also asked for the daily digest as well and the Los Angeles time zone"
        assert asked_also in words
    assert "you can change them on your preferences page, linked below" in said
    assert "you can change them in Manage preferences below" in shown
    assert links_in(web.smtp.messages[-1].data)["preferences"]


def test_already_subscribed_with_the_same_frequency_and_zone_says_nothing_of_them(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        _active(web)
        clock.shift(timedelta(minutes=11))
        web.client.post("/subscribe", json={"email": "ann@example.com", **STRANGER, **SIGNUP})
    text, html = parts(parse(web.smtp.messages[-1].data))
    assert "You also asked for" not in text and "You also asked for" not in html


def test_already_subscribed_asking_for_an_alias_of_their_zone_was_not_another_zone(
    web: WebRig,
) -> None:
    """US/Pacific is America/Los_Angeles by another name: the email does not say the zone
    asked for was left as it is."""
    with time_machine.travel(NOW, tick=False) as clock:
        _active(web, timezone="America/Los_Angeles")
        clock.shift(timedelta(minutes=11))
        asked = {**SIGNUP, "timezone": "US/Pacific"}
        web.client.post("/subscribe", json={"email": "ann@example.com", **STRANGER, **asked})
    text, html = parts(parse(web.smtp.messages[-1].data))
    assert "You also asked for" not in text and "You also asked for" not in html

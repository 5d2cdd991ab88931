"""Signup, double opt-in and its abuse limits, through the real app and a real SMTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import time_machine
from sqlalchemy import Engine, select
from starlette.applications import Starlette

from digestd.config import load_settings
from digestd.models import Subscriber, SubscriberStatus, Suppression
from digestd.readers.bounces import Outcome, process_report
from digestd.readers.subscribers import email_hash, erase
from digestd.service import Service
from digestd.tokens import Purpose, Tokens
from tests.conftest import CLIENT_IP, TEST_KEY, WebRig
from tests.helpers import parse, parts
from tests.live_server import LiveServer
from tests.web_helpers import SIGNUP, csrf_of, links_in, signup_form, text_of

POSTFIX_DSN = (Path(__file__).parent / "fixtures" / "postfix-dsn-550.eml").read_bytes()
TAG_1 = Tokens([TEST_KEY]).bounce_tag(1)  # the VERP tag the fixture was made with

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def test_signup_page_is_prefilled_from_the_link(web: WebRig) -> None:
    page = web.client.get("/subscribe?categories=ai,robotics&frequency=weekly")
    assert page.status_code == 200
    html = page.text
    assert 'value="ai" class="cat" checked' in html
    assert 'value="robotics" class="cat" checked' in html
    assert 'value="fintech" class="cat">' in html
    assert 'value="weekly" checked' in html
    assert "All Technology" in html and "B2B Growth" in html and "HRTech" in html
    # the browser's zone fills it in (see test_browser.py); the server's default before that
    assert 'id="timezone" name="timezone" value="UTC" list="zone-list"' in html
    assert '<option value="America/New_York">UTC-05:00' in html  # November: no DST
    # the address comes first, the button right under it; the topics, a summary to open
    assert html.index('id="email"') < html.index('type="submit"') < html.index('value="ai"')
    assert '<span class="picked" id="topics-summary">AI, Robotics</span>' in html
    assert '<details class="topics" id="topics">' in html  # closed: the link chose them
    assert (
        "<link" not in html and "@import" not in html and "https://" not in html.split("<body")[0]
    )


def test_signup_page_with_an_unknown_category_is_a_clear_400(web: WebRig) -> None:
    page = web.client.get("/subscribe?categories=ai,basketweaving")
    assert page.status_code == 400
    assert "Unknown category 'basketweaving'" in text_of(page.text)
    assert '<details class="topics" id="topics" open>' in page.text


def test_signup_sends_one_confirmation_and_records_consent_on_the_click(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        page = web.client.get(
            "/subscribe?categories=ai,robotics&frequency=daily",
            headers={"Referer": "https://news.example.com/ai/story"},
        )
        answer = web.client.post(
            "/subscribe",
            data={
                "csrf": csrf_of(page.text),
                "email": "Reader@Example.COM",
                "categories": ["ai", "robotics"],
                "frequency": "daily",
                "timezone": "Asia/Kolkata",
                "source": "link: ?categories=ai,robotics&frequency=daily; "
                "referrer: https://news.example.com/ai/story",
            },
            headers={"User-Agent": "TestBrowser/1.0"},
        )
        assert answer.status_code == 200
        assert "Check your inbox" in answer.text
        reader = web.subscriber("reader@example.com")
        assert reader is not None
        assert reader.status == SubscriberStatus.PENDING
        assert reader.category_slugs == ["ai", "robotics"]
        assert reader.consent_at is None  # a signup is anyone's request, not consent
        assert reader.next_daily_at is None  # nothing is scheduled before confirmation

        (received,) = web.smtp.messages
        assert received.recipients == ["reader@example.com"]
        message = parse(received.data)
        assert message["Subject"] == "Confirm your Tech Pulse digest subscription"
        text, html = parts(message)
        assert "AI and Robotics" in text and "AI and Robotics" in html
        links = links_in(received.data)
        assert "/confirm/" in html and links["confirm"] in html
        assert "reader@example.com" not in links["confirm"]  # tokens carry an opaque id only
        assert len(links["confirm"]) < 800

        clock.shift(timedelta(hours=2))
        web.client.get(links["confirm"], headers={"User-Agent": "MailApp/2.0"})
    reader = web.subscriber("reader@example.com")
    assert reader is not None and reader.status == SubscriberStatus.ACTIVE
    assert (reader.wants_daily, reader.wants_weekly, reader.timezone) == (
        True,
        False,
        "Asia/Kolkata",
    )
    # The consent record is the click-through, with where the signup came from.
    assert reader.consent_at == reader.confirmed_at == NOW + timedelta(hours=2)
    assert reader.consent_ip == CLIENT_IP
    assert reader.consent_user_agent == "MailApp/2.0"
    assert "referrer: https://news.example.com/ai/story" in reader.consent_source
    assert "categories=ai,robotics" in reader.consent_source
    assert reader.consent_wording == "signup-v1"


def test_confirmation_activates_and_schedules_and_is_idempotent(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        signup_form(web, "ann@example.com")
        confirm = links_in(web.smtp.messages[0].data)["confirm"]
        first = web.client.get(confirm)
        second = web.client.get(confirm)
    assert first.status_code == 200 and "subscribed" in first.text
    assert second.status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    assert reader.status == SubscriberStatus.ACTIVE
    assert reader.confirmed_at == NOW
    # 07:00 in Paris (UTC+1 in November) is 06:00Z; 09:00Z today is past it, so tomorrow.
    assert reader.next_daily_at == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    # the confirmation, then one welcome: a second click sends no other
    subjects = [parse(m.data)["Subject"] for m in web.smtp.messages]
    assert subjects == [
        "Confirm your Tech Pulse digest subscription",
        "Welcome to Tech Pulse: your first digest arrives tomorrow at 07:00",
    ]


def test_json_signup_answers_the_same_whatever_the_address(web: WebRig) -> None:
    body = {"email": "json@example.com", **SIGNUP}
    answers = []
    with time_machine.travel(NOW, tick=False) as clock:
        answers.append(web.client.post("/subscribe", json=body))  # new
        clock.shift(timedelta(minutes=11))
        answers.append(web.client.post("/subscribe", json=body))  # pending
        confirm = links_in(web.smtp.messages[-1].data)["confirm"]
        web.client.get(confirm)
        clock.shift(timedelta(minutes=11))
        answers.append(web.client.post("/subscribe", json=body))  # active
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    subjects = [parse(m.data)["Subject"] for m in web.smtp.messages]
    assert subjects == [
        "Confirm your Tech Pulse digest subscription",
        "Confirm your Tech Pulse digest subscription",
        "Welcome to Tech Pulse: your first digest arrives tomorrow at 07:00",
        "You're already subscribed to Tech Pulse digests",
    ]
    # An unauthenticated signup never changes an active reader's settings.
    web.client.post("/subscribe", json={**body, "categories": ["quantum"]})
    reader = web.subscriber("json@example.com")
    assert reader is not None and reader.category_slugs == ["ai", "robotics"]


def test_a_second_confirmation_inside_ten_minutes_is_not_sent(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        first = signup_form(web, "victim@example.com")
        clock.shift(timedelta(minutes=9, seconds=59))
        second = signup_form(web, "victim@example.com")
        assert len(web.smtp.messages) == 1
        clock.shift(timedelta(seconds=1))
        third = signup_form(web, "victim@example.com")
    assert first.status_code == second.status_code == third.status_code == 200
    assert text_of(first.text) == text_of(second.text) == text_of(third.text)
    assert len(web.smtp.messages) == 2


def test_signups_per_ip_are_limited(web: WebRig) -> None:
    app = web.client.app
    assert isinstance(app, Starlette)
    limit = app.state.web.policy.signups_per_ip
    with time_machine.travel(NOW, tick=False) as clock:
        for i in range(limit):
            assert web.client.post("/subscribe", json={"email": f"r{i}@example.com", **SIGNUP})
        over = web.client.post("/subscribe", json={"email": "late@example.com", **SIGNUP})
        assert over.status_code == 429 and over.headers["retry-after"] == "3600"
        assert "Too many signups" in over.json()["error"]
        assert web.subscriber("late@example.com") is None
        clock.shift(timedelta(hours=1))
        later = web.client.post("/subscribe", json={"email": "late@example.com", **SIGNUP})
    assert later.status_code == 202
    assert len(web.smtp.messages) == limit + 1


def test_the_honeypot_looks_like_success_but_stores_and_sends_nothing(web: WebRig) -> None:
    answer = signup_form(web, "bot@example.com", website="http://spam.example")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert web.subscriber("bot@example.com") is None
    assert web.smtp.messages == []


def test_an_internationalised_domain_is_accepted_and_mailed_in_idna(web: WebRig) -> None:
    answer = web.client.post("/subscribe", json={"email": "anna@bücher.example", **SIGNUP})
    assert answer.status_code == 202
    assert web.subscriber("anna@bücher.example") is not None
    (received,) = web.smtp.messages
    assert received.recipients == ["anna@xn--bcher-kva.example"]


def test_expired_confirmation_offers_a_fresh_link_that_works(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        signup_form(web, "slow@example.com")
        old = links_in(web.smtp.messages[0].data)["confirm"]
        clock.shift(timedelta(days=7, minutes=1))
        expired = web.client.get(old)
        assert expired.status_code == 400
        assert "expired" in text_of(expired.text)
        assert web.status("slow@example.com") == SubscriberStatus.PENDING
        fresh = web.client.post(
            "/confirm/resend",
            data={"token": old.rsplit("/", 1)[1], "csrf": csrf_of(expired.text)},
        )
        assert fresh.status_code == 200 and "Check your inbox" in fresh.text
        assert len(web.smtp.messages) == 2
        new = links_in(web.smtp.messages[1].data)["confirm"]
        assert web.client.get(new).status_code == 200
    assert web.status("slow@example.com") == SubscriberStatus.ACTIVE


def test_a_fresh_link_counts_against_the_networks_share_and_says_when_to_come_back(
    web: WebRig,
) -> None:
    app = web.client.app
    assert isinstance(app, Starlette)
    limit = app.state.web.policy.signups_per_ip
    with time_machine.travel(NOW, tick=False) as clock:
        signup_form(web, "slow@example.com")
        old = links_in(web.smtp.messages[0].data)["confirm"]
        clock.shift(timedelta(days=7, minutes=1))
        expired = web.client.get(old)
        form = {"token": old.rsplit("/", 1)[1], "csrf": csrf_of(expired.text)}
        answers = [web.client.post("/confirm/resend", data=form) for _ in range(limit + 1)]
    # A week after the signup the network's share is whole again; the resends use it up.
    assert [a.status_code for a in answers] == [200] * limit + [429]
    assert answers[-1].headers["retry-after"] == "3600"
    assert "Please try again in an hour" in text_of(answers[-1].text)
    assert web.status("slow@example.com") == SubscriberStatus.PENDING


def test_forged_and_wrong_purpose_confirmation_links_are_a_clear_400(web: WebRig) -> None:
    signup_form(web, "ann@example.com")
    links = links_in(web.smtp.messages[0].data)
    token = links["confirm"].rsplit("/", 1)[1]
    for bad in (
        token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"),  # tampered signature
        token[: len(token) // 2],  # truncated by a mail program
        links["unsubscribe"].rsplit("/", 1)[1],  # an unsubscribe token used to confirm
        "not-a-token",
    ):
        answer = web.client.get(f"/confirm/{bad}")
        assert answer.status_code == 400, bad
        assert "not valid" in text_of(answer.text)
    assert web.status("ann@example.com") == SubscriberStatus.PENDING


def test_an_old_confirmation_link_does_not_resubscribe_after_unsubscribing(web: WebRig) -> None:
    signup_form(web, "ann@example.com")
    links = links_in(web.smtp.messages[0].data)
    web.client.get(links["confirm"])
    web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    again = web.client.get(links["confirm"])
    assert again.status_code == 410
    assert web.status("ann@example.com") == SubscriberStatus.UNSUBSCRIBED


def test_suppressed_addresses_get_the_same_answer_and_no_email(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        session.add(Suppression(email_hash=email_hash("gone@example.com"), reason="hard-bounce"))
    answer = web.client.post("/subscribe", json={"email": "gone@example.com", **SIGNUP})
    assert answer.status_code == 202
    assert web.smtp.messages == []
    assert web.subscriber("gone@example.com") is None


@contextmanager
def _writes_held(engine: Engine) -> Iterator[None]:
    """Nobody else writes the signup counters until the block ends (SQLite: the database's
    write lock; PostgreSQL: a lock on their table)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("LOCK TABLE mail_throttle IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            connection.rollback()


def test_the_answer_goes_out_before_any_of_the_signups_work(
    web: WebRig, web_env: dict[str, str]
) -> None:
    """The work differs by what the address is (none for a suppressed one, two inserts for
    a new one), so a stranger timing the answer could tell; the answer does not wait for
    it. Here the work waits on a lock the test holds, and the answer still comes."""
    service = Service.build(load_settings(web_env))
    with LiveServer(service) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        with _writes_held(web.service.engine):
            answer = client.post("/subscribe", json={"email": "ann@example.com", **SIGNUP})
            assert answer.status_code == 202
            assert web.smtp.messages == []
        web.smtp.wait_for(1)
    assert web.status("ann@example.com") == SubscriberStatus.PENDING


def test_a_confirmation_after_erasure_lifts_the_erasure_suppression(web: WebRig) -> None:
    signup_form(web, "back@example.com")
    links = links_in(web.smtp.messages[0].data)
    web.client.get(links["confirm"])
    prefs = web.client.get(links["preferences"])
    web.client.post(
        links["preferences"],
        data={"csrf": csrf_of(prefs.text), "action": "delete", "confirm_delete": "yes"},
    )
    with web.service.sessions() as session:
        assert session.get(Suppression, email_hash("back@example.com")) is not None
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        signup_form(web, "back@example.com")
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])
    with web.service.sessions() as session:
        assert session.get(Suppression, email_hash("back@example.com")) is None
        status = session.scalar(
            select(Subscriber.status).where(Subscriber.email == "back@example.com")
        )
    assert status == SubscriberStatus.ACTIVE
    assert web.service.tokens.read(Purpose.CONFIRM, links["confirm"].rsplit("/", 1)[1])


def test_a_confirmation_that_bounces_suppresses_the_address_it_was_sent_to(
    web: WebRig,
) -> None:
    """The signup email's envelope sender names its reader (VERP), so a mistyped address's
    bounce is found and acts as a digest's would; a forged tag changes no one."""
    assert web.client.post("/subscribe", json={"email": "tpyo@example.com", **SIGNUP}).is_success
    (sent,) = web.smtp.messages
    found = re.fullmatch(r"bounces\+(r[\w-]+\.[\w-]+)@news\.example\.com", sent.envelope_from)
    assert found is not None, sent.envelope_from
    reader = web.subscriber("tpyo@example.com")
    assert reader is not None and found.group(1).startswith(f"r{reader.public_id}.")
    forged = POSTFIX_DSN.replace(
        TAG_1.encode(), f"r{reader.public_id}.forgedAAAAAAAAAAAAAAAAAAAAAAA".encode()
    )
    dsn = POSTFIX_DSN.replace(TAG_1.encode(), found.group(1).encode())
    with web.service.sessions.begin() as session:
        unmatched = process_report(session, forged, web.service.tokens, NOW)
        result = process_report(session, dsn, web.service.tokens, NOW)
    assert unmatched.outcome is Outcome.UNMATCHED
    assert (result.outcome, result.matched_by) == (Outcome.HARD_BOUNCE, "verp")
    assert (result.delivery_id, result.subscriber_id) == (None, reader.id)
    after = web.subscriber("tpyo@example.com")
    assert after is not None and after.status == SubscriberStatus.BOUNCED
    with web.service.sessions() as session:
        assert session.get(Suppression, email_hash("tpyo@example.com")) is not None
    again = web.client.post("/subscribe", json={"email": "tpyo@example.com", **SIGNUP})
    assert again.status_code == 202 and len(web.smtp.messages) == 1  # nothing more sent


def test_a_late_bounce_of_an_erased_readers_confirmation_suppresses_nobody_else(
    web: WebRig,
) -> None:
    """On SQLite an erased reader's row id goes to the next signup: the bounce address
    names the reader by their public id, never handed out again."""
    assert web.client.post("/subscribe", json={"email": "gone@example.com", **SIGNUP}).is_success
    tag = web.smtp.messages[-1].envelope_from.removeprefix("bounces+").partition("@")[0]
    with web.service.sessions.begin() as session:
        erase(session, "gone@example.com", NOW)
    assert web.client.post("/subscribe", json={"email": "new@example.com", **SIGNUP}).is_success
    with web.service.sessions.begin() as session:
        result = process_report(
            session, POSTFIX_DSN.replace(TAG_1.encode(), tag.encode()), web.service.tokens, NOW
        )
    assert result.outcome is Outcome.UNMATCHED
    newcomer = web.subscriber("new@example.com")
    assert newcomer is not None and newcomer.status == SubscriberStatus.PENDING

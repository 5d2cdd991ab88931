"""The preferences page: change categories, frequency and timezone; pause and resume;
unsubscribe; delete my data (erasure keeps only a hashed suppression)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine

from digestd.models import Delivery, Subscriber, SubscriberStatus, Suppression
from digestd.readers.subscribers import email_hash
from tests.conftest import WebRig
from tests.helpers import parse, run_cli
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _reader(web: WebRig, email: str = "ann@example.com") -> dict[str, str]:
    signup_form(web, email)
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    return links


def _post(web: WebRig, url: str, **data: object) -> httpx.Response:
    token = csrf_of(web.client.get(url).text)
    # Starlette types its TestClient against httpx2; with the httpx we pin, mypy sees Any.
    answer: httpx.Response = web.client.post(url, data={"csrf": token, **data})
    return answer


def test_the_page_shows_the_current_choices(web: WebRig) -> None:
    links = _reader(web)
    page = web.client.get(links["preferences"])
    assert page.status_code == 200
    assert "ann@example.com" in page.text
    assert 'value="ai" class="cat" checked' in page.text
    assert 'value="quantum" class="cat">' in page.text
    assert 'value="daily" checked' in page.text
    assert 'id="timezone" name="timezone" value="Europe/Paris" list="zone-list"' in page.text
    assert '<option value="Asia/Kolkata">UTC+05:30' in page.text
    assert "Delete my data" in page.text
    assert 'role="alert"' not in page.text and "Please check" not in page.text  # no error
    saved = _post(
        web,
        links["preferences"],
        action="save",
        categories=["ai"],
        frequency="weekly",
        timezone="UTC",
    )
    assert "Your preferences are saved" in saved.text and "Please check" not in saved.text
    refused = _post(web, links["preferences"], action="delete")  # the box left unticked
    assert refused.status_code == 400
    assert (
        'href="#confirm_delete">Please check the box “Yes, delete everything about me”: it is'
        in refused.text
    )
    zone = _post(
        web, links["preferences"], action="save", categories="ai", frequency="daily", timezone="X/Y"
    )
    assert zone.status_code == 400
    assert "Please check your timezone: it is marked below." in text_of(zone.text)


def test_saving_changes_categories_frequency_and_timezone_and_reschedules(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        links = _reader(web)
        answer = _post(
            web,
            links["preferences"],
            action="save",
            categories=["quantum", "spacetech"],
            frequency="both",
            timezone="America/New_York",
        )
    assert answer.status_code == 200
    assert "preferences are saved" in text_of(answer.text)
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    assert reader.category_slugs == ["quantum", "spacetech"]
    assert (reader.wants_daily, reader.wants_weekly) == (True, True)
    assert reader.timezone == "America/New_York"
    # 07:00 in New York (UTC-5) on the 29th is 12:00Z, still ahead of 09:00Z.
    assert reader.next_daily_at == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert reader.next_weekly_at == datetime(2026, 11, 29, 13, 0, tzinfo=UTC)  # Sunday 08:00


def test_all_technology_selects_every_category(web: WebRig) -> None:
    links = _reader(web)
    _post(web, links["preferences"], action="save", categories=["all"], frequency="weekly")
    reader = web.subscriber("ann@example.com")
    assert reader is not None and len(reader.category_slugs) == 26


def test_pause_then_resume(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        links = _reader(web)
        _post(web, links["preferences"], action="pause", pause_for="1w")
        paused = web.subscriber("ann@example.com")
        assert paused is not None and paused.status == SubscriberStatus.PAUSED
        assert paused.next_daily_at is None
        _post(web, links["preferences"], action="resume")
    resumed = web.subscriber("ann@example.com")
    assert resumed is not None and resumed.status == SubscriberStatus.ACTIVE
    assert resumed.next_daily_at == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def test_a_paused_reader_can_unsubscribe_from_the_preferences_page(web: WebRig) -> None:
    """The page showed Resume alone while paused: the way out was "Delete my data"."""
    with time_machine.travel(NOW, tick=False):
        links = _reader(web)
        _post(web, links["preferences"], action="pause", pause_for="1w")
        page = web.client.get(links["preferences"]).text
        assert 'value="resume"' in page and 'value="unsubscribe"' in page
        _post(web, links["preferences"], action="unsubscribe")
    assert web.status("ann@example.com") == SubscriberStatus.UNSUBSCRIBED


def test_a_reader_who_has_not_confirmed_is_told_so_and_can_have_the_link_again(
    web: WebRig,
) -> None:
    """The confirmation email links the preferences page: for a pending reader it showed a
    PENDING badge and nothing else."""
    with time_machine.travel(NOW, tick=False) as clock:
        signup_form(web, "ann@example.com")
        first = links_in(web.smtp.messages[-1].data)
        page = text_of(web.client.get(first["preferences"]).text)
        assert "Not started yet: your digests begin once you follow the link" in page
        assert "Email me the confirmation again" in page
        soon = _post(web, first["preferences"], action="resume")
        assert "No new link was sent just now" in text_of(soon.text)
        assert len(web.smtp.messages) == 1  # not one more yet
        clock.shift(timedelta(minutes=11))  # past the signup limit's minimum gap
        answer = _post(web, first["preferences"], action="resume")
        assert "We've emailed you the link to confirm again" in text_of(answer.text)
        assert web.status("ann@example.com") == SubscriberStatus.PENDING  # still to confirm
        assert len(web.smtp.messages) == 2  # the confirmation, and it again
        again = web.smtp.messages[-1]
        assert web.client.get(links_in(again.data)["confirm"]).status_code == 200
    assert web.status("ann@example.com") == SubscriberStatus.ACTIVE


def test_subscribing_again_from_preferences_takes_a_new_confirmation(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _reader(web)
        _post(web, links["preferences"], action="unsubscribe")
        assert web.status("ann@example.com") == SubscriberStatus.UNSUBSCRIBED
        page = web.client.get(links["preferences"])
        assert "Subscribe again" in page.text
        clock.shift(timedelta(minutes=11))
        answer = _post(web, links["preferences"], action="resume")
        assert "emailed you a link to confirm" in text_of(answer.text)
        # A forwarded preferences link must not be enough to resubscribe someone.
        assert web.status("ann@example.com") == SubscriberStatus.UNSUBSCRIBED
        mail = web.smtp.messages[-1]
        assert parse(mail.data)["Subject"] == "Confirm to resume your Tech Pulse digests"
        clock.shift(timedelta(minutes=5))
        web.client.get(links_in(mail.data)["confirm"])
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.ACTIVE
    assert reader.consent_source == "preferences page: subscribe again"
    assert reader.category_slugs == ["ai", "robotics"]


def test_choices_saved_before_the_confirmation_link_is_followed_are_kept(web: WebRig) -> None:
    """The confirmation email links to the preferences page too: a reader who changes
    their choices there and then confirms keeps what they chose last, not the signup's."""
    with time_machine.travel(NOW, tick=False) as clock:
        signup_form(web, "gina@example.com")  # ai and robotics, daily, Europe/Paris
        links = links_in(web.smtp.messages[-1].data)
        clock.shift(timedelta(minutes=3))
        saved = _post(web, links["preferences"], action="save", categories=["ai"], frequency="both")
        assert "Your preferences are saved" in text_of(saved.text)
        clock.shift(timedelta(minutes=3))
        assert web.client.get(links["confirm"]).status_code == 200
    reader = web.subscriber("gina@example.com")
    assert reader is not None and reader.status == SubscriberStatus.ACTIVE
    assert reader.category_slugs == ["ai"]
    assert (reader.wants_daily, reader.wants_weekly) == (True, True)
    assert reader.consent_source != ""  # the consent record is still the signup's


def test_a_link_made_after_the_last_save_brings_its_own_choices(web: WebRig) -> None:
    """Saved while unsubscribed, then "subscribe again": its link carries what was saved;
    a save after asking for the link wins over the link."""
    with time_machine.travel(NOW, tick=False) as clock:
        links = _reader(web)
        _post(web, links["preferences"], action="unsubscribe")
        _post(web, links["preferences"], action="save", categories=["quantum"], frequency="daily")
        clock.shift(timedelta(minutes=11))
        _post(web, links["preferences"], action="resume")  # emails a confirmation link
        confirm = links_in(web.smtp.messages[-1].data)["confirm"]
        clock.shift(timedelta(minutes=1))
        _post(web, links["preferences"], action="save", categories=["fintech"], frequency="weekly")
        clock.shift(timedelta(minutes=1))
        assert web.client.get(confirm).status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.ACTIVE
    assert reader.category_slugs == ["fintech"]
    assert (reader.wants_daily, reader.wants_weekly) == (False, True)


@pytest.mark.parametrize(
    ("unsubscribed", "action", "says"),
    [
        (False, "pause", "your subscription isn't confirmed yet"),
        (True, "pause", "no digests are sent to this address"),
    ],
)
def test_a_pause_or_resume_that_changes_nothing_says_so(
    web: WebRig, unsubscribed: bool, action: str, says: str
) -> None:
    """Not "your digests are paused" to a reader who gets none: the page does not offer
    these buttons then, but a form posted by hand (or an old tab) must not be told a lie."""
    with time_machine.travel(NOW, tick=False):
        if unsubscribed:
            links = _reader(web)
            _post(web, links["preferences"], action="unsubscribe")
        else:
            signup_form(web, "ann@example.com")
            links = links_in(web.smtp.messages[-1].data)
        before = web.subscriber("ann@example.com")
        answer = _post(web, links["preferences"], action=action, pause_for="1w")
    words = text_of(answer.text)
    assert answer.status_code == 200
    assert f"Nothing to change: {says}" in words.replace("’", "'")
    assert "paused" not in words.lower() and "back on" not in words
    after = web.subscriber("ann@example.com")
    assert before is not None and after is not None
    assert (after.status, after.paused_until, after.next_daily_at) == (
        before.status,
        before.paused_until,
        before.next_daily_at,
    )


def test_resuming_digests_that_are_on_says_they_are_on(web: WebRig) -> None:
    links = _reader(web)
    answer = _post(web, links["preferences"], action="resume")
    assert "Nothing to change: your digests are on." in text_of(answer.text)


def test_preferences_links_expire_after_60_days_and_a_fresh_one_can_be_emailed(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _reader(web)
        clock.shift(timedelta(days=59))
        assert web.client.get(links["preferences"]).status_code == 200
        clock.shift(timedelta(days=2))
        expired = web.client.get(links["preferences"])
        assert expired.status_code == 400
        assert "This link has expired" in text_of(expired.text)
        # Acting on the old link changes nothing either.
        stale = web.client.post(
            links["preferences"], data={"csrf": csrf_of(expired.text), "action": "pause"}
        )
        assert stale.status_code == 400
        assert web.status("ann@example.com") == SubscriberStatus.ACTIVE
        ask = {"token": links["preferences"].rsplit("/", 1)[1], "csrf": csrf_of(expired.text)}
        answers = [web.client.post("/preferences/resend", data=ask) for _ in range(3)]
        assert {a.status_code for a in answers} == {200}
        assert len({text_of(a.text) for a in answers}) == 1
        # the confirmation and welcome, then throttled: one fresh link
        assert len(web.smtp.messages) == 3
        mail = web.smtp.messages[-1]
        assert parse(mail.data)["Subject"] == "Your link to manage your Tech Pulse digests"
        assert "confirm" not in links_in(mail.data)
        fresh = links_in(mail.data)["preferences"]
        assert web.client.get(fresh).status_code == 200
    assert web.status("ann@example.com") == SubscriberStatus.ACTIVE


def test_a_fresh_preferences_link_needs_an_authentic_token_and_the_pages_csrf(
    web: WebRig,
) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _reader(web)
        clock.shift(timedelta(days=61))
        expired = web.client.get(links["preferences"])
        token = links["preferences"].rsplit("/", 1)[1]
        forged = web.client.post(
            "/preferences/resend",
            data={"token": token[:-4] + "AAAA", "csrf": csrf_of(expired.text)},
        )
        no_csrf = web.client.post("/preferences/resend", data={"token": token})
    assert forged.status_code == 400 and no_csrf.status_code == 403
    assert len(web.smtp.messages) == 2  # the confirmation and the welcome only


def test_delete_my_data_keeps_only_a_hashed_suppression(web: WebRig) -> None:
    links = _reader(web)
    answer = _post(web, links["preferences"], action="delete", confirm_delete="yes")
    assert answer.status_code == 200
    words = text_of(answer.text)
    assert "Your data is deleted" in words
    # As the operator's erase says: the hash keeps lists and imports off the address, and
    # the person may come back through a signup they confirm.
    assert "We keep only a one-way hash of the address, so that no list or import" in words
    assert "You can sign up again at any time: as the first time, digests start once" in words
    assert web.count(Subscriber) == 0
    assert web.count(Delivery) == 0
    with web.service.sessions() as session:
        (suppression,) = session.query(Suppression).all()
        assert suppression.email_hash == email_hash("ann@example.com")
        assert suppression.reason == "erased"
        assert "ann" not in suppression.email_hash
    assert web.client.get(links["preferences"]).status_code == 410


def test_cli_delete_erases_a_web_subscriber(
    web: WebRig, web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _reader(web, "cli@example.com")
    assert run_cli(monkeypatch, web_env, "subscribers", "delete", "CLI@example.com") == 0
    assert web.subscriber("cli@example.com") is None
    with web.service.sessions() as session:
        assert session.get(Suppression, email_hash("cli@example.com")) is not None


def test_csrf_token_expires_after_a_day(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False) as clock:
        links = _reader(web)
        token = csrf_of(web.client.get(links["preferences"]).text)
        clock.shift(timedelta(hours=25))
        answer = web.client.post(links["preferences"], data={"csrf": token, "action": "pause"})
    assert answer.status_code == 403
    assert "Reload the page" in text_of(answer.text)
    assert web.status("ann@example.com") == SubscriberStatus.ACTIVE

"""``/admin/subscribers`` over HTTP: search with keyset pages, a reader's page, and every
action with the stored state after it (unsubscribe, a confirmation link by email, new
preferences, erasure typed out). Each POST needs a signed-in operator and its form's CSRF
token; bad input is a 400 naming the field and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from prometheus_client.parser import text_string_to_metric_families

from digestd.models import (
    BounceEvent,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from digestd.readers.subscribers import email_hash
from tests.admin_client import form_csrf, sign_in, submit
from tests.admin_seed import delivery, edition, reader
from tests.conftest import WebRig
from tests.helpers import parse, parts
from tests.log_lines import events
from tests.web_helpers import links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def ids(web: WebRig) -> dict[str, int]:
    """Readers of every kind, ann with two editions and a bounce; signed in."""
    with web.service.sessions.begin() as session:
        since = NOW - timedelta(days=9)
        made = {
            "ann": reader(
                session,
                "ann@example.com",
                categories="ai,robotics",
                timezone="Europe/Paris",
                created_at=since,
            ),
            "bob": reader(
                session, "bob@example.org", categories="quantum", frequency="both", created_at=since
            ),
            "pat": reader(
                session, "pat@example.com", status=SubscriberStatus.PENDING, created_at=since
            ),
            "uma": reader(
                session, "uma@example.com", status=SubscriberStatus.UNSUBSCRIBED, created_at=since
            ),
        }
        made["ann"].consent_at = NOW - timedelta(days=9)
        made["ann"].consent_source = "https://site.example/ai"
        made["ann"].consent_ip = "198.51.100.7"
        first = edition(session, "daily", "2026-11-28", NOW - timedelta(days=1))
        second = edition(session, "daily", "2026-11-29", NOW)
        at = NOW - timedelta(days=1, hours=2)
        delivery(session, made["ann"], first, DeliveryStatus.SENT, at, at)
        failed = delivery(session, made["ann"], second, DeliveryStatus.FAILED, NOW)
        failed.last_error = "550 5.2.2 mailbox full"
        session.flush()
        session.add(
            BounceEvent(
                delivery_id=failed.id,
                subscriber_id=made["ann"].id,
                kind="soft",
                status="5.2.2",
                diagnostic="550 5.2.2 <…@example.com> mailbox full",
                source="smtp",
                channel="smtp",
                created_at=NOW,
            )
        )
        found = {name: s.id for name, s in made.items()}
    sign_in(web.client)
    return found


def _reader(web: WebRig, email: str) -> Subscriber:
    found = web.subscriber(email)
    assert found is not None
    return found


def test_search_by_fragment_status_category_and_zone(web: WebRig, ids: dict[str, int]) -> None:
    def shown(query: str) -> list[str]:
        answer = web.client.get("/admin/subscribers" + query)
        assert answer.status_code == 200, answer.text
        return re.findall(r'<a href="/admin/subscribers/\d+">([^<]+)</a>', answer.text)

    assert shown("") == ["uma@example.com", "pat@example.com", "bob@example.org", "ann@example.com"]
    assert shown("?q=EXAMPLE.ORG") == ["bob@example.org"]
    assert shown("?status=pending") == ["pat@example.com"]
    assert shown("?category=robotics") == ["ann@example.com"]
    assert shown("?zone=Europe/Paris&q=ann") == ["ann@example.com"]
    assert shown("?q=%25") == []  # LIKE wildcards are literal


def test_search_pages_through_a_long_list_newest_first(web: WebRig) -> None:
    with web.service.sessions.begin() as session:
        for i in range(53):
            reader(session, f"r{i:02d}@example.com", created_at=NOW)
    sign_in(web.client)
    first = web.client.get("/admin/subscribers?q=example.com")
    emails = re.findall(r'">(r\d\d@example\.com)</a>', first.text)
    assert len(emails) == 50 and emails[0] == "r52@example.com"
    next_link = re.search(r'href="(/admin/subscribers\?[^"]+)" rel="next"', first.text)
    assert next_link is not None
    second = web.client.get(next_link.group(1).replace("&amp;", "&"))
    assert re.findall(r'">(r\d\d@example\.com)</a>', second.text) == [
        "r02@example.com",
        "r01@example.com",
        "r00@example.com",
    ]
    assert 'rel="next"' not in second.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=gone", "status"),
        ("?category=cooking", "category"),
        ("?zone=Mars/Olympus", "zone"),
        ("?cursor=forged", "cursor"),
        ("?stauts=active", "stauts"),
    ],
)
def test_a_bad_search_is_a_400_naming_the_field(
    web: WebRig, ids: dict[str, int], query: str, field: str
) -> None:
    answer = web.client.get("/admin/subscribers" + query)
    assert answer.status_code == 400
    assert text_of(answer.text).count(f"{field}:") == 1


def test_a_readers_page_shows_status_consent_editions_and_bounces(
    web: WebRig, ids: dict[str, int]
) -> None:
    answer = web.client.get(f"/admin/subscribers/{ids['ann']}")
    words = text_of(answer.text)
    assert "ann@example.com ACTIVE" in words or "ann@example.com active" in words
    assert "Categories ai, robotics Gets daily Time zone Europe/Paris" in words
    assert "Where https://site.example/ai" in words and "IP 198.51.100.7" in words
    assert "daily 2026-11-29 failed 550 5.2.2 mailbox full" in words
    assert "daily 2026-11-28 sent digest" not in words  # no digest behind this one
    assert "daily 2026-11-28 sent 2026-11-28 07:30 UTC" in words
    assert "soft 5.2.2 smtp via smtp 550 5.2.2 <…@example.com> mailbox full" in words
    assert web.client.get("/admin/subscribers/999999").status_code == 404


def _unsubscribes(web: WebRig, via: str) -> float:
    text = web.service.metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "digestd_unsubscribes_total" and sample.labels == {"via": via}:
                return sample.value
    raise AssertionError("no such sample")


def test_unsubscribe_stores_it_counts_it_and_logs_it(
    web: WebRig, ids: dict[str, int], admin_log: Callable[[], str]
) -> None:
    path = f"/admin/subscribers/{ids['ann']}"
    answer = submit(web.client, path, path, action="unsubscribe")
    assert answer.status_code == 303 and answer.headers["location"] == f"{path}?done=unsubscribed"
    ann = _reader(web, "ann@example.com")
    assert ann.status == SubscriberStatus.UNSUBSCRIBED and ann.unsubscribed_at == NOW
    assert ann.next_daily_at is None and ann.next_weekly_at is None
    assert _unsubscribes(web, "admin") == 1
    assert "Unsubscribed: no more digests" in text_of(
        web.client.get(answer.headers["location"]).text
    )
    (line,) = [
        e for e in events(admin_log(), "admin") if e["action"] == "page.subscriber.unsubscribe"
    ]
    assert line["outcome"] == "unsubscribed" and line["subscriber"] == str(ids["ann"])
    # Not offered again, and refused if posted anyway.
    page = web.client.get(path).text
    assert 'value="unsubscribe"' not in page
    again = web.client.post(path, data={"csrf": form_csrf(page, path), "action": "unsubscribe"})
    assert again.status_code == 409 and _unsubscribes(web, "admin") == 1


def test_coming_back_takes_the_readers_own_click_on_an_emailed_link(
    web: WebRig, ids: dict[str, int]
) -> None:
    path = f"/admin/subscribers/{ids['uma']}"
    answer = submit(web.client, path, path, action="resubscribe")
    assert answer.headers["location"] == f"{path}?done=emailed"
    (mail,) = web.smtp.wait_for(1)
    assert mail.recipients == ["uma@example.com"]
    text, _ = parts(parse(mail.data))
    assert "resume" in text.lower()
    assert _reader(web, "uma@example.com").status == SubscriberStatus.UNSUBSCRIBED
    web.client.get(links_in(mail.data)["confirm"])
    uma = _reader(web, "uma@example.com")
    assert uma.status == SubscriberStatus.ACTIVE
    assert uma.consent_source == "admin: confirmation link sent by an operator"


def test_a_pending_reader_can_be_sent_the_confirmation_again(
    web: WebRig, ids: dict[str, int]
) -> None:
    path = f"/admin/subscribers/{ids['pat']}"
    assert submit(web.client, path, path, action="confirm").status_code == 303
    (mail,) = web.smtp.wait_for(1)
    assert "confirm" in links_in(mail.data)
    assert _reader(web, "pat@example.com").status == SubscriberStatus.PENDING
    # The inbox throttle holds for operators too: the second, minutes later, is held.
    answer = submit(web.client, path, path, action="confirm")
    assert answer.headers["location"].endswith("done=mailbox")
    assert "No email sent: this inbox" in text_of(web.client.get(answer.headers["location"]).text)
    assert len(web.smtp.messages) == 1


def test_preferences_change_and_bad_ones_are_refused_naming_the_field(
    web: WebRig, ids: dict[str, int]
) -> None:
    path = f"/admin/subscribers/{ids['bob']}"
    fields = {
        "action": "save",
        "categories": ["fintech", "saas"],
        "frequency": "weekly",
        "timezone": "Asia/Tokyo",
    }
    assert submit(web.client, path, path, **fields).status_code == 303
    bob = _reader(web, "bob@example.org")
    assert (sorted(bob.category_slugs), bob.wants_daily, bob.wants_weekly, bob.timezone) == (
        ["fintech", "saas"], False, True, "Asia/Tokyo"
    )  # fmt: skip
    assert bob.next_daily_at is None and bob.next_weekly_at is not None
    for bad, field in (
        ({**fields, "categories": ["cooking"]}, "Categories"),
        ({**fields, "frequency": "hourly"}, "Frequency"),
        ({**fields, "timezone": "Mars/Olympus"}, "Time zone"),
    ):
        answer = submit(web.client, path, path, **bad)
        # named as the form labels the field, not by its internal name
        assert answer.status_code == 400 and f"{field}:" in text_of(answer.text)
    assert sorted(_reader(web, "bob@example.org").category_slugs) == ["fintech", "saas"]


def test_erasure_needs_the_address_typed_out(web: WebRig, ids: dict[str, int]) -> None:
    path = f"/admin/subscribers/{ids['bob']}"
    for typed in ("", "bob@example.com", "yes"):
        answer = submit(web.client, path, path, action="erase", confirm_email=typed)
        assert answer.status_code == 400 and "Address: type the reader" in text_of(answer.text)
    assert web.subscriber("bob@example.org") is not None
    answer = submit(web.client, path, path, action="erase", confirm_email=" BOB@example.org ")
    assert answer.headers["location"] == "/admin/subscribers?done=erased"
    assert web.subscriber("bob@example.org") is None
    with web.service.sessions() as session:
        kept = session.get(Suppression, email_hash("bob@example.org"))
        assert kept is not None and kept.reason == SuppressionReason.ERASED
    assert web.client.get(path).status_code == 404


def test_erasure_says_what_stays_and_that_only_the_person_comes_back(
    web: WebRig, ids: dict[str, int]
) -> None:
    """What the page says erasure keeps is what digestd does: the hash refuses a test send,
    and the person signing up again is mailed a confirmation (and only that)."""
    path = f"/admin/subscribers/{ids['bob']}"
    hint = text_of(web.client.get(path).text)
    assert (
        "A one-way hash of the address stays, so no import or test send mails it again; only "
        "the person can come back, by signing up again and confirming from their inbox." in hint
    )
    answer = submit(web.client, path, path, action="erase", confirm_email="bob@example.org")
    notice = text_of(web.client.get(answer.headers["location"]).text)
    assert (
        "so no import or test send mails it again; they can come back only by signing up "
        "again themselves and confirming from their inbox." in notice
    )
    assert "never mailed again" not in hint + notice  # a confirmed signup brings them back
    tested = submit(web.client, "/admin/editions", "/admin/editions/test", kind="daily",
                    to="bob@example.org", categories="ai")  # fmt: skip
    assert tested.status_code == 409 and "suppression list (erased)" in text_of(tested.text)
    signup_form(web, "bob@example.org")
    (confirmation,) = web.smtp.wait_for(1)
    assert confirmation.recipients == ["bob@example.org"]
    assert "confirm" in links_in(confirmation.data)


POSTS = ["/admin/subscribers/{id}", "/admin/logout", "/admin/import"]


@pytest.mark.parametrize("path", POSTS)
def test_every_post_needs_its_forms_csrf_token(web: WebRig, ids: dict[str, int], path: str) -> None:
    concrete = path.format(id=ids["ann"])
    for token in (None, "forged", form_csrf(web.client.get("/admin").text, "/admin/logout")):
        data = {"action": "unsubscribe"} | ({"csrf": token} if token else {})
        if path == "/admin/logout" and token and token != "forged":
            continue  # that is this form's own token
        assert web.client.post(concrete, data=data).status_code == 403, (path, token)
    assert _reader(web, "ann@example.com").status == SubscriberStatus.ACTIVE
    assert "digestd_admin" in web.client.cookies  # still signed in


def test_a_post_without_a_session_is_a_401_and_a_get_asks_to_sign_in(
    web: WebRig, ids: dict[str, int]
) -> None:
    path = f"/admin/subscribers/{ids['ann']}"
    page = web.client.get(path).text
    web.client.cookies.delete("digestd_admin", path="/admin")
    answer = web.client.post(path, data={"csrf": form_csrf(page, path), "action": "unsubscribe"})
    assert answer.status_code == 401
    assert _reader(web, "ann@example.com").status == SubscriberStatus.ACTIVE
    login = web.client.get(path)
    assert "Operator sign-in" in login.text and f'name="next" value="{path}"' in login.text


def test_the_export_link_is_the_cli_export(web: WebRig, ids: dict[str, int]) -> None:
    answer = web.client.get("/admin/subscribers/export")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.splitlines()
    assert lines[0].startswith("email,categories,frequency,timezone")
    assert len(lines) == 5

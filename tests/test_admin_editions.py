"""``/admin/editions`` over HTTP, on an edition planned and sent by the real tick to a real
SMTP server: the list, one edition's report (planned, sent, failed and skipped by reason,
bounced, unsubscribed after it) and its digests (:mod:`digestd.ops.edition_report`), and
the sending tools: a reader's next edition, a test send that uses up nobody's edition,
and "send now" under the trigger's rules. Bad input is one error naming the field, shown
on the page, and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import insert, select

from digestd.content.articles import ingest
from digestd.models import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberStatus
from digestd.ops.edition_report import reason, report
from digestd.readers.lifecycle import unsubscribe
from digestd.readers.subscribers import new_subscriber, parse_preferences
from tests.admin_client import sign_in, submit
from tests.admin_seed import edition, reader
from tests.click_helpers import ADMIN
from tests.conftest import WebRig
from tests.helpers import article, parse
from tests.web_helpers import text_of

SENT_AT = datetime(2026, 12, 1, 7, 1, tzinfo=UTC)  # a Tuesday, just after the 07:00 daily
NOW = SENT_AT + timedelta(hours=2)
LIST = "/admin/editions"
REFUSED = "550 5.1.1 <gone@example.com>: no such user"


def _seed(web: WebRig) -> None:
    items = [
        article(f"ai-{i}", "ai", SENT_AT - timedelta(hours=i + 2), source=f"S{i}") for i in range(3)
    ] + [article("robo-1", "robotics", SENT_AT - timedelta(hours=3), source="R")]
    with web.service.sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors
        since = SENT_AT - timedelta(days=3)
        for email, categories in [
            ("ann@example.com", "ai"),
            ("bob@example.com", "ai"),
            ("gone@example.com", "ai"),
            ("rob@example.com", "robotics"),
            ("quinn@example.com", "quantum"),  # nothing new: skipped
        ]:
            person = reader(session, email, categories=categories, created_at=since)
            person.next_daily_at = SENT_AT.replace(minute=0)


@pytest.fixture
def sent(web: WebRig) -> Iterator[int]:
    """Today's daily, planned and sent by the tick; bob unsubscribes an hour later."""
    _seed(web)
    web.smtp.reject["gone@example.com"] = REFUSED
    web.portal.call(web.service.tick, SENT_AT)
    with web.service.sessions.begin() as session:
        bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.com"))
        assert bob is not None
        unsubscribe(bob, SENT_AT + timedelta(hours=1), via="link")
        edition_id = session.scalar(select(Edition.id))
        assert edition_id is not None
    with time_machine.travel(NOW, tick=False):
        sign_in(web.client)
        yield edition_id


def _deliveries(web: WebRig) -> list[tuple[str, str]]:
    with web.service.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    return sorted((email, str(status)) for email, status in rows)


def test_the_report_counts_every_outcome_of_the_edition(web: WebRig, sent: int) -> None:
    with web.service.sessions() as session:
        found = report(session, sent)
    assert found is not None
    e = found.edition
    assert (e.kind, e.period, e.planned) == ("daily", "2026-12-01", 5)
    assert (e.get("sent"), e.get("failed"), e.get("skipped"), e.waiting) == (3, 1, 1, 0)
    ((why, n),) = found.failed_by_reason
    assert n == 1 and "550 5.1.1" in why and "gone@example.com" not in why
    assert [n for _, n in found.skipped_by_reason] == [1]
    assert found.bounced == {"hard": 1} and found.unsubscribed_since == 1
    assert found.digest_count == 3  # the public archive's All Technology is the third
    shown = [(d.readers, d.articles, d.archived) for d in found.digests]
    assert shown == [(3, 3, ("ai",)), (1, 1, ("robotics",)), (0, 4, ("all",))]
    with web.service.sessions() as session:
        assert report(session, sent + 1) is None


def test_a_refusal_not_about_the_address_is_no_bounce(web: WebRig) -> None:
    """A relay's policy refusal (5.7.1) fails the message and keeps the reader: the report
    lists it apart, and neither it nor the engagement API counts it as bounced (/metrics
    counts bounced the same way), so the bounce rate an operator watches is the readers'."""
    _seed(web)
    web.smtp.reject["gone@example.com"] = REFUSED
    web.smtp.reject["rob@example.com"] = "554 5.7.1 Message rejected by policy"
    web.portal.call(web.service.tick, SENT_AT)
    with web.service.sessions() as session:
        edition_id = session.scalar(select(Edition.id))
        assert edition_id is not None
        found = report(session, edition_id)
    assert found is not None and found.edition.get("failed") == 2
    assert found.bounced == {"hard": 1} and found.bounces == 1
    assert found.other_reports == {"failed-not-address": 1}
    with time_machine.travel(NOW, tick=False):
        sign_in(web.client)
        words = text_of(web.client.get(f"{LIST}/{edition_id}").text)
        api = web.client.get("/api/engagement/editions", headers=ADMIN).json()
    assert "Bounced 1 (1 hard) Other reports 1 refused, not about the address" in words
    (daily,) = api["editions"]
    assert (daily["failed"], daily["bounced"]) == (2, 1)


def test_failed_reasons_group_the_same_refusal_across_domains() -> None:
    """A relay that quotes each recipient gives one reason, not one per provider."""
    reasons = {
        reason("550 5.1.1 <ann@example.com>: user unknown"),
        reason("550 5.1.1 <bob@mail.example.org>: user unknown"),
        reason("550 5.1.1 <Carol.X+tag@xn--bcher-kva.example>: user unknown"),
    }
    assert reasons == {"550 5.1.1 <…>: user unknown"}


def test_the_list_and_the_report_page_show_exact_numbers(web: WebRig, sent: int) -> None:
    listed = text_of(web.client.get(LIST).text)
    assert (
        "daily 2026-12-01 planned 2026-12-01 07:01 UTC 5 planned · 3 sent · 1 failed · "
        "1 skipped · 0 waiting"
    ) in listed
    page = web.client.get(f"{LIST}/{sent}")
    assert page.status_code == 200 and "location.reload" not in page.text
    words = text_of(page.text)
    assert "Planned 5 Sent 3 Failed 1 Skipped 1 Waiting 0 Bounced 1 (1 hard)" in words
    assert "Unsubscribed after it 1" in words
    assert "550 5.1.1" in words and "gone@example.com" not in words
    digests = re.findall(r'href="(/admin/digests/\d+)"', page.text)
    assert len(digests) == 3
    copy = web.client.get(digests[0])
    assert copy.status_code == 200 and "Story ai-0" in copy.text
    assert "script-src" not in copy.headers["content-security-policy"]
    assert "/unsubscribe/" not in copy.text and "An operator's copy" in copy.text
    assert web.client.get(f"{LIST}/99999").status_code == 404
    assert web.client.get("/admin/digests/99999").status_code == 404


def test_pages_reload_while_an_edition_is_sending(web: WebRig, sent: int) -> None:
    with web.service.sessions.begin() as session:
        row = session.scalars(
            select(Delivery).where(Delivery.status == DeliveryStatus.SENT)
        ).first()
        assert row is not None
        row.status = DeliveryStatus.QUEUED
    for path in (LIST, f"{LIST}/{sent}"):
        page = web.client.get(path)
        assert "location.reload" in page.text and "reloads every 10 s" in page.text


def test_a_readers_next_edition_by_address_and_from_their_page(web: WebRig, sent: int) -> None:
    later = article("ai-new", "ai", SENT_AT + timedelta(hours=1))
    with web.service.sessions.begin() as session:
        assert not ingest(session, [(1, later)]).errors
        ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
    page = web.client.get(f"{LIST}/preview?email=ANN@example.com&kind=daily")
    assert page.status_code == 200, page.text
    assert "Story ai-new" in page.text and "Story ai-0" not in page.text  # sent today
    assert "/unsubscribe/" not in page.text and "An operator's copy" in page.text
    same = web.client.get(f"/admin/subscribers/{ids['ann@example.com']}/preview?kind=daily")
    assert same.status_code == 200 and same.text == page.text
    empty = web.client.get(f"{LIST}/preview?email=rob@example.com&kind=daily")
    assert empty.status_code == 404 and "Nothing to send" in text_of(empty.text)
    missing = web.client.get(f"{LIST}/preview?email=nobody@example.com&kind=daily")
    assert missing.status_code == 404
    assert "Reader's address: no subscriber has the address nobody@example.com" in text_of(
        missing.text
    )
    bad = web.client.get(f"{LIST}/preview?email=ann@example.com&kind=hourly")
    assert bad.status_code == 400 and "kind:" in text_of(bad.text)
    assert _deliveries(web).count(("ann@example.com", "sent")) == 1  # nothing queued


def test_a_test_send_from_the_page_uses_up_nobodys_edition(web: WebRig) -> None:
    _seed(web)
    with time_machine.travel(SENT_AT - timedelta(minutes=30), tick=False):
        sign_in(web.client)
        answer = submit(
            web.client, LIST, f"{LIST}/test", kind="daily", to="Editor@Example.org", categories="ai"
        )
        assert answer.status_code == 200, answer.text
        notice = text_of(answer.text)
        assert (
            "Test message sent to editor@example.org and accepted by the mail server "
            "(articles in it: 3)" in notice
        )
    (mail,) = web.smtp.wait_for(1)
    assert mail.recipients == ["editor@example.org"]
    assert str(parse(mail.data)["Subject"]).startswith("[Test] ")
    assert _deliveries(web) == [] and web.count(Edition) == 0
    with web.service.sessions() as session:
        due = set(session.scalars(select(Subscriber.next_daily_at)))
    assert due == {SENT_AT.replace(minute=0)}


@pytest.mark.parametrize(
    ("fields", "status", "problem"),
    [
        ({"kind": "hourly", "to": "a@example.com"}, 400, "Edition: daily or weekly"),
        ({"kind": "daily", "to": ""}, 400, "to is required"),
        ({"kind": "daily", "to": "not an address"}, 400, "to:"),
        ({"kind": "daily", "to": "a@example.com", "categories": "cooking"}, 400, "Categories:"),
        ({"kind": "daily", "to": "a@example.com", "categories": "quantum"}, 404, "Nothing"),
    ],
)
def test_a_bad_test_send_is_shown_on_the_page_and_sends_nothing(
    web: WebRig, fields: dict[str, str], status: int, problem: str
) -> None:
    _seed(web)
    with time_machine.travel(SENT_AT - timedelta(minutes=30), tick=False):
        sign_in(web.client)
        answer = submit(web.client, LIST, f"{LIST}/test", **fields)
    assert answer.status_code == status, answer.text
    assert problem in text_of(answer.text)
    assert 'id="test-form"' in answer.text and (fields["to"] or "") in answer.text
    assert web.smtp.messages == [] and _deliveries(web) == []


def _trigger(web: WebRig, **fields: Any) -> Any:
    return submit(web.client, LIST, f"{LIST}/trigger", **fields)


def _unsubscribe(web: WebRig, email: str) -> None:
    with web.service.sessions.begin() as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None
        unsubscribe(found, SENT_AT, via="link")


def _not_queued(page: str) -> list[str]:
    """The rows of the "Not queued" list, as text."""
    found = re.search(r'<ul class="edition-list" id="not-queued">(.*?)</ul>', page, re.S)
    assert found is not None, "no Not queued list on the page"
    return [text_of(row) for row in re.findall(r"<li>(.*?)</li>", found.group(1), re.S)]


def test_send_now_queues_the_listed_readers_once(web: WebRig) -> None:
    _seed(web)
    with time_machine.travel(SENT_AT + timedelta(minutes=5), tick=False):
        sign_in(web.client)
        _unsubscribe(web, "bob@example.com")
        listed = "ann@example.com, x@example.com, bob@example.com"
        answer = _trigger(web, kind="daily", who="listed", emails=listed)
        # Some were left out: the answer says which and why, and puts no address in a URL.
        assert answer.status_code == 200, answer.text
        shown = text_of(answer.text)
        assert "Queued: 1 (sent at the daemon's next tick)" in shown
        assert "not active readers of this edition: 2." in shown
        assert _not_queued(answer.text) == [
            "x@example.com no such subscriber",
            "bob@example.com status is unsubscribed",
        ]
        # A row now waits, which makes the editions page reload itself; this answer to the
        # form must not (reloading it sent the form again: a second action, other numbers).
        assert _deliveries(web) == [("ann@example.com", "queued")]
        assert 'id="refresh"' not in answer.text and "location.reload" not in answer.text
        assert 'id="refresh"' in web.client.get(LIST).text
        again = _trigger(web, kind="daily", who="listed", emails="ann@example.com")
        assert again.status_code == 303, again.text  # nothing left out: back to the list
        assert "queued=0" in again.headers["location"] and "already=1" in again.headers["location"]
        assert "@" not in again.headers["location"]
        # a hundred addresses pasted in, well past 2 000 characters
        pasted = ", ".join(f"reader.number.{n}@example.com" for n in range(100))
        longer = _trigger(web, kind="daily", who="listed", emails=pasted)
        assert longer.status_code == 200 and "not active readers of this edition: 100." in (
            text_of(longer.text)
        )
        assert len(_not_queued(longer.text)) == 100
    assert _deliveries(web) == [("ann@example.com", "queued")]


def test_send_now_to_everyone_needs_the_box_ticked(web: WebRig) -> None:
    _seed(web)
    with time_machine.travel(SENT_AT + timedelta(minutes=5), tick=False):
        sign_in(web.client)
        refused = _trigger(web, kind="daily", who="all")
        assert refused.status_code == 400
        assert "Every active reader: tick the box" in text_of(refused.text)
        assert _deliveries(web) == []
        # Every reader here takes the daily only: the recap's answer says so, not six zeros.
        nobody = _trigger(web, kind="weekly", who="all", everyone="yes")
        assert nobody.headers["location"] == f"{LIST}?done=triggered-nobody"
        shown = text_of(web.client.get(nobody.headers["location"]).text)
        assert "Nothing queued: no active reader takes this edition." in shown
        answer = _trigger(web, kind="daily", who="all", everyone="yes")
        assert "queued=4" in answer.headers["location"], answer.headers["location"]
        assert "empty=1" in answer.headers["location"]
    assert [s for _, s in _deliveries(web)].count("queued") == 4


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "daily", "who": "listed", "emails": ""}, "Addresses: must be"),
        ({"kind": "daily", "who": "listed", "emails": "ann@example.com nope"}, "address 2:"),
        ({"kind": "monthly", "who": "all", "everyone": "yes"}, "Edition: daily or weekly"),
    ],
)
def test_a_bad_send_now_is_shown_on_the_page_and_queues_nothing(
    web: WebRig, fields: dict[str, str], problem: str
) -> None:
    _seed(web)
    with time_machine.travel(SENT_AT + timedelta(minutes=5), tick=False):
        sign_in(web.client)
        answer = _trigger(web, **fields)
    assert answer.status_code == 400 and problem in text_of(answer.text)
    assert _deliveries(web) == []


def test_the_tools_need_their_forms_csrf_token(web: WebRig) -> None:
    _seed(web)
    sign_in(web.client)
    for action in ("test", "trigger"):
        answer = web.client.post(
            f"{LIST}/{action}", data={"kind": "daily", "to": "a@example.com", "who": "all"}
        )
        assert answer.status_code == 403
    assert web.smtp.messages == [] and _deliveries(web) == []


def test_counts_are_exact_with_thousands_separators(web: WebRig) -> None:
    prefs = parse_preferences("ai", "daily", "UTC", "UTC")
    with web.service.sessions.begin() as session:
        people = [
            new_subscriber(f"r{i}@example.com", prefs, SubscriberStatus.ACTIVE) for i in range(1234)
        ]
        session.add_all(people)
        big = edition(session, "daily", "2026-12-01", SENT_AT)
        session.flush()
        session.execute(
            insert(Delivery),
            [
                {
                    "subscriber_id": p.id,
                    "edition_id": big.id,
                    "status": DeliveryStatus.SKIPPED,
                    "due_at": SENT_AT,
                    "next_attempt_at": SENT_AT,
                    "attempts": 0,
                    "created_at": SENT_AT,
                    "last_error": "nothing new in their categories",
                }
                for p in people
            ],
        )
    sign_in(web.client)
    listed = text_of(web.client.get(LIST).text)
    assert "1,234 planned · 0 sent · 0 failed · 1,234 skipped" in listed
    words = text_of(web.client.get(f"{LIST}/{big.id}").text)
    assert "Planned 1,234" in words and "nothing new in their categories 1,234" in words

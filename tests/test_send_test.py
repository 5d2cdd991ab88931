"""A test send (``POST /api/editions/test``, :mod:`digestd.ops.test_send`): today's edition
for some categories reaches one address through the real SMTP server, marked as a test,
and uses up nobody's edition: no edition, digest or queue row, and every reader still gets
theirs at their send time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import select

from digestd.content.articles import ingest
from digestd.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    Edition,
    EditionKind,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)
from digestd.ops.test_send import send_test
from digestd.readers.suppression import suppress
from tests.admin_seed import AUTH, reader
from tests.conftest import WebRig
from tests.helpers import article, parse, parts
from tests.web_helpers import links_in, text_of

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)  # before the 07:00 UTC daily


def _seed(web: WebRig) -> None:
    items = [
        article(f"ai-{i}", "ai", NOW - timedelta(hours=i + 1), score=9 - i, source=f"S{i}")
        for i in range(3)
    ] + [article("robot-1", "robotics", NOW - timedelta(hours=2), source="R")]
    with web.service.sessions.begin() as session:
        assert not ingest(session, enumerate(items, start=1)).errors
        for i in range(3):
            person = reader(session, f"reader{i}@example.com", created_at=NOW - timedelta(days=2))
            person.next_daily_at = NOW.replace(hour=7)


def _test_send(web: WebRig, to: str) -> Any:
    """A test send of today's AI daily to ``to``, through the API."""
    return web.client.post(
        "/api/editions/test", json={"kind": "daily", "to": to, "categories": ["ai"]}, headers=AUTH
    )


def _rows(web: WebRig) -> tuple[int, int, int]:
    return (web.count(Edition), web.count(Digest), web.count(Delivery))


def test_the_test_send_reaches_the_address_marked_as_a_test_and_queues_nothing(
    web: WebRig,
) -> None:
    _seed(web)
    with time_machine.travel(NOW, tick=False):
        answer = _test_send(web, "Editor@Example.org")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["to"] == "editor@example.org" and body["articles"] == 3
    assert body["subject"].startswith("[Test] ") and body["period"] == "2026-11-29"
    assert body["message_id"].startswith("<test.daily.2026-11-29.")
    (mail,) = web.smtp.wait_for(1)
    assert mail.recipients == ["editor@example.org"]
    assert mail.envelope_from == "bounces@news.example.com"
    message = parse(mail.data)
    assert str(message["Subject"]) == body["subject"]
    assert str(message["Message-ID"]) == body["message_id"]
    text, _ = parts(message)
    assert "Story ai-0" in text and "Story robot-1" not in text
    assert _rows(web) == (0, 0, 0)

    # Every reader still gets their own daily at 07:00.
    web.portal.call(web.service.tick, NOW.replace(hour=7, minute=1))
    with web.service.sessions() as session:
        sent = session.execute(
            select(Subscriber.email, Delivery.status).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    assert sorted(sent) == [(f"reader{i}@example.com", DeliveryStatus.SENT) for i in range(3)]
    assert len(web.smtp.wait_for(4)) == 4


def test_a_test_sends_links_say_they_are_from_a_test_copy_and_change_nothing(
    web: WebRig,
) -> None:
    """An operator clicking through a test to check its footer was told "We hold no
    subscription for this link: it was deleted", and "View in browser" led nowhere."""
    _seed(web)
    with time_machine.travel(NOW, tick=False):
        answer = _test_send(web, "editor@example.org")
        assert answer.status_code == 200, answer.text
        (mail,) = web.smtp.wait_for(1)
        links = links_in(mail.data)
        assert {"preferences", "unsubscribe", "view"} <= set(links)
        before = _statuses(web)
        for name in ("preferences", "unsubscribe", "view"):
            page = web.client.get(links[name])
            assert page.status_code == 200, (name, page.text)
            assert "from a test send or a preview" in text_of(page.text)
            assert "deleted" not in text_of(page.text)
        one_click = web.client.post(links["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200
    assert _statuses(web) == before


def _statuses(web: WebRig) -> list[tuple[str, str]]:
    with web.service.sessions() as session:
        rows = session.execute(select(Subscriber.email, Subscriber.status))
        return sorted((str(email), str(status)) for email, status in rows)


def test_the_test_send_function_is_what_the_command_calls(web: WebRig) -> None:
    """``digestd send-test`` calls :func:`send_test` with the service as it stands."""
    _seed(web)
    sent = web.portal.call(
        send_test, web.service, EditionKind.WEEKLY, "me@example.com", ["robotics"], NOW
    )
    assert sent is not None and sent.articles == 1 and sent.reply == "Message accepted for delivery"
    assert parse(web.smtp.wait_for(1)[0].data)["Subject"].startswith("[Test] ")
    nothing = web.portal.call(
        send_test, web.service, EditionKind.DAILY, "me@example.com", ["quantum"], NOW
    )
    assert nothing is None
    assert _rows(web) == (0, 0, 0)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"kind": "hourly", "to": "a@example.com"}, 400, "kind"),
        ({"kind": "daily"}, 400, "to"),
        ({"kind": "daily", "to": "not an address"}, 400, "to"),
        ({"kind": "daily", "to": "a@example.com", "categories": ["nope"]}, 400, "categories"),
        ({"kind": "daily", "to": "a@example.com", "categories": 7}, 400, "categories"),
        ({"kind": "daily", "to": "a@example.com", "cc": "b@example.com"}, 400, "cc"),
        ({"kind": "daily", "to": "a@example.com", "categories": "quantum"}, 404, None),
    ],
)
def test_bad_test_sends_are_refused_naming_the_field_and_send_nothing(
    web: WebRig, body: dict[str, Any], status: int, field: str | None
) -> None:
    _seed(web)
    with time_machine.travel(NOW, tick=False):
        answer = web.client.post("/api/editions/test", json=body, headers=AUTH)
    assert answer.status_code == status, answer.text
    assert answer.json().get("field") == field
    assert web.smtp.messages == [] and _rows(web) == (0, 0, 0)


def test_a_refusing_mail_server_is_a_502_that_says_so(web: WebRig) -> None:
    _seed(web)
    web.smtp.reject["blocked@example.com"] = "550 5.1.1 No such user"
    with time_machine.travel(NOW, tick=False):
        answer = web.client.post(
            "/api/editions/test", json={"kind": "daily", "to": "blocked@example.com"}, headers=AUTH
        )
    assert answer.status_code == 502
    assert "refused the test message" in answer.json()["error"]
    assert _rows(web) == (0, 0, 0)


def test_a_suppressed_address_gets_no_test_send(web: WebRig) -> None:
    """A test is mail too: an address that bounced, complained or was erased is refused,
    naming ``to`` (it was sent before)."""
    _seed(web)
    with web.service.sessions.begin() as session:
        subscriber = session.scalars(
            select(Subscriber).where(Subscriber.email == "reader1@example.com")
        ).one()
        suppress(
            session, subscriber.id, SubscriberStatus.BOUNCED, SuppressionReason.HARD_BOUNCE, NOW
        )
    with time_machine.travel(NOW, tick=False):
        answer = _test_send(web, "reader1@example.com")
    assert answer.status_code == 409
    assert answer.json()["field"] == "to"
    assert "suppression list (hard-bounce)" in answer.json()["error"]
    assert web.smtp.messages == [] and _rows(web) == (0, 0, 0)


def test_test_sends_are_limited_per_address_and_in_all_each_hour(web: WebRig) -> None:
    """An admin token in the wrong hands must not mail one address, or everybody, without
    limit: 10 test sends an hour to one address, 60 in all; each 429 says when to retry."""
    _seed(web)
    with time_machine.travel(NOW, tick=False) as clock:
        answers = [_test_send(web, "editor@example.org") for _ in range(11)]
        assert [a.status_code for a in answers] == [200] * 10 + [429]
        assert answers[-1].headers["Retry-After"] == "3600"
        assert "to this inbox" in answers[-1].json()["error"]
        # The same inbox by another spelling (sub-addressing) is the same inbox.
        assert _test_send(web, "editor+again@example.org").status_code == 429
        others = [_test_send(web, f"editor{i % 10}@example.org") for i in range(51)]
        assert [a.status_code for a in others] == [200] * 50 + [429]
        assert "to this inbox" not in others[-1].json()["error"]
        clock.shift(timedelta(minutes=30))
        assert _test_send(web, "new@example.org").headers["Retry-After"] == "1800"
        clock.shift(timedelta(minutes=30))
        assert _test_send(web, "editor@example.org").status_code == 200
    assert len(web.smtp.wait_for(61)) == 61
    assert _rows(web) == (0, 0, 0)

"""``POST /api/bounces`` over HTTP: a real Postfix DSN and an ARF complaint, bad bodies, auth."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from digestd.config import Settings
from digestd.models import Subscriber, SubscriberStatus, Suppression
from digestd.service import Service
from tests.conftest import WebRig
from tests.seeding import Reader, add_articles, add_readers, hourly_articles
from tests.test_bounces import ARF, FIRST, FORGED_TAG, POSTFIX_DSN, TAG_1

RAW = {"Content-Type": "message/rfc822"}


def _auth(web: WebRig) -> dict[str, str]:
    return {"Authorization": f"Bearer {web.service.settings.admin_token}", **RAW}


def _first_delivery_to(settings: Settings, address: str) -> None:
    """Delivery 1 goes to ``address`` (the fixtures' VERP tag names delivery 1)."""
    service = Service.build(settings)
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(FIRST - timedelta(days=1), FIRST))
        add_readers(session, [Reader(address)], FIRST - timedelta(hours=1))
    report = asyncio.run(service.tick(FIRST + timedelta(minutes=1)))
    assert report.delivered.sent == 1
    asyncio.run(service.close())


def _status(web: WebRig, address: str) -> str:
    with web.service.sessions() as session:
        return session.scalars(select(Subscriber.status).where(Subscriber.email == address)).one()


def test_a_real_postfix_dsn_bounces_and_suppresses_the_reader(
    web: WebRig, settings: Settings
) -> None:
    _first_delivery_to(settings, "gone@example.com")
    answer = web.client.post("/api/bounces", content=POSTFIX_DSN, headers=_auth(web))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["outcome"] == "hard-bounce" and body["matched_by"] == "verp"
    assert body["suppressed"] is True and body["status"] == "5.1.1"
    assert _status(web, "gone@example.com") == SubscriberStatus.BOUNCED
    # the same report again changes nothing more
    again = web.client.post("/api/bounces", content=POSTFIX_DSN, headers=_auth(web))
    assert again.status_code == 200 and again.json()["suppressed"] is True


def test_an_arf_complaint_unsubscribes_and_suppresses(web: WebRig, settings: Settings) -> None:
    _first_delivery_to(settings, "reader@example.com")
    answer = web.client.post("/api/bounces", content=ARF, headers=_auth(web))
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "complaint" and answer.json()["suppressed"] is True
    assert _status(web, "reader@example.com") == SubscriberStatus.COMPLAINED


def test_bad_bodies_get_one_clear_error_and_change_nothing(web: WebRig, settings: Settings) -> None:
    _first_delivery_to(settings, "gone@example.com")
    cases = [
        (b"", RAW, 400, "empty"),
        (b"Subject: hello\r\n\r\nJust a normal message.\r\n", RAW, 400, ""),
        (b'{"bounce": true}', {"Content-Type": "application/json"}, 415, "raw report"),
    ]
    for body, headers, code, words in cases:
        answer = web.client.post("/api/bounces", content=body, headers={**_auth(web), **headers})
        assert answer.status_code == code, (body, answer.text)
        assert words in answer.json()["error"]
    assert _status(web, "gone@example.com") == SubscriberStatus.ACTIVE


def test_bounces_need_the_admin_token(web: WebRig) -> None:
    answer = web.client.post("/api/bounces", content=POSTFIX_DSN, headers=RAW)
    assert answer.status_code == 401


def test_a_report_without_proof_is_answered_unmatched_and_changes_no_one(
    web: WebRig, settings: Settings
) -> None:
    _first_delivery_to(settings, "gone@example.com")
    forged = POSTFIX_DSN.replace(TAG_1.encode(), FORGED_TAG)
    answer = web.client.post("/api/bounces", content=forged, headers=_auth(web))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["outcome"], body["matched"], body["matched_by"]) == ("unmatched", False, None)
    assert body["suppressed"] is False
    assert _status(web, "gone@example.com") == SubscriberStatus.ACTIVE
    assert web.count(Suppression) == 0

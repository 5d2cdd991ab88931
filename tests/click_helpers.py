"""Shared by the engagement tests: readers sent a daily with tracked links, the links read
back from the email, counts of rows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from sqlalchemy import func, select

from digestd.readers.clicks import Settled
from tests.conftest import ADMIN_TOKEN, WebRig
from tests.helpers import article, parse, parts
from tests.web_helpers import links_in, signup_form

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
SENT = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 07:00 in Paris
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BASE = "https://digest.example.com"
TRACKED = re.compile(r"^ *https://digest\.example\.com(/c/\S+)\r?$", re.M)


def stories() -> list[dict[str, Any]]:
    published = datetime(2026, 11, 29, 21, tzinfo=UTC)
    return [
        article(f"ai-{i}", "ai", published - timedelta(hours=i), score=9 - i, source=f"S{i}")
        for i in range(4)
    ] + [article("robots-1", "robotics", published, score=2, source="Robo Wire")]


def sign_up(web: WebRig, email: str, **fields: Any) -> None:
    """``email`` signs up (AI and Robotics, Europe/Paris, daily, unless ``fields`` say
    otherwise) and confirms."""
    with time_machine.travel(NOW, tick=False):
        signup_form(web, email, **fields)
        web.client.get(links_in(web.smtp.messages[-1].data)["confirm"])


def send_daily(web: WebRig, email: str = "ann@example.com") -> bytes:
    """``email`` (AI and Robotics, Europe/Paris) signs up, confirms and is sent the daily."""
    assert web.client.post("/api/articles", json=stories(), headers=ADMIN).status_code == 200
    sign_up(web, email)
    before = len(web.smtp.messages)
    web.portal.call(web.service.tick, SENT)
    assert len(web.smtp.messages) == before + 1
    return web.smtp.messages[-1].data


def tracked_links(digest: bytes) -> list[str]:
    """The digest's article links (paths), in the email's order: the text part's URL lines,
    each also in the HTML."""
    text, html = parts(parse(digest))
    found = TRACKED.findall(text)
    for path in found:
        assert f'href="{BASE}{path}"' in html
    return found


def count(web: WebRig, model: Any, *where: Any) -> int:
    with web.service.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def settle(web: WebRig, at: datetime) -> Settled:
    return web.service.settle_clicks(at)


def edition_with_clicks(web: WebRig) -> dict[str, list[str]]:
    """Ann and Bob (AI and Robotics), Cy (AI) are sent the daily. Ann opens the lead twice
    and Robotics' story; Bob the lead; Cy's mail scanner opens every link at once; Bob
    unsubscribes afterwards."""
    assert web.client.post("/api/articles", json=stories(), headers=ADMIN).status_code == 200
    for email, categories in (("ann", ["ai", "robotics"]), ("bob", ["ai", "robotics"])):
        sign_up(web, f"{email}@example.com", categories=categories)
    sign_up(web, "cy@example.com", categories=["ai"])
    before = len(web.smtp.messages)
    web.portal.call(web.service.tick, SENT)
    mail = {m.recipients[0]: m.data for m in web.smtp.messages[before:]}
    assert len(mail) == 3
    links = {email.split("@")[0]: tracked_links(data) for email, data in mail.items()}
    with time_machine.travel(SENT + timedelta(minutes=1), tick=False) as clock:
        for link in links["cy"]:
            web.client.get(link)
            clock.shift(timedelta(milliseconds=100))
        clock.shift(timedelta(minutes=30))
        for who, n in (("ann", 0), ("ann", 4), ("bob", 0)):
            assert web.client.get(links[who][n]).status_code == 303
            clock.shift(timedelta(minutes=3))
        web.client.get(links["ann"][0])
        bob = links_in(mail["bob@example.com"])["unsubscribe"]
        web.client.post(bob, data={"List-Unsubscribe": "One-Click"})
    settle(web, SENT + timedelta(hours=2))
    return links

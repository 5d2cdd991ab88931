"""Two changes to one reader at once act one after the other, the second on what the first
left, on SQLite and PostgreSQL alike: an unsubscribe is never undone by a pause from another
tab, and two tabs' preferences are never mixed.

Each test holds the first change's transaction open (as a slow request or a tick's batch
would) while the second request comes in, then lets it commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import time_machine
from sqlalchemy import update
from sqlalchemy.orm import object_session

from digestd.models import Subscriber, SubscriberStatus
from digestd.readers.lifecycle import change_preferences, unsubscribe
from digestd.readers.subscribers import Schedule, by_public_id, parse_preferences
from tests.conftest import WebRig
from tests.web_helpers import csrf_of, links_in, signup_form, text_of

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
# Long enough for a request that does not wait for the held change to have answered.
SETTLES = 0.5


def _reader(web: WebRig) -> tuple[str, str]:
    """Ann (AI and Robotics, daily) confirmed: her preferences link and her public id."""
    signup_form(web, "ann@example.com")
    links = links_in(web.smtp.messages[-1].data)
    assert web.client.get(links["confirm"]).status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    return links["preferences"], reader.public_id


@contextmanager
def _held(web: WebRig, public_id: str, change: Callable[[Subscriber], object]) -> Iterator[None]:
    """``change`` made to the locked reader in a transaction left open for the body of the
    ``with``, committed at its end."""
    holding, release = threading.Event(), threading.Event()

    def run() -> None:
        with web.service.sessions.begin() as session:
            reader = by_public_id(session, public_id, lock=True)
            assert reader is not None
            change(reader)
            session.flush()
            holding.set()
            release.wait(30)

    first = threading.Thread(target=run)
    first.start()
    assert holding.wait(30)
    try:
        yield
    finally:
        release.set()
        first.join(30)


class _Meanwhile:
    """A POST (a GET without ``data``) from another thread, started at once; :meth:`answer`
    waits for it."""

    def __init__(self, web: WebRig, url: str, data: dict[str, Any] | None = None) -> None:
        self.answers: list[httpx.Response] = []
        self.thread = threading.Thread(
            target=lambda: self.answers.append(
                web.client.get(url) if data is None else web.client.post(url, data=data)
            )
        )
        self.thread.start()
        self.thread.join(SETTLES)

    def answer(self) -> httpx.Response:
        self.thread.join(30)
        (answer,) = self.answers
        return answer


def test_an_unsubscribe_in_flight_is_not_undone_by_a_pause_from_another_tab(web: WebRig) -> None:
    with time_machine.travel(NOW, tick=False):
        page, public_id = _reader(web)
        form = {"csrf": csrf_of(web.client.get(page).text), "action": "pause", "pause_for": "1w"}
        with _held(web, public_id, lambda reader: unsubscribe(reader, NOW, via="link")):
            pausing = _Meanwhile(web, page, form)
        assert pausing.answer().status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None and reader.status == SubscriberStatus.UNSUBSCRIBED
    assert reader.paused_until is None and reader.next_daily_at is None


def test_two_tabs_saving_at_once_leave_the_second_tabs_choice_whole(web: WebRig) -> None:
    schedule = Schedule(web.service.settings.daily_time, web.service.settings.weekly_time)
    first = parse_preferences(["ai", "fintech"], "daily", "UTC", "UTC")

    def first_tab(reader: Subscriber) -> None:
        change_preferences(reader, first, NOW, schedule)

    with time_machine.travel(NOW, tick=False):
        page, public_id = _reader(web)
        form = {
            "csrf": csrf_of(web.client.get(page).text),
            "action": "save",
            "categories": ["ai", "quantum"],
            "frequency": "weekly",
            "timezone": "UTC",
        }
        with _held(web, public_id, first_tab):
            saving = _Meanwhile(web, page, form)
        assert saving.answer().status_code == 200
    reader = web.subscriber("ann@example.com")
    assert reader is not None
    assert sorted(reader.category_slugs) == ["ai", "quantum"]
    assert (reader.wants_daily, reader.wants_weekly) == (False, True)


def _write_unchanged(reader: Subscriber) -> None:
    """A write that changes nothing, as a tick's batch holds the database meanwhile."""
    session = object_session(reader)
    assert session is not None
    session.execute(
        update(Subscriber).where(Subscriber.id == reader.id).values(status=Subscriber.status)
    )


def test_a_confirmation_link_clicked_twice_at_once_welcomes_once(web: WebRig) -> None:
    """SQLite's transaction took its write lock only at its first write, after each click
    had read "pending": each then activated the reader and sent a welcome."""
    with time_machine.travel(NOW, tick=False):
        signup_form(web, "ann@example.com")
        confirm = links_in(web.smtp.messages[-1].data)["confirm"]
        reader = web.subscriber("ann@example.com")
        assert reader is not None
        with _held(web, reader.public_id, _write_unchanged):
            clicks = [_Meanwhile(web, confirm), _Meanwhile(web, confirm)]
        pages = [text_of(click.answer().text) for click in clicks]
    welcomes = [m for m in web.smtp.wait_for(2) if b"Subject: Welcome" in m.data]
    assert len(web.smtp.messages) == 2 and len(welcomes) == 1, pages

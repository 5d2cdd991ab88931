"""Publishing the public archive (planning/archive.py): once a send time has passed, each
category's and All Technology's edition is the digest a reader of only that category gets,
created once, shared with such readers, never planned again. Real databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.delivery.catcher import MailCatcher
from digestd.models import ArchiveEdition, Delivery, Digest, Edition
from digestd.planning.archive import SHELVES, publish_due
from digestd.planning.planner import Planner
from digestd.service import Service
from tests.helpers import article
from tests.seeding import Reader, add_articles, add_readers

SEND = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # a Monday's daily, in UTC


def _service(env: dict[str, str], **more: str) -> Service:
    settings = load_settings({**env, **more})
    return Service.build(settings, transport=MailCatcher(settings.mail_dir))


@pytest.fixture
def service(env: dict[str, str]) -> Iterator[Service]:
    service = _service(env)
    yield service
    asyncio.run(service.close())


def _stories(service: Service, send: datetime = SEND) -> None:
    with service.sessions.begin() as session:
        add_articles(
            session,
            [
                article("ai-1", "ai", send - timedelta(hours=2), score=5, source="A"),
                article("ai-2", "ai", send - timedelta(hours=3), score=4, source="B"),
                article(
                    "bot-1",
                    "robotics",
                    send - timedelta(hours=4),
                    source="C",
                    categories=["robotics", "ai"],
                ),
                article("late", "ai", send + timedelta(minutes=1), score=50, source="D"),
            ],
        )


def _publish(service: Service, now: datetime) -> Any:
    return publish_due(
        service.sessions, service.policy, service.renderer, "UTC", now, lambda: False
    )


def _shelf(service: Service) -> dict[tuple[str, str, str], int | None]:
    with service.sessions() as session:
        rows = session.execute(
            select(
                ArchiveEdition.category,
                ArchiveEdition.kind,
                ArchiveEdition.period,
                ArchiveEdition.digest_id,
            )
        )
        return {(c, k, p): d for c, k, p, d in rows}


def _count(service: Service, model: Any) -> int:
    with service.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_an_edition_is_published_once_its_send_time_has_passed_and_only_once(
    service: Service,
) -> None:
    _stories(service)
    _publish(service, SEND - timedelta(minutes=1))
    assert not [k for k in _shelf(service) if k[2] == "2026-11-30"]  # not before 07:00
    report = _publish(service, SEND + timedelta(minutes=1))
    shelf = _shelf(service)
    today = {k[0]: d for k, d in shelf.items() if k[1:] == ("daily", "2026-11-30")}
    assert set(today) == set(SHELVES)  # every shelf decided, all 27
    assert {c for c, d in today.items() if d is not None} == {"all", "ai", "robotics"}
    # All Technology holds the same stories as AI, but a layout names its reader's
    # categories: a digest each, and Robotics' own.
    assert report.published == 3 and report.rendered == 3
    assert report.empty == len(SHELVES) - 3
    with service.sessions() as session:
        layouts: dict[int, Any] = dict(session.execute(select(Digest.id, Digest.layout)).all())
    ai_digest = today["ai"]
    assert ai_digest is not None
    assert [a for s in layouts[ai_digest]["sections"] for a, _ in s["articles"]] == [
        "ai-1",
        "ai-2",
        "bot-1",
    ]  # ranked; the article published after the send time is not in it
    digests = _count(service, Digest)
    again = _publish(service, SEND + timedelta(minutes=2))
    assert (again.published, again.empty, again.rendered) == (0, 0, 0)
    assert _shelf(service) == shelf and _count(service, Digest) == digests


def test_the_archive_edition_is_the_digest_a_reader_of_only_that_category_is_sent(
    service: Service,
) -> None:
    _stories(service)
    with service.sessions.begin() as session:
        ids = add_readers(
            session,
            [
                Reader("ai@example.com", "UTC", ("ai",)),
                Reader("all@example.com", "UTC", tuple(CATEGORIES)),
            ],
            SEND - timedelta(days=1),
        )
    report = asyncio.run(service.tick(SEND + timedelta(minutes=1)))  # readers, then the archive
    assert report.delivered.sent == 2
    shelf = _shelf(service)
    with service.sessions() as session:
        sent = dict(session.execute(select(Delivery.subscriber_id, Delivery.digest_id)).all())
    assert shelf[("ai", "daily", "2026-11-30")] == sent[ids["ai@example.com"]]
    assert shelf[("all", "daily", "2026-11-30")] == sent[ids["all@example.com"]]
    # The readers' planning rendered those two; the archive rendered only Robotics.
    assert report.enqueued.rendered == 2 and _count(service, Digest) == 3


def test_a_category_with_nothing_to_send_gets_no_edition_and_is_not_planned_again(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stories(service)
    _publish(service, SEND + timedelta(minutes=1))
    assert _shelf(service)[("quantum", "daily", "2026-11-30")] is None
    planned: list[str] = []
    real = Planner.layout_for

    def spy(self: Any, session: Any, slot: Any, categories: list[str], exclude: Any) -> Any:
        planned.append(",".join(categories))
        return real(self, session, slot, categories, exclude)

    monkeypatch.setattr(Planner, "layout_for", spy)
    _publish(service, SEND + timedelta(minutes=2))
    assert planned == []  # decided: a later tick costs one query per kind


def test_weekly_editions_are_named_by_their_sunday_in_the_default_timezone(
    env: dict[str, str],
) -> None:
    service = _service(env, DIGESTD_DEFAULT_TIMEZONE="America/New_York")
    sunday = datetime(2026, 11, 29, 13, 0, tzinfo=UTC)  # 08:00 in New York
    _stories(service, sunday)
    publish_due(
        service.sessions,
        service.policy,
        service.renderer,
        service.settings.default_timezone,
        sunday - timedelta(minutes=1),
    )
    assert ("ai", "weekly", "2026-11-29") not in _shelf(service)
    publish_due(
        service.sessions,
        service.policy,
        service.renderer,
        service.settings.default_timezone,
        sunday + timedelta(minutes=1),
    )
    shelf = _shelf(service)
    assert shelf[("ai", "weekly", "2026-11-29")] is not None
    # The daily of that Sunday went at 07:00 New York, 12:00 UTC.
    assert shelf[("ai", "daily", "2026-11-29")] is not None
    with service.sessions() as session:
        editions = set(session.execute(select(Edition.kind, Edition.period)).all())
    assert editions == {("daily", "2026-11-29"), ("weekly", "2026-11-29")}
    asyncio.run(service.close())


def test_stopping_leaves_what_was_published_and_the_next_pass_finishes(service: Service) -> None:
    _stories(service)
    calls = iter(range(1000))
    publish_due(
        service.sessions,
        service.policy,
        service.renderer,
        "UTC",
        SEND + timedelta(minutes=1),
        lambda: next(calls) >= 5,  # stop after five shelves
    )
    assert len([k for k in _shelf(service) if k[1] == "daily"]) == 5
    _publish(service, SEND + timedelta(minutes=2))
    assert len([k for k in _shelf(service) if k[1] == "daily"]) == len(SHELVES)

"""Enqueueing in a helper process: the same queue as in-process, and a dead helper loses
nothing (real spawned processes, real databases)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.collector import COLLECT_EVERY
from digestd.config import Settings, load_settings
from digestd.db import make_engine, make_sessions
from digestd.delivery.catcher import MailCatcher
from digestd.mail.digests import DigestRenderer, Masthead
from digestd.models import Delivery, Digest, EditionKind, Subscriber
from digestd.planning.enqueuer import WATCH_SECONDS, Enqueuer
from digestd.planning.planner import enqueue_due, enqueue_now
from digestd.planning.policy import EnqueueReport, Policy
from digestd.service import Service
from tests.conftest import SmtpSink
from tests.seeding import Reader, add_articles, add_readers, hourly_articles, seed_daily_edition

SEND = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)


def _seed(url: str, readers: int) -> tuple[Engine, sessionmaker[Session]]:
    return seed_daily_edition(url, readers, SEND)


def _renderer(settings: Settings) -> DigestRenderer:
    return DigestRenderer(Masthead.from_settings(settings))


def _queue(sessions: sessionmaker[Session]) -> list[tuple[str, str, Any]]:
    with sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Digest.layout)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .join(Digest, Digest.id == Delivery.digest_id)
            .order_by(Subscriber.email)
        ).all()
    return [tuple(row) for row in rows]


def _rows(sessions: sessionmaker[Session]) -> int:
    """Queue rows committed so far (a helper's progress, read from outside)."""
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)


def test_the_helper_process_queues_what_enqueueing_here_would(env: dict[str, str]) -> None:
    settings = load_settings(env)
    engine, sessions = _seed(settings.database_url, 2_500)  # three batches
    policy = Policy.from_settings(settings)

    async def enqueue(in_helper: bool) -> Any:
        enqueuer = Enqueuer(
            sessions, settings.database_url, _renderer(settings), in_helper=in_helper
        )
        try:
            return await enqueuer.enqueue(policy, SEND)
        finally:
            enqueuer.close()

    report = asyncio.run(enqueue(in_helper=True))
    assert report.queued == {"daily": 2_500}
    in_helper = _queue(sessions)
    assert len(in_helper) == 2_500
    assert {status for _, status, _ in in_helper} == {"queued"}
    # Everyone is now scheduled for tomorrow: enqueueing again here adds nothing ...
    again = asyncio.run(enqueue(in_helper=False))
    assert sum(again.queued.values()) == 0
    assert _queue(sessions) == in_helper
    # ... and each reader got the selection their categories call for.
    layouts = {email: layout["categories"] for email, _, layout in in_helper}
    assert layouts["r00002@example.com"] == ["ai", "robotics"]
    assert layouts["r00003@example.com"] == ["fintech"]
    engine.dispose()


def test_a_helper_starts_only_when_somebody_is_due(env: dict[str, str]) -> None:
    """An idle tick (cron runs one a minute) answers "nobody is due" without spawning the
    planner's helper, which costs most of such a tick's time; a due recap starts it."""
    settings = load_settings(env)
    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    sunday = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # the recap's day, after its hour
    with sessions.begin() as session:
        add_articles(session, hourly_articles(sunday - timedelta(days=3), sunday))
        weekly_only = Reader("weekly@example.com", daily=False, weekly=True)
        add_readers(session, [weekly_only], sunday - timedelta(days=3))
    policy = Policy.from_settings(settings)

    async def enqueue(now: datetime) -> tuple[Any, int]:
        enqueuer = Enqueuer(sessions, settings.database_url, _renderer(settings), in_helper=True)
        try:
            report = await enqueuer.enqueue(policy, now)
            return report, len(multiprocessing.active_children())
        finally:
            enqueuer.close()

    before_recap = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # a Friday: nothing is due
    assert asyncio.run(enqueue(before_recap)) == (EnqueueReport(), 0)
    report, helpers = asyncio.run(enqueue(sunday))
    assert (report.queued, helpers) == ({"weekly": 1}, 1)
    engine.dispose()


def _wait_until_gone(pid: int) -> None:
    """Until the killed helper is reaped: SIGKILL lands asynchronously, and a helper still
    seen alive would be asked (the other test's path) instead of replaced first."""
    deadline = time.monotonic() + 10
    while any(child.pid == pid for child in multiprocessing.active_children()):
        assert time.monotonic() < deadline, "the killed helper is still alive"
        time.sleep(0.01)  # waiting on another process, not on the clock under test


def test_a_helper_found_dead_is_replaced_before_it_is_asked(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(env)
    engine, sessions = _seed(settings.database_url, 1_200)
    policy = Policy.from_settings(settings)

    async def scenario() -> Any:
        enqueuer = Enqueuer(sessions, settings.database_url, _renderer(settings), in_helper=True)
        try:
            first = enqueuer.start()
            os.kill(first, signal.SIGKILL)  # the OOM killer, say, between two ticks
            _wait_until_gone(first)
            with caplog.at_level(logging.WARNING, logger="digestd.planning.enqueuer"):
                report = await enqueuer.enqueue(policy, SEND)
            assert enqueuer.start() != first
            return report
        finally:
            enqueuer.close()

    report = asyncio.run(scenario())
    assert report.queued == {"daily": 1_200}
    assert len(_queue(sessions)) == 1_200
    assert "planner's helper process died" in caplog.text
    engine.dispose()


def test_a_helper_that_dies_mid_edition_is_replaced_by_planning_here(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Killed after committing some batches: they stay, the rest is planned in-process,
    and everyone is queued exactly once."""
    settings = load_settings(env)
    engine, sessions = _seed(settings.database_url, 6_000)
    policy = Policy.from_settings(settings)

    async def scenario() -> Any:
        enqueuer = Enqueuer(sessions, settings.database_url, _renderer(settings), in_helper=True)
        helper = enqueuer.start()
        try:
            with caplog.at_level(logging.WARNING, logger="digestd.planning.enqueuer"):
                planning = asyncio.ensure_future(enqueuer.enqueue(policy, SEND))
                while _rows(sessions) == 0:  # a real process's progress: nothing to inject
                    await asyncio.sleep(0.005)
                os.kill(helper, signal.SIGKILL)
                return await planning, _rows(sessions)
        finally:
            enqueuer.close()

    report, _ = asyncio.run(scenario())
    assert len(_queue(sessions)) == 6_000
    assert "enqueue helper process died" in caplog.text
    # The tick counts the whole edition: the helper's committed batches and the rest.
    assert report.queued["daily"] == 6_000
    engine.dispose()


@pytest.mark.slow  # 2 500 readers through a spawned helper: ~10 s
def test_a_tick_with_a_helper_delivers_everyone_exactly_once(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """Enqueueing in the helper while the sender claims what it has committed so far."""
    settings = load_settings(
        {**env, "DIGESTD_HELPER_PROCESSES": "1", "DIGESTD_SMTP_URL": smtp_server.url}
    )
    engine, _ = _seed(settings.database_url, 2_500)
    engine.dispose()
    service = Service.build(settings)
    assert service.enqueuer.in_helper

    async def tick() -> Any:
        try:
            return await service.tick(SEND)
        finally:
            await service.close()

    report = asyncio.run(tick())
    assert report.enqueued.queued == {"daily": 2_500}
    assert report.delivered.sent == 2_500
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert len(received) == 2_500 and set(received.values()) == {1}


def test_a_tick_stopped_while_the_helper_plans_counts_what_it_queued(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """SIGTERM while the helper is still planning: the batches it committed stay queued,
    and the tick's line counts them (it said "queued 0")."""
    settings = load_settings(
        {**env, "DIGESTD_HELPER_PROCESSES": "1", "DIGESTD_SMTP_URL": smtp_server.url}
    )
    engine, sessions = _seed(settings.database_url, 3_000)
    service = Service.build(settings)

    async def tick() -> Any:
        try:  # told to stop once the helper has committed its first batch
            return await service.tick(SEND, should_stop=lambda: _rows(sessions) > 0)
        finally:
            await service.close()

    report = asyncio.run(tick())
    rows = _rows(sessions)
    assert 0 < rows < 3_000, "the helper was not stopped mid-edition"
    assert report.enqueued.queued == {"daily": rows}
    assert report.enqueued.rendered > 0
    assert f"queued {rows} (daily {rows}, weekly 0)" in report.summary()
    engine.dispose()


def test_the_sender_keeps_looking_while_rows_are_still_being_enqueued(
    env: dict[str, str],
) -> None:
    settings = load_settings(env)
    engine, sessions = _seed(settings.database_url, 30)
    service = Service.build(settings, transport=MailCatcher(settings.mail_dir))
    policy = service.policy
    with sessions.begin() as session:  # a third of the readers are queued to begin with
        first = session.scalars(select(Subscriber.id).order_by(Subscriber.id).limit(10)).all()
    enqueue_now(sessions, policy, service.renderer, EditionKind.DAILY, list(first), SEND)
    calls: list[int] = []

    async def more() -> bool:
        calls.append(len(list(settings.mail_dir.glob("*.eml"))))
        if len(calls) == 1:  # "the helper committed the rest"
            await asyncio.to_thread(enqueue_due, sessions, policy, service.renderer, SEND)
            return True
        return False  # "the helper is done": the queue is empty for good

    async def deliver() -> Any:
        try:
            return await service.sender.deliver_due(SEND, more=more)
        finally:
            await service.close()

    report = asyncio.run(deliver())
    assert calls == [10, 30]  # asked when the first 10 were sent, then once all 30 were
    assert report.sent == 30
    engine.dispose()


PARENT = """
import asyncio
from digestd.mail.digests import DigestRenderer, Masthead
from digestd.mail.presentation import Site
from digestd.mail.digests import DigestRenderer, Masthead
from digestd.planning.enqueuer import WATCH_SECONDS, Enqueuer

async def main():
    renderer = DigestRenderer(Masthead(Site("s", "https://s.example", "a"), "s <s@s.example>", "l"))
    enqueuer = Enqueuer(None, "sqlite://", renderer, in_helper=True)
    print(enqueuer.start(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[:2] == ["State:", "Z"] for line in status)
    except FileNotFoundError:
        return True


def test_a_helper_does_not_outlive_a_killed_sender() -> None:
    """kill -9 of the sender: its helper notices within seconds and exits (no orphans)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    helper = int(parent.stdout.readline())
    assert not _gone(helper)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10 * WATCH_SECONDS
    while not _gone(helper) and time.monotonic() < deadline:
        time.sleep(0.1)  # a real process's own watchdog: nothing to inject
    assert _gone(helper), "the helper outlived its sender"


SERVE = """
import gc, multiprocessing
from pathlib import Path
from digestd.mail.digests import Masthead, Site
from digestd.planning import enqueuer

mine, theirs = multiprocessing.Pipe()
theirs.close()  # no request will come: the helper's loop ends at once
masthead = Masthead(Site("s", "https://s.example", "a"), "s <s@s.example>", "l")
enqueuer._serve(mine, "sqlite://", masthead, Path("."))
print(gc.get_threshold())
"""


def test_a_helper_collects_garbage_as_seldom_as_the_sender() -> None:
    """The planner's helper makes as many short-lived objects a reader as the sender does a
    message: it sets the same collector thresholds (digestd.collector) when it starts."""
    served = subprocess.run(
        [sys.executable, "-c", SERVE], capture_output=True, text=True, check=True, timeout=60
    )
    assert served.stdout.strip() == str(COLLECT_EVERY)
    assert COLLECT_EVERY != (700, 10, 10)  # Python's default, which a new process starts with

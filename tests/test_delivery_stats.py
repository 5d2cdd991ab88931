"""``digestd stats`` after a real edition: queue, last edition, throughput."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import time_machine

from digestd.config import load_settings
from digestd.models import Edition, EditionKind
from digestd.service import Service
from tests.faultsmtp import FaultySink, running
from tests.helpers import run_cli
from tests.seeding import Reader, add_articles, add_readers, hourly_articles
from tests.test_delivery_faults import SENT_AT


def test_stats_shows_the_queue_the_last_edition_and_recent_throughput(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = FaultySink(reject={"gone@example.com": "550 5.1.1 No such user"})
    with running(sink):
        env = {**env, "DIGESTD_SMTP_URL": sink.url}
        service = Service.build(load_settings(env))
        with service.sessions.begin() as session:
            add_articles(session, hourly_articles(SENT_AT - timedelta(hours=10), SENT_AT))
            add_readers(
                session,
                [Reader(f"r{i}@example.com") for i in range(5)] + [Reader("gone@example.com")],
                SENT_AT - timedelta(days=1),
            )

        async def tick() -> None:
            await service.tick(SENT_AT)
            await service.close()

        asyncio.run(tick())
    with service.sessions.begin() as session:  # the archive's own edition of the day before,
        day_before = f"{SENT_AT - timedelta(days=1):%Y-%m-%d}"  # made after the readers' one
        session.add(Edition(kind=EditionKind.DAILY, period=day_before, created_at=SENT_AT))
    with time_machine.travel(SENT_AT + timedelta(minutes=5), tick=False):
        assert run_cli(monkeypatch, env, "stats") == 0
    out = capsys.readouterr().out
    assert "queue: queued 0, sending 0" in out
    assert f"last edition: daily {SENT_AT:%Y-%m-%d}: failed 1, sent 5" in out
    assert "sent recently: 0 in the last minute (0.0/s), 5 in the last 15 minutes" in out


@pytest.mark.parametrize(("rate", "shown"), [(0.4, "0.4"), (7.25, "7.2"), (2346.7, "2,347")])
def test_the_last_editions_rate_reads_as_a_rate(rate: float, shown: str) -> None:
    """It read "last edition sent at: 0 msg/s", like a time, and a slow edition as 0."""
    from datetime import datetime

    from digestd.ops.counts import EditionCounts
    from digestd.ops.queue_stats import QueueStats

    edition = EditionCounts(1, "daily", "2026-12-07", datetime(2026, 12, 7), {"sent": 3})
    (line, _) = QueueStats(edition, rate).throughput_lines()
    assert line == f"last edition (daily 2026-12-07) went out at {shown} messages/s"

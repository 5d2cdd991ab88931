"""The sender's batches: claimed in digest order, the next one claimed while one is on the
wire, and the batch claimed ahead released when the sender stops, pauses or waits too long.
Real SMTP server, real database; time is injected, nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.delivery.sender import DeliveryReport
from digestd.delivery.transport import Transport, make_transport
from digestd.models import Delivery, DeliveryStatus
from digestd.service import Service
from tests.faultsmtp import FaultySink, running
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SENT_AT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)  # the readers' daily slot
TOPICS = list(CATEGORIES)[:12]  # one digest per topic: its readers get the same articles


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Watched:
    """A transport that calls ``after_send(count)`` once each message is handed over."""

    def __init__(self, inner: Transport, after_send: Callable[[int], None]) -> None:
        self.inner = inner
        self.concurrency = inner.concurrency
        self.name = inner.name
        self.after_send = after_send
        self.count = 0

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        reply = await self.inner.send(envelope_from, recipient, message)
        self.count += 1
        self.after_send(self.count)
        return reply

    async def close(self) -> None:
        await self.inner.close()


def _service(
    env: dict[str, str],
    url: str,
    after_send: Callable[[int], None] | None = None,
    monotonic: FakeMonotonic | None = None,
    **tuning: Any,
) -> Service:
    settings = load_settings({**env, "DIGESTD_SMTP_URL": url})
    settings = replace(settings, delivery=replace(settings.delivery, **tuning))
    transport = make_transport(
        settings.smtp, settings.mail_dir, pool_size=settings.delivery.pool_size
    )
    if after_send is not None:
        transport = Watched(transport, after_send)
    return Service.build(settings, transport=transport, monotonic=monotonic or FakeMonotonic())


def _seed(service: Service, count: int) -> list[str]:
    """``count`` readers, reader i reading TOPICS[i % 12]: a digest's readers are spread over
    the whole id range, as real signups are."""
    readers = [Reader(f"r{i:03d}@example.com", categories=(TOPICS[i % 12],)) for i in range(count)]
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT_AT - timedelta(hours=20), SENT_AT, TOPICS))
        add_readers(session, readers, SENT_AT - timedelta(days=1))
    return [reader.email for reader in readers]


def _statuses(service: Service) -> dict[str, int]:
    with service.sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status: count for status, count in rows}


def _attempts(service: Service, status: str) -> list[int]:
    with service.sessions() as session:
        return list(session.scalars(select(Delivery.attempts).where(Delivery.status == status)))


async def _tick_report(service: Service) -> DeliveryReport:
    try:
        return (await service.tick(SENT_AT)).delivered
    finally:
        await service.close()


def test_a_digests_readers_are_claimed_together_across_batches(env: dict[str, str]) -> None:
    """Claims follow (due time, digest): with room for two templates only, the sender
    loads each digest's template once although its readers are spread over the id range."""
    sink = FaultySink()
    with running(sink):
        service = _service(env, sink.url, batch=5)
        readers = _seed(service, 48)  # 12 digests of 4 readers, over 10 batches
        service.sender.templates.size = 2
        report = asyncio.run(_tick_report(service))
    assert report.sent == 48
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert service.sender.templates.loaded == len(TOPICS)


def test_stopping_releases_the_batch_claimed_ahead(env: dict[str, str]) -> None:
    sink = FaultySink()
    stop = False

    def stop_after_the_first_batch(count: int) -> None:
        nonlocal stop
        stop = count == 5

    with running(sink):
        service = _service(env, sink.url, stop_after_the_first_batch, batch=5, pool_size=1)
        readers = _seed(service, 15)  # three batches

        async def stopped_then_resumed() -> tuple[DeliveryReport, DeliveryReport]:
            nonlocal stop
            first = await service.tick(SENT_AT, should_stop=lambda: stop)
            queue = _statuses(service)
            assert queue == {DeliveryStatus.SENT: 5, DeliveryStatus.QUEUED: 10}, queue
            stop = False
            second = await service.sender.deliver_due(SENT_AT + timedelta(minutes=1))
            await service.close()
            return first.delivered, second

        first, second = asyncio.run(stopped_then_resumed())
    # The second batch was claimed while the first was sent; it went back untouched.
    assert (first.sent, first.released) == (5, 5)
    assert second.sent == 10
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert _attempts(service, DeliveryStatus.SENT) == [1] * 15  # released: attempt not counted


def test_a_pause_releases_the_batch_claimed_ahead(env: dict[str, str]) -> None:
    sink = FaultySink(always="451 4.3.0 Mail server temporarily unavailable")
    with running(sink):
        service = _service(env, sink.url, batch=5, pool_size=1, failure_burst=3)
        _seed(service, 15)
        report = asyncio.run(_tick_report(service))
    assert report.paused
    assert service.metrics.registry.get_sample_value("digestd_sending_pauses_total") == 1
    # The burst of 3 and the one already handed to the connection behind it (two a
    # connection) were tried; the rest of the batch and the batch claimed ahead went back.
    assert (report.deferred, report.released, report.sent) == (4, 6, 0)
    assert _statuses(service) == {DeliveryStatus.QUEUED: 15}
    assert sorted(_attempts(service, DeliveryStatus.QUEUED)) == [0] * 11 + [1] * 4


def test_time_a_batch_waits_behind_the_one_before_counts_against_its_lease(
    env: dict[str, str],
) -> None:
    sink = FaultySink()
    clock = FakeMonotonic()

    def slow_relay(_: int) -> None:
        clock.now += 18  # each message takes 18 s of a 100 s lease

    with running(sink):
        service = _service(
            env, sink.url, slow_relay, clock, batch=5, pool_size=1, lease_seconds=100.0
        )
        readers = _seed(service, 10)
        report = asyncio.run(_tick_report(service))
    # Both batches were claimed at t=0; the first took 90 s, past the second's 80 s mark,
    # so the second went back to the queue unsent and was claimed afresh (a new lease).
    assert (report.sent, report.released) == (10, 5)
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert _attempts(service, DeliveryStatus.SENT) == [1] * 10

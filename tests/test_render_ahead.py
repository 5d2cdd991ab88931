"""Rendering off the sending path: digests rendered ahead by a worker process, claims in
digest order, and the batch claimed ahead released when the sender stops, pauses or waits
too long. Real SMTP server (aiosmtpd), real database; time is injected, nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import func, select, update

from digestd.config import load_settings
from digestd.content.categories import CATEGORIES
from digestd.delivery.sender import DeliveryReport, Sender
from digestd.delivery.transport import Transport
from digestd.mail.composer import Composer
from digestd.mail.prerender import DigestSource, RenderPool
from digestd.mail.render import RenderedEmail, Renderer
from digestd.mail.template import MessageTemplate, Personal
from digestd.models import Delivery, DeliveryStatus, Digest, Edition
from digestd.planning.planner import Policy, enqueue_due
from digestd.service import Service
from tests.faultsmtp import FaultySink, running
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SENT_AT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)  # the readers' daily slot
LINKS = ("unsubscribe", "preferences", "view")
TOPICS = list(CATEGORIES)[:12]  # one digest per topic: its readers get the same articles


class CountingRenderer(Renderer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def render(self, kind: str, context: dict[str, Any]) -> RenderedEmail:
        self.calls += 1
        return super().render(kind, context)


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
        self.after_send = after_send
        self.count = 0

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        reply = await self.inner.send(envelope_from, recipient, message)
        self.count += 1
        self.after_send(self.count)
        return reply

    async def close(self) -> None:
        await self.inner.close()


def _service(env: dict[str, str], url: str, **tuning: Any) -> Service:
    settings = load_settings({**env, "DIGESTD_SMTP_URL": url})
    return Service.build(replace(settings, delivery=replace(settings.delivery, **tuning)))


def _seed(service: Service, count: int) -> list[str]:
    """``count`` readers, reader i reading TOPICS[i % 12]: a digest's readers are spread over
    the whole id range, as real signups are."""
    readers = [Reader(f"r{i:03d}@example.com", categories=(TOPICS[i % 12],)) for i in range(count)]
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT_AT - timedelta(hours=20), SENT_AT, TOPICS))
        add_readers(session, readers, SENT_AT - timedelta(days=1))
    return [reader.email for reader in readers]


def _sender(service: Service, transport: Transport, monotonic: FakeMonotonic) -> Sender:
    return Sender(
        service.sessions,
        service.composer,
        transport,
        catchup=timedelta(hours=service.settings.catchup_hours),
        tuning=service.settings.delivery,
        renders=service.renders,
        rng=lambda: 0.5,
        monotonic=monotonic,
    )


def _statuses(service: Service) -> dict[str, int]:
    with service.sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status: count for status, count in rows}


def _attempts(service: Service, status: str) -> list[int]:
    with service.sessions() as session:
        return list(session.scalars(select(Delivery.attempts).where(Delivery.status == status)))


def _tick(service: Service, on_batch: Callable[[int], None] | None = None) -> DeliveryReport:
    async def run() -> DeliveryReport:
        try:
            return (await service.tick(SENT_AT, on_batch=on_batch)).delivered
        finally:
            await service.close()

    return asyncio.run(run())


def test_messages_rendered_by_the_worker_process_are_byte_identical_to_inline_ones(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FaultySink()
    with running(sink), time_machine.travel(SENT_AT + timedelta(seconds=30), tick=False):
        # Link tokens and the Date header come from the (frozen) clock; Message-IDs from
        # the delivery ids: the second pass over the same rows must make the same bytes.
        pooled = _service(env, sink.url, batch=5, helper_processes=1)
        readers = _seed(pooled, 48)
        # The worker renders every batch's new digests but the first batch's: the sender
        # does not help (its help has tests of its own, below).
        assert pooled.renders is not None
        monkeypatch.setattr(pooled.renders, "lend_a_hand", lambda: False)
        assert _tick(pooled).sent == 48
        assert pooled.renders.submitted >= 8
        assert multiprocessing.active_children() == []  # close() stopped the worker
        by_worker = {recipient: data for _, recipient, data in sink.messages}

        with pooled.sessions.begin() as session:  # as if the edition had never gone out
            session.execute(
                update(Delivery).values(
                    status=DeliveryStatus.QUEUED,
                    attempts=0,
                    next_attempt_at=Delivery.due_at,
                    lease_expires_at=None,
                    sent_at=None,
                    message_id=None,
                    smtp_reply=None,
                )
            )
        sink.messages.clear()
        inline = _service(env, sink.url, batch=5, helper_processes=0)
        assert _tick(inline).sent == 48
        assert inline.renders is not None and inline.renders.submitted == 0
        in_sender = {recipient: data for _, recipient, data in sink.messages}

    assert set(by_worker) == set(readers)
    assert in_sender == by_worker


@pytest.mark.parametrize("processes", [0, 1])
def test_each_digest_is_rendered_once_in_an_edition_spanning_many_batches(
    env: dict[str, str], processes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FaultySink()
    with running(sink):
        service = _service(env, sink.url, batch=5, helper_processes=processes)
        counting = CountingRenderer()
        # A cache of two digests: enough only if a digest's readers are claimed together.
        service.composer = Composer(service.settings, service.tokens, counting, cache_size=2)
        readers = _seed(service, 48)  # 12 digests of 4 readers, over 10 batches
        assert service.renders is not None
        # The sender does not help the worker here (tested on its own, below).
        monkeypatch.setattr(service.renders, "lend_a_hand", lambda: False)
        report = _tick(service)
    assert report.sent == 48
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert service.renders is not None
    assert counting.calls + service.renders.submitted == len(TOPICS)
    assert report.rendered == len(TOPICS)  # what the tick reports
    if processes:
        assert service.renders.submitted >= len(TOPICS) - 2  # all but the first batch's


def _twelve_digests(env: dict[str, str]) -> tuple[Service, list[DigestSource]]:
    service = _service(env, "smtp://127.0.0.1:9", helper_processes=1)  # nothing is sent
    _seed(service, 48)
    enqueue_due(service.sessions, Policy.from_settings(service.settings), SENT_AT)
    with service.sessions() as session:
        digests = session.execute(select(Digest.id, Edition.kind, Edition.period).join(Edition))
        sources = service.composer.sources(session, {d.id: (d.kind, d.period) for d in digests})
    assert len(sources) == len(TOPICS)
    return service, sources


def _render_with_help(
    pool: RenderPool,
    sources: list[DigestSource],
    inline: Callable[[DigestSource], MessageTemplate],
) -> list[MessageTemplate]:
    async def run() -> list[MessageTemplate]:
        rendering = asyncio.create_task(pool.render(sources, inline))
        await asyncio.sleep(0)  # render() has handed every digest to the pool
        while pool.lend_a_hand():
            pass
        return await rendering

    try:
        return asyncio.run(run())
    finally:
        pool.close()


def test_while_waiting_the_sender_renders_the_digests_no_worker_has_started(
    env: dict[str, str],
) -> None:
    service, sources = _twelve_digests(env)
    counting = CountingRenderer()
    composer = Composer(service.settings, service.tokens, counting)
    pool = RenderPool(1, counting.directory)
    templates = _render_with_help(pool, sources, composer.build)
    # The worker takes digests from the front (and holds two at most), the sender from the
    # back; each digest is rendered once, and the results come back in order either way.
    assert counting.calls == pool.helped >= 1
    assert pool.submitted + pool.helped == len(TOPICS)
    assert [_bytes(t) for t in templates] == [_bytes(composer.build(s)) for s in sources]


def test_a_digest_that_fails_to_render_in_the_sender_fails_the_render_with_its_error(
    env: dict[str, str],
) -> None:
    service, sources = _twelve_digests(env)
    last = sources[-1].digest_id  # the sender helps from the back: this one is its own

    def inline(source: DigestSource) -> MessageTemplate:
        if source.digest_id == last:
            raise ValueError("template error")
        return service.composer.build(source)

    pool = RenderPool(1, service.composer.renderer.directory)

    async def run() -> None:
        rendering = asyncio.create_task(pool.render(sources, inline))
        await asyncio.sleep(0)
        while pool.lend_a_hand():  # helping never raises: the sender is only waiting here
            pass
        # The error comes out where the batch's digests are awaited, as it would from a
        # worker: the batch is then released, not left to its lease.
        with pytest.raises(ValueError, match="template error"):
            await rendering

    try:
        asyncio.run(run())
    finally:
        pool.close()


def _bytes(template: MessageTemplate) -> bytes:
    return template.compose(
        Personal(
            to="reader@example.com",
            message_id="<1@example.com>",
            date="Tue, 10 Mar 2026 07:00:00 +0000",
            links={name: f"https://digest.example.com/{name}" for name in LINKS},
            unsubscribe_mailto="unsubscribe@example.com",
        )
    )


def test_a_render_worker_killed_mid_edition_costs_no_message(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    sink = FaultySink()
    killed: list[int] = []

    def kill_the_worker(_: int) -> None:
        if not killed:
            assert service.renders is not None and service.renders._executor is not None
            (worker,) = service.renders._executor._processes.values()  # not the enqueuer
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)

    with running(sink):
        service = _service(env, sink.url, batch=5, helper_processes=1)
        readers = _seed(service, 48)
        with caplog.at_level(logging.WARNING, logger="digestd"):
            report = _tick(service, on_batch=kill_the_worker)
    assert killed, "the worker was never seen"
    assert report.sent == 48
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert _statuses(service) == {DeliveryStatus.SENT: 48}
    assert service.renders is not None and service.renders.broken
    assert sum("render worker process died" in m for m in caplog.messages) == 1


def test_stopping_releases_the_batch_claimed_ahead(env: dict[str, str]) -> None:
    sink = FaultySink()
    stop = False

    def stop_after_the_first_batch(count: int) -> None:
        nonlocal stop
        stop = count == 5

    with running(sink):
        service = _service(env, sink.url, batch=5, pool_size=1, helper_processes=0)
        readers = _seed(service, 15)  # three batches
        sender = _sender(
            service, Watched(service.transport, stop_after_the_first_batch), FakeMonotonic()
        )

        async def stopped_then_resumed() -> tuple[DeliveryReport, DeliveryReport]:
            first = await service.tick(SENT_AT, should_stop=lambda: stop)
            queue = _statuses(service)
            assert queue == {DeliveryStatus.SENT: 5, DeliveryStatus.QUEUED: 10}, queue
            stop_flag_reset()
            second = await sender.deliver_due(SENT_AT + timedelta(minutes=1))
            await service.close()
            return first.delivered, second

        def stop_flag_reset() -> None:
            nonlocal stop
            stop = False

        service.__dict__["_sender"] = sender  # the tick sends through the watched transport
        first, second = asyncio.run(stopped_then_resumed())
    # The second batch was claimed while the first was sent; it went back untouched.
    assert (first.sent, first.released) == (5, 5)
    assert second.sent == 10
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert _attempts(service, DeliveryStatus.SENT) == [1] * 15  # released: attempt not counted


def test_a_pause_releases_the_batch_claimed_ahead(env: dict[str, str]) -> None:
    sink = FaultySink(always="451 4.3.0 Mail server temporarily unavailable")
    with running(sink):
        service = _service(env, sink.url, batch=5, pool_size=1, failure_burst=3, helper_processes=0)
        _seed(service, 15)
        sender = _sender(service, service.transport, FakeMonotonic())
        service.__dict__["_sender"] = sender
        report = asyncio.run(_tick_report(service))
    assert report.paused and sender.pauses == 1
    assert (report.deferred, report.released, report.sent) == (3, 7, 0)  # 2 + the batch ahead
    assert _statuses(service) == {DeliveryStatus.QUEUED: 15}
    assert sorted(_attempts(service, DeliveryStatus.QUEUED)) == [0] * 12 + [1] * 3


async def _tick_report(service: Service) -> DeliveryReport:
    try:
        return (await service.tick(SENT_AT)).delivered
    finally:
        await service.close()


def test_time_a_batch_waits_behind_the_one_before_counts_against_its_lease(
    env: dict[str, str],
) -> None:
    sink = FaultySink()
    clock = FakeMonotonic()

    def slow_relay(_: int) -> None:
        clock.now += 18  # each message takes 18 s of a 100 s lease

    with running(sink):
        service = _service(env, sink.url, batch=5, pool_size=1, lease_seconds=100.0)
        readers = _seed(service, 10)
        sender = _sender(service, Watched(service.transport, slow_relay), clock)
        service.__dict__["_sender"] = sender
        report = asyncio.run(_tick_report(service))
    # Both batches were claimed at t=0; the first took 90 s, past the second's 80 s mark,
    # so the second went back to the queue unsent and was claimed afresh (a new lease).
    assert (report.sent, report.released) == (10, 5)
    assert dict(sink.delivered) == {reader: 1 for reader in readers}
    assert _attempts(service, DeliveryStatus.SENT) == [1] * 10

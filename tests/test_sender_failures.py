"""Failures that must never hurt the list: a message that cannot be built fails alone after
its attempts, and a database blip while recording outcomes is retried instead of
repeating a batch. Real SMTP server (tests/faultsmtp.py), real database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from digestd.config import load_settings
from digestd.delivery.queue import Outcome, QueueStore
from digestd.delivery.queue_store import queue_store
from digestd.delivery.worker import Worker
from digestd.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from digestd.planning.planner import enqueue_due
from digestd.planning.policy import EnqueueReport
from digestd.service import Service, TickReport
from tests.faultsmtp import FaultySink, running
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SENT_AT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
POISON = "ann@☃.example"  # no IDNA form: the message cannot be addressed


def _service(env: dict[str, str], url: str, **tuning: Any) -> Service:
    settings = load_settings({**env, "DIGESTD_SMTP_URL": url})
    return Service.build(replace(settings, delivery=replace(settings.delivery, **tuning)))


def _seed(service: Service, addresses: list[str]) -> None:
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT_AT - timedelta(hours=20), SENT_AT))
        add_readers(session, [Reader(a) for a in addresses], SENT_AT - timedelta(days=1))


def _rows(service: Service) -> dict[str, tuple[str, int, str | None, str]]:
    with service.sessions() as session:
        rows = session.execute(
            select(
                Subscriber.email,
                Delivery.status,
                Delivery.attempts,
                Delivery.last_error,
                Subscriber.status,
            ).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        )
        return {email: (status, n, error, reader) for email, status, n, error, reader in rows}


def test_a_poison_message_fails_alone_after_its_attempts_and_the_edition_goes_on(
    env: dict[str, str],
) -> None:
    readers = [f"reader{i}@example.com" for i in range(20)]
    sink = FaultySink()
    with running(sink):
        service = _service(env, sink.url, max_attempts=3, batch=7)
        _seed(service, [*readers[:10], POISON, *readers[10:]])

        async def scenario() -> list[int]:
            sent: list[int] = []
            now = SENT_AT
            enqueue_due(service.sessions, service.policy, service.renderer, now)
            for _ in range(6):  # ticks an hour apart: past every backoff
                sent.append((await service.sender.deliver_due(now)).sent)
                now += timedelta(hours=1)
            await service.close()
            return sent

        sent = asyncio.run(scenario())
    assert sent[0] == 20  # nobody else waited for it
    assert dict(sink.delivered) == {a: 1 for a in readers}
    status, attempts, error, reader = _rows(service)[POISON]
    assert (status, attempts) == (DeliveryStatus.FAILED, 3)
    assert error is not None and error.startswith("gave up after 3 attempts: InvalidCodepoint")
    assert reader == SubscriberStatus.ACTIVE  # not the reader's fault: never suppressed


def test_a_database_blip_while_recording_is_retried_not_repeated(env: dict[str, str]) -> None:
    readers = [f"reader{i}@example.com" for i in range(12)]
    sink = FaultySink()
    with running(sink):
        service = _service(env, sink.url, batch=4)
        _seed(service, readers)
        store = service.sender.store
        record = store.record
        failures = [2]  # the next two writes fail, as a database restart would

        def flaky(outcomes: Sequence[Outcome], now: datetime) -> int:
            if failures[0]:
                failures[0] -= 1
                raise OperationalError("UPDATE deliveries", {}, Exception("connection reset"))
            return record(outcomes, now)

        store.record = flaky  # type: ignore[method-assign]
        waits: list[float] = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        service.sender.sleep = no_wait

        async def scenario() -> int:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            report = await service.sender.deliver_due(SENT_AT)
            await service.close()
            return report.sent

        assert asyncio.run(scenario()) == 12
    assert dict(sink.delivered) == {a: 1 for a in readers}
    assert waits == [0.25, 0.5]  # backed off, then recorded
    assert {status for status, _, _, _ in _rows(service).values()} == {DeliveryStatus.SENT}


class Instant:
    """A relay that takes each message in thirty turns of the event loop (no I/O)."""

    concurrency = 4
    name = "instant"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        for _ in range(30):
            await asyncio.sleep(0)
        self.sent.append(recipient)
        return "250 2.0.0 Ok"

    async def close(self) -> None:
        pass


def test_while_outcomes_cannot_be_written_no_more_messages_start(env: dict[str, str]) -> None:
    """The database goes away mid-batch: every message sent while its write is retried
    would be sent again after the lease (264 of 300 readers twice, with PostgreSQL stopped
    for two minutes). Only what was already on the wire goes; the rest of the batch is
    released, and goes out once the write succeeds: each reader once."""
    readers = [f"reader{i:02d}@example.com" for i in range(40)]
    transport = Instant()
    settings = load_settings(env)
    settings = replace(settings, delivery=replace(settings.delivery, batch=40))
    service = Service.build(settings, transport=transport)
    _seed(service, readers)
    store = service.sender.store
    record = store.record
    down = [True]
    sent_when_down: list[int] = []

    def failing(outcomes: Sequence[Outcome], now: datetime) -> int:
        if down[0]:
            raise OperationalError("UPDATE deliveries", {}, Exception("server closed"))
        return record(outcomes, now)

    async def outage(seconds: float) -> None:
        sent_when_down.append(len(transport.sent))
        for _ in range(200):  # time enough, in turns of the loop, for dozens of messages
            await asyncio.sleep(0)
        if len(sent_when_down) == 3:
            down[0] = False  # back after three tries
        sent_when_down.append(len(transport.sent))

    store.record = failing  # type: ignore[method-assign]
    service.sender.sleep = outage

    async def scenario() -> None:
        enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
        await service.sender.deliver_due(SENT_AT)
        await service.close()

    asyncio.run(scenario())
    first_failure, back = sent_when_down[0], sent_when_down[-1]
    assert back - first_failure <= transport.concurrency  # only those already on the wire
    assert sorted(transport.sent) == readers  # each once, the rest after the outage
    assert {status for status, _, _, _ in _rows(service).values()} == {DeliveryStatus.SENT}


class TakenOver(Instant):
    """A relay during whose first message another worker takes the batch over, as one
    does when this worker stalls past its lease (a paused VM, SIGSTOP)."""

    def __init__(self) -> None:
        super().__init__()
        self.thief: QueueStore | None = None
        self.stolen = 0

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        if self.thief is not None and not self.sent and not self.stolen:
            self.stolen = len(self.thief.claim(SENT_AT, timedelta(minutes=5), 100))
        return await super().send(envelope_from, recipient, message)


def test_outcomes_another_worker_took_over_are_said_not_recorded(env: dict[str, str]) -> None:
    """A stalled worker reported its messages as recorded although the rows were another's
    by then (the chaos probe's SIGSTOP run): its tick says how many it could not record."""
    readers = [f"reader{i:02d}@example.com" for i in range(10)]
    transport = TakenOver()
    service = Service.build(load_settings(env), transport=transport)
    later = datetime.now(UTC) + timedelta(days=1)  # every lease of this run has ended
    transport.thief = queue_store(
        service.sessions, Worker("other-host", "boot", 1, "1"), clock=lambda: later
    )
    _seed(service, readers)

    async def scenario() -> Any:
        enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
        report = await service.sender.deliver_due(SENT_AT)
        await service.close()
        return report

    report = asyncio.run(scenario())
    assert transport.stolen == 10 and report.taken_over == 10
    with service.sessions() as session:
        owners = set(session.scalars(select(Delivery.claimed_by)))
    assert owners == {"other-host/boot//1/1"}  # nothing overwritten: the rows are the thief's
    summary = TickReport(SENT_AT, EnqueueReport(), report).summary()
    assert "; 10 outcomes left to the worker that took their rows over" in summary

"""The tick's helper process sends beside the sending process once it has planned, with its
share of the SMTP pool (real spawned helper, real databases, a real SMTP server)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import select

from digestd.config import Settings, SmtpSettings, load_settings
from digestd.delivery.helper_sending import SendingShare
from digestd.delivery.transport import SmtpPool
from digestd.instruments import Metrics, Tally
from digestd.models import Delivery, Subscriber
from digestd.service import Service
from tests.conftest import SmtpSink
from tests.helpers import free_port
from tests.seeding import seed_daily_edition

SEND = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)


@dataclass
class SlowSink(SmtpSink):
    """An SMTP server that takes ``delay`` seconds to accept each message (as a relay with a
    content filter does) and counts its open sessions."""

    delay: float = 0.0
    open_sessions: int = 0
    most_sessions: int = 0
    sessions_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)

    def opened(self, change: int) -> None:
        with self.sessions_lock:
            self.open_sessions += change
            self.most_sessions = max(self.most_sessions, self.open_sessions)


class _CountingSMTP(SMTP):
    def connection_made(self, transport: Any) -> None:
        self.__sink().opened(+1)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.__sink().opened(-1)
        super().connection_lost(exc)

    def __sink(self) -> SlowSink:
        assert isinstance(self.event_handler, SlowSink)
        return self.event_handler


class _CountingController(Controller):
    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def slow_sink() -> Iterator[SlowSink]:
    sink = SlowSink("127.0.0.1", free_port())
    controller = _CountingController(sink, hostname=sink.host, port=sink.port, decode_data=False)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def _seed(url: str, readers: int) -> None:
    engine, _ = seed_daily_edition(url, readers, SEND)
    engine.dispose()


def _helper_settings(env: dict[str, str], sink: SmtpSink, **more: str) -> Settings:
    return load_settings(
        {
            **env,
            "DIGESTD_HELPER_PROCESSES": "1",
            "DIGESTD_SMTP_URL": sink.url,
            "DIGESTD_SMTP_POOL_SIZE": "4",
            "DIGESTD_SEND_BATCH": "50",
            **more,
        }
    )


def _senders(service: Service) -> Counter[str]:
    """Messages sent by each worker (the label a claim leaves on its row)."""
    with service.sessions() as session:
        labels = session.scalars(select(Delivery.claimed_by).where(Delivery.status == "sent"))
        return Counter(label or "" for label in labels)


def _tick(
    service: Service, should_stop: Any = lambda: False, on_batch: Any = None, now: datetime = SEND
) -> Any:
    async def tick() -> Any:
        try:
            return await service.tick(now, should_stop, on_batch)
        finally:
            await service.close()

    return asyncio.run(tick())


@pytest.mark.slow  # 800 readers through a relay that takes 30 ms a message: ~6 s
def test_the_helper_sends_beside_the_sender_once_it_has_planned(
    env: dict[str, str], slow_sink: SlowSink
) -> None:
    slow_sink.delay = 0.03  # the sending process alone would take ~6 s: planning ends first
    settings = _helper_settings(env, slow_sink)
    _seed(settings.database_url, 800)
    service = Service.build(settings)
    settled: list[int] = []

    report = _tick(service, on_batch=settled.append)

    received = Counter(r for m in slow_sink.messages for r in m.recipients)
    assert len(received) == 800 and set(received.values()) == {1}
    assert report.delivered.sent == 800 and sum(settled) == 800
    senders = _senders(service)
    ours = service.sender.store.worker.label
    helpers = [label for label in senders if label != ours]
    assert len(senders) == 2 and len(helpers) == 1, senders
    assert senders[ours] > 0 and senders[helpers[0]] > 0
    # The pool's size is the relay's bound, shared between the two processes.
    assert slow_sink.most_sessions <= 4
    # The helper's messages are counted where Prometheus scrapes: here.
    registry = service.metrics.registry
    sent = {"kind": "daily", "outcome": "sent"}
    assert registry.get_sample_value("digestd_messages_total", sent) == 800
    assert registry.get_sample_value("digestd_send_seconds_count") == 800


@pytest.mark.slow  # ~5 s
def test_a_stop_asked_while_the_helper_sends_loses_and_repeats_nothing(
    env: dict[str, str], slow_sink: SlowSink
) -> None:
    """The helper is asked to stop, not killed: its batch in flight is recorded, the rest is
    released, and the next tick (the same helper) sends it, each message once."""
    slow_sink.delay = 0.03
    settings = _helper_settings(env, slow_sink)
    _seed(settings.database_url, 800)
    service = Service.build(settings)
    stop = threading.Event()
    helper_began: list[int] = []  # messages in when the helper began sending

    def settled(count: int) -> None:
        if service.enqueuer.after_planning is None:
            return
        if not helper_began:
            helper_began.append(len(slow_sink.messages))
        elif len(slow_sink.messages) >= helper_began[0] + 60:  # some of them the helper's
            stop.set()

    first = _tick(service, stop.is_set, settled)
    assert 0 < first.delivered.sent < 800
    with service.sessions() as session:
        statuses = Counter(session.scalars(select(Delivery.status)))
    assert set(statuses) == {"sent", "queued"} and statuses["sent"] == first.delivered.sent
    assert len(_senders(service)) == 2  # the helper had its share before the stop

    again = Service.build(settings)
    second = _tick(again, now=SEND + timedelta(minutes=1))  # released rows are due again
    assert first.delivered.sent + second.delivered.sent == 800
    received = Counter(r for m in slow_sink.messages for r in m.recipients)
    assert len(received) == 800 and set(received.values()) == {1}


@pytest.mark.slow  # ~5 s
def test_a_helper_killed_while_it_sends_leaves_its_share_to_the_sending_process(
    env: dict[str, str], slow_sink: SlowSink
) -> None:
    """Its claims are a dead worker's at once: every reader gets the edition in this tick,
    only the messages it had on the wire may go twice (the crash rule of delivery.sender)."""
    slow_sink.delay = 0.03
    settings = _helper_settings(env, slow_sink)
    _seed(settings.database_url, 800)
    service = Service.build(settings)
    killed: list[int] = []

    def settled(count: int) -> None:
        if service.enqueuer.after_planning is not None and not killed:
            killed.append(service.enqueuer.start())  # the helper's pid: it is running
            os.kill(killed[0], signal.SIGKILL)

    report = _tick(service, on_batch=settled)

    assert killed
    with service.sessions() as session:
        assert set(session.scalars(select(Delivery.status))) == {"sent"}
    received = Counter(r for m in slow_sink.messages for r in m.recipients)
    assert len(received) == 800
    assert sum(received.values()) - 800 <= 2 * 2  # the helper's two connections, chained
    assert report.seconds < 30, report  # not a lease's wait (an hour) for its claims


@pytest.mark.parametrize(
    "limit",
    [
        {"DIGESTD_SMTP_RATE": "1000"},
        {"DIGESTD_SMTP_DOMAIN_RATE": "1000"},
        {"DIGESTD_SMTP_DOMAIN_CONCURRENCY": "2"},
        {"DIGESTD_SMTP_POOL_SIZE": "1"},
    ],
    ids=["rate", "domain_rate", "domain_concurrency", "one_connection"],
)
def test_the_helper_does_not_send_when_a_limit_sets_the_pace(
    env: dict[str, str], smtp_server: SmtpSink, limit: dict[str, str]
) -> None:
    """Limits are counted per process: a second sender would double them."""
    settings = _helper_settings(env, smtp_server, **limit)
    assert SendingShare.of(settings) is None
    assert SendingShare.of(replace(settings, smtp=None)) is None  # the development catcher


def test_the_helper_gets_half_of_the_pool(env: dict[str, str], smtp_server: SmtpSink) -> None:
    share = SendingShare.of(_helper_settings(env, smtp_server, DIGESTD_SMTP_POOL_SIZE="5"))
    assert share is not None and share.connections == 2


def test_a_tick_with_few_readers_and_a_helper_still_sends_each_once(
    env: dict[str, str], smtp_server: SmtpSink
) -> None:
    """Planning over before the sender's first claim: whoever claims, each reader once."""
    settings = _helper_settings(env, smtp_server)
    _seed(settings.database_url, 30)
    service = Service.build(settings)
    report = _tick(service)
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert len(received) == 30 and set(received.values()) == {1}
    assert report.delivered.sent == 30
    with service.sessions() as session:
        assert set(session.scalars(select(Subscriber.status))) == {"active"}


def test_a_pool_limited_to_fewer_connections_closes_the_rest(slow_sink: SlowSink) -> None:
    slow_sink.delay = 0.005
    settings = SmtpSettings(slow_sink.host, slow_sink.port, use_tls=False, start_tls=False)
    pool = SmtpPool(settings, size=4)

    async def send(count: int) -> None:
        await asyncio.gather(
            *(pool.send("a@example.com", f"r{i}@example.com", b"x\r\n") for i in range(count))
        )

    async def scenario() -> list[int]:
        seen = []
        await send(40)
        seen.append(slow_sink.open_sessions)  # all four in use
        await pool.limit(2)  # returns once the other two are closed
        assert pool.concurrency == 4
        await asyncio.sleep(0.05)  # the server sees the connections go
        seen.append(slow_sink.open_sessions)
        slow_sink.most_sessions = slow_sink.open_sessions
        await send(40)
        seen.append(slow_sink.most_sessions)  # no more than two while limited
        await pool.limit(4)
        await send(40)
        seen.append(slow_sink.open_sessions)
        await pool.close()
        return seen

    assert asyncio.run(scenario()) == [4, 2, 2, 4]
    assert len(slow_sink.messages) == 120


def test_a_helpers_tally_is_counted_as_if_it_had_happened_here() -> None:
    helper, here = Metrics(), Metrics()
    helper.tally = Tally()
    helper.message("daily", "sent", 3)
    helper.smtp_error("451")
    helper.handed_over(0.002)
    helper.handed_over(0.004)
    helper.sending_paused()
    helper.smtp_succeeded(1_700_000_000.0)
    here.smtp_succeeded(1_600_000_000.0)
    here.absorb(helper.take_tally())
    here.absorb(helper.take_tally())  # taken: nothing twice
    value = here.registry.get_sample_value
    assert value("digestd_messages_total", {"kind": "daily", "outcome": "sent"}) == 3
    assert value("digestd_smtp_errors_total", {"code": "451"}) == 1
    assert value("digestd_send_seconds_count") == 2
    assert value("digestd_send_seconds_sum") == pytest.approx(0.006)
    assert value("digestd_sending_pauses_total") == 1
    assert value("digestd_last_smtp_success_timestamp_seconds") == 1_700_000_000.0

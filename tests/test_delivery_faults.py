"""Delivery against a real SMTP server that fails in the ways real ones do.

Time is injected: each pass is a scheduler tick at a later ``now``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from digestd.config import Settings, load_settings
from digestd.delivery.queue_store import queue_store
from digestd.delivery.sender import DeliveryReport, Sender
from digestd.delivery.templates import TemplateCache
from digestd.delivery.transport import SmtpPool
from digestd.delivery.worker import Worker
from digestd.models import (
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from digestd.planning.planner import enqueue_due
from digestd.readers.subscribers import email_hash
from digestd.service import Service
from tests.faultsmtp import FaultySink, running
from tests.helpers import parse
from tests.seeding import Reader, add_articles, add_readers, hourly_articles

SENT_AT = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)  # 07:00 UTC: the readers' daily slot


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _service(env: dict[str, str], url: str, **tuning: Any) -> Service:
    settings: Settings = load_settings({**env, "DIGESTD_SMTP_URL": url})
    settings = replace(settings, delivery=replace(settings.delivery, **tuning))
    return Service.build(settings)


def _sender(service: Service, clock: FakeMonotonic) -> Sender:
    return Sender(
        queue_store(service.sessions, Worker.this_process()),
        TemplateCache(service.sessions, service.renderer),
        service.composer,
        service.transport,
        catchup=timedelta(hours=service.settings.catchup_hours),
        tuning=service.settings.delivery,
        rng=lambda: 0.5,
        monotonic=clock,
    )


def _seed(service: Service, addresses: list[str]) -> None:
    with service.sessions.begin() as session:
        add_articles(session, hourly_articles(SENT_AT - timedelta(hours=20), SENT_AT))
        add_readers(session, [Reader(a) for a in addresses], SENT_AT - timedelta(days=1))


def _statuses(service: Service) -> dict[str, int]:
    with service.sessions() as session:
        return dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_every_deliverable_message_arrives_exactly_once_through_4xx_drops_and_550s(
    env: dict[str, str], pipelining: bool
) -> None:
    addresses = [f"reader{i}@example.com" for i in range(60)]
    rejected = addresses[:5]
    greylisted = addresses[5:15]
    dropped = addresses[15:20]
    sink = FaultySink(
        busy_transactions=15,
        greylist={a: 2 for a in greylisted},
        drop_after_data=set(dropped),
        reject={a: "550 5.1.1 No such user" for a in rejected},
        pipelining=pipelining,
    )
    with running(sink):
        service = _service(env, sink.url, pool_size=3, failure_burst=10_000)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, addresses)

        async def scenario() -> None:
            now = SENT_AT
            enqueue_due(service.sessions, service.policy, service.renderer, now)
            for _ in range(12):  # ticks 15 minutes apart: longer than any backoff used here
                await sender.deliver_due(now)
                now += timedelta(minutes=15)
            await service.close()

        asyncio.run(scenario())

    deliverable = set(addresses) - set(rejected)
    assert dict(sink.delivered) == {a: 1 for a in deliverable}
    assert _statuses(service) == {"sent": 55, "failed": 5}
    with service.sessions() as session:
        failed = session.execute(
            select(Subscriber.email, Subscriber.status, Delivery.smtp_reply, Delivery.attempts)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.status == DeliveryStatus.FAILED)
        ).all()
        assert {row.email for row in failed} == set(rejected)
        assert all(row.status == SubscriberStatus.BOUNCED for row in failed)
        assert all(row.smtp_reply.startswith("550 5.1.1") for row in failed)
    # A 5xx is final: each rejected address was tried at RCPT exactly once.
    assert {a: sink.rcpts[a] for a in rejected} == {a: 1 for a in rejected}
    with service.sessions() as session:
        suppressed = set(session.scalars(select(Suppression.email_hash)))
        assert suppressed == {email_hash(a) for a in rejected}
        greylisted_attempts = session.scalars(
            select(Delivery.attempts)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email.in_(greylisted))
        ).all()
        assert all(n >= 3 for n in greylisted_attempts)  # two 451s, then accepted
    # Each message carries the VERP sender naming its own delivery.
    for envelope_from, recipient, data in sink.messages:
        assert envelope_from.startswith("bounces+")
        assert parse(data)["To"] == recipient


def test_a_suppressed_address_is_never_queued_or_sent_again(env: dict[str, str]) -> None:
    sink = FaultySink(reject={"gone@example.com": "550 5.1.1 No such user"})
    with running(sink):
        service = _service(env, sink.url)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, ["gone@example.com", "here@example.com"])

        async def two_days() -> None:
            for day in range(2):
                now = SENT_AT + timedelta(days=day, minutes=1)
                with service.sessions.begin() as session:
                    add_articles(session, hourly_articles(now - timedelta(hours=5), now))
                enqueue_due(service.sessions, service.policy, service.renderer, now)
                await sender.deliver_due(now)
            await service.close()

        asyncio.run(two_days())
    assert sink.attempts == 3  # gone@ once (550), here@ on both days
    assert dict(sink.delivered) == {"here@example.com": 2}
    with service.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, func.count(Delivery.id))
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .group_by(Subscriber.email)
        ).all()
    assert dict(rows) == {"gone@example.com": 1, "here@example.com": 2}


def test_a_burst_of_failures_pauses_sending_instead_of_burning_through_the_list(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    addresses = [f"r{i}@example.com" for i in range(100)]
    sink = FaultySink(always="451 4.3.0 Mail server temporarily unavailable")
    with running(sink):
        service = _service(env, sink.url, pool_size=2, failure_burst=10, pause_seconds=120)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, addresses)

        async def storm_then_recovery() -> tuple[Any, Any, Any]:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            with caplog.at_level(logging.WARNING, logger="digestd"):
                during = await sender.deliver_due(SENT_AT)
            still_paused = await sender.deliver_due(SENT_AT + timedelta(minutes=1))
            sink.always = None  # the server recovers
            clock.now += 121  # the pause is over
            after = await sender.deliver_due(SENT_AT + timedelta(minutes=30))
            await service.close()
            return during, still_paused, after

        during, still_paused, after = asyncio.run(storm_then_recovery())

    assert during.paused
    assert sender.metrics.registry.get_sample_value("digestd_sending_pauses_total") == 1
    # The burst, plus what was already on the wire (two messages a connection).
    assert during.deferred <= 10 + sender.transport.concurrency
    assert during.released == 100 - during.deferred
    assert during.failed == 0 and during.sent == 0
    assert still_paused.paused and still_paused.sent == 0
    assert any("sending paused for 120s: 10 failures in a row" in m for m in caplog.messages)
    assert after.sent == 100 and not after.paused
    assert dict(sink.delivered) == {a: 1 for a in addresses}


@pytest.mark.parametrize(
    ("reply", "soft"),
    [("452 4.2.2 Mailbox full", True), ("451 4.7.1 Greylisted, please try again", False)],
    ids=["mailbox-full-counts", "greylisting-does-not"],
)
def test_a_retry_that_outlives_the_catch_up_window_fails_and_counts_as_a_soft_bounce(
    env: dict[str, str], reply: str, soft: bool
) -> None:
    """Only a temporary reply about the mailbox counts against the reader: one about our
    reputation (greylisting, 4.7.x) would, over a few days, suppress the whole list."""
    sink = FaultySink(greylist={"slow@example.com": 1000}, greylist_reply=reply)
    with running(sink):
        service = _service(env, sink.url)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, ["slow@example.com"])

        async def until_too_late() -> None:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            now = SENT_AT
            while now < SENT_AT + timedelta(hours=7):
                await sender.deliver_due(now)
                now += timedelta(minutes=30)
            await service.close()

        asyncio.run(until_too_late())
    assert _statuses(service) == {"failed": 1}
    with service.sessions() as session:
        (subscriber,) = session.scalars(select(Subscriber)).all()
        assert subscriber.soft_bounces == int(soft)
        assert subscriber.status == SubscriberStatus.ACTIVE
        (delivery,) = session.scalars(select(Delivery)).all()
        assert delivery.smtp_reply and delivery.smtp_reply.startswith(reply[:3])
        (event,) = session.scalars(select(BounceEvent)).all()
        assert (event.kind, event.source, event.delivery_id) == (
            "soft" if soft else "failed-not-address",
            "smtp",
            delivery.id,
        )
        assert event.status == reply[4:9] and event.reporting_mta == sink.url[7:]
        # Backoff doubled between attempts (1, 2, 4, 8 ... minutes; ticks every 30).
        assert 6 <= delivery.attempts <= 14


@pytest.mark.parametrize("tried", [True, False], ids=["deferred", "never-tried"])
def test_a_message_that_waited_past_the_catch_up_window_is_never_sent_a_day_late(
    env: dict[str, str], tried: bool
) -> None:
    """Greylisted (or not reached: a pause, a stop) at 07:00, and the next tick only the next
    morning (cron once a day, a daemon down overnight): yesterday's daily must not go
    out beside today's."""
    addresses = [f"r{i}@d{i}.example" for i in range(4)]
    sink = FaultySink(greylist={a: 1 for a in addresses} if tried else {})
    with running(sink):
        service = _service(env, sink.url)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, addresses)

        async def two_mornings() -> list[DeliveryReport]:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            first = await sender.deliver_due(SENT_AT, should_stop=lambda: not tried)
            tomorrow = SENT_AT + timedelta(days=1, hours=1)
            with service.sessions.begin() as session:
                add_articles(session, hourly_articles(tomorrow - timedelta(hours=5), tomorrow))
            enqueue_due(service.sessions, service.policy, service.renderer, tomorrow)
            second = await sender.deliver_due(tomorrow)
            await service.close()
            return [first, second]

        first, second = asyncio.run(two_mornings())
    assert (first.sent, first.deferred) == (0, 4 if tried else 0)  # untried: still queued
    assert sink.delivered == {a: 1 for a in addresses}  # today's, once
    assert (second.sent, second.failed if tried else second.skipped) == (4, 4)
    with service.sessions() as session:
        rows = session.execute(
            select(Delivery.status, Delivery.last_error).where(Delivery.due_at == SENT_AT)
        ).all()
    expected = "gave up after 1 attempts: due" if tried else "missed: due"
    assert {status for status, _ in rows} == {"failed" if tried else "skipped"}
    assert all(e and e.startswith(expected) and "catch-up window" in e for _, e in rows)


def test_a_tick_says_why_messages_were_not_sent(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Deferred and failed are counts in the tick's line; the operator also reads why, in
    one line, the reasons grouped without their addresses (below the pause's burst, a
    relay saying 421 to everything was silent)."""
    waiting = [f"w{i}@d{i}.example" for i in range(3)]
    sink = FaultySink(
        greylist={a: 5 for a in waiting},
        reject={"gone@d9.example": "550 5.1.1 <gone@d9.example>: Recipient address rejected"},
    )
    with running(sink):
        service = _service(env, sink.url)
        _seed(service, [*waiting, "gone@d9.example", "fine@d8.example"])

        async def tick() -> None:
            await service.tick(SENT_AT)
            await service.close()

        with caplog.at_level(logging.WARNING, logger="digestd"):
            asyncio.run(tick())
    (line,) = [m for m in caplog.messages if "deferred," in m]
    assert line == (
        "3 deferred, 1 failed: 451 4.7.1 Greylisted, please try again (3); "
        "550 5.1.1 <address>: Recipient address rejected (1)"
    )


def test_a_connection_is_replaced_after_its_message_quota(env: dict[str, str]) -> None:
    addresses = [f"q{i}@example.com" for i in range(23)]
    sink = FaultySink()
    with running(sink):
        service = _service(env, sink.url, pool_size=1)
        assert service.settings.smtp is not None  # the sink's URL
        service.transport = SmtpPool(
            service.settings.smtp,
            size=1,
            max_per_connection=5,
        )
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, addresses)

        async def send() -> None:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            await sender.deliver_due(SENT_AT)
            await service.close()

        asyncio.run(send())
    assert sum(sink.delivered.values()) == 23
    assert len(sink.peers) == 5  # 5 + 5 + 5 + 5 + 3


def test_with_per_domain_limits_everything_is_still_delivered_once(env: dict[str, str]) -> None:
    addresses = [f"u{i}@{domain}.example" for i in range(10) for domain in ("big", "small")]
    sink = FaultySink(greylist={"u0@big.example": 1})
    with running(sink):
        service = _service(env, sink.url, pool_size=4, domain_concurrency=1, domain_rate=1000)
        sender = _sender(service, FakeMonotonic())
        assert sender.limits.active
        _seed(service, addresses)

        async def send() -> None:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            await sender.deliver_due(SENT_AT)
            await sender.deliver_due(SENT_AT + timedelta(minutes=15))
            await service.close()

        asyncio.run(send())
    assert dict(sink.delivered) == {a: 1 for a in addresses}


def test_a_message_chained_behind_a_dropped_one_is_not_counted_as_tried(
    env: dict[str, str],
) -> None:
    """One connection, two readers: the second's commands ride behind the first's content,
    then the server cuts the session. The first may have arrived (one try, then backoff);
    the second never left: no try counted, and it goes out again in the same pass."""
    addresses = ["first@example.com", "second@example.com"]
    sink = FaultySink(drop_after_data={"first@example.com"})
    with running(sink):
        service = _service(env, sink.url, pool_size=1)
        sender = _sender(service, FakeMonotonic())
        _seed(service, addresses)

        async def one_pass() -> DeliveryReport:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            report = await sender.deliver_due(SENT_AT)
            await service.close()
            return report

        report = asyncio.run(one_pass())
    # Deferred: the first (dropped) and the second (not sent, back at once).
    assert (report.sent, report.deferred) == (1, 2)
    with service.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.attempts).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    assert {tuple(row) for row in rows} == {
        ("first@example.com", DeliveryStatus.QUEUED, 1),
        ("second@example.com", DeliveryStatus.SENT, 1),
    }
    assert dict(sink.delivered) == {"second@example.com": 1}

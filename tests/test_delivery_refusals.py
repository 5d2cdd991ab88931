"""Refusals from a real SMTP server: only a reply about the address suppresses it, and a
storm of the same final refusal (permanent, or temporary on a message's last try) pauses
sending before anybody is suppressed.

Time is injected: each pass is a scheduler tick at a later ``now``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from digestd.config import parse_smtp_url
from digestd.delivery.outcomes import verdict_of
from digestd.delivery.sender import DeliveryReport, Sender
from digestd.delivery.transport import SmtpPool
from digestd.errors import PermanentDeliveryError
from digestd.models import (
    BounceEvent,
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from digestd.planning.planner import enqueue_due
from digestd.readers.bounce_policy import Kind
from digestd.readers.subscribers import email_hash
from digestd.service import Service
from tests.faultsmtp import FaultySink, Script, running, scripted, standard
from tests.seeding import add_articles, hourly_articles
from tests.test_delivery_faults import SENT_AT, FakeMonotonic, _seed, _sender, _service

# Readers spread over many domains, as a real list is.
ADDRESSES = [f"reader{i}@d{i % 20}.example" for i in range(100)]


def _deliver(
    service: Service, sender: Sender, clock: FakeMonotonic, days: int = 1, ticks: int = 1
) -> list[DeliveryReport]:
    """``ticks`` ticks a day, half an hour apart from a minute past the send time (the
    first day's reports); the clock moves past any pause between them."""

    async def run() -> list[DeliveryReport]:
        reports = []
        for day in range(days):
            now = SENT_AT + timedelta(days=day, minutes=1)
            if day:  # something new to send
                with service.sessions.begin() as session:
                    add_articles(session, hourly_articles(now - timedelta(hours=5), now))
            enqueue_due(service.sessions, service.policy, service.renderer, now)
            for tick in range(ticks):
                report = await sender.deliver_due(now + timedelta(minutes=30 * tick))
                reports += [report] if tick == 0 else []
                clock.now += 3600
        await service.close()
        return reports

    return asyncio.run(run())


def _through(
    env: dict[str, str],
    sink: FaultySink,
    addresses: list[str],
    days: int = 1,
    ticks: int = 1,
    **tuning: Any,
) -> tuple[Service, Sender, list[DeliveryReport]]:
    """``addresses`` as daily readers, delivered to for ``days`` days through ``sink``."""
    with running(sink):
        service = _service(env, sink.url, **tuning)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, addresses)
        return service, sender, _deliver(service, sender, clock, days, ticks)


def _ledger(service: Service) -> dict[str, int]:
    with service.sessions() as session:
        rows = session.execute(select(BounceEvent.kind, func.count()).group_by(BounceEvent.kind))
        return {kind: count for kind, count in rows.all()}


def _suppressed(service: Service) -> set[str]:
    with service.sessions() as session:
        return set(session.scalars(select(Suppression.email_hash)))


def _delivery_statuses(service: Service) -> dict[str, int]:
    with service.sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status: count for status, count in rows.all()}


def _statuses(service: Service) -> dict[str, str]:
    with service.sessions() as session:
        rows = session.execute(select(Subscriber.email, Subscriber.status)).all()
        return {email: status for email, status in rows}


@pytest.mark.parametrize(
    "refusal",
    [
        "554 5.7.1 <{rcpt}>: Relay access denied",
        # A relay whose recipient table is broken says "user unknown" for everybody: the
        # code is address-level, the storm says otherwise.
        "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in relay recipient table",
    ],
    ids=["relay-denied", "user-unknown-for-everyone"],
)
def test_a_storm_of_the_same_refusal_suppresses_nobody_and_pauses_sending(
    env: dict[str, str], refusal: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FaultySink(always=refusal)
    with caplog.at_level(logging.WARNING, logger="digestd"):
        service, sender, (report,) = _through(env, sink, ADDRESSES, pool_size=2, pause_seconds=120)

    assert report.paused and report.sent == 0 and report.failed == 0
    # The breaker trips at the fifth domain, before the generic burst of 50 failures; what
    # was already on the wire then comes back refused too. All of it is the relay's
    # refusal: back in the queue, none failed for it.
    assert 5 <= report.deferred < 5 + service.transport.concurrency
    assert report.released == 100 - report.deferred
    assert sender.metrics.registry.get_sample_value("digestd_sending_pauses_total") == 1
    assert any("the same refusal from 5 recipient domains in a row" in m for m in caplog.messages)
    assert _suppressed(service) == set()
    assert set(_statuses(service).values()) == {SubscriberStatus.ACTIVE}
    assert _ledger(service) == {}
    assert _delivery_statuses(service) == {DeliveryStatus.QUEUED: 100}


@pytest.mark.parametrize(
    ("addresses", "suppressed"),
    [
        # A small company's list behind a relay that refuses it: fewer domains than a storm
        # needs, and every message refused alike. Exim's words for an ACL's "deny", no
        # enhanced code.
        ([f"staff{i}@d{i % 3}.example" for i in range(8)], 0),
        # The same reply for two readers only is too little to say: they are refused.
        ([f"staff{i}@d{i}.example" for i in range(2)], 2),
    ],
    ids=["whole-send-of-8", "two-only"],
)
def test_a_send_refused_alike_from_first_to_last_suppresses_nobody(
    env: dict[str, str], caplog: pytest.LogCaptureFixture, addresses: list[str], suppressed: int
) -> None:
    sink = FaultySink(always="550 Administrative prohibition")
    with caplog.at_level(logging.WARNING, logger="digestd"):
        service, _, (report,) = _through(env, sink, addresses, pool_size=2, pause_seconds=120)
    assert report.sent == 0
    assert len(_suppressed(service)) == suppressed
    if suppressed:
        assert report.failed == len(addresses)
        assert set(_statuses(service).values()) == {SubscriberStatus.BOUNCED}
        return
    # The relay's refusal: every message waits in the queue for it.
    assert (report.failed, report.deferred) == (0, len(addresses))
    assert set(_statuses(service).values()) == {SubscriberStatus.ACTIVE}
    assert _ledger(service) == {}
    assert report.paused
    (line,) = [m for m in caplog.messages if "every message of this send" in m]
    assert "(8, to 3 recipient domains) was refused the same way" in line


def test_a_send_with_one_message_accepted_judges_each_refusal(env: dict[str, str]) -> None:
    """Seven refused alike and one accepted: the relay does take mail, so the seven
    refusals are about their addresses."""
    addresses = [f"staff{i}@d{i % 3}.example" for i in range(8)]
    refused = {a: f"550 5.1.1 <{a}>: User unknown" for a in addresses[:7]}
    sink = FaultySink(reject=refused)
    service, _, (report,) = _through(env, sink, addresses, pool_size=1, pause_seconds=120)
    assert (report.sent, report.failed) == (1, 7)
    assert len(_suppressed(service)) == 7


def test_a_relay_that_will_not_relay_to_some_domains_suppresses_none_of_their_readers(
    env: dict[str, str],
) -> None:
    """Exim's bare "550 relay not permitted" for two domains of twenty, the rest accepted:
    too few domains for a storm, and not one reply is about an address."""
    refused = {
        a: "550 relay not permitted"
        for a in ADDRESSES
        if a.endswith(("@d3.example", "@d7.example"))
    }
    sink = FaultySink(reject=refused)
    service, _, (report,) = _through(env, sink, ADDRESSES, pool_size=2, pause_seconds=120)
    assert (report.sent, report.failed) == (90, 10) and not report.paused
    assert _suppressed(service) == set()
    assert set(_statuses(service).values()) == {SubscriberStatus.ACTIVE}
    assert _ledger(service) == {"failed-not-address": 10}


def test_after_a_storm_pause_the_first_identical_refusal_pauses_again(env: dict[str, str]) -> None:
    sink = FaultySink(always="554 5.7.1 <{rcpt}>: Relay access denied")
    with running(sink):
        service = _service(env, sink.url, pool_size=1, pause_seconds=60)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, ADDRESSES)

        async def two_passes() -> tuple[DeliveryReport, DeliveryReport]:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            first = await sender.deliver_due(SENT_AT)
            clock.now += 61  # the pause is over; the relay still refuses
            second = await sender.deliver_due(SENT_AT + timedelta(minutes=2))
            await service.close()
            return first, second

        first, second = asyncio.run(two_passes())
    in_flight = service.transport.concurrency
    assert 5 <= first.deferred < 5 + in_flight
    assert 1 <= second.deferred <= in_flight and second.paused  # one refusal, not five again
    assert _suppressed(service) == set()
    # Pause after pause, nothing drained away: each refused message waits for the relay.
    assert first.failed == second.failed == 0
    assert _delivery_statuses(service) == {DeliveryStatus.QUEUED: 100}


def test_messages_refused_in_a_storm_are_sent_once_the_relay_takes_mail_again(
    env: dict[str, str],
) -> None:
    sink = FaultySink(always="554 5.7.1 <{rcpt}>: Relay access denied")
    with running(sink):
        service = _service(env, sink.url, pool_size=1, pause_seconds=60)
        clock = FakeMonotonic()
        sender = _sender(service, clock)
        _seed(service, ADDRESSES)

        async def refused_then_fixed() -> list[DeliveryReport]:
            enqueue_due(service.sessions, service.policy, service.renderer, SENT_AT)
            reports = [await sender.deliver_due(SENT_AT)]
            sink.always = None  # the operator fixed the relay
            clock.now += 61
            for minutes in (30, 90):  # past the pause, then past every retry's backoff
                reports.append(await sender.deliver_due(SENT_AT + timedelta(minutes=minutes)))
                clock.now += 3600
            await service.close()
            return reports

        reports = asyncio.run(refused_then_fixed())
    assert sum(r.failed for r in reports) == 0
    assert sum(r.sent for r in reports) == 100
    assert _delivery_statuses(service) == {DeliveryStatus.SENT: 100}
    assert sink.delivered == Counter(ADDRESSES)  # each once


def test_550_5_1_1_for_some_recipients_suppresses_exactly_those(env: dict[str, str]) -> None:
    gone = ADDRESSES[3::17]  # six readers on six domains, accepted readers between them
    sink = FaultySink(
        reject={a: f"550 5.1.1 <{a}>: Recipient address rejected: User unknown" for a in gone}
    )
    service, _, (first, second) = _through(env, sink, ADDRESSES, days=2, pool_size=2)

    assert not first.paused and (first.sent, first.failed) == (94, 6)
    assert second.sent == 94 and second.failed == 0  # the suppressed are not even queued
    assert _suppressed(service) == {email_hash(a) for a in gone}
    statuses = _statuses(service)
    assert {a for a, s in statuses.items() if s == SubscriberStatus.BOUNCED} == set(gone)
    assert _ledger(service) == {"hard": 6}
    with service.sessions() as session:
        events = session.execute(
            select(Subscriber.email, BounceEvent.status, BounceEvent.diagnostic)
            .join(Subscriber, Subscriber.id == BounceEvent.subscriber_id)
            .order_by(Subscriber.email)
        ).all()
    assert {row.email for row in events} == set(gone)
    assert all(row.status == "5.1.1" for row in events)
    # The ledger keeps the domain, not the mailbox.
    assert all("reader" not in (row.diagnostic or "") for row in events)
    assert all(f"…@{row.email.partition('@')[2]}" in row.diagnostic for row in events)


def test_a_refusal_with_a_nul_in_it_is_recorded_with_the_rest_of_its_batch(
    env: dict[str, str],
) -> None:
    """PostgreSQL text cannot hold NUL: one in a relay's reply failed the write of the
    whole batch's outcomes, so every message of it would have gone out again."""
    gone = ADDRESSES[3::17]
    sink = FaultySink(reject={a: f"550 5.1.1 <{a}>: no\x00such user" for a in gone})
    service, _, (report,) = _through(env, sink, ADDRESSES, pool_size=2)
    assert (report.sent, report.failed) == (94, 6)
    with service.sessions() as session:
        stored = session.execute(select(Delivery.smtp_reply, Delivery.last_error)).all()
        ledger = session.scalars(select(BounceEvent.diagnostic)).all()
    refusals = [text for row in stored for text in row if text and "such user" in text]
    assert len(refusals) == 12 and all("no such user" in text for text in refusals)
    assert len(ledger) == 6 and all("\x00" not in (text or "") for text in ledger)
    assert {a for a, s in _statuses(service).items() if s == SubscriberStatus.BOUNCED} == set(gone)


def test_a_content_refusal_at_end_of_data_fails_that_message_and_keeps_the_reader(
    env: dict[str, str],
) -> None:
    filtered = "reader7@d7.example"
    sink = FaultySink(reject_content={filtered: "554 5.7.1 content rejected"})
    service, _, (first, second) = _through(env, sink, ADDRESSES[:20], days=2, pool_size=2)

    assert (first.sent, first.failed) == (19, 1)
    assert second.sent == 19 and second.failed == 1  # still a reader: tried again next day
    assert _suppressed(service) == set()
    assert _statuses(service)[filtered] == SubscriberStatus.ACTIVE
    with service.sessions() as session:
        replies = session.scalars(
            select(Delivery.smtp_reply).where(Delivery.status == "failed")
        ).all()
        kinds = [
            tuple(row) for row in session.execute(select(BounceEvent.kind, BounceEvent.status))
        ]
    assert replies == ["554 5.7.1 content rejected"] * 2
    assert kinds == [("failed-not-address", "5.7.1")] * 2


@pytest.mark.parametrize(
    ("answer_to", "reply", "stage", "kind"),
    [
        (b"DATA", b"554 5.5.1 Error: no valid recipients", "data", Kind.FAILED),
        (b"DATA", b"550 Rejected", "data", Kind.FAILED),  # bare, but to DATA: not the address
        (b"RCPT", b"550 No such mailbox", "rcpt", Kind.HARD),  # bare at RCPT: the address
        (b".", b"550 Message rejected as spam", "end-of-data", Kind.FAILED),
        (b".", b"550 5.1.1 Unknown user (checked late)", "end-of-data", Kind.HARD),
    ],
)
def test_a_refusal_is_judged_by_the_command_it_answered(
    answer_to: bytes, reply: bytes, stage: str, kind: Kind
) -> None:
    def answer(line: bytes) -> list[bytes] | None:
        return [reply] if line.upper().startswith(answer_to) else standard(line)

    async def send() -> PermanentDeliveryError:
        async with scripted(Script(answer=answer)) as port:
            pool = SmtpPool(parse_smtp_url(f"smtp://127.0.0.1:{port}"), size=1)
            try:
                await pool.send(
                    "bounces@news.example.com", "r@example.com", b"Subject: x\r\n\r\nx\r\n"
                )
            except PermanentDeliveryError as exc:
                return exc
            finally:
                await pool.close()
        raise AssertionError("the server's refusal was not raised")

    refused = asyncio.run(send())
    assert refused.stage == stage
    assert verdict_of(refused).kind is kind


@pytest.mark.parametrize(
    "addresses",
    [ADDRESSES, [f"staff{i}@d{i % 3}.example" for i in range(8)]],
    ids=["many-domains", "small-list"],
)
def test_a_relay_deferring_everybody_for_days_suppresses_nobody(
    env: dict[str, str], addresses: list[str]
) -> None:
    """Postfix's ``reject_unverified_recipient`` while its probes cannot get out defers every
    recipient with 4.1.1, a code about the mailbox: each message gives up at the end of
    its window and three days of that would have suppressed the whole list as soft
    bounces. The same give-up from many domains at once is the relay's."""
    sink = FaultySink(
        always="450 4.1.1 <{rcpt}>: Recipient address rejected: unverified address: "
        "Address verification in progress"
    )
    # Ticks every half hour until each daily's catch-up window closes, three days running.
    service, _, _ = _through(env, sink, addresses, days=3, ticks=16, pool_size=2)
    assert _delivery_statuses(service) == {DeliveryStatus.FAILED: 3 * len(addresses)}
    assert _suppressed(service) == set()
    assert set(_statuses(service).values()) == {SubscriberStatus.ACTIVE}
    assert "soft" not in _ledger(service)
    with service.sessions() as session:
        assert set(session.scalars(select(Subscriber.soft_bounces))) == {0}
        errors = session.scalars(select(Delivery.last_error)).all()
    assert any("gave up" in e and "about the relay" in e for e in errors if e)


def test_mailboxes_full_day_after_day_at_one_provider_are_still_soft_bounces(
    env: dict[str, str],
) -> None:
    """Three readers whose mailboxes stay full, alone in their sends: the same reply from
    one domain says nothing about the relay; three days suppress them."""
    full = [f"full{i}@bigmail.example" for i in range(3)]
    sink = FaultySink(greylist={a: 10**6 for a in full}, greylist_reply="452 4.2.2 Mailbox full")
    service, _, _ = _through(env, sink, full, days=3, ticks=16, pool_size=2)
    assert _ledger(service) == {"soft": 9}
    assert _suppressed(service) == {email_hash(a) for a in full}

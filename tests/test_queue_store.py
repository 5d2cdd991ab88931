"""The queue store on its own: claims under a lease, the lease as a fencing token for
outcomes, bounces applied with the outcomes, and the statements each database gets (one
per batch on PostgreSQL, whatever the batch size). Real SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from digestd.db import make_engine, make_sessions
from digestd.delivery.queue import Job, Outcome, QueueStore
from digestd.delivery.queue_store import queue_store
from digestd.delivery.worker import Worker
from digestd.models import (
    BounceEvent,
    Delivery,
    DeliveryStatus,
    EditionKind,
    Subscriber,
    SubscriberStatus,
)
from digestd.models import Suppression as SuppressionRow
from digestd.planning.planner import enqueue_due
from digestd.readers.bounce_policy import Kind
from digestd.readers.ledger import Event
from digestd.readers.lifecycle import erase_subscriber
from tests.email_samples import MASTHEAD
from tests.seeding import Reader, add_articles, add_readers, hourly_articles, policy_at

SEND = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
TOPICS = ("ai", "robotics", "fintech")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessions(engine)


class Clock:
    """The database's clock as the store reads it, moved by the test."""

    def __init__(self) -> None:
        self.now = SEND

    def __call__(self) -> datetime:
        return self.now


ELSEWHERE = Worker("other-host", "boot", 1, "1")  # a worker nothing tells us about


def _queued(
    sessions: sessionmaker[Session],
    readers: int,
    clock: Clock | None = None,
    worker: Worker | None = None,
    max_attempts: int = 8,
) -> QueueStore:
    """``readers`` daily readers over three topics, their edition planned and queued."""
    from digestd.mail.digests import DigestRenderer

    with sessions.begin() as session:
        add_articles(session, hourly_articles(SEND - timedelta(hours=20), SEND, TOPICS))
        people = [
            Reader(f"r{i:03d}@example.com", categories=(TOPICS[i % 3],)) for i in range(readers)
        ]
        add_readers(session, people, SEND - timedelta(days=1))
    report = enqueue_due(sessions, policy_at(SEND), DigestRenderer(MASTHEAD), SEND)
    assert report.queued[EditionKind.DAILY] == readers
    return queue_store(
        sessions, worker or Worker.this_process(), max_attempts=max_attempts, clock=clock or Clock()
    )


def _statuses(sessions: sessionmaker[Session]) -> dict[int, tuple[str, datetime | None, int]]:
    with sessions() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.status, Delivery.lease_expires_at, Delivery.attempts)
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _sent(job: Job, now: datetime) -> Outcome:
    return Outcome(job, DeliveryStatus.SENT, True, now, sent_at=now, smtp_reply="250 ok")


def test_a_claim_takes_due_rows_in_digest_order_under_one_lease(
    sessions: sessionmaker[Session],
) -> None:
    store = _queued(sessions, 9)
    jobs = store.claim(SEND, LEASE, 5)
    assert len(jobs) == 5
    assert [j.digest_id for j in jobs] == sorted(j.digest_id or 0 for j in jobs)
    assert {j.lease for j in jobs} == {SEND + LEASE}
    rows = _statuses(sessions)
    assert sorted(s for s, _, _ in rows.values()) == ["queued"] * 4 + ["sending"] * 5
    # The next claim takes only what is left; nothing is claimed twice.
    rest = store.claim(SEND, LEASE, 5)
    assert len(rest) == 4 and not {j.delivery_id for j in rest} & {j.delivery_id for j in jobs}
    assert store.claim(SEND, LEASE, 5) == []


def test_a_dead_workers_rows_are_claimable_once_its_lease_has_run_out(
    sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    _queued(sessions, 3, clock, ELSEWHERE).claim(SEND, LEASE, 10)
    store = queue_store(sessions, Worker.this_process(), clock=clock)
    clock.now = SEND + LEASE - timedelta(seconds=1)
    assert store.claim(SEND, LEASE, 10) == []  # still leased
    clock.now = SEND + LEASE + timedelta(seconds=1)
    second = store.claim(SEND, LEASE, 10)
    assert len(second) == 3 and {j.lease for j in second} == {clock.now + LEASE}
    assert {j.attempts for j in second} == {2}  # each claim counts an attempt


def test_leases_follow_the_database_clock_not_the_senders_now(
    sessions: sessionmaker[Session],
) -> None:
    """A ``tick --now`` in the future (or a skewed host) must not steal live leases."""
    clock = Clock()
    _queued(sessions, 3, clock, ELSEWHERE).claim(SEND, LEASE, 10)
    store = queue_store(sessions, Worker.this_process(), clock=clock)
    assert store.claim(SEND + timedelta(days=2), LEASE, 10) == []


def _dead_worker_on_this_host() -> Worker:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(f"/proc/{child.pid}/stat") as stat:
            start = stat.read().rpartition(")")[2].split()[19]
    finally:
        child.kill()
        child.wait()
    me = Worker.this_process()
    return Worker(me.host, me.boot, child.pid, start, me.namespace)


def test_a_restarted_worker_takes_over_its_dead_predecessors_claims_at_once(
    sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    _queued(sessions, 4, clock, _dead_worker_on_this_host()).claim(SEND, LEASE, 10)
    me = Worker.this_process()
    taken = queue_store(sessions, me, clock=clock).claim(SEND, LEASE, 10)
    assert len(taken) == 4  # although the lease has not run out
    with sessions() as session:
        assert set(session.scalars(select(Delivery.claimed_by))) == {me.label}
    assert not me.outlived(me.label)  # a live worker's claims are left alone
    assert not me.outlived(ELSEWHERE.label)  # another host's wait for their lease


@pytest.fixture
def live_child() -> Iterator[tuple[int, str]]:
    """A process of this host that keeps running: (pid, start ticks)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(f"/proc/{child.pid}/stat") as stat:
            yield child.pid, stat.read().rpartition(")")[2].split()[19]
    finally:
        child.kill()
        child.wait()


def test_claims_are_taken_over_only_when_their_worker_is_proven_gone(
    live_child: tuple[int, str],
) -> None:
    """Found by a chaos probe: a second worker in another PID namespace (a container sharing
    the host name) or on another machine of the same name read the other's live claims as a
    dead worker's and took them; the two took rows back and forth, readers got up to eight
    copies and the rows ended failed."""
    me = Worker.this_process()
    assert me.namespace and me.boot
    pid, start = live_child
    here = Worker(me.host, me.boot, pid, start, me.namespace)
    assert not me.outlived(here.label)  # alive, here
    assert me.outlived(Worker(me.host, me.boot, pid, str(int(start) + 1), me.namespace).label)
    # The same pid and start in another PID namespace, or from a machine of the same name
    # (another boot id): nothing here says whether it lives.
    assert not me.outlived(Worker(me.host, me.boot, pid, "1", "4026532999").label)
    assert not me.outlived(Worker(me.host, me.boot, 1, "1", "4026532999").label)
    assert not me.outlived(Worker(me.host, "another-boot", 999_999, "1", me.namespace).label)
    assert not me.outlived(f"{me.host}/{me.boot}/{pid}/1")  # an older digestd's label


def test_a_live_process_hidden_from_proc_keeps_its_claims(
    live_child: tuple[int, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With /proc mounted hidepid=2, another user's live worker has no /proc entry: its
    absence there is no proof of death (the kernel is asked)."""
    from digestd.delivery import worker

    me = Worker.this_process()
    pid, start = live_child
    monkeypatch.setattr(worker, "_PROC", tmp_path)  # a /proc that shows no other process
    assert not me.outlived(Worker(me.host, me.boot, pid, start, me.namespace).label)


def test_a_message_that_kills_its_worker_every_time_fails_after_max_attempts(
    sessions: sessionmaker[Session],
) -> None:
    clock = Clock()
    store = _queued(sessions, 1, clock, max_attempts=3)
    for attempt in (1, 2, 3):  # claimed, then the worker dies: no outcome is ever written
        (job,) = store.claim(SEND, LEASE, 10)
        assert job.attempts == attempt
        clock.now += LEASE + timedelta(seconds=1)
    assert store.claim(SEND, LEASE, 10) == []
    with sessions() as session:
        ((status, error),) = session.execute(select(Delivery.status, Delivery.last_error))
    assert status == DeliveryStatus.FAILED and "claimed 3 times" in (error or "")


def test_an_outcome_is_written_only_while_the_claim_is_still_the_writers(
    sessions: sessionmaker[Session],
) -> None:
    """The lease and the worker are the claim's fencing token: a worker that stalled past
    its lease cannot overwrite the row its successor now owns."""
    clock = Clock()
    stalled_store = _queued(sessions, 2, clock, Worker("host-a", "boot", 1, "1"))
    stalled = stalled_store.claim(SEND, LEASE, 10)
    clock.now = SEND + LEASE + timedelta(seconds=1)
    successor_store = queue_store(sessions, Worker("host-b", "boot", 1, "1"), clock=clock)
    successor = successor_store.claim(SEND, LEASE, 10)
    refusal = Event(Kind.HARD, "smtp", "smtp", "5.1.1", "550 5.1.1 <r0@example.com>: unknown")
    failed = [
        Outcome(j, DeliveryStatus.FAILED, True, SEND, last_error="late writer", event=refusal)
        for j in stalled
    ]
    # The stalled worker wakes up: it changes nothing, says so (its tick's report counts it),
    # and leaves the refusal to the worker whose rows they are now (no ledger row, nobody
    # suppressed for a message that worker sends again).
    assert stalled_store.record(failed, SEND) == 0
    assert {s for s, _, _ in _statuses(sessions).values()} == {"sending"}
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(BounceEvent)) == 0
        assert session.scalar(select(func.count()).select_from(SuppressionRow)) == 0
    assert successor_store.record([_sent(j, SEND) for j in successor], SEND) == 2
    rows = _statuses(sessions)
    assert {(s, lease, attempts) for s, lease, attempts in rows.values()} == {("sent", None, 2)}


def test_released_rows_go_back_without_an_attempt_and_deferred_ones_wait(
    sessions: sessionmaker[Session],
) -> None:
    store = _queued(sessions, 2)
    released, deferred = store.claim(SEND, LEASE, 10)
    retry_at = SEND + timedelta(minutes=2)
    store.record(
        [
            Outcome(released, DeliveryStatus.QUEUED, False, SEND),
            Outcome(deferred, DeliveryStatus.QUEUED, True, retry_at, last_error="451 later"),
        ],
        SEND,
    )
    assert [j.delivery_id for j in store.claim(SEND, LEASE, 10)] == [released.delivery_id]
    again = store.claim(retry_at, LEASE, 10)
    assert [(j.delivery_id, j.attempts) for j in again] == [(deferred.delivery_id, 2)]
    assert _statuses(sessions)[released.delivery_id][2] == 1  # its attempt was given back


def test_a_hard_bounce_suppresses_the_reader_with_the_outcome(
    sessions: sessionmaker[Session],
) -> None:
    store = _queued(sessions, 2)
    bounced, fine = store.claim(SEND, LEASE, 10)
    event = Event(Kind.HARD, "smtp", "smtp", "5.1.1", "550 5.1.1 <r0@example.com>: unknown")
    store.record(
        [
            Outcome(bounced, DeliveryStatus.FAILED, True, SEND, event=event),
            _sent(fine, SEND),
        ],
        SEND,
    )
    with sessions() as session:
        statuses = dict(session.execute(select(Subscriber.id, Subscriber.status)).all())
        ledger = session.execute(
            select(BounceEvent.delivery_id, BounceEvent.kind, BounceEvent.diagnostic)
        ).one()
    assert statuses[bounced.subscriber_id] == SubscriberStatus.BOUNCED
    assert tuple(ledger) == (bounced.delivery_id, "hard", "550 5.1.1 <…@example.com>: unknown")
    assert statuses[fine.subscriber_id] == SubscriberStatus.ACTIVE
    assert store.unsendable([bounced, fine]) == ["address is suppressed", None]


def test_a_refusal_for_a_reader_erased_while_it_was_sent_is_recorded_with_the_rest(
    sessions: sessionmaker[Session],
) -> None:
    """ "Delete my data" while the digest is on the wire, and the relay refuses it: the
    reader's rows are gone, so the ledger keeps the refusal without them, and the other
    outcomes of the batch are written (a failed write would re-send them all)."""
    store = _queued(sessions, 2)
    erased, fine = store.claim(SEND, LEASE, 10)
    with sessions.begin() as session:
        gone = session.get(Subscriber, erased.subscriber_id)
        assert gone is not None
        erase_subscriber(session, gone, SEND)
    event = Event(Kind.HARD, "smtp", "smtp", "5.1.1", "550 5.1.1 <r0@example.com>: unknown")
    store.record(
        [Outcome(erased, DeliveryStatus.FAILED, True, SEND, event=event), _sent(fine, SEND)],
        SEND,
    )
    assert _statuses(sessions)[fine.delivery_id][0] == DeliveryStatus.SENT
    with sessions() as session:
        kept = session.execute(
            select(BounceEvent.delivery_id, BounceEvent.subscriber_id, BounceEvent.kind)
        ).one()
    assert tuple(kept) == (None, None, "hard")


class Statements:
    """Every SQL statement an engine runs, and how many parameter sets each had."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[tuple[str, int]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        self.seen.append((" ".join(statement.split()), len(params) if many else 1))

    def clear(self) -> None:
        self.seen.clear()


@pytest.mark.parametrize("size", [5, 60])
def test_a_batch_is_a_fixed_number_of_statements_whatever_its_size(
    engine: Engine, sessions: sessionmaker[Session], size: int
) -> None:
    store = _queued(sessions, size)
    statements = Statements(engine)
    jobs = store.claim(SEND, LEASE, size)
    claim = [s for s, _ in statements.seen if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    statements.clear()
    store.record([_sent(j, SEND) for j in jobs], SEND)
    record = [(s, n) for s, n in statements.seen if s.startswith("UPDATE")]
    # Who claimed what is in flight (dead workers' rows), rows looping on a dead worker
    # given up, then the due rows picked (a dead worker's first, then queued ones) ...
    shape = [s.split()[0] for s in claim]
    assert shape[:4] == ["SELECT", "UPDATE", "SELECT", "SELECT"]
    assert "DISTINCT" in claim[0] and "claimed_by" in claim[0]
    if engine.dialect.name == "postgresql":
        # ... with FOR UPDATE SKIP LOCKED, and moved by one UPDATE ... RETURNING.
        assert shape[4:] == ["UPDATE"]
        assert all("FOR UPDATE SKIP LOCKED" in s for s in claim[2:4])
        assert "RETURNING" in claim[4] and "= ANY" in claim[4]
        # One UPDATE from unnest(arrays) for the whole batch.
        assert len(record) == 1 and "unnest" in record[0][0] and record[0][1] == 1
    else:
        assert shape[4:] == ["UPDATE", "SELECT"]
        assert len(record) == 1 and record[0][1] == size  # one executemany
    assert len(jobs) == size

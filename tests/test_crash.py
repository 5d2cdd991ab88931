"""Crash safety with real processes: ``digestd run`` on PostgreSQL sending into Postfix's
``smtp-sink``, killed with SIGKILL mid-edition and restarted; three workers at once; and
PostgreSQL itself restarted under a running daemon.

Deliveries are counted at the sink (its ``-D`` dump holds one ``X-Rcpt-Args`` line per
accepted message), not in digestd's own tables. The duplicates a kill -9 may cause are
the messages that had left but whose outcome was not yet recorded: at most the batches in
flight (DIGESTD_SEND_BATCH per worker). Three workers sharing one edition must produce
none: rows are claimed with FOR UPDATE SKIP LOCKED under a lease.

PostgreSQL only (the multi-worker claim is a PostgreSQL feature); bounded by polls, each
run sends 20 000 messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from digestd.db import make_engine, make_sessions, migrate
from digestd.models import Delivery, DeliveryStatus, Subscriber
from tests.helpers import free_port
from tests.log_lines import events
from tests.seeding import add_articles, hourly_articles, many_readers

SUBSCRIBERS = 20_000
# Every combination of three categories: seven distinct digests an edition.
CATEGORIES = ("ai", "robotics", "fintech")
TOPICS = [tuple(c for n, c in enumerate(CATEGORIES) if mask >> n & 1) for mask in range(1, 8)]
BATCH = 500
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

pytestmark = [
    pytest.mark.slow,  # a 20 000-reader edition through real processes: 10-50 s each
    pytest.mark.skipif(
        not os.environ.get("DIGESTD_TEST_DATABASE_URL"),
        reason="needs PostgreSQL (DIGESTD_TEST_DATABASE_URL): SKIP LOCKED claims across processes",
    ),
]


class Sink:
    """Postfix smtp-sink appending every accepted message to one dump file."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's private tmp dir: smtp-sink drops to `nobody` before writing.
        self.directory = Path(tempfile.mkdtemp(prefix="digestd-sink-"))
        self.directory.chmod(0o777)
        command = [SMTP_SINK, "-D", str(self.directory / "dump"), f"127.0.0.1:{self.port}", "1000"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]
        self.process = subprocess.Popen(command)
        _wait_for(lambda: _port_open(self.port), 10, "smtp-sink to listen")

    def _dumps(self) -> list[Path]:
        assert self.process.poll() is None, "smtp-sink died"
        dump = self.directory / "dump"
        return [dump] if dump.exists() else []

    def recipients(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for path in self._dumps():
            with path.open("rb") as dump:
                for line in dump:
                    if line.startswith(b"X-Rcpt-Args: <"):
                        found[line[14:].split(b">", 1)[0].decode()] += 1
        return found

    def count(self) -> int:
        total = 0
        for path in self._dumps():
            data = path.read_bytes()
            total += data.count(b"\nX-Rcpt-Args: ") + data.startswith(b"X-Rcpt-Args: ")
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink()
    yield sink
    sink.stop()


def _seed(database_url: str) -> tuple[dict[str, str], datetime]:
    """20 000 readers whose daily fell due a minute ago (real time: the daemon's clock)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    send_at = now - timedelta(hours=1)  # the daily hour that passed last, within catch-up
    engine = make_engine(database_url)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        add_articles(session, hourly_articles(now - timedelta(hours=23), now, CATEGORIES))
        many_readers(
            session, SUBSCRIBERS, now - timedelta(hours=2), dtime(send_at.hour), topics=TOPICS
        )
    engine.dispose()
    return {"DIGESTD_DAILY_HOUR": str(send_at.hour)}, now


def _daemon(env: dict[str, str], tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "digestd", "run", "--no-migrate"],
        env={**os.environ, **env, "DIGESTD_LISTEN": f"127.0.0.1:{free_port()}"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _environment(env: dict[str, str], sink: Sink, extra: dict[str, str]) -> dict[str, str]:
    """The test installation's environment (conftest ``env``), sending into the sink."""
    return {
        **env,
        # Short timeouts allow a short lease (config.check_lease_budget: 5 x (4 x 1 + 2)),
        # so rows stranded by a kill or a lost database come back within the test.
        "DIGESTD_SMTP_URL": f"smtp://127.0.0.1:{sink.port}?timeout=1&data_timeout=2",
        "DIGESTD_SMTP_POOL_SIZE": "8",
        "DIGESTD_SEND_BATCH": str(BATCH),
        "DIGESTD_TICK_SECONDS": "2",
        "DIGESTD_SEND_LEASE_SECONDS": "30",
        "DIGESTD_HELPER_PROCESSES": "1",  # as in production: enqueue beside the sender
        "DIGESTD_LOG_FORMAT": "logfmt",  # each tick's numbers as fields
        **extra,
    }


def _queue(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        counts = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    engine.dispose()
    return counts


def _stop(process: subprocess.Popen[bytes], seconds: float = 30) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(seconds)


def test_kill_9_mid_edition_then_restart_delivers_to_everyone_with_at_most_the_in_flight_repeated(
    database_url: str, env: dict[str, str], sink: Sink, tmp_path: Path
) -> None:
    extra, _ = _seed(database_url)
    # A lease far longer than the test: the restarted daemon must take over the claims of
    # the one it replaces because that process is gone, not because the lease ran out.
    env = _environment(env, sink, {**extra, "DIGESTD_SEND_LEASE_SECONDS": "3600"})
    first = _daemon(env, tmp_path, "first")
    try:
        _wait_for(lambda: sink.count() >= SUBSCRIBERS // 4, 90, "a quarter of the edition")
    finally:
        first.kill()  # SIGKILL: no chance to record what is in flight
        first.wait()
    at_kill = sink.count()
    assert at_kill < SUBSCRIBERS, "the edition finished before the kill; nothing was tested"
    assert DeliveryStatus.SENDING in _queue(database_url), "nothing was in flight at the kill"

    restarted_at = time.monotonic()
    second = _daemon(env, tmp_path, "second")
    try:
        _wait_for(lambda: sink.count() > at_kill, 30, "sending to resume after the restart")
        resumed = time.monotonic() - restarted_at
        _wait_for(
            lambda: _queue(database_url) == {DeliveryStatus.SENT: SUBSCRIBERS},
            120,
            "the restarted daemon to finish the edition, the dead one's claims included",
        )
    finally:
        assert _stop(second) == 0
    received = sink.recipients()
    duplicates = sum(received.values()) - len(received)
    print(
        f"\nkill -9 after {at_kill} messages; sending resumed {resumed:.1f}s after the "
        f"restart; duplicates: {duplicates}"
    )
    assert len(received) == SUBSCRIBERS  # everyone got the edition
    assert duplicates <= BATCH  # only what was in flight (one batch) can repeat


def test_three_workers_share_one_edition_without_a_single_duplicate(
    database_url: str, env: dict[str, str], sink: Sink, tmp_path: Path
) -> None:
    extra, _ = _seed(database_url)
    env = _environment(env, sink, extra)
    workers = [_daemon(env, tmp_path, f"worker{i}") for i in range(3)]
    try:
        _wait_for(
            lambda: _queue(database_url) == {DeliveryStatus.SENT: SUBSCRIBERS},
            120,
            "three workers to finish the edition",
        )
    finally:
        codes = [_stop(worker) for worker in workers]
    assert codes == [0, 0, 0]
    received = sink.recipients()
    assert len(received) == SUBSCRIBERS
    assert sum(received.values()) == SUBSCRIBERS, "a message was sent twice"
    ticks = [events((tmp_path / f"worker{i}.log").read_text(), "tick") for i in range(3)]
    sent_by = [sum(int(tick["sent"]) for tick in worker) for worker in ticks]
    queued_by = [sum(int(tick["queued"]) for tick in worker) for worker in ticks]
    print(f"\nreaders planned by each worker: {queued_by}")
    assert sum(queued_by) == SUBSCRIBERS  # each reader planned once, whoever planned it
    print(f"messages sent by each worker: {sent_by}")
    assert sum(sent_by) == SUBSCRIBERS
    assert sum(1 for n in sent_by if n) >= 2, "the work was not shared"
    # Each distinct digest was rendered once, by one of the three.
    rendered = [sum(int(tick["rendered"]) for tick in worker) for worker in ticks]
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        # The readers' digests: the public archive may add one of its own.
        digests = session.scalar(select(func.count(func.distinct(Delivery.digest_id))))
    engine.dispose()
    print(f"digests rendered by each worker: {rendered} of {digests}")
    assert sum(rendered) == digests == len(TOPICS)


def test_sigterm_mid_edition_exits_0_promptly_leaving_nothing_in_flight(
    database_url: str, env: dict[str, str], sink: Sink, tmp_path: Path
) -> None:
    extra, now = _seed(database_url)
    env = _environment(env, sink, {**extra, "DIGESTD_SEND_LEASE_SECONDS": "300"})
    daemon = _daemon(env, tmp_path, "daemon")
    try:
        _wait_for(lambda: sink.count() >= 2000, 90, "the edition to be under way")
    finally:
        daemon.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        code = daemon.wait(30)
    took = time.monotonic() - stopped_at
    queue = _queue(database_url)
    print(f"\nSIGTERM: exit {code} after {took:.1f}s; queue {queue}")
    assert code == 0
    assert took < 10
    # Nothing left claimed (a 300 s lease would otherwise hold it), and what digestd says
    # it sent is exactly what the sink got: nothing sent-but-unrecorded, nothing lost.
    assert DeliveryStatus.SENDING not in queue
    assert queue[DeliveryStatus.SENT] == sink.count()
    # Readers the enqueue helper had not reached yet are still due: the next start plans them.
    unplanned = _still_due_without_a_delivery(database_url, now)
    queued = queue.get(DeliveryStatus.QUEUED, 0)
    assert queue[DeliveryStatus.SENT] + queued + unplanned == SUBSCRIBERS
    assert queued + unplanned > 0, "the edition finished before SIGTERM"


def _still_due_without_a_delivery(database_url: str, now: datetime) -> int:
    engine = make_engine(database_url)
    with make_sessions(engine)() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(
                Subscriber.next_daily_at <= now,
                ~Subscriber.id.in_(select(Delivery.subscriber_id)),
            )
        )
    engine.dispose()
    return int(count or 0)


@pytest.fixture
def own_postgres() -> Iterator[tuple[Path, str]]:
    """A PostgreSQL cluster of this test's own, since the test restarts it. Not under
    pytest's private tmp dir: the server runs as the ``postgres`` user when we are root."""
    directory = Path(tempfile.mkdtemp(prefix="digestd-pg-"))
    script = Path(__file__).resolve().parent.parent / "scripts" / "test-postgres.sh"
    started = subprocess.run(
        [str(script), "start", str(directory), str(free_port())],
        check=True,
        capture_output=True,
        text=True,
    )
    url = started.stdout.strip().split("=", 1)[1]
    try:
        yield directory, url.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        subprocess.run([str(script), "stop", str(directory)], check=False)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_postgresql_restart_mid_edition_loses_nothing_and_the_daemon_carries_on(
    own_postgres: tuple[Path, str], env: dict[str, str], sink: Sink, tmp_path: Path
) -> None:
    directory, database_url = own_postgres
    migrate(make_engine(database_url))
    extra, _ = _seed(database_url)
    env = _environment(env, sink, {**extra, "DIGESTD_DATABASE_URL": database_url})
    daemon = _daemon(env, tmp_path, "daemon")
    try:
        _wait_for(lambda: sink.count() >= SUBSCRIBERS // 4, 90, "a quarter of the edition")
        # Fast shutdown: every connection is cut, mid-claim, mid-enqueue, mid-write.
        script = Path(__file__).resolve().parent.parent / "scripts" / "test-postgres.sh"
        subprocess.run([str(script), "restart", str(directory)], check=True)
        at_restart = sink.count()
        _wait_for(
            lambda: _queue(database_url) == {DeliveryStatus.SENT: SUBSCRIBERS},
            120,
            "the daemon to finish the edition after the restart",
        )
        assert daemon.poll() is None, "the daemon died with the database"
    finally:
        code = _stop(daemon)
    assert code == 0
    assert at_restart < SUBSCRIBERS, "the edition finished before the restart; nothing was tested"
    received = sink.recipients()
    duplicates = sum(received.values()) - len(received)
    print(f"\nPostgreSQL restarted after {at_restart} messages; duplicates: {duplicates}")
    assert len(received) == SUBSCRIBERS  # everyone got the edition: nothing lost
    # Outcome writes are retried until shortly before the claims expire: a database back
    # within the lease loses no outcome, so nobody is sent the edition twice.
    assert duplicates == 0
    log = (tmp_path / "daemon.log").read_text()
    # Whatever the restart broke (a write retried, a tick given up) is one line for the
    # operator, not a traceback.
    assert "Traceback" not in log

"""HTTP under abuse, black-box: a real ``digestd run`` with the common 1 024 open-files limit
while one client tries to hold 2 000 half-open connections (``GET / HTTP/1.1`` and no more;
every second it reopens what was dropped). The pages keep answering within 2 s, a 2 000-reader
edition reaches a real SMTP server whole, and the log gets a few lines, not one per
refused connection. With more connections than the process has descriptors, from many
addresses, the daemon lives on and answers again once they go.

The attacker is its own process (its sockets must not slow this one) and takes addresses
other than 127.0.0.1, the well-behaved client's: a client is an address to the server.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import pytest

from digestd.db import make_engine, make_sessions
from tests.conftest import SmtpSink
from tests.helpers import free_port
from tests.seeding import add_articles, hourly_articles, many_readers

pytestmark = pytest.mark.slow  # a 2 000-reader edition under a connection flood: ~30 s

READERS = 2_000
ANSWER_WITHIN = 2.0

ATTACKER = """
import resource, selectors, socket, sys, threading

port, per_address = int(sys.argv[1]), int(sys.argv[2])
addresses = sys.argv[3].split(",")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
selector = selectors.DefaultSelector()

def half_open(address):
    sock = socket.socket()
    sock.settimeout(2)
    try:
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\\r\\n")
    except OSError:
        sock.close()
        return
    selector.register(sock, selectors.EVENT_READ, address)

for address in addresses:
    for _ in range(per_address):
        half_open(address)
print(len(selector.get_map()), flush=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
while not stop.wait(1.0):  # every second, whatever the server dropped is opened again
    for key, _ in selector.select(timeout=0):
        selector.unregister(key.fileobj)
        key.fileobj.close()
        if sys.argv[4] == "reopen":
            half_open(key.data)
"""


def _open_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def _daemon(env: dict[str, str], port: int, log: Path, open_files: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "digestd", "run", "--no-migrate"],
        env={**os.environ, **env, "DIGESTD_LISTEN": f"127.0.0.1:{port}"},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: _open_files(open_files),
    )
    deadline = time.monotonic() + 30
    while b"digestd running" not in log.read_bytes():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return process


def _attack(port: int, addresses: list[str], per_address: int, mode: str) -> subprocess.Popen[str]:
    arguments = [str(port), str(per_address), ",".join(addresses), mode]
    attacker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ATTACKER), *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert attacker.stdout is not None
    attacker.stdout.readline()  # every connection tried once
    return attacker


def _seconds_to_answer(url: str) -> float:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=ANSWER_WITHIN + 3) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read()!r}") from exc
    return time.monotonic() - start


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _seed(database_url: str) -> str:
    """READERS daily readers whose edition fell due (real time: the daemon's clock)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    send_at = now - timedelta(hours=1)
    engine = make_engine(database_url)
    with make_sessions(engine).begin() as session:
        add_articles(session, hourly_articles(now - timedelta(hours=23), now))
        many_readers(session, READERS, now - timedelta(hours=2), dtime(send_at.hour))
    engine.dispose()
    return str(send_at.hour)


def test_a_flood_of_half_open_connections_stops_neither_pages_nor_sending(
    env: dict[str, str],
    smtp_server: SmtpSink,
    tmp_path: Path,
    stopped: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    env = {
        **env,
        "DIGESTD_DAILY_HOUR": _seed(env["DIGESTD_DATABASE_URL"]),
        "DIGESTD_SMTP_URL": smtp_server.url,
        "DIGESTD_TICK_SECONDS": "1",
    }
    log = tmp_path / "daemon.log"
    attacker = None
    # The attack is under way before the daemon's first tick has sent much.
    daemon = _daemon(env, port, log, open_files=1024)
    stopped.append(daemon)
    try:
        attacker = _attack(port, ["127.0.0.2"], 2000, "reopen")
        slowest = 0.0
        rounds = 0
        while len(smtp_server.messages) < READERS or rounds < 10:
            for path in ("/healthz", "/subscribe"):
                slowest = max(slowest, _seconds_to_answer(f"http://127.0.0.1:{port}{path}"))
            rounds += 1
            assert rounds < 600, f"{len(smtp_server.messages)} of {READERS} delivered"
            time.sleep(0.1)
        assert daemon.poll() is None
    finally:
        if attacker is not None:
            attacker.communicate("stop\n", timeout=30)
    assert slowest < ANSWER_WITHIN
    smtp_server.wait_for(READERS, timeout=60)
    assert len({m.recipients[0] for m in smtp_server.messages}) == READERS  # all, once each
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert text.count("HTTP connections:") <= 2  # counted, told once a minute
    assert len(text.splitlines()) < 60, text[-3000:]


def test_more_connections_than_descriptors_then_the_daemon_answers_again(
    env: dict[str, str], tmp_path: Path, stopped: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    daemon = _daemon(env, port, log, open_files=256)
    stopped.append(daemon)
    addresses = [f"127.0.{n // 250}.{2 + n % 250}" for n in range(40)]
    attacker = _attack(port, addresses, 20, "hold")  # 800 for 256 descriptors
    try:
        assert daemon.poll() is None
    finally:
        attacker.communicate("stop\n", timeout=30)
    # What the attacker left in the kernel's queue is accepted and dropped first (and at
    # the descriptor limit asyncio pauses accepting for a second at a time).
    deadline = time.monotonic() + 15
    while True:
        try:
            _seconds_to_answer(f"http://127.0.0.1:{port}/healthz")
            break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    for _ in range(5):  # and then it is back to normal
        assert _seconds_to_answer(f"http://127.0.0.1:{port}/healthz") < ANSWER_WITHIN
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert text.count("cannot accept HTTP connections: Too many open files") <= 1
    assert len(text.splitlines()) < 40, text[-3000:]

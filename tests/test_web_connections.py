"""HTTP connections under abuse, against the daemon's real uvicorn server on loopback: a
request must arrive whole in time, idle keep-alive connections close, one client cannot
hold more than its share, the total stays under the cap, and none of it floods the log.

Clients take distinct loopback addresses (127.0.0.2, ...: all of 127.0.0.0/8 is this
machine) to be distinct clients to the server.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from digestd.config import load_settings
from digestd.models import Subscriber
from digestd.service import Service
from digestd.web.connections import ConnectionGuard, ConnectionLimits, RepeatFilter
from tests.live_server import LiveServer

QUICK = ConnectionLimits(
    head_seconds=0.5, body_seconds=1.0, keep_alive_seconds=1, per_client=4, total=16
)
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: digest.example.com\r\n\r\n"


@pytest.fixture
def service(env: dict[str, str]) -> Service:
    return Service.build(load_settings(env))


@pytest.fixture
def serve(service: Service) -> Iterator[Callable[[ConnectionLimits], LiveServer]]:
    servers: list[LiveServer] = []

    def start(limits: ConnectionLimits) -> LiveServer:
        server = LiveServer(service, limits).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def _connect(server: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", server.port), timeout=5, source_address=(source, 0)
    )


def _seconds_until_closed(sock: socket.socket, limit: float = 5.0) -> float:
    """How long until the server closes or resets the connection (it sends nothing)."""
    start = time.monotonic()
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):  # reset: as good as closed
        assert sock.recv(1) == b"", "the server answered instead of closing"
    return time.monotonic() - start


def _answer(sock: socket.socket, request: bytes = HEALTHZ) -> bytes:
    """Send a request and read the whole answer; its status line, or b"" when refused."""
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        if length:
            while len(body) < int(length.group(1)):
                body += sock.recv(4096)
        else:  # the answer ends with the connection
            while chunk := sock.recv(4096):
                body += chunk
    except (ConnectionResetError, BrokenPipeError):
        return b""
    return head.split(b"\r\n", 1)[0]


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_request_head_that_never_ends_is_closed_at_the_deadline(
    serve: Callable[[ConnectionLimits], LiveServer],
) -> None:
    server = serve(QUICK)
    half_open = _connect(server)
    half_open.sendall(b"GET / HTTP/1.1\r\n")
    assert 0.4 < _seconds_until_closed(half_open) < 2.0
    # Dribbling a header line now and then does not buy more time.
    dribbling = _connect(server)
    start = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for n in range(40):
            dribbling.sendall(b"GET / HTTP/1.1\r\n" if n == 0 else b"X-Slow: 1\r\n")
            time.sleep(0.1)
    assert time.monotonic() - start < 2.0
    silent = _connect(server)  # not even a request line
    assert 0.4 < _seconds_until_closed(silent) < 2.0
    _wait_for(lambda: server.server.guard.total == 0)
    assert server.server.guard.open == {}


def test_a_body_that_never_ends_is_closed_and_changes_nothing(
    serve: Callable[[ConnectionLimits], LiveServer], service: Service
) -> None:
    server = serve(QUICK)
    slow = _connect(server)
    slow.sendall(
        b"POST /subscribe HTTP/1.1\r\nHost: digest.example.com\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        b'{"email": "slow@example.com", "frequency": "daily", '
    )
    assert 0.9 < _seconds_until_closed(slow) < 2.5
    with service.sessions() as session:
        assert session.query(Subscriber).count() == 0
    assert not service.settings.mail_dir.exists() or not any(service.settings.mail_dir.iterdir())
    assert _answer(_connect(server)) == b"HTTP/1.1 200 OK"  # the server is fine


def test_keep_alive_serves_more_requests_then_closes_an_idle_connection(
    serve: Callable[[ConnectionLimits], LiveServer],
) -> None:
    server = serve(ConnectionLimits(head_seconds=5, keep_alive_seconds=1))
    client = _connect(server)
    for n in range(3):  # each request in time resets the clock
        time.sleep(0.6 if n else 0)
        assert _answer(client) == b"HTTP/1.1 200 OK"
    assert 0.8 < _seconds_until_closed(client) < 2.5


TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large"


def test_an_unfinished_request_head_may_not_grow_past_16_kb(
    serve: Callable[[ConnectionLimits], LiveServer],
) -> None:
    server = serve(ConnectionLimits(head_seconds=30))
    growing = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17_000  # no end yet
    started = time.monotonic()
    assert _answer(_connect(server), growing) == TOO_LARGE
    assert time.monotonic() - started < 5  # at once, not at the deadline
    fits = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 15_000 + b"\r\n\r\n"
    assert _answer(_connect(server), fits) == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("size", [20_000, 60_000])
@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_a_whole_request_head_past_16_kb_is_refused_too(
    serve: Callable[[ConnectionLimits], LiveServer], size: int, line_end: bytes
) -> None:
    """h11 bounds only what is still incomplete in its buffer: a head sent whole in one
    write passed up to ~64 KB."""
    server = serve(ConnectionLimits(head_seconds=30))
    head = [b"GET /healthz HTTP/1.1", b"Host: x", b"X-Big: " + b"a" * size, b"", b""]
    assert _answer(_connect(server), line_end.join(head)) == TOO_LARGE


def test_a_body_after_a_small_head_is_not_counted_as_head(
    serve: Callable[[ConnectionLimits], LiveServer],
) -> None:
    """A small head and a 40 KB body in one write: the app reads the body (and refuses the
    40 KB address), the head check does not count it."""
    server = serve(ConnectionLimits(head_seconds=30))
    body = b'{"email": "' + b"a" * 40_000 + b'@example.com"}'
    request = (
        b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    sock = _connect(server)
    sock.sendall(request)
    answer = b""
    while not answer.endswith(b"}"):
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request") and b'"field":"email"' in answer


def test_one_client_cannot_hold_more_than_its_share(
    serve: Callable[[ConnectionLimits], LiveServer],
) -> None:
    server = serve(ConnectionLimits(head_seconds=30, per_client=4, total=16))
    held = [_connect(server, "127.0.0.2") for _ in range(4)]
    for sock in held:
        sock.sendall(b"GET / HTTP/1.1\r\n")
    _wait_for(lambda: server.server.guard.open.get("127.0.0.2") == 4)
    for _ in range(5):  # more from the same address: reset at once, not at the deadline
        extra = _connect(server, "127.0.0.2")
        assert _answer(extra) == b""
    assert _answer(_connect(server, "127.0.0.1")) == b"HTTP/1.1 200 OK"  # everyone else
    for sock in held:
        sock.close()
    _wait_for(lambda: "127.0.0.2" not in server.server.guard.open)
    assert _answer(_connect(server, "127.0.0.2")) == b"HTTP/1.1 200 OK"


def test_the_total_cap_refuses_everyone_until_connections_go(
    serve: Callable[[ConnectionLimits], LiveServer],
) -> None:
    server = serve(ConnectionLimits(head_seconds=30, per_client=4, total=6))
    held = [_connect(server, f"127.0.0.{2 + n % 3}") for n in range(6)]
    for sock in held:
        sock.sendall(b"GET / HTTP/1.1\r\n")
    _wait_for(lambda: server.server.guard.total == 6)
    assert _answer(_connect(server, "127.0.0.9")) == b""
    for sock in held:
        sock.close()
    _wait_for(lambda: server.server.guard.total == 0)
    assert _answer(_connect(server, "127.0.0.9")) == b"HTTP/1.1 200 OK"


def test_a_trusted_proxy_counts_only_towards_the_total(env: dict[str, str]) -> None:
    service = Service.build(load_settings({**env, "DIGESTD_TRUSTED_PROXIES": "127.0.0.5/32"}))
    limits = ConnectionLimits(head_seconds=30, per_client=2, total=16)
    with LiveServer(service, limits) as server:
        through_proxy = [_connect(server, "127.0.0.5") for _ in range(6)]
        for sock in through_proxy:
            assert _answer(sock) == b"HTTP/1.1 200 OK"
        assert server.server.guard.total == 6 and server.server.guard.open == {}
        for sock in through_proxy:
            sock.close()


def test_refusals_and_timeouts_make_one_log_line_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    guard = ConnectionGuard(ConnectionLimits(per_client=2, total=100), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="digestd.web"):
        admitted = [guard.admit("198.51.100.7") for _ in range(2)]
        assert admitted == ["198.51.100.7", "198.51.100.7"]
        for _ in range(5000):
            assert guard.admit("198.51.100.7") is None
            guard.too_slow()
        assert len(caplog.records) == 1
        now[0] += 61
        assert guard.admit("198.51.100.7") is None
    assert len(caplog.records) == 2
    assert "5000 refused" in caplog.records[1].getMessage()
    assert "5000 closed for sending a request too slowly" in caplog.records[1].getMessage()
    for key in admitted:
        assert key is not None
        guard.release(key)
    assert (guard.total, guard.open) == (0, {})
    # IPv6 clients count by /64: a client has a whole /64 to pick addresses from.
    assert guard.admit("2001:db8:1:2::1") == guard.admit("2001:db8:1:2:ffff::9")
    assert guard.admit("2001:db8:1:2::3") is None


def test_an_ipv6_network_rotating_its_64s_cannot_take_every_connection() -> None:
    # One tunnel broker account is a /48: 65 536 /64s, each under its own cap of 64.
    guard = ConnectionGuard(ConnectionLimits())
    limits = guard.limits
    held = [
        guard.admit(f"2001:db8:7:{n // limits.per_client:x}::{n % limits.per_client + 1:x}")
        for n in range(limits.total)
    ]
    # The rest of the world still gets in, another /48 of the same /32 included.
    assert guard.admit("198.51.100.7") == "198.51.100.7"
    assert guard.admit("2001:db8:8::1") == "2001:db8:8::/64"
    assert sum(key is not None for key in held) == 256
    for key in held:
        if key is not None:
            guard.release(key)
    assert guard.admit("2001:db8:7:ffff::1") == "2001:db8:7:ffff::/64"
    assert guard.total == 3 and set(guard.open.values()) == {1}


def test_repeated_log_messages_pass_once_an_interval_with_a_count() -> None:
    now = [0.0]
    repeat = RepeatFilter(60, clock=lambda: now[0])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)

    first = record("socket.accept() out of system resource\nsocket: <fd=6>")
    assert repeat.filter(first)
    assert not any(
        repeat.filter(record("socket.accept() out of system resource\nx")) for _ in range(99)
    )
    assert repeat.filter(record("Invalid HTTP request received."))  # another message
    now[0] = 61
    later = record("socket.accept() out of system resource\nsocket: <fd=6>")
    assert repeat.filter(later)
    assert "[99 more like this in the last 61s]" in later.getMessage()


ACCEPT_AT_THE_LIMIT = """
import asyncio, logging, os, resource, socket, sys
from digestd.web.server import quiet_noisy_loggers

logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
if sys.argv[1] == "quiet":
    quiet_noisy_loggers()

async def main():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    server = await asyncio.get_running_loop().create_server(
        asyncio.Protocol, sock=listener, backlog=2048
    )
    print(listener.getsockname()[1], flush=True)
    hog = []
    try:  # every descriptor taken: accept() fails with EMFILE
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    await asyncio.sleep(2.5)
    # Exit here: closing the server would leave asyncio's own accept retry timer pointing
    # at a closed socket, and its traceback (a CPython quirk) is not digestd's to test.
    logging.shutdown()
    os._exit(0)

resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["quiet", "default"])
def test_accept_errors_at_the_descriptor_limit_log_once(mode: str, tmp_path: Path) -> None:
    """asyncio retries a failed accept() every second and logs each failure, up to the
    backlog a second; digestd lets one line through."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ACCEPT_AT_THE_LIMIT), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
    _, stderr = process.communicate(timeout=30)
    for sock in clients:
        sock.close()
    if mode == "quiet":
        assert stderr.decode().count("cannot accept HTTP connections: Too many open files") == 1
        assert "Traceback" not in stderr.decode()
    else:  # what digestd is spared: many lines a second (the test can tell the two apart)
        assert stderr.decode().count("socket.accept() out of system resource") > 20

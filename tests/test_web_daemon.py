"""``digestd run`` serves HTTP and runs the scheduler in one process; SIGTERM stops both
and the process exits 0. A taken port is one clear configuration error (exit 2); an IPv6
listen address works."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.web_helpers import SIGNUP

WAIT_S = 20.0


def _start(
    env: dict[str, str], port: int, tmp_path: Path, host: str = "127.0.0.1", *options: str
) -> subprocess.Popen[bytes]:
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIGESTD_")},
        **env,
        "DIGESTD_LISTEN": f"{host}:{port}",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "digestd", *options, "run"],
        env=full,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@contextmanager
def _serving(
    env: dict[str, str], port: int, tmp_path: Path, host: str = "127.0.0.1", *options: str
) -> Iterator[tuple[subprocess.Popen[bytes], list[bytes]]]:
    """``digestd run`` once it serves (its socket listens before it logs so: no polling),
    with the lines it logged until then; killed at the end if still running."""
    process = _start(env, port, tmp_path, host, *options)
    try:
        assert process.stderr is not None
        seen: list[bytes] = []
        while not seen or b"digestd running" not in seen[-1]:
            line = process.stderr.readline()
            assert line, b"".join(seen).decode()  # exited before serving
            seen.append(line)
        yield process, seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), bytes(response.read())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["term", "hup"])
def test_run_serves_pages_and_stops_cleanly_on_sigterm(
    env: dict[str, str], tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGHUP (a closed terminal) stops it as SIGTERM does: its default killed it mid-send."""
    port = free_port()
    # --verbose: idle ticks show at DEBUG
    with _serving(env, port, tmp_path, "127.0.0.1", "--verbose") as (process, seen):
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        health = json.loads(body)
        assert status == 200
        assert (health["status"], health["database"], health["scheduler"]) == ("ok", "ok", "ok")
        status, body = _get(f"http://127.0.0.1:{port}/subscribe?categories=ai")
        assert status == 200 and b"All Technology" in body
        process.send_signal(stop)
        _, rest = process.communicate(timeout=WAIT_S)
        stderr = b"".join(seen) + rest
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "digestd running on http://127.0.0.1" in log
    assert re.search(r"\[debug\s*\] tick ", log)  # the scheduler ran in the same process
    assert "stopped" in log
    assert "Traceback" not in log


def test_a_half_sent_request_does_not_hold_up_the_stop(env: dict[str, str], tmp_path: Path) -> None:
    """A client that sent part of a body and went quiet kept the process up for the body's
    timeout (60 s) after SIGTERM, past Docker's 10 s: then it was killed mid-stop."""
    port = free_port()
    with (
        _serving(env, port, tmp_path) as (process, _),
        socket.create_connection(("127.0.0.1", port)) as client,
    ):
        head = "POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
        client.sendall(head.encode())
        _get(f"http://127.0.0.1:{port}/healthz")  # the request above is being read
        process.send_signal(signal.SIGTERM)
        # Bounded by the graceful timeout (5 s), not the body's (60 s).
        _, rest = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, rest.decode()
    assert "stopped" in rest.decode()


def test_run_with_the_port_taken_is_a_clear_config_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _start(env, port, tmp_path)
        _, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 2
    assert "DIGESTD_LISTEN: cannot listen on 127.0.0.1:" in stderr.decode()
    assert "Traceback" not in stderr.decode()


def test_run_listens_on_ipv6_loopback(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as probe:  # a free port on ::1
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in env.items() if k != "DIGESTD_BASE_URL"}  # the default: [::1]
    with _serving(env, port, tmp_path, "[::1]") as (process, seen):
        assert f"digestd running on http://[::1]:{port}/".encode() in seen[-1]
        status, body = _get(f"http://[::1]:{port}/healthz")
        assert status == 200 and json.loads(body)["database"] == "ok"
        signup = urllib.request.Request(
            f"http://[::1]:{port}/subscribe",
            data=json.dumps({**SIGNUP, "email": "six@example.com"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(signup, timeout=5) as answer:
            assert answer.status == 202
        # The confirmation link points at the listen address, brackets and all.
        mail_dir = Path(env["DIGESTD_DATA_DIR"]) / "mail"
        deadline = time.monotonic() + WAIT_S
        while not list(mail_dir.glob("*.eml")):
            assert time.monotonic() < deadline, "no confirmation email"
            time.sleep(0.05)
        caught = next(mail_dir.glob("*.eml")).read_bytes()
        assert f"http://[::1]:{port}/confirm/".encode() in caught
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=WAIT_S)
    assert process.returncode == 0, (b"".join(seen) + rest).decode()

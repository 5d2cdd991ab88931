"""``/dev/mail`` shows every caught confirmation and preferences link, so it is served only
where strangers cannot reach it: a loopback listen address, or an explicit
``DIGESTD_DEV_MAILBOX=true`` that is logged loudly at start-up."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from digestd.config import load_settings
from digestd.service import Service
from digestd.web.app import create_app
from tests.helpers import ROOT, free_port

LOCAL = "http://127.0.0.1:8080"


def _status_of_dev_mail(
    env: dict[str, str],
    peer: str = "127.0.0.1",
    url: str = f"{LOCAL}/dev/mail",
    headers: dict[str, str] | None = None,
) -> int:
    """The status of ``url`` asked by ``peer`` (the TCP client)."""
    service = Service.build(load_settings(env))
    try:
        with TestClient(create_app(service), client=(peer, 40000)) as client:
            return int(client.get(url, headers=headers).status_code)
    finally:
        service.engine.dispose()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"])
def test_served_on_loopback(env: dict[str, str], host: str) -> None:
    assert _status_of_dev_mail({**env, "DIGESTD_LISTEN": f"{host}:8080"}) == 200


@pytest.mark.parametrize("path", ["/dev/mail", "/dev/mail/x.eml", "/dev/mail/x.eml/raw"])
@pytest.mark.parametrize(
    ("peer", "host", "headers"),
    [
        pytest.param("203.0.113.10", "127.0.0.1:8080", {}, id="another-machine"),
        pytest.param(
            "127.0.0.1", "127.0.0.1:8080", {"X-Forwarded-For": "203.0.113.10"}, id="relayed"
        ),
        pytest.param(
            "127.0.0.1", "127.0.0.1:8080", {"Forwarded": "for=203.0.113.10"}, id="forwarded"
        ),
        pytest.param("127.0.0.1", "attacker.example:8080", {}, id="rebound-name"),
        pytest.param("127.0.0.1", "digest.example.com", {}, id="public-name"),
        pytest.param("::1", "", {}, id="no-host"),
    ],
)
def test_served_to_this_machine_only(
    env: dict[str, str], peer: str, host: str, headers: dict[str, str], path: str
) -> None:
    """Refused to the world, to a proxy on this machine relaying it, and to a web page whose
    name was rebound to 127.0.0.1 (its requests carry that name in Host)."""
    asked = {**env, "DIGESTD_LISTEN": "127.0.0.1:8080"}
    url = f"{LOCAL}{path}"
    assert _status_of_dev_mail(asked, peer, url, {**headers, "Host": host}) == 403
    for name in ("localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.9"):
        assert _status_of_dev_mail(asked, "127.0.0.1", f"{LOCAL}/dev/mail", {"Host": name}) == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "[::]", "digest.example.com"])
def test_not_served_beyond_loopback(
    env: dict[str, str], host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="digestd.web")
    assert _status_of_dev_mail({**env, "DIGESTD_LISTEN": f"{host}:8080"}) == 404
    assert "/dev/mail is off" in caplog.text and "WARNING" not in caplog.text


def test_served_beyond_loopback_only_when_asked_and_then_with_a_warning(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="digestd.web")
    asked = {**env, "DIGESTD_LISTEN": "0.0.0.0:8080", "DIGESTD_DEV_MAILBOX": "true"}
    assert _status_of_dev_mail(asked) == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "DIGESTD_DEV_MAILBOX=true" in warnings[0].getMessage()
    # A container's mailbox is read from its host, which is another machine to it.
    assert _status_of_dev_mail(asked, "172.17.0.1", "http://devbox:8080/dev/mail") == 200


def test_never_served_with_smtp_even_when_asked(env: dict[str, str]) -> None:
    url = f"smtp://127.0.0.1:{free_port()}"
    asked = {**env, "DIGESTD_SMTP_URL": url, "DIGESTD_DEV_MAILBOX": "true"}
    assert _status_of_dev_mail(asked) == 404


def test_the_running_daemon_warns_at_start_up(env: dict[str, str], tmp_path: Path) -> None:
    """``digestd run`` on all addresses with the mailbox asked for: the warning is on stderr
    before the first request, and the page answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "digestd", "run"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DIGESTD_")},
            **env,
            "PYTHONPATH": str(ROOT),
            "DIGESTD_LISTEN": f"0.0.0.0:{port}",
            "DIGESTD_DEV_MAILBOX": "true",
        },
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    seen: list[bytes] = []
    try:
        assert process.stderr is not None
        while not seen or b"digestd running" not in seen[-1]:
            line = process.stderr.readline()
            assert line, b"".join(seen).decode()  # exited before serving
            seen.append(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dev/mail", timeout=5) as answer:
            assert answer.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        seen.append(process.communicate(timeout=30)[1])
    output = b"".join(seen).decode()
    warning = [line for line in output.splitlines() if "DIGESTD_DEV_MAILBOX=true" in line]
    assert len(warning) == 1 and "[warning" in warning[0], output
    assert process.returncode == 0 and "Traceback" not in output


def test_caught_mail_is_not_reachable_from_the_docker_image_defaults(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The image listens on 0.0.0.0 (deploy/Dockerfile) and sets no DIGESTD_DEV_MAILBOX."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "DIGESTD_LISTEN=0.0.0.0:8080" in dockerfile
    assert "DEV_MAILBOX" not in dockerfile
    assert "DEV_MAILBOX" not in (ROOT / "deploy" / "docker-compose.yml").read_text()
    image = {**env, "DIGESTD_LISTEN": "0.0.0.0:8080"}
    image.pop("DIGESTD_SMTP_URL", None)
    assert _status_of_dev_mail(image) == 404

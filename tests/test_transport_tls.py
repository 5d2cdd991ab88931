"""STARTTLS and SMTPS from ``DIGESTD_SMTP_URL`` against aiosmtpd with a real certificate:
the relay's certificate is verified (a private CA via ``?cafile=``), AUTH goes over TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession

from digestd.config import parse_smtp_url
from digestd.delivery.transport import SmtpPool
from digestd.errors import ConfigError, TemporaryDeliveryError
from tests.helpers import free_port

MESSAGE = b"From: a@news.example.com\r\nTo: b@example.com\r\nSubject: tls\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (it is its own CA)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "relay.pem", directory / "relay.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class _Recorder:
    def __init__(self) -> None:
        # (data, over TLS, logged in)
        self.received: list[tuple[bytes, bool, bool | None]] = []

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        # Set while a connection is served; the content is read by the time DATA is handled.
        assert server.transport is not None and envelope.original_content is not None
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append((envelope.original_content, over_tls, session.authenticated))
        return "250 OK"


def _authenticate(
    server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"digest", b"pw")
    return AuthResult(success=ok, auth_data="digest" if ok else None, handled=False)


@pytest.fixture
def tls_server(
    certificate: tuple[Path, Path], request: pytest.FixtureRequest
) -> Iterator[tuple[int, _Recorder]]:
    mode = request.param
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    recorder = _Recorder()
    port = free_port()
    options: dict[str, Any] = {"decode_data": False}
    if mode == "starttls":
        options |= {
            "tls_context": context,
            "require_starttls": True,
            "auth_required": True,
            "authenticator": _authenticate,
        }
    else:
        options |= {"ssl_context": context}
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
    controller.start()
    yield port, recorder
    controller.stop()


def _send(url: str) -> str:
    async def go() -> str:
        pool = SmtpPool(parse_smtp_url(url), size=1)
        try:
            return await pool.send("bounces+1.x@news.example.com", "b@example.com", MESSAGE)
        finally:
            await pool.close()

    return asyncio.run(go())


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_starttls_with_auth_delivers_over_tls(
    tls_server: tuple[int, _Recorder], certificate: tuple[Path, Path]
) -> None:
    port, recorder = tls_server
    _send(f"smtp://digest:pw@localhost:{port}?starttls=true&cafile={certificate[0]}")
    ((data, over_tls, login),) = recorder.received
    assert over_tls and login is True
    assert data.endswith(b"hello\r\n")


@pytest.mark.parametrize("tls_server", ["smtps"], indirect=True)
def test_smtps_delivers_over_implicit_tls(
    tls_server: tuple[int, _Recorder], certificate: tuple[Path, Path]
) -> None:
    port, recorder = tls_server
    _send(f"smtps://localhost:{port}?cafile={certificate[0]}")
    ((_, over_tls, _),) = recorder.received
    assert over_tls


@pytest.mark.parametrize("tls_server", ["smtps"], indirect=True)
def test_an_untrusted_certificate_is_refused_not_ignored(tls_server: tuple[int, _Recorder]) -> None:
    port, recorder = tls_server
    with pytest.raises(TemporaryDeliveryError, match="certificate"):
        _send(f"smtps://localhost:{port}")  # the system CAs do not know this relay
    assert recorder.received == []


def test_cafile_is_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cafile needs smtps"):
        parse_smtp_url(f"smtp://relay.example.com?cafile={tmp_path}")
    with pytest.raises(ConfigError, match="not a readable file"):
        parse_smtp_url("smtps://relay.example.com?cafile=/nonexistent/ca.pem")

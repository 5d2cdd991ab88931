"""STARTTLS and SMTPS from ``DIGESTD_SMTP_URL`` with a real certificate, against aiosmtpd
and the scripted server of :mod:`tests.faultsmtp`: the relay's certificate is verified (a
private CA via ``?cafile=``), STARTTLS is used whenever offered, AUTH goes over TLS only,
and a TLS session carries pipelined transactions like a plain one."""

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
from tests.faultsmtp import Script, scripted
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
@pytest.mark.parametrize("option", ["starttls=true&", ""], ids=["required", "when offered"])
def test_starttls_with_auth_delivers_over_tls(
    tls_server: tuple[int, _Recorder], certificate: tuple[Path, Path], option: str
) -> None:
    port, recorder = tls_server
    _send(f"smtp://digest:pw@localhost:{port}?{option}cafile={certificate[0]}")
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
    with pytest.raises(ConfigError, match="cafile needs TLS"):
        parse_smtp_url(f"smtp://relay.example.com?starttls=false&cafile={tmp_path}")
    with pytest.raises(ConfigError, match="not a readable file"):
        parse_smtp_url(f"smtp://relay.example.com?cafile={tmp_path}")  # a directory
    with pytest.raises(ConfigError, match="not a readable file"):
        parse_smtp_url("smtps://relay.example.com?cafile=/nonexistent/ca.pem")


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


def _send_scripted(
    script: Script, url: str, messages: int = 1, tls: ssl.SSLContext | None = None
) -> list[str]:
    """``messages`` sends through one pool connection to the scripted server; ``url`` has
    ``{port}`` in it."""

    async def go() -> list[str]:
        async with scripted(script, tls) as port:
            pool = SmtpPool(parse_smtp_url(url.format(port=port)), size=1)
            try:
                return [
                    await pool.send("bounces+1.x@news.example.com", "b@example.com", MESSAGE)
                    for _ in range(messages)
                ]
            finally:
                await pool.close()

    return asyncio.run(go())


def _verbs(script: Script, over_tls: bool) -> list[bytes]:
    return [line.split(b" ")[0].split(b":")[0] for line, tls in script.commands if tls is over_tls]


@pytest.mark.parametrize("mode", ["smtps", "starttls"])
def test_a_tls_session_pipelines_several_messages_on_one_connection(
    certificate: tuple[Path, Path], mode: str
) -> None:
    context = _server_context(certificate)
    script = Script(starttls=context if mode == "starttls" else None)
    scheme = (
        "smtps://localhost:{port}?" if mode == "smtps" else "smtp://localhost:{port}?starttls=true&"
    )
    replies = _send_scripted(
        script, scheme + f"cafile={certificate[0]}", 3, context if mode == "smtps" else None
    )
    assert replies == ["2.0.0 Ok: queued as 4XyZ"] * 3
    assert script.connections == 1
    assert len(script.contents) == 3
    # Each MAIL was answered with RCPT and DATA already in: pipelined over TLS.
    mails = [seen for seen in script.seen if seen.startswith(b"MAIL")]
    assert len(mails) == 3 and all(seen.endswith(b"\r\nDATA\r\n") for seen in mails)
    assert _verbs(script, over_tls=False) == ([b"STARTTLS"] if mode == "starttls" else [])
    assert _verbs(script, over_tls=True) == [b"MAIL", b"RCPT", b"DATA"] * 3 + [b"QUIT"]


def test_plain_smtp_upgrades_when_starttls_is_offered_and_logs_in_over_tls(
    certificate: tuple[Path, Path],
) -> None:
    script = Script(starttls=_server_context(certificate), auth=True)
    _send_scripted(script, f"smtp://digest:pw@localhost:{{port}}?cafile={certificate[0]}")
    assert _verbs(script, over_tls=False) == [b"STARTTLS"]
    assert _verbs(script, over_tls=True)[:2] == [b"AUTH", b"MAIL"]
    assert len(script.contents) == 1


def test_opportunistic_starttls_still_verifies_the_certificate(
    certificate: tuple[Path, Path],
) -> None:
    script = Script(starttls=_server_context(certificate), auth=True)
    with pytest.raises(TemporaryDeliveryError, match="certificate"):
        _send_scripted(script, "smtp://digest:pw@localhost:{port}")  # system CAs only
    assert _verbs(script, over_tls=False) == [b"STARTTLS"]  # no fallback to clear text
    assert script.contents == []


def test_the_password_is_never_sent_in_clear_text() -> None:
    script = Script(auth=True)  # no STARTTLS offered
    with pytest.raises(TemporaryDeliveryError, match="never sent in clear text"):
        _send_scripted(script, "smtp://digest:pw@localhost:{port}")
    assert script.commands == []  # no AUTH, no MAIL: the session was given up
    assert script.contents == []


def test_insecure_auth_allows_the_password_in_clear_text() -> None:
    script = Script(auth=True)
    _send_scripted(script, "smtp://digest:pw@localhost:{port}?insecure_auth=true")
    assert _verbs(script, over_tls=False)[:2] == [b"AUTH", b"MAIL"]
    assert len(script.contents) == 1


def test_starttls_true_requires_it_and_starttls_false_forbids_it(
    certificate: tuple[Path, Path],
) -> None:
    plain = Script()
    with pytest.raises(TemporaryDeliveryError, match="STARTTLS"):
        _send_scripted(plain, "smtp://localhost:{port}?starttls=true")
    assert plain.commands == [] and plain.contents == []

    offered = Script(starttls=_server_context(certificate))
    _send_scripted(offered, "smtp://localhost:{port}?starttls=false")
    assert _verbs(offered, over_tls=False)[:3] == [b"MAIL", b"RCPT", b"DATA"]
    assert _verbs(offered, over_tls=True) == []

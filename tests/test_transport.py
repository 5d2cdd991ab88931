"""The SMTP pool against a real server that requires AUTH (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession

from digestd.config import parse_smtp_url
from digestd.delivery.transport import SmtpPool
from digestd.errors import PermanentDeliveryError, TemporaryDeliveryError
from tests.faultsmtp import FaultySink
from tests.helpers import free_port

# Plain-text AUTH (?insecure_auth=true) is fine on loopback; aiosmtpd warns all the same.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

MESSAGE = b"From: a@news.example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n.dot line\r\n"


def _authenticate(
    server: SMTP, session: SmtpSession, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"digest", b"s3cr3t")
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535


@pytest.fixture
def auth_server() -> Iterator[FaultySink]:
    sink = FaultySink(port=free_port())
    controller = Controller(
        sink,
        hostname=sink.host,
        port=sink.port,
        decode_data=False,
        auth_require_tls=False,  # loopback test only; production relays use STARTTLS/SMTPS
        auth_required=True,
        authenticator=_authenticate,
    )
    controller.start()
    yield sink
    controller.stop()


def _send(url: str, recipient: str = "b@example.com") -> str:
    async def go() -> str:
        pool = SmtpPool(parse_smtp_url(url), size=1)
        try:
            return await pool.send("bounces+1.x@news.example.com", recipient, MESSAGE)
        finally:
            await pool.close()

    return asyncio.run(go())


def test_credentials_from_the_url_log_in_and_the_message_arrives_intact(
    auth_server: FaultySink,
) -> None:
    reply = _send(f"smtp://digest:s3cr3t@127.0.0.1:{auth_server.port}?insecure_auth=true")
    assert reply.startswith("2.0.0 Ok")
    ((envelope_from, recipient, data),) = auth_server.messages
    assert (envelope_from, recipient) == ("bounces+1.x@news.example.com", "b@example.com")
    assert data == MESSAGE  # dot-stuffed on the wire, unstuffed by the server


def test_without_insecure_auth_credentials_never_go_to_a_server_without_tls(
    auth_server: FaultySink,
) -> None:
    with pytest.raises(TemporaryDeliveryError, match="never sent in clear text"):
        _send(f"smtp://digest:s3cr3t@127.0.0.1:{auth_server.port}")
    assert auth_server.messages == []


def test_wrong_credentials_are_a_temporary_failure_never_the_readers_fault(
    auth_server: FaultySink,
) -> None:
    # A 535 is about us: failing (and suppressing) every reader for it would wipe the list.
    with pytest.raises(TemporaryDeliveryError, match="refused the session: 535"):
        _send(f"smtp://digest:wrong@127.0.0.1:{auth_server.port}?insecure_auth=true")
    assert auth_server.messages == []


def test_an_address_that_could_inject_smtp_commands_is_refused_before_sending(
    auth_server: FaultySink,
) -> None:
    url = f"smtp://digest:s3cr3t@127.0.0.1:{auth_server.port}?insecure_auth=true"
    with pytest.raises(PermanentDeliveryError, match="cannot go on an SMTP command line"):
        _send(url, "b@example.com>\r\nRCPT TO:<evil@example.net")
    assert auth_server.messages == []


def test_nobody_listening_is_a_temporary_failure() -> None:
    with pytest.raises(TemporaryDeliveryError, match="cannot connect"):
        _send(f"smtp://127.0.0.1:{free_port()}?timeout=5")


def test_dot_lines_survive_and_bare_line_feeds_take_aiosmtplibs_own_path(
    auth_server: FaultySink,
) -> None:
    url = f"smtp://digest:s3cr3t@127.0.0.1:{auth_server.port}?insecure_auth=true"
    wire_ready = b"Subject: a\r\n\r\n.\r\n..two\r\nend"  # a lone "." line would end DATA early
    _send(url)  # one message first, so the two below are the 2nd and 3rd received
    for message in (wire_ready, b"Subject: b\n\n.\n..two\nend\n"):

        async def go(message: bytes = message) -> None:
            pool = SmtpPool(parse_smtp_url(url), size=1)
            try:
                await pool.send("bounces+1.x@news.example.com", "b@example.com", message)
            finally:
                await pool.close()

        asyncio.run(go())
    received = [data for _, _, data in auth_server.messages[1:]]
    assert received == [
        b"Subject: a\r\n\r\n.\r\n..two\r\nend\r\n",
        b"Subject: b\r\n\r\n.\r\n..two\r\nend\r\n",
    ]

"""Where finished messages go: an SMTP server (aiosmtplib) or the development mail catcher.

The sender only knows this narrow interface: ``send(envelope_from, recipient, bytes)``
returns the server's reply or raises a :class:`DeliveryError` telling whether to retry,
and ``concurrency`` says how many sends may usefully run at once.

Classification (RFC 5321 §4.2.1): 4xx, timeouts and dropped connections are temporary.
A 5xx to RCPT, DATA or the end of DATA is permanent for this message, tagged with the
command it answered; whether it says anything about the address is the bounce policy's
call (:mod:`digestd.readers.bounce_policy`). A 5xx to MAIL FROM, AUTH or the greeting is
about *us* (a relay that refuses our sender, bad credentials): blaming every recipient for
it would fail the whole list, so it is temporary and counts towards the sender's
failure-burst pause.

Sessions use TLS whenever they can: ``smtps://``, or STARTTLS when the server offers it
(``?starttls=true`` requires it, ``?starttls=false`` forbids it), certificates verified.
The password is never sent without TLS unless the URL says ``?insecure_auth=true``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import aiosmtplib

from digestd.config import SmtpSettings
from digestd.delivery.smtp_session import Reply, SessionLost, SmtpSession
from digestd.errors import PermanentDeliveryError, TemporaryDeliveryError
from digestd.mail.template import WireBytes


class Transport(Protocol):
    concurrency: int
    name: str  # who answers: the bounce ledger's reporting MTA for a refusal

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str: ...

    async def close(self) -> None: ...


class MailCatcher:
    """Development stand-in for an SMTP relay: each message becomes ``var/mail/*.eml``.

    A ``Return-Path`` and ``Delivered-To`` line are prepended, as a real MTA would, so the
    envelope can be seen in the file.
    """

    concurrency = 1  # writes files; more would not be faster
    name = "mail catcher"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._counter = itertools.count()

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{os.getpid()}-{next(self._counter):06d}.eml"
        envelope = f"Return-Path: <{envelope_from}>\r\nDelivered-To: {recipient}\r\n".encode()
        tmp = self.directory / (name + ".tmp")
        tmp.write_bytes(envelope + message)
        tmp.rename(self.directory / name)  # readers never see half a message
        return f"250 stored as {name}"

    async def close(self) -> None:
        return None


class SmtpPool:
    """Persistent SMTP sessions, opened lazily (by aiosmtplib, then pipelined by
    :mod:`digestd.delivery.smtp_session`) and re-opened after a drop.

    Each connection is used by one coroutine at a time; ``size`` bounds concurrency. A
    connection is replaced after ``max_per_connection`` messages (relays often cap a
    session; a fresh one also spreads load behind a load balancer).
    """

    def __init__(self, settings: SmtpSettings, size: int = 4, max_per_connection: int = 1000):
        self.settings = settings
        self.concurrency = size
        self.name = f"{settings.host}:{settings.port}"
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(_Connection(settings, max_per_connection))

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        connection = await self._idle.get()
        try:
            return await connection.send(envelope_from, recipient, message)
        finally:
            self._idle.put_nowait(connection)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()


class _Connection:
    def __init__(self, settings: SmtpSettings, max_messages: int) -> None:
        self.settings = settings
        self.max_messages = max_messages
        self.session: SmtpSession | None = None
        self.sent = 0

    async def _connect(self) -> SmtpSession:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.use_tls,
            start_tls=s.start_tls,  # None: upgrade when the server offers STARTTLS
            cert_bundle=s.cafile,  # certificates are always verified; this adds a private CA
            local_hostname=s.ehlo,
            timeout=s.timeout,
        )
        try:
            # One bound for the whole opening, so a lease can budget for it (config.py).
            async with asyncio.timeout(s.timeout):
                await client.connect()
                if client.is_ehlo_or_helo_needed:
                    await client.ehlo()
                if s.username and s.password:
                    _refuse_clear_text_auth(client, s)
                    await client.login(s.username, s.password)
            session = SmtpSession(client, s.timeout, s.data_timeout, pipelining=s.pipelining)
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"{s.host}:{s.port} refused the session: {exc.code} {exc.message}", exc.code
            ) from exc
        except (aiosmtplib.SMTPException, SessionLost, OSError, TimeoutError) as exc:
            client.close()
            reason = str(exc) or "timed out opening the session"
            raise TemporaryDeliveryError(f"cannot connect to {s.host}:{s.port}: {reason}") from exc
        except BaseException:  # our own refusal, or cancelled: never leave the socket open
            client.close()
            raise
        self.sent = 0
        return session

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        sender, to = _envelope(envelope_from), _envelope(recipient)
        content = _wire_content(message)
        if self.session is None or not self.session.is_usable or self.sent >= self.max_messages:
            await self.close()
            self.session = await self._connect()
        try:
            done = await self.session.send(sender, to, content)
        except SessionLost as exc:
            self.session.abort()  # dropped or confused: the next message reconnects
            self.session = None
            refused = next((r for r in exc.replies if r.code >= 400), None)
            if refused is not None:  # "421 closing" before the drop says more than the drop
                raise TemporaryDeliveryError(f"connection closed: {refused}", refused.code) from exc
            raise TemporaryDeliveryError(f"connection problem: {exc}") from exc
        self.sent += 1
        if done.mail.code != 250:
            # About us, not the reader (see the module docstring): never a hard bounce.
            raise TemporaryDeliveryError(f"MAIL FROM refused: {done.mail}", done.mail.code)
        for reply, stage in ((done.rcpt, "rcpt"), (done.data, "data"), (done.final, "end-of-data")):
            if reply is not None and reply.code >= 400:
                raise _classify(reply, stage)
        assert done.final is not None
        return done.final.text

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None and session.is_usable:
            await session.quit()
        elif session is not None:
            session.abort()


def _refuse_clear_text_auth(client: aiosmtplib.SMTP, settings: SmtpSettings) -> None:
    """Credentials go only over TLS, unless the URL says ``?insecure_auth=true``. About our
    configuration, not a reader: temporary, and a burst of it pauses sending."""
    if settings.insecure_auth or client.get_transport_info("sslcontext") is not None:
        return
    raise TemporaryDeliveryError(
        f"{settings.host}:{settings.port} offers no STARTTLS: the password is never sent in "
        "clear text (use smtps://, a relay with STARTTLS, or ?insecure_auth=true)"
    )


# What may go between < and > on a MAIL/RCPT line: no whitespace (CR/LF would inject a
# command), no brackets or quotes. digestd's addresses are validated ASCII on the way in.
_ENVELOPE_ADDRESS = re.compile(r'[^\s<>"]+@[^\s<>"@]+')


def _envelope(address: str) -> bytes:
    if not address.isascii() or not _ENVELOPE_ADDRESS.fullmatch(address):
        raise PermanentDeliveryError(
            f"553 address {address[:80]!r} cannot go on an SMTP command line", 553, "rcpt"
        )
    return address.encode()


def _wire_content(message: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, ending in CRLF, dot-stuffed.

    Messages digestd composes are already in that form (:class:`WireBytes`) and go as
    they are; anything else is normalised as aiosmtplib would.
    """
    if isinstance(message, WireBytes):
        return message
    message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")


_LINE_END = re.compile(rb"\r\n|\n|\r")


def _classify(reply: Reply, stage: str) -> TemporaryDeliveryError | PermanentDeliveryError:
    if 400 <= reply.code < 500:
        return TemporaryDeliveryError(str(reply), reply.code, stage)
    return PermanentDeliveryError(str(reply), reply.code, stage)


def make_transport(
    smtp: SmtpSettings | None, mail_dir: Path, pool_size: int = 4, max_per_connection: int = 1000
) -> Transport:
    if smtp is None:
        return MailCatcher(mail_dir)
    return SmtpPool(smtp, size=pool_size, max_per_connection=max_per_connection)

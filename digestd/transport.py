"""Where finished messages go: an SMTP server (aiosmtplib) or the development mail catcher.

The sender only knows this narrow interface: ``send(envelope_from, recipient, bytes)``
returns the server's reply or raises a :class:`DeliveryError` telling whether to retry,
and ``concurrency`` says how many sends may usefully run at once.

Classification (RFC 5321 §4.2.1): 4xx, timeouts and dropped connections are temporary.
A 5xx to RCPT or to the end of DATA is about this recipient: a permanent failure that
suppresses the address. A 5xx to MAIL FROM, AUTH or the greeting is about *us* (a relay
that refuses our sender, bad credentials): blaming every recipient for it would suppress
the whole list, so it is temporary and counts towards the sender's failure-burst pause.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import Default, SMTPStatus

from digestd.config import SmtpSettings
from digestd.errors import PermanentDeliveryError, TemporaryDeliveryError


class Transport(Protocol):
    concurrency: int

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str: ...

    async def close(self) -> None: ...


class MailCatcher:
    """Development stand-in for an SMTP relay: each message becomes ``var/mail/*.eml``.

    A ``Return-Path`` and ``Delivered-To`` line are prepended, as a real MTA would, so the
    envelope can be seen in the file.
    """

    concurrency = 1  # writes files; more would not be faster

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
    """Persistent aiosmtplib connections, opened lazily and re-opened after a drop.

    Each connection is used by one coroutine at a time; ``size`` bounds concurrency. A
    connection is replaced after ``max_per_connection`` messages (relays often cap a
    session; a fresh one also spreads load behind a load balancer).
    """

    def __init__(self, settings: SmtpSettings, size: int = 4, max_per_connection: int = 1000):
        self.settings = settings
        self.concurrency = size
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
        self.client: _DigestClient | None = None
        self.sent = 0

    async def _connect(self) -> _DigestClient:
        s = self.settings
        client = _DigestClient(
            hostname=s.host,
            port=s.port,
            use_tls=s.use_tls,
            start_tls=s.start_tls,
            cert_bundle=s.cafile,  # certificates are always verified; this adds a private CA
            timeout=s.timeout,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            if s.username and s.password:
                await client.login(s.username, s.password)
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"{s.host}:{s.port} refused the session: {exc.code} {exc.message}", exc.code
            ) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TemporaryDeliveryError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        self.sent = 0
        return client

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        if self.client is None or not self.client.is_connected or self.sent >= self.max_messages:
            await self.close()
            self.client = await self._connect()
        try:
            reply = await _transaction(self.client, envelope_from, recipient, message)
        except aiosmtplib.SMTPSenderRefused as exc:
            await self._reset()
            raise TemporaryDeliveryError(
                f"MAIL FROM refused: {exc.code} {exc.message}", exc.code
            ) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            await self._reset()
            if refusal is None:
                raise TemporaryDeliveryError(str(exc)) from exc
            raise _classify(refusal) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise _classify(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()  # dropped or confused: the next message reconnects
            raise TemporaryDeliveryError(f"connection problem: {exc}") from exc
        self.sent += 1
        return reply

    async def _reset(self) -> None:
        """After a refusal the transaction must be reset before the next MAIL FROM."""
        if self.client is None:
            return
        try:
            await self.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            await self.close()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


class _DigestClient(aiosmtplib.SMTP):
    """aiosmtplib's client, with DATA for bytes that are already wire-ready.

    ``SMTP.data()`` rewrites every line end of the message with a regex before sending
    (for callers who pass LF text): on a 20 KB digest that single pass cost more than the
    rest of the SMTP conversation (measured into smtp-sink, 8 connections: 2 500 msg/s
    with it, 6 700 without). Digests are built with CRLF line ends throughout, so when a
    message has no bare CR or LF this sends it as-is, dot-stuffed with ``bytes.replace``.
    Anything else takes aiosmtplib's own path. The conversation is aiosmtplib's
    ``execute_data_command`` step for step (it reaches into the protocol's command lock
    and reply flag, so aiosmtplib is pinned below its next major version).
    """

    async def data(self, message: str | bytes, /, *, timeout: Any = Default.token) -> SMTPResponse:
        protocol = self.protocol
        if (
            isinstance(message, str)
            or protocol is None
            or protocol._command_lock is None
            or not _wire_ready(message)
        ):
            return await super().data(message, timeout=timeout)
        await self._ehlo_or_helo_if_needed()
        wait = self.timeout if timeout is Default.token else timeout
        body = message if message.endswith(b"\r\n") else message + b"\r\n"
        body = (b"." + body if body.startswith(b".") else body).replace(b"\r\n.", b"\r\n..")
        try:
            async with protocol._command_lock:
                protocol._response_pending = True
                protocol.write(b"DATA\r\n")
                start = await protocol.read_response(timeout=wait)
                if start.code != SMTPStatus.start_input:
                    raise aiosmtplib.SMTPDataError(start.code, start.message)
                protocol._response_pending = True
                protocol.write(body + b".\r\n")
                response = await protocol.read_response(timeout=wait)
                if response.code != SMTPStatus.completed:
                    raise aiosmtplib.SMTPDataError(response.code, response.message)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        return response


def _wire_ready(message: bytes) -> bool:
    """Only CRLF line ends: every LF has its CR and every CR its LF."""
    crlf = message.count(b"\r\n")
    return message.count(b"\n") == crlf and message.count(b"\r") == crlf


# What may go between < and > on a MAIL/RCPT line: no whitespace (CR/LF would inject a
# command), no brackets or quotes. digestd's addresses are validated ASCII on the way in.
_ENVELOPE_ADDRESS = re.compile(r'[^\s<>"]+@[^\s<>"@]+')


async def _transaction(
    client: aiosmtplib.SMTP, envelope_from: str, recipient: str, message: bytes
) -> str:
    """One message to one recipient: MAIL, RCPT, DATA; the server's final reply.

    This is ``client.sendmail(envelope_from, [recipient], message)`` without the work it
    repeats on every call for a general caller: it parses both addresses four times with
    ``email.utils.parseaddr`` (17 % of the sender's profiled time) and rewrites the line
    ends of the whole message for the SIZE option. Addresses are checked once here; the
    errors raised are sendmail's own, so the classification below is unchanged.
    """
    for address in (envelope_from, recipient):
        if not address.isascii() or not _ENVELOPE_ADDRESS.fullmatch(address):
            raise aiosmtplib.SMTPRecipientRefused(
                553, f"address {address[:80]!r} cannot go on an SMTP command line", address
            )
    options = [b"SIZE=%d" % len(message)] if client.supports_extension("size") else []
    mail = await client.execute_command(b"MAIL", b"FROM:<%s>" % envelope_from.encode(), *options)
    if mail.code != 250:
        raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, envelope_from)
    rcpt = await client.execute_command(b"RCPT", b"TO:<%s>" % recipient.encode())
    if rcpt.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, recipient)
    response = await client.data(message)
    return response.message


def _classify(
    exc: aiosmtplib.SMTPResponseException,
) -> TemporaryDeliveryError | PermanentDeliveryError:
    text = f"{exc.code} {exc.message}"
    if 400 <= exc.code < 500:
        return TemporaryDeliveryError(text, exc.code)
    return PermanentDeliveryError(text, exc.code)


def make_transport(
    smtp: SmtpSettings | None, mail_dir: Path, pool_size: int = 4, max_per_connection: int = 1000
) -> Transport:
    if smtp is None:
        return MailCatcher(mail_dir)
    return SmtpPool(smtp, size=pool_size, max_per_connection=max_per_connection)

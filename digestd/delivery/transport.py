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
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from digestd.config import SmtpSettings
from digestd.delivery.catcher import MailCatcher
from digestd.delivery.smtp_session import Reply, SessionLost, SmtpSession, accepted
from digestd.errors import (
    DeliveryError,
    NotSentError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from digestd.mail.wire import WireBytes


class Transport(Protocol):
    concurrency: int
    name: str  # who answers: the bounce ledger's reporting MTA for a refusal

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str: ...

    async def close(self) -> None: ...


@dataclass(eq=False)
class _Request:
    """One message waiting for a connection; ``done`` hears how it went."""

    sender: bytes
    recipient: bytes
    content: bytes
    done: asyncio.Future[str]

    def answer(self, reply: str | DeliveryError) -> None:
        if not self.done.done():  # its sender may have given up waiting
            if isinstance(reply, DeliveryError):
                self.done.set_exception(reply)
            else:
                self.done.set_result(reply)


class SmtpPool:
    """``size`` persistent SMTP sessions, each run by a task of its own that takes messages
    from one queue. Sessions are opened lazily (by aiosmtplib, then pipelined by
    :mod:`digestd.delivery.smtp_session`) and re-opened after a drop or after
    ``max_per_connection`` messages (relays often cap a session; a fresh one also spreads
    load behind a load balancer).

    With PIPELINING, a message found waiting when a session sends the content before it
    has its ``MAIL``, ``RCPT`` and ``DATA`` ride in the same write (RFC 2920): one write
    and one wake-up per message instead of two. ``concurrency`` leaves room for that: two
    messages per connection may be handed over at once.
    """

    def __init__(self, settings: SmtpSettings, size: int = 4, max_per_connection: int = 1000):
        self.settings = settings
        self.concurrency = 2 * size
        self.name = f"{settings.host}:{settings.port}"
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._connections = [_Connection(settings, max_per_connection) for _ in range(size)]
        self._workers: dict[int, asyncio.Task[None]] = {}  # by connection, while it works
        self._active = size  # connections in use: the first _active of _connections
        self._busy: set[int] = set()  # connections carrying a message

    @property
    def size(self) -> int:
        return len(self._connections)

    async def limit(self, active: int) -> None:
        """Carry on with ``active`` of the pool's connections (1 to its size), and return
        once those beyond are closed: an idle one at once, a busy one once its messages in
        hand are answered. The tick's helper process, sending beside this one, has the
        rest: the relay never sees more sessions than the pool's size."""
        before, self._active = self._active, max(1, min(active, len(self._connections)))
        self.concurrency = 2 * self._active
        if not self._workers:
            return  # none started yet: they start within the limit
        if self._active > before:
            self._start(range(before, self._active))
            return
        surplus = [i for i in range(self._active, before) if i in self._workers]
        for i in surplus:
            if i not in self._busy:
                self._workers[i].cancel()  # waiting for a message: none is lost
        await asyncio.gather(*(self._workers.pop(i) for i in surplus), return_exceptions=True)
        for i in surplus:
            await self._connections[i].close()

    def _start(self, indexes: range) -> None:
        for i in indexes:
            self._workers[i] = asyncio.create_task(
                self._work(i, self._connections[i]), name="smtp connection"
            )

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> str:
        request = _Request(
            _envelope(envelope_from),
            _envelope(recipient),
            _wire_content(message),
            asyncio.get_running_loop().create_future(),
        )
        if not self._workers:
            self._start(range(self._active))
        self._queue.put_nowait(request)
        return await request.done

    async def _work(self, index: int, connection: _Connection) -> None:
        def waiting() -> _Request | None:
            return self._waiting() if index < self._active else None

        while index < self._active:  # beyond the limit: limit() closes the connection
            request = await self._queue.get()
            self._busy.add(index)
            try:
                if not request.done.cancelled():
                    await connection.carry(request, waiting)
            finally:
                self._busy.discard(index)

    def _waiting(self) -> _Request | None:
        """A message waiting for a connection, if there is one right now."""
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.done.cancelled():
                return request
        return None

    async def close(self) -> None:
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().answer(NotSentError("the sender is stopping"))
        for connection in self._connections:
            await connection.close()


class _Connection:
    def __init__(self, settings: SmtpSettings, max_messages: int) -> None:
        self.settings = settings
        self.max_messages = max_messages
        self.session: SmtpSession | None = None
        self.sent = 0
        self._carrying: list[_Request] = []
        self._chained = False  # the next one's commands went out after the content before it

    async def carry(self, first: _Request, waiting: Callable[[], _Request | None]) -> None:
        """Send ``first`` and, chained behind it, each message already ``waiting``."""
        self._carrying = [first]  # the message in hand, and the one chained behind it
        self._chained = False
        try:
            while self._carrying:
                if not self._chained:
                    await self._ready()
                await self._transaction(self._carrying[0], waiting)
                self._carrying.pop(0)
        except TemporaryDeliveryError as exc:  # the session could not be opened
            self._answer_all(exc)
        except SessionLost as exc:
            self._lost()
            self._answer_all(_session_lost(exc))
        except asyncio.CancelledError:
            self._lost()  # replies still to come would be read as the next message's
            self._answer_all(TemporaryDeliveryError("the sender is stopping"))
            raise

    async def _transaction(self, request: _Request, waiting: Callable[[], _Request | None]) -> None:
        """One message; a waiting one's commands follow its content when the session
        pipelines (that one is carried next, ``_chained``)."""
        session = self.session
        assert session is not None
        mail, rcpt, data = await session.open(
            request.sender, request.recipient, len(request.content), written=self._chained
        )
        self._chained = False
        if not accepted(mail, rcpt, data):
            await session.abandon(mail, data)
            self.sent += 1
            request.answer(_refusal(mail, rcpt, data))
            return
        following = waiting() if session.pipelining and self.sent + 1 < self.max_messages else None
        then = b""
        if following is not None:
            self._carrying.append(following)
            then = session.commands(following.sender, following.recipient, len(following.content))
        session.finish(request.content, then)
        self._chained = following is not None
        final = await session.final()
        self.sent += 1
        request.answer(_classify(final, "end-of-data") if final.code >= 400 else final.text)

    def _answer_all(self, error: DeliveryError) -> None:
        """The message in hand gets ``error`` (it may have reached the server: a try); one
        chained behind it only had its commands sent, so its content never left."""
        carrying, self._carrying = self._carrying, []
        self._chained = False
        for n, request in enumerate(carrying):
            request.answer(error if n == 0 else NotSentError(str(error), error.code))

    async def _ready(self) -> None:
        """A session that may start a transaction: open, nothing said out of turn (a server
        about to drop an idle session says ``421`` first), and not at its message cap."""
        session = self.session
        if session is None or not session.is_usable or self.sent >= self.max_messages:
            await self.close()
            self.session = await self._connect()

    def _lost(self) -> None:
        if self.session is not None:
            self.session.abort()  # dropped or confused: the next message reconnects
            self.session = None

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


def _refusal(mail: Reply, rcpt: Reply, data: Reply) -> DeliveryError:
    if mail.code != 250:
        # About us, not the reader (see the module docstring): never a hard bounce.
        return TemporaryDeliveryError(f"MAIL FROM refused: {mail}", mail.code)
    if rcpt.code not in (250, 251):
        return _classify(rcpt, "rcpt")
    return _classify(data, "data")


def _session_lost(exc: SessionLost) -> TemporaryDeliveryError:
    refused = next((r for r in exc.replies if r.code >= 400), None)
    if refused is not None:  # "421 closing" before the drop says more than the drop
        return TemporaryDeliveryError(f"connection closed: {refused}", refused.code)
    return TemporaryDeliveryError(f"connection problem: {exc}")


def make_transport(
    smtp: SmtpSettings | None, mail_dir: Path, pool_size: int = 4, max_per_connection: int = 1000
) -> Transport:
    if smtp is None:
        return MailCatcher(mail_dir)
    return SmtpPool(smtp, size=pool_size, max_per_connection=max_per_connection)

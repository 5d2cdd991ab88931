"""One SMTP session carrying many transactions, pipelined when the server allows it.

aiosmtplib opens and secures the session (connect, SMTPS or STARTTLS, EHLO, AUTH): the
parts with certificates and state to get right. Its protocol then waits for one reply
per command, four round trips per message, and its reader drops replies that arrive
before they are awaited, so it cannot pipeline. Once the session is ready this module
takes over the transport with a protocol that queues every reply it reads:

- with ESMTP PIPELINING (RFC 2920) a message is two round trips: ``MAIL``, ``RCPT`` and
  ``DATA`` in one write (``DATA`` last, as the RFC requires), then the content;
- without it (or with ``?pipelining=false``), the same commands in lockstep, one reply each.

Each reply is awaited for the command timeout, except the one to the end of the content:
it has its own, longer one, since a relay may run content filters before answering and
giving up after it took the message would send the message twice.

Sending costs about a quarter of the event-loop work it did through aiosmtplib (see
bench/README.md). Replies are classified by the caller (:mod:`digestd.delivery.transport`);
this module only reports what the server said, or that the session is gone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple, cast

import aiosmtplib

# RFC 5321 §4.5.3.1.5: 512 octets a reply line; generous, and bounds a runaway server.
MAX_REPLY = 64 * 1024
# Lines of one reply: an EHLO answer has a dozen; a server streaming ``250-`` lines forever
# would otherwise grow one reply without end, each line short enough to pass MAX_REPLY.
MAX_REPLY_LINES = 100


class Reply(NamedTuple):
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SessionLost(Exception):
    """The server closed the connection, sent something that is not SMTP, or did not
    answer in time. ``replies`` are those that did arrive (a ``421`` before a close)."""

    def __init__(self, reason: str, replies: list[Reply]) -> None:
        super().__init__(reason)
        self.replies = replies


class Transaction(NamedTuple):
    """The replies to one message's ``MAIL``, ``RCPT`` and ``DATA``; ``final`` is the reply
    to the end of the content, when it was sent."""

    mail: Reply
    rcpt: Reply
    data: Reply
    final: Reply | None


def accepted(mail: Reply, rcpt: Reply, data: Reply) -> bool:
    """The server will take the content."""
    return mail.code == 250 and rcpt.code in (250, 251) and data.code == 354


def _in_step(command: str, reply: Reply, success: tuple[int, ...]) -> Reply:
    """``reply``, if it can answer ``command``: its success, or a refusal (4xx, 5xx).
    Anything else (a ``250`` to DATA, a ``354`` to the content) means replies and commands
    no longer pair up, an extra line from the server shifting every pipelined reply after
    it: read as a refusal, a "250 ok" failed messages for good that were never sent."""
    if reply.code in success or 400 <= reply.code < 600:
        return reply
    raise SessionLost(f"reply out of step: {reply} to {command}", [])


# What each command's success is; any other reply but a refusal is out of step.
_MAIL, _RCPT, _DATA, _TAKEN = (250,), (250, 251), (354,), (250,)


class _ReplyReader(asyncio.Protocol):
    """Parses replies as they arrive and hands them out in order, however many are due."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._lines: list[str] = []  # continuation lines of the reply being read
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self._lost: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._buffer:  # the rest of a line that came in pieces
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        *lines, rest = data.split(b"\n")
        for line in lines:
            code, mark = line[:3], line[3:4]
            if not code.isdigit() or mark not in (b" ", b"-", b"\r", b""):
                self._fail(f"not an SMTP reply: {line[:80]!r}")
                return
            self._lines.append(line[4:].strip().decode("utf-8", "replace"))
            if len(self._lines) > MAX_REPLY_LINES:
                self._fail(f"reply longer than {MAX_REPLY_LINES} lines")
                return
            if mark != b"-":
                self._replies.append(Reply(int(code), "\n".join(self._lines)))
                self._lines = []
        if len(rest) > MAX_REPLY:
            self._fail("reply too long")
            return
        self._buffer += rest
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._lost or f"connection lost{f': {exc}' if exc else ''}"
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def _fail(self, reason: str) -> None:
        self._lost = reason
        self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        ready = len(self._replies) >= self._wanted or self._lost is not None
        if waiter is not None and not waiter.done() and ready:
            waiter.set_result(None)

    @property
    def idle(self) -> bool:
        return self._lost is None and not self._replies and not self._buffer and not self._lines

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():  # the replies may have come in the same turn of the loop
            self._fail("timed out waiting for the server")

    async def replies(self, count: int, timeout: float) -> list[Reply]:
        """The next ``count`` replies, or :class:`SessionLost` with those that came."""
        if len(self._replies) < count and self._lost is None:
            loop = asyncio.get_running_loop()
            self._waiter, self._wanted = loop.create_future(), count
            timer = loop.call_later(timeout, self._timed_out, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if len(self._replies) < count:
            got = list(self._replies)
            self._replies.clear()
            raise SessionLost(self._lost or "connection lost", got)
        return [self._replies.popleft() for _ in range(count)]


class SmtpSession:
    """Transactions on a session aiosmtplib has opened (greeting, TLS, EHLO, AUTH done)."""

    def __init__(
        self,
        client: aiosmtplib.SMTP,
        timeout: float,
        data_timeout: float,
        *,
        pipelining: bool = True,
    ) -> None:
        """``timeout`` bounds each command's reply, ``data_timeout`` the reply to the end
        of the content; ``pipelining=False`` goes in lockstep even if the server offers it
        (relays that advertise it and then lose commands)."""
        # Not an isinstance check: uvloop's transports do not derive from asyncio's.
        transport = cast(asyncio.Transport | None, client.transport)
        if transport is None or transport.is_closing():
            raise SessionLost("connection lost", [])
        self.pipelining = pipelining and client.supports_extension("pipelining")
        self.size = client.supports_extension("size")
        self.timeout = timeout
        self.data_timeout = data_timeout
        self._transport = transport
        # From here on replies come to us; aiosmtplib's client is not used again.
        self._reader = _ReplyReader(transport)
        transport.set_protocol(self._reader)

    @property
    def is_usable(self) -> bool:
        """Open, and nothing said out of turn (a server about to drop an idle session
        says ``421`` first): such a reply would be taken for the next command's."""
        return not self._transport.is_closing() and self._reader.idle

    async def _ask(self, *commands: bytes, timeout: float | None = None) -> list[Reply]:
        self._transport.write(b"".join(commands))
        return await self._reader.replies(len(commands), timeout or self.timeout)

    def commands(self, envelope_from: bytes, recipient: bytes, size: int) -> bytes:
        """``MAIL``, ``RCPT`` and ``DATA`` of one message, as one pipelined write."""
        mail = b"MAIL FROM:<%s>%s\r\n" % (envelope_from, b" SIZE=%d" % size if self.size else b"")
        return mail + b"RCPT TO:<%s>\r\nDATA\r\n" % recipient

    async def open(
        self, envelope_from: bytes, recipient: bytes, size: int, *, written: bool = False
    ) -> tuple[Reply, Reply, Reply]:
        """The replies to ``MAIL``, ``RCPT`` and ``DATA`` (``written``: the commands went
        out already, after the previous message's content). Without pipelining they go one
        at a time, stopping at the first refusal (the commands not sent get a stand-in)."""
        if self.pipelining:
            if not written:
                self._transport.write(self.commands(envelope_from, recipient, size))
            mail, rcpt, data = await self._reader.replies(3, self.timeout)
            return (
                _in_step("MAIL", mail, _MAIL),
                _in_step("RCPT", rcpt, _RCPT),
                _in_step("DATA", data, _DATA),
            )
        skipped = Reply(503, "not sent")
        (mail,) = await self._ask(
            b"MAIL FROM:<%s>%s\r\n" % (envelope_from, b" SIZE=%d" % size if self.size else b"")
        )
        if _in_step("MAIL", mail, _MAIL).code != 250:
            return mail, skipped, skipped
        (rcpt,) = await self._ask(b"RCPT TO:<%s>\r\n" % recipient)
        if _in_step("RCPT", rcpt, _RCPT).code not in _RCPT:
            return mail, rcpt, skipped
        (data,) = await self._ask(b"DATA\r\n")
        return mail, rcpt, _in_step("DATA", data, _DATA)

    def finish(self, content: bytes, then: bytes = b"") -> None:
        """The content (wire form: CRLF line ends, dot-stuffed, ending in CRLF), its ``.``
        terminator and ``then`` (the next message's commands, RFC 2920) in one write."""
        self._transport.write(content + b".\r\n" + then)

    async def final(self) -> Reply:
        """The reply to the end of the content: it gets the longer data timeout. Only a
        ``250`` takes the message (RFC 5321 §4.3.2): a ``354`` or ``221`` there is no
        acceptance but a server out of step (:class:`SessionLost`)."""
        (final,) = await self._reader.replies(1, self.data_timeout)
        return _in_step("the end of the content", final, _TAKEN)

    async def abandon(self, mail: Reply, data: Reply) -> None:
        """After a refusal, leave the session ready for the next message."""
        if data.code == 354:
            # A server that opened DATA although MAIL or RCPT failed: ending it, even empty,
            # could deliver an empty message. The next message opens a new session.
            self.abort()
            return
        try:
            if mail.code == 250:
                await self._ask(b"RSET\r\n")
        except SessionLost:
            self.abort()  # the refusal stands; the next message opens a new session

    async def send(self, envelope_from: bytes, recipient: bytes, content: bytes) -> Transaction:
        """One message to one recipient, alone on the session (``content`` in wire form).

        The content is sent only after ``MAIL``, ``RCPT`` and ``DATA`` all succeeded; after
        a refusal the session is reset so it can carry the next message.
        """
        mail, rcpt, data = await self.open(envelope_from, recipient, len(content))
        if not accepted(mail, rcpt, data):
            await self.abandon(mail, data)
            return Transaction(mail, rcpt, data, None)
        self.finish(content)
        return Transaction(mail, rcpt, data, await self.final())

    async def quit(self) -> None:
        try:
            await self._ask(b"QUIT\r\n")
        except SessionLost:
            pass
        finally:
            self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

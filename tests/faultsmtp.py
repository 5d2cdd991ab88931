"""Real SMTP servers on loopback that misbehave on cue: :class:`FaultySink` (aiosmtpd)
counts deliveries; :class:`Script` (a scripted listener) records the wire byte for byte.

:class:`FaultySink`

Faults, each as a real MTA would produce them:
- ``busy_transactions``: the next N transactions get ``421`` at MAIL FROM (server busy);
- ``greylist``: recipient -> how many ``451`` answers (``greylist_reply``) at RCPT before
  accepting;
- ``drop_after_data``: recipients whose first message is received and then the
  connection is cut before the reply (the classic "did it arrive?" case): not stored;
- ``reject``: recipient -> a ``5xx`` answer at RCPT, every time;
- ``always``: if set, the answer to every RCPT (a whole-server outage, a relay refusing
  to relay); ``{rcpt}`` in it becomes the recipient, as real servers quote it;
- ``reject_content``: recipient -> a ``5xx`` answer to the end of DATA (a content filter);
- ``data_delay``: seconds before every end-of-data reply (a slow content filter).

It advertises ESMTP PIPELINING as real MTAs do (``pipelining=False`` to test a server
that does not); aiosmtpd reads commands one line at a time, so pipelined ones queue up.

:class:`Script`
answers each command line from a function and records exactly what had arrived when it
answered, so "MAIL, RCPT and DATA went in one write" and "nothing was sent before the
reply" are observed on the wire, not inferred. It speaks SMTPS and STARTTLS when given a
certificate, advertises AUTH PLAIN on request, and can hold a reply until told.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from tests.helpers import free_port


@dataclass
class FaultySink:
    host: str = "127.0.0.1"
    port: int = 0
    busy_transactions: int = 0
    greylist: dict[str, int] = field(default_factory=dict)
    drop_after_data: set[str] = field(default_factory=set)
    reject: dict[str, str] = field(default_factory=dict)
    always: str | None = None
    greylist_reply: str = "451 4.7.1 Greylisted, please try again"
    reject_content: dict[str, str] = field(default_factory=dict)
    delivered: Counter[str] = field(default_factory=Counter)
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)
    attempts: int = 0  # RCPTs seen
    rcpts: Counter[str] = field(default_factory=Counter)
    peers: set[object] = field(default_factory=set)  # client (host, port): one per connection
    pipelining: bool = True
    data_delay: float = 0.0  # seconds before each end-of-data reply: the relay's pace

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return advertise_pipelining(responses) if self.pipelining else responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if self.busy_transactions > 0:
            self.busy_transactions -= 1
            return "421 4.3.2 Service busy, try again later"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.attempts += 1
        self.peers.add(session.peer)
        self.rcpts[address] += 1
        if self.always is not None:
            return self.always.replace("{rcpt}", address)
        if address in self.reject:
            return self.reject[address]
        if self.greylist.get(address, 0) > 0:
            self.greylist[address] -= 1
            return self.greylist_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        (recipient,) = envelope.rcpt_tos
        if self.data_delay:
            await asyncio.sleep(self.data_delay)  # the server's pace, not the test's clock
        if recipient in self.drop_after_data:
            self.drop_after_data.discard(recipient)
            assert server.transport is not None  # set while a connection is being served
            server.transport.close()  # no reply: the client cannot know it was not kept
            return "250 never seen by the client"
        if recipient in self.reject_content:
            return self.reject_content[recipient]
        self.delivered[recipient] += 1
        # aiosmtpd reaches DATA only after MAIL FROM and with the content read.
        assert envelope.mail_from is not None and envelope.original_content is not None
        self.messages.append((envelope.mail_from, recipient, bytes(envelope.original_content)))
        return "250 2.0.0 Ok: queued"


def advertise_pipelining(responses: list[str]) -> list[str]:
    """aiosmtpd's EHLO lines with ``250-PIPELINING`` added before the last one."""
    return [*responses[:-1], "250-PIPELINING", responses[-1]]


@contextmanager
def running(sink: FaultySink) -> Iterator[FaultySink]:
    sink.port = free_port()
    controller = Controller(sink, hostname=sink.host, port=sink.port, decode_data=False)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


HANG_UP = b"<hang up>"  # as the last reply line: close the connection after the others
HOLD = b"<hold>"  # as the first reply line: answer once ``Script.release`` is set
Answer = Callable[[bytes], "list[bytes] | None"]


def standard(line: bytes) -> list[bytes] | None:
    """What a healthy relay answers to one command line (``.`` ends the content)."""
    if line == b".":
        return [b"250 2.0.0 Ok: queued as 4XyZ"]
    verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().strip()
    return {
        b"MAIL": [b"250 2.1.0 Ok"],
        b"RCPT": [b"250 2.1.5 Ok"],
        b"DATA": [b"354 End data with <CR><LF>.<CR><LF>"],
        b"RSET": [b"250 2.0.0 Ok"],
        b"AUTH": [b"235 2.7.0 Authentication successful"],
        b"QUIT": [b"221 2.0.0 Bye"],
    }.get(verb, [b"502 5.5.2 Error: command not recognized"])


@dataclass
class Script:
    """What the scripted server says. ``answer(command)`` gives the reply lines for one
    command line (``None``: close the connection instead of answering)."""

    pipelining: bool = True
    answer: Answer = standard
    starttls: ssl.SSLContext | None = None  # offer STARTTLS, with this certificate
    auth: bool = False  # advertise AUTH PLAIN
    # Each time the server answered: the bytes that had arrived and were not yet answered.
    seen: list[bytes] = field(default_factory=list)
    commands: list[tuple[bytes, bool]] = field(default_factory=list)  # (line, over TLS)
    ehlo: list[bytes] = field(default_factory=list)  # the names said in EHLO
    contents: list[bytes] = field(default_factory=list)
    connections: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def scripted(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """The scripted server listening on a loopback port (``tls``: SMTPS); yields the port."""
    server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _greet(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    ehlo = await reader.readline()
    assert ehlo.startswith(b"EHLO "), ehlo
    script.ehlo.append(ehlo[5:].strip())
    over_tls = writer.get_extra_info("sslcontext") is not None
    extensions = [b"250-sink.example", b"250-SIZE 10240000"]
    extensions += [b"250-PIPELINING"] if script.pipelining else []
    extensions += [b"250-STARTTLS"] if script.starttls and not over_tls else []
    extensions += [b"250-AUTH PLAIN"] if script.auth else []
    writer.write(b"\r\n".join([*extensions, b"250 8BITMIME"]) + b"\r\n")


async def _serve(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    script.connections += 1
    writer.write(b"220 sink.example ESMTP\r\n")
    await _greet(script, reader, writer)
    content = bytearray()
    in_data = False
    while line := await reader.readline():
        if in_data and line != b".\r\n":
            content += line
            continue
        if in_data:
            in_data = False
            script.contents.append(bytes(content))
            content.clear()
            line = b"."
        else:
            script.commands.append((line.rstrip(), writer.get_extra_info("sslcontext") is not None))
        if line.upper().startswith(b"STARTTLS") and script.starttls:
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            await writer.start_tls(script.starttls)
            await _greet(script, reader, writer)
            continue
        replies = script.answer(line)
        # What the client had sent by now beyond this line: pipelined commands queue up.
        script.seen.append(line + bytes(reader._buffer))  # type: ignore[attr-defined]
        if replies and replies[0] == HOLD:
            await script.release.wait()
            replies = replies[1:]
        if replies is None or (replies and replies[-1] == HANG_UP):
            writer.write(b"".join(r + b"\r\n" for r in (replies or [])[:-1]))
            writer.close()
            return
        writer.write(b"".join(r + b"\r\n" for r in replies))
        in_data = bool(replies) and replies[-1].startswith(b"354")
        if line.upper().startswith(b"QUIT"):
            break
    writer.close()

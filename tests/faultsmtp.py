"""A real SMTP server (aiosmtpd on loopback) that misbehaves on cue, and counts deliveries.

Faults, each as a real MTA would produce them:
- ``busy_transactions``: the next N transactions get ``421`` at MAIL FROM (server busy);
- ``greylist``: recipient -> how many ``451`` answers at RCPT before accepting;
- ``drop_after_data``: recipients whose first message is received and then the
  connection is cut before the reply (the classic "did it arrive?" case): not stored;
- ``reject``: recipient -> a ``5xx`` answer at RCPT, every time;
- ``always``: if set, the answer to every RCPT (a whole-server outage).

It advertises ESMTP PIPELINING as real MTAs do (``pipelining=False`` to test a server
that does not); aiosmtpd reads commands one line at a time, so pipelined ones queue up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
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
    delivered: Counter[str] = field(default_factory=Counter)
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)
    attempts: int = 0  # RCPTs seen
    rcpts: Counter[str] = field(default_factory=Counter)
    peers: set[object] = field(default_factory=set)  # client (host, port): one per connection
    pipelining: bool = True

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
            return self.always
        if address in self.reject:
            return self.reject[address]
        if self.greylist.get(address, 0) > 0:
            self.greylist[address] -= 1
            return "451 4.7.1 Greylisted, please try again"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        (recipient,) = envelope.rcpt_tos
        if recipient in self.drop_after_data:
            self.drop_after_data.discard(recipient)
            assert server.transport is not None  # set while a connection is being served
            server.transport.close()  # no reply: the client cannot know it was not kept
            return "250 never seen by the client"
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

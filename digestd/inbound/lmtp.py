"""The LMTP listener (RFC 2033, aiosmtpd's ``LMTP``) in ``digestd run``.

An MTA hands it mail with one reply per recipient after the content, so each recipient is
its own unit of work: a bounce report or complaint (``readers.bounces.process_report``) or
an unsubscribe (``readers.lifecycle.unsubscribe``), in its own transaction; mail to the
shared ``unsubscribe@`` of older emails gets its sender a link to their preferences. The reply is
``250`` only once that transaction is committed; ``451`` when the database cannot take it
(the MTA keeps the message and retries, nothing is lost); ``554 5.6.0`` for content that
is no report; ``550 5.1.1`` at RCPT for any address digestd did not make
(:mod:`digestd.inbound.addresses`), ``452`` past 50 recipients (the MTA sends the rest
again). Content refused whole (over 2 MB, a line over 1 000 bytes) gets its refusal once
per recipient too.

Bind it to loopback: it trusts its peer as a local MTA (there is no authentication).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from digestd.errors import ConfigError, ValidationError, first_line
from digestd.inbound.addresses import Mailbox, Served, served
from digestd.instruments import Metrics
from digestd.readers.bounces import MAX_REPORT_BYTES, ReportError, process_report
from digestd.readers.lifecycle import unsubscribe
from digestd.readers.signups import SignupLimits, SignupResult, request_manage_link_by_email
from digestd.readers.subscribers import Addresses, by_public_id
from digestd.tokens import Tokens

log = logging.getLogger(__name__)


class InboundMail:
    """The aiosmtpd handler: refuses recipients digestd does not serve, then records what
    each accepted recipient's copy means."""

    def __init__(
        self,
        sessions: sessionmaker[DbSession],
        tokens: Tokens,
        domain: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
        links: LinkMailer | None = None,
    ) -> None:
        self.sessions = sessions
        self.tokens = tokens
        self.domain = domain
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.links = links
        self.sending: set[asyncio.Task[None]] = set()  # link emails not sent yet

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:  # the MTA sends the rest in another
            return "452 4.5.3 Too many recipients"
        found = served(address, self.domain, self.tokens)
        shared = found is not None and found.mailbox is Mailbox.UNSUBSCRIBE and not found.public_id
        if found is None or (shared and self.links is None):  # no mailer: nothing to answer with
            return f"550 5.1.1 <{address}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        assert isinstance(raw, bytes)  # decode_data=False
        replies = []
        for recipient in envelope.rcpt_tos:
            found = served(recipient, self.domain, self.tokens)
            assert found is not None  # refused at RCPT otherwise
            if found.mailbox is Mailbox.UNSUBSCRIBE and found.public_id is None:
                replies.append(await self._link_for(envelope.mail_from or "", recipient))
            else:
                replies.append(await asyncio.to_thread(self.deliver, recipient, raw, found))
        return "\r\n".join(replies)  # LMTP: one reply per recipient, in RCPT order

    async def _link_for(self, sender: str, recipient: str) -> str:
        """Mail to the old shared address: the sender is emailed a link to stop their
        digests, if they are a reader; the same reply whoever they are."""
        if self.links is not None:
            try:
                signup = await asyncio.to_thread(self._manage_link, sender)
            except SQLAlchemyError as exc:
                log.error("mail to the shared unsubscribe address not handled: %s", first_line(exc))
                return f"451 4.3.0 <{recipient}>: cannot take it now, try again later"
            # After the reply, as a signup's email: a slow relay must not hold the MTA.
            if signup.notice is not None:
                task = asyncio.create_task(self.links.send(signup))
                self.sending.add(task)
                task.add_done_callback(self.sending.discard)
            log.info(
                "unsubscribe by mail to the shared address",
                extra={"sender": sender, "link_sent": signup.notice is not None},
            )
        return f"250 2.0.0 <{recipient}>: a link to stop the digests goes to the sender"

    async def drain(self) -> None:
        """Wait for the link emails still being sent."""
        if self.sending:
            await asyncio.gather(*self.sending, return_exceptions=True)

    def _manage_link(self, sender: str) -> SignupResult:
        try:
            email = Addresses().normalise(sender)
        except ValidationError:
            return SignupResult(None)
        assert self.links is not None
        with self.sessions.begin() as session:
            return request_manage_link_by_email(session, email, self.clock(), self.links.limits)

    def deliver(self, recipient: str, raw: bytes, found: Served | None = None) -> str:
        """Record what ``raw`` means for ``recipient`` (``found``: what it is, if known);
        the LMTP reply for it."""
        found = found or served(recipient, self.domain, self.tokens)
        assert found is not None  # refused at RCPT otherwise
        try:
            with self.sessions.begin() as session:
                done = self._record(session, found, recipient, raw)
        except ReportError as exc:
            return f"554 5.6.0 <{recipient}>: {' '.join(str(exc).split())}"
        except SQLAlchemyError as exc:
            log.error("inbound mail for %s not recorded: %s", found.mailbox, first_line(exc))
            return f"451 4.3.0 <{recipient}>: cannot record it now, try again later"
        except Exception:  # a bug must not lose the mail: the MTA keeps it and retries
            log.exception("inbound mail for %s not recorded", found.mailbox)
            return f"451 4.3.0 <{recipient}>: cannot record it now, try again later"
        return f"250 2.0.0 <{recipient}>: {done}"

    def _record(self, session: DbSession, found: Served, recipient: str, raw: bytes) -> str:
        now = self.clock()
        if found.mailbox is Mailbox.UNSUBSCRIBE:
            assert found.public_id is not None
            subscriber = by_public_id(session, found.public_id, lock=True)
            if subscriber is None:  # erased, or a signup never confirmed
                return "nobody to unsubscribe"
            if not unsubscribe(subscriber, now, via="mail"):
                return f"nothing to do: {subscriber.status}"
            self.metrics.unsubscribes.labels("mail").inc()
            return "unsubscribed"
        result = process_report(
            session, raw, self.tokens, now, channel="lmtp", envelope_to=[recipient]
        )
        return f"{result.outcome}{' (repeated)' if result.repeated else ''}"


@dataclass(frozen=True)
class LinkMailer:
    """How the listener emails a reader a link to their preferences (the web's mailer),
    within the signup limits: mail to the shared address may come from anyone."""

    send: Callable[[SignupResult], Coroutine[Any, Any, None]]
    limits: SignupLimits


@dataclass
class Inbound:
    """A running listener (:func:`start`)."""

    server: asyncio.Server
    address: tuple[str, int]
    handler: InboundMail


def bind(settings_listen: tuple[str, int]) -> socket.socket:
    """Bind before serving, so a taken port is one clear configuration error."""
    host, port = settings_listen
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            "DIGESTD_INBOUND_LISTEN", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    return sock


MAX_SESSIONS = 64  # a local MTA opens a handful; more are a runaway (or a local attacker)
WARN_EVERY = 60.0  # seconds between two log lines about refused sessions
_TOO_MANY = b"421 4.3.2 Too many connections, try again later\r\n"
# Recipients of one transaction: each is read and recorded on its own (up to a second for
# a report of 2 MB), within aiosmtpd's 5 minutes for the whole reply. Postfix sends at most
# 50 (lmtp_destination_recipient_limit); a 452 has an MTA send the rest in another.
MAX_RECIPIENTS = 50
# How aiosmtpd refuses the content itself (see CappedLMTP.push).
_CONTENT_REFUSED = ("552 Error: Too much mail data", "500 Line too long")


class _Open:
    """The LMTP sessions open now, against their cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.refused = 0
        self.warned_at = -WARN_EVERY

    def refuse(self) -> None:
        """Count a refusal; one log line a minute at most, with how many."""
        self.refused += 1
        now = time.monotonic()
        if now - self.warned_at >= WARN_EVERY:
            log.warning(
                "LMTP: %d sessions open (the cap); refused %d connection(s) since the last "
                "such line",
                self.count,
                self.refused,
            )
            self.warned_at, self.refused = now, 0


class CappedLMTP(LMTP):
    """aiosmtpd's LMTP with a cap on open sessions: past it a connection is told 421 (the
    MTA retries) and closed at once. Uncapped, idle sessions took every file descriptor of
    the daemon, and the web pages with them."""

    def __init__(self, *args: Any, open_sessions: _Open, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open = open_sessions
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._open.count >= self._open.limit:
            self._open.refuse()
            assert isinstance(transport, asyncio.Transport)
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._open.count += 1
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:  # refused: aiosmtpd never saw it
            return
        self._counted = False
        self._open.count -= 1
        super().connection_lost(exc)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd refuses content that is too large, or has a line too long, with one reply;
        # LMTP owes one per recipient (RFC 2033 §4.2), or the MTA waits for the others
        # until its timeout, holding the session.
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        if text.startswith(_CONTENT_REFUSED) and self.envelope is not None:
            for _ in self.envelope.rcpt_tos[1:]:
                await super().push(status)
        await super().push(status)


async def start(
    listen: tuple[str, int] | None,
    sessions: sessionmaker[DbSession],
    tokens: Tokens,
    domain: str,
    metrics: Metrics | None = None,
    max_sessions: int = MAX_SESSIONS,
    links: LinkMailer | None = None,
) -> Inbound | None:
    """Serve LMTP on ``listen`` (``DIGESTD_INBOUND_LISTEN``); None when it is not set."""
    if listen is None:
        return None
    sock = bind(listen)
    handler = InboundMail(sessions, tokens, domain, metrics=metrics, links=links)
    open_sessions = _Open(max_sessions)

    def protocol() -> LMTP:
        return CappedLMTP(
            handler,
            open_sessions=open_sessions,
            hostname=domain,
            ident="digestd LMTP",
            data_size_limit=MAX_REPORT_BYTES,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    server = await asyncio.get_running_loop().create_server(protocol, sock=sock)
    bound = sock.getsockname()[:2]
    log.info("taking bounces, complaints and unsubscribes by LMTP on %s:%s", *bound)
    return Inbound(server, (str(bound[0]), int(bound[1])), handler)


async def stop(inbound: Inbound | None) -> None:
    if inbound is not None:
        inbound.server.close()
        await inbound.server.wait_closed()
        await inbound.handler.drain()

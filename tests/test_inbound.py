"""The inbound LMTP listener over a real socket: which recipients it takes, one reply per
recipient, 250 only once what the mail means is committed, 451 when it cannot be."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from sqlalchemy import select

from digestd.config import Settings
from digestd.db import make_engine, make_sessions
from digestd.errors import ConfigError
from digestd.inbound import lmtp
from digestd.models import BounceEvent, Subscriber, SubscriberStatus
from digestd.service import Service
from digestd.tokens import Tokens
from digestd.web.app import create_app
from tests.conftest import TEST_KEY
from tests.test_bounces import ARF, POSTFIX_DSN, TAG_1, _deliver_days, _subscriber

DOMAIN = "news.example.com"
T = TypeVar("T")


async def lmtp_session(
    port: int, mail_from: str, recipients: list[str], data: bytes
) -> tuple[list[bytes], list[bytes]]:
    """A minimal LMTP client (smtplib's reads one reply after DATA, LMTP gives one per
    accepted recipient): the RCPT replies and the replies to the content."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        lines = [await reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(await reader.readline())
        return b"".join(lines).strip()

    async def command(line: bytes) -> bytes:
        writer.write(line + b"\r\n")
        return await reply()

    assert (await reply()).startswith(b"220")
    assert (await command(b"LHLO mta.example.test")).startswith(b"250")
    assert (await command(b"MAIL FROM:<" + mail_from.encode() + b">")).startswith(b"250")
    rcpt = [await command(b"RCPT TO:<" + r.encode() + b">") for r in recipients]
    accepted = sum(r.startswith(b"250") for r in rcpt)
    finals: list[bytes] = []
    if accepted:
        assert (await command(b"DATA")).startswith(b"354")
        body = re.sub(rb"(?m)^\.", b"..", data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
        writer.write(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        finals = [await reply() for _ in range(accepted)]
    writer.write(b"QUIT\r\n")
    writer.close()
    return rcpt, finals


def _with_listener(service: Service, run: Callable[[int], Awaitable[T]]) -> T:
    async def main() -> T:
        web = create_app(service).state.web  # the daemon's mailer, as `digestd run` has
        links = lmtp.LinkMailer(web.send_signup_email, web.policy.signup_limits)
        inbound = await lmtp.start(
            ("127.0.0.1", 0), service.sessions, service.tokens, DOMAIN, service.metrics, links=links
        )
        assert inbound is not None
        try:
            return await run(inbound.address[1])
        finally:
            await lmtp.stop(inbound)

    return asyncio.run(main())


def _unsubscribe_address(service: Service, email: str) -> str:
    return service.composer.links.mailto(_subscriber(service, email).public_id).split("?")[0]


def test_only_addresses_digestd_made_are_taken(settings: Settings) -> None:
    service = _deliver_days(settings, ["reader@example.com"])
    unsubscribe = _unsubscribe_address(service, "reader@example.com")
    forged = re.sub(r"\.[\w-]{16}@", ".AAAAAAAAAAAAAAAA@", unsubscribe)
    other_key = Tokens(["another-key-0123456789abcdef"])
    recipients = {
        f"bounces+{TAG_1}@{DOMAIN}": b"250",
        f"BOUNCES+{TAG_1}@NEWS.EXAMPLE.COM": b"250",  # domains and box names: any case
        f"bounces@{DOMAIN}": b"250",
        f"complaints@{DOMAIN}": b"250",
        unsubscribe: b"250",
        f"bounces+{other_key.bounce_tag(1)}@{DOMAIN}": b"550 5.1.1",
        f"bounces+{TAG_1}@elsewhere.example": b"550 5.1.1",
        forged: b"550 5.1.1",
        f"unsubscribe@{DOMAIN}": b"250",  # the old shared address: a link to the sender
        f"postmaster@{DOMAIN}": b"550 5.1.1",
        "reader@example.com": b"550 5.1.1",
    }

    async def rcpt_only(port: int) -> list[bytes]:
        replies, _ = await lmtp_session(port, "", list(recipients), b"Subject: x\r\n\r\nx\r\n")
        return replies

    replies = _with_listener(service, rcpt_only)
    for (address, expected), answer in zip(recipients.items(), replies, strict=True):
        assert answer.startswith(expected), (address, answer)


def test_a_bounce_a_complaint_and_an_unsubscribe_each_get_their_own_reply(
    settings: Settings,
) -> None:
    service = _deliver_days(settings, ["gone@example.com", "reader@example.com"])
    unsubscribe = _unsubscribe_address(service, "reader@example.com")

    async def three(port: int) -> list[list[bytes]]:
        bounce = await lmtp_session(port, "", [f"bounces+{TAG_1}@{DOMAIN}"], POSTFIX_DSN)
        unsub = await lmtp_session(port, "reader@example.com", [unsubscribe], b"Subject: x\r\n")
        again = await lmtp_session(port, "reader@example.com", [unsubscribe], b"Subject: x\r\n")
        return [bounce[1], unsub[1], again[1]]

    bounce, unsub, again = _with_listener(service, three)
    assert bounce == [f"250 2.0.0 <bounces+{TAG_1}@{DOMAIN}>: hard-bounce".encode()]
    assert unsub == [f"250 2.0.0 <{unsubscribe}>: unsubscribed".encode()]
    assert again == [f"250 2.0.0 <{unsubscribe}>: nothing to do: unsubscribed".encode()]
    assert _subscriber(service, "gone@example.com").status == SubscriberStatus.BOUNCED
    assert _subscriber(service, "reader@example.com").status == SubscriberStatus.UNSUBSCRIBED
    counted = service.metrics.registry.get_sample_value(
        "digestd_unsubscribes_total", {"via": "mail"}
    )
    assert counted == 1  # once, not again
    with service.sessions() as session:
        event = session.scalars(select(BounceEvent)).one()
    assert (event.kind, event.source, event.channel) == ("hard", "dsn", "lmtp")


def test_mail_to_the_old_shared_address_emails_its_sender_a_link_and_changes_nobody(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Emails of older digestd name ``unsubscribe@`` in List-Unsubscribe, and the sender of
    such a mail can be anyone: a reader is emailed a link to stop their digests (only their
    inbox can follow it); a stranger gets the same answer, and nobody any email."""
    service = _deliver_days(settings, ["reader@example.com"])
    web = create_app(service).state.web
    links = lmtp.LinkMailer(web.send_signup_email, web.policy.signup_limits)
    caught = sorted(service.settings.mail_dir.glob("*.eml"))

    async def main() -> list[list[bytes]]:
        inbound = await lmtp.start(
            ("127.0.0.1", 0), service.sessions, service.tokens, DOMAIN, links=links
        )
        assert inbound is not None
        port, shared = inbound.address[1], [f"unsubscribe@{DOMAIN}"]
        try:
            reader = await lmtp_session(port, "Reader@Example.com", shared, b"Subject: unsub\r\n")
            stranger = await lmtp_session(port, "who@else.example", shared, b"Subject: unsub\r\n")
        finally:
            await lmtp.stop(inbound)
        return [reader[1], stranger[1]]

    answer = f"250 2.0.0 <unsubscribe@{DOMAIN}>: a link to stop the digests goes to the sender"
    with caplog.at_level(logging.INFO, logger="digestd.inbound.lmtp"):
        assert asyncio.run(main()) == [[answer.encode()], [answer.encode()]]
    said = [
        r for r in caplog.records if r.getMessage() == "unsubscribe by mail to the shared address"
    ]
    assert [r.__dict__["link_sent"] for r in said] == [True, False]
    new = [p for p in sorted(service.settings.mail_dir.glob("*.eml")) if p not in caught]
    assert len(new) == 1
    sent = new[0].read_bytes()
    assert b"Delivered-To: reader@example.com" in sent and b"Your preferences link" in sent
    assert _subscriber(service, "reader@example.com").status == SubscriberStatus.ACTIVE


def test_one_transaction_for_several_recipients_answers_each_in_order(
    settings: Settings,
) -> None:
    """An ARF report sent to the complaints address and, in the same transaction, to the
    bare bounce address: two replies; and content that is no report gets 554."""
    service = _deliver_days(settings, ["reader@example.com"])

    async def run(port: int) -> tuple[list[bytes], list[bytes]]:
        both = await lmtp_session(
            port, "fbl@isp.example", [f"complaints@{DOMAIN}", f"bounces@{DOMAIN}"], ARF
        )
        junk = await lmtp_session(
            port, "someone@example.net", [f"complaints@{DOMAIN}"], b"Subject: hi\r\n\r\nhi\r\n"
        )
        return both[1], junk[1]

    both, junk = _with_listener(service, run)
    assert both == [
        f"250 2.0.0 <complaints@{DOMAIN}>: complaint".encode(),
        f"250 2.0.0 <bounces@{DOMAIN}>: complaint (repeated)".encode(),
    ]
    assert junk[0].startswith(b"554 5.6.0 <complaints@news.example.com>: not a report")
    assert _subscriber(service, "reader@example.com").status == SubscriberStatus.COMPLAINED


def test_a_database_that_cannot_take_it_gets_451_so_the_mta_retries(settings: Settings) -> None:
    service = _deliver_days(settings, ["gone@example.com"])
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/gone?connect_timeout=2")
    handler = lmtp.InboundMail(make_sessions(dead), Tokens([TEST_KEY]), DOMAIN)
    reply = handler.deliver(f"bounces+{TAG_1}@{DOMAIN}", POSTFIX_DSN)
    dead.dispose()
    assert reply.startswith(f"451 4.3.0 <bounces+{TAG_1}@{DOMAIN}>: cannot record it now")
    with service.sessions() as session:
        assert session.scalars(select(BounceEvent)).all() == []
        status = session.scalar(select(Subscriber.status))
    assert status == SubscriberStatus.ACTIVE


def test_a_taken_port_is_one_clear_configuration_error() -> None:
    engine = make_engine("sqlite://")
    sessions, tokens = make_sessions(engine), Tokens([TEST_KEY])

    async def twice() -> None:
        first = await lmtp.start(("127.0.0.1", 0), sessions, tokens, DOMAIN)
        assert first is not None
        try:
            with pytest.raises(ConfigError, match="DIGESTD_INBOUND_LISTEN: cannot listen"):
                await lmtp.start(first.address, sessions, tokens, DOMAIN)
        finally:
            await lmtp.stop(first)

    asyncio.run(twice())
    engine.dispose()


def test_sessions_past_the_cap_are_told_421_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    """Idle sessions held open took every file descriptor, the web pages' too: past the cap
    a connection is refused at once (the MTA retries), and room comes back as one ends."""
    engine = make_engine("sqlite://")
    sessions, tokens = make_sessions(engine), Tokens([TEST_KEY])

    async def greeting(port: int) -> tuple[bytes, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return await asyncio.wait_for(reader.readline(), 5), writer

    async def run() -> None:
        inbound = await lmtp.start(("127.0.0.1", 0), sessions, tokens, DOMAIN, max_sessions=3)
        assert inbound is not None
        port = inbound.address[1]
        try:
            held = [await greeting(port) for _ in range(3)]
            assert all(line.startswith(b"220") for line, _ in held)
            for _ in range(5):
                line, writer = await greeting(port)
                assert line == b"421 4.3.2 Too many connections, try again later\r\n"
                writer.close()
            held[0][1].close()
            await held[0][1].wait_closed()
            for _ in range(100):  # the server sees the close on its next loop turn
                line, writer = await greeting(port)
                writer.close()
                if line.startswith(b"220"):
                    break
            assert line.startswith(b"220")
            for _, writer in held[1:]:
                writer.close()
        finally:
            await lmtp.stop(inbound)

    with caplog.at_level(logging.WARNING, logger="digestd.inbound.lmtp"):
        asyncio.run(run())
    engine.dispose()
    warnings = [r.getMessage() for r in caplog.records if "sessions open" in r.getMessage()]
    assert warnings == [
        "LMTP: 3 sessions open (the cap); refused 1 connection(s) since the last such line"
    ]

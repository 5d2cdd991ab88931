"""Pipelined SMTP transactions (RFC 2920) against a scripted server on loopback.

The server (:class:`tests.faultsmtp.Script`) is a real TCP listener that answers from a
script and records exactly what arrived before each answer, so "MAIL, RCPT and DATA went
in one write" and "nothing was sent before the reply" are observed on the wire, not
inferred.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from digestd.config import parse_smtp_url
from digestd.delivery.smtp_session import MAX_REPLY_LINES
from digestd.delivery.transport import SmtpPool
from digestd.errors import (
    DeliveryError,
    NotSentError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from tests.faultsmtp import HANG_UP, HOLD, Script, scripted, standard

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
STUFFED = b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
FROM, TO = "bounces+1.x@news.example.com", "reader@example.com"


def run(script: Script, scenario: Callable[[SmtpPool], Awaitable[None]], **url: str) -> None:
    async def main() -> None:
        async with scripted(script) as port:
            query = "&".join(f"{k}={v}" for k, v in url.items())
            pool = SmtpPool(parse_smtp_url(f"smtp://127.0.0.1:{port}?{query}"), size=1)
            try:
                await scenario(pool)
            finally:
                await pool.close()

    asyncio.run(main())


def fails_at_mail(reply: list[bytes], match: str, **url: str) -> Script:
    """Send one message to a server answering MAIL with ``reply`` (and everything else as a
    server should): it must fail as temporary, its error matching ``match``. The script
    (what reached the server) is returned."""

    def answer(line: bytes) -> list[bytes] | None:
        return reply if line.startswith(b"MAIL") else standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match=match):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario, **url)
    return script


def test_mail_rcpt_and_data_go_in_one_write_then_the_content() -> None:
    script = Script(answer=standard)

    async def scenario(pool: SmtpPool) -> None:
        assert await pool.send(FROM, TO, MESSAGE) == "2.0.0 Ok: queued as 4XyZ"
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    # The first MAIL was answered with RCPT and DATA already in the server's buffer.
    first = script.seen[0]
    assert first == (
        f"MAIL FROM:<{FROM}> SIZE={len(STUFFED) - 3}\r\nRCPT TO:<{TO}>\r\nDATA\r\n".encode()
    )
    assert script.contents == [STUFFED[:-3], STUFFED[:-3]]  # dot-stuffed, "." added
    assert script.connections == 1  # the session carried both messages


@pytest.mark.parametrize(
    ("server_offers_it", "url"),
    [(False, {}), (True, {"pipelining": "false"})],
    ids=["not offered", "offered but ?pipelining=false"],
)
def test_without_pipelining_each_command_waits_for_its_reply(
    server_offers_it: bool, url: dict[str, str]
) -> None:
    script = Script(pipelining=server_offers_it)

    async def scenario(pool: SmtpPool) -> None:
        await pool.send(FROM, TO, MESSAGE)
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario, **url)
    commands = [seen for seen in script.seen if not seen.startswith((b"QUIT", b"."))]
    assert commands == 2 * [
        f"MAIL FROM:<{FROM}> SIZE={len(STUFFED) - 3}\r\n".encode(),
        f"RCPT TO:<{TO}>\r\n".encode(),
        b"DATA\r\n",
    ]  # nothing else had arrived when each was answered
    assert script.contents == [STUFFED[:-3]] * 2
    assert script.connections == 1


def test_the_final_reply_is_returned_and_multiline_replies_are_read_whole() -> None:
    def answer(line: bytes) -> list[bytes] | None:
        if line == b".":
            return [b"250-2.0.0 Ok: queued", b"250 2.0.0 as 4XyZ"]
        return standard(line)

    script = Script(answer=answer)
    replies: list[str] = []

    async def scenario(pool: SmtpPool) -> None:
        replies.append(await pool.send(FROM, TO, MESSAGE))
        replies.append(await pool.send(FROM, TO, MESSAGE))

    run(script, scenario)
    assert replies == ["2.0.0 Ok: queued\n2.0.0 as 4XyZ"] * 2


def test_a_refused_recipient_is_permanent_the_content_is_not_sent_and_the_session_reset() -> None:
    refused = [False]

    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(b"RCPT") and b"gone@" in line:
            refused[0] = True
            return [b"550 5.1.1 <gone@example.com>: Recipient address rejected"]
        if line.startswith(b"DATA") and refused[0]:
            refused[0] = False
            return [b"554 5.5.1 Error: no valid recipients"]
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(PermanentDeliveryError, match=r"^550 5\.1\.1"):
            await pool.send(FROM, "gone@example.com", MESSAGE)
        await pool.send(FROM, TO, MESSAGE)  # the same session carries on

    run(script, scenario)
    assert script.contents == [STUFFED[:-3]]  # only the good recipient's content
    assert sum(seen.startswith(b"RSET") for seen in script.seen) == 1
    assert script.connections == 1


@pytest.mark.parametrize(
    "refused",
    [b"RCPT", b"MAIL"],
)
def test_a_server_that_opens_data_despite_a_refusal_is_hung_up_on(refused: bytes) -> None:
    """Ending that DATA, even empty, could deliver an empty message (a broken server that
    refused MAIL and took RCPT anyway did, to every reader): the session is dropped, the
    refusal stands, and the next message opens a new one."""

    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(refused):
            return [b"550 5.1.1 No such user" if refused == b"RCPT" else b"451 4.3.0 Try later"]
        return standard(line)  # DATA: 354 anyway (a broken server)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(DeliveryError, match=r"550|MAIL FROM refused: 451"):
            await pool.send(FROM, TO, MESSAGE)
        with pytest.raises(DeliveryError):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert script.contents == []  # nothing, not even empty, went to anybody
    assert script.connections == 2


def test_an_extra_reply_puts_the_replies_out_of_step_and_fails_nobody_for_good() -> None:
    """One line too many after a message: every pipelined reply after it answers the wrong
    command ("250" to DATA). Read as a refusal, "250 ok" failed messages for good that the
    server never received; it is a session lost: tried again."""

    def answer(line: bytes) -> list[bytes] | None:
        return [b"250 2.0.0 Ok", b"250 extra"] if line == b"." else standard(line)

    script = Script(answer=answer)
    results: list[object] = []

    async def scenario(pool: SmtpPool) -> None:
        sends = [pool.send(FROM, f"r{n}@example.com", MESSAGE) for n in range(3)]
        results.extend(await asyncio.gather(*sends, return_exceptions=True))

    run(script, scenario)
    assert results[0] == "2.0.0 Ok"
    assert not [r for r in results if isinstance(r, PermanentDeliveryError)], results
    assert all(isinstance(r, (str, TemporaryDeliveryError)) for r in results), results
    assert len(script.contents) == sum(isinstance(r, str) for r in results)


@pytest.mark.parametrize("reply", [[b"354 weird"], [b"221 2.0.0 Bye", HANG_UP]])
def test_only_250_to_the_content_is_a_message_taken(reply: list[bytes]) -> None:
    """RFC 5321 §4.3.2: a 354 or 221 there was stored as "sent" for a message the server
    never took."""

    def answer(line: bytes) -> list[bytes] | None:
        return reply if line == b"." else standard(line)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match=r"out of step|connection"):
            await pool.send(FROM, TO, MESSAGE)

    run(Script(answer=answer), scenario)


def test_a_refused_sender_is_temporary_and_never_the_readers_fault() -> None:
    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(b"MAIL"):
            return [b"553 5.7.1 Sender address rejected: not owned by user"]
        if line.startswith((b"RCPT", b"DATA")):
            return [b"503 5.5.1 Error: need MAIL command"]
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match="MAIL FROM refused: 553"):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert script.contents == []


def test_421_then_a_closed_connection_is_temporary_and_the_next_message_reconnects() -> None:
    closed = [False]

    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(b"MAIL") and not closed[0]:
            closed[0] = True
            return [b"421 4.3.2 Service shutting down", HANG_UP]
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match=r"421 4\.3\.2"):
            await pool.send(FROM, TO, MESSAGE)
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert script.connections == 2
    assert len(script.contents) == 1


def test_a_connection_dropped_mid_transaction_is_temporary_and_reconnects() -> None:
    dropped = [False]

    def answer(line: bytes) -> list[bytes] | None:
        if line == b"." and not dropped[0]:
            dropped[0] = True
            return None  # content received, no reply: the classic "did it arrive?"
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match="connection problem"):
            await pool.send(FROM, TO, MESSAGE)
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert script.connections == 2
    assert len(script.contents) == 2


def test_a_drop_after_a_message_leaves_the_one_chained_behind_it_untried() -> None:
    """The second message's MAIL, RCPT and DATA rode behind the first's content; the
    server dropped the session before answering either: the first may have arrived (a
    try), the second never left (no try: it goes out again at once)."""

    def answer(line: bytes) -> list[bytes] | None:
        return None if line == b"." else standard(line)

    script = Script(answer=answer)
    errors: list[BaseException | str] = []

    async def scenario(pool: SmtpPool) -> None:
        sends = (pool.send(FROM, TO, MESSAGE), pool.send(FROM, "second@example.com", MESSAGE))
        errors.extend(await asyncio.gather(*sends, return_exceptions=True))

    run(script, scenario)
    first, second = errors
    assert isinstance(first, TemporaryDeliveryError) and not isinstance(first, NotSentError)
    assert isinstance(second, NotSentError) and "connection problem" in str(second)
    assert len(script.contents) == 1


def test_something_that_is_not_an_smtp_reply_ends_the_session() -> None:
    script = fails_at_mail([b"HTTP/1.1 400 Bad Request"], "not an SMTP reply")
    assert script.contents == []


def test_a_server_that_never_answers_times_out() -> None:
    script = fails_at_mail([], "timed out", timeout="0.2")  # silence after MAIL
    assert script.contents == []


def test_a_reply_said_out_of_turn_is_not_taken_for_the_next_commands() -> None:
    """Servers say ``421 idle timeout`` before dropping an idle session. Read as the answer
    to the next MAIL it would shift every later reply by one: the pool reconnects instead."""
    first = [True]

    def answer(line: bytes) -> list[bytes] | None:
        if line == b"." and first[0]:
            first[0] = False
            return [b"250 2.0.0 Ok: queued", b"421 4.4.2 idle timeout"]  # one write
        return standard(line)

    script = Script(answer=answer)
    replies: list[str] = []

    async def scenario(pool: SmtpPool) -> None:
        replies.append(await pool.send(FROM, TO, MESSAGE))
        replies.append(await pool.send(FROM, TO, MESSAGE))

    run(script, scenario)
    assert replies == ["2.0.0 Ok: queued", "2.0.0 Ok: queued as 4XyZ"]
    assert script.connections == 2
    assert len(script.contents) == 2


@pytest.mark.parametrize("url", [{}, {"pipelining": "false"}], ids=["pipelined", "lockstep"])
def test_a_5xx_to_the_data_command_is_permanent_no_content_is_sent_and_the_session_goes_on(
    url: dict[str, str],
) -> None:
    refused = [False]

    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(b"DATA") and not refused[0]:
            refused[0] = True
            return [b"554 5.7.1 Message refused by policy"]
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(PermanentDeliveryError, match=r"^554 5\.7\.1 Message refused"):
            await pool.send(FROM, TO, MESSAGE)
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario, **url)
    assert script.contents == [STUFFED[:-3]]  # only the second message's content
    assert sum(seen.startswith(b"RSET") for seen in script.seen) == 1
    assert script.connections == 1


def test_a_send_given_up_mid_read_does_not_confuse_the_session() -> None:
    """The reply to the abandoned message's content still comes. The connection's own task
    reads it as that message's (were it left unread, it would be taken for the next
    message's ``MAIL`` reply, and every later one shifted), and the next message goes
    through on the same session."""
    content_in = asyncio.Event()
    first = [True]

    def answer(line: bytes) -> list[bytes] | None:
        if line == b"." and first[0]:
            first[0] = False
            content_in.set()
            return [HOLD, b"250 2.0.0 Ok: queued as LATE"]
        return standard(line)

    script = Script(answer=answer)
    replies: list[str] = []

    async def scenario(pool: SmtpPool) -> None:
        cancelled = asyncio.create_task(pool.send(FROM, TO, MESSAGE))
        await content_in.wait()  # the client now waits for the reply to its content
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        script.release.set()  # the late reply goes out
        replies.append(await pool.send(FROM, TO, MESSAGE))

    run(script, scenario)
    assert replies == ["2.0.0 Ok: queued as 4XyZ"]
    assert script.connections == 1
    assert len(script.contents) == 2


def test_a_connection_stopped_mid_read_is_closed_and_its_message_is_temporary() -> None:
    """Closing the pool while a reply is awaited: the session cannot be trusted any more
    (its replies would shift), so it is dropped, and the message is a temporary failure."""
    content_in = asyncio.Event()

    def answer(line: bytes) -> list[bytes] | None:
        if line == b".":
            content_in.set()
            return [HOLD, b"250 2.0.0 Ok: queued as NEVER"]
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        sending = asyncio.create_task(pool.send(FROM, TO, MESSAGE))
        await content_in.wait()
        await pool.close()
        script.release.set()  # the server's late reply finds the connection gone
        with pytest.raises(TemporaryDeliveryError, match="stopping"):
            await sending

    run(script, scenario)
    assert script.connections == 1 and len(script.contents) == 1


def test_the_reply_to_the_content_may_take_longer_than_the_command_timeout() -> None:
    """A relay running content filters answers the end of DATA late; the command timeout
    would give up on a message the relay is about to take, and it would go twice."""
    late = [True]

    def answer(line: bytes) -> list[bytes] | None:
        if line == b"." and late[0]:
            late[0] = False
            return [HOLD, b"250 2.0.0 Ok: filtered and queued"]
        return standard(line)

    script = Script(answer=answer)
    replies: list[str] = []

    async def scenario(pool: SmtpPool) -> None:
        asyncio.get_running_loop().call_later(0.5, script.release.set)  # > timeout
        replies.append(await pool.send(FROM, TO, MESSAGE))

    run(script, scenario, timeout="0.2", data_timeout="2")
    assert replies == ["2.0.0 Ok: filtered and queued"]
    assert script.connections == 1


def test_the_data_timeout_bounds_the_wait_for_the_reply_to_the_content() -> None:
    def answer(line: bytes) -> list[bytes] | None:
        return [HOLD] if line == b"." else standard(line)  # never answered

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match="timed out"):
            # Well before the 30 s command timeout: the data timeout applied.
            await asyncio.wait_for(pool.send(FROM, TO, MESSAGE), 5)

    run(script, scenario, timeout="30", data_timeout="0.3")
    assert len(script.contents) == 1


def test_a_reply_of_more_lines_than_the_bound_ends_the_session() -> None:
    def lines(count: int, last: bytes) -> list[bytes]:
        return [b"250-line %d" % n for n in range(count - 1)] + [last]

    def answer(line: bytes) -> list[bytes] | None:
        if line == b".":
            return lines(MAX_REPLY_LINES, b"250 2.0.0 Ok: queued")  # the most allowed
        if line.startswith(b"MAIL") and len(script.contents) == 1:
            return lines(MAX_REPLY_LINES + 1, b"250 2.1.0 Ok")
        return standard(line)

    script = Script(answer=answer)
    replies: list[str] = []

    async def scenario(pool: SmtpPool) -> None:
        replies.append(await pool.send(FROM, TO, MESSAGE))
        with pytest.raises(TemporaryDeliveryError, match=f"longer than {MAX_REPLY_LINES} lines"):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert replies[0].endswith("2.0.0 Ok: queued")
    assert len(replies[0].splitlines()) == MAX_REPLY_LINES
    assert len(script.contents) == 1


def test_a_reply_line_without_end_ends_the_session() -> None:
    """A server streaming one line of a megabyte: the reader gives up at its bound instead of
    holding it all (the line arrives in reads of at most 256 KB, none ending it)."""
    script = fails_at_mail([b"250 " + b"x" * (1 << 20)], "reply too long")
    assert script.contents == []


def test_the_ehlo_name_from_the_url_is_what_the_server_hears() -> None:
    script = Script()

    async def scenario(pool: SmtpPool) -> None:
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario, ehlo="mailer.news.example.com")
    assert script.ehlo == [b"mailer.news.example.com"]

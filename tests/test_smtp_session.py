"""Pipelined SMTP transactions (RFC 2920) against a scripted server on loopback.

The server is a real TCP listener that answers from a script and records exactly what
arrived before each answer, so "MAIL, RCPT and DATA went in one write" and "nothing was
sent before the reply" are observed on the wire, not inferred.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from digestd.config import parse_smtp_url
from digestd.delivery.transport import SmtpPool
from digestd.errors import PermanentDeliveryError, TemporaryDeliveryError

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
STUFFED = b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
FROM, TO = "bounces+1.x@news.example.com", "reader@example.com"

HANG_UP = b"<hang up>"  # as the last reply line: close the connection after the others
Answer = Callable[[bytes], "list[bytes] | None"]


@dataclass
class Script:
    """What the server says. ``answer(command)`` gives the reply lines for one command
    line (``None``: close the connection instead of answering)."""

    pipelining: bool = True
    answer: Answer = field(default=lambda line: None)
    # Each time the server answered: the bytes that had arrived and were not yet answered.
    seen: list[bytes] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    connections: int = 0


def standard(line: bytes) -> list[bytes] | None:
    if line == b".":
        return [b"250 2.0.0 Ok: queued as 4XyZ"]
    verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().strip()
    return {
        b"MAIL": [b"250 2.1.0 Ok"],
        b"RCPT": [b"250 2.1.5 Ok"],
        b"DATA": [b"354 End data with <CR><LF>.<CR><LF>"],
        b"RSET": [b"250 2.0.0 Ok"],
        b"QUIT": [b"221 2.0.0 Bye"],
    }.get(verb, [b"502 5.5.2 Error: command not recognized"])


async def _serve(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    script.connections += 1
    writer.write(b"220 sink.example ESMTP\r\n")
    ehlo = await reader.readline()
    assert ehlo.startswith(b"EHLO")
    extensions = [b"250-sink.example", b"250-SIZE 10240000"]
    if script.pipelining:
        extensions.append(b"250-PIPELINING")
    writer.write(b"\r\n".join([*extensions, b"250 8BITMIME"]) + b"\r\n")
    in_data = False
    content = b""
    while True:
        line = await reader.readline()
        if not line:
            break
        if in_data:
            if line != b".\r\n":
                content += line
                continue
            in_data = False
            script.contents.append(content)
            content = b""
            replies = script.answer(b".")
        else:
            replies = script.answer(line)
        # What the client had sent by now beyond this line: pipelined commands queue up.
        # The buffer is private to StreamReader (typeshed leaves it out): observed, not used.
        script.seen.append(line + bytes(reader._buffer))  # type: ignore[attr-defined]
        if replies is None:
            writer.close()
            return
        hang_up = bool(replies) and replies[-1] == HANG_UP
        replies = replies[:-1] if hang_up else replies
        writer.write(b"".join(r + b"\r\n" for r in replies))
        if hang_up:
            writer.close()
            return
        if replies and replies[-1].startswith(b"354"):
            in_data = True
        if line.upper().startswith(b"QUIT"):
            writer.close()
            return


def run(script: Script, scenario: Callable[[SmtpPool], Awaitable[None]], **url: str) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        query = "&".join(f"{k}={v}" for k, v in url.items())
        pool = SmtpPool(parse_smtp_url(f"smtp://127.0.0.1:{port}?{query}"), size=1)
        try:
            await scenario(pool)
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


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


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    script = Script(pipelining=False, answer=standard)

    async def scenario(pool: SmtpPool) -> None:
        await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    commands = [seen for seen in script.seen if not seen.startswith((b"QUIT", b"."))]
    assert commands == [
        f"MAIL FROM:<{FROM}> SIZE={len(STUFFED) - 3}\r\n".encode(),
        f"RCPT TO:<{TO}>\r\n".encode(),
        b"DATA\r\n",
    ]  # nothing else had arrived when each was answered


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


def test_a_server_that_opens_data_despite_a_refused_recipient_gets_an_empty_message() -> None:
    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(b"RCPT"):
            return [b"550 5.1.1 No such user"]
        return standard(line)  # DATA: 354 anyway (a broken server)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(PermanentDeliveryError, match=r"^550"):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert script.contents == [b""]  # the digest itself never went to a refused recipient


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


def test_something_that_is_not_an_smtp_reply_ends_the_session() -> None:
    def answer(line: bytes) -> list[bytes] | None:
        if line.startswith(b"MAIL"):
            return [b"HTTP/1.1 400 Bad Request"]
        return standard(line)

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match="not an SMTP reply"):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario)
    assert script.contents == []


def test_a_server_that_never_answers_times_out() -> None:
    def answer(line: bytes) -> list[bytes] | None:
        return [] if line.startswith(b"MAIL") else standard(line)  # silence after MAIL

    script = Script(answer=answer)

    async def scenario(pool: SmtpPool) -> None:
        with pytest.raises(TemporaryDeliveryError, match="timed out"):
            await pool.send(FROM, TO, MESSAGE)

    run(script, scenario, timeout="0.2")
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

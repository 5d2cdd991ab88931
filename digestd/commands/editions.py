"""``digestd tick``, ``preview``, ``send-test`` and ``stats``: editions planned, sent, shown,
tried out and counted."""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from digestd.commands.common import database, parse_now
from digestd.config import Settings
from digestd.content.categories import parse_categories
from digestd.errors import DeliveryError, InputError, ValidationError
from digestd.models import EditionKind
from digestd.ops.progress import progress


def tick(settings: Settings, args: argparse.Namespace) -> int:
    """One pass as of ``--now``: poll the due feeds (cron users get feed articles too),
    plan every due edition, deliver the queue; one summary line."""
    from digestd.content.feed_polling import poll_due
    from digestd.service import Service

    now = _not_ahead(parse_now(args.now))
    service = Service.build(settings)
    feeds = poll_due(service.sessions, now)
    stopped: list[int] = []  # the signal that asked us to stop

    async def once() -> str:
        _stop_on_signals(stopped)
        try:
            with progress("Sending", None) as bar:
                report = await service.tick(
                    now, should_stop=lambda: bool(stopped), on_batch=bar, on_planned=bar.expect
                )
                bar.expect(0)  # what was counted is now done, whatever came in between
                return report.summary()
        finally:
            await service.close()

    summary = asyncio.run(once())
    print(f"{summary}; {feeds.summary()}" if feeds.polled else summary)
    if stopped:
        name = signal.Signals(stopped[0]).name
        print(
            f"digestd: stopped by {name}; the rest stays queued for the next tick", file=sys.stderr
        )
        return 128 + stopped[0]
    return 0


# SIGHUP too: a closed terminal killed a tick mid-send (as digestd run, digestd.daemon).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_on_signals(stopped: list[int]) -> None:
    """SIGTERM, Ctrl-C or SIGHUP: the messages on the wire finish and are recorded, the rest
    stay queued (killed at once, a tick's accepted messages were sent again by the next). A
    second signal is the default one: it ends the process at once."""
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        stopped.append(signum)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)


SKEW = timedelta(hours=1)  # two machines' clocks may disagree; by more, it is no skew


def _not_ahead(now: datetime) -> datetime:
    """A tick stores each reader's next edition after ``now``: one run ahead of the clock
    would leave every reader without mail until then."""
    clock = datetime.now(UTC)
    if now > clock + SKEW:
        asked = now.astimezone(UTC)
        raise InputError(
            f"--now: {asked:%Y-%m-%dT%H:%MZ} is ahead of the clock ({clock:%Y-%m-%dT%H:%MZ}); "
            "a tick then would move every reader's next digest there "
            "(digestd preview and send-test show a later edition)"
        )
    return now


# What makes ``-o`` a bad argument (exit 2) rather than a write that failed (exit 1).
_BAD_PATH = {
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.ELOOP,
}


def preview(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.ops.preview import preview as render_preview
    from digestd.service import Service

    now = parse_now(args.now)
    try:
        categories = parse_categories(args.categories)
    except ValidationError as exc:
        raise InputError(f"--categories: {exc.problem}") from exc
    service = Service.build(settings)
    data = render_preview(service, EditionKind(args.kind), categories, now, args.format)
    if data is None:
        print(
            "nothing to send: no articles in those categories in the edition's window",
            file=sys.stderr,
        )
        return 1
    if args.output and args.output != "-":
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            if exc.errno not in _BAD_PATH:  # the disk or device failed: a runtime failure
                raise OSError(exc.errno, exc.strerror, args.output) from exc
            raise InputError(f"-o: cannot write {args.output}: {exc.strerror}") from exc
        print(f"wrote {args.output} ({len(data)} bytes)")
    else:
        sys.stdout.buffer.write(data)
    return 0


def send_test(settings: Settings, args: argparse.Namespace) -> int:
    """Today's edition for some categories, mailed to ``--to`` marked as a test; it uses up
    nobody's edition (:mod:`digestd.ops.test_send`)."""
    from digestd.ops.test_send import send_test as send
    from digestd.readers.subscribers import normalise_email
    from digestd.service import Service

    now = parse_now(args.now)
    try:
        to = normalise_email(args.to)
    except ValidationError as exc:
        raise InputError(f"--to: {exc.problem}") from exc
    try:
        categories = parse_categories(args.categories)
    except ValidationError as exc:
        raise InputError(f"--categories: {exc.problem}") from exc
    service = Service.build(settings)

    async def once() -> str | None:
        try:
            sent = await send(service, EditionKind(args.kind), to, categories, now)
        except ValidationError as exc:
            raise InputError(f"--to: {exc.problem}") from exc
        except DeliveryError as exc:
            raise DeliveryError(f"the mail server refused the test message: {exc}") from exc
        finally:
            await service.close()
        if sent is None:
            return None
        return (
            f"sent a test of the {sent.kind} of {sent.period} to {sent.to}: {sent.articles} "
            f"articles, {sent.message_id}; the server answered: {sent.reply}"
        )

    line = asyncio.run(once())
    if line is None:
        print(
            "nothing to send: no articles in those categories in the edition's window",
            file=sys.stderr,
        )
        return 1
    print(line)
    return 0


def stats(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.ops.activity import snapshot
    from digestd.ops.queue_stats import queue_stats

    with database(settings) as sessions, sessions() as session:
        now = snapshot(session)
        sending = queue_stats(session, datetime.now(UTC))

    def listed(counts: dict[str, int], empty: str) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or empty

    print("subscribers: " + listed(now.subscribers, "none"))
    print("queue: " + listed(now.queue, "empty"))
    if now.oldest_queued_due_at is not None:
        print(f"oldest queued: due {now.oldest_queued_due_at.isoformat()}")
    for edition in now.last_editions:
        print(
            f"last edition: {edition.kind} {edition.period}: "
            + listed(edition.deliveries, "no deliveries")
        )
    for line in sending.throughput_lines():
        print(line)
    return 0

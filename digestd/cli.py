"""The ``digestd`` command line. Exit codes: 0 ok, 1 failure, 2 bad usage or configuration."""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from digestd import __version__, logs
from digestd.config import Settings, load_settings
from digestd.content.articles import ingest
from digestd.content.categories import parse_categories
from digestd.content.documents import decode_document
from digestd.errors import ConfigError, DigestdError, InputError, ValidationError, first_line
from digestd.instants import parse_instant
from digestd.models import EditionKind, Subscriber, SubscriberStatus
from digestd.ops.activity import snapshot
from digestd.ops.progress import progress
from digestd.ops.queue_stats import queue_stats
from digestd.readers.export import export_csv
from digestd.readers.subscribers import (
    ImportContext,
    erase,
    import_csv,
    normalise_email,
)
from digestd.service import Service

log = logging.getLogger("digestd")


class UsageError(DigestdError):
    """Bad arguments: exit 2."""


def parse_now(raw: str | None) -> datetime:
    if raw is None:
        return datetime.now(UTC)
    try:
        return parse_instant("--now", raw)
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc


def _read_input(path: str) -> str:
    """The whole file (or stdin) as text: UTF-8, a leading BOM dropped."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            stream = getattr(sys.stdin, "buffer", None)  # a test may hand over text
            data = stream.read() if stream is not None else sys.stdin.read().encode()
        else:
            data = Path(path).read_bytes()
        return data.decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeError as exc:  # invalid bytes, or text a test handed over that was not
        raise InputError(f"{name} is not UTF-8 text") from exc


# --- commands -------------------------------------------------------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    Service.build(settings, auto_migrate=True)
    print("database is up to date")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.daemon import serve

    service = Service.build(settings, auto_migrate=not args.no_migrate)
    if settings.generated_secret:
        log.warning(
            "DIGESTD_SECRET_KEYS is not set: using a generated development key in %s",
            settings.data_dir / "secret.key",
        )
    if args.demo:
        _load_demo(service)
    asyncio.run(serve(service))
    return 0


def _load_demo(service: Service) -> None:
    from digestd.ops.demo import DEMO_EMAIL, demo_articles
    from digestd.planning.planner import enqueue_now
    from digestd.readers.subscribers import new_subscriber, parse_preferences, reschedule

    now = datetime.now(UTC)
    settings = service.settings
    with service.sessions.begin() as session:
        report = ingest(session, enumerate(demo_articles(now), start=1))
        subscriber = session.scalars(
            select(Subscriber).where(Subscriber.email == DEMO_EMAIL)
        ).first()
        if subscriber is None:
            prefs = parse_preferences("all", "both", None, settings.default_timezone)
            subscriber = new_subscriber(DEMO_EMAIL, prefs, SubscriberStatus.ACTIVE)
            subscriber.confirmed_at = subscriber.consent_at = now
            subscriber.consent_source = "demo"
            reschedule(subscriber, now, settings.daily_time, settings.weekly_time)
            session.add(subscriber)
            session.flush()
        subscriber_id = subscriber.id
    queued = enqueue_now(
        service.sessions, service.policy, service.renderer, EditionKind.DAILY, [subscriber_id], now
    )
    log.info(
        "demo: %d articles loaded; %s",
        report.added + report.updated,
        "today's demo daily is queued for " + DEMO_EMAIL
        if sum(queued.queued.values())
        else "today's demo daily was already sent",
    )


def cmd_articles_add(settings: Settings, args: argparse.Namespace) -> int:
    text = _read_input(args.file)
    service = Service.build(settings)
    with service.sessions.begin() as session:
        report = ingest(session, decode_document(text))
    for error in report.errors:
        print(f"rejected {error}", file=sys.stderr)
    print(
        f"articles: {report.added} added, {report.updated} updated, {len(report.errors)} rejected"
    )
    return 1 if report.errors else 0


def cmd_subscribers_import(settings: Settings, args: argparse.Namespace) -> int:
    try:
        stream: TextIO = open(args.file, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read {args.file}: {exc.strerror}") from exc
    service = Service.build(settings)
    ctx = ImportContext(
        now=datetime.now(UTC),
        source=f"import:{Path(args.file).name}",
        default_timezone=settings.default_timezone,
        daily_at=settings.daily_time,
        weekly_at=settings.weekly_time,
    )
    lines = _count_lines(args.file)
    with (
        stream,
        progress(f"Importing {Path(args.file).name}", lines) as advance,
        service.sessions.begin() as session,
    ):
        try:
            report = import_csv(session, stream, ctx, advance)
        except UnicodeDecodeError as exc:
            raise InputError(f"{args.file} is not UTF-8 text") from exc
        except csv.Error as exc:
            raise InputError(f"{args.file} is not valid CSV: {exc}") from exc
    for error in report.errors:
        print(f"rejected {error}", file=sys.stderr)
    print(
        f"subscribers: {report.added} added, {report.updated} updated, "
        f"{len(report.errors)} rejected"
    )
    return 1 if report.errors else 0


def _count_lines(path: str) -> int | None:
    """Physical lines after the header: the progress bar's total (cheap even at 1 M rows)."""
    try:
        with open(path, "rb") as f:
            newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        return max(0, newlines - 1)
    except OSError:
        return None


def cmd_subscribers_export(settings: Settings, args: argparse.Namespace) -> int:
    service = Service.build(settings)
    with service.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Subscriber))
        with progress("Exporting subscribers", total) as advance:
            header = 1
            for chunk in export_csv(session):
                sys.stdout.write(chunk)
                advance(chunk.count("\n") - header)
                header = 0
    return 0


def cmd_subscribers_delete(settings: Settings, args: argparse.Namespace) -> int:
    try:
        email = normalise_email(args.email)
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc
    service = Service.build(settings)
    with service.sessions.begin() as session:
        erase(session, email, datetime.now(UTC))
    print("erased: personal data removed; the address is suppressed (kept only as a hash)")
    return 0


def cmd_feeds_add(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.content.feeds import add_feed

    service = Service.build(settings)
    with service.sessions.begin() as session:
        feed = add_feed(session, args.url, args.category, datetime.now(UTC))
        print(
            f"feed {feed.id} registered for {feed.category}: {feed.url} "
            "(polled every 15 minutes by digestd run)"
        )
    return 0


def cmd_feeds_list(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.models import Feed

    service = Service.build(settings)
    with service.sessions() as session:
        for feed in session.scalars(select(Feed).order_by(Feed.id)):
            state = f"failing ({feed.failures}): {feed.last_error}" if feed.failures else "ok"
            print(f"{feed.id}\t{feed.category}\t{feed.url}\t{feed.title or '-'}\t{state}")
    return 0


def cmd_tick(settings: Settings, args: argparse.Namespace) -> int:
    now = parse_now(args.now)
    service = Service.build(settings)

    async def once() -> str:
        try:
            with progress("Sending", None) as advance:
                return (await service.tick(now, on_batch=advance)).summary()
        finally:
            await service.close()

    print(asyncio.run(once()))
    return 0


def cmd_preview(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.ops.preview import preview

    now = parse_now(args.now)
    try:
        categories = parse_categories(args.categories)
    except ValidationError as exc:
        raise UsageError(f"--categories: {exc.problem}") from exc
    service = Service.build(settings)
    data = preview(service, EditionKind(args.kind), categories, now, args.format)
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
            raise UsageError(f"-o: cannot write {args.output}: {exc.strerror}") from exc
        print(f"wrote {args.output} ({len(data)} bytes)")
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    service = Service.build(settings)
    with service.sessions() as session:
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


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digestd", description="Email digests for a tech-news site."
    )
    parser.add_argument("--version", action="version", version=f"digestd {__version__}")
    parser.add_argument("--config", type=Path, help="TOML file of DIGESTD_* settings (env wins)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="HTTP, scheduler and sender in one process")
    run.add_argument("--demo", action="store_true", help="load demo articles and a demo reader")
    run.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema on start")
    run.set_defaults(func=cmd_run)

    commands.add_parser("migrate", help="create or upgrade the database schema").set_defaults(
        func=cmd_migrate
    )

    articles = commands.add_parser("articles", help="add articles").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    add = articles.add_parser(
        "add", help="add articles from a JSON array or JSONL file (- = stdin)"
    )
    add.add_argument("file")
    add.set_defaults(func=cmd_articles_add)

    subs = commands.add_parser("subscribers", help="import, export, erase").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    imp = subs.add_parser("import", help="import email,categories,frequency,timezone CSV")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_subscribers_import)
    subs.add_parser("export", help="CSV on stdout").set_defaults(func=cmd_subscribers_export)
    erase_cmd = subs.add_parser("delete", help="erase a subscriber's personal data")
    erase_cmd.add_argument("email")
    erase_cmd.set_defaults(func=cmd_subscribers_delete)

    feeds = commands.add_parser("feeds", help="RSS/Atom feeds polled for articles").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    feed_add = feeds.add_parser("add", help="register a feed for one category")
    feed_add.add_argument("url")
    feed_add.add_argument("--category", required=True, help="category slug of its articles")
    feed_add.set_defaults(func=cmd_feeds_add)
    feeds.add_parser("list", help="registered feeds and their state").set_defaults(
        func=cmd_feeds_list
    )

    tick = commands.add_parser("tick", help="one scheduler pass, then exit")
    tick.add_argument("--now", help="the instant to act as of (ISO 8601 with timezone)")
    tick.set_defaults(func=cmd_tick)

    preview = commands.add_parser("preview", help="render an edition without sending it")
    preview.add_argument("kind", choices=["daily", "weekly"])
    preview.add_argument("--categories", required=True, help="comma-separated slugs, or all")
    preview.add_argument("--now", help="the instant to act as of (ISO 8601 with timezone)")
    preview.add_argument("--format", choices=["html", "text", "eml"], default="html")
    preview.add_argument("-o", "--output", help="file to write (default: stdout)")
    preview.set_defaults(func=cmd_preview)

    commands.add_parser("stats", help="queue and subscriber counts").set_defaults(func=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ, args.config)
        logs.configure(settings.log_format, logging.DEBUG if args.verbose else logging.INFO)
        if not args.verbose and args.command != "migrate":
            logging.getLogger("alembic").setLevel(logging.WARNING)  # "context impl" each start
        return int(args.func(settings, args))
    except ConfigError as exc:
        print(f"digestd: configuration error: {exc}", file=sys.stderr)
        return 2
    except (InputError, UsageError) as exc:
        print(f"digestd: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(
            f"digestd: database error: {exc.__class__.__name__}: {first_line(exc)}",
            file=sys.stderr,
        )
        return 1
    except DigestdError as exc:
        print(f"digestd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

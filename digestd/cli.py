"""The ``digestd`` command line. Exit codes: 0 ok, 1 failure, 2 bad usage or configuration.

This module parses the arguments and imports only what the chosen command needs (the
commands live in :mod:`digestd.commands`; ``run``, ``migrate`` and ``check`` are here), so
``digestd --version`` or ``digestd stats`` start in a fraction of a second: the HTTP
server, the scheduler, the SMTP client and the email renderer load only for the commands
that use them. Only ``migrate`` and ``run`` change the schema or write files (the
database, the development key); every other command checks the schema and refuses, in
one line, to work on a database it does not match.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from digestd import __version__
from digestd.collector import collect_less_often

if TYPE_CHECKING:
    from digestd.config import Settings
    from digestd.service import Service

log = logging.getLogger("digestd")

Command = Callable[["Settings", argparse.Namespace], int]


# --- the commands that change the schema, and the go-live check -------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.db import make_engine, migrate

    engine = make_engine(settings.database_url)
    try:
        upgrade = migrate(engine)
    finally:
        engine.dispose()
    print(upgrade.summary())
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from digestd.daemon import serve
    from digestd.db import make_engine, migrate, open_database
    from digestd.errors import ConfigError
    from digestd.ops.golive import refusals, unknown_variables
    from digestd.service import Service

    refused = refusals(settings)
    if refused:
        more = f" (and {len(refused) - 1} more: see digestd check)" if len(refused) > 1 else ""
        raise ConfigError(refused[0].variable, refused[0].problem + more)
    for finding in unknown_variables(settings):
        log.warning("%s", finding)
    if args.no_migrate:
        engine = open_database(settings.database_url)
    else:
        engine = make_engine(settings.database_url)
        log.info("database: %s", migrate(engine).summary())
    service = Service(settings, engine)
    if settings.generated_secret:
        log.warning(
            "DIGESTD_SECRET_KEYS is not set: using a generated development key in %s",
            settings.data_dir / "secret.key",
        )
    if args.demo:
        _load_demo(service)
    import asyncio

    asyncio.run(serve(service))
    return 0


def _load_demo(service: Service) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from sqlalchemy import select

    from digestd.content.articles import ingest
    from digestd.models import EditionKind, Subscriber, SubscriberStatus
    from digestd.ops.demo import DEMO_EMAIL, demo_articles
    from digestd.planning.planner import enqueue_now
    from digestd.planning.schedule import SUNDAY
    from digestd.readers.subscribers import new_subscriber, parse_preferences, reschedule

    now = datetime.now(UTC)
    settings = service.settings
    # The demo reader takes both; on their Sunday that is the recap alone (SPEC §4).
    sunday = now.astimezone(ZoneInfo(settings.default_timezone)).weekday() == SUNDAY
    kind = EditionKind.WEEKLY if sunday and not settings.sunday_daily else EditionKind.DAILY
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
        service.sessions, service.policy, service.renderer, kind, [subscriber_id], now
    )
    log.info(
        "demo: %d articles loaded; %s",
        report.added + report.updated,
        f"today's demo {kind.value} is queued for {DEMO_EMAIL}"
        if sum(queued.queued.values())
        else f"today's demo {kind.value} was already sent",
    )


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """Every go-live finding, then the DNS records to publish; sends nothing."""
    from digestd.ops.golive import Finding, dns_records, findings, mx_note

    found = findings(settings)
    records, problems = dns_records(settings)
    found += problems
    schema = _schema_problem(settings)
    if schema:
        found.append(Finding("DIGESTD_DATABASE_URL", schema))
    for finding in found:
        print(finding)
    plural = "" if len(found) == 1 else "s"
    print(f"{len(found)} finding{plural}" if found else "no findings: ready to go live")
    print(f"\nDNS records to publish for {settings.from_domain} (zone file lines):")
    if settings.dkim is None:
        print("; DKIM: digestd does not sign (DIGESTD_DKIM_SELECTOR, DIGESTD_DKIM_KEY_FILE")
        print(";   unset); publish the record your relay gives you if it signs for you")
    for record in records:
        print(f"; {record.kind}: {record.note}")
        print(record.zone_line())
    mx = mx_note(settings)
    if mx:
        print(f"; {mx}")
    return 1 if found else 0


def _schema_problem(settings: Settings) -> str | None:
    from sqlalchemy.exc import SQLAlchemyError

    from digestd.db import open_database
    from digestd.errors import SchemaError, first_line

    try:
        open_database(settings.database_url).dispose()
    except SchemaError as exc:
        return str(exc)
    except SQLAlchemyError as exc:
        return f"cannot open the database: {first_line(exc)}"
    return None


# --- parser ---------------------------------------------------------------------------


CONFIG_HELP = "TOML file of DIGESTD_* settings (env wins)"
# Subscripted for mypy only: argparse's class takes no parameters at run time.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _command(
    parent: Commands, name: str, target: str, what: str, dev_key: str = "throwaway"
) -> argparse.ArgumentParser:
    """``target``: ``module:function``, imported only when the command runs.
    ``dev_key``: see :data:`digestd.config.DevKey`."""
    sub = parent.add_parser(name, help=what)
    sub.set_defaults(target=target, dev_key=dev_key)
    # Also after the command (`digestd stats --config FILE`); SUPPRESS: given before it,
    # the value stands.
    sub.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return sub


def _group(commands: Commands, name: str, what: str) -> Commands:
    return commands.add_parser(name, help=what).add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digestd", description="Email digests for a tech-news site."
    )
    parser.add_argument("--version", action="version", version=f"digestd {__version__}")
    parser.add_argument("--config", type=Path, help=CONFIG_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = _command(commands, "run", "digestd.cli:cmd_run", "HTTP, scheduler and sender", "create")
    run.add_argument("--demo", action="store_true", help="load demo articles and a demo reader")
    run.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema on start")
    _command(
        commands, "migrate", "digestd.cli:cmd_migrate", "create or upgrade the schema", "create"
    )
    _command(commands, "check", "digestd.cli:cmd_check", "go-live findings and DNS records")
    _content_commands(commands)
    _reader_commands(commands)
    _edition_commands(commands)
    return parser


def _content_commands(commands: Commands) -> None:
    articles = _group(commands, "articles", "add articles")
    add = _command(articles, "add", "digestd.commands.articles:add", "from a JSON/JSONL file")
    add.add_argument("file", help="a JSON array or JSONL file (- = stdin)")

    feeds = _group(commands, "feeds", "RSS/Atom feeds polled for articles")
    module = "digestd.commands.feeds"
    feed_add = _command(feeds, "add", f"{module}:add", "fetch a feed once and register it")
    feed_add.add_argument("url")
    feed_add.add_argument("--category", required=True, help="category slug of its articles")
    _command(feeds, "list", f"{module}:list_", "registered feeds and their health")
    feed_remove = _command(feeds, "remove", f"{module}:remove", "stop polling a feed")
    feed_remove.add_argument("id", type=_row_id, help="the feed's id (see feeds list)")


def _row_id(text: str) -> int:
    """A row's number: digits (how large a number is nobody's is the database's to say)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 40:
        raise argparse.ArgumentTypeError(f"not an id (see feeds list): {text[:40]!r}")
    return int(text)


def _reader_commands(commands: Commands) -> None:
    subs = _group(commands, "subscribers", "import, export, unsubscribe, erase")
    module = "digestd.commands.subscribers"
    imp = _command(subs, "import", f"{module}:import_", "email,categories,frequency,timezone CSV")
    imp.add_argument("file")
    _command(subs, "export", f"{module}:export", "CSV on stdout")
    stop = _command(subs, "unsubscribe", f"{module}:unsubscribe", "stop mail, keep the record")
    stop.add_argument("email")
    erase = _command(subs, "delete", f"{module}:delete", "erase a subscriber's personal data")
    erase.add_argument("email")


def _edition_commands(commands: Commands) -> None:
    module = "digestd.commands.editions"
    tick = _command(commands, "tick", f"{module}:tick", "one scheduler pass, then exit", "existing")
    tick.add_argument("--now", help="the instant to act as of (ISO 8601 with timezone)")
    preview = _command(
        commands, "preview", f"{module}:preview", "render an edition, send nothing", "existing"
    )
    preview.add_argument("kind", choices=["daily", "weekly"])
    preview.add_argument("--categories", required=True, help="comma-separated slugs, or all")
    preview.add_argument("--now", help="the instant to act as of (ISO 8601 with timezone)")
    preview.add_argument("--format", choices=["html", "text", "eml"], default="html")
    preview.add_argument("-o", "--output", help="file to write (default: stdout)")
    test = _command(
        commands,
        "send-test",
        f"{module}:send_test",
        "mail today's edition to one address, using up nobody's",
        "existing",
    )
    test.add_argument("kind", choices=["daily", "weekly"])
    test.add_argument("--to", required=True, help="the address to send the test to")
    test.add_argument("--categories", default="all", help="comma-separated slugs, or all")
    test.add_argument("--now", help="the instant to act as of (ISO 8601 with timezone)")
    _command(commands, "stats", f"{module}:stats", "queue and subscriber counts")


def entry() -> None:
    """The ``digestd`` program: :func:`main` in a process of its own.

    Start-up imports SQLAlchemy, the models and the settings: objects that live until the
    process ends. Collecting garbage among them as they arrive finds none and costs a
    tenth of a short command's time, and so does the collection at exit, so the collector
    waits until the command is loaded and the exit skips it."""
    gc.disable()
    status = main()
    gc.freeze()  # the process is about to hand everything back at once
    sys.exit(status)


def _configure_logs(settings: Settings, args: argparse.Namespace) -> None:
    from digestd import logs

    logs.configure(settings.log_format, logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per feed fetched
        # "context impl ..." at each start and a line per migration (its whole docstring):
        # migrate prints one summary line; -v shows Alembic's own.
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _collect_from_here() -> None:
    """Everything the start-up made is kept out of later collections, which then look only
    at what the command makes (a daemon's ticks), and less often than Python's default
    (:mod:`digestd.collector`). Nothing to do where :func:`entry` did not turn the collector
    off (a test calling :func:`main`)."""
    if not gc.isenabled():
        gc.freeze()
        collect_less_often()
        gc.enable()


def _stdout_for_the_daemon(target: str) -> bool:
    """``digestd run`` writes nothing to standard output: a closed one becomes /dev/null
    (Python would fail flushing it at exit). True when that was done."""
    if target != "digestd.cli:cmd_run":
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    return True


def _load(target: str) -> Command:
    module, _, name = target.partition(":")
    function: Command = getattr(importlib.import_module(module), name)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sys.stdout is None and not _stdout_for_the_daemon(args.target):
        # ``>&-``: the command would do its work and then fail writing its answer (an
        # import stored, then a traceback). Refused before anything is done.
        print("digestd: standard output is closed: nothing was done", file=sys.stderr)
        return 1
    # Imported after parsing: --help and --version need none of it.
    from sqlalchemy.exc import SQLAlchemyError

    from digestd.config import load_settings
    from digestd.errors import (
        ConfigError,
        DigestdError,
        InputError,
        SchemaError,
        first_line,
    )

    try:
        settings = load_settings(os.environ, args.config, dev_key=args.dev_key)
        _configure_logs(settings, args)
        command = _load(args.target)
        _collect_from_here()
        status = int(command(settings, args))
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not at exit
        return status
    except BrokenPipeError:
        # Whoever read the output has gone (`digestd subscribers export | head`): nobody is
        # left to tell. Python's own flush at exit would fail again, so it gets a sink.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # writing the output: a full disk, a device gone
        where = f": {exc.filename}" if exc.filename else ""
        print(f"digestd: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"digestd: configuration error: {exc}", file=sys.stderr)
        return 2
    except (InputError, SchemaError) as exc:
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
        # What was written stays (an export's rows so far); say it is not the whole.
        print("digestd: interrupted", file=sys.stderr)
        return 130

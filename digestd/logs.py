"""Logging set-up: human text, logfmt (key=value) or JSON lines, chosen by DIGESTD_LOG_FORMAT
and rendered by structlog's processors behind the stdlib ``logging`` every module uses.

An event is one stdlib call whose message names it and whose ``extra`` carries its fields::

    log.info("tick", extra=report.fields())

is ``event=tick sent=3 failed=0 …`` in logfmt, ``{"event": "tick", "sent": 3, …}`` in JSON
and ``tick  sent=3 failed=0 …`` in text. Field names must not be LogRecord attributes
(``name``, ``process``, ``module``, …): logging refuses those.

Logs never carry secrets or link tokens, and at INFO and above no full email address:
operators share logs in tickets and chat. Addresses are masked as ``a***@example.com``
and anything that looks like a signed token in a URL path as ``…/unsubscribe/***``, in the
message, in every field and in tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

# Any local part signup accepts (apostrophes, slashes, non-ASCII), any domain (also an
# internationalised one); "*" is left out so a masked address is not masked again.
_LOCAL = r"[^\s@<>()\[\],;:\"*]"
# The domain: a name, or an address literal (``dave@[127.0.0.1]``, as an MTA may give it).
_EMAIL = re.compile(rf"({_LOCAL}){_LOCAL}*@((?:[\w-]+\.)+[\w-]{{2,}}|\[[^\]\s]{{1,64}}\])")
_TOKEN_PATH = re.compile(r"/(confirm|unsubscribe|preferences|view|mute|engage|c)/[\w.-]{16,}")
# A signed tag in a mailbox (``unsubscribe+TAG@``, the bounce address): the first acts.
_TAG = re.compile(r"\+[\w.-]{16,}(?=@)")
_SECRET = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")  # passwords in URLs
_TOKEN_USER = re.compile(r"://[^:/@\s]+@")  # a URL's user that is a token (``https://TOKEN@…``)
# Added by the processors, never user data; exc_info is rendered into "exception" first.
_OWN_KEYS = frozenset({"_record", "_from_structlog", "time", "level", "logger"})


def redact(text: str, *, addresses: bool = True) -> str:
    """Secrets and tokens always go; full addresses go unless ``addresses`` is False."""
    text = _SECRET.sub(r"\1***@", text)
    text = _TOKEN_USER.sub("://***@", text)
    text = _TOKEN_PATH.sub(r"/\1/***", text)
    if addresses:
        text = _EMAIL.sub(r"\1***@\2", text)
    return _TAG.sub("+***", text)


def _redact_fields(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The structlog processor that applies :func:`redact` to every value."""
    record = event.get("_record")
    # DEBUG may name an address (an operator chasing one reader's problem); never a secret.
    addresses = not isinstance(record, logging.LogRecord) or record.levelno >= logging.INFO
    # Not fields: what another handler's formatter left on the record (``extra`` may not
    # use these names), and uvicorn's copy of its message in terminal colours.
    for key in ("message", "asctime", "color_message"):
        event.pop(key, None)
    for key, value in event.items():
        if key in _OWN_KEYS or value is None or isinstance(value, bool | int | float):
            continue
        event[key] = redact(str(value), addresses=addresses)
    return event


def _formatter(fmt: str) -> logging.Formatter:
    import structlog  # ~0.1 s with the rich it brings: only once something is logged

    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    elif fmt == "logfmt":
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["time", "level", "logger", "event"], bool_as_flag=False
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=False,
            sort_keys=False,
            timestamp_key="time",
            exception_formatter=structlog.dev.plain_traceback,
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            # a string, so that the traceback is redacted like everything else
            structlog.processors.format_exc_info,
        ],
        processors=[
            _redact_fields,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )


class _Deferred(logging.Formatter):
    """structlog's formatter, built at the first line: a command that logs nothing
    (``digestd --version``, ``stats``) never imports it."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt
        self.real: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self.real is None:
            self.real = _formatter(self.fmt)
        return self.real.format(record)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = _Stderr()
    handler.setFormatter(_Deferred(fmt))
    handler.set_name("digestd")
    root = logging.getLogger()
    # Replace only our own handler: others (a test runner's capture) stay in place.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "digestd"] + [handler]
    root.setLevel(level)
    # APScheduler narrates every job run at INFO; digestd logs each tick's outcome itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING if level > logging.DEBUG else level)
    # aiosmtpd (the inbound listener) logs every line of every session at DEBUG, and each
    # session's peer, sender and recipients at INFO: digestd logs what each message did
    # (a bounce, an unsubscribe) itself. Its sessions show with -v, its lines never.
    listener = logging.getLogger("mail.log")
    listener.setLevel(
        max(listener.level, logging.WARNING if level > logging.DEBUG else logging.INFO)
    )

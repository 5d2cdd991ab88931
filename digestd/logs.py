"""Logging set-up: human text, logfmt (key=value) or JSON lines, chosen by DIGESTD_LOG_FORMAT.

Logs never carry secrets or link tokens, and at INFO and above no full email address:
operators share logs in tickets and chat. Addresses are masked as ``a***@example.com``
and anything that looks like a signed token in a URL path as ``…/unsubscribe/***``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_TOKEN_PATH = re.compile(r"/(confirm|unsubscribe|preferences|view)/[\w.-]{16,}")
_SECRET = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")  # passwords in URLs


def redact(text: str, *, addresses: bool = True) -> str:
    """Secrets and tokens always go; full addresses go unless ``addresses`` is False."""
    text = _SECRET.sub(r"\1***@", text)
    text = _TOKEN_PATH.sub(r"/\1/***", text)
    return _EMAIL.sub(r"\1***@\2", text) if addresses else text


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # DEBUG may name an address (an operator chasing one reader's problem); never a secret.
        record.msg = redact(record.getMessage(), addresses=record.levelno >= logging.INFO)
        record.args = None
        return True


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, str]:
    fields = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    if record.exc_info:
        fields["error"] = formatter.formatException(record.exc_info)
    return fields


class _Logfmt(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_quote(v)}" for k, v in _fields(record, self).items())


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\t'):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), ensure_ascii=False)


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
    if fmt == "json":
        handler.setFormatter(_Json())
    elif fmt == "logfmt":
        handler.setFormatter(_Logfmt())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redacting())
    handler.set_name("digestd")
    root = logging.getLogger()
    # Replace only our own handler: others (a test runner's capture) stay in place.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "digestd"] + [handler]
    root.setLevel(level)
    # APScheduler narrates every job run at INFO; digestd logs each tick's outcome itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING if level > logging.DEBUG else level)

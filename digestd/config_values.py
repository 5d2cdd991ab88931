"""One ``DIGESTD_*`` value read strictly: text, bounded numbers, flags, URLs and secrets.

Each function takes the variable's name and its raw text and returns the typed value or
raises :class:`ConfigError` naming the variable. Secrets are never echoed in a message.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, urlsplit

from digestd.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

ADMIN_TOKEN_MIN = 24
GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
# Words seen in example files and tutorials, compared with case, spaces and punctuation
# dropped ("CHANGE_ME", "change-me-admin-token"). All are 7+ letters, so a random token
# contains one by chance about once in a billion.
PLACEHOLDER_WORDS = ("changeme", "example", "placeholder", "replaceme", "yourtoken", "password")
_RUN = re.compile(r"(.)\1{7,}")  # "xxxxxxxx", "00000000", "********"
MIN_DISTINCT = 8
_FLAGS = {"true": True, "1": True, "yes": True, "on": True}
_FLAGS.update({"false": False, "0": False, "no": False, "off": False})
# Backends digestd is built and tested for; anything else fails later in less clear ways.
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "postgresql+psycopg")


def check_text(variable: str, raw: str) -> None:
    """No control characters (a line break in a URL or name would end up in mail headers)
    and nothing that is not text (bytes an environment gave that are not UTF-8)."""
    for c in raw:
        if "\ud800" <= c <= "\udfff":
            raise ConfigError(variable, "is not UTF-8 text")
        if ord(c) < 32 or ord(c) == 127:
            raise ConfigError(variable, "must not contain control characters or line breaks")


def number(variable: str, raw: str, kind: type[int] | type[float], low: float, high: float) -> Any:
    """A finite ``kind`` from ``low`` to ``high`` inclusive (nan, inf and 10**400 refused)."""
    try:
        value = kind(raw)
    except (ValueError, OverflowError) as exc:
        raise ConfigError(variable, f"expected a number, got {raw[:40]!r}") from exc
    if not math.isfinite(value) or not low <= value <= high:
        whole = "whole number" if kind is int else "number"
        raise ConfigError(variable, f"must be a {whole} from {low:g} to {high:g}, got {raw[:40]!r}")
    return value


def flag(variable: str, raw: str) -> bool:
    value = _FLAGS.get(raw.strip().lower())
    if value is None:
        raise ConfigError(variable, f"must be true or false, got {raw[:40]!r}")
    return value


def admin_token(variable: str, raw: str) -> str | None:
    """Unset turns the admin API and page off; a set token must not be guessable."""
    if not raw:
        return None
    how = f"use 24+ random characters, e.g. from: {GENERATE}"
    if len(raw) < ADMIN_TOKEN_MIN:
        raise ConfigError(variable, f"must be at least {ADMIN_TOKEN_MIN} characters; {how}")
    folded = re.sub(r"[\W_]+", "", raw.lower())
    word = next((w for w in PLACEHOLDER_WORDS if w in folded), None)
    if word is not None:
        raise ConfigError(variable, f"looks like a placeholder (it contains {word!r}); {how}")
    if _RUN.search(raw) or len(set(raw)) < MIN_DISTINCT:
        raise ConfigError(
            variable, f"looks like a placeholder (too few distinct characters); {how}"
        )
    return raw


def base_url(variable: str, raw: str) -> str:
    """The public http(s) root every emailed link starts with: nothing that could break a
    link or a header (spaces, line breaks), nor a query or fragment links would end up in."""
    url = raw.rstrip("/")
    if any(c.isspace() for c in url):
        raise ConfigError(variable, f"must not contain spaces or line breaks, got {raw[:80]!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(variable, f"not a valid URL: {raw[:80]!r} ({exc})") from exc
    port(variable, parts, raw[:80])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(variable, f"expected an http(s) URL, got {raw[:80]!r}")
    if parts.query or parts.fragment or "@" in parts.netloc or raw.endswith(("?", "#")):
        raise ConfigError(
            variable, f"must be a plain http(s) URL without user, query or fragment: {raw[:80]!r}"
        )
    return _ascii_url(variable, parts)


def port(variable: str, parts: SplitResult, shown: str) -> int | None:
    """The URL's port, if it names one: 1 to 65535, in ASCII digits."""
    try:
        number = parts.port
    except ValueError:
        number = -1
    digits = parts.netloc.rpartition(":")[2]
    if number is not None and not (1 <= number <= 65535 and digits.isascii()):
        raise ConfigError(variable, f"the port must be a number from 1 to 65535 in {shown!r}")
    return number


def _ascii_url(variable: str, parts: SplitResult) -> str:
    """The URL in ASCII: links end up in headers (List-Unsubscribe) that carry nothing else,
    so an internationalised host becomes its IDNA form and a path is percent-encoded."""
    host = parts.hostname or ""
    try:
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ConfigError(variable, f"the host {host[:80]!r} has no IDNA form ({exc})") from exc
    netloc = ascii_host if ":" not in ascii_host else f"[{ascii_host}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
    return f"{parts.scheme}://{netloc}{path}"


def origins(variable: str, raw: str) -> tuple[str, ...]:
    """Comma-separated web origins (``https://news.example.com``), each written as a browser
    sends it in ``Origin``: scheme and host in lower case, the port only when not the
    scheme's default, nothing after. ``*`` is refused: each site must be named."""
    found: list[str] = []
    for item in raw.split(","):
        text = item.strip().rstrip("/")
        if not text:
            continue
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(variable, f"not a valid origin: {text[:80]!r} ({exc})") from exc
        plain = not (parts.path or parts.query or parts.fragment or "@" in parts.netloc)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not plain:
            raise ConfigError(
                variable,
                f"expected origins such as https://news.example.com (scheme and host, no "
                f"path), comma-separated; got {text[:80]!r}",
            )
        scheme = parts.scheme.lower()
        default = 443 if scheme == "https" else 80
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        origin = f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")
        if origin not in found:
            found.append(origin)
    return tuple(found)


def database_url(variable: str, raw: str) -> str:
    """A SQLite or PostgreSQL URL, with PostgreSQL on the psycopg 3 driver digestd ships."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme, found, rest = raw.partition("://")
    if not found:
        raise ConfigError(
            variable,
            f"expected a URL like sqlite:///path or postgresql://user@host/db, got {raw[:80]!r}",
        )
    if scheme.lower() not in DATABASE_SCHEMES:
        raise ConfigError(
            variable, f"only sqlite:// and postgresql:// are supported, got {scheme[:20]}://"
        )
    if scheme.lower() != "sqlite":
        raw = "postgresql+psycopg://" + rest
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        # The message would quote the URL and so its password: name the problem only.
        raise ConfigError(variable, f"not a valid {scheme} URL ({type(exc).__name__})") from exc
    if url.get_backend_name() == "sqlite":
        _sqlite_arguments(variable, url)
    else:
        _postgres_arguments(variable, url)
    return raw


def _sqlite_arguments(variable: str, url: URL) -> None:
    """The driver's reading of the URL's query (``?timeout=5``), done now: a bad value was a
    traceback at the first connection, an unknown name a warning quoting source code."""
    import warnings

    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", SAWarning)
        try:
            SQLiteDialect_pysqlite().create_connect_args(url)
        except SAWarning as exc:  # "Query string argument(s) 'foo' are not accepted ..."
            said = str(exc).split(" by the", 1)[0]
            raise ConfigError(variable, f"{said} by SQLite") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(variable, f"a query argument SQLite cannot read: {exc}") from exc


# libpq's options that take one of a few words (it checks them only when connecting).
_LIBPQ_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
}
_LIBPQ_NUMBERS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval")


def _postgres_arguments(variable: str, url: URL) -> None:
    """libpq's reading of the URL's query (``?sslmode=require``), done now: an unknown
    option or a misspelt value was a failure at the first connection (exit 1), not a
    configuration error naming the variable. The password is never quoted."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    options = {
        name: value if isinstance(value, str) else ",".join(value)
        for name, value in url.query.items()
    }
    try:
        make_conninfo("", **options)
    except psycopg.ProgrammingError as exc:  # 'invalid connection option "foo"'
        said = str(exc).strip()
        raise ConfigError(variable, f"{said} (a query argument PostgreSQL does not take)") from exc
    for name, text in options.items():
        allowed = _LIBPQ_CHOICES.get(name)
        if allowed is not None and text not in allowed:
            raise ConfigError(variable, f"{name}={text[:40]!r} is not one of {', '.join(allowed)}")
        if name in _LIBPQ_NUMBERS and not re.fullmatch(r"\s*-?[0-9]+\s*", text):
            raise ConfigError(variable, f"{name}={text[:40]!r} is not a whole number")

"""What the admin API reads from a request, read strictly: query parameters, JSON bodies
and opaque page cursors. A bad value is a 4xx naming the parameter, never a silent default
and never a traceback."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request

from digestd import strict_json
from digestd.errors import ValidationError
from digestd.instants import parse_instant
from digestd.models import MAX_ID
from digestd.tokens import Tokens
from digestd.web.errors import WebError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class RowId(Convertor[int]):
    """``{name:id}`` in a route: a row's number. One past :data:`MAX_ID` is nobody's, and
    reads as 0, which no row has (ids start at 1): the page's own "no such" 404, where
    the number itself would have been a database error (a 500)."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        number = int(value) if len(value) <= 10 else 0
        return number if number <= MAX_ID else 0

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", RowId())


async def json_text(request: Request) -> str:
    """The body of a JSON request as text (UTF-8, RFC 8259; a leading BOM is dropped)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise WebError(415, "Send JSON (Content-Type: application/json).")
    try:
        return (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WebError(400, f"The body is not valid JSON: not UTF-8 ({exc.reason})") from exc


async def json_body(request: Request) -> Any:
    try:
        return strict_json.loads(await json_text(request))
    except strict_json.DuplicateKey as exc:
        raise given_twice(exc) from exc
    except json.JSONDecodeError as exc:
        raise WebError(400, f"The body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise WebError(400, "The body is not valid JSON: nested too deeply.") from exc
    except ValueError as exc:  # e.g. an integer of more than 4 300 digits
        raise WebError(400, f"The body is not valid JSON: {str(exc)[:120]}") from exc


def given_twice(exc: strict_json.DuplicateKey) -> WebError:
    return WebError(400, f"{exc.key}: given twice; send each field once.", field=exc.key)


def _bad(name: str, problem: str) -> WebError:
    return WebError(400, f"{name}: {problem}", field=name)


def only(request: Request, *known: str) -> None:
    """Refuse parameters the endpoint does not know: a typo such as ``?stauts=`` would
    otherwise be ignored silently and answer with the unfiltered list."""
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        raise _bad(
            unknown[0][:40],
            f"unknown parameter; this endpoint takes {', '.join(known) or 'none'}",
        )


def text(request: Request, name: str, limit: int = 320) -> str | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise _bad(name, "give it once")
    value = values[0]
    if len(value) > limit:
        raise _bad(name, f"longer than {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _bad(name, "must not contain control characters")
    return value


def choice(
    request: Request, name: str, allowed: Sequence[str], default: str | None = None
) -> str | None:
    value = text(request, name)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise _bad(name, f"must be one of {', '.join(allowed)}; got {value[:40]!r}")
    return value


def limit(request: Request) -> int:
    raw = text(request, "limit", 12)
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad("limit", f"must be a whole number from 1 to {MAX_LIMIT}; got {raw!r}")
    return int(raw)


def instant(request: Request, name: str) -> datetime | None:
    raw = text(request, name, 64)
    if raw is None or raw == "":
        return None
    try:
        return parse_instant(name, raw)
    except ValidationError as exc:
        raise _bad(name, exc.problem) from exc


class Cursors:
    """Keyset page cursors, signed so a client can only hand back what it was given (and
    cannot walk the table by editing row keys). One salt per list, so a subscribers cursor
    is refused by the suppressions list."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    def dump(self, purpose: str, key: list[Any]) -> str:
        return str(self._tokens.serializer(f"digestd.cursor.{purpose}").dumps(key))

    def load(self, request: Request, purpose: str) -> list[Any] | None:
        raw = text(request, "cursor", 500)
        if raw is None or raw == "":
            return None
        try:
            key = self._tokens.serializer(f"digestd.cursor.{purpose}").loads(raw)
        except BadSignature as exc:
            raise _bad("cursor", "not a cursor this list handed out; start without one") from exc
        if not isinstance(key, list):
            raise _bad("cursor", "not a cursor this list handed out; start without one")
        return key

    def load_id(self, request: Request, purpose: str) -> int | None:
        """The cursor of a list kept in id order: ``[id]``."""
        after = self.load(request, purpose)
        if after is None:
            return None
        if len(after) != 1 or not isinstance(after[0], int):
            raise _bad("cursor", "not a cursor this list handed out; start without one")
        return after[0]

    def load_timed(self, request: Request, purpose: str) -> tuple[datetime, str] | None:
        """The cursor of a list kept in (time, id) order: ``[time.isoformat(), id]``."""
        after = self.load(request, purpose)
        if after is None:
            return None
        try:
            return datetime.fromisoformat(after[0]), str(after[1])
        except (IndexError, TypeError, ValueError) as exc:
            raise _bad("cursor", "not a cursor this list handed out; start without one") from exc

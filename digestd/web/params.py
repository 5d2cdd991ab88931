"""What the admin API reads from a request, read strictly: query parameters, JSON bodies
and opaque page cursors. A bad value is a 4xx naming the parameter, never a silent default
and never a traceback."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request

from digestd.web.errors import WebError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


async def json_body(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise WebError(415, "Send JSON (Content-Type: application/json).")
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebError(400, f"The body is not valid JSON: {exc}") from exc


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
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad("limit", f"must be a whole number from 1 to {MAX_LIMIT}; got {raw!r}")
    return int(raw)


def instant(request: Request, name: str) -> datetime | None:
    raw = text(request, name, 64)
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise _bad(name, f"not an ISO 8601 date-time: {raw!r}") from exc
    if moment.tzinfo is None:
        raise _bad(name, f"needs a timezone, e.g. {raw}Z or {raw}+00:00")
    return moment.astimezone(UTC)


class Cursors:
    """Keyset page cursors, signed so a client can only hand back what it was given (and
    cannot walk the table by editing row keys). One salt per list, so a subscribers cursor
    is refused by the suppressions list."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        self._keys = list(reversed(secret_keys))  # itsdangerous signs with the last key

    def dump(self, purpose: str, key: list[Any]) -> str:
        return str(URLSafeSerializer(self._keys, salt=f"digestd.cursor.{purpose}").dumps(key))

    def load(self, request: Request, purpose: str) -> list[Any] | None:
        raw = text(request, "cursor", 500)
        if raw is None or raw == "":
            return None
        try:
            key = URLSafeSerializer(self._keys, salt=f"digestd.cursor.{purpose}").loads(raw)
        except BadSignature as exc:
            raise _bad("cursor", "not a cursor this list handed out; start without one") from exc
        if not isinstance(key, list):
            raise _bad("cursor", "not a cursor this list handed out; start without one")
        return key

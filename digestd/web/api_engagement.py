"""The admin API's engagement reports (:mod:`digestd.ops.engagement`): editions with their
clicks, one edition's articles, the week's top stories, clicks per day. Registered in
``api.ENDPOINTS``, so the bearer-token guard covers every one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd.models import MAX_ID
from digestd.ops import engagement
from digestd.ops.activity import utc_iso
from digestd.web import params
from digestd.web.context import Web, web
from digestd.web.errors import WebError

MAX_DAYS = 90


def _number(request: Request, name: str, default: int, high: int) -> int:
    raw = params.text(request, name, 12)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= high:
        raise WebError(
            400, f"{name}: must be a whole number from 1 to {high}; got {raw!r}", field=name
        )
    return int(raw)


async def list_editions(request: Request) -> Response:
    w = web(request)
    params.only(request, "limit")
    limit = _number(request, "limit", 30, 200)
    found = await w.db(_editions, w, limit)
    return JSONResponse({"editions": found, "tracking": w.settings.track_clicks})


def _editions(w: Web, limit: int) -> list[dict[str, Any]]:
    with w.sessions() as session:
        return [e.as_json() for e in engagement.recent_editions(session, limit)]


async def one_edition(request: Request) -> Response:
    w = web(request)
    params.only(request)
    raw = str(request.path_params["id"])
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > MAX_ID:
        raise WebError(400, f"id: an edition's number, got {raw[:40]!r}", field="id")
    found = await w.db(_edition, w, int(raw))
    if found is None:
        raise WebError(404, f"There is no edition {raw}.", field="id")
    return JSONResponse(found)


def _edition(w: Web, edition_id: int) -> dict[str, Any] | None:
    with w.sessions() as session:
        found = engagement.edition(session, edition_id)
        return None if found is None else found.as_json()


async def top_stories(request: Request) -> Response:
    w = web(request)
    params.only(request, "days", "limit")
    days = _number(request, "days", 7, MAX_DAYS)
    limit = _number(request, "limit", engagement.TOP_STORIES, 100)
    now = w.clock()
    found = await w.db(_top, w, days, limit, now)
    return JSONResponse({"as_of": utc_iso(now), "days": days, "stories": found})


def _top(w: Web, days: int, limit: int, now: Any) -> list[dict[str, Any]]:
    with w.sessions() as session:
        return [s.as_json() for s in engagement.top_stories(session, now, days, limit)]


async def click_days(request: Request) -> Response:
    w = web(request)
    params.only(request, "days")
    days = _number(request, "days", 30, MAX_DAYS)
    now = w.clock()
    found = await w.db(_days, w, days, now)
    return JSONResponse({"as_of": utc_iso(now), **found})


def _days(w: Web, days: int, now: Any) -> dict[str, Any]:
    with w.sessions() as session:
        series = engagement.click_days(session, now, days)
    return {
        "days": [d.isoformat() for d in series.days],
        "clicks": series.clicks,
        "clickers": series.clickers,
        "scanner_clicks": series.scanner,
    }

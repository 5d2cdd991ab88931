"""The admin JSON API under ``/api``: every route is behind one bearer-token guard.

Adding a route is one line in :data:`ENDPOINTS`; the guard, the ``/api`` prefix and JSON
errors come with it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from digestd.content.articles import IngestReport, ingest
from digestd.web import api_bounces, api_editions, api_lists, openapi
from digestd.web.context import Web, web
from digestd.web.errors import WebError
from digestd.web.params import json_body as _json

Endpoint = Callable[[Request], Awaitable[Response]]


def admin(endpoint: Endpoint) -> Endpoint:
    """``Authorization: Bearer $DIGESTD_ADMIN_TOKEN``, compared in constant time."""

    async def guarded(request: Request) -> Response:
        expected = web(request).settings.admin_token
        if not expected:
            raise WebError(403, "The admin API is disabled: set DIGESTD_ADMIN_TOKEN to enable it.")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            return JSONResponse(
                {"error": "Missing or wrong admin token: send Authorization: Bearer TOKEN."},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="digestd"'},
            )
        return await endpoint(request)

    return guarded


async def post_articles(request: Request) -> Response:
    """One SPEC §3 object or an array; invalid items are reported, valid ones kept."""
    w = web(request)
    body = await _json(request)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise WebError(400, "The array is empty: send at least one article.")
    report = await w.db(_ingest, w, items)
    status = 422 if report.errors and not (report.added or report.updated) else 200
    return JSONResponse(
        {
            "added": report.added,
            "updated": report.updated,
            "rejected": len(report.errors),
            "errors": [
                {"position": e.position, "field": e.field, "problem": e.problem}
                for e in report.errors
            ],
        },
        status_code=status,
    )


def _ingest(w: Web, items: list[Any]) -> IngestReport:
    with w.sessions.begin() as session:
        return ingest(session, enumerate(items, start=1))


# (method, path under /api, endpoint); each one is described in openapi.PATHS too.
ENDPOINTS: list[tuple[str, str, Endpoint]] = [
    ("POST", "/articles", post_articles),
    ("GET", "/subscribers", api_lists.list_subscribers),
    ("GET", "/subscribers/export", api_lists.export_subscribers),
    ("GET", "/suppressions", api_lists.list_suppressions),
    ("GET", "/stats", api_editions.stats),
    ("GET", "/editions/preview", api_editions.preview_edition),
    ("POST", "/editions/trigger", api_editions.trigger_edition),
    ("POST", "/bounces", api_bounces.post_bounce),
]
# Readable without the token: the API's description holds no data (see openapi.py).
PUBLIC_ENDPOINTS: list[tuple[str, str, Endpoint]] = [
    ("GET", "/openapi.json", openapi.serve),
]


def routes() -> list[Mount]:
    guarded = [Route(path, admin(fn), methods=[method]) for method, path, fn in ENDPOINTS]
    public = [Route(path, fn, methods=[method]) for method, path, fn in PUBLIC_ENDPOINTS]
    return [Mount("/api", routes=guarded + public)]
